package storetest

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// drain returns the pending changes of sub and checks that Ready was
// signalled if there are any. The order within one operation is not part of
// the contract, so changes are sorted.
func drain(t *testing.T, sub *mailstore.Subscription) []mailstore.Change {
	t.Helper()
	signalled := false
	select {
	case <-sub.Ready():
		signalled = true
	default:
	}
	cs := sub.Drain()
	if len(cs) > 0 && !signalled {
		t.Fatalf("changes pending but Ready not signalled: %+v", cs)
	}
	slices.SortStableFunc(cs, func(a, b mailstore.Change) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.MailboxID, b.MailboxID),
			cmp.Compare(a.UID, b.UID), cmp.Compare(a.MailboxName, b.MailboxName))
	})
	return cs
}

// expectChanges compares the changes pending on sub with want, field by
// field (MailboxName only for mailbox changes, Flags only for appends and
// flag changes, Size only for appends).
func expectChanges(t *testing.T, what string, sub *mailstore.Subscription, want ...mailstore.Change) {
	t.Helper()
	got := drain(t, sub)
	if len(got) != len(want) {
		t.Fatalf("%s: %d changes %+v, want %d %+v", what, len(got), got, len(want), want)
	}
	for i := range got {
		g, w := got[i], want[i]
		ok := g.Kind == w.Kind && g.MailboxID == w.MailboxID && g.UID == w.UID && g.ModSeq == w.ModSeq
		switch w.Kind {
		case mailstore.ChangeAppend:
			ok = ok && slices.Equal(g.Flags, w.Flags) && g.Size == w.Size
		case mailstore.ChangeFlags:
			ok = ok && slices.Equal(g.Flags, w.Flags)
		case mailstore.ChangeMailboxCreate, mailstore.ChangeMailboxDelete:
			ok = ok && g.MailboxName == w.MailboxName
		case mailstore.ChangeMailboxRename:
			ok = ok && g.MailboxName == w.MailboxName && g.OldName == w.OldName
		}
		if !ok {
			t.Fatalf("%s: change %d is %+v, want %+v", what, i, g, w)
		}
	}
}

func appendChange(mb mailstore.Mailbox, m mailstore.Message) mailstore.Change {
	return mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: mb.ID, UID: m.UID, ModSeq: m.ModSeq, Flags: m.Flags, Size: m.Size}
}

