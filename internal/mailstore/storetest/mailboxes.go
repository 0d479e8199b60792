package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

func mailboxNames(t *testing.T, st mailstore.Store, acct int64) []string {
	t.Helper()
	mbs, err := st.Mailboxes(ctx, acct)
	noErr(t, "Mailboxes", err)
	var names []string
	for _, mb := range mbs {
		names = append(names, mb.Name)
	}
	return names
}

func defaultNamesPlus(extra ...string) []string {
	var names []string
	for _, d := range mailstore.DefaultMailboxes {
		names = append(names, d.Name)
	}
	names = append(names, extra...)
	slices.Sort(names)
	return names
}

func equalNames(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: mailboxes %q, want %q", what, got, want)
	}
}

func testMailboxes(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "Create", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		mb, err := st.CreateMailbox(ctx, a.ID, "Work", "")
		noErr(t, "CreateMailbox", err)
		if mb.ID == 0 || mb.AccountID != a.ID || mb.Name != "Work" || mb.SpecialUse != "" || mb.Subscribed ||
			mb.UIDNext != 1 || mb.UIDValidity == 0 || mb.Messages != 0 || mb.Unseen != 0 || mb.Size != 0 {
			t.Fatalf("CreateMailbox = %+v", mb)
		}
		if got := getMailbox(t, st, a.ID, "Work"); got != mb {
			t.Fatalf("Mailbox = %+v, CreateMailbox returned %+v", got, mb)
		}
		tr, err := st.CreateMailbox(ctx, a.ID, "Bin", mailstore.SpecialTrash)
		noErr(t, "CreateMailbox special-use", err)
		if tr.SpecialUse != mailstore.SpecialTrash {
			t.Fatalf("special-use = %q", tr.SpecialUse)
		}
		_, err = st.CreateMailbox(ctx, a.ID, "Work", "")
		wantErr(t, "CreateMailbox existing", err, mailstore.ErrMailboxExists)
		_, err = st.CreateMailbox(ctx, a.ID, "work", "")
		noErr(t, "names other than INBOX are case-sensitive", err)
		for _, n := range []string{"INBOX", "inbox", "InBox"} {
			_, err = st.CreateMailbox(ctx, a.ID, n, "")
			wantErr(t, "CreateMailbox "+n, err, mailstore.ErrMailboxExists)
		}
		_, err = st.CreateMailbox(ctx, a.ID+1000, "X", "")
		wantErr(t, "CreateMailbox for unknown account", err, mailstore.ErrNoSuchAccount)
		if mbs, err := st.Mailboxes(ctx, a.ID+1000); !errors.Is(err, mailstore.ErrNoSuchAccount) || mbs != nil {
			t.Fatalf("Mailboxes of unknown account = %v, %v", mbs, err)
		}
	})

	sub(t, open, "Names", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		for _, n := range []string{"", "/", "/a", "a/", "a//b", "a\x00b", "a\rb", "a\nb", "a\x7fb", "\xff\xfe", "a/\xc3"} {
			_, err := st.CreateMailbox(ctx, a.ID, n, "")
			wantErr(t, "CreateMailbox "+n, err, mailstore.ErrInvalidName)
			_, err = st.Mailbox(ctx, a.ID, n)
			wantErr(t, "Mailbox "+n, err, mailstore.ErrNoSuchMailbox)
		}
		for _, n := range []string{"iNbOx", "inbox", "Inbox"} {
			if mb := getMailbox(t, st, a.ID, n); mb.Name != mailstore.Inbox {
				t.Fatalf("Mailbox(%q).Name = %q", n, mb.Name)
			}
		}
		mb := createMailbox(t, st, a.ID, "inbox/Sub")
		if mb.Name != "INBOX/Sub" {
			t.Fatalf("inbox/Sub canonicalised to %q", mb.Name)
		}
		if got := getMailbox(t, st, a.ID, "Inbox/Sub"); got.ID != mb.ID {
			t.Fatalf("Inbox/Sub found %+v", got)
		}
		utf := createMailbox(t, st, a.ID, "Entwürfe/日本語 ✉")
		if got := getMailbox(t, st, a.ID, "Entwürfe/日本語 ✉"); got.ID != utf.ID || got.Name != "Entwürfe/日本語 ✉" {
			t.Fatalf("UTF-8 name: %+v", got)
		}
		for _, n := range []string{"b", "a/x", "B", "a", "a b", "Ω"} {
			createMailbox(t, st, a.ID, n)
		}
		equalNames(t, "Mailboxes", mailboxNames(t, st, a.ID),
			defaultNamesPlus("INBOX/Sub", "Entwürfe/日本語 ✉", "b", "a/x", "B", "a", "a b", "Ω"))
	})

	sub(t, open, "Delete", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		p := createMailbox(t, st, a.ID, "P")
		createMailbox(t, st, a.ID, "P/child")
		appendMsg(t, st, p.ID, bodyOf("1"))
		appendMsg(t, st, p.ID, bodyOf("2"))
		noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, a.ID, "P"))
		_, err := st.Mailbox(ctx, a.ID, "P")
		wantErr(t, "Mailbox after delete", err, mailstore.ErrNoSuchMailbox)
		_, err = st.Messages(ctx, p.ID)
		wantErr(t, "Messages after delete", err, mailstore.ErrNoSuchMailbox)
		checkMailbox(t, st, a.ID, "P/child")
		equalNames(t, "Mailboxes", mailboxNames(t, st, a.ID), defaultNamesPlus("P/child"))
		wantErr(t, "DeleteMailbox again", st.DeleteMailbox(ctx, a.ID, "P"), mailstore.ErrNoSuchMailbox)
		for _, n := range []string{"INBOX", "inbox"} {
			wantErr(t, "DeleteMailbox "+n, st.DeleteMailbox(ctx, a.ID, n), mailstore.ErrNotAllowed)
		}
		// IDs are never reused.
		p2 := createMailbox(t, st, a.ID, "P")
		if p2.ID == p.ID {
			t.Fatalf("mailbox ID %d reused", p.ID)
		}
		if n := len(messages(t, st, p2.ID)); n != 0 {
			t.Fatalf("re-created mailbox has %d messages", n)
		}
		if p2.UIDNext != 1 {
			t.Fatalf("re-created mailbox UIDNEXT %d", p2.UIDNext)
		}
	})

	sub(t, open, "Subscribe", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		createMailbox(t, st, a.ID, "Work")
		noErr(t, "SetSubscribed", st.SetSubscribed(ctx, a.ID, "Work", true))
		if !getMailbox(t, st, a.ID, "Work").Subscribed {
			t.Fatal("not subscribed")
		}
		noErr(t, "SetSubscribed", st.SetSubscribed(ctx, a.ID, "inbox", false))
		if getMailbox(t, st, a.ID, "INBOX").Subscribed {
			t.Fatal("INBOX still subscribed")
		}
		wantErr(t, "SetSubscribed unknown", st.SetSubscribed(ctx, a.ID, "Nope", true), mailstore.ErrNoSuchMailbox)
	})
}

