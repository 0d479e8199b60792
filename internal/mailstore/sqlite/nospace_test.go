package sqlite

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// setMaxPageCount sets PRAGMA max_page_count on the committer's connection
// and returns the resulting limit. A limit at the database's current size
// makes SQLite fail every write that needs a new page with SQLITE_FULL,
// exactly as when the file system has no room left for the WAL to grow.
func setMaxPageCount(t *testing.T, st *Store, n int64) int64 {
	t.Helper()
	var got int64
	err := st.submit(bg, &op{run: func(w *writer) error {
		return w.conn.QueryRowContext(bg, fmt.Sprintf("PRAGMA max_page_count = %d", n)).Scan(&got)
	}})
	if err != nil {
		t.Fatalf("PRAGMA max_page_count = %d: %v", n, err)
	}
	return got
}

// bigHeaderMessage has a Subject too large for one database page: its
// parsed structure (stored in the blobs row) needs new pages.
func bigHeaderMessage(tag string) string {
	return "Subject: " + tag + " " + strings.Repeat("x", 3*65536) + "\r\n\r\nbody " + tag + "\r\n"
}

func newSpool(t *testing.T, st *Store, body string) mailstore.Spool {
	t.Helper()
	sp, err := st.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	return sp
}

// TestInsufficientStorage: when SQLite reports the database full
// (SQLITE_FULL, what a full disk produces for the WAL), Append, Deliver
// and AppendMany fail with an error that wraps
// mailstore.ErrInsufficientStorage, change nothing, leave no spool file,
// and the committer goes on: once there is room again the same store
// accepts writes, UIDs continue, and the blob files the failed operations
// had moved into place are collected.
func TestInsufficientStorage(t *testing.T) {
	dir := t.TempDir()
	st := openTest(t, dir)
	a := mustAccount(t, st, "alice@example.org")
	inbox := mustMailbox(t, st, a.ID, "INBOX")
	first := mustAppend(t, st, inbox.ID, "Subject: before\r\n\r\nbefore\r\n")
	before := snapshot(t, st, a.Name)

	pages := setMaxPageCount(t, st, 1) // clamped to the current size
	if pages < 2 {
		t.Fatalf("max_page_count clamped to %d pages", pages)
	}

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, mailstore.ErrInsufficientStorage) || !mailstore.InsufficientStorage(err) {
			t.Errorf("%s with the database full: %v, want an error wrapping ErrInsufficientStorage", what, err)
		}
	}
	_, err := st.Append(bg, inbox.ID, newSpool(t, st, bigHeaderMessage("append")), nil, testDate)
	check("Append", err)
	errs := st.Deliver(bg, newSpool(t, st, bigHeaderMessage("deliver")), testDate,
		[]mailstore.Recipient{{AccountID: a.ID, Mailbox: "INBOX"}})
	if len(errs) != 1 {
		t.Fatalf("Deliver returned %d errors for 1 recipient", len(errs))
	}
	check("Deliver", errs[0])
	_, err = st.AppendMany(bg, inbox.ID, []mailstore.AppendMessage{
		{Spool: newSpool(t, st, "Subject: small\r\n\r\nsmall\r\n")},
		{Spool: newSpool(t, st, bigHeaderMessage("appendmany"))},
	})
	check("AppendMany", err)

	if after := snapshot(t, st, a.Name); after != before {
		t.Errorf("failed writes changed the account:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if ents, err := os.ReadDir(filepath.Join(dir, BlobDir, "tmp")); err != nil || len(ents) != 0 {
		t.Errorf("blobs/tmp after the failures: %v, %v; want empty", ents, err)
	}

	// Space returns: the same store (same committer, same connection)
	// writes again.
	if got := setMaxPageCount(t, st, 1<<30); got != 1<<30 {
		t.Fatalf("max_page_count = %d after lifting the limit", got)
	}
	next := mustAppend(t, st, inbox.ID, bigHeaderMessage("after"))
	if next.UID != first.UID+1 {
		t.Errorf("UID after recovery = %d, want %d", next.UID, first.UID+1)
	}
	mustDeliver(t, st, "Subject: delivered\r\n\r\nafter\r\n", mailstore.Recipient{AccountID: a.ID, Mailbox: "INBOX"})
	if ms := mustMessages(t, st, inbox.ID); len(ms) != 3 || ms[2].UID != first.UID+2 {
		t.Fatalf("messages after recovery: %+v", ms)
	}
	// Append, Deliver and both messages of AppendMany had moved their
	// spools into the blob tree before an insert failed.
	if n, err := st.CollectGarbage(bg); err != nil || n != 4 {
		t.Errorf("CollectGarbage = %d, %v; want the 4 orphans of the failed writes", n, err)
	}
	var files int
	if err := st.blobs.Walk(func(string) error { files++; return nil }); err != nil {
		t.Fatal(err)
	}
	if files != 3 {
		t.Errorf("%d blob files after collection, want 3 (one per message)", files)
	}
	var integrity string
	if err := st.queryRow(bg, "PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Errorf("integrity_check = %q, %v", integrity, err)
	}
}
