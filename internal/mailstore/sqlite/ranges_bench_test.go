package sqlite

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/message"
)

// bulkMailbox fills INBOX of a new account with n messages (UIDs 1..n,
// every third \Seen, every tenth with a keyword), each with its own blob
// row, by SQL on a connection of its own: the read paths are what is
// measured, and n real deliveries would take minutes. The blob rows have
// no files; nothing here opens them.
func bulkMailbox(tb testing.TB, st *Store, n int) mailstore.Mailbox {
	tb.Helper()
	a, err := st.CreateAccount(bg, "bulk@example.org", "x")
	if err != nil {
		tb.Fatal(err)
	}
	mb, err := st.Mailbox(bg, a.ID, mailstore.Inbox)
	if err != nil {
		tb.Fatal(err)
	}
	// A connection of its own: the store's writer connection belongs to
	// the committer.
	db, err := sql.Open("sqlite", dsn(filepath.Join(st.dir, DBName), "busy_timeout(10000)"))
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	const base = 1 << 40 // blob ids clear of real ones
	// Every blob row gets the structure of one typical small message, so
	// that structure reads decode something real.
	part, err := message.Parse(strings.NewReader(bulkMessage))
	if err != nil {
		tb.Fatal(err)
	}
	stmts := []struct {
		q    string
		args []any
	}{
		{`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?)
		  INSERT INTO blobs (id, hash, size, structure) SELECT ? + i, printf('bench%064d', i), 4000 + i % 1000, ? FROM n`,
			[]any{n, base, part.Marshal()}},
		{`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < ?)
		  INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, internal_date, save_date, blob_id)
		  SELECT ?, i, i, CASE WHEN i % 3 = 0 THEN '\Seen' WHEN i % 10 = 1 THEN '$Label' || (i % 7) ELSE '' END,
		         i % 3 = 0, ?, ?, ? + i FROM n`,
			[]any{n, mb.ID, nanos(testDate), nanos(testDate), base}},
		{`UPDATE mailboxes SET uid_next = ?, highest_modseq = ?, messages = ?, size = 0, unseen = ? WHERE id = ?`,
			[]any{n + 1, n, n, n - n/3, mb.ID}},
	}
	for _, s := range stmts {
		if _, err := tx.Exec(s.q, s.args...); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	mb, err = st.Mailbox(bg, a.ID, mailstore.Inbox)
	if err != nil {
		tb.Fatal(err)
	}
	return mb
}

const bulkMessage = "Received: from mx.example.net by mail.example.org; Thu, 26 Nov 2026 10:00:00 +0000\r\n" +
	"From: Alice Example <alice@example.net>\r\nTo: Bob <bob@example.org>, carol@example.org\r\n" +
	"Subject: =?UTF-8?q?Quarterly_report_=E2=80=94_draft?=\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n" +
	"Message-ID: <1234@example.net>\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=b1\r\n\r\n" +
	"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHello Bob=2C\r\n" +
	"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello Bob,</p>\r\n--b1--\r\n"

// BenchmarkRead compares reading a subset of a 100,000-message mailbox
// through Messages (what the IMAP server did for every FETCH/STORE/SEARCH)
// with MessagesInRanges, and SELECT's Messages with View.
func BenchmarkRead(b *testing.B) {
	const n = 100_000
	st, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	mb := bulkMailbox(b, st, n)
	rng := rand.New(rand.NewPCG(1, 2))
	scattered := func(k int) []mailstore.UIDRange {
		rs := make([]mailstore.UIDRange, k)
		for i := range rs {
			u := mailstore.UID(rng.IntN(n) + 1)
			rs[i] = mailstore.UIDRange{Min: u, Max: u}
		}
		return rs
	}
	want := func(b *testing.B, got []mailstore.Message, err error, min int) {
		if err != nil {
			b.Fatal(err)
		}
		if len(got) < min {
			b.Fatalf("got %d messages, want >= %d", len(got), min)
		}
	}
	b.Run("Messages/all", func(b *testing.B) {
		for b.Loop() {
			ms, err := st.Messages(bg, mb.ID)
			want(b, ms, err, n)
		}
	})
	b.Run("MessagesInRanges/1", func(b *testing.B) {
		for b.Loop() {
			ms, err := st.MessagesInRanges(bg, mb.ID, scattered(1))
			want(b, ms, err, 1)
		}
	})
	b.Run("MessagesInRanges/50-scattered", func(b *testing.B) {
		for b.Loop() {
			ms, err := st.MessagesInRanges(bg, mb.ID, scattered(50))
			want(b, ms, err, 40)
		}
	})
	b.Run("MessagesInRanges/50-contiguous", func(b *testing.B) {
		for b.Loop() {
			u := mailstore.UID(rng.IntN(n-50) + 1)
			ms, err := st.MessagesInRanges(bg, mb.ID, []mailstore.UIDRange{{Min: u, Max: u + 49}})
			want(b, ms, err, 50)
		}
	})
	b.Run("MessagesInRanges/all", func(b *testing.B) {
		for b.Loop() {
			ms, err := st.MessagesInRanges(bg, mb.ID, []mailstore.UIDRange{{Min: 1, Max: ^mailstore.UID(0)}})
			want(b, ms, err, n)
		}
	})
	// What IMAP FETCH 1:* does: the whole mailbox, 256 messages per read.
	b.Run("MessagesInRanges/all-by-256", func(b *testing.B) {
		for b.Loop() {
			got := 0
			for lo := mailstore.UID(1); lo <= n; lo += 256 {
				ms, err := st.MessagesInRanges(bg, mb.ID, []mailstore.UIDRange{{Min: lo, Max: lo + 255}})
				want(b, ms, err, 1)
				got += len(ms)
			}
			if got != n {
				b.Fatalf("read %d messages, want %d", got, n)
			}
		}
	})
	b.Run("Structures/all-by-256", func(b *testing.B) {
		us := make([]mailstore.UID, 256)
		for b.Loop() {
			for lo := mailstore.UID(1); lo <= n; lo += 256 {
				us = us[:0]
				for u := lo; u < lo+256 && u <= n; u++ {
					us = append(us, u)
				}
				if _, err := st.Structures(bg, mb.ID, us); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("MessagesInRanges/all-odd", func(b *testing.B) {
		rs := make([]mailstore.UIDRange, 0, n/2)
		for u := mailstore.UID(1); u <= n; u += 2 {
			rs = append(rs, mailstore.UIDRange{Min: u, Max: u})
		}
		for b.Loop() {
			ms, err := st.MessagesInRanges(bg, mb.ID, rs)
			want(b, ms, err, n/2)
		}
	})
	b.Run("View", func(b *testing.B) {
		for b.Loop() {
			v, err := st.View(bg, mb.ID)
			if err != nil || len(v.UIDs) != n || v.FirstUnseen != 1 || len(v.Keywords) != 7 {
				b.Fatal(err, len(v.UIDs), v.FirstUnseen, v.Keywords)
			}
		}
	})
}

// TestRangesPlan checks that multi-range reads keep json_each as the outer
// loop and use the primary key for each range (no full scan, no sort).
func TestRangesPlan(t *testing.T) {
	st := openTest(t, t.TempDir())
	rows, err := st.rdb.Query(`EXPLAIN QUERY PLAN `+qRanges, `[[1,2],[5,9]]`, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan += fmt.Sprintln(detail)
	}
	t.Log(plan)
	for _, bad := range []string{"SCAN m", "TEMP B-TREE"} {
		if strings.Contains(plan, bad) {
			t.Errorf("plan has %q:\n%s", bad, plan)
		}
	}
}
