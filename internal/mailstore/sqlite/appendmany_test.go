package sqlite

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// blobFiles returns the names of the spool files in blobs/tmp and of the
// blob files in the tree.
func blobFiles(t *testing.T, st *Store) (spools, blobs []string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(st.blobs.Root(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		spools = append(spools, e.Name())
	}
	if err := st.blobs.Walk(func(id string) error { blobs = append(blobs, id); return nil }); err != nil {
		t.Fatal(err)
	}
	return spools, blobs
}

func manySpools(t *testing.T, st *Store, bodies ...string) []mailstore.AppendMessage {
	t.Helper()
	var msgs []mailstore.AppendMessage
	for _, b := range bodies {
		sp, err := st.NewSpool()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sp.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, mailstore.AppendMessage{Spool: sp, Date: testDate})
	}
	return msgs
}

// TestAppendManyFailureLeavesNoFiles checks that a failed AppendMany
// removes every spool file, and that one failing on the mailbox moves no
// file into the blob tree (the mailbox is checked first), so that nothing
// is left for garbage collection.
func TestAppendManyFailureLeavesNoFiles(t *testing.T) {
	st := openTest(t, t.TempDir())
	a := mustAccount(t, st, "alice@example.org")
	inbox := mustMailbox(t, st, a.ID, "INBOX")

	msgs := manySpools(t, st, "one", "two", "three")
	msgs[2].Flags = []string{`\Recent`}
	if _, err := st.AppendMany(bg, inbox.ID, msgs); !errors.Is(err, mailstore.ErrInvalidFlag) {
		t.Fatalf("AppendMany with an invalid flag: %v", err)
	}
	if spools, blobs := blobFiles(t, st); len(spools) != 0 || len(blobs) != 0 {
		t.Fatalf("after a failed AppendMany: spools %v, blobs %v", spools, blobs)
	}

	msgs = manySpools(t, st, "one", "two", "three")
	msgs[1].Spool.Abort()
	if _, err := st.AppendMany(bg, inbox.ID, msgs); err == nil {
		t.Fatal("AppendMany with an aborted spool succeeded")
	}
	if spools, blobs := blobFiles(t, st); len(spools) != 0 || len(blobs) != 0 {
		t.Fatalf("after a failed AppendMany: spools %v, blobs %v", spools, blobs)
	}

	if _, err := st.AppendMany(bg, inbox.ID+1000, manySpools(t, st, "one", "two")); !errors.Is(err, mailstore.ErrNoSuchMailbox) {
		t.Fatalf("AppendMany to a missing mailbox: %v", err)
	}
	if spools, blobs := blobFiles(t, st); len(spools) != 0 || len(blobs) != 0 {
		t.Fatalf("after a failed AppendMany: spools %v, blobs %v", spools, blobs)
	}
	if n, err := st.CollectGarbage(bg); err != nil || n != 0 {
		t.Fatalf("CollectGarbage = %d, %v; want nothing to collect", n, err)
	}

	// And a successful one leaves exactly its blobs, durable across a
	// reopen.
	got, err := st.AppendMany(bg, inbox.ID, manySpools(t, st, "one", "two", "one"))
	if err != nil {
		t.Fatal(err)
	}
	spools, blobs := blobFiles(t, st)
	if len(spools) != 0 || len(blobs) != 2 {
		t.Fatalf("after AppendMany: spools %v, blobs %v", spools, blobs)
	}
	dir := st.Dir()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openTest(t, dir)
	ms := mustMessages(t, st, inbox.ID)
	if len(ms) != 3 {
		t.Fatalf("%d messages after reopen", len(ms))
	}
	for i, m := range ms {
		if m.UID != got[i].UID || readBlob(t, st, m.BlobID) != []string{"one", "two", "one"}[i] {
			t.Fatalf("message %d after reopen: %+v", i, m)
		}
	}
}
