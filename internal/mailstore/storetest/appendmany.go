package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// appendManyMsgs returns AppendMessages with the given bodies, no flags and
// the suite's fixed date.
func appendManyMsgs(t *testing.T, st mailstore.Store, bodies ...string) []mailstore.AppendMessage {
	t.Helper()
	msgs := make([]mailstore.AppendMessage, len(bodies))
	for i, b := range bodies {
		msgs[i] = mailstore.AppendMessage{Spool: spool(t, st, []byte(b)), Date: date}
	}
	return msgs
}

// mailboxUnchanged fails unless the mailbox's UIDNEXT, HIGHESTMODSEQ and
// counters are those of before.
func mailboxUnchanged(t *testing.T, st mailstore.Store, what string, before mailstore.Mailbox) {
	t.Helper()
	mb, _ := checkMailbox(t, st, before.AccountID, before.Name)
	if mb.UIDNext != before.UIDNext || mb.HighestModSeq != before.HighestModSeq ||
		mb.Messages != before.Messages || mb.Unseen != before.Unseen || mb.Size != before.Size {
		t.Fatalf("%s changed the mailbox:\n before %+v\n after  %+v", what, before, mb)
	}
}

// testAppendMany covers Store.AppendMany (IMAP MULTIAPPEND, RFC 3502): all
// messages or none, consecutive UIDs, per-message MODSEQs as Append gives
// them, flags and dates kept, notifications only after success.
//
// A spool that cannot be stored (here: one already aborted) must make the
// whole call fail; the suite relies on that as the portable way to inject
// a failure of one message.
func testAppendMany(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "Basic", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		first := appendMsg(t, st, inbox.ID, bodyOf("before"))
		before := getMailbox(t, st, a.ID, "INBOX")
		s := st.Subscribe(a.ID)
		defer s.Close()

		d2 := time.Date(1999, 12, 31, 23, 59, 59, 0, time.FixedZone("", -8*3600))
		bodies := []string{bodyOf("one"), bodyOf("two"), bodyOf("one"), "x\ny\n"}
		msgs := []mailstore.AppendMessage{
			{Spool: spool(t, st, []byte(bodies[0])), Flags: []string{`\seen`, "$Label", `\Seen`}, Date: date},
			{Spool: spool(t, st, []byte(bodies[1])), Flags: nil, Date: d2},
			// Same content as the first: both share one blob.
			{Spool: spool(t, st, []byte(bodies[2])), Flags: []string{`\Draft`, `\flagged`}, Date: date.Add(time.Hour)},
			// Zero date: now. Bare LFs are normalised as by Append.
			{Spool: spool(t, st, []byte(bodies[3])), Flags: []string{}},
		}
		wantFlags := [][]string{{"$Label", `\Seen`}, {}, {`\Draft`, `\Flagged`}, {}}
		wantDates := []time.Time{date, d2, date.Add(time.Hour)}
		wantBodies := []string{bodies[0], bodies[1], bodies[2], "x\r\ny\r\n"}
		t0 := time.Now().Add(-time.Second)
		got, err := st.AppendMany(ctx, inbox.ID, msgs)
		noErr(t, "AppendMany", err)
		t1 := time.Now().Add(time.Second)
		if len(got) != len(msgs) {
			t.Fatalf("AppendMany returned %d messages for %d", len(got), len(msgs))
		}
		for i, m := range got {
			if m.UID != first.UID+1+mailstore.UID(i) {
				t.Fatalf("message %d: UID %d, want %d (consecutive after %d)", i, m.UID, first.UID+1+mailstore.UID(i), first.UID)
			}
			// Each message has its own MODSEQ, ascending, as if
			// appended one by one.
			if m.ModSeq <= before.HighestModSeq || (i > 0 && m.ModSeq <= got[i-1].ModSeq) {
				t.Fatalf("message %d: MODSEQ %d (previous %d, mailbox before %d)", i, m.ModSeq, got[max(i-1, 0)].ModSeq, before.HighestModSeq)
			}
			if len(m.Flags) != 0 || len(wantFlags[i]) != 0 {
				equalFlags(t, fmt.Sprint("message ", i), m.Flags, wantFlags[i])
			}
			if i < len(wantDates) && !m.InternalDate.Equal(wantDates[i]) {
				t.Fatalf("message %d: InternalDate %v, want %v", i, m.InternalDate, wantDates[i])
			}
			if i == 3 && (m.InternalDate.Before(t0) || m.InternalDate.After(t1)) {
				t.Fatalf("message %d: zero date stored as %v, want about now", i, m.InternalDate)
			}
			if m.SaveDate.Before(t0) || m.SaveDate.After(t1) || m.Size != int64(len(wantBodies[i])) {
				t.Fatalf("message %d: %+v", i, m)
			}
			equalBytes(t, fmt.Sprint("body ", i), readBlob(t, st, m.BlobID), []byte(wantBodies[i]))
			checkStructure(t, st, inbox.ID, m.UID, []byte(wantBodies[i]))
		}
		if got[0].BlobID != got[2].BlobID {
			t.Fatalf("identical bodies stored as blobs %s and %s", got[0].BlobID, got[2].BlobID)
		}
		mb, ms := checkMailbox(t, st, a.ID, "INBOX")
		if len(ms) != 1+len(msgs) {
			t.Fatalf("%d messages after AppendMany, want %d", len(ms), 1+len(msgs))
		}
		for i, m := range got {
			sameMessage(t, fmt.Sprint("Messages after AppendMany, message ", i), ms[1+i], m)
		}
		last := got[len(got)-1]
		if mb.UIDNext != last.UID+1 || mb.HighestModSeq != last.ModSeq || mb.Unseen != before.Unseen+3 {
			t.Fatalf("mailbox after AppendMany: %+v", mb)
		}
		var want []mailstore.Change
		for _, m := range got {
			want = append(want, appendChange(inbox, m))
		}
		expectChanges(t, "AppendMany", s, want...)

		// Append after AppendMany continues the UIDs.
		if m := appendMsg(t, st, inbox.ID, bodyOf("after")); m.UID != last.UID+1 || m.ModSeq <= last.ModSeq {
			t.Fatalf("Append after AppendMany = %+v", m)
		}
		// One message is like Append.
		one, err := st.AppendMany(ctx, inbox.ID, appendManyMsgs(t, st, bodyOf("single")))
		noErr(t, "AppendMany of one", err)
		if len(one) != 1 || one[0].UID != last.UID+2 {
			t.Fatalf("AppendMany of one = %+v", one)
		}
		checkMailbox(t, st, a.ID, "INBOX")
	})

	sub(t, open, "Empty", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		got, err := st.AppendMany(ctx, inbox.ID, nil)
		noErr(t, "AppendMany of nothing", err)
		if len(got) != 0 {
			t.Fatalf("AppendMany of nothing = %+v", got)
		}
		mailboxUnchanged(t, st, "AppendMany of nothing", inbox)
		_, err = st.AppendMany(ctx, inbox.ID+1000, nil)
		wantErr(t, "AppendMany of nothing to a missing mailbox", err, mailstore.ErrNoSuchMailbox)
	})

	sub(t, open, "AllOrNothing", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		appendMsg(t, st, inbox.ID, bodyOf("existing"))
		before := getMailbox(t, st, a.ID, "INBOX")
		s := st.Subscribe(a.ID)
		defer s.Close()

		// An invalid flag on the last message.
		msgs := appendManyMsgs(t, st, bodyOf("1"), bodyOf("2"), bodyOf("3"))
		msgs[0].Flags = []string{`\Seen`}
		msgs[2].Flags = []string{`\Recent`}
		_, err := st.AppendMany(ctx, inbox.ID, msgs)
		wantErr(t, "AppendMany with an invalid flag", err, mailstore.ErrInvalidFlag)
		mailboxUnchanged(t, st, "AppendMany with an invalid flag", before)

		// A spool that cannot be stored in the middle.
		msgs = appendManyMsgs(t, st, bodyOf("1"), bodyOf("2"), bodyOf("3"))
		msgs[1].Spool.Abort()
		_, err = st.AppendMany(ctx, inbox.ID, msgs)
		if err == nil {
			t.Fatal("AppendMany with an aborted spool succeeded")
		}
		mailboxUnchanged(t, st, "AppendMany with an aborted spool", before)

		// A mailbox that does not exist, or no longer does.
		_, err = st.AppendMany(ctx, inbox.ID+1000, appendManyMsgs(t, st, bodyOf("1"), bodyOf("2")))
		wantErr(t, "AppendMany to a missing mailbox", err, mailstore.ErrNoSuchMailbox)
		gone := createMailbox(t, st, a.ID, "Gone")
		noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, a.ID, "Gone"))
		drain(t, s)
		_, err = st.AppendMany(ctx, gone.ID, appendManyMsgs(t, st, bodyOf("1"), bodyOf("2")))
		wantErr(t, "AppendMany to a deleted mailbox", err, mailstore.ErrNoSuchMailbox)
		// A cancelled context before the call: nothing.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := st.AppendMany(cctx, inbox.ID, appendManyMsgs(t, st, bodyOf("1"), bodyOf("2"))); err == nil {
			// A backend may complete work it had already started, but
			// it must then have appended everything.
			mb := getMailbox(t, st, a.ID, "INBOX")
			if mb.Messages != before.Messages+2 {
				t.Fatalf("AppendMany with a cancelled context: %+v", mb)
			}
			before = mb
			drain(t, s)
		} else {
			mailboxUnchanged(t, st, "AppendMany with a cancelled context", before)
		}

		expectChanges(t, "failed AppendMany calls", s)
		// Whatever UIDs the failed calls may have used up, the next
		// message gets one at or above the UIDNEXT seen before them.
		m := appendMsg(t, st, inbox.ID, bodyOf("after"))
		if m.UID < before.UIDNext {
			t.Fatalf("UID after failed AppendMany calls = %d, UIDNEXT was %d", m.UID, before.UIDNext)
		}
	})

	sub(t, open, "Concurrent", func(t *testing.T, st mailstore.Store) {
		// Concurrent AppendMany and Append calls: each AppendMany gets
		// a run of consecutive UIDs that no other call interleaves.
		const goroutines, calls, batch = 6, 8, 4
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		var (
			mu   sync.Mutex
			uids = map[mailstore.UID]string{}
			wg   sync.WaitGroup
		)
		record := func(uid mailstore.UID, body string) {
			mu.Lock()
			defer mu.Unlock()
			if _, dup := uids[uid]; dup {
				t.Errorf("UID %d returned twice", uid)
			}
			uids[uid] = body
		}
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for c := 0; c < calls; c++ {
					if g%3 == 2 {
						body := bodyOf(fmt.Sprint("single ", g, c))
						m, err := appendOne(st, inbox.ID, body)
						if err != nil {
							t.Errorf("Append: %v", err)
							return
						}
						record(m.UID, body)
						continue
					}
					var msgs []mailstore.AppendMessage
					var bodies []string
					for i := 0; i < batch; i++ {
						body := bodyOf(fmt.Sprint("batch ", g, c, i))
						sp, err := spoolOf(st, body)
						if err != nil {
							t.Errorf("spool: %v", err)
							return
						}
						msgs = append(msgs, mailstore.AppendMessage{Spool: sp, Date: date})
						bodies = append(bodies, body)
					}
					got, err := st.AppendMany(ctx, inbox.ID, msgs)
					if err != nil {
						t.Errorf("AppendMany: %v", err)
						return
					}
					for i, m := range got {
						if m.UID != got[0].UID+mailstore.UID(i) {
							t.Errorf("AppendMany UIDs not consecutive: %v", uidsOf(got))
							return
						}
						record(m.UID, bodies[i])
					}
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		_, ms := checkMailbox(t, st, a.ID, "INBOX")
		if len(ms) != len(uids) {
			t.Fatalf("%d messages stored, %d UIDs returned", len(ms), len(uids))
		}
		for _, m := range ms {
			equalBytes(t, fmt.Sprint("UID ", m.UID), readBlob(t, st, m.BlobID), []byte(uids[m.UID]))
		}
	})

	sub(t, open, "NeverPartlyVisible", func(t *testing.T, st mailstore.Store) {
		// A reader never sees some of the messages of one AppendMany
		// without the others, neither in the counters nor in a View.
		const calls, batch = 10, 5
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		s := st.Subscribe(a.ID)
		defer s.Close()
		done := make(chan struct{})
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			for {
				select {
				case <-done:
					return
				default:
				}
				mb, err := st.Mailbox(ctx, a.ID, "INBOX")
				if err != nil {
					t.Errorf("Mailbox: %v", err)
					return
				}
				if mb.Messages%batch != 0 || mb.UIDNext != mailstore.UID(mb.Messages)+1 {
					t.Errorf("reader saw a partial AppendMany: %+v", mb)
					return
				}
				v, err := st.View(ctx, inbox.ID)
				if err != nil {
					t.Errorf("View: %v", err)
					return
				}
				if len(v.UIDs)%batch != 0 {
					t.Errorf("View saw a partial AppendMany: %v", v.UIDs)
					return
				}
			}
		}()
		// Notifications come as one group per call: when the
		// subscription is ready, every message of the call is there.
		for c := 0; c < calls; c++ {
			bodies := make([]string, batch)
			for i := range bodies {
				bodies[i] = bodyOf(fmt.Sprint(c, "-", i))
			}
			got, err := st.AppendMany(ctx, inbox.ID, appendManyMsgs(t, st, bodies...))
			if err != nil {
				close(done)
				<-readerDone
				t.Fatalf("AppendMany: %v", err)
			}
			cs := drain(t, s)
			if len(cs) != batch {
				close(done)
				<-readerDone
				t.Fatalf("call %d: %d changes, want %d: %+v", c, len(cs), batch, cs)
			}
			if !slices.Equal(uidsOfChanges(cs), uidsOf(got)) {
				close(done)
				<-readerDone
				t.Fatalf("call %d: changes for UIDs %v, appended %v", c, uidsOfChanges(cs), uidsOf(got))
			}
		}
		close(done)
		<-readerDone
		checkMailbox(t, st, a.ID, "INBOX")
	})
}

func uidsOfChanges(cs []mailstore.Change) []mailstore.UID {
	out := make([]mailstore.UID, len(cs))
	for i, c := range cs {
		out[i] = c.UID
	}
	return out
}
