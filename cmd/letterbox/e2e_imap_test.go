package main

// End-to-end tests of the IMAP server with real, independent clients
// (mbsync, offlineimap, curl, Python's imaplib and poplib) against the real
// binary. Like e2e_test.go they skip when a client is not installed, unless
// LETTERBOX_E2E=1, where a missing client is a failure.
//
// The server side is always checked through a second, independent IMAP
// client: testdata/imapctl.py (Python's imaplib).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// srvMsg is one message as imapctl.py dumps it.
type srvMsg struct {
	UID   int      `json:"uid"`
	Flags []string `json:"flags"`
	Body  []byte   `json:"body"` // base64 in the JSON
}

// imapCtl runs testdata/imapctl.py with ops (each a JSON array) on one
// IMAP session and returns the dumps it printed, in order.
func (f *mailFixture) imapCtl(ops ...[]any) []map[string][]srvMsg {
	f.t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		f.t.Fatal("python3 is required by the test suite")
	}
	host, port, _ := net.SplitHostPort(f.srv.Addr("imap"))
	args := []string{"testdata/imapctl.py", host, port, f.user, f.pass}
	for _, op := range ops {
		b, _ := json.Marshal(op)
		args = append(args, string(b))
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(py, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		f.t.Fatalf("imapctl.py %v: %v\n%s\nserver log:\n%s", args[5:], err, stderr.String(), f.srv.Log())
	}
	var out []map[string][]srvMsg
	dec := json.NewDecoder(&stdout)
	for {
		var m map[string][]srvMsg
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			f.t.Fatalf("imapctl.py output: %v", err)
		}
		for box, msgs := range m {
			for i := range msgs {
				msgs[i].Flags = withoutRecent(msgs[i].Flags)
			}
			m[box] = msgs
		}
		out = append(out, m)
	}
	return out
}

// dump returns the server's view of boxes.
func (f *mailFixture) dump(boxes ...string) map[string][]srvMsg {
	f.t.Helper()
	op := []any{"dump"}
	for _, b := range boxes {
		op = append(op, b)
	}
	return f.imapCtl(op)[0]
}

func withoutRecent(flags []string) []string {
	out := []string{}
	for _, fl := range flags {
		if fl != `\Recent` {
			out = append(out, fl)
		}
	}
	sort.Strings(out)
	return out
}

func appendOp(box, flags string, body []byte) []any {
	return []any{"append", box, flags, base64.StdEncoding.EncodeToString(body)}
}

// bySubject finds the one server message with the given Subject.
func bySubject(t *testing.T, msgs []srvMsg, subject string) srvMsg {
	t.Helper()
	var found []srvMsg
	for _, m := range msgs {
		if bytes.Contains(m.Body, []byte("\r\nSubject: "+subject+"\r\n")) {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d server messages with subject %q, want 1", len(found), subject)
	}
	return found[0]
}

func hasSubject(body []byte, subject string) bool {
	return bytes.Contains(body, []byte("\nSubject: "+subject+"\r\n")) ||
		bytes.Contains(body, []byte("\nSubject: "+subject+"\n"))
}

// localMsg is one message file of a Maildir folder.
type localMsg struct {
	Path  string
	Flags string // the letters after ":2,"
	Body  []byte
}

// maildirMsgs lists the messages of a Maildir folder (cur and new).
func maildirMsgs(t *testing.T, dir string) []localMsg {
	t.Helper()
	var out []localMsg
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			p := filepath.Join(dir, sub, e.Name())
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			_, info, _ := strings.Cut(e.Name(), ":2,")
			out = append(out, localMsg{Path: p, Flags: info, Body: b})
		}
	}
	return out
}