func testNotifications(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "Kinds", func(t *testing.T, st mailstore.Store) {
		alice := newAccount(t, st, "alice@example.org")
		bob := newAccount(t, st, "bob@example.org")
		sa := st.Subscribe(alice.ID)
		defer sa.Close()
		sb := st.Subscribe(bob.ID)
		defer sb.Close()
		closed := st.Subscribe(alice.ID)
		closed.Close()
		inbox := getMailbox(t, st, alice.ID, "INBOX")

		work := createMailbox(t, st, alice.ID, "Work")
		expectChanges(t, "CreateMailbox", sa, mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: work.ID, MailboxName: "Work"})
		workSub := createMailbox(t, st, alice.ID, "Work/Sub")
		expectChanges(t, "CreateMailbox", sa, mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: workSub.ID, MailboxName: "Work/Sub"})

		m1 := appendMsg(t, st, inbox.ID, bodyOf("1"), `\Seen`)
		expectChanges(t, "Append", sa, appendChange(inbox, m1))

		errs := st.Deliver(ctx, spool(t, st, []byte(bodyOf("2"))), date, []mailstore.Recipient{
			{AccountID: alice.ID, Mailbox: "INBOX"}, {AccountID: alice.ID, Mailbox: "Nope"}, {AccountID: bob.ID, Mailbox: "INBOX"}})
		noErr(t, "Deliver", errs[0])
		noErr(t, "Deliver", errs[2])
		ams := messages(t, st, inbox.ID)
		m2 := ams[1]
		bobInbox := getMailbox(t, st, bob.ID, "INBOX")
		bm := messages(t, st, bobInbox.ID)[0]
		expectChanges(t, "Deliver alice", sa, appendChange(inbox, m2))
		expectChanges(t, "Deliver bob", sb, appendChange(bobInbox, bm))

		changed, _, err := st.StoreFlags(ctx, inbox.ID, []mailstore.UID{m1.UID, m2.UID}, mailstore.FlagsAdd, []string{`\Flagged`}, 0)
		noErr(t, "StoreFlags", err)
		expectChanges(t, "StoreFlags", sa,
			mailstore.Change{Kind: mailstore.ChangeFlags, MailboxID: inbox.ID, UID: m1.UID, ModSeq: changed[0].ModSeq, Flags: []string{`\Flagged`, `\Seen`}},
			mailstore.Change{Kind: mailstore.ChangeFlags, MailboxID: inbox.ID, UID: m2.UID, ModSeq: changed[1].ModSeq, Flags: []string{`\Flagged`}})
		_, _, err = st.StoreFlags(ctx, inbox.ID, []mailstore.UID{m1.UID}, mailstore.FlagsAdd, []string{`\Flagged`}, 0)
		noErr(t, "StoreFlags no-op", err)
		expectChanges(t, "StoreFlags no-op", sa)

		_, dst, err := st.Copy(ctx, inbox.ID, []mailstore.UID{m1.UID}, work.ID)
		noErr(t, "Copy", err)
		cm := messages(t, st, work.ID)[0]
		if cm.UID != dst[0] {
			t.Fatal("copy UID")
		}
		expectChanges(t, "Copy", sa, appendChange(work, cm))

		before := getMailbox(t, st, alice.ID, "INBOX")
		_, _, err = st.Move(ctx, inbox.ID, []mailstore.UID{m2.UID}, work.ID)
		noErr(t, "Move", err)
		mm := messages(t, st, work.ID)[1]
		van, err := st.Vanished(ctx, inbox.ID, before.HighestModSeq)
		noErr(t, "Vanished", err)
		equalUIDs(t, "Vanished", van, []mailstore.UID{m2.UID})
		after := getMailbox(t, st, alice.ID, "INBOX")
		expectChanges(t, "Move", sa, appendChange(work, mm),
			mailstore.Change{Kind: mailstore.ChangeExpunge, MailboxID: inbox.ID, UID: m2.UID, ModSeq: after.HighestModSeq})

		noErr(t, "Expunge", expunge(t, st, inbox.ID, m1.UID))
		expectChanges(t, "Expunge", sa,
			mailstore.Change{Kind: mailstore.ChangeExpunge, MailboxID: inbox.ID, UID: m1.UID, ModSeq: getMailbox(t, st, alice.ID, "INBOX").HighestModSeq})

		noErr(t, "RenameMailbox", st.RenameMailbox(ctx, alice.ID, "Work", "Job"))
		expectChanges(t, "RenameMailbox", sa,
			mailstore.Change{Kind: mailstore.ChangeMailboxRename, MailboxID: work.ID, MailboxName: "Job", OldName: "Work"},
			mailstore.Change{Kind: mailstore.ChangeMailboxRename, MailboxID: workSub.ID, MailboxName: "Job/Sub", OldName: "Work/Sub"})
		noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, alice.ID, "Job"))
		expectChanges(t, "DeleteMailbox", sa, mailstore.Change{Kind: mailstore.ChangeMailboxDelete, MailboxID: work.ID, MailboxName: "Job"})

		// Failed operations publish nothing.
		_, err = st.CreateMailbox(ctx, alice.ID, "Job/Sub", "")
		wantErr(t, "CreateMailbox existing", err, mailstore.ErrMailboxExists)
		_, err = st.Append(ctx, work.ID, spool(t, st, []byte("x")), nil, date)
		wantErr(t, "Append to deleted", err, mailstore.ErrNoSuchMailbox)
		_, err = st.Expunge(ctx, inbox.ID, []mailstore.UID{99})
		noErr(t, "Expunge missing UID", err)
		wantErr(t, "Rename missing", st.RenameMailbox(ctx, alice.ID, "Nope", "X"), mailstore.ErrNoSuchMailbox)
		noErr(t, "SetSubscribed", st.SetSubscribed(ctx, alice.ID, "INBOX", false))
		expectChanges(t, "failed operations", sa)
		expectChanges(t, "bob after alice's operations", sb)
		if cs := closed.Drain(); len(cs) != 0 {
			t.Fatalf("closed subscription got %+v", cs)
		}
	})

	sub(t, open, "ExactlyOnceAfterCommit", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		work := createMailbox(t, st, a.ID, "Work")
		sub := st.Subscribe(a.ID)
		defer sub.Close()

		type key struct {
			kind   mailstore.ChangeKind
			mbox   int64
			uid    mailstore.UID
			modseq uint64
		}
		got := map[key]int{}
		done := make(chan struct{})
		consumerDone := make(chan struct{})
		// The consumer checks that each change is visible to readers when
		// it is received: published after commit, never before.
		check := func(cs []mailstore.Change) {
			for _, c := range cs {
				got[key{c.Kind, c.MailboxID, c.UID, c.ModSeq}]++
				if c.Kind != mailstore.ChangeAppend && c.Kind != mailstore.ChangeFlags {
					continue
				}
				ms, err := st.MessagesChangedSince(ctx, c.MailboxID, c.ModSeq-1)
				if err != nil {
					t.Errorf("MessagesChangedSince: %v", err)
					continue
				}
				if !slices.ContainsFunc(ms, func(m mailstore.Message) bool { return m.UID == c.UID && m.ModSeq >= c.ModSeq }) {
					t.Errorf("change %+v published before it is visible", c)
				}
			}
		}
		go func() {
			defer close(consumerDone)
			for {
				select {
				case <-sub.Ready():
					check(sub.Drain())
				case <-done:
					check(sub.Drain())
					return
				}
			}
		}()

		want := map[key]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			mb := inbox
			if g%2 == 1 {
				mb = work
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 20; i++ {
					m, err := appendOne(st, mb.ID, bodyOf(fmt.Sprint(g, i)))
					if err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					changed, _, err := st.StoreFlags(ctx, mb.ID, []mailstore.UID{m.UID}, mailstore.FlagsAdd, []string{`\Seen`}, 0)
					if err != nil || len(changed) != 1 {
						t.Errorf("StoreFlags: %v %v", changed, err)
						return
					}
					mu.Lock()
					want[key{mailstore.ChangeAppend, mb.ID, m.UID, m.ModSeq}]++
					want[key{mailstore.ChangeFlags, mb.ID, m.UID, changed[0].ModSeq}]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		// Every change was published before its call returned.
		close(done)
		<-consumerDone
		if len(got) != len(want) {
			t.Fatalf("%d distinct changes received, want %d", len(got), len(want))
		}
		for k, n := range want {
			if got[k] != n {
				t.Fatalf("change %+v received %d times, want %d", k, got[k], n)
			}
		}
	})
}
