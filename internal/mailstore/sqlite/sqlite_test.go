package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/storetest"
)

func openTest(t *testing.T, dir string) *Store {
	t.Helper()
	st, err := Open(dir, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) mailstore.Store {
		return openTest(t, t.TempDir())
	})
}

var bg = context.Background()

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

func mustDeliver(t *testing.T, st *Store, body string, rcpts ...mailstore.Recipient) {
	t.Helper()
	sp, err := st.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	sp.Write([]byte(body))
	for _, err := range st.Deliver(bg, sp, testDate, rcpts) {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func mustAppend(t *testing.T, st *Store, mailboxID int64, body string, flags ...string) mailstore.Message {
	t.Helper()
	sp, err := st.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	sp.Write([]byte(body))
	m, err := st.Append(bg, mailboxID, sp, flags, testDate)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustMessages(t *testing.T, st *Store, mailboxID int64) []mailstore.Message {
	t.Helper()
	ms, err := st.Messages(bg, mailboxID)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func readBlob(t *testing.T, st *Store, id string) string {
	t.Helper()
	b, err := st.OpenBlob(bg, id)
	if err != nil {
		t.Fatalf("OpenBlob %s: %v", id, err)
	}
	defer b.Close()
	data, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// snapshot captures everything observable about an account.
func snapshot(t *testing.T, st *Store, name string) string {
	t.Helper()
	a, err := st.Account(bg, name)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%+v\n", a)
	mbs, err := st.Mailboxes(bg, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range mbs {
		fmt.Fprintf(&b, "%+v\n", mb)
		for _, m := range mustMessages(t, st, mb.ID) {
			fmt.Fprintf(&b, "  %d %d %q %d %d %d %s %q\n", m.UID, m.ModSeq, m.Flags, m.InternalDate.UnixNano(),
				m.SaveDate.UnixNano(), m.Size, m.BlobID, readBlob(t, st, m.BlobID))
		}
		van, err := st.Vanished(bg, mb.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "  vanished %v\n", van)
	}
	return b.String()
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := mustAccount(t, st, "alice@example.org")
	inbox := mustMailbox(t, st, a.ID, "INBOX")
	work, err := st.CreateMailbox(bg, a.ID, "Work/Sub", mailstore.SpecialArchive)
	if err != nil {
		t.Fatal(err)
	}
	r := mailstore.Recipient{AccountID: a.ID, Mailbox: "INBOX"}
	for i := 0; i < 5; i++ {
		mustDeliver(t, st, fmt.Sprintf("Subject: %d\n\nbody\n", i), r)
	}
	mustAppend(t, st, work.ID, "Subject: w\r\n\r\nx", `\Seen`, "kw")
	if _, _, err := st.StoreFlags(bg, inbox.ID, []mailstore.UID{1, 2}, mailstore.FlagsAdd, []string{`\Answered`}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Expunge(bg, inbox.ID, []mailstore.UID{3, 5}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetSubscribed(bg, a.ID, "Work/Sub", true); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, st, a.Name)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openTest(t, dir)
	if after := snapshot(t, st, a.Name); after != before {
		t.Fatalf("state changed across reopen:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Counters continue where they were.
	if m := mustAppend(t, st, inbox.ID, "x"); m.UID != 6 {
		t.Fatalf("UID after reopen = %d, want 6", m.UID)
	}
	var maxUV uint32
	mbs, _ := st.Mailboxes(bg, a.ID)
	for _, mb := range mbs {
		maxUV = max(maxUV, mb.UIDValidity)
	}
	nb, err := st.CreateMailbox(bg, a.ID, "New", "")
	if err != nil {
		t.Fatal(err)
	}
	if nb.UIDValidity <= maxUV {
		t.Fatalf("UIDVALIDITY after reopen %d <= %d", nb.UIDValidity, maxUV)
	}
}

// TestTwoProcesses simulates the CLI running next to the server: two Store
// instances on one data directory.
func TestTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	server := openTest(t, dir)
	cli := openTest(t, dir)

	// `letterbox user add` in the CLI is visible to the server at once.
	a := mustAccount(t, cli, "alice@example.org")
	if got, err := server.Account(bg, "alice@example.org"); err != nil || got.ID != a.ID {
		t.Fatalf("server sees %+v, %v", got, err)
	}
	if err := cli.SetPasswordHash(bg, a.Name, "new"); err != nil {
		t.Fatal(err)
	}
	if got, _ := server.Account(bg, a.Name); got.PasswordHash != "new" {
		t.Fatalf("server sees hash %q", got.PasswordHash)
	}
	if _, err := server.CreateAccount(bg, "ALICE@example.org", "x"); !errors.Is(err, mailstore.ErrAccountExists) {
		t.Fatalf("duplicate account across instances: %v", err)
	}

	// Concurrent deliveries from both: UIDs stay unique and counters exact.
	inbox := mustMailbox(t, server, a.ID, "INBOX")
	r := mailstore.Recipient{AccountID: a.ID, Mailbox: "INBOX"}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		st := server
		if g%2 == 1 {
			st = cli
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 15; i++ {
				sp, err := st.NewSpool()
				if err != nil {
					t.Error(err)
					return
				}
				// Shared content across instances exercises dedup.
				fmt.Fprintf(sp, "Subject: %d\n\nx\n", (g*15+i)%40)
				if err := st.Deliver(bg, sp, testDate, []mailstore.Recipient{r})[0]; err != nil {
					t.Errorf("Deliver: %v", err)
					return
				}
			}
		}()
	}
	// GC from the CLI instance while the server delivers.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 10; i++ {
			if _, err := cli.CollectGarbage(bg); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, st := range []*Store{server, cli} {
		mb := mustMailbox(t, st, a.ID, "INBOX")
		ms := mustMessages(t, st, inbox.ID)
		if len(ms) != 120 || mb.Messages != 120 || mb.Unseen != 120 || mb.UIDNext != 121 {
			t.Fatalf("%d messages, mailbox %+v", len(ms), mb)
		}
		var size int64
		for i, m := range ms {
			if m.UID != mailstore.UID(i+1) {
				t.Fatalf("UIDs %v", m.UID)
			}
			size += m.Size
			if got := readBlob(t, st, m.BlobID); int64(len(got)) != m.Size {
				t.Fatalf("blob of UID %d: %d octets", m.UID, len(got))
			}
		}
		if mb.Size != size {
			t.Fatalf("Size %d, want %d", mb.Size, size)
		}
	}
}

func TestPragmas(t *testing.T) {
	st := openTest(t, t.TempDir())
	var journal string
	var syncMode, fk, busy int
	err := st.submit(bg, &op{run: func(w *writer) error {
		if err := w.row(`PRAGMA journal_mode`).Scan(&journal); err != nil {
			return err
		}
		if err := w.row(`PRAGMA synchronous`).Scan(&syncMode); err != nil {
			return err
		}
		if err := w.row(`PRAGMA foreign_keys`).Scan(&fk); err != nil {
			return err
		}
		return w.row(`PRAGMA busy_timeout`).Scan(&busy)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if journal != "wal" || syncMode != 2 || fk != 1 || busy != int(busyTimeout.Milliseconds()) {
		t.Fatalf("journal_mode=%s synchronous=%d foreign_keys=%d busy_timeout=%d", journal, syncMode, fk, busy)
	}
	var version int
	if err := st.queryRow(bg, `SELECT version FROM schema_version`).Scan(&version); err != nil || version != len(migrations) {
		t.Fatalf("schema version %d, %v", version, err)
	}
	// Readers cannot write.
	if _, err := st.rdb.ExecContext(bg, `DELETE FROM accounts`); err == nil {
		t.Fatal("reader connection accepted a write")
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite", filepath.Join(dir, DBName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE schema_version SET version = 999`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if st, err := Open(dir, nil); err == nil {
		st.Close()
		t.Fatal("Open accepted a newer schema")
	}
}

// TestCrashLeftovers reproduces what a crash can leave behind and checks
// that collection repairs it without ever breaking a reference.
func TestCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	st := openTest(t, dir)
	a := mustAccount(t, st, "alice@example.org")
	inbox := mustMailbox(t, st, a.ID, "INBOX")
	kept := mustAppend(t, st, inbox.ID, "kept")

	// 1. Crash after a spool was moved into the tree, before COMMIT: a
	//    file without a row.
	orphan := strings.Repeat("ab", 32)
	p := st.blobs.Path(orphan)
	os.MkdirAll(filepath.Dir(p), 0o700)
	if err := os.WriteFile(p, []byte("orphan"), 0o600); err != nil {
		t.Fatal(err)
	}
	// 2. Crash during collection, after the file was removed, before
	//    COMMIT: an unreferenced row without a file.
	gone := mustAppend(t, st, inbox.ID, "gone")
	if _, err := st.Expunge(bg, inbox.ID, []mailstore.UID{gone.UID}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.blobs.Remove(gone.BlobID); err != nil {
		t.Fatal(err)
	}
	// 3. Crash while a message was arriving: an old spool file.
	stale := filepath.Join(dir, BlobDir, "tmp", "spool-crashed")
	os.WriteFile(stale, []byte("partial"), 0o600)
	old := time.Now().Add(-2 * tmpGrace)
	os.Chtimes(stale, old, old)
	fresh := filepath.Join(dir, BlobDir, "tmp", "spool-other-process")
	os.WriteFile(fresh, []byte("arriving"), 0o600)

	// Delivering the content of the half-collected blob again repairs it.
	again := mustAppend(t, st, inbox.ID, "gone")
	if readBlob(t, st, again.BlobID) != "gone" {
		t.Fatal("re-delivery did not restore the blob file")
	}
	n, err := st.CollectGarbage(bg)
	if err != nil || n != 1 {
		t.Fatalf("CollectGarbage = %d, %v; want the orphan file", n, err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("orphan file kept")
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("stale spool kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatal("young spool of another process removed")
	}
	if readBlob(t, st, kept.BlobID) != "kept" || readBlob(t, st, again.BlobID) != "gone" {
		t.Fatal("referenced blob lost")
	}

	// A row without file and without references is simply dropped.
	if _, err := st.Expunge(bg, inbox.ID, []mailstore.UID{again.UID}); err != nil {
		t.Fatal(err)
	}
	st.blobs.Remove(again.BlobID)
	if n, err := st.CollectGarbage(bg); err != nil || n != 1 {
		t.Fatalf("CollectGarbage = %d, %v; want the dangling row", n, err)
	}
	var rows int
	st.queryRow(bg, `SELECT count(*) FROM blobs`).Scan(&rows)
	if rows != 1 {
		t.Fatalf("%d blob rows left, want 1", rows)
	}
}

// TestCloseKeepsAcknowledged checks that every delivery acknowledged
// before or during Close is there after reopening.
func TestCloseKeepsAcknowledged(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := mustAccount(t, st, "alice@example.org")
	r := mailstore.Recipient{AccountID: a.ID, Mailbox: "INBOX"}
	var mu sync.Mutex
	acked := map[string]bool{}
	started := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				sp, err := st.NewSpool()
				if err != nil {
					return
				}
				body := fmt.Sprintf("m %d %d\r\n", g, i)
				sp.Write([]byte(body))
				if err := st.Deliver(bg, sp, testDate, []mailstore.Recipient{r})[0]; err != nil {
					if !errors.Is(err, mailstore.ErrClosed) {
						t.Errorf("Deliver: %v", err)
					}
					return
				}
				mu.Lock()
				acked[body] = true
				mu.Unlock()
				if i == 0 {
					started <- struct{}{}
				}
			}
		}()
	}
	for i := 0; i < 8; i++ {
		<-started
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	st = openTest(t, dir)
	inbox := mustMailbox(t, st, a.ID, "INBOX")
	ms := mustMessages(t, st, inbox.ID)
	found := map[string]bool{}
	for _, m := range ms {
		found[readBlob(t, st, m.BlobID)] = true
	}
	for body := range acked {
		if !found[body] {
			t.Fatalf("acknowledged delivery %q lost", body)
		}
	}
	if len(ms) != len(acked) {
		t.Fatalf("%d messages stored, %d acknowledged", len(ms), len(acked))
	}
}

// TestConcurrentOpen opens a new data directory from several "processes"
// at once: schema creation must happen exactly once.
func TestConcurrentOpen(t *testing.T) {
	dir := t.TempDir()
	stores := make([]*Store, 4)
	errs := make([]error, 4)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(dir, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	a := mustAccount(t, stores[0], "alice@example.org")
	for _, st := range stores[1:] {
		if got, err := st.Account(bg, a.Name); err != nil || got.ID != a.ID {
			t.Fatalf("Account = %+v, %v", got, err)
		}
	}
}
