package storetest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

func collect(t *testing.T, st mailstore.Store, want int) {
	t.Helper()
	n, err := st.CollectGarbage(ctx)
	noErr(t, "CollectGarbage", err)
	if n != want {
		t.Fatalf("CollectGarbage removed %d blobs, want %d", n, want)
	}
}

func blobGone(t *testing.T, st mailstore.Store, id string) {
	t.Helper()
	b, err := st.OpenBlob(ctx, id)
	if err == nil {
		b.Close()
	}
	wantErr(t, "OpenBlob of collected blob", err, mailstore.ErrNoSuchMessage)
}

func testGC(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "References", func(t *testing.T, st mailstore.Store) {
		collect(t, st, 0)
		alice := newAccount(t, st, "alice@example.org")
		bob := newAccount(t, st, "bob@example.org")
		ra := mailstore.Recipient{AccountID: alice.ID, Mailbox: "INBOX"}
		rb := mailstore.Recipient{AccountID: bob.ID, Mailbox: "INBOX"}
		ia, ib := getMailbox(t, st, alice.ID, "INBOX"), getMailbox(t, st, bob.ID, "INBOX")
		deliver(t, st, bodyOf("x"), ra, rb)
		collect(t, st, 0)
		blob := messages(t, st, ia.ID)[0].BlobID
		noErr(t, "Expunge", expunge(t, st, ia.ID, 1))
		collect(t, st, 0) // bob's copy still references it
		equalBytes(t, "shared blob", readBlob(t, st, blob), []byte(bodyOf("x")))
		noErr(t, "Expunge", expunge(t, st, ib.ID, 1))
		collect(t, st, 1)
		blobGone(t, st, blob)
		collect(t, st, 0)

		// Delivering the same content again after collection works.
		deliver(t, st, bodyOf("x"), ra)
		equalBytes(t, "re-delivered", readBlob(t, st, messages(t, st, ia.ID)[0].BlobID), []byte(bodyOf("x")))

		// A copy keeps the blob alive after the original is expunged.
		work := createMailbox(t, st, alice.ID, "Work")
		_, _, err := st.Copy(ctx, ia.ID, []mailstore.UID{2}, work.ID)
		noErr(t, "Copy", err)
		noErr(t, "Expunge", expunge(t, st, ia.ID, 2))
		collect(t, st, 0)
		equalBytes(t, "copied", readBlob(t, st, messages(t, st, work.ID)[0].BlobID), []byte(bodyOf("x")))

		// Deleting a mailbox or an account makes its blobs garbage.
		appendMsg(t, st, work.ID, bodyOf("y"))
		noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, alice.ID, "Work"))
		collect(t, st, 2)
		appendMsg(t, st, ib.ID, bodyOf("z1"))
		appendMsg(t, st, ib.ID, bodyOf("z2"))
		appendMsg(t, st, ib.ID, bodyOf("z2"))
		noErr(t, "DeleteAccount", st.DeleteAccount(ctx, "bob@example.org"))
		collect(t, st, 2)
		collect(t, st, 0)
	})

	sub(t, open, "FailedDelivery", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		errs := st.Deliver(ctx, spool(t, st, []byte(bodyOf("lost"))), date, []mailstore.Recipient{{AccountID: a.ID, Mailbox: "Nope"}})
		wantErr(t, "Deliver", errs[0], mailstore.ErrNoSuchMailbox)
		n, err := st.CollectGarbage(ctx)
		noErr(t, "CollectGarbage", err)
		if n > 1 {
			t.Fatalf("collected %d blobs after one failed delivery", n)
		}
		collect(t, st, 0)
		// An aborted spool leaves nothing to collect.
		sp := spool(t, st, []byte("aborted"))
		sp.Abort()
		collect(t, st, 0)
	})

	// A delivery that finds its content already stored (unreferenced) may
	// race a collection that is removing it; the delivered message must
	// be readable either way.
	sub(t, open, "DedupRace", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		work := createMailbox(t, st, a.ID, "Work")
		for r := 0; r < 30; r++ {
			body := bodyOf(fmt.Sprint("round", r))
			m := appendMsg(t, st, inbox.ID, body)
			noErr(t, "Expunge", expunge(t, st, inbox.ID, m.UID))
			var wg sync.WaitGroup
			var derr, gerr error
			wg.Add(2)
			go func() {
				defer wg.Done()
				derr = deliverOne(st, body, mailstore.Recipient{AccountID: a.ID, Mailbox: "Work"})
			}()
			go func() { defer wg.Done(); _, gerr = st.CollectGarbage(ctx) }()
			wg.Wait()
			noErr(t, "Deliver", derr)
			noErr(t, "CollectGarbage", gerr)
			ms := messages(t, st, work.ID)
			equalBytes(t, fmt.Sprint("round ", r), readBlob(t, st, ms[len(ms)-1].BlobID), []byte(body))
		}
		collect(t, st, 0)
	})

	sub(t, open, "ConcurrentDeliveries", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		r := mailstore.Recipient{AccountID: a.ID, Mailbox: "INBOX"}
		var delivered atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25; i++ {
					// Some content repeats across goroutines (dedup).
					if err := deliverOne(st, bodyOf(fmt.Sprint("c", (g*25+i)%60)), r); err != nil {
						t.Errorf("Deliver: %v", err)
						return
					}
					delivered.Add(1)
				}
			}()
		}
		// Expunge some messages while delivering, making blobs garbage.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := mailstore.UID(1); u <= 40; u += 3 {
				if _, err := st.Expunge(ctx, inbox.ID, []mailstore.UID{u}); err != nil {
					t.Errorf("Expunge: %v", err)
					return
				}
			}
		}()
		gcDone := make(chan struct{})
		go func() {
			defer close(gcDone)
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.CollectGarbage(ctx); err != nil {
					t.Errorf("CollectGarbage: %v", err)
					return
				}
			}
		}()
		wg.Wait()
		close(stop)
		<-gcDone
		if t.Failed() {
			return
		}
		if delivered.Load() != 100 {
			t.Fatalf("%d delivered", delivered.Load())
		}
		_, err := st.CollectGarbage(ctx)
		noErr(t, "CollectGarbage", err)
		_, ms := checkMailbox(t, st, a.ID, "INBOX")
		blobs := map[string]bool{}
		var all []mailstore.UID
		for _, m := range ms {
			body := readBlob(t, st, m.BlobID)
			if int64(len(body)) != m.Size {
				t.Fatalf("UID %d: %d octets, want %d", m.UID, len(body), m.Size)
			}
			blobs[m.BlobID] = true
			all = append(all, m.UID)
		}
		noErr(t, "Expunge all", expunge(t, st, inbox.ID, all...))
		collect(t, st, len(blobs))
	})
}

