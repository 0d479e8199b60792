package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// spoolOf is a goroutine-safe spool helper (no t.Fatal).
func spoolOf(st mailstore.Store, body string) (mailstore.Spool, error) {
	sp, err := st.NewSpool()
	if err != nil {
		return nil, err
	}
	if _, err := sp.Write([]byte(body)); err != nil {
		sp.Abort()
		return nil, err
	}
	return sp, nil
}

// deliverOne delivers body to one recipient without t.Fatal.
func deliverOne(st mailstore.Store, body string, r mailstore.Recipient) error {
	sp, err := spoolOf(st, body)
	if err != nil {
		return err
	}
	return st.Deliver(ctx, sp, date, []mailstore.Recipient{r})[0]
}

func appendOne(st mailstore.Store, mailboxID int64, body string, flags ...string) (mailstore.Message, error) {
	sp, err := spoolOf(st, body)
	if err != nil {
		return mailstore.Message{}, err
	}
	return st.Append(ctx, mailboxID, sp, flags, date)
}

func testConcurrency(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "UIDs", func(t *testing.T, st mailstore.Store) {
		const goroutines, perG = 16, 50
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		var (
			mu       sync.Mutex
			appended = map[mailstore.UID]string{}
			modseqs  = map[uint64]bool{}
			wg       sync.WaitGroup
		)
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perG; i++ {
					body := bodyOf(fmt.Sprintf("g%d-m%d", g, i))
					if (g+i)%2 == 0 {
						m, err := appendOne(st, inbox.ID, body)
						if err != nil {
							t.Errorf("Append: %v", err)
							return
						}
						mu.Lock()
						if _, dup := appended[m.UID]; dup {
							t.Errorf("UID %d returned twice", m.UID)
						}
						if modseqs[m.ModSeq] {
							t.Errorf("MODSEQ %d returned twice", m.ModSeq)
						}
						appended[m.UID], modseqs[m.ModSeq] = body, true
						mu.Unlock()
					} else if err := deliverOne(st, body, mailstore.Recipient{AccountID: a.ID, Mailbox: "INBOX"}); err != nil {
						t.Errorf("Deliver: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		mb, ms := checkMailbox(t, st, a.ID, "INBOX")
		if len(ms) != goroutines*perG {
			t.Fatalf("%d messages, want %d", len(ms), goroutines*perG)
		}
		bodies := map[string]int{}
		seenModSeq := map[uint64]bool{}
		for _, m := range ms {
			if seenModSeq[m.ModSeq] {
				t.Fatalf("MODSEQ %d on two messages", m.ModSeq)
			}
			seenModSeq[m.ModSeq] = true
			body := string(readBlob(t, st, m.BlobID))
			bodies[body]++
			if want, ok := appended[m.UID]; ok && want != body {
				t.Fatalf("UID %d has body %q, Append returned it for %q", m.UID, body, want)
			}
		}
		for g := 0; g < goroutines; g++ {
			for i := 0; i < perG; i++ {
				if n := bodies[bodyOf(fmt.Sprintf("g%d-m%d", g, i))]; n != 1 {
					t.Fatalf("message g%d-m%d stored %d times", g, i, n)
				}
			}
		}
		if mb.UIDNext <= ms[len(ms)-1].UID || mb.Unseen != goroutines*perG {
			t.Fatalf("mailbox %+v", mb)
		}
	})

	sub(t, open, "MixedOperations", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		other := createMailbox(t, st, a.ID, "Other")
		for i := 0; i < 20; i++ {
			appendMsg(t, st, inbox.ID, bodyOf(fmt.Sprint("seed", i)))
		}
		var wg sync.WaitGroup
		run := func(n int, fn func(i int) error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < n; i++ {
					if err := fn(i); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		for g := 0; g < 3; g++ {
			run(20, func(i int) error {
				flags := []string{}
				if i%3 == 0 {
					flags = append(flags, `\Seen`)
				}
				_, err := appendOne(st, inbox.ID, bodyOf(fmt.Sprint("a", g, i)), flags...)
				return err
			})
		}
		for g := 0; g < 2; g++ {
			run(20, func(i int) error {
				op := []mailstore.FlagOp{mailstore.FlagsAdd, mailstore.FlagsRemove, mailstore.FlagsReplace}[(g+i)%3]
				_, _, err := st.StoreFlags(ctx, inbox.ID, []mailstore.UID{mailstore.UID(1 + i%20), mailstore.UID(1 + (i*7)%40)}, op, []string{`\Seen`, "k"}, 0)
				return err
			})
		}
		run(10, func(i int) error {
			_, err := st.Expunge(ctx, inbox.ID, []mailstore.UID{mailstore.UID(2 + 4*i)})
			return err
		})
		run(10, func(i int) error {
			_, _, err := st.Copy(ctx, inbox.ID, []mailstore.UID{mailstore.UID(3 + 4*i), mailstore.UID(30 + i)}, other.ID)
			return err
		})
		run(10, func(i int) error {
			_, _, err := st.Move(ctx, other.ID, []mailstore.UID{mailstore.UID(1 + i)}, inbox.ID)
			return err
		})
		wg.Wait()
		if t.Failed() {
			return
		}
		_, ms := checkMailbox(t, st, a.ID, "INBOX")
		_, os := checkMailbox(t, st, a.ID, "Other")
		if len(ms)+len(os) < 60 {
			t.Fatalf("only %d+%d messages left", len(ms), len(os))
		}
		for _, m := range slices.Concat(ms, os) {
			if len(readBlob(t, st, m.BlobID)) != int(m.Size) {
				t.Fatalf("UID %d: blob size differs", m.UID)
			}
		}
	})
}