func localBySubject(t *testing.T, dir, subject string) localMsg {
	t.Helper()
	var found []localMsg
	for _, m := range maildirMsgs(t, dir) {
		if hasSubject(m.Body, subject) {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d local messages with subject %q in %s, want 1", len(found), subject, dir)
	}
	return found[0]
}

// setLocalFlags renames a Maildir message into cur/ with the given flags,
// as a mail reader does.
func setLocalFlags(t *testing.T, m localMsg, flags string) {
	t.Helper()
	base, _, _ := strings.Cut(filepath.Base(m.Path), ":2,")
	dst := filepath.Join(filepath.Dir(filepath.Dir(m.Path)), "cur", base+":2,"+flags)
	if err := os.Rename(m.Path, dst); err != nil {
		t.Fatal(err)
	}
}

// maildirFlags maps IMAP system flags to Maildir info letters (sorted, as
// the Maildir spec requires).
func maildirFlags(flags []string) string {
	letter := map[string]string{`\Draft`: "D", `\Flagged`: "F", `\Answered`: "R", `\Seen`: "S", `\Deleted`: "T"}
	var out []string
	for _, f := range flags {
		if l, ok := letter[f]; ok {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "")
}

// tuidRE matches the X-TUID header mbsync (isync 1.4) inserts as the last
// header field of every message it copies, in either direction, to find
// it again after an interrupted run.
var tuidRE = regexp.MustCompile(`\nX-TUID: [A-Za-z0-9+/]{12}\r?\n(\r?\n)`)

// withoutTUID removes mbsync's X-TUID header field, and only that: the
// line must be the last one of the header.
func withoutTUID(b []byte) []byte {
	return tuidRE.ReplaceAll(b, []byte("\n$1"))
}

func crlfToLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }
func lfToCRLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }

// assertMaildirMirrors checks that each Maildir folder under root holds
// exactly the server's messages of that mailbox: the same octets with CRLF
// turned into LF (the Maildir convention both mbsync and offlineimap
// follow; nothing else changed) and the same flags.
//
// norm is applied to both sides before comparing (nil: identity); the
// mbsync test passes withoutTUID.
func assertMaildirMirrors(t *testing.T, what string, server map[string][]srvMsg, root string, ignoreFlags string, norm func([]byte) []byte) {
	t.Helper()
	if norm == nil {
		norm = func(b []byte) []byte { return b }
	}
	strip := func(s string) string {
		return strings.Map(func(r rune) rune {
			if strings.ContainsRune(ignoreFlags, r) {
				return -1
			}
			return r
		}, s)
	}
	for box, msgs := range server {
		var want, got []string
		for _, m := range msgs {
			if bytes.Contains(bytes.ReplaceAll(m.Body, []byte("\r\n"), nil), []byte("\n")) {
				t.Fatalf("%s: server message %s UID %d has a bare LF", what, box, m.UID)
			}
			want = append(want, fmt.Sprintf("[%s] %s", strip(maildirFlags(m.Flags)), norm(crlfToLF(m.Body))))
		}
		for _, m := range maildirMsgs(t, filepath.Join(root, box)) {
			got = append(got, fmt.Sprintf("[%s] %s", strip(m.Flags), norm(m.Body)))
		}
		sort.Strings(want)
		sort.Strings(got)
		if len(got) != len(want) {
			t.Fatalf("%s: %s has %d local messages, server has %d:\nlocal: %.300q\nserver: %.300q", what, box, len(got), len(want), got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: %s differs:\n--- local\n%.600q\n--- server (CRLF->LF)\n%.600q", what, box, got[i], want[i])
			}
		}
	}
}