func testRename(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "WithChildren", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		before := map[string]mailstore.Mailbox{}
		for _, n := range []string{"a", "a/b", "a/b/c", "ab", "a.b"} {
			before[n] = createMailbox(t, st, a.ID, n)
		}
		m := appendMsg(t, st, before["a/b"].ID, bodyOf("kept"), `\Seen`)
		noErr(t, "RenameMailbox", st.RenameMailbox(ctx, a.ID, "a", "x/y"))
		equalNames(t, "after rename", mailboxNames(t, st, a.ID), defaultNamesPlus("x/y", "x/y/b", "x/y/b/c", "ab", "a.b"))
		for old, nw := range map[string]string{"a": "x/y", "a/b": "x/y/b", "a/b/c": "x/y/b/c", "ab": "ab"} {
			got := getMailbox(t, st, a.ID, nw)
			want := before[old]
			want.Name = nw
			if old == "a/b" {
				want.Messages, want.Size, want.UIDNext = 1, m.Size, 2
			}
			got.HighestModSeq, want.HighestModSeq = 0, 0
			if got != want {
				t.Fatalf("renamed %s: %+v, want %+v", old, got, want)
			}
		}
		_, ms := checkMailbox(t, st, a.ID, "x/y/b")
		if len(ms) != 1 {
			t.Fatalf("renamed mailbox has %d messages", len(ms))
		}
		sameMessage(t, "message in renamed mailbox", ms[0], m)
		_, err := st.Mailbox(ctx, a.ID, "a/b")
		wantErr(t, "old child name", err, mailstore.ErrNoSuchMailbox)
	})

	sub(t, open, "Errors", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		for _, n := range []string{"p", "p/q", "r/q", "s"} {
			createMailbox(t, st, a.ID, n)
		}
		wantErr(t, "to existing", st.RenameMailbox(ctx, a.ID, "p", "s"), mailstore.ErrMailboxExists)
		wantErr(t, "to itself", st.RenameMailbox(ctx, a.ID, "p", "p"), mailstore.ErrMailboxExists)
		wantErr(t, "to INBOX", st.RenameMailbox(ctx, a.ID, "p", "inbox"), mailstore.ErrMailboxExists)
		wantErr(t, "missing", st.RenameMailbox(ctx, a.ID, "nope", "t"), mailstore.ErrNoSuchMailbox)
		wantErr(t, "into own subtree", st.RenameMailbox(ctx, a.ID, "p", "p/q/r"), mailstore.ErrNotAllowed)
		wantErr(t, "invalid new name", st.RenameMailbox(ctx, a.ID, "p", "t//u"), mailstore.ErrInvalidName)
		// p/q would become r/q, which exists: nothing may change.
		wantErr(t, "child collision", st.RenameMailbox(ctx, a.ID, "p", "r"), mailstore.ErrMailboxExists)
		equalNames(t, "after failed renames", mailboxNames(t, st, a.ID), defaultNamesPlus("p", "p/q", "r/q", "s"))
	})

	sub(t, open, "OntoOwnParent", func(t *testing.T, st mailstore.Store) {
		// "a/b" -> "a" while "a/b/b" exists: the child's new name is the
		// parent's old name.
		a := newAccount(t, st, "alice@example.org")
		ab := createMailbox(t, st, a.ID, "a/b")
		abb := createMailbox(t, st, a.ID, "a/b/b")
		noErr(t, "RenameMailbox", st.RenameMailbox(ctx, a.ID, "a/b", "a"))
		equalNames(t, "after rename", mailboxNames(t, st, a.ID), defaultNamesPlus("a", "a/b"))
		if got := getMailbox(t, st, a.ID, "a"); got.ID != ab.ID {
			t.Fatalf("a is mailbox %d, want %d", got.ID, ab.ID)
		}
		if got := getMailbox(t, st, a.ID, "a/b"); got.ID != abb.ID {
			t.Fatalf("a/b is mailbox %d, want %d", got.ID, abb.ID)
		}
	})

	sub(t, open, "Inbox", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		child := createMailbox(t, st, a.ID, "INBOX/Child")
		m1 := appendMsg(t, st, inbox.ID, bodyOf("1"), `\Seen`, "$Label")
		m2 := appendMsg(t, st, inbox.ID, bodyOf("2"))
		m3 := appendMsg(t, st, inbox.ID, bodyOf("3"), `\Flagged`)
		noErr(t, "Expunge", expunge(t, st, inbox.ID, m2.UID))
		inbox = getMailbox(t, st, a.ID, "INBOX")

		noErr(t, "RenameMailbox INBOX", st.RenameMailbox(ctx, a.ID, "inbox", "Old Mail"))
		equalNames(t, "after rename", mailboxNames(t, st, a.ID), defaultNamesPlus("INBOX/Child", "Old Mail"))
		newInbox, inboxMsgs := checkMailbox(t, st, a.ID, "INBOX")
		if newInbox.ID != inbox.ID || newInbox.UIDValidity != inbox.UIDValidity || newInbox.UIDNext != inbox.UIDNext ||
			newInbox.Messages != 0 || len(inboxMsgs) != 0 {
			t.Fatalf("INBOX after rename: %+v with %d messages (before %+v)", newInbox, len(inboxMsgs), inbox)
		}
		if newInbox.HighestModSeq <= inbox.HighestModSeq {
			t.Fatalf("INBOX HIGHESTMODSEQ %d, was %d", newInbox.HighestModSeq, inbox.HighestModSeq)
		}
		van, err := st.Vanished(ctx, inbox.ID, inbox.HighestModSeq)
		noErr(t, "Vanished", err)
		equalUIDs(t, "Vanished after RENAME INBOX", van, []mailstore.UID{m1.UID, m3.UID})
		old, oldMsgs := checkMailbox(t, st, a.ID, "Old Mail")
		if old.ID == inbox.ID || old.UIDValidity == inbox.UIDValidity || old.Messages != 2 || old.Unseen != 1 {
			t.Fatalf("Old Mail = %+v", old)
		}
		for i, want := range []mailstore.Message{m1, m3} {
			got := oldMsgs[i]
			if !slices.Equal(got.Flags, want.Flags) || got.BlobID != want.BlobID || !got.InternalDate.Equal(want.InternalDate) || got.Size != want.Size {
				t.Fatalf("moved message %d: %+v, want like %+v", i, got, want)
			}
		}
		if got := getMailbox(t, st, a.ID, "INBOX/Child"); got.ID != child.ID {
			t.Fatal("INBOX/Child was renamed")
		}
		// New deliveries go to the (empty) INBOX, with UIDs after the old ones.
		deliver(t, st, bodyOf("4"), mailstore.Recipient{AccountID: a.ID, Mailbox: "INBOX"})
		_, inboxMsgs = checkMailbox(t, st, a.ID, "INBOX")
		if len(inboxMsgs) != 1 || inboxMsgs[0].UID != inbox.UIDNext {
			t.Fatalf("delivery after rename: %+v", inboxMsgs)
		}
		wantErr(t, "rename INBOX onto existing", st.RenameMailbox(ctx, a.ID, "INBOX", "Old Mail"), mailstore.ErrMailboxExists)
	})
}

