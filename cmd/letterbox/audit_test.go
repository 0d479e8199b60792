package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// auditClient is a raw line-oriented client for IMAP and POP3.
type auditClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func auditDial(t *testing.T, addr string, tlsConfig *tls.Config) *auditClient {
	t.Helper()
	var c net.Conn
	var err error
	if tlsConfig != nil {
		c, err = tls.Dial("tcp", addr, tlsConfig)
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	ac := &auditClient{t: t, c: c, r: bufio.NewReader(c)}
	ac.line() // greeting
	return ac
}

func (a *auditClient) line() string {
	a.t.Helper()
	l, err := a.r.ReadString('\n')
	if err != nil {
		a.t.Fatalf("read: %v (%q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

var literalRE = regexp.MustCompile(`\{(\d+)\}$`)

// imap sends a command and reads up to its tagged response, which must
// start with want ("OK", "NO"); literals are read whole.
func (a *auditClient) imap(tag, cmd, want string) []string {
	a.t.Helper()
	fmt.Fprintf(a.c, "%s %s\r\n", tag, cmd)
	var out []string
	for {
		l := a.line()
		out = append(out, l)
		if m := literalRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			if _, err := io.ReadFull(a.r, make([]byte, n)); err != nil {
				a.t.Fatal(err)
			}
			continue
		}
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" "+want) {
				a.t.Fatalf("%s %s: %q, want %s", tag, cmd, l, want)
			}
			return out
		}
	}
}

// pop3 sends a command and checks that the reply starts with want; multi
// reads a multi-line body after it.
func (a *auditClient) pop3(cmd, want string, multi bool) {
	a.t.Helper()
	fmt.Fprintf(a.c, "%s\r\n", cmd)
	if l := a.line(); !strings.HasPrefix(l, want) {
		a.t.Fatalf("%s: %q, want %s", cmd, l, want)
	}
	for multi && a.line() != "." {
	}
}

// auditRecord is a record as the audit log writes it (JSON field names are
// the format's, read independently of package audit).
type auditRecord struct {
	Seq     uint64 `json:"seq"`
	Time    string `json:"time"`
	Event   string `json:"event"`
	Proto   string `json:"proto"`
	User    string `json:"user"`
	Remote  string `json:"remote"`
	TLS     *bool  `json:"tls"`
	Mech    string `json:"mech"`
	Mailbox string `json:"mailbox"`
	Dest    string `json:"dest"`
	UIDs    string `json:"uids"`
	Count   int    `json:"count"`
	Actor   string `json:"actor"`
	Detail  string `json:"detail"`
	Prev    string `json:"prev"`
}

// TestAuditLog: logins (failed and not, plain and TLS), a body FETCH, an
// EXPUNGE, a MOVE, a POP3 RETR and deletion, and `letterbox user add`
// while the server runs each leave exactly one record with the right
// fields, in one chain that `letterbox audit verify` accepts; editing one
// byte of a record makes verify fail naming that line.
func TestAuditLog(t *testing.T) {
	f := newMailFixture(t) // its `user add` is record 1
	cfg := testConfig(t, f.dataDir, "")
	auditFile := filepath.Join(f.dataDir, "audit", "audit.jsonl")
	f.deliver([][]byte{
		[]byte("From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n"),
		[]byte("From: a@example.org\r\nSubject: two\r\n\r\nsecond\r\n"),
		[]byte("From: a@example.org\r\nSubject: three\r\n\r\nthird\r\n"),
	})

	im := auditDial(t, f.srv.Addr("imap"), nil)
	im.imap("a", "LOGIN "+f.user+" wrong-password", "NO")
	im.imap("b", "LOGOUT", "OK")

	pem, err := os.ReadFile(filepath.Join(f.dataDir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	ims := auditDial(t, f.srv.Addr("imaps"), &tls.Config{RootCAs: pool, ServerName: "mx.test.example"})
	ims.imap("a", "LOGIN "+f.user+" "+f.pass, "OK")
	ims.imap("b", "SELECT INBOX", "OK")
	ims.imap("c", "FETCH 1:3 (FLAGS ENVELOPE)", "OK") // no message bytes: no record
	if got := ims.imap("d", "FETCH 1 BODY[]", "OK"); !strings.Contains(got[0], "BODY[] {") {
		t.Fatalf("FETCH BODY[]: %q", got)
	}
	ims.imap("e", `UID STORE 2 +FLAGS (\Deleted)`, "OK")
	ims.imap("f", "EXPUNGE", "OK")
	ims.imap("h", "UID MOVE 3 Archive", "OK")
	ims.imap("i", "LOGOUT", "OK")

	pop := auditDial(t, f.srv.Addr("pop3"), nil)
	pop.pop3("USER "+f.user, "+OK", false)
	pop.pop3("PASS wrong-password", "-ERR", false)
	pop.pop3("USER "+f.user, "+OK", false)
	pop.pop3("PASS "+f.pass, "+OK", false)
	pop.pop3("RETR 1", "+OK", true)
	pop.pop3("DELE 1", "+OK", false)
	pop.pop3("QUIT", "+OK", false)

	if _, stderr, code := letterbox(t, "bob-Passw0rd\n", "user", "add", "--config", cfg, "bob@test.example"); code != 0 {
		t.Fatalf("user add while serving: %s", stderr)
	}

	stdout, stderr, code := letterbox(t, "", "audit", "verify", "--config", cfg)
	m := regexp.MustCompile(`^audit log intact: 11 records \(seq 1-11\) in 1 file; head 11:([0-9a-f]{64})\n$`).FindStringSubmatch(stdout)
	if code != 0 || m == nil {
		t.Fatalf("audit verify: exit %d\n%s%s", code, stdout, stderr)
	}
	head := m[1]

	data, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	lines = lines[:len(lines)-1]
	tlsOn, tlsOff := true, false
	type want struct {
		event, proto, user, mech, mailbox, dest, uids, detail string
		tls                                                   *bool
	}
	u, bob := f.user, "bob@test.example"
	wants := []want{
		{event: "admin.user_add", proto: "cli", user: u},
		{event: "login_failed", proto: "imap", user: u, mech: "LOGIN", detail: "invalid credentials", tls: &tlsOff},
		{event: "login", proto: "imap", user: u, mech: "LOGIN", tls: &tlsOn},
		{event: "read", proto: "imap", user: u, mailbox: "INBOX", uids: "1", detail: "BODY[]", tls: &tlsOn},
		{event: "expunge", proto: "imap", user: u, mailbox: "INBOX", uids: "2", tls: &tlsOn},
		{event: "move", proto: "imap", user: u, mailbox: "INBOX", dest: "Archive", uids: "3", tls: &tlsOn},
		{event: "login_failed", proto: "pop3", user: u, mech: "USER", detail: "invalid credentials", tls: &tlsOff},
		{event: "login", proto: "pop3", user: u, mech: "USER", tls: &tlsOff},
		{event: "read", proto: "pop3", user: u, mailbox: "INBOX", uids: "1", detail: "RETR 1", tls: &tlsOff},
		{event: "delete", proto: "pop3", user: u, mailbox: "INBOX", uids: "1", tls: &tlsOff},
		{event: "admin.user_add", proto: "cli", user: bob},
	}
	if len(lines) != len(wants) {
		t.Fatalf("%d records, want %d:\n%s", len(lines), len(wants), data)
	}
	prev := strings.Repeat("0", 64)
	for i, l := range lines {
		var r auditRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
		w := wants[i]
		got := want{r.Event, r.Proto, r.User, r.Mech, r.Mailbox, r.Dest, r.UIDs, r.Detail, r.TLS}
		if fmt.Sprint(got.event, got.proto, got.user, got.mech, got.mailbox, got.dest, got.uids, got.detail) !=
			fmt.Sprint(w.event, w.proto, w.user, w.mech, w.mailbox, w.dest, w.uids, w.detail) ||
			(w.tls == nil) != (r.TLS == nil) || (w.tls != nil && *w.tls != *r.TLS) {
			t.Errorf("line %d: %s\nwant %+v", i+1, l, w)
		}
		if r.Seq != uint64(i+1) || r.Prev != prev {
			t.Errorf("line %d: seq %d prev %s, want seq %d prev %s", i+1, r.Seq, r.Prev, i+1, prev)
		}
		if _, err := time.Parse(time.RFC3339Nano, r.Time); err != nil || !strings.HasSuffix(r.Time, "Z") {
			t.Errorf("line %d: time %q", i+1, r.Time)
		}
		if network := r.Proto != "cli"; network != strings.HasPrefix(r.Remote, "127.0.0.1:") {
			t.Errorf("line %d: remote %q", i+1, r.Remote)
		}
		if (r.Proto == "cli") != strings.HasPrefix(r.Actor, "uid=") {
			t.Errorf("line %d: actor %q", i+1, r.Actor)
		}
		if r.UIDs != "" && r.Count != 1 {
			t.Errorf("line %d: count %d", i+1, r.Count)
		}
		h := sha256.Sum256([]byte(strings.TrimSuffix(l, "\n")))
		prev = hex.EncodeToString(h[:])
	}
	if prev != head {
		t.Fatalf("verify's head %s, the last record hashes to %s", head, prev)
	}
	if code := f.srv.Stop(t); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	anchor := "--anchor=11:" + head
	if stdout, _, code := letterbox(t, "", "audit", "verify", "--config", cfg, anchor); code != 0 {
		t.Fatalf("verify with the head as anchor: exit %d %s", code, stdout)
	}

	// One byte of the last record: the chain alone cannot tell; the
	// anchor can.
	edited := bytes.Replace(data, []byte(`"user":"bob@`), []byte(`"user":"rob@`), 1)
	os.WriteFile(auditFile, edited, 0o600)
	if stdout, _, code := letterbox(t, "", "audit", "verify", "--config", cfg); code != 0 {
		t.Fatalf("edited last record without anchor: exit %d %s", code, stdout)
	}
	stdout, _, code = letterbox(t, "", "audit", "verify", "--config", cfg, anchor)
	if code != 1 || !strings.Contains(stdout, auditFile+":11 (seq 11): anchor mismatch") {
		t.Fatalf("edited last record with anchor: exit %d %s", code, stdout)
	}

	// One byte of record 4 (the FETCH): verify names that line.
	i := bytes.Index(data, []byte(`"detail":"BODY[]"`))
	edited = bytes.Clone(data)
	edited[i+len(`"detail":"B`)] = 'b'
	os.WriteFile(auditFile, edited, 0o600)
	stdout, _, code = letterbox(t, "", "audit", "verify", "--config", cfg)
	if code != 1 || !strings.HasPrefix(stdout, "audit log BROKEN at "+auditFile+":4 (seq 4): edited record") ||
		!strings.HasSuffix(stdout, "\n3 records verified before it\n") {
		t.Fatalf("edited record 4: exit %d\n%s", code, stdout)
	}
}

func TestAuditVerifyUsage(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("data_dir=\"d\"\ndomains=[\"x.example\"]\n[audit]\nmax_file_size = 10\n"), 0o644)
	if _, stderr, code := letterbox(t, "", "audit", "verify", "--config", bad); code != 2 || !strings.Contains(stderr, "bad.toml: audit.max_file_size") {
		t.Fatalf("bad config: exit %d %q", code, stderr)
	}
	if _, _, code := letterbox(t, "", "audit"); code != 64 {
		t.Fatalf("audit without subcommand: exit %d", code)
	}
	cfg := testConfig(t, filepath.Join(dir, "data"), "")
	if _, _, code := letterbox(t, "", "audit", "verify", "--config", cfg, "--anchor", "nonsense"); code != 64 {
		t.Fatalf("bad anchor: exit %d", code)
	}
	if _, stderr, code := letterbox(t, "", "audit", "verify", "--config", cfg); code != 1 || !strings.Contains(stderr, "no audit log at") {
		t.Fatalf("no audit log: exit %d %q", code, stderr)
	}
	// With auditing off, account changes leave no record.
	off := testConfig(t, filepath.Join(dir, "data2"), "[audit]\nenabled = false\n")
	if _, stderr, code := letterbox(t, "pw\n", "user", "add", "--config", off, "x@test.example"); code != 0 {
		t.Fatalf("user add: %s", stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "data2", "audit")); !os.IsNotExist(err) {
		t.Fatalf("audit dir with auditing off: %v", err)
	}
}
