package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLocalModeREADME follows the README: `letterbox serve` with no config
// creates demo@localhost, prints its password and ready-to-paste commands;
// the printed curl commands send a message and read it back over POP3.
func TestLocalModeREADME(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:2525", "127.0.0.1:1110", "127.0.0.1:1143"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("local mode needs %s free: %v", addr, err)
		}
		l.Close()
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl is required (design.md §6)")
	}
	dir := t.TempDir()
	p := startServer(t, dir)
	out := p.Stdout()
	m := regexp.MustCompile(`Created account demo@localhost with password (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no demo password printed; stdout:\n%s", out)
	}
	password := m[1]
	if _, err := os.Stat(filepath.Join(dir, "letterbox-data", "letterbox.db")); err != nil {
		t.Fatalf("local mode data dir: %v", err)
	}
	for _, want := range []string{"curl -s smtp://127.0.0.1:2525", "curl -s pop3://127.0.0.1:1110/1 -u 'demo@localhost:" + password + "'",
		"curl -s 'imap://127.0.0.1:1143/INBOX;UID=1' -u 'demo@localhost:" + password + "'"} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}

	msg := "From: you@example.org\r\nTo: demo@localhost\r\nSubject: hello\r\n\r\nHello from Letterbox.\r\n"
	send := exec.Command(curl, "-sS", "smtp://127.0.0.1:2525", "--mail-from", "you@example.org", "--mail-rcpt", "demo@localhost", "-T", "-")
	send.Stdin = strings.NewReader(msg)
	if b, err := send.CombinedOutput(); err != nil {
		t.Fatalf("curl smtp: %v %s", err, b)
	}
	got, err := exec.Command(curl, "-sS", "pop3://127.0.0.1:1110/1", "-u", "demo@localhost:"+password).Output()
	if err != nil {
		t.Fatalf("curl pop3: %v", err)
	}
	if !strings.HasSuffix(string(got), msg) || !strings.HasPrefix(string(got), "Return-Path: <you@example.org>\r\nReceived: from ") {
		t.Fatalf("message read back over POP3:\n%q", got)
	}
	imapGot, err := exec.Command(curl, "-sS", "imap://127.0.0.1:1143/INBOX;UID=1", "-u", "demo@localhost:"+password).Output()
	if err != nil || string(imapGot) != string(got) {
		t.Fatalf("curl imap: %v\n%q\nwant the same octets as POP3:\n%q", err, imapGot, got)
	}
	// curl does not QUIT-delete: the message is still there for a second read.
	list, err := exec.Command(curl, "-sS", "pop3://127.0.0.1:1110/", "-u", "demo@localhost:"+password).Output()
	if err != nil || !strings.HasPrefix(string(list), "1 ") {
		t.Fatalf("curl pop3 LIST: %v %q", err, list)
	}
	if code := p.Stop(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM; log:\n%s", code, p.Log())
	}

	// Second start: no new account, no password printed.
	p2 := startServer(t, dir)
	if out := p2.Stdout(); strings.Contains(out, "Created account") || !strings.Contains(out, "Accounts: demo@localhost") {
		t.Fatalf("second start banner:\n%s", out)
	}
	p2.Stop(t)
}