func mkTestMaildir(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

func writeTestFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func e2eMsg(subject, body string) []byte {
	return []byte("From: e2e@test.example\r\nTo: friend@example.org\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@test.example>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\n" + body)
}

// mbsyncRC is an mbsync (isync 1.4) configuration syncing boxes of f's
// account with a Maildir under root. The far side is reached over STARTTLS,
// trusting exactly the server's generated certificate.
func mbsyncRC(f *mailFixture, root string, compress bool, boxes ...string) string {
	host, port, _ := net.SplitHostPort(f.srv.Addr("imap"))
	ext := "DisableExtension COMPRESS=DEFLATE\n"
	if compress {
		ext = ""
	}
	return fmt.Sprintf(`IMAPAccount letterbox
Host %s
Port %s
User %s
Pass %s
SSLType STARTTLS
CertificateFile %s
%sTimeout 10

IMAPStore far
Account letterbox

MaildirStore near
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel lb
Far :far:
Near :near:
Patterns %s
Create Both
Expunge Both
SyncState *
Sync All
`, host, port, f.user, f.pass, filepath.Join(f.dataDir, "tls", "cert.pem"), ext, root, root, strings.Join(boxes, " "))
}

func runMbsync(t *testing.T, f *mailFixture, mbsync, rc string) string {
	t.Helper()
	dir := t.TempDir()
	rcPath := filepath.Join(dir, "mbsyncrc")
	writeTestFile(t, rcPath, []byte(rc))
	cmd := exec.Command(mbsync, "-V", "-c", rcPath, "lb")
	cmd.Env = append(os.Environ(), "HOME="+dir)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mbsync: %v (after %v)\n%s\nserver log:\n%s", err, time.Since(start), out, f.srv.Log())
	}
	return string(out)
}

