//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

// The replies to a write refused for lack of space (docs/operations.md,
// "Disk full").
const (
	fullSMTP = "452 4.3.1 Insufficient system storage, try again later"
	fullIMAP = "NO [UNAVAILABLE] insufficient storage, try again later"
	fullPOP3 = "-ERR [SYS/TEMP] some deleted messages not removed"
)

// fullLimit is the RLIMIT_FSIZE of a "full disk": a small message's blob
// file fits, a WAL frame (32-octet WAL header, 24-octet frame header, a
// 4096-octet page) does not, nor does a large message's blob.
const fullLimit = 4096

// TestDiskFull runs the real server and makes its writes fail the way a
// full disk makes them fail, without mounting anything: the soft
// RLIMIT_FSIZE of the running process is lowered with prlimit(2), so that
// writes past fullLimit octets of any file fail with EFBIG (the Go runtime
// ignores SIGXFSZ). The WAL is first emptied by a checkpoint, so that every
// metadata commit has to grow it and fails: small messages fail at the
// COMMIT (their blob file already in place), large ones while their blob
// is spooled. While the limit holds, SMTP and LMTP answer 452 4.3.1 and
// stay usable, `letterbox deliver` exits 75, IMAP APPEND, MULTIAPPEND and
// STORE answer NO [UNAVAILABLE] and the session goes on, POP3 QUIT answers
// -ERR [SYS/TEMP] and keeps the message. Then the limit is raised again:
// the same process accepts everything, UIDs continue, every message
// acknowledged before is intact; after it stops, the database passes
// integrity_check and garbage collection removes exactly the blob files
// of the refused commits.
func TestDiskFull(t *testing.T) {
	sqliteOnly(t, "checks the SQLite database and WAL after the fault; the postgres backend's fault test is TestTwoNodesDatabaseRestart")
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir, "")
	for _, u := range []string{"u@test.example", "v@test.example"} {
		if _, stderr, code := letterbox(t, "pw\n", "user", "add", "--config", cfg, u); code != 0 {
			t.Fatalf("user add %s: %s", u, stderr)
		}
	}
	p := startServer(t, dataDir, "--config", cfg)
	pid := p.cmd.Process.Pid
	var normal unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, nil, &normal); err != nil {
		t.Fatalf("prlimit(%d): %v", pid, err)
	}

	// want[account] lists the messages the account must end with, in
	// UID order: what was acknowledged, never what was refused. A refused
	// write consumes no UID, so the next acknowledged message gets the
	// next one.
	want := map[string][]wantMsg{}
	acked := func(account string, msg []byte, traced bool) {
		want[account] = append(want[account], wantMsg{uid: len(want[account]) + 1, body: msg, traced: traced})
	}

	smtpC, smtpR := dialText(t, p.Addr("smtp"))
	defer smtpC.Close()
	expect(t, smtpC, smtpR, "", "220 ")
	expect(t, smtpC, smtpR, "EHLO client.example\r\n", "250")
	lmtpC, lmtpR := dialText(t, p.Addr("lmtp"))
	defer lmtpC.Close()
	expect(t, lmtpC, lmtpR, "", "220 ")
	expect(t, lmtpC, lmtpR, "LHLO client.example\r\n", "250")
	imap := auditDial(t, p.Addr("imap"), nil)
	imap.imap("L", "LOGIN u@test.example pw", "OK")
	imap.imap("S", "SELECT INBOX", "OK")
	validity := statusItem(t, imap.imap("S0", "STATUS INBOX (UIDVALIDITY)", "OK"), "UIDVALIDITY")

	// Before the fault: one message each way.
	msg := diskFullMessage("s1", 1)
	if got := smtpSend(t, smtpC, smtpR, msg, "u@test.example"); !strings.HasPrefix(got[0], "250 2.0.0 Ok: delivered as ") {
		t.Fatalf("SMTP before the fault: %q", got)
	}
	acked("u@test.example", msg, true)
	msg = diskFullMessage("l1", 1)
	for i, got := range lmtpSend(t, lmtpC, lmtpR, msg, "u@test.example", "v@test.example") {
		if !strings.HasPrefix(got, "250 2.0.0 <"+[]string{"u", "v"}[i]+"@test.example> Ok: delivered as ") {
			t.Fatalf("LMTP before the fault: %q", got)
		}
	}
	acked("u@test.example", msg, true)
	acked("v@test.example", msg, true)
	msg = diskFullMessage("d1", 1)
	if stderr, code := deliverWithLimit(t, cfg, 0, msg, "u@test.example"); code != 0 {
		t.Fatalf("deliver before the fault: exit %d\n%s", code, stderr)
	}
	acked("u@test.example", msg, true)
	msg = diskFullMessage("i1", 1)
	if got, w := imapAppend(imap, "A1", msg), fmt.Sprintf("A1 OK [APPENDUID %d 4] APPEND completed", validity); got != w {
		t.Fatalf("APPEND before the fault: %q, want %q", got, w)
	}
	acked("u@test.example", msg, false)
	imap.imap("F1", `UID STORE 1 +FLAGS.SILENT (\Flagged)`, "OK")

	// The fault.
	truncateWAL(t, dataDir)
	setFSizeLimit(t, pid, fullLimit, normal.Max)

	small, large := diskFullMessage("s2", 1), diskFullMessage("s3", 200<<10)
	for _, m := range [][]byte{small, large} {
		if got := smtpSend(t, smtpC, smtpR, m, "u@test.example"); got[0] != fullSMTP {
			t.Errorf("SMTP DATA of %d octets with the disk full: %q, want %q", len(m), got[0], fullSMTP)
		}
	}
	expect(t, smtpC, smtpR, "NOOP\r\n", "250 ")
	small, large = diskFullMessage("l2", 1), diskFullMessage("l3", 200<<10)
	for _, m := range [][]byte{small, large} {
		got := lmtpSend(t, lmtpC, lmtpR, m, "u@test.example", "v@test.example")
		for i, rcpt := range []string{"u@test.example", "v@test.example"} {
			if w := fmt.Sprintf("452 4.3.1 <%s> Insufficient system storage, try again later", rcpt); got[i] != w {
				t.Errorf("LMTP DATA of %d octets with the disk full, recipient %s: %q, want %q", len(m), rcpt, got[i], w)
			}
		}
	}
	expect(t, lmtpC, lmtpR, "NOOP\r\n", "250 ")
	for _, d := range []struct {
		msg    []byte
		detail string // what failed
	}{
		{diskFullMessage("d2", 1), "mailstore: insufficient storage: sqlite: commit: disk I/O error (778)"},
		{diskFullMessage("d3", 200<<10), "blobfs: spool: write "},
	} {
		stderr, code := deliverWithLimit(t, cfg, fullLimit, d.msg, "u@test.example")
		if w := "letterbox deliver: u@test.example: insufficient-storage: Insufficient system storage, try again later: " + d.detail; code != 75 || !strings.Contains(stderr, w) {
			t.Errorf("deliver of %d octets with the disk full: exit %d, want 75 and %q\n%s", len(d.msg), code, w, stderr)
		}
	}
	appends := []struct {
		tag  string
		msgs [][]byte
	}{
		{"A2", [][]byte{diskFullMessage("i2", 1)}},
		{"A3", [][]byte{diskFullMessage("i3", 200<<10)}},
		{"A4", [][]byte{diskFullMessage("i4", 1), diskFullMessage("i5", 1)}},       // MULTIAPPEND
		{"A5", [][]byte{diskFullMessage("i6", 200<<10), diskFullMessage("i7", 1)}}, // MULTIAPPEND
	}
	for _, a := range appends {
		if got := imapAppend(imap, a.tag, a.msgs...); got != a.tag+" "+fullIMAP {
			t.Errorf("APPEND of %d message(s) with the disk full: %q, want %q", len(a.msgs), got, a.tag+" "+fullIMAP)
		}
	}
	if got := tagged(imap.imap("F2", `UID STORE 1 +FLAGS (\Seen)`, "NO")); got != "F2 "+fullIMAP {
		t.Errorf("STORE with the disk full: %q, want %q", got, "F2 "+fullIMAP)
	}
	// Reading goes on. (SELECT again: the session learns of messages
	// `letterbox deliver` stored only from the database, notifications
	// are in-process.)
	imap.imap("S2", "SELECT INBOX", "OK")
	checkMailbox(t, fetchAll(t, imap, "R1"), want["u@test.example"])
	pop := auditDial(t, p.Addr("pop3"), nil)
	pop.pop3("USER u@test.example", "+OK", false)
	pop.pop3("PASS pw", "+OK", false)
	pop.pop3("RETR 2", "+OK", true) // its \Seen mark fails, RETR does not
	pop.pop3("DELE 1", "+OK", false)
	fmt.Fprintf(pop.c, "QUIT\r\n")
	if got := pop.line(); got != fullPOP3 {
		t.Errorf("POP3 QUIT with the disk full: %q, want %q", got, fullPOP3)
	}
	pop.c.Close()
	// Nothing half-written: no spool file, no probe file.
	for _, pattern := range []string{filepath.Join(dataDir, "blobs", "tmp", "*"), filepath.Join(dataDir, ".space-probe-*")} {
		if left, _ := filepath.Glob(pattern); len(left) != 0 {
			t.Errorf("left behind with the disk full: %v", left)
		}
	}
	select {
	case <-p.done:
		t.Fatalf("the server exited with the disk full; log:\n%s", p.Log())
	default:
	}

	// Space returns: the same process, the same connections.
	setFSizeLimit(t, pid, normal.Cur, normal.Max)

	msg = diskFullMessage("s4", 1)
	if got := smtpSend(t, smtpC, smtpR, msg, "u@test.example"); !strings.HasPrefix(got[0], "250 2.0.0 Ok: delivered as ") {
		t.Fatalf("SMTP after recovery: %q", got)
	}
	acked("u@test.example", msg, true)
	msg = diskFullMessage("l4", 1)
	for i, got := range lmtpSend(t, lmtpC, lmtpR, msg, "u@test.example", "v@test.example") {
		if !strings.HasPrefix(got, "250 2.0.0 <"+[]string{"u", "v"}[i]+"@test.example> Ok: delivered as ") {
			t.Fatalf("LMTP after recovery: %q", got)
		}
	}
	acked("u@test.example", msg, true)
	acked("v@test.example", msg, true)
	msg = diskFullMessage("d4", 1)
	if stderr, code := deliverWithLimit(t, cfg, 0, msg, "u@test.example"); code != 0 {
		t.Fatalf("deliver after recovery: exit %d\n%s", code, stderr)
	}
	acked("u@test.example", msg, true)
	msg = diskFullMessage("i8", 1)
	if got, w := imapAppend(imap, "A6", msg), fmt.Sprintf("A6 OK [APPENDUID %d 8] APPEND completed", validity); got != w {
		t.Errorf("APPEND after recovery: %q, want %q", got, w)
	}
	acked("u@test.example", msg, false)
	multi := [][]byte{diskFullMessage("i9", 1), diskFullMessage("i10", 200<<10)}
	if got, w := imapAppend(imap, "A7", multi...), fmt.Sprintf("A7 OK [APPENDUID %d 9:10] APPEND completed", validity); got != w {
		t.Errorf("MULTIAPPEND after recovery: %q, want %q", got, w)
	}
	acked("u@test.example", multi[0], false)
	acked("u@test.example", multi[1], false)

	// Flags: the refused STORE left them as they were, and so did the
	// \Seen mark of POP3's RETR.
	imap.imap("S3", "SELECT INBOX", "OK")
	got := fetchAll(t, imap, "R2")
	if f := got[1].flags; f != `\Flagged` {
		t.Errorf("flags of UID 1 after the refused STORE: %q, want %q", f, `\Flagged`)
	}
	if f := got[2].flags; f != "" {
		t.Errorf("flags of UID 2 after a RETR with the disk full: %q, want none", f)
	}
	imap.imap("F3", `UID STORE 1 +FLAGS.SILENT (\Seen)`, "OK")
	checkMailbox(t, got, want["u@test.example"])
	st := imap.imap("S1", "STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)", "OK")
	if n, next, v := statusItem(t, st, "MESSAGES"), statusItem(t, st, "UIDNEXT"), statusItem(t, st, "UIDVALIDITY"); n != 10 || next != 11 || v != validity {
		t.Errorf("STATUS after recovery: MESSAGES %d UIDNEXT %d UIDVALIDITY %d, want 10 11 %d", n, next, v, validity)
	}
	imap.imap("O", "LOGOUT", "OK")
	// POP3 deletes again.
	pop = auditDial(t, p.Addr("pop3"), nil)
	pop.pop3("USER v@test.example", "+OK", false)
	pop.pop3("PASS pw", "+OK", false)
	pop.pop3("DELE 1", "+OK", false)
	fmt.Fprintf(pop.c, "QUIT\r\n")
	if got, w := pop.line(), "+OK mx.test.example Letterbox POP3 server signing off (1 message deleted)"; got != w {
		t.Errorf("POP3 QUIT after recovery: %q, want %q", got, w)
	}
	want["v@test.example"] = want["v@test.example"][1:]
	imapV := auditDial(t, p.Addr("imap"), nil)
	imapV.imap("L", "LOGIN v@test.example pw", "OK")
	imapV.imap("S", "SELECT INBOX", "OK")
	checkMailbox(t, fetchAll(t, imapV, "R"), want["v@test.example"])
	imapV.imap("O", "LOGOUT", "OK")
	expect(t, smtpC, smtpR, "QUIT\r\n", "221 ")
	expect(t, lmtpC, lmtpR, "QUIT\r\n", "221 ")

	if code := p.Stop(t); code != 0 {
		t.Fatalf("server exit code %d; log:\n%s", code, p.Log())
	}
	// The log, complete once the server has exited, shows both ways a
	// write failed: the commit of each small message, MULTIAPPEND, STORE,
	// POP3's \Seen mark and expunge (one rolled-back batch each), and the
	// spooling of each large message.
	log := p.Log()
	if n := strings.Count(log, `msg="mailstore: write batch failed, rolled back" ops=1 err="mailstore: insufficient storage: sqlite: commit: disk I/O error (778)`); n != 7 {
		t.Errorf("%d failed commits logged, want 7 (SMTP, LMTP, APPEND, MULTIAPPEND, STORE, POP3 RETR's \\Seen, POP3 QUIT)", n)
	}
	spoolRE := regexp.MustCompile(`err="[^"]*blobfs: spool: write ` + regexp.QuoteMeta(filepath.Join(dataDir, "blobs", "tmp", "spool-")) + `\d+: file too large"`)
	if n := len(spoolRE.FindAllString(log, -1)); n != 4 {
		t.Errorf("%d failed spool writes logged, want 4 (SMTP, LMTP, APPEND, MULTIAPPEND)", n)
	}
	// The refused commits of small messages left their blob files: SMTP,
	// LMTP (one blob for both recipients), deliver, APPEND, and
	// MULTIAPPEND's two.
	checkStoreAfterFault(t, dataDir, want, 6)
	if stdout, stderr, code := letterbox(t, "", "audit", "verify", "--config", cfg); code != 0 {
		t.Errorf("audit verify: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestDiskFullTmpfs is TestDiskFull with a file system that is really
// full: ENOSPC, which SQLite reports as SQLITE_FULL. It mounts a small
// tmpfs, so it needs root with CAP_SYS_ADMIN and is skipped otherwise
// (TestDiskFull runs everywhere).
func TestDiskFullTmpfs(t *testing.T) {
	sqliteOnly(t, "checks the SQLite database after the fault")
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=4m,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", mnt, err)
		}
	})
	dataDir := filepath.Join(mnt, "data")
	cfg := testConfig(t, dataDir, "")
	if _, stderr, code := letterbox(t, "pw\n", "user", "add", "--config", cfg, "u@test.example"); code != 0 {
		t.Fatalf("user add: %s", stderr)
	}
	p := startServer(t, t.TempDir(), "--config", cfg)
	want := map[string][]wantMsg{}
	acked := func(msg []byte, traced bool) {
		want["u@test.example"] = append(want["u@test.example"], wantMsg{uid: len(want["u@test.example"]) + 1, body: msg, traced: traced})
	}
	smtpC, smtpR := dialText(t, p.Addr("smtp"))
	defer smtpC.Close()
	expect(t, smtpC, smtpR, "", "220 ")
	expect(t, smtpC, smtpR, "EHLO client.example\r\n", "250")
	msg := diskFullMessage("s1", 1)
	if got := smtpSend(t, smtpC, smtpR, msg, "u@test.example"); !strings.HasPrefix(got[0], "250 2.0.0 Ok: delivered as ") {
		t.Fatalf("SMTP before the fault: %q", got)
	}
	acked(msg, true)
	imap := auditDial(t, p.Addr("imap"), nil)
	imap.imap("L", "LOGIN u@test.example pw", "OK")
	imap.imap("S", "SELECT INBOX", "OK")

	// Fill the file system: an empty WAL, then a file taking every block
	// left.
	truncateWAL(t, dataDir)
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()
	for chunk := make([]byte, 4096); ; {
		if _, err := filler.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("filling %s: %v", mnt, err)
			}
			break
		}
	}
	fi, err := filler.Stat()
	if err != nil {
		t.Fatal(err)
	}

	// No room for a blob file: the spool fails.
	if got := smtpSend(t, smtpC, smtpR, diskFullMessage("s2", 1), "u@test.example"); got[0] != fullSMTP {
		t.Errorf("SMTP DATA with the file system full: %q, want %q", got[0], fullSMTP)
	}
	if got := imapAppend(imap, "A1", diskFullMessage("i1", 1)); got != "A1 "+fullIMAP {
		t.Errorf("APPEND with the file system full: %q, want %q", got, "A1 "+fullIMAP)
	}
	// No room for the WAL: SQLITE_FULL.
	if got := tagged(imap.imap("F1", `UID STORE 1 +FLAGS (\Flagged)`, "NO")); got != "F1 "+fullIMAP {
		t.Errorf("STORE with the file system full: %q, want %q", got, "F1 "+fullIMAP)
	}
	// Room for one page: a small message's blob file fits, the WAL frame
	// of its commit does not.
	if err := filler.Truncate(fi.Size() - int64(os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	if got := smtpSend(t, smtpC, smtpR, diskFullMessage("s3", 1), "u@test.example"); got[0] != fullSMTP {
		t.Errorf("SMTP DATA with one free page: %q, want %q", got[0], fullSMTP)
	}
	// Space returns.
	filler.Close()
	if err := os.Remove(filler.Name()); err != nil {
		t.Fatal(err)
	}
	msg = diskFullMessage("s4", 1)
	if got := smtpSend(t, smtpC, smtpR, msg, "u@test.example"); !strings.HasPrefix(got[0], "250 2.0.0 Ok: delivered as ") {
		t.Fatalf("SMTP after recovery: %q", got)
	}
	acked(msg, true)
	msg = diskFullMessage("i2", 1)
	if got := imapAppend(imap, "A2", msg); !strings.HasPrefix(got, "A2 OK [APPENDUID ") || !strings.Contains(got, " 3] ") {
		t.Errorf("APPEND after recovery: %q, want UID 3", got)
	}
	acked(msg, false)
	imap.imap("S2", "SELECT INBOX", "OK")
	got := fetchAll(t, imap, "R")
	checkMailbox(t, got, want["u@test.example"])
	if f := got[1].flags; f != "" {
		t.Errorf("flags of UID 1 after the refused STORE: %q, want none", f)
	}
	imap.imap("F2", `UID STORE 1 +FLAGS.SILENT (\Flagged)`, "OK")
	imap.imap("O", "LOGOUT", "OK")
	expect(t, smtpC, smtpR, "QUIT\r\n", "221 ")
	if code := p.Stop(t); code != 0 {
		t.Fatalf("server exit code %d; log:\n%s", code, p.Log())
	}
	// The log is complete once the server has exited.
	log := p.Log()
	if n := strings.Count(log, `msg="mailstore: write batch failed, rolled back" ops=1 err="mailstore: insufficient storage: sqlite: commit: database or disk is full (13)"`); n != 2 {
		t.Errorf("%d failed commits logged, want 2 (STORE, the SMTP delivery with one free page); log:\n%s", n, log)
	}
	spoolRE := regexp.MustCompile(`err="[^"]*blobfs: spool: write ` + regexp.QuoteMeta(filepath.Join(dataDir, "blobs", "tmp", "spool-")) + `\d+: no space left on device"`)
	if n := len(spoolRE.FindAllString(log, -1)); n != 2 {
		t.Errorf("%d failed spool writes logged, want 2 (SMTP, APPEND)", n)
	}
	// The blob file of s3, whose commit was refused.
	checkStoreAfterFault(t, dataDir, want, 1)
}

type wantMsg struct {
	uid    int
	body   []byte
	traced bool // delivered: Return-Path and Received fields prepended
}

// diskFullMessage returns a message with a unique Message-ID of at least
// size octets.
func diskFullMessage(id string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender@example.org\r\nTo: u@test.example\r\nSubject: disk full %s\r\nMessage-ID: <%s@diskfull.test>\r\n\r\n", id, id)
	for i := 0; b.Len() < size || i == 0; i++ {
		fmt.Fprintf(&b, "%s line %d of a message written while the disk fills up\r\n", id, i)
	}
	return b.Bytes()
}

// setFSizeLimit sets the RLIMIT_FSIZE of process pid. Only the soft limit
// changes (the hard one is kept), which needs no privilege.
func setFSizeLimit(t *testing.T, pid int, cur, max uint64) {
	t.Helper()
	if err := unix.Prlimit(pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: cur, Max: max}, nil); err != nil {
		t.Fatalf("prlimit(%d, RLIMIT_FSIZE, %d): %v", pid, cur, err)
	}
}

