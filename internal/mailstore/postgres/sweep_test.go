package postgres

import (
	"context"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// TestSweepCatchesMissedNotify: a change whose NOTIFY never came (its node
// crashed between COMMIT and NOTIFY) reaches the other node's subscribers
// at the next sweep, exactly once.
func TestSweepCatchesMissedNotify(t *testing.T) {
	a, b, _ := twoNodes(t)
	acct := mustAccount(t, a, "alice@example.org")
	inbox := mustMailbox(t, a, acct.ID, "INBOX")
	sub := b.Subscribe(acct.ID)
	defer sub.Close()
	waitListening(t, b)

	a.skipNotify.Store(true)
	m := mustAppend(t, a, inbox.ID, bodyOf("1"))
	work, err := a.CreateMailbox(bg, acct.ID, "Work", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := waitChanges(t, sub, 2)
	expect(t, "after the sweep", got,
		mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m.UID, ModSeq: m.ModSeq, Flags: []string{}, Size: m.Size},
		mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: work.ID, MailboxName: "Work"})
	// A second sweep finds nothing new to publish.
	if err := b.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w := b.watchOf(acct.ID, false); w != nil {
		w.mu.Lock() // any scan the sweep queued has finished or not started
		w.mu.Unlock()
	}
	if extra := sub.Drain(); len(extra) != 0 {
		t.Fatalf("published again: %+v", extra)
	}
}

// TestSweepDropsUnwatchedAccounts: once an account's last subscription on
// a node closes, the sweep drops its watermarks; a new subscription starts
// afresh and gets every later change.
func TestSweepDropsUnwatchedAccounts(t *testing.T) {
	a, b, _ := twoNodes(t)
	acct := mustAccount(t, a, "alice@example.org")
	inbox := mustMailbox(t, a, acct.ID, "INBOX")
	sub := b.Subscribe(acct.ID)
	waitListening(t, b)
	mustAppend(t, a, inbox.ID, bodyOf("1"))
	waitChanges(t, sub, 1)
	if err := b.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.watchOf(acct.ID, false) == nil {
		t.Fatal("watch dropped while subscribed")
	}
	sub.Close()
	if err := b.sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.watchOf(acct.ID, false) != nil {
		t.Fatal("watch kept after the last subscription closed")
	}
	mustAppend(t, a, inbox.ID, bodyOf("2")) // nobody on b listens
	sub2 := b.Subscribe(acct.ID)
	defer sub2.Close()
	m3 := mustAppend(t, a, inbox.ID, bodyOf("3"))
	expect(t, "after resubscribing", waitChanges(t, sub2, 1),
		mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m3.UID, ModSeq: m3.ModSeq, Flags: []string{}, Size: m3.Size})
}
