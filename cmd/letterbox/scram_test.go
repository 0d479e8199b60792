package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xdg-go/scram"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/config"
	"github.com/letterbox/letterbox/internal/server"
)

// storedCredentials reads an account's password hash and SCRAM secret
// from the data directory of cfg.
func storedCredentials(t *testing.T, cfgPath, user string) (hash, secret string) {
	t.Helper()
	cfg, err := config.LoadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := server.OpenStore(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := st.Account(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return a.PasswordHash, a.SCRAMSHA256
}

// `user add` and `user passwd` store both the argon2id hash and the SCRAM
// keys of the password; the keys of an old password stop working.
func TestUserCommandsStoreSCRAMKeys(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "")
	if _, stderr, code := letterbox(t, "first pass\n", "user", "add", "--config", cfg, "alice@test.example"); code != 0 {
		t.Fatalf("user add: exit %d: %s", code, stderr)
	}
	check := func(password, wrong string) {
		t.Helper()
		hash, secret := storedCredentials(t, cfg, "alice@test.example")
		if ok, err := auth.VerifyPassword(hash, password); !ok || err != nil {
			t.Fatalf("argon2id hash does not verify %q: %v %v", password, ok, err)
		}
		if !strings.HasPrefix(secret, "SCRAM-SHA-256$65536:") || strings.Contains(secret, password) {
			t.Fatalf("SCRAM secret %q", secret)
		}
		if ok, err := auth.CheckSCRAMSecret(secret, password); !ok || err != nil {
			t.Fatalf("SCRAM secret does not match %q: %v %v", password, ok, err)
		}
		if ok, _ := auth.CheckSCRAMSecret(secret, wrong); ok {
			t.Fatalf("SCRAM secret matches %q", wrong)
		}
	}
	check("first pass", "second pass")
	if _, stderr, code := letterbox(t, "second pass\n", "user", "passwd", "--config", cfg, "alice@test.example"); code != 0 {
		t.Fatalf("user passwd: exit %d: %s", code, stderr)
	}
	check("second pass", "first pass")

	// And the served binary accepts SCRAM-SHA-256 for the account over
	// POP3 (an xdg-go/scram client on a raw socket).
	p := startServer(t, t.TempDir(), "--config", cfg)
	c, err := net.Dial("tcp", p.Addr("pop3"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(c)
	line := func() string {
		t.Helper()
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSuffix(l, "\r\n")
	}
	line() // greeting
	cl, _ := scram.SHA256.NewClient("alice@test.example", "second pass", "")
	conv := cl.NewConversation()
	first, _ := conv.Step("")
	io.WriteString(c, "AUTH SCRAM-SHA-256 "+base64.StdEncoding.EncodeToString([]byte(first))+"\r\n")
	for {
		l := line()
		ch, ok := strings.CutPrefix(l, "+ ")
		if !ok {
			if l != "+OK maildrop locked and ready, 0 messages" || !conv.Valid() {
				t.Fatalf("AUTH SCRAM-SHA-256: %q (server verified: %v)", l, conv.Valid())
			}
			break
		}
		dec, _ := base64.StdEncoding.DecodeString(ch)
		resp, err := conv.Step(string(dec))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, base64.StdEncoding.EncodeToString([]byte(resp))+"\r\n")
	}
}