// TestMbsync: two-way sync of INBOX, Sent, Archive and a folder created on
// the Maildir side, with flags, deletions and new messages in both
// directions.
func TestMbsync(t *testing.T) {
	mbsync := needProgram(t, "mbsync")
	f := newMailFixture(t)
	boxes := []string{"INBOX", "Sent", "Archive", "Projects"}

	// Server side: four deliveries, two sent messages, one archived.
	f.deliver(e2eMessages("mb"))
	f.imapCtl(
		appendOp("Sent", `(\Seen)`, e2eMsg("sent one", "first\r\n.\r\n")),
		appendOp("Sent", `(\Seen \Answered)`, e2eMsg("sent two", "second\r\n")),
		appendOp("Archive", "", e2eMsg("archived one", "old\r\n")),
	)
	// Maildir side: a folder that does not exist on the server yet.
	root := filepath.Join(t.TempDir(), "Mail")
	mkTestMaildir(t, filepath.Join(root, "Projects"))
	proj1 := crlfToLF(e2eMsg("project one", "plan\r\n\r\n-- \r\nme\r\n"))
	proj2 := crlfToLF(e2eMsg("project two", "Grüße\r\n"))
	writeTestFile(t, filepath.Join(root, "Projects", "new", "1795000000.1.local"), proj1)
	writeTestFile(t, filepath.Join(root, "Projects", "cur", "1795000000.2.local:2,S"), proj2)

	rc := mbsyncRC(f, root, false, boxes...)

	// 1. Initial sync: pull everything, push the new folder.
	runMbsync(t, f, mbsync, rc)
	srv := f.dump(boxes...)
	sameMessages(t, "server INBOX", srvBodies(srv["INBOX"]), f.stored())
	if len(srv["INBOX"]) != 4 || len(srv["Sent"]) != 2 || len(srv["Archive"]) != 1 {
		t.Fatalf("server after first sync: INBOX %d, Sent %d, Archive %d messages", len(srv["INBOX"]), len(srv["Sent"]), len(srv["Archive"]))
	}
	// mbsync stores Maildir messages with LF line ends and uploads them
	// with CRLF: the server has the local octets with LF -> CRLF exactly.
	sameMessages(t, "Projects on the server", tuidOnce(t, srvBodies(srv["Projects"])), [][]byte{lfToCRLF(proj1), lfToCRLF(proj2)})
	if fl := bySubject(t, srv["Projects"], "project two").Flags; strings.Join(fl, " ") != `\Seen` {
		t.Fatalf("project two on the server has flags %v, want [\\Seen]", fl)
	}
	for _, m := range maildirMsgs(t, filepath.Join(root, "INBOX")) {
		if bytes.Contains(m.Body, []byte("\r")) {
			t.Fatalf("mbsync kept a CR in %s", m.Path)
		}
	}
	assertMaildirMirrors(t, "first sync", srv, root, "", withoutTUID)

	// 2. Local changes, pushed: flags, a deletion, a trashed message
	// (expunged on both sides), a new message.
	setLocalFlags(t, localBySubject(t, filepath.Join(root, "INBOX"), "mb one"), "S")
	setLocalFlags(t, localBySubject(t, filepath.Join(root, "INBOX"), "mb two"), "F")
	os.Remove(localBySubject(t, filepath.Join(root, "INBOX"), "mb three").Path)
	setLocalFlags(t, localBySubject(t, filepath.Join(root, "Sent"), "sent one"), "ST")
	setLocalFlags(t, localBySubject(t, filepath.Join(root, "Projects"), "project one"), "F")
	arch2 := crlfToLF(e2eMsg("archived two", "filed locally\r\n.\r\n..\r\n"))
	writeTestFile(t, filepath.Join(root, "Archive", "new", "1795000000.3.local"), arch2)

	runMbsync(t, f, mbsync, rc)
	srv = f.dump(boxes...)
	checkFlags := func(box, subject, want string) {
		t.Helper()
		if got := strings.Join(bySubject(t, srv[box], subject).Flags, " "); got != want {
			t.Fatalf("%s %q on the server: flags %q, want %q", box, subject, got, want)
		}
	}
	checkFlags("INBOX", "mb one", `\Seen`)
	checkFlags("INBOX", "mb two", `\Flagged`)
	checkFlags("INBOX", "mb four", "")
	checkFlags("Projects", "project one", `\Flagged`)
	checkFlags("Sent", "sent two", `\Answered \Seen`)
	if len(srv["INBOX"]) != 3 || len(srv["Sent"]) != 1 {
		t.Fatalf("server after pushing deletions: INBOX %d (want 3), Sent %d (want 1)", len(srv["INBOX"]), len(srv["Sent"]))
	}
	sameMessages(t, "Archive on the server", srvBodies(srv["Archive"])[:1], [][]byte{e2eMsg("archived one", "old\r\n")})
	sameMessages(t, "Archive on the server", tuidOnce(t, srvBodies(srv["Archive"])[1:]), [][]byte{lfToCRLF(arch2)})
	assertMaildirMirrors(t, "after pushing local changes", srv, root, "", withoutTUID)

	// 3. Server-side changes by another client, and new mail: pulled.
	one := bySubject(t, srv["INBOX"], "mb one")
	two := bySubject(t, srv["INBOX"], "mb two")
	four := bySubject(t, srv["INBOX"], "mb four")
	arch1 := bySubject(t, srv["Archive"], "archived one")
	f.imapCtl(
		[]any{"store", "INBOX", one.UID, "FLAGS", `(\Flagged)`},
		[]any{"store", "INBOX", four.UID, "+FLAGS", `(\Seen \Answered)`},
		[]any{"expunge", "INBOX", two.UID},
		[]any{"expunge", "Archive", arch1.UID},
	)
	f.deliver(e2eMessages("mb2")[:1])
	runMbsync(t, f, mbsync, rc)
	srv = f.dump(boxes...)
	if len(srv["INBOX"]) != 3 || len(srv["Archive"]) != 1 {
		t.Fatalf("server after its own changes: INBOX %d (want 3), Archive %d (want 1)", len(srv["INBOX"]), len(srv["Archive"]))
	}
	if m := localBySubject(t, filepath.Join(root, "INBOX"), "mb one"); m.Flags != "F" {
		t.Fatalf("local mb one: flags %q, want F", m.Flags)
	}
	if m := localBySubject(t, filepath.Join(root, "INBOX"), "mb four"); m.Flags != "RS" {
		t.Fatalf("local mb four: flags %q, want RS", m.Flags)
	}
	localBySubject(t, filepath.Join(root, "INBOX"), "mb2 one")
	assertMaildirMirrors(t, "after pulling server changes", srv, root, "", withoutTUID)

	// 4. Nothing changed: another run changes nothing on either side.
	before := maildirNames(t, root, boxes)
	runMbsync(t, f, mbsync, rc)
	if after := maildirNames(t, root, boxes); after != before {
		t.Fatalf("idle mbsync run changed the Maildir:\nbefore %s\nafter  %s", before, after)
	}
	srv2 := f.dump(boxes...)
	for _, b := range boxes {
		if fmt.Sprint(srvSummary(srv2[b])) != fmt.Sprint(srvSummary(srv[b])) {
			t.Fatalf("idle mbsync run changed %s on the server:\nbefore %v\nafter  %v", b, srvSummary(srv[b]), srvSummary(srv2[b]))
		}
	}
}

