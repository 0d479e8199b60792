package sqlite

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/storecopy"
)

// Backend-specific tests of mailstore.Transfer; the behaviour every
// backend shares is in storetest (TestConformance/Transfer).

func importSpool(t *testing.T, st *Store, body string) mailstore.Spool {
	t.Helper()
	sp, err := st.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	sp.Write([]byte(body))
	return sp
}

func importedMailbox(t *testing.T, st *Store) (mailstore.Account, mailstore.Mailbox) {
	t.Helper()
	a, err := st.ImportAccount(bg, mailstore.Account{Name: "a@example.org", PasswordHash: "h"})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := st.ImportMailbox(bg, a.ID, mailstore.Mailbox{Name: "INBOX", UIDValidity: 5, UIDNext: 10, HighestModSeq: 20})
	if err != nil {
		t.Fatal(err)
	}
	return a, mb
}

// A UID is never both a message and an expunge-log entry, whichever is
// imported first.
func TestImportUIDInLogAndMessages(t *testing.T) {
	st := openTest(t, t.TempDir())
	_, mb := importedMailbox(t, st)
	if err := st.ImportExpunged(bg, mb.ID, []mailstore.Expunged{{UID: 2, ModSeq: 3}}); err != nil {
		t.Fatal(err)
	}
	err := st.ImportMessages(bg, mb.ID, []mailstore.ImportMessage{{Spool: importSpool(t, st, "x\r\n"), UID: 2, ModSeq: 4,
		InternalDate: testDate, SaveDate: testDate}})
	if !errors.Is(err, mailstore.ErrNotAllowed) {
		t.Fatalf("ImportMessages of a UID in the expunge log: %v", err)
	}
	if err := st.ImportMessages(bg, mb.ID, []mailstore.ImportMessage{{Spool: importSpool(t, st, "x\r\n"), UID: 3, ModSeq: 4,
		InternalDate: testDate, SaveDate: testDate}}); err != nil {
		t.Fatal(err)
	}
	if err := st.ImportExpunged(bg, mb.ID, []mailstore.Expunged{{UID: 3, ModSeq: 5}}); !errors.Is(err, mailstore.ErrNotAllowed) {
		t.Fatalf("ImportExpunged of a message's UID: %v", err)
	}
}

// Dates the database cannot hold (Unix nanoseconds) are refused rather
// than stored wrong.
func TestImportDates(t *testing.T) {
	st := openTest(t, t.TempDir())
	_, mb := importedMailbox(t, st)
	for _, c := range []struct {
		what           string
		internal, save time.Time
		ok             bool
	}{
		{"zero internal date", time.Time{}, testDate, false},
		{"zero save date", testDate, time.Time{}, false},
		{"year 1500", time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), testDate, false},
		{"year 2300", testDate, time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), false},
		{"year 1901, other zone", time.Date(1901, 12, 13, 20, 45, 52, 123456789, time.FixedZone("", -5*3600)), testDate, true},
	} {
		err := st.ImportMessages(bg, mb.ID, []mailstore.ImportMessage{{Spool: importSpool(t, st, "x\r\n"), UID: 1, ModSeq: 1,
			InternalDate: c.internal, SaveDate: c.save}})
		if c.ok != (err == nil) || !c.ok && !errors.Is(err, mailstore.ErrNotAllowed) {
			t.Fatalf("%s: %v", c.what, err)
		}
		if c.ok {
			m := mustMessages(t, st, mb.ID)[0]
			if !m.InternalDate.Equal(c.internal) || !m.SaveDate.Equal(c.save) {
				t.Fatalf("%s: stored %v %v", c.what, m.InternalDate, m.SaveDate)
			}
		}
	}
}

// A refused import leaves no body file behind (the checks run before any
// spool moves into the blob tree), and spool files are gone.
func TestImportRefusedLeavesNothing(t *testing.T) {
	st := openTest(t, t.TempDir())
	_, mb := importedMailbox(t, st)
	err := st.ImportMessages(bg, mb.ID, []mailstore.ImportMessage{
		{Spool: importSpool(t, st, "one\r\n"), UID: 1, ModSeq: 1, InternalDate: testDate, SaveDate: testDate},
		{Spool: importSpool(t, st, "two\r\n"), UID: 10, ModSeq: 2, InternalDate: testDate, SaveDate: testDate},
	})
	if !errors.Is(err, mailstore.ErrNotAllowed) {
		t.Fatal(err)
	}
	if n, err := st.CollectGarbage(bg); err != nil || n != 0 {
		t.Fatalf("CollectGarbage after a refused import: %d, %v", n, err)
	}
	if left, err := os.ReadDir(filepath.Join(st.Dir(), BlobDir, "tmp")); err != nil || len(left) != 0 {
		t.Fatalf("spool files left after a refused import: %v, %v", left, err)
	}
}

// What an import raises survives a reopen (another process, or the server
// started on the copy): the UIDVALIDITY floor, UIDNEXT, HIGHESTMODSEQ.
func TestImportSurvivesReopen(t *testing.T) {
	srcDir, dstDir := t.TempDir(), t.TempDir()
	src := openTest(t, srcDir)
	a := mustAccount(t, src, "alice@example.org")
	future := uint32(time.Now().Unix()) + 1_000_000
	fmb, err := src.ImportMailbox(bg, a.ID, mailstore.Mailbox{Name: "Future", UIDValidity: future, UIDNext: 7, HighestModSeq: 9})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, src, fmb.ID, "Subject: x\r\n\r\ny\r\n")
	before := snapshot(t, src, "alice@example.org")

	dst, err := Open(dstDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := storecopy.Copy(bg, dst, src, nil); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst = openTest(t, dstDir)
	// IDs are the destination's own.
	noIDs := regexp.MustCompile(`(Account)?ID:\d+ `)
	before = noIDs.ReplaceAllString(before, "")
	if got := noIDs.ReplaceAllString(snapshot(t, dst, "alice@example.org"), ""); got != before {
		t.Fatalf("after copy and reopen:\n%s\nwant:\n%s", got, before)
	}
	var last int64
	if err := dst.rdb.QueryRow(`SELECT value FROM meta WHERE key = 'last_uidvalidity'`).Scan(&last); err != nil || last < int64(future) {
		t.Fatalf("meta.last_uidvalidity = %d (%v), imported %d", last, err, future)
	}
	mb, err := dst.CreateMailbox(bg, a.ID, "New", "")
	if err != nil || mb.UIDValidity <= future {
		t.Fatalf("CreateMailbox after reopen: %+v, %v", mb, err)
	}
	m := mustAppend(t, dst, mustMailbox(t, dst, a.ID, "Future").ID, "Subject: z\r\n\r\n")
	if m.UID != 8 || m.ModSeq != 11 {
		t.Fatalf("Append after reopen: UID %d MODSEQ %d, want 8 and 11", m.UID, m.ModSeq)
	}
}
