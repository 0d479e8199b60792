package storetest

import (
	"sync"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// testCredentials covers the account's password hash and SCRAM secret:
// SetCredentials, SetSCRAMIfHash, and SetPasswordHash removing the secret.
// The store treats both as opaque strings.
func testCredentials(t *testing.T, open func(t *testing.T) mailstore.Store) {
	account := func(t *testing.T, st mailstore.Store, name string) mailstore.Account {
		t.Helper()
		a, err := st.Account(ctx, name)
		noErr(t, "Account "+name, err)
		return a
	}

	sub(t, open, "NewAccountHasNone", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		if a.SCRAMSHA256 != "" {
			t.Fatalf("CreateAccount: SCRAM secret %q, want none", a.SCRAMSHA256)
		}
		if got := account(t, st, "alice@example.org"); got.SCRAMSHA256 != "" {
			t.Fatalf("Account: SCRAM secret %q, want none", got.SCRAMSHA256)
		}
	})

	sub(t, open, "SetCredentials", func(t *testing.T, st mailstore.Store) {
		newAccount(t, st, "alice@example.org")
		b := newAccount(t, st, "bob@example.org")
		noErr(t, "SetCredentials", st.SetCredentials(ctx, "ALICE@example.org", "h2", "s2"))
		if a := account(t, st, "alice@example.org"); a.PasswordHash != "h2" || a.SCRAMSHA256 != "s2" {
			t.Fatalf("after SetCredentials: %q %q", a.PasswordHash, a.SCRAMSHA256)
		}
		// Accounts returns the secret too; other accounts are untouched.
		accts, err := st.Accounts(ctx)
		noErr(t, "Accounts", err)
		if len(accts) != 2 || accts[0].SCRAMSHA256 != "s2" || accts[1].SCRAMSHA256 != "" || accts[1].PasswordHash != b.PasswordHash {
			t.Fatalf("Accounts = %+v", accts)
		}
		noErr(t, "SetCredentials without secret", st.SetCredentials(ctx, "alice@example.org", "h3", ""))
		if a := account(t, st, "alice@example.org"); a.PasswordHash != "h3" || a.SCRAMSHA256 != "" {
			t.Fatalf("after SetCredentials with no secret: %q %q", a.PasswordHash, a.SCRAMSHA256)
		}
		wantErr(t, "SetCredentials unknown", st.SetCredentials(ctx, "dave@example.org", "h", "s"), mailstore.ErrNoSuchAccount)
		wantErr(t, "SetCredentials invalid name", st.SetCredentials(ctx, "", "h", "s"), mailstore.ErrNoSuchAccount)
	})

	// A new password hash without a new secret must not leave the old
	// password's secret working.
	sub(t, open, "SetPasswordHashRemovesSecret", func(t *testing.T, st mailstore.Store) {
		newAccount(t, st, "alice@example.org")
		noErr(t, "SetCredentials", st.SetCredentials(ctx, "alice@example.org", "h1", "s1"))
		noErr(t, "SetPasswordHash", st.SetPasswordHash(ctx, "alice@example.org", "h2"))
		if a := account(t, st, "alice@example.org"); a.PasswordHash != "h2" || a.SCRAMSHA256 != "" {
			t.Fatalf("after SetPasswordHash: %q %q", a.PasswordHash, a.SCRAMSHA256)
		}
	})

	sub(t, open, "SetSCRAMIfHash", func(t *testing.T, st mailstore.Store) {
		newAccount(t, st, "alice@example.org") // hash "hash-of-alice@example.org"
		ok, err := st.SetSCRAMIfHash(ctx, "alice@example.org", "stale hash", "s-stale")
		noErr(t, "SetSCRAMIfHash stale", err)
		if ok {
			t.Fatal("SetSCRAMIfHash with a stale hash reported success")
		}
		if a := account(t, st, "alice@example.org"); a.SCRAMSHA256 != "" {
			t.Fatalf("stale SetSCRAMIfHash stored %q", a.SCRAMSHA256)
		}
		ok, err = st.SetSCRAMIfHash(ctx, "Alice@Example.org", "hash-of-alice@example.org", "s1")
		noErr(t, "SetSCRAMIfHash", err)
		if !ok {
			t.Fatal("SetSCRAMIfHash with the current hash reported no change")
		}
		if a := account(t, st, "alice@example.org"); a.PasswordHash != "hash-of-alice@example.org" || a.SCRAMSHA256 != "s1" {
			t.Fatalf("after SetSCRAMIfHash: %q %q", a.PasswordHash, a.SCRAMSHA256)
		}
		_, err = st.SetSCRAMIfHash(ctx, "dave@example.org", "h", "s")
		wantErr(t, "SetSCRAMIfHash unknown", err, mailstore.ErrNoSuchAccount)
	})

	// A password change racing with the save of a secret derived from the
	// old password: whatever the order, the account never ends up with
	// the new hash and the old password's secret.
	sub(t, open, "SetSCRAMIfHashRace", func(t *testing.T, st mailstore.Store) {
		newAccount(t, st, "alice@example.org")
		for i := range 20 {
			old := account(t, st, "alice@example.org").PasswordHash
			newHash := "h-" + string(rune('a'+i))
			var wg sync.WaitGroup
			var saved bool
			var saveErr, setErr error
			wg.Add(2)
			go func() {
				defer wg.Done()
				saved, saveErr = st.SetSCRAMIfHash(ctx, "alice@example.org", old, "secret-of-"+old)
			}()
			go func() {
				defer wg.Done()
				setErr = st.SetCredentials(ctx, "alice@example.org", newHash, "secret-of-"+newHash)
			}()
			wg.Wait()
			noErr(t, "SetSCRAMIfHash", saveErr)
			noErr(t, "SetCredentials", setErr)
			a := account(t, st, "alice@example.org")
			if a.PasswordHash != newHash || a.SCRAMSHA256 != "secret-of-"+newHash {
				t.Fatalf("round %d (saved %v): hash %q with secret %q", i, saved, a.PasswordHash, a.SCRAMSHA256)
			}
		}
	})
}