func testUIDValidity(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "NeverReused", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		seen := map[uint32]string{}
		for _, mb := range mustMailboxes(t, st, a.ID) {
			seen[mb.UIDValidity] = mb.Name
		}
		var last uint32
		use := func(mb mailstore.Mailbox) {
			t.Helper()
			if prev, ok := seen[mb.UIDValidity]; ok {
				t.Fatalf("UIDVALIDITY %d of %q was used before by %q", mb.UIDValidity, mb.Name, prev)
			}
			seen[mb.UIDValidity] = mb.Name
			if mb.Name == "X" && mb.UIDValidity <= last {
				t.Fatalf("UIDVALIDITY of re-created X %d <= earlier %d", mb.UIDValidity, last)
			}
			if mb.Name == "X" {
				last = mb.UIDValidity
			}
		}
		for i := 0; i < 5; i++ {
			x := createMailbox(t, st, a.ID, "X")
			appendMsg(t, st, x.ID, bodyOf("m"))
			use(x)
			if i%2 == 0 {
				noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, a.ID, "X"))
			} else {
				noErr(t, "RenameMailbox", st.RenameMailbox(ctx, a.ID, "X", "Y"))
				if y := getMailbox(t, st, a.ID, "Y"); y.UIDValidity != x.UIDValidity {
					t.Fatalf("rename changed UIDVALIDITY %d -> %d", x.UIDValidity, y.UIDValidity)
				}
				noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, a.ID, "Y"))
			}
		}
	})
}

func mustMailboxes(t *testing.T, st mailstore.Store, acct int64) []mailstore.Mailbox {
	t.Helper()
	mbs, err := st.Mailboxes(ctx, acct)
	noErr(t, "Mailboxes", err)
	return mbs
}

func expunge(t *testing.T, st mailstore.Store, mailboxID int64, uids ...mailstore.UID) error {
	t.Helper()
	got, err := st.Expunge(ctx, mailboxID, uids)
	if err != nil {
		return err
	}
	equalUIDs(t, "Expunge", got, uids)
	return nil
}