// tuidOnce checks that each message carries exactly one X-TUID field, as
// the last header field, and returns them without it.
func tuidOnce(t *testing.T, msgs [][]byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range msgs {
		if n := len(tuidRE.FindAllIndex(m, -1)); n != 1 {
			t.Fatalf("%d X-TUID fields at the end of the header, want 1:\n%.400q", n, m)
		}
		out = append(out, withoutTUID(m))
	}
	return out
}

func srvBodies(msgs []srvMsg) [][]byte {
	var out [][]byte
	for _, m := range msgs {
		out = append(out, m.Body)
	}
	return out
}

func srvSummary(msgs []srvMsg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprintf("%d %v %d", m.UID, m.Flags, len(m.Body)))
	}
	return out
}

func maildirNames(t *testing.T, root string, boxes []string) string {
	t.Helper()
	var names []string
	for _, b := range boxes {
		for _, m := range maildirMsgs(t, filepath.Join(root, b)) {
			rel, _ := filepath.Rel(root, m.Path)
			names = append(names, rel)
		}
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// compressPy compresses one command with the zlib flush mode given as
// argv[3] after COMPRESS DEFLATE and prints the decompressed answer.
const compressPy = `
import socket, sys, zlib
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.settimeout(60)
f = s.makefile("rb")
f.readline()
s.sendall(b"1 LOGIN e2e@test.example e2e-Passw0rd\r\n"); f.readline()
s.sendall(b"2 COMPRESS DEFLATE\r\n"); print(f.readline().decode().strip())
c = zlib.compressobj(6, zlib.DEFLATED, -15)
d = zlib.decompressobj(-15)
s.sendall(c.compress(b"3 NOOP\r\n") + c.flush(getattr(zlib, sys.argv[3])))
got = b""
try:
    while b"3 OK" not in got:
        data = s.recv(4096)
        if not data:
            break
        got += d.decompress(data)
except socket.timeout:
    print("timeout")
print(got.decode().strip())
`

// TestIMAPCompressPartialFlush: RFC 4978 leaves the flush mode to the
// sender; zlib's Z_PARTIAL_FLUSH (used by mbsync) ends the data in a
// complete Huffman block followed by a partial empty block, and a
// conforming inflater has everything. The server must answer in every
// flush mode, and mbsync, which negotiates COMPRESS=DEFLATE whenever the
// server advertises it, must sync both ways over a compressed session.
func TestIMAPCompressPartialFlush(t *testing.T) {
	f := newMailFixture(t)
	host, port, _ := net.SplitHostPort(f.srv.Addr("imap"))
	for _, mode := range []string{"Z_SYNC_FLUSH", "Z_FULL_FLUSH", "Z_PARTIAL_FLUSH"} {
		t.Run(mode, func(t *testing.T) {
			out, err := exec.Command("python3", "-c", compressPy, host, port, mode).CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if want := "2 OK DEFLATE active\n3 OK NOOP completed\n"; string(out) != want {
				t.Fatalf("got\n%s\nwant\n%s", out, want)
			}
		})
	}
	t.Run("mbsync", func(t *testing.T) {
		mbsync := needProgram(t, "mbsync")
		f.deliver(e2eMessages("mbc"))
		root := filepath.Join(t.TempDir(), "Mail")
		mkTestMaildir(t, filepath.Join(root, "INBOX"))
		// A large local message: mbsync uploads it as a compressed
		// APPEND literal, in Z_PARTIAL_FLUSH pieces.
		local := crlfToLF(e2eMsg("local big", strings.Repeat("uploaded over DEFLATE, line by line\r\n", 20000)))
		writeTestFile(t, filepath.Join(root, "INBOX", "new", "1795000000.1.local"), local)
		logStart := len(f.srv.Log())
		runMbsync(t, f, mbsync, mbsyncRC(f, root, true, "INBOX"))
		// Each session mbsync opened switched to DEFLATE (the server logs
		// "compress" on COMPRESS's OK, after which it understands nothing
		// but DEFLATE), so the sync cannot have run uncompressed.
		log := f.srv.Log()[logStart:]
		logins := len(regexp.MustCompile(`msg=login .*user=`+regexp.QuoteMeta(f.user)).FindAllString(log, -1))
		compressed := len(regexp.MustCompile(`msg=compress .*algorithm=DEFLATE`).FindAllString(log, -1))
		if logins == 0 || compressed != logins {
			t.Fatalf("mbsync: %d logins, %d COMPRESS DEFLATE; server log:\n%s", logins, compressed, log)
		}
		srv := f.dump("INBOX")
		if len(srv["INBOX"]) != 5 {
			t.Fatalf("server INBOX has %d messages after the sync, want 4 delivered + 1 uploaded", len(srv["INBOX"]))
		}
		sameMessages(t, "uploaded message", tuidOnce(t, srvBodies(srv["INBOX"])[4:]), [][]byte{lfToCRLF(local)})
		assertMaildirMirrors(t, "compressed sync", srv, root, "", withoutTUID)
	})
}

func offlineimapRC(f *mailFixture, work string, folders ...string) string {
	host, port, _ := net.SplitHostPort(f.srv.Addr("imap"))
	q := make([]string, len(folders))
	for i, b := range folders {
		q[i] = fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf(`[general]
accounts = lb
metadata = %s/meta

[Account lb]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = %s/Mail

[Repository remote]
type = IMAP
remotehost = %s
remoteport = %s
remoteuser = %s
remotepass = %s
ssl = no
starttls = no
folderfilter = lambda f: f in [%s]
`, work, work, host, port, f.user, f.pass, strings.Join(q, ", "))
}

// TestOfflineimap: pull, then one flag change and one deletion in each
// direction, for INBOX and Sent.
func TestOfflineimap(t *testing.T) {
	offlineimap := needProgram(t, "offlineimap")
	f := newMailFixture(t)
	boxes := []string{"INBOX", "Sent"}
	f.deliver(e2eMessages("oi"))
	f.imapCtl(appendOp("Sent", `(\Seen)`, e2eMsg("sent one", "first\r\n")), appendOp("Sent", "", e2eMsg("sent two", "second\r\n")))
	work := t.TempDir()
	rcPath := filepath.Join(work, "offlineimaprc")
	writeTestFile(t, rcPath, []byte(offlineimapRC(f, work, boxes...)))
	root := filepath.Join(work, "Mail")
	run := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, offlineimap, "-c", rcPath, "-o", "-u", "basic")
		cmd.Env = append(os.Environ(), "HOME="+work)
		out, err := cmd.CombinedOutput()
		// offlineimap exits 0 even when a folder failed; errors are
		// reported as "ERROR" lines.
		if err != nil || bytes.Contains(out, []byte("ERROR")) {
			t.Fatalf("offlineimap: %v\n%s\nserver log:\n%s", err, out, f.srv.Log())
		}
	}

	run()
	srv := f.dump(boxes...)
	sameMessages(t, "server INBOX", srvBodies(srv["INBOX"]), f.stored())
	assertMaildirMirrors(t, "offlineimap pull", srv, root, "", nil)

	// Local: flag one message, delete another.
	setLocalFlags(t, localBySubject(t, filepath.Join(root, "INBOX"), "oi one"), "FS")
	os.Remove(localBySubject(t, filepath.Join(root, "Sent"), "sent two").Path)
	run()
	srv = f.dump(boxes...)
	if got := strings.Join(bySubject(t, srv["INBOX"], "oi one").Flags, " "); got != `\Flagged \Seen` {
		t.Fatalf("oi one on the server: flags %q, want \\Flagged \\Seen", got)
	}
	if len(srv["Sent"]) != 1 || !hasSubject(srv["Sent"][0].Body, "sent one") {
		t.Fatalf("Sent on the server after a local deletion: %v", srvSummary(srv["Sent"]))
	}
	assertMaildirMirrors(t, "offlineimap push", srv, root, "", nil)

	// Server: flag one message, expunge another.
	two := bySubject(t, srv["INBOX"], "oi two")
	three := bySubject(t, srv["INBOX"], "oi three")
	f.imapCtl([]any{"store", "INBOX", two.UID, "+FLAGS", `(\Answered)`}, []any{"expunge", "INBOX", three.UID})
	run()
	srv = f.dump(boxes...)
	if m := localBySubject(t, filepath.Join(root, "INBOX"), "oi two"); m.Flags != "R" {
		t.Fatalf("local oi two: flags %q, want R", m.Flags)
	}
	if len(maildirMsgs(t, filepath.Join(root, "INBOX"))) != 3 {
		t.Fatalf("local INBOX after a server expunge: %d messages, want 3", len(maildirMsgs(t, filepath.Join(root, "INBOX"))))
	}
	assertMaildirMirrors(t, "offlineimap pull of server changes", srv, root, "", nil)
}

// TestCurlIMAP: curl's IMAP client lists the mailboxes and fetches every
// message byte-exact by UID, in plain text, over STARTTLS and over
// implicit TLS, verifying the generated certificate.
func TestCurlIMAP(t *testing.T) {
	curl := needProgram(t, "curl")
	f := newMailFixture(t)
	f.deliver(e2eMessages("cu"))
	want := f.stored()
	cert := filepath.Join(f.dataDir, "tls", "cert.pem")
	_, port, _ := net.SplitHostPort(f.srv.Addr("imap"))
	_, tlsPort, _ := net.SplitHostPort(f.srv.Addr("imaps"))
	run := func(url string, extra ...string) []byte {
		t.Helper()
		args := append([]string{"-sS", "--max-time", "30", "--user", f.user + ":" + f.pass,
			"--resolve", "mx.test.example:" + port + ":127.0.0.1", "--resolve", "mx.test.example:" + tlsPort + ":127.0.0.1"}, extra...)
		out, err := exec.Command(curl, append(args, url)...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("curl %s: %v\n%s\nserver log:\n%s", url, err, stderr, f.srv.Log())
		}
		return out
	}
	listRE := regexp.MustCompile(`^\* LIST \(([^)]*)\) "/" "?([^"\r]+)"?\r$`)
	for _, c := range []struct {
		name, base string
		extra      []string
	}{
		{"plain", "imap://127.0.0.1:" + port + "/", nil},
		{"starttls", "imap://mx.test.example:" + port + "/", []string{"--ssl-reqd", "--cacert", cert}},
		{"imaps", "imaps://mx.test.example:" + tlsPort + "/", []string{"--cacert", cert}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var names []string
			for _, line := range strings.SplitAfter(strings.TrimSuffix(string(run(c.base, c.extra...)), "\n"), "\n") {
				m := listRE.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
				if m == nil {
					t.Fatalf("curl list: unexpected line %q", line)
				}
				names = append(names, m[2])
			}
			sort.Strings(names) // LIST order is the server's choice
			if got := strings.Join(names, " "); got != "Archive Drafts INBOX Junk Sent Trash" {
				t.Fatalf("curl list: mailboxes %q", got)
			}
			for i, w := range want {
				got := run(fmt.Sprintf("%sINBOX;UID=%d", c.base, i+1), c.extra...)
				if !bytes.Equal(got, w) {
					t.Fatalf("curl fetch UID %d: got %d octets, want %d:\n%.300q\nwant\n%.300q", i+1, len(got), len(w), got, w)
				}
			}
		})
	}
	// curl fetches with UID FETCH n BODY[] (not BODY.PEEK[]) in a
	// read-write SELECT: the server sets \Seen (RFC 9051 §6.4.5).
	for _, m := range f.dump("INBOX")["INBOX"] {
		if strings.Join(m.Flags, " ") != `\Seen` {
			t.Fatalf("UID %d after curl's FETCH BODY[]: flags %v, want [\\Seen]", m.UID, m.Flags)
		}
	}
}

