package postgres

import "testing"

// TestBlobHashMigration: migration 2 fills messages.blob_hash for rows of
// a version-1 database, and rows without it (inserted by a node of the
// previous version during a rolling upgrade) still list with their
// BlobID, from which their body reads.
func TestBlobHashMigration(t *testing.T) {
	u, _ := newDB(t)
	dir := t.TempDir()
	st := openStore(t, u, dir)
	acct := mustAccount(t, st, "alice@example.org")
	inbox := mustMailbox(t, st, acct.ID, "INBOX")
	m1 := mustAppend(t, st, inbox.ID, bodyOf("1"))
	m2 := mustAppend(t, st, inbox.ID, bodyOf("2"))
	st.Close()

	// Back to schema version 1, as a previous version left it.
	st0 := openStore(t, u, dir)
	for _, q := range []string{
		`ALTER TABLE messages DROP COLUMN blob_hash`,
		`UPDATE schema_version SET version = 1`,
	} {
		if _, err := st0.pool.Exec(bg, q); err != nil {
			t.Fatal(err)
		}
	}
	st0.Close()
	applied, err := Migrate(bg, u)
	if err != nil || applied != len(migrations)-1 {
		t.Fatalf("Migrate from version 1: applied %d, %v", applied, err)
	}
	st = openStore(t, u, dir)
	var missing int
	if err := st.pool.QueryRow(bg, `SELECT count(*) FROM messages WHERE blob_hash IS NULL`).Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("rows without blob_hash after the migration: %d, %v", missing, err)
	}

	// A row as a previous-version node inserts it: no blob_hash.
	if _, err := st.pool.Exec(bg, `UPDATE messages SET blob_hash = NULL WHERE uid = $1`, int64(m2.UID)); err != nil {
		t.Fatal(err)
	}
	ms, err := st.Messages(bg, inbox.ID)
	if err != nil || len(ms) != 2 {
		t.Fatalf("Messages: %v %v", ms, err)
	}
	for i, want := range []struct {
		id, body string
	}{{m1.BlobID, bodyOf("1")}, {m2.BlobID, bodyOf("2")}} {
		if ms[i].BlobID != want.id {
			t.Errorf("message %d: BlobID %q, want %q", i+1, ms[i].BlobID, want.id)
		}
		if got := readBlob(t, st, ms[i].BlobID); got != want.body {
			t.Errorf("message %d: body %q", i+1, got)
		}
	}
}