// truncateWAL checkpoints the server's WAL into the database and empties
// it, from another connection, so that the server's next commit has to
// grow it.
func truncateWAL(t *testing.T, dataDir string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, sqlite.DBName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var busy, logPages, done int
	if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done); err != nil || busy != 0 {
		t.Fatalf("wal_checkpoint(TRUNCATE) = %d, %v", busy, err)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, sqlite.DBName+"-wal")); err != nil || fi.Size() != 0 {
		t.Fatalf("WAL after wal_checkpoint(TRUNCATE): %v, %v", fi, err)
	}
}

// smtpSend runs one SMTP transaction and returns the reply to DATA.
func smtpSend(t *testing.T, c net.Conn, r *bufio.Reader, msg []byte, rcpts ...string) []string {
	t.Helper()
	return sendData(t, c, r, msg, 1, rcpts)
}

// lmtpSend runs one LMTP transaction and returns one reply per recipient.
func lmtpSend(t *testing.T, c net.Conn, r *bufio.Reader, msg []byte, rcpts ...string) []string {
	t.Helper()
	return sendData(t, c, r, msg, len(rcpts), rcpts)
}

func sendData(t *testing.T, c net.Conn, r *bufio.Reader, msg []byte, replies int, rcpts []string) []string {
	t.Helper()
	expect(t, c, r, "MAIL FROM:<sender@example.org>\r\n", "250 ")
	for _, rcpt := range rcpts {
		expect(t, c, r, "RCPT TO:<"+rcpt+">\r\n", "250 ")
	}
	expect(t, c, r, "DATA\r\n", "354 ")
	if _, err := c.Write(append(msg, ".\r\n"...)); err != nil { // no line starts with "."
		t.Fatal(err)
	}
	out := make([]string, replies)
	for i := range out {
		out[i] = strings.TrimSuffix(readReply(t, r), "\r\n")
	}
	return out
}

