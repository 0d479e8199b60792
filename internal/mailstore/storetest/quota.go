package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// checkUsage verifies Store.Usage against the account's mailboxes and
// messages as Mailboxes and Messages report them (usage is the sum of every
// message's Size and the number of messages, over every mailbox), and
// against the expected values. It returns the usage.
func checkUsage(t *testing.T, st mailstore.Store, acct int64, wantBytes, wantMessages int64) mailstore.Usage {
	t.Helper()
	u, err := st.Usage(ctx, acct)
	noErr(t, "Usage", err)
	var bytes, n int64
	for _, mb := range mustMailboxes(t, st, acct) {
		_, ms := checkMailbox(t, st, acct, mb.Name)
		for _, m := range ms {
			bytes += m.Size
		}
		n += int64(len(ms))
	}
	if u.Bytes != bytes || u.Messages != n {
		t.Fatalf("Usage = %d octets, %d messages; the messages sum to %d octets, %d messages", u.Bytes, u.Messages, bytes, n)
	}
	if u.Bytes != wantBytes || u.Messages != wantMessages {
		t.Fatalf("Usage = %d octets, %d messages; want %d, %d", u.Bytes, u.Messages, wantBytes, wantMessages)
	}
	return u
}

func setQuota(t *testing.T, st mailstore.Store, name string, bytes, messages int64) {
	t.Helper()
	noErr(t, fmt.Sprintf("SetQuota %d %d", bytes, messages), st.SetQuota(ctx, name, bytes, messages))
}

// sized returns a message body of exactly n octets (n >= 40).
func sized(tag string, n int) string {
	head := "Subject: " + tag + "\r\n\r\n"
	if n < len(head)+2 {
		panic("sized: too small")
	}
	b := make([]byte, n-len(head)-2)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return head + string(b) + "\r\n"
}

