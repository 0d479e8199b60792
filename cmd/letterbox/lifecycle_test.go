package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func dialText(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return c, bufio.NewReader(c)
}

// readReply reads one (possibly multi-line) SMTP reply.
func readReply(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var all string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading reply: %v (so far %q)", err, all)
		}
		all += line
		if len(line) < 4 || line[3] != '-' {
			return all
		}
	}
}

func expect(t *testing.T, c net.Conn, r *bufio.Reader, send, wantPrefix string) string {
	t.Helper()
	if send != "" {
		fmt.Fprint(c, send)
	}
	got := readReply(t, r)
	if !strings.HasPrefix(got, wantPrefix) {
		t.Fatalf("after %q: got %q, want prefix %q", send, got, wantPrefix)
	}
	return got
}

// TestGracefulShutdown: on SIGTERM, a DATA transfer in progress completes
// with a durable 250, an idle SMTP session gets 421, a POP3 session is
// closed without committing its DELE, and the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir, "")
	letterbox(t, "pw\n", "user", "add", "--config", cfg, "u@test.example")
	p := startServer(t, dataDir, "--config", cfg)
	f := &mailFixture{t: t, srv: p, dataDir: dataDir, cfg: cfg, user: "u@test.example"}
	f.deliver(e2eMessages("gs")[:1])

	pop, popR := dialText(t, p.Addr("pop3"))
	for _, step := range [][2]string{{"", "+OK"}, {"USER u@test.example\r\n", "+OK"}, {"PASS pw\r\n", "+OK"}, {"DELE 1\r\n", "+OK"}} {
		if step[0] != "" {
			fmt.Fprint(pop, step[0])
		}
		if line, _ := popR.ReadString('\n'); !strings.HasPrefix(line, step[1]) {
			t.Fatalf("pop3 %q: %q", step[0], line)
		}
	}

	idle, idleR := dialText(t, p.Addr("smtp"))
	expect(t, idle, idleR, "", "220 ")
	expect(t, idle, idleR, "EHLO idle.test\r\n", "250")

	busy, busyR := dialText(t, p.Addr("smtp"))
	expect(t, busy, busyR, "", "220 ")
	expect(t, busy, busyR, "EHLO busy.test\r\n", "250")
	expect(t, busy, busyR, "MAIL FROM:<s@example.org>\r\n", "250")
	expect(t, busy, busyR, "RCPT TO:<u@test.example>\r\n", "250")
	expect(t, busy, busyR, "DATA\r\n", "354")
	fmt.Fprint(busy, "Subject: in flight\r\n\r\nfirst half\r\n")

	p.cmd.Process.Signal(os.Interrupt)
	p.WaitLog(t, "msg=\"shutting down\"")
	expect(t, idle, idleR, "", "421 4.3.2")
	if line, _ := popR.ReadString('\n'); !strings.HasPrefix(line, "-ERR") {
		t.Fatalf("pop3 session at shutdown got %q, want -ERR", line)
	}
	if _, err := popR.ReadString('\n'); err == nil {
		t.Fatal("pop3 connection still open after shutdown")
	}
	expect(t, busy, busyR, "second half\r\n.\r\n", "250 ")
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("server still running after shutdown; log:\n%s", p.Log())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d; log:\n%s", code, p.Log())
	}
	if _, err := net.Dial("tcp", p.Addr("smtp")); err == nil {
		t.Fatal("smtp listener still accepting after exit")
	}
	// The DELE was not committed (no QUIT); the in-flight message is stored.
	if got := f.stored(); len(got) != 2 || !strings.HasSuffix(string(got[1]), "first half\r\nsecond half\r\n") {
		t.Fatalf("after shutdown the mailbox holds %d messages: %q", len(got), got)
	}
}

