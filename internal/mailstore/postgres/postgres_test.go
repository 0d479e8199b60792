package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
	"github.com/letterbox/letterbox/internal/mailstore/storecopy"
	"github.com/letterbox/letterbox/internal/mailstore/storetest"
)

// The tests need a PostgreSQL server and a superuser, given by
// LETTERBOX_TEST_POSTGRES_URL (scripts/testpg starts a private throwaway
// cluster and prints it). Every store gets its own fresh database,
// lbt_<random>, created through one shared admin connection and dropped
// when the test ends, after the store was closed.

const envURL = "LETTERBOX_TEST_POSTGRES_URL"

var (
	adminOnce sync.Once
	adminPool *pgxpool.Pool
	adminErr  error
)

func admin(t *testing.T) *pgxpool.Pool {
	t.Helper()
	u := os.Getenv(envURL)
	if u == "" {
		t.Skip(envURL + " is not set: these tests need a PostgreSQL superuser URL " +
			"(eval \"$(scripts/testpg start DIR)\" starts a throwaway cluster and sets it)")
	}
	adminOnce.Do(func() {
		cfg, err := pgxpool.ParseConfig(u)
		if err != nil {
			adminErr = err
			return
		}
		cfg.MaxConns = 2
		adminPool, adminErr = pgxpool.NewWithConfig(context.Background(), cfg)
	})
	if adminErr != nil {
		t.Fatalf("admin connection: %v", adminErr)
	}
	return adminPool
}

func TestMain(m *testing.M) {
	code := m.Run()
	if adminPool != nil {
		adminPool.Close()
	}
	os.Exit(code)
}

var bg = context.Background()

// newDB creates a fresh database and returns its URL and name. It is
// dropped at the end of the test (t.Cleanup, so after the cleanups
// registered later, such as closing the stores that use it).
func newDB(t *testing.T) (string, string) {
	t.Helper()
	a := admin(t)
	var b [6]byte
	rand.Read(b[:])
	name := "lbt_" + hex.EncodeToString(b[:])
	if _, err := a.Exec(bg, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("CREATE DATABASE: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(bg, 30*time.Second)
		defer cancel()
		if _, err := a.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("DROP DATABASE %s: %v", name, err)
		}
	})
	u, err := url.Parse(os.Getenv(envURL))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String(), name
}