func testLock(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "Exclusive", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		work := createMailbox(t, st, a.ID, "Work")
		unlock1, err := st.LockMailbox(ctx, inbox.ID)
		noErr(t, "LockMailbox", err)
		_, err = st.LockMailbox(ctx, inbox.ID)
		wantErr(t, "second LockMailbox", err, mailstore.ErrLocked)
		unlockW, err := st.LockMailbox(ctx, work.ID)
		noErr(t, "LockMailbox other mailbox", err)
		unlock1()
		unlock3, err := st.LockMailbox(ctx, inbox.ID)
		noErr(t, "LockMailbox after unlock", err)
		unlock1() // a second unlock must not release someone else's lock
		_, err = st.LockMailbox(ctx, inbox.ID)
		wantErr(t, "LockMailbox after stale unlock", err, mailstore.ErrLocked)
		unlock3()
		unlockW()
		_, err = st.LockMailbox(ctx, inbox.ID+1000)
		wantErr(t, "LockMailbox missing", err, mailstore.ErrNoSuchMailbox)

		// Exactly one of many concurrent lockers wins.
		var wins atomic.Int32
		var wg sync.WaitGroup
		unlocks := make(chan func(), 16)
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u, err := st.LockMailbox(ctx, inbox.ID)
				switch {
				case err == nil:
					wins.Add(1)
					unlocks <- u
				case !isErr(err, mailstore.ErrLocked):
					t.Errorf("LockMailbox: %v", err)
				}
			}()
		}
		wg.Wait()
		close(unlocks)
		if wins.Load() != 1 {
			t.Fatalf("%d concurrent lockers won", wins.Load())
		}
		for u := range unlocks {
			u()
		}
	})
}

func testClose(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "AfterClose", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		sp := spool(t, st, []byte(bodyOf("late")))
		noErr(t, "Close", st.Close())
		noErr(t, "second Close", st.Close())
		_, err := st.Account(ctx, a.Name)
		wantErr(t, "Account", err, mailstore.ErrClosed)
		_, err = st.Messages(ctx, inbox.ID)
		wantErr(t, "Messages", err, mailstore.ErrClosed)
		_, err = st.NewSpool()
		wantErr(t, "NewSpool", err, mailstore.ErrClosed)
		errs := st.Deliver(ctx, sp, date, []mailstore.Recipient{{AccountID: a.ID, Mailbox: "INBOX"}})
		wantErr(t, "Deliver", errs[0], mailstore.ErrClosed)
		_, err = st.CreateAccount(ctx, "bob@example.org", "x")
		wantErr(t, "CreateAccount", err, mailstore.ErrClosed)
		_, err = st.CollectGarbage(ctx)
		wantErr(t, "CollectGarbage", err, mailstore.ErrClosed)
	})

	sub(t, open, "WhileDelivering", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		r := mailstore.Recipient{AccountID: a.ID, Mailbox: "INBOX"}
		started := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					sp, err := st.NewSpool()
					if isErr(err, mailstore.ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("NewSpool: %v", err)
						return
					}
					sp.Write([]byte(bodyOf(fmt.Sprint(g, i))))
					err = st.Deliver(ctx, sp, date, []mailstore.Recipient{r})[0]
					if isErr(err, mailstore.ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("Deliver: %v", err)
						return
					}
					if i == 0 {
						started <- struct{}{}
					}
				}
			}()
		}
		for g := 0; g < 8; g++ {
			<-started
		}
		noErr(t, "Close", st.Close())
		wg.Wait()
	})
}