// idlePy logs in, selects INBOX, enters IDLE and prints every line the
// server sends, as it arrives.
const idlePy = `
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
f = s.makefile("rb")
def say(line):
    s.sendall(line.encode() + b"\r\n")
def upto(tag):
    while True:
        l = f.readline()
        if not l:
            sys.exit("connection closed")
        if l.startswith(tag.encode() + b" "):
            if not l.startswith(tag.encode() + b" OK"):
                sys.exit(l.decode())
            return
f.readline()
say("a LOGIN %s %s" % (sys.argv[3], sys.argv[4])); upto("a")
say("b SELECT INBOX"); upto("b")
say("c IDLE")
for l in f:
    print(l.decode().rstrip("\r\n"), flush=True)
`

// TestIMAPIdleCrossProtocol: a session in IDLE sees, within a second each,
// a delivery over LMTP, a flag change by a second IMAP session, and an
// expunge by a POP3 DELE + QUIT.
func TestIMAPIdleCrossProtocol(t *testing.T) {
	f := newMailFixture(t)
	f.deliver(e2eMessages("idle")[:2])
	host, port, _ := net.SplitHostPort(f.srv.Addr("imap"))
	cmd := exec.Command("python3", "-c", idlePy, host, port, f.user, f.pass)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(what string, within time.Duration, re *regexp.Regexp) {
		t.Helper()
		deadline := time.After(within)
		var seen []string
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s: IDLE session ended; seen %q; stderr:\n%s\nserver log:\n%s", what, seen, stderr.String(), f.srv.Log())
				}
				if re.MatchString(l) {
					return
				}
				seen = append(seen, l)
			case <-deadline:
				t.Fatalf("%s: no %q within %v; IDLE session saw %q\nserver log:\n%s", what, re, within, seen, f.srv.Log())
			}
		}
	}
	expect("IDLE", 10*time.Second, regexp.MustCompile(`^\+ `))

	// (a) Delivery over LMTP.
	lmtpDeliver(t, f.srv.Addr("lmtp"), f.user, e2eMsg("over lmtp", "hello\r\n"))
	expect("LMTP delivery", time.Second, regexp.MustCompile(`^\* 3 EXISTS$`))

	// (b) A flag change by another IMAP session.
	f.imapCtl([]any{"store", "INBOX", 1, "+FLAGS", `(\Flagged)`})
	expect("flag change", time.Second, regexp.MustCompile(`^\* 1 FETCH \(.*FLAGS \([^)]*\\Flagged`))

	// (c) POP3 DELE of message 2, committed at QUIT.
	out, err := exec.Command("python3", "-c", `
import poplib, sys
host, port = sys.argv[1].rsplit(":", 1)
p = poplib.POP3(host, int(port))
p.user(sys.argv[2]); p.pass_(sys.argv[3])
p.dele(2)
print(p.quit().decode())
`, f.srv.Addr("pop3"), f.user, f.pass).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "+OK") {
		t.Fatalf("poplib: %v\n%s", err, out)
	}
	expect("POP3 deletion", time.Second, regexp.MustCompile(`^\* 2 EXPUNGE$`))

	got := f.dump("INBOX")["INBOX"]
	if len(got) != 2 || !hasSubject(got[0].Body, "idle one") || !hasSubject(got[1].Body, "over lmtp") {
		t.Fatalf("INBOX at the end: %v", srvSummary(got))
	}
}

// lmtpDeliver delivers one message over LMTP (RFC 2033).
func lmtpDeliver(t *testing.T, addr, rcpt string, body []byte) {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := c.ReadResponse(code); err != nil {
			t.Fatalf("LMTP %q: %v", format, err)
		}
	}
	step(220, "")
	step(250, "LHLO client.example")
	step(250, "MAIL FROM:<sender@example.org>")
	step(250, "RCPT TO:<%s>", rcpt)
	step(354, "DATA")
	w := c.DotWriter()
	w.Write(body)
	w.Close()
	step(250, "") // one reply per accepted recipient
	step(221, "QUIT")
}