// openStore opens a store (a node) on the database at dbURL.
func openStore(t *testing.T, dbURL, blobDir string) *Store {
	t.Helper()
	st, err := Open(bg, Options{URL: dbURL, BlobDir: blobDir})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// twoNodes opens two stores on one database and one blob directory.
func twoNodes(t *testing.T) (a, b *Store, dbName string) {
	t.Helper()
	u, name := newDB(t)
	dir := t.TempDir()
	return openStore(t, u, dir), openStore(t, u, dir), name
}

func TestConformance(t *testing.T) {
	admin(t) // skips the whole suite without a server
	storetest.Run(t, func(t *testing.T) mailstore.Store {
		u, _ := newDB(t)
		return openStore(t, u, t.TempDir())
	})
}

// --- helpers ---

var testDate = time.Date(2024, 3, 9, 14, 30, 5, 0, time.UTC)

func mustAccount(t *testing.T, st *Store, name string) mailstore.Account {
	t.Helper()
	a, err := st.CreateAccount(bg, name, "h")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustMailbox(t *testing.T, st *Store, acct int64, name string) mailstore.Mailbox {
	t.Helper()
	mb, err := st.Mailbox(bg, acct, name)
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

func spoolOf(st *Store, body string) (mailstore.Spool, error) {
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

func mustAppend(t *testing.T, st *Store, mailboxID int64, body string, flags ...string) mailstore.Message {
	t.Helper()
	sp, err := spoolOf(st, body)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.Append(bg, mailboxID, sp, flags, testDate)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func bodyOf(tag string) string {
	return "From: a@example.org\r\nSubject: " + tag + "\r\n\r\nbody of " + tag + "\r\n"
}

func readBlob(t *testing.T, st *Store, id string) string {
	t.Helper()
	b, err := st.OpenBlob(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// --- migrations ---

func TestMigrateConcurrent(t *testing.T) {
	u, _ := newDB(t)
	const n = 8
	applied := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			applied[i], errs[i] = Migrate(bg, u)
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Migrate %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	if total != len(migrations) {
		t.Fatalf("migrations applied %v in total, want %d once", applied, len(migrations))
	}
	var version int
	if err := admin(t).QueryRow(bg, "SELECT 1").Scan(&version); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, u, t.TempDir())
	if err := st.pool.QueryRow(bg, "SELECT version FROM schema_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := st.pool.QueryRow(bg, "SELECT count(*) FROM schema_version").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if version != len(migrations) || rows != 1 {
		t.Fatalf("schema_version = %d (%d rows), want %d (1 row)", version, rows, len(migrations))
	}
	if n, err := Migrate(bg, u); err != nil || n != 0 {
		t.Fatalf("Migrate of a current schema = %d, %v; want 0, nil", n, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	u, _ := newDB(t)
	st := openStore(t, u, t.TempDir())
	if _, err := st.pool.Exec(bg, "UPDATE schema_version SET version = $1", len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	if _, err := Migrate(bg, u); err == nil || !errors.Is(err, errNewerSchema) {
		t.Fatalf("Migrate of a newer schema: %v", err)
	}
	if st2, err := Open(bg, Options{URL: u, BlobDir: t.TempDir()}); err == nil {
		st2.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
}

func TestOpenErrors(t *testing.T) {
	admin(t) // skip without a server, like the others
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	start := time.Now()
	// Nothing listens on port 1 of loopback.
	_, err := Open(ctx, Options{URL: "postgres://letterbox@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", BlobDir: t.TempDir()})
	if err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
	if time.Since(start) > 15*time.Second {
		t.Fatalf("Open took %v to fail", time.Since(start))
	}
	if _, err := Open(ctx, Options{URL: "postgres://%zz", BlobDir: t.TempDir()}); err == nil {
		t.Fatal("Open of a malformed URL succeeded")
	}
}

// A server configured with synchronous_commit=off must not make commits
// non-durable: letterbox switches it on for its sessions.
func TestSynchronousCommit(t *testing.T) {
	u, name := newDB(t)
	if _, err := admin(t).Exec(bg, "ALTER DATABASE "+name+" SET synchronous_commit = off"); err != nil {
		t.Fatal(err)
	}
	st := openStore(t, u, t.TempDir())
	for range 3 {
		var sc string
		if err := st.pool.QueryRow(bg, "SHOW synchronous_commit").Scan(&sc); err != nil {
			t.Fatal(err)
		}
		if sc != "on" {
			t.Fatalf("synchronous_commit = %q in a store session", sc)
		}
	}
}

// --- several nodes ---

// Two nodes deliver into one mailbox at once: UIDs 1..N without gaps or
// duplicates, MODSEQs strictly increasing in UID order, exact counters.
func TestTwoNodesUIDs(t *testing.T) {
	a, b, _ := twoNodes(t)
	acct := mustAccount(t, a, "alice@example.org")
	inbox := mustMailbox(t, a, acct.ID, "INBOX")
	const perNode, goroutines = 60, 4
	var wg sync.WaitGroup
	for ni, st := range []*Store{a, b} {
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perNode / goroutines {
					body := bodyOf(fmt.Sprintf("n%d-g%d-%d", ni, g, i))
					sp, err := spoolOf(st, body)
					if err != nil {
						t.Error(err)
						return
					}
					if i%2 == 0 {
						_, err = st.Append(bg, inbox.ID, sp, nil, testDate)
					} else {
						err = st.Deliver(bg, sp, testDate, []mailstore.Recipient{{AccountID: acct.ID, Mailbox: "INBOX"}})[0]
					}
					if err != nil {
						t.Errorf("node %d: %v", ni, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ms, err := b.Messages(bg, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2*perNode {
		t.Fatalf("%d messages, want %d", len(ms), 2*perNode)
	}
	var size int64
	for i, m := range ms {
		if m.UID != mailstore.UID(i+1) {
			t.Fatalf("message %d has UID %d: UIDs not 1..N", i, m.UID)
		}
		if i > 0 && m.ModSeq <= ms[i-1].ModSeq {
			t.Fatalf("MODSEQ %d of UID %d not above %d of UID %d", m.ModSeq, m.UID, ms[i-1].ModSeq, ms[i-1].UID)
		}
		size += m.Size
	}
	mb := mustMailbox(t, a, acct.ID, "INBOX")
	if mb.UIDNext != mailstore.UID(2*perNode+1) || mb.HighestModSeq != ms[len(ms)-1].ModSeq ||
		mb.Messages != 2*perNode || mb.Unseen != 2*perNode || mb.Size != size {
		t.Fatalf("mailbox %+v", mb)
	}
}

// The quota holds across nodes: both nodes race for the last room.
func TestTwoNodesQuota(t *testing.T) {
	a, b, _ := twoNodes(t)
	acct := mustAccount(t, a, "alice@example.org")
	inbox := mustMailbox(t, a, acct.ID, "INBOX")
	work, err := b.CreateMailbox(bg, acct.ID, "Work", "")
	if err != nil {
		t.Fatal(err)
	}
	const fit = 10
	if err := a.SetQuota(bg, acct.Name, 0, fit); err != nil {
		t.Fatal(err)
	}
	var stored, refused atomic.Int32
	var wg sync.WaitGroup
	for ni, st := range []*Store{a, b} {
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 6 {
					sp, err := spoolOf(st, bodyOf(fmt.Sprint(ni, g, i)))
					if err != nil {
						t.Error(err)
						return
					}
					target := inbox.ID
					if g == 1 {
						target = work.ID // another mailbox of the same account
					}
					_, err = st.Append(bg, target, sp, nil, testDate)
					switch {
					case err == nil:
						stored.Add(1)
					case errors.Is(err, mailstore.ErrOverQuota):
						refused.Add(1)
					default:
						t.Error(err)
					}
				}
			}()
		}
	}
	wg.Wait()
	u, err := b.Usage(bg, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Load() != fit || refused.Load() != 36-fit || u.Messages != fit {
		t.Fatalf("stored %d, refused %d, usage %+v; want %d stored", stored.Load(), refused.Load(), u, fit)
	}
}

func TestLockAcrossNodes(t *testing.T) {
	a, b, _ := twoNodes(t)
	acct := mustAccount(t, a, "alice@example.org")
	inbox := mustMailbox(t, a, acct.ID, "INBOX")
	unlockA, err := a.LockMailbox(bg, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.LockMailbox(bg, inbox.ID); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("LockMailbox on the other node: %v, want ErrLocked", err)
	}
	if _, err := a.LockMailbox(bg, inbox.ID); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("LockMailbox again on the same node: %v, want ErrLocked", err)
	}
	unlockA()
	unlockB, err := b.LockMailbox(bg, inbox.ID)
	if err != nil {
		t.Fatalf("LockMailbox after unlock on the other node: %v", err)
	}
	unlockA() // stale: must not release B's lock
	if _, err := a.LockMailbox(bg, inbox.ID); !errors.Is(err, mailstore.ErrLocked) {
		t.Fatalf("LockMailbox while the other node holds it: %v", err)
	}
	// Closing a node releases its locks.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	unlockB() // after Close: harmless
	u, err := a.LockMailbox(bg, inbox.ID)
	if err != nil {
		t.Fatalf("LockMailbox after the holder closed: %v", err)
	}
	u()
}

// Blob collection on one node racing deliveries of the same content on
// another: the delivered message stays readable.
func TestGCAcrossNodes(t *testing.T) {
	a, b, _ := twoNodes(t)
	acct := mustAccount(t, a, "alice@example.org")
	inbox := mustMailbox(t, a, acct.ID, "INBOX")
	for r := range 15 {
		body := bodyOf(fmt.Sprint("round", r))
		m := mustAppend(t, a, inbox.ID, body)
		if _, err := a.Expunge(bg, inbox.ID, []mailstore.UID{m.UID}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var derr, gerr error
		wg.Add(2)
		go func() {
			defer wg.Done()
			sp, err := spoolOf(b, body)
			if err != nil {
				derr = err
				return
			}
			derr = b.Deliver(bg, sp, testDate, []mailstore.Recipient{{AccountID: acct.ID}})[0]
		}()
		go func() { defer wg.Done(); _, gerr = a.CollectGarbage(bg) }()
		wg.Wait()
		if derr != nil || gerr != nil {
			t.Fatalf("round %d: deliver %v, gc %v", r, derr, gerr)
		}
		ms, err := a.Messages(bg, inbox.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got := readBlob(t, a, ms[len(ms)-1].BlobID); got != body {
			t.Fatalf("round %d: body %q", r, got)
		}
	}
	if n, err := b.CollectGarbage(bg); err != nil || n != 0 {
		t.Fatalf("final collection: %d, %v", n, err)
	}
}

// --- notifications across nodes ---

// waitChanges collects changes from sub until it has n of them or the
// timeout passes, then makes sure no more arrive for a short while, and
// returns them sorted like storetest does.
func waitChanges(t *testing.T, sub *mailstore.Subscription, n int) []mailstore.Change {
	t.Helper()
	var got []mailstore.Change
	deadline := time.After(15 * time.Second)
	for len(got) < n {
		select {
		case <-sub.Ready():
			got = append(got, sub.Drain()...)
		case <-deadline:
			t.Fatalf("timed out with %d changes %+v, want %d", len(got), got, n)
		}
	}
	select {
	case <-sub.Ready():
		got = append(got, sub.Drain()...)
	case <-time.After(300 * time.Millisecond):
	}
	got = append(got, sub.Drain()...)
	if len(got) != n {
		t.Fatalf("%d changes %+v, want %d", len(got), got, n)
	}
	slices.SortStableFunc(got, func(a, b mailstore.Change) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		if a.MailboxID != b.MailboxID {
			return cmpInt64(a.MailboxID, b.MailboxID)
		}
		return int(a.UID) - int(b.UID)
	})
	return got
}

func expect(t *testing.T, what string, got []mailstore.Change, want ...mailstore.Change) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %+v, want %+v", what, got, want)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Kind != w.Kind || g.MailboxID != w.MailboxID || g.UID != w.UID || g.ModSeq != w.ModSeq ||
			g.MailboxName != w.MailboxName || g.OldName != w.OldName || !slices.Equal(g.Flags, w.Flags) || g.Size != w.Size {
			t.Fatalf("%s: change %d is %+v, want %+v", what, i, g, w)
		}
	}
}

// waitListening waits until st's LISTEN connection is established.
func waitListening(t *testing.T, st *Store) int32 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var pid int32
		err := admin(t).QueryRow(bg, `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query ILIKE 'LISTEN%'`,
			listenAppName+"/"+st.node).Scan(&pid)
		if err == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no LISTEN connection for node %s: %v", st.node, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCrossNodeNotifications(t *testing.T) {
	a, b, _ := twoNodes(t)
	acct := mustAccount(t, a, "alice@example.org")
	other := mustAccount(t, a, "bob@example.org")
	inbox := mustMailbox(t, a, acct.ID, "INBOX")
	sub := b.Subscribe(acct.ID)
	defer sub.Close()
	local := a.Subscribe(acct.ID)
	defer local.Close()
	waitListening(t, b)

	// Append and deliver on A.
	m1 := mustAppend(t, a, inbox.ID, bodyOf("1"), `\Seen`)
	app1 := mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m1.UID, ModSeq: m1.ModSeq, Flags: []string{`\Seen`}, Size: m1.Size}
	expect(t, "append", waitChanges(t, sub, 1), app1)
	expect(t, "append, local", waitChanges(t, local, 1), app1)
	sp, _ := spoolOf(a, bodyOf("2"))
	errs := a.Deliver(bg, sp, testDate, []mailstore.Recipient{{AccountID: acct.ID}, {AccountID: other.ID}})
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	ms, _ := a.Messages(bg, inbox.ID)
	m2 := ms[1]
	expect(t, "deliver", waitChanges(t, sub, 1),
		mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m2.UID, ModSeq: m2.ModSeq, Flags: []string{}, Size: m2.Size})

	// Flags.
	changed, _, err := a.StoreFlags(bg, inbox.ID, []mailstore.UID{m1.UID, m2.UID}, mailstore.FlagsAdd, []string{`\Flagged`}, 0)
	if err != nil || len(changed) != 2 {
		t.Fatal(changed, err)
	}
	expect(t, "flags", waitChanges(t, sub, 2),
		mailstore.Change{Kind: mailstore.ChangeFlags, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m1.UID, ModSeq: changed[0].ModSeq, Flags: []string{`\Flagged`, `\Seen`}},
		mailstore.Change{Kind: mailstore.ChangeFlags, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m2.UID, ModSeq: changed[1].ModSeq, Flags: []string{`\Flagged`}})

	// Expunge.
	if _, err := a.Expunge(bg, inbox.ID, []mailstore.UID{m1.UID}); err != nil {
		t.Fatal(err)
	}
	hm := mustMailbox(t, a, acct.ID, "INBOX").HighestModSeq
	expect(t, "expunge", waitChanges(t, sub, 1),
		mailstore.Change{Kind: mailstore.ChangeExpunge, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m1.UID, ModSeq: hm})

	// Mailboxes: create, rename with a child, delete.
	work, err := a.CreateMailbox(bg, acct.ID, "Work", "")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "create", waitChanges(t, sub, 1), mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: work.ID, MailboxName: "Work"})
	child, err := a.CreateMailbox(bg, acct.ID, "Work/Sub", "")
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "create child", waitChanges(t, sub, 1), mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: child.ID, MailboxName: "Work/Sub"})
	if err := a.RenameMailbox(bg, acct.ID, "Work", "Job"); err != nil {
		t.Fatal(err)
	}
	expect(t, "rename", waitChanges(t, sub, 2),
		mailstore.Change{Kind: mailstore.ChangeMailboxRename, MailboxID: work.ID, MailboxName: "Job", OldName: "Work"},
		mailstore.Change{Kind: mailstore.ChangeMailboxRename, MailboxID: child.ID, MailboxName: "Job/Sub", OldName: "Work/Sub"})
	if err := a.DeleteMailbox(bg, acct.ID, "Job"); err != nil {
		t.Fatal(err)
	}
	expect(t, "delete", waitChanges(t, sub, 1), mailstore.Change{Kind: mailstore.ChangeMailboxDelete, MailboxID: work.ID, MailboxName: "Job"})

	// RENAME INBOX: a new mailbox with the messages, expunges in INBOX.
	if err := a.RenameMailbox(bg, acct.ID, "INBOX", "Old"); err != nil {
		t.Fatal(err)
	}
	old := mustMailbox(t, a, acct.ID, "Old")
	oms, _ := a.Messages(bg, old.ID)
	hm = mustMailbox(t, a, acct.ID, "INBOX").HighestModSeq
	expect(t, "rename INBOX", waitChanges(t, sub, 3),
		mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: old.ID, MailboxName: "Old", UID: 1, ModSeq: oms[0].ModSeq, Flags: []string{`\Flagged`}, Size: m2.Size},
		mailstore.Change{Kind: mailstore.ChangeExpunge, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m2.UID, ModSeq: hm},
		mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: old.ID, MailboxName: "Old"})

	// Changes made on B reach A's subscribers, and B's own, once.
	m3 := mustAppend(t, b, inbox.ID, bodyOf("3"))
	app3 := mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m3.UID, ModSeq: m3.ModSeq, Flags: []string{}, Size: m3.Size}
	expect(t, "append on B", waitChanges(t, sub, 1), app3)
	waitChanges(t, local, 13) // everything above, once
	if err := b.DeleteAccount(bg, acct.Name); err != nil {
		t.Fatal(err)
	}
	if got := waitChanges(t, local, 8); got[0].Kind != mailstore.ChangeMailboxDelete {
		t.Fatalf("DeleteAccount on B: %+v", got)
	}
}

// A change committed on A while B's LISTEN connection is broken reaches
// B's subscriber once B has reconnected (catch-up scan), exactly once.
func TestListenReconnect(t *testing.T) {
	var target atomic.Pointer[Store]
	blocked := make(chan struct{}) // closed: let the reconnection proceed
	waiting := make(chan struct{}, 1)
	var armed atomic.Bool
	testListenHook = func(s *Store) {
		if s == target.Load() && armed.Load() {
			select {
			case waiting <- struct{}{}:
			default:
			}
			select {
			case <-blocked:
			case <-s.bgCtx.Done(): // closed (the test failed)
			}
		}
	}
	// Reset after the stores closed (cleanups run last-in first-out).
	t.Cleanup(func() { testListenHook = nil })

	a, b, _ := twoNodes(t)
	target.Store(b)
	acct := mustAccount(t, a, "alice@example.org")
	inbox := mustMailbox(t, a, acct.ID, "INBOX")
	sub := b.Subscribe(acct.ID)
	defer sub.Close()
	pid := waitListening(t, b)
	// Once B has published m0, no scan of B is pending.
	m0 := mustAppend(t, a, inbox.ID, bodyOf("0"))
	waitChanges(t, sub, 1)

	// Break B's LISTEN connection and keep it from reconnecting while A
	// commits changes.
	armed.Store(true)
	var ok bool
	if err := admin(t).QueryRow(bg, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v %v", ok, err)
	}
	select {
	case <-waiting:
	case <-time.After(15 * time.Second):
		t.Fatal("B's listener did not notice the broken connection")
	}
	m1 := mustAppend(t, a, inbox.ID, bodyOf("1"))
	m2 := mustAppend(t, a, inbox.ID, bodyOf("2"))
	m3 := mustAppend(t, a, inbox.ID, bodyOf("3"))
	f1, _, err := a.StoreFlags(bg, inbox.ID, []mailstore.UID{m0.UID, m1.UID}, mailstore.FlagsAdd, []string{`\Seen`}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Expunge(bg, inbox.ID, []mailstore.UID{m2.UID}); err != nil {
		t.Fatal(err)
	}
	box, err := a.CreateMailbox(bg, acct.ID, "New", "")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if cs := sub.Drain(); len(cs) != 0 {
		t.Fatalf("changes arrived while B was not listening: %+v", cs)
	}
	armed.Store(false)
	close(blocked)

	// The catch-up scan publishes the net effect, each change once: m1
	// appears with its flags (its append and flag change are one
	// change), m2 appeared and vanished (nothing), m0's flags changed.
	got := waitChanges(t, sub, 4)
	expect(t, "catch-up", got,
		mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m1.UID, ModSeq: f1[1].ModSeq, Flags: []string{`\Seen`}, Size: m1.Size},
		mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m3.UID, ModSeq: m3.ModSeq, Flags: []string{}, Size: m3.Size},
		mailstore.Change{Kind: mailstore.ChangeFlags, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m0.UID, ModSeq: f1[0].ModSeq, Flags: []string{`\Seen`}},
		mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: box.ID, MailboxName: "New"})

	// And the new connection delivers notifications again.
	waitListening(t, b)
	m4 := mustAppend(t, a, inbox.ID, bodyOf("4"))
	expect(t, "after reconnect", waitChanges(t, sub, 1),
		mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: inbox.ID, MailboxName: "INBOX", UID: m4.UID, ModSeq: m4.ModSeq, Flags: []string{}, Size: m4.Size})
}

