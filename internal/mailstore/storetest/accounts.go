package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

func testAccounts(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "CreateAndLookup", func(t *testing.T, st mailstore.Store) {
		before := time.Now().Add(-time.Second)
		a, err := st.CreateAccount(ctx, "Alice@Example.ORG", "h1")
		noErr(t, "CreateAccount", err)
		after := time.Now().Add(time.Second)
		if a.ID == 0 || a.Name != "alice@example.org" || a.PasswordHash != "h1" {
			t.Fatalf("CreateAccount = %+v", a)
		}
		if a.Created.Before(before) || a.Created.After(after) {
			t.Fatalf("Created = %v, want about now", a.Created)
		}
		for _, name := range []string{"alice@example.org", "ALICE@EXAMPLE.ORG", "aLiCe@example.org"} {
			got, err := st.Account(ctx, name)
			noErr(t, "Account "+name, err)
			if got.ID != a.ID || got.Name != a.Name || got.PasswordHash != "h1" || !got.Created.Equal(a.Created) {
				t.Fatalf("Account(%q) = %+v, want %+v", name, got, a)
			}
		}
		_, err = st.CreateAccount(ctx, "ALICE@example.org", "h2")
		wantErr(t, "duplicate CreateAccount", err, mailstore.ErrAccountExists)
		_, err = st.Account(ctx, "bob@example.org")
		wantErr(t, "Account of unknown", err, mailstore.ErrNoSuchAccount)
		got, err := st.Account(ctx, "alice@example.org")
		noErr(t, "Account", err)
		if got.PasswordHash != "h1" {
			t.Fatalf("failed duplicate create changed the hash to %q", got.PasswordHash)
		}
	})

	sub(t, open, "InvalidNames", func(t *testing.T, st mailstore.Store) {
		for _, name := range []string{"", "a b@example.org", "a\x00b@example.org", "a\r\n@example.org", "\xff@example.org", "\tx"} {
			_, err := st.CreateAccount(ctx, name, "h")
			wantErr(t, "CreateAccount "+name, err, mailstore.ErrInvalidName)
			_, err = st.Account(ctx, name)
			wantErr(t, "Account "+name, err, mailstore.ErrNoSuchAccount)
		}
		accts, err := st.Accounts(ctx)
		noErr(t, "Accounts", err)
		if len(accts) != 0 {
			t.Fatalf("Accounts = %+v, want none", accts)
		}
	})

	sub(t, open, "DefaultMailboxes", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		mbs, err := st.Mailboxes(ctx, a.ID)
		noErr(t, "Mailboxes", err)
		var want []string
		special := map[string]string{}
		for _, d := range mailstore.DefaultMailboxes {
			want = append(want, d.Name)
			special[d.Name] = d.SpecialUse
		}
		slices.Sort(want)
		var got []string
		seenUV := map[uint32]bool{}
		for _, mb := range mbs {
			got = append(got, mb.Name)
			if mb.AccountID != a.ID || mb.SpecialUse != special[mb.Name] || !mb.Subscribed ||
				mb.UIDNext != 1 || mb.Messages != 0 || mb.Unseen != 0 || mb.Size != 0 || mb.UIDValidity == 0 {
				t.Fatalf("default mailbox %+v", mb)
			}
			if seenUV[mb.UIDValidity] {
				t.Fatalf("UIDVALIDITY %d used twice", mb.UIDValidity)
			}
			seenUV[mb.UIDValidity] = true
			byName := getMailbox(t, st, a.ID, mb.Name)
			if byName != mb {
				t.Fatalf("Mailbox(%q) = %+v, Mailboxes has %+v", mb.Name, byName, mb)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Mailboxes = %q, want %q", got, want)
		}
	})

	sub(t, open, "PasswordAndList", func(t *testing.T, st mailstore.Store) {
		for _, n := range []string{"carol@example.org", "alice@example.org", "bob@example.org"} {
			newAccount(t, st, n)
		}
		noErr(t, "SetPasswordHash", st.SetPasswordHash(ctx, "BOB@example.org", "new"))
		wantErr(t, "SetPasswordHash unknown", st.SetPasswordHash(ctx, "dave@example.org", "x"), mailstore.ErrNoSuchAccount)
		accts, err := st.Accounts(ctx)
		noErr(t, "Accounts", err)
		var names []string
		for _, a := range accts {
			names = append(names, a.Name)
			wantHash := "hash-of-" + a.Name
			if a.Name == "bob@example.org" {
				wantHash = "new"
			}
			if a.PasswordHash != wantHash {
				t.Fatalf("%s: hash %q, want %q", a.Name, a.PasswordHash, wantHash)
			}
		}
		if !slices.Equal(names, []string{"alice@example.org", "bob@example.org", "carol@example.org"}) {
			t.Fatalf("Accounts = %q", names)
		}
	})

	sub(t, open, "Delete", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		b := newAccount(t, st, "bob@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		appendMsg(t, st, inbox.ID, bodyOf("x"))
		noErr(t, "DeleteAccount", st.DeleteAccount(ctx, "Alice@example.org"))
		_, err := st.Account(ctx, "alice@example.org")
		wantErr(t, "Account after delete", err, mailstore.ErrNoSuchAccount)
		_, err = st.Mailboxes(ctx, a.ID)
		wantErr(t, "Mailboxes after delete", err, mailstore.ErrNoSuchAccount)
		_, err = st.Mailbox(ctx, a.ID, "INBOX")
		wantErr(t, "Mailbox after delete", err, mailstore.ErrNoSuchMailbox)
		_, err = st.Messages(ctx, inbox.ID)
		wantErr(t, "Messages after delete", err, mailstore.ErrNoSuchMailbox)
		wantErr(t, "DeleteAccount again", st.DeleteAccount(ctx, "alice@example.org"), mailstore.ErrNoSuchAccount)
		// The other account is untouched.
		checkMailbox(t, st, b.ID, "INBOX")
		// The name can be used again, with new IDs and UIDVALIDITYs.
		a2 := newAccount(t, st, "alice@example.org")
		if a2.ID == a.ID {
			t.Fatalf("account ID %d reused", a.ID)
		}
		inbox2 := getMailbox(t, st, a2.ID, "INBOX")
		if inbox2.ID == inbox.ID || inbox2.UIDValidity == inbox.UIDValidity {
			t.Fatalf("re-created INBOX %+v reuses ID or UIDVALIDITY of %+v", inbox2, inbox)
		}
		if n := len(messages(t, st, inbox2.ID)); n != 0 {
			t.Fatalf("re-created account has %d messages", n)
		}
	})
}