// deliverWithLimit runs `letterbox deliver` with RLIMIT_FSIZE limit (0:
// unchanged), set after the process started and before it reads the
// message, and returns its standard error and exit code.
func deliverWithLimit(t *testing.T, cfg string, limit uint64, msg []byte, rcpts ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"deliver", "--config", cfg, "-f", "sender@example.org"}, rcpts...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if limit > 0 {
		var cur unix.Rlimit
		if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_FSIZE, nil, &cur); err != nil {
			cmd.Process.Kill()
			t.Fatal(err)
		}
		if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: limit, Max: cur.Max}, nil); err != nil {
			cmd.Process.Kill()
			t.Fatal(err)
		}
	}
	stdin.Write(msg)
	stdin.Close()
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// imapAppend sends APPEND with one synchronising literal per message and
// returns the tagged response. A refusal before a literal is sent ends the
// command.
func imapAppend(a *auditClient, tag string, msgs ...[]byte) string {
	a.t.Helper()
	fmt.Fprintf(a.c, "%s APPEND INBOX", tag)
	for _, m := range msgs {
		fmt.Fprintf(a.c, " {%d}\r\n", len(m))
		for {
			l := a.line()
			if strings.HasPrefix(l, "+") {
				break
			}
			if strings.HasPrefix(l, tag+" ") {
				return l
			}
		}
		if _, err := a.c.Write(m); err != nil {
			a.t.Fatal(err)
		}
	}
	fmt.Fprint(a.c, "\r\n")
	for {
		if l := a.line(); strings.HasPrefix(l, tag+" ") {
			return l
		}
	}
}

