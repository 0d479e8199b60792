//go:build linux

package sqlite

import (
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// TestFileSizeLimit: the metadata COMMIT fails because the WAL cannot grow
// (RLIMIT_FSIZE below the size the WAL needs: EFBIG, which SQLite reports
// as SQLITE_IOERR_WRITE). The store reports ErrInsufficientStorage (its
// probe write fails too), changes nothing, and the committer recovers: once
// the limit is lifted the same store, on the same connection, commits
// again, and the blob files of the failed writes are collected.
//
// RLIMIT_FSIZE applies to a whole process, so the test runs in a child
// process of the test binary, never in the test binary itself.
func TestFileSizeLimit(t *testing.T) {
	dir := os.Getenv("LETTERBOX_FSIZE_CHILD_DIR")
	if dir == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileSizeLimit$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "LETTERBOX_FSIZE_CHILD_DIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestFileSizeLimit") {
			t.Fatalf("child process: %v\n%s", err, out)
		}
		return
	}

	st := openTest(t, dir)
	a := mustAccount(t, st, "alice@example.org")
	inbox := mustMailbox(t, st, a.ID, "INBOX")
	first := mustAppend(t, st, inbox.ID, "Subject: before\r\n\r\nbefore\r\n")
	before := snapshot(t, st, a.Name)

	// An empty WAL: the next commit has to grow it from 0.
	db, err := sql.Open("sqlite", dsn(filepath.Join(dir, DBName)))
	if err != nil {
		t.Fatal(err)
	}
	var busy, logPages, ckptPages int
	err = db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &ckptPages)
	db.Close()
	if err != nil || busy != 0 {
		t.Fatalf("wal_checkpoint(TRUNCATE) = %d, %v", busy, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, DBName+"-wal")); err != nil || fi.Size() != 0 {
		t.Fatalf("WAL after TRUNCATE: %v, %v", fi, err)
	}

	// Room for a small blob file (one page), not for a WAL frame (a page
	// plus its 24-octet header after the 32-octet WAL header).
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	limit := syscall.Rlimit{Cur: 4096, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	lifted := false
	lift := func() {
		if !lifted {
			lifted = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer lift()

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, mailstore.ErrInsufficientStorage) || !errors.Is(err, syscall.EFBIG) ||
			!strings.Contains(err.Error(), "disk I/O error") {
			t.Errorf("%s with the WAL at its size limit: %v; want ErrInsufficientStorage wrapping SQLite's I/O error and the probe's EFBIG", what, err)
		}
	}
	_, err = st.Append(bg, inbox.ID, newSpool(t, st, "Subject: refused\r\n\r\nappend\r\n"), nil, testDate)
	check("Append", err)
	errs := st.Deliver(bg, newSpool(t, st, "Subject: refused\r\n\r\ndeliver\r\n"), testDate,
		[]mailstore.Recipient{{AccountID: a.ID, Mailbox: "INBOX"}})
	check("Deliver", errs[0])
	_, _, err = st.StoreFlags(bg, inbox.ID, []mailstore.UID{first.UID}, mailstore.FlagsAdd, []string{mailstore.FlagFlagged}, 0)
	check("StoreFlags", err)
	_, err = st.Append(bg, inbox.ID, newSpool(t, st, "Subject: big\r\n\r\n"+strings.Repeat("big\r\n", 4096)), nil, testDate)
	if !mailstore.InsufficientStorage(err) || !errors.Is(err, syscall.EFBIG) || !strings.Contains(err.Error(), "blobfs: spool") {
		t.Errorf("Append of a message larger than the limit: %v; want the spool's EFBIG", err)
	}
	lift()

	if after := snapshot(t, st, a.Name); after != before {
		t.Errorf("failed writes changed the account:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, pattern := range []string{filepath.Join(dir, BlobDir, "tmp", "*"), filepath.Join(dir, ".space-probe-*")} {
		if left, _ := filepath.Glob(pattern); len(left) != 0 {
			t.Errorf("left behind: %v", left)
		}
	}

	next := mustAppend(t, st, inbox.ID, "Subject: after\r\n\r\nafter\r\n")
	if next.UID != first.UID+1 {
		t.Errorf("UID after recovery = %d, want %d", next.UID, first.UID+1)
	}
	changed, _, err := st.StoreFlags(bg, inbox.ID, []mailstore.UID{first.UID}, mailstore.FlagsAdd, []string{mailstore.FlagFlagged}, 0)
	if err != nil || len(changed) != 1 || strings.Join(changed[0].Flags, " ") != `\Flagged` {
		t.Errorf("StoreFlags after recovery = %+v, %v", changed, err)
	}
	// The failed Append and Deliver had moved their blob files into
	// place before the COMMIT failed.
	if n, err := st.CollectGarbage(bg); err != nil || n != 2 {
		t.Errorf("CollectGarbage = %d, %v; want the 2 orphans of the failed commits", n, err)
	}
	var integrity string
	if err := st.queryRow(bg, "PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Errorf("integrity_check = %q, %v", integrity, err)
	}
}

// TestProbeSpace: the probe finds room in a healthy directory and ENOSPC
// on a full file system (a tmpfs, which needs root with CAP_SYS_ADMIN;
// skipped otherwise), and leaves no scratch file either way.
func TestProbeSpace(t *testing.T) {
	noScratch := func(dir string) {
		t.Helper()
		if left, _ := filepath.Glob(filepath.Join(dir, ".space-probe-*")); len(left) != 0 {
			t.Errorf("scratch files left: %v", left)
		}
	}
	dir := t.TempDir()
	if err := (&Store{dir: dir}).probeSpace(); err != nil {
		t.Errorf("probeSpace in a healthy directory: %v", err)
	}
	noScratch(dir)

	t.Run("full", func(t *testing.T) {
		mnt := t.TempDir()
		if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64k"); err != nil {
			t.Skipf("cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
		f, err := os.Create(filepath.Join(mnt, "filler"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for chunk := make([]byte, 4096); ; {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("filling the tmpfs: %v", err)
				}
				break
			}
		}
		err = (&Store{dir: mnt}).probeSpace()
		if !errors.Is(err, syscall.ENOSPC) || !mailstore.InsufficientStorage(err) {
			t.Errorf("probeSpace on a full file system: %v, want ENOSPC", err)
		}
		noScratch(mnt)
	})
}