// testQuota covers quotas (mailstore.Usage): exact usage under every
// operation that changes it, SetQuota, and enforcement by Deliver, Append,
// AppendMany and Copy (not Move) with the rule of Usage.Allows, also under
// concurrency.
func testQuota(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "SetQuota", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		if a.QuotaBytes != 0 || a.QuotaMessages != 0 {
			t.Fatalf("new account has quota %d/%d, want none", a.QuotaBytes, a.QuotaMessages)
		}
		u := checkUsage(t, st, a.ID, 0, 0)
		if u.Limited() || u.QuotaBytes != 0 || u.QuotaMessages != 0 {
			t.Fatalf("Usage of a new account = %+v", u)
		}
		setQuota(t, st, "ALICE@example.org", 5000, 7)
		got, err := st.Account(ctx, "alice@example.org")
		noErr(t, "Account", err)
		if got.QuotaBytes != 5000 || got.QuotaMessages != 7 {
			t.Fatalf("Account quota = %d/%d, want 5000/7", got.QuotaBytes, got.QuotaMessages)
		}
		accts, err := st.Accounts(ctx)
		noErr(t, "Accounts", err)
		if len(accts) != 1 || accts[0].QuotaBytes != 5000 || accts[0].QuotaMessages != 7 {
			t.Fatalf("Accounts = %+v", accts)
		}
		u = checkUsage(t, st, a.ID, 0, 0)
		if u.QuotaBytes != 5000 || u.QuotaMessages != 7 || !u.Limited() {
			t.Fatalf("Usage = %+v, want limits 5000/7", u)
		}
		setQuota(t, st, "alice@example.org", 0, 3)
		if u := checkUsage(t, st, a.ID, 0, 0); u.QuotaBytes != 0 || u.QuotaMessages != 3 {
			t.Fatalf("Usage = %+v, want limits 0/3", u)
		}
		err = st.SetQuota(ctx, "alice@example.org", -1, 0)
		wantErr(t, "SetQuota negative bytes", err, mailstore.ErrNotAllowed)
		err = st.SetQuota(ctx, "alice@example.org", 0, -1)
		wantErr(t, "SetQuota negative messages", err, mailstore.ErrNotAllowed)
		if u := checkUsage(t, st, a.ID, 0, 0); u.QuotaBytes != 0 || u.QuotaMessages != 3 {
			t.Fatalf("refused SetQuota changed the limits: %+v", u)
		}
		wantErr(t, "SetQuota unknown", st.SetQuota(ctx, "bob@example.org", 1, 1), mailstore.ErrNoSuchAccount)
		wantErr(t, "SetQuota invalid name", st.SetQuota(ctx, "a b@example.org", 1, 1), mailstore.ErrNoSuchAccount)
		_, err = st.Usage(ctx, a.ID+1000)
		wantErr(t, "Usage unknown", err, mailstore.ErrNoSuchAccount)
		noErr(t, "DeleteAccount", st.DeleteAccount(ctx, "alice@example.org"))
		_, err = st.Usage(ctx, a.ID)
		wantErr(t, "Usage deleted", err, mailstore.ErrNoSuchAccount)
	})

	sub(t, open, "UsageExact", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		b := newAccount(t, st, "bob@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		other := createMailbox(t, st, a.ID, "Other")
		m1 := appendMsg(t, st, inbox.ID, sized("one", 100))
		m2 := appendMsg(t, st, inbox.ID, sized("two", 200), mailstore.FlagSeen)
		appendMsg(t, st, other.ID, sized("three", 300))
		checkUsage(t, st, a.ID, 600, 3)
		// Deliver to both accounts: each counts its copy, once.
		deliver(t, st, sized("four", 400),
			mailstore.Recipient{AccountID: a.ID, Mailbox: mailstore.Inbox},
			mailstore.Recipient{AccountID: b.ID, Mailbox: mailstore.Inbox})
		checkUsage(t, st, a.ID, 1000, 4)
		checkUsage(t, st, b.ID, 400, 1)
		// AppendMany of an identical body: blobs are shared, usage is not.
		_, err := st.AppendMany(ctx, other.ID, appendManyMsgs(t, st, sized("one", 100), sized("five", 50)))
		noErr(t, "AppendMany", err)
		checkUsage(t, st, a.ID, 1150, 6)
		// Flags change nothing.
		storeFlags(t, st, a.ID, mailstore.Inbox, uids(m1.UID, m2.UID), mailstore.FlagsReplace, []string{mailstore.FlagDeleted}, 0)
		checkUsage(t, st, a.ID, 1150, 6)
		// A copy adds its messages; a move (also into the same mailbox)
		// changes nothing.
		_, _, err = st.Copy(ctx, inbox.ID, uids(m1.UID, m2.UID), other.ID)
		noErr(t, "Copy", err)
		checkUsage(t, st, a.ID, 1450, 8)
		_, _, err = st.Move(ctx, inbox.ID, uids(m1.UID), other.ID)
		noErr(t, "Move", err)
		checkUsage(t, st, a.ID, 1450, 8)
		_, _, err = st.Move(ctx, inbox.ID, uids(m2.UID), inbox.ID)
		noErr(t, "Move into the same mailbox", err)
		checkUsage(t, st, a.ID, 1450, 8)
		// Expunge subtracts exactly what it removes; UIDs that are gone
		// subtract nothing.
		_, err = st.Expunge(ctx, inbox.ID, uids(m1.UID, m2.UID))
		noErr(t, "Expunge of moved UIDs", err)
		checkUsage(t, st, a.ID, 1450, 8)
		inboxMsgs := messages(t, st, inbox.ID)
		noErr(t, "Expunge", expunge(t, st, inbox.ID, inboxMsgs[0].UID))
		checkUsage(t, st, a.ID, 1450-inboxMsgs[0].Size, 7)
		// RENAME INBOX moves its messages: usage stays.
		before := checkUsage(t, st, a.ID, 1450-inboxMsgs[0].Size, 7)
		noErr(t, "RenameMailbox INBOX", st.RenameMailbox(ctx, a.ID, mailstore.Inbox, "Old"))
		checkUsage(t, st, a.ID, before.Bytes, before.Messages)
		noErr(t, "RenameMailbox", st.RenameMailbox(ctx, a.ID, "Other", "Renamed"))
		checkUsage(t, st, a.ID, before.Bytes, before.Messages)
		// Deleting a mailbox takes its messages out of the usage.
		renamed := getMailbox(t, st, a.ID, "Renamed")
		noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, a.ID, "Renamed"))
		checkUsage(t, st, a.ID, before.Bytes-renamed.Size, before.Messages-int64(renamed.Messages))
		noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, a.ID, "Old"))
		checkUsage(t, st, a.ID, 0, 0)
		// Bob never changed.
		checkUsage(t, st, b.ID, 400, 1)
	})

	sub(t, open, "DeletedSize", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		appendMsg(t, st, inbox.ID, sized("one", 100), mailstore.FlagDeleted)
		appendMsg(t, st, inbox.ID, sized("two", 200))
		m3 := appendMsg(t, st, inbox.ID, sized("three", 300), mailstore.FlagDeleted, mailstore.FlagSeen)
		check := func(what string, n uint32, size int64) {
			t.Helper()
			v, err := st.View(ctx, inbox.ID)
			noErr(t, "View", err)
			if v.Deleted != n || v.DeletedSize != size {
				t.Fatalf("%s: View Deleted %d DeletedSize %d, want %d %d", what, v.Deleted, v.DeletedSize, n, size)
			}
		}
		check("appended", 2, 400)
		storeFlags(t, st, a.ID, mailstore.Inbox, uids(m3.UID), mailstore.FlagsRemove, []string{mailstore.FlagDeleted}, 0)
		check("undeleted", 1, 100)
		noErr(t, "Expunge", expunge(t, st, inbox.ID, 1))
		check("expunged", 0, 0)
	})

	sub(t, open, "Deliver", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		b := newAccount(t, st, "bob@example.org")
		ra := mailstore.Recipient{AccountID: a.ID, Mailbox: mailstore.Inbox}
		rb := mailstore.Recipient{AccountID: b.ID, Mailbox: mailstore.Inbox}
		// Room for exactly two messages of 500 octets: usage may reach
		// the limit, never pass it.
		setQuota(t, st, "alice@example.org", 1000, 0)
		deliver(t, st, sized("one", 500), ra, rb)
		deliver(t, st, sized("two", 500), ra)
		checkUsage(t, st, a.ID, 1000, 2)
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		s := st.Subscribe(a.ID)
		defer s.Close()
		errs := st.Deliver(ctx, spool(t, st, []byte(sized("three", 40))), date, []mailstore.Recipient{ra, rb})
		wantErr(t, "Deliver over quota", errs[0], mailstore.ErrOverQuota)
		noErr(t, "Deliver to the other recipient", errs[1])
		mailboxUnchanged(t, st, "refused delivery", inbox)
		checkUsage(t, st, a.ID, 1000, 2)
		checkUsage(t, st, b.ID, 540, 2)
		if cs := s.Drain(); len(cs) != 0 {
			t.Fatalf("refused delivery published %+v", cs)
		}
		// One octet of room is not enough for 40.
		setQuota(t, st, "alice@example.org", 1039, 0)
		errs = st.Deliver(ctx, spool(t, st, []byte(sized("three", 40))), date, []mailstore.Recipient{ra})
		wantErr(t, "Deliver one octet over", errs[0], mailstore.ErrOverQuota)
		setQuota(t, st, "alice@example.org", 1040, 0)
		deliver(t, st, sized("three", 40), ra)
		checkUsage(t, st, a.ID, 1040, 3)
		// A message limit works the same way.
		setQuota(t, st, "alice@example.org", 0, 4)
		deliver(t, st, sized("four", 40), ra)
		errs = st.Deliver(ctx, spool(t, st, []byte(sized("five", 40))), date, []mailstore.Recipient{rb, ra})
		noErr(t, "Deliver to bob", errs[0])
		wantErr(t, "Deliver over the message limit", errs[1], mailstore.ErrOverQuota)
		checkUsage(t, st, a.ID, 1080, 4)
		// Two targets of one account in one delivery: the second sees
		// the first's copy.
		createMailbox(t, st, a.ID, "Lists")
		setQuota(t, st, "alice@example.org", 0, 5)
		errs = st.Deliver(ctx, spool(t, st, []byte(sized("six", 40))), date,
			[]mailstore.Recipient{ra, {AccountID: a.ID, Mailbox: "Lists"}})
		noErr(t, "Deliver to INBOX", errs[0])
		wantErr(t, "Deliver to Lists", errs[1], mailstore.ErrOverQuota)
		checkUsage(t, st, a.ID, 1120, 5)
		// No limit: anything goes.
		setQuota(t, st, "alice@example.org", 0, 0)
		deliver(t, st, sized("seven", 4000), ra)
		checkUsage(t, st, a.ID, 5120, 6)
	})

	sub(t, open, "AppendAndExpunge", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		setQuota(t, st, "alice@example.org", 300, 2)
		m1 := appendMsg(t, st, inbox.ID, sized("one", 100))
		appendMsg(t, st, inbox.ID, sized("two", 100))
		before := getMailbox(t, st, a.ID, mailstore.Inbox)
		_, err := st.Append(ctx, inbox.ID, spool(t, st, []byte(sized("three", 50))), nil, date)
		wantErr(t, "Append over the message limit", err, mailstore.ErrOverQuota)
		mailboxUnchanged(t, st, "refused Append", before)
		noErr(t, "Expunge", expunge(t, st, inbox.ID, m1.UID))
		checkUsage(t, st, a.ID, 100, 1)
		_, err = st.Append(ctx, inbox.ID, spool(t, st, []byte(sized("three", 201))), nil, date)
		wantErr(t, "Append over the octet limit", err, mailstore.ErrOverQuota)
		appendMsg(t, st, inbox.ID, sized("three", 200))
		checkUsage(t, st, a.ID, 300, 2)
		// Lowering a limit below the usage removes nothing, refuses
		// growth, and allows everything that does not grow the account.
		setQuota(t, st, "alice@example.org", 100, 1)
		checkUsage(t, st, a.ID, 300, 2)
		_, err = st.Append(ctx, inbox.ID, spool(t, st, []byte(sized("four", 40))), nil, date)
		wantErr(t, "Append over a lowered limit", err, mailstore.ErrOverQuota)
		ms := messages(t, st, inbox.ID)
		storeFlags(t, st, a.ID, mailstore.Inbox, uidsOf(ms), mailstore.FlagsAdd, []string{mailstore.FlagSeen}, 0)
		archive := getMailbox(t, st, a.ID, "Archive")
		_, _, err = st.Move(ctx, inbox.ID, uidsOf(ms[:1]), archive.ID)
		noErr(t, "Move over a lowered limit", err)
		checkUsage(t, st, a.ID, 300, 2)
	})

	sub(t, open, "AppendMany", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		setQuota(t, st, "alice@example.org", 250, 0)
		appendMsg(t, st, inbox.ID, sized("zero", 50))
		before := getMailbox(t, st, a.ID, mailstore.Inbox)
		s := st.Subscribe(a.ID)
		defer s.Close()
		// Each fits alone, not all three together: none is added.
		_, err := st.AppendMany(ctx, inbox.ID, appendManyMsgs(t, st, sized("one", 80), sized("two", 80), sized("three", 41)))
		wantErr(t, "AppendMany over quota", err, mailstore.ErrOverQuota)
		mailboxUnchanged(t, st, "refused AppendMany", before)
		if cs := s.Drain(); len(cs) != 0 {
			t.Fatalf("refused AppendMany published %+v", cs)
		}
		got, err := st.AppendMany(ctx, inbox.ID, appendManyMsgs(t, st, sized("one", 80), sized("two", 80), sized("three", 40)))
		noErr(t, "AppendMany to the limit", err)
		if len(got) != 3 {
			t.Fatalf("AppendMany returned %d messages", len(got))
		}
		checkUsage(t, st, a.ID, 250, 4)
	})

	sub(t, open, "CopyMove", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		archive := getMailbox(t, st, a.ID, "Archive")
		m1 := appendMsg(t, st, inbox.ID, sized("one", 100))
		m2 := appendMsg(t, st, inbox.ID, sized("two", 100))
		setQuota(t, st, "alice@example.org", 300, 0)
		// Copying both needs 200 octets, 100 are left: nothing copied.
		before := getMailbox(t, st, a.ID, "Archive")
		_, _, err := st.Copy(ctx, inbox.ID, uids(m1.UID, m2.UID), archive.ID)
		wantErr(t, "Copy over quota", err, mailstore.ErrOverQuota)
		mailboxUnchanged(t, st, "refused Copy", before)
		checkUsage(t, st, a.ID, 200, 2)
		_, dst, err := st.Copy(ctx, inbox.ID, uids(m1.UID), archive.ID)
		noErr(t, "Copy to the limit", err)
		checkUsage(t, st, a.ID, 300, 3)
		// At the limit, a move is allowed: it adds nothing.
		_, _, err = st.Move(ctx, inbox.ID, uids(m2.UID), archive.ID)
		noErr(t, "Move at the limit", err)
		checkUsage(t, st, a.ID, 300, 3)
		_, _, err = st.Move(ctx, archive.ID, dst, inbox.ID)
		noErr(t, "Move back", err)
		checkUsage(t, st, a.ID, 300, 3)
		// A copy within one mailbox counts too.
		setQuota(t, st, "alice@example.org", 0, 3)
		in := messages(t, st, inbox.ID)
		_, _, err = st.Copy(ctx, inbox.ID, uidsOf(in[:1]), inbox.ID)
		wantErr(t, "Copy into the same mailbox over the message limit", err, mailstore.ErrOverQuota)
		checkUsage(t, st, a.ID, 300, 3)
	})

	// Concurrency: many writers race for the last room under a limit, by
	// Append, Deliver and AppendMany at once. Exactly as many succeed as
	// fit, the others get ErrOverQuota, and usage ends at the limit: the
	// check and the insert are one transaction.
	sub(t, open, "Concurrent", func(t *testing.T, st mailstore.Store) {
		const (
			size       = 100
			fit        = 20 // messages that fit
			goroutines = 12
			perG       = 6 // 72 attempts
		)
		a := newAccount(t, st, "alice@example.org")
		b := newAccount(t, st, "bob@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		// 50 octets already used: room for exactly `fit` more.
		appendMsg(t, st, inbox.ID, sized("base", 50))
		setQuota(t, st, "alice@example.org", 50+fit*size, 0)
		var (
			mu              sync.Mutex
			stored, refused int
			bobWant         int64
			wg              sync.WaitGroup
			start           = make(chan struct{})
		)
		for g := 0; g < goroutines; g++ {
			for i := 0; i < perG; i++ {
				if (g+i)%3 == 1 {
					bobWant++
				}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Spool first, then start together: the stores
				// arrive at once and share group commits.
				sps := make([]mailstore.Spool, perG)
				for i := range sps {
					sp, err := spoolOf(st, sized(fmt.Sprintf("g%d-m%d", g, i), size))
					if err != nil {
						t.Errorf("spool: %v", err)
						return
					}
					sps[i] = sp
				}
				<-start
				for i, sp := range sps {
					var err error
					switch (g + i) % 3 {
					case 0:
						_, err = st.Append(ctx, inbox.ID, sp, nil, date)
					case 1:
						// Bob is unlimited and always gets his copy.
						errs := st.Deliver(ctx, sp, date, []mailstore.Recipient{
							{AccountID: a.ID, Mailbox: mailstore.Inbox}, {AccountID: b.ID, Mailbox: mailstore.Inbox}})
						if errs[1] != nil {
							t.Errorf("Deliver to bob: %v", errs[1])
						}
						err = errs[0]
					case 2:
						_, err = st.AppendMany(ctx, inbox.ID, []mailstore.AppendMessage{{Spool: sp, Date: date}})
					}
					mu.Lock()
					switch {
					case err == nil:
						stored++
					case errors.Is(err, mailstore.ErrOverQuota):
						refused++
					default:
						t.Errorf("store: %v", err)
					}
					mu.Unlock()
				}
			}()
		}
		close(start)
		wg.Wait()
		if stored != fit || refused != goroutines*perG-fit {
			t.Fatalf("%d stored, %d refused; want %d and %d", stored, refused, fit, goroutines*perG-fit)
		}
		checkUsage(t, st, a.ID, 50+fit*size, 1+fit)
		checkUsage(t, st, b.ID, bobWant*size, bobWant)
	})
}