func tagged(lines []string) string { return lines[len(lines)-1] }

func statusItem(t *testing.T, lines []string, item string) int64 {
	t.Helper()
	for _, l := range lines {
		if m := regexp.MustCompile(`^\* STATUS .*[( ]` + item + ` (\d+)`).FindStringSubmatch(l); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in %q", item, lines)
	return 0
}

type fetched struct {
	flags string
	body  []byte
}

var (
	fetchUIDRE   = regexp.MustCompile(`[( ]UID (\d+)`)
	fetchFlagsRE = regexp.MustCompile(`[( ]FLAGS \(([^)]*)\)`)
)

// fetchAll fetches UID, FLAGS and the body of every message of the selected
// mailbox, by UID.
func fetchAll(t *testing.T, a *auditClient, tag string) map[int]fetched {
	t.Helper()
	fmt.Fprintf(a.c, "%s UID FETCH 1:* (UID FLAGS BODY.PEEK[])\r\n", tag)
	out := map[int]fetched{}
	for {
		l := a.line()
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				t.Fatalf("FETCH: %q", l)
			}
			return out
		}
		if !strings.HasPrefix(l, "* ") || !strings.Contains(l, " FETCH (") {
			continue
		}
		var body []byte
		if m := literalRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			body = make([]byte, n)
			if _, err := io.ReadFull(a.r, body); err != nil {
				t.Fatal(err)
			}
			l += " " + a.line() // the rest of the response after the literal
		}
		um := fetchUIDRE.FindStringSubmatch(l)
		fm := fetchFlagsRE.FindStringSubmatch(l)
		if um == nil || fm == nil || body == nil {
			t.Fatalf("FETCH response without UID, FLAGS or body: %q", l)
		}
		uid, _ := strconv.Atoi(um[1])
		out[uid] = fetched{fm[1], body}
	}
}