// --- the database fails ---

// While the database refuses connections, every call returns an error
// within its context (no panic, no hang); once it is back, the store works
// again without being reopened.
func TestDatabaseDown(t *testing.T) {
	u, name := newDB(t)
	st := openStore(t, u, t.TempDir())
	acct := mustAccount(t, st, "alice@example.org")
	inbox := mustMailbox(t, st, acct.ID, "INBOX")
	mustAppend(t, st, inbox.ID, bodyOf("before"))
	sub := st.Subscribe(acct.ID)
	defer sub.Close()
	waitListening(t, st)

	adm := admin(t)
	if _, err := adm.Exec(bg, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if _, err := adm.Exec(bg, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true"); err != nil {
				t.Error(err)
			}
		}
	}
	defer restore()
	if _, err := adm.Exec(bg, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name); err != nil {
		t.Fatal(err)
	}

	calls := map[string]func(ctx context.Context) error{
		"Mailbox":  func(ctx context.Context) error { _, err := st.Mailbox(ctx, acct.ID, "INBOX"); return err },
		"Messages": func(ctx context.Context) error { _, err := st.Messages(ctx, inbox.ID); return err },
		"View":     func(ctx context.Context) error { _, err := st.View(ctx, inbox.ID); return err },
		"Append": func(ctx context.Context) error {
			sp, err := spoolOf(st, bodyOf("down"))
			if err != nil {
				return err
			}
			_, err = st.Append(ctx, inbox.ID, sp, nil, testDate)
			return err
		},
		"Deliver": func(ctx context.Context) error {
			sp, err := spoolOf(st, bodyOf("down"))
			if err != nil {
				return err
			}
			return st.Deliver(ctx, sp, testDate, []mailstore.Recipient{{AccountID: acct.ID}})[0]
		},
		"StoreFlags": func(ctx context.Context) error {
			_, _, err := st.StoreFlags(ctx, inbox.ID, []mailstore.UID{1}, mailstore.FlagsAdd, []string{`\Seen`}, 0)
			return err
		},
		"Expunge":        func(ctx context.Context) error { _, err := st.Expunge(ctx, inbox.ID, []mailstore.UID{1}); return err },
		"CreateAccount":  func(ctx context.Context) error { _, err := st.CreateAccount(ctx, "bob@example.org", "h"); return err },
		"LockMailbox":    func(ctx context.Context) error { _, err := st.LockMailbox(ctx, inbox.ID); return err },
		"CollectGarbage": func(ctx context.Context) error { _, err := st.CollectGarbage(ctx); return err },
		"Usage":          func(ctx context.Context) error { _, err := st.Usage(ctx, acct.ID); return err },
	}
	for what, call := range calls {
		ctx, cancel := context.WithTimeout(bg, 5*time.Second)
		start := time.Now()
		err := call(ctx)
		cancel()
		if err == nil {
			t.Errorf("%s succeeded while the database is down", what)
		}
		if d := time.Since(start); d > 6*time.Second {
			t.Errorf("%s took %v", what, d)
		}
	}
	s2 := st.Subscribe(acct.ID + 1000) // returns, whatever the database does
	s2.Close()

	restore()
	// The pool reconnects: the first calls may still find dead idle
	// connections.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := st.Mailbox(bg, acct.ID, "INBOX")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var m mailstore.Message
	for {
		sp, err := spoolOf(st, bodyOf("after"))
		if err != nil {
			t.Fatal(err)
		}
		m, err = st.Append(bg, inbox.ID, sp, nil, testDate)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Append after recovery: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Notifications work again (the local scan publishes the append).
	var got []mailstore.Change
	for !slices.ContainsFunc(got, func(c mailstore.Change) bool { return c.UID == m.UID && c.Kind == mailstore.ChangeAppend }) {
		select {
		case <-sub.Ready():
			got = append(got, sub.Drain()...)
		case <-time.After(15 * time.Second):
			t.Fatalf("append after recovery not published: %+v", got)
		}
	}
}