func TestDeliverCommand(t *testing.T) {
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir, "")
	letterbox(t, "pw\n", "user", "add", "--config", cfg, "u@test.example")
	letterbox(t, "pw\n", "user", "add", "--config", cfg, "v@test.example")
	msg := "From: cron@test.example\nSubject: local\n\nbody line\n.dot line\n"

	if _, stderr, code := letterbox(t, msg, "deliver", "--config", cfg, "-f", "cron@test.example", "u@test.example", "V+tag@Test.Example"); code != 0 {
		t.Fatalf("deliver: exit %d: %s", code, stderr)
	}
	f := &mailFixture{t: t, dataDir: dataDir, cfg: cfg, user: "u@test.example"}
	got := f.stored()
	wantBody := strings.ReplaceAll(msg, "\n", "\r\n")
	if len(got) != 1 || !strings.HasPrefix(string(got[0]), "Return-Path: <cron@test.example>\r\nReceived: by mx.test.example") ||
		!strings.HasSuffix(string(got[0]), wantBody) {
		t.Fatalf("stored for u: %q", got)
	}
	f.user = "v@test.example"
	if v := f.stored(); len(v) != 1 || string(v[0]) != string(got[0]) {
		t.Fatalf("v's copy differs from u's: %q", v)
	}

	// Unknown and non-local recipients: 67, and nothing is delivered.
	for _, rcpt := range []string{"nobody@test.example", "x@elsewhere.example"} {
		if _, stderr, code := letterbox(t, msg, "deliver", "--config", cfg, "u@test.example", rcpt); code != 67 {
			t.Fatalf("deliver to %s: exit %d, want 67: %s", rcpt, code, stderr)
		}
	}
	f.user = "u@test.example"
	if n := len(f.stored()); n != 1 {
		t.Fatalf("u has %d messages after refused deliveries, want 1", n)
	}

	// Storage unavailable (data_dir is a file): 75, the MTA retries.
	blocked := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocked, nil, 0o644)
	badCfg := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(badCfg, []byte(fmt.Sprintf("data_dir = %q\ndomains = [\"test.example\"]\nhostname = \"h.test\"\n", filepath.Join(blocked, "sub"))), 0o644)
	if _, stderr, code := letterbox(t, msg, "deliver", "--config", badCfg, "u@test.example"); code != 75 {
		t.Fatalf("deliver with unusable data_dir: exit %d, want 75: %s", code, stderr)
	}
	if _, _, code := letterbox(t, msg, "deliver", "--config", cfg); code != 64 {
		t.Fatalf("deliver without recipients: exit %d, want 64", code)
	}
}

// popLogin tries a POP3 login with Python's poplib (an independent client)
// and returns "ok" or the error text.
func popLogin(t *testing.T, addr, user, pass string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	script := `
import poplib, sys
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=60)
try:
    p.user(sys.argv[3]); p.pass_(sys.argv[4]); print("ok", p.stat()[0]); p.quit()
except poplib.error_proto as e:
    print("err", e)
`
	out, err := exec.Command("python3", "-c", script, host, port, user, pass).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 poplib: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestUserChangesTakeEffectAtOnce: user add/passwd/del from the CLI while
// the server runs need no restart or reload.
func TestUserChangesTakeEffectAtOnce(t *testing.T) {
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir, "")
	letterbox(t, "first\n", "user", "add", "--config", cfg, "w@test.example")
	p := startServer(t, dataDir, "--config", cfg)
	addr := p.Addr("pop3")
	if got := popLogin(t, addr, "w@test.example", "first"); got != "ok 0" {
		t.Fatalf("login: %q", got)
	}
	letterbox(t, "second\n", "user", "add", "--config", cfg, "late@test.example")
	if got := popLogin(t, addr, "late@test.example", "second"); got != "ok 0" {
		t.Fatalf("login of an account added while running: %q", got)
	}
	letterbox(t, "changed\n", "user", "passwd", "--config", cfg, "w@test.example")
	if got := popLogin(t, addr, "w@test.example", "first"); !strings.HasPrefix(got, "err b'-ERR [AUTH]") {
		t.Fatalf("old password after passwd: %q", got)
	}
	if got := popLogin(t, addr, "w@test.example", "changed"); got != "ok 0" {
		t.Fatalf("new password after passwd: %q", got)
	}
	letterbox(t, "", "user", "del", "--config", cfg, "late@test.example")
	if got := popLogin(t, addr, "late@test.example", "second"); !strings.HasPrefix(got, "err b'-ERR [AUTH]") {
		t.Fatalf("login of a deleted account: %q", got)
	}
}