// checkMailbox compares a mailbox with what was acknowledged: the same
// UIDs, every body byte-exact (after the trace fields delivery prepends).
func checkMailbox(t *testing.T, got map[int]fetched, want []wantMsg) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d messages, want %d", len(got), len(want))
	}
	for _, w := range want {
		g, ok := got[w.uid]
		switch {
		case !ok:
			t.Errorf("UID %d missing", w.uid)
		case !w.traced && !bytes.Equal(g.body, w.body):
			t.Errorf("UID %d: body differs from the message appended", w.uid)
		case w.traced && (!bytes.HasSuffix(g.body, w.body) || !tracedPrefix(g.body[:len(g.body)-len(w.body)])):
			t.Errorf("UID %d: body is not the message delivered with trace fields prepended:\n%.300s", w.uid, g.body)
		}
	}
}

// tracedPrefix reports whether p is exactly a Return-Path and a Received
// field.
func tracedPrefix(p []byte) bool {
	return bytes.HasPrefix(p, []byte("Return-Path: <sender@example.org>\r\nReceived: ")) &&
		bytes.Count(p, []byte("\r\nReceived: ")) == 1 && !bytes.Contains(p, []byte("Message-ID:"))
}

// checkStoreAfterFault inspects the stopped server's data directory: the
// database passes integrity_check and holds exactly the acknowledged
// messages of the accounts in want; garbage collection removes exactly the
// orphans blob files the refused commits had moved into place, after which
// every blob file belongs to a message; no spool file is left.
func checkStoreAfterFault(t *testing.T, dataDir string, want map[string][]wantMsg, orphans int) {
	t.Helper()
	total := 0
	for _, msgs := range want {
		total += len(msgs)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dataDir, sqlite.DBName)+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var integrity string
	var rows int
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&integrity); err != nil || integrity != "ok" {
		t.Errorf("integrity_check = %q, %v", integrity, err)
	}
	if err := db.QueryRow("SELECT count(*) FROM messages").Scan(&rows); err != nil || rows != total {
		t.Errorf("%d message rows (%v), want %d", rows, err, total)
	}
	db.Close()

	store, err := sqlite.Open(dataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	referenced := map[string]bool{}
	for name := range want {
		acct, err := store.Account(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		mb, err := store.Mailbox(ctx, acct.ID, mailstore.Inbox)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := store.Messages(ctx, mb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if int(mb.Messages) != len(msgs) || len(msgs) != len(want[name]) {
			t.Errorf("%s: counter %d, %d messages, want %d", name, mb.Messages, len(msgs), len(want[name]))
		}
		for _, m := range msgs {
			referenced[m.BlobID] = true
		}
	}
	if n, err := store.CollectGarbage(ctx); err != nil || n != orphans {
		t.Errorf("CollectGarbage = %d, %v; want the %d blob files of the refused commits", n, err, orphans)
	}
	var files []string
	filepath.WalkDir(filepath.Join(dataDir, "blobs"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	var want2 []string
	for id := range referenced {
		want2 = append(want2, filepath.Join(dataDir, "blobs", id[:2], id))
	}
	slices.Sort(files)
	slices.Sort(want2)
	if !slices.Equal(files, want2) {
		t.Errorf("blob files after collection:\n%s\nwant one per referenced blob:\n%s", strings.Join(files, "\n"), strings.Join(want2, "\n"))
	}
}