// --- `letterbox store copy` between the backends ---

// dump renders everything a client can see of a store, without the
// store's own IDs, for comparing stores.
func dump(t *testing.T, st mailstore.Store) string {
	t.Helper()
	var b strings.Builder
	accts, err := st.Accounts(bg)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accts {
		u, err := st.Usage(bg, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "account %s %s %q %d %+v\n", a.Name, a.PasswordHash, a.SCRAMSHA256, a.Created.UnixNano(), u)
		mbs, err := st.Mailboxes(bg, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, mb := range mbs {
			id := mb.ID
			mb.ID, mb.AccountID = 0, 0
			fmt.Fprintf(&b, " mailbox %+v\n", mb)
			ms, err := st.Messages(bg, id)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				fmt.Fprintf(&b, "  msg %d %d %q %d %d %d %s %q\n", m.UID, m.ModSeq, m.Flags, m.InternalDate.UnixNano(),
					m.SaveDate.UnixNano(), m.Size, m.BlobID, readBlobOf(t, st, m.BlobID))
			}
			v, err := st.View(bg, id)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "  view %+v\n", v)
			log, err := st.(mailstore.Transfer).ExpungeLog(bg, id)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "  expunged %v\n", log)
		}
	}
	return b.String()
}

func readBlobOf(t *testing.T, st mailstore.Store, id string) string {
	t.Helper()
	bl, err := st.OpenBlob(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	data, err := io.ReadAll(bl)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A store copied from sqlite into postgres and back is the same store.
func TestCopyWithSQLite(t *testing.T) {
	u, _ := newDB(t)
	src, err := sqlite.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	alice, err := src.CreateAccount(bg, "alice@example.org", "h-alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := src.SetCredentials(bg, "alice@example.org", "h2", "scram-secret"); err != nil {
		t.Fatal(err)
	}
	if err := src.SetQuota(bg, "alice@example.org", 1<<20, 100); err != nil {
		t.Fatal(err)
	}
	inbox, _ := src.Mailbox(bg, alice.ID, "INBOX")
	work, err := src.CreateMailbox(bg, alice.ID, "Work/Ärger", mailstore.SpecialArchive)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		sp, _ := src.NewSpool()
		sp.Write([]byte(bodyOf(fmt.Sprint("m", i%5)) + "\x00\xff bare\rCR\n"))
		if _, err := src.Append(bg, inbox.ID, sp, []string{"$K" + fmt.Sprint(i%3)}, testDate.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := src.StoreFlags(bg, inbox.ID, []mailstore.UID{2, 3, 4}, mailstore.FlagsAdd, []string{`\Seen`, `\Deleted`}, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.Move(bg, inbox.ID, []mailstore.UID{5, 6}, work.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Expunge(bg, inbox.ID, []mailstore.UID{1, 12}); err != nil {
		t.Fatal(err)
	}
	want := dump(t, src)

	pg := openStore(t, u, t.TempDir())
	if _, err := storecopy.Copy(bg, pg, src, nil); err != nil {
		t.Fatalf("copy sqlite -> postgres: %v", err)
	}
	if got := dump(t, pg); got != want {
		t.Fatalf("postgres copy differs:\n%s\nwant\n%s", got, want)
	}
	back, err := sqlite.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if _, err := storecopy.Copy(bg, back, pg, nil); err != nil {
		t.Fatalf("copy postgres -> sqlite: %v", err)
	}
	if got := dump(t, back); got != want {
		t.Fatalf("sqlite copy of the postgres copy differs:\n%s\nwant\n%s", got, want)
	}
}
