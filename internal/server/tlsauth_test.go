package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdg-go/scram"
	"golang.org/x/crypto/argon2"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/config"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServer starts a server from config text (the [tls] lines given,
// listeners from listen) and returns it with its log; it is shut down
// when the test ends.
func startServer(t *testing.T, tlsLines, listen string) (*Server, *syncBuffer) {
	t.Helper()
	srv, logs := newStartedServer(t, tlsLines, listen)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return srv, logs
}

// newStartedServer is startServer without the shutdown at the end.
func newStartedServer(t *testing.T, tlsLines, listen string) (*Server, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	text := fmt.Sprintf("hostname = \"mail.example.org\"\ndata_dir = %q\ndomains = [\"example.org\"]\n[listen]\n%s\n[tls]\n%s\n",
		filepath.Join(dir, "data"), listen, tlsLines)
	cfg, err := config.Parse(filepath.Join(dir, "letterbox.toml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		srv.Close()
		t.Fatal(err)
	}
	return srv, logs
}

// clientConfig trusts the server's generated certificate and allows any
// TLS version from 1.0 up to max, so that the server's minimum decides.
func clientConfig(t *testing.T, srv *Server, max uint16) *tls.Config {
	t.Helper()
	pemData, err := os.ReadFile(filepath.Join(srv.Config.DataDir, "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	return &tls.Config{RootCAs: pool, ServerName: "mail.example.org", MinVersion: tls.VersionTLS10, MaxVersion: max}
}

// dialTLS connects to an implicit-TLS listener and returns the first line
// (the greeting) or the handshake error.
func dialTLS(t *testing.T, addr net.Addr, cfg *tls.Config) (string, error) {
	t.Helper()
	d := &net.Dialer{Timeout: time.Minute}
	c, err := tls.DialWithDialer(d, "tcp", addr.String(), cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

func TestTLSMinVersion(t *testing.T) {
	for _, tc := range []struct {
		lines    string
		refused  []uint16
		accepted []uint16
	}{
		{"", []uint16{tls.VersionTLS10, tls.VersionTLS11}, []uint16{tls.VersionTLS12, tls.VersionTLS13}},
		{`min_version = "1.2"`, []uint16{tls.VersionTLS11}, []uint16{tls.VersionTLS12}},
		{`min_version = "1.3"`, []uint16{tls.VersionTLS11, tls.VersionTLS12}, []uint16{tls.VersionTLS13}},
	} {
		srv, _ := startServer(t, tc.lines, "imaps = \"127.0.0.1:0\"\npop3s = \"127.0.0.1:0\"")
		for _, l := range []string{"imaps", "pop3s"} {
			for _, v := range tc.refused {
				if line, err := dialTLS(t, srv.Addr(l), clientConfig(t, srv, v)); err == nil {
					t.Errorf("%q: %s with max TLS %x accepted: %q", tc.lines, l, v, line)
				} else if !strings.Contains(err.Error(), "protocol version") {
					t.Errorf("%q: %s with max TLS %x: %v, want a protocol version alert", tc.lines, l, v, err)
				}
			}
			for _, v := range tc.accepted {
				line, err := dialTLS(t, srv.Addr(l), clientConfig(t, srv, v))
				if err != nil || !strings.HasPrefix(line, map[string]string{"imaps": "* OK ", "pop3s": "+OK "}[l]) {
					t.Errorf("%q: %s with max TLS %x: %q %v", tc.lines, l, v, line, err)
				}
			}
		}
	}
}

// nonLoopback returns a local IPv4 address that is not loopback, so that
// a connection to it is a "remote" one for the plaintext rules.
func nonLoopback(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address on this machine")
	return ""
}

// cheapHash is a valid argon2id hash with the smallest parameters auth
// accepts (the production cost is tested in package auth).
func cheapHash(password string) string {
	salt := []byte("letterbox-salt-1")
	key := argon2.IDKey([]byte(password), salt, 1, 8, 1, 32)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=8,t=1,p=1$%s$%s", argon2.Version, enc.EncodeToString(salt), enc.EncodeToString(key))
}

type textConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialText(t *testing.T, addr net.Addr) *textConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	return &textConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *textConn) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (%q)", err, l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

func (c *textConn) cmd(line string) string {
	c.t.Helper()
	fmt.Fprintf(c.c, "%s\r\n", line)
	return c.line()
}

// tls.require_tls_for_auth over a real non-loopback connection without
// TLS: true (the default) refuses plaintext passwords and still offers
// SCRAM; false accepts them and warns at start.
func TestRequireTLSForAuth(t *testing.T) {
	ip := nonLoopback(t)
	listen := fmt.Sprintf("imap = %q\npop3 = %q", net.JoinHostPort(ip, "0"), net.JoinHostPort(ip, "0"))
	const user, password = "alice@example.org", "correct horse"
	setup := func(srv *Server) {
		t.Helper()
		ctx := context.Background()
		if _, err := srv.Store.CreateAccount(ctx, user, cheapHash(password)); err != nil {
			t.Fatal(err)
		}
	}

	srv, logs := startServer(t, "", listen)
	setup(srv)
	c := dialText(t, srv.Addr("imap"))
	if g := c.line(); !strings.HasSuffix(g, " STARTTLS LOGINDISABLED AUTH=SCRAM-SHA-256] mail.example.org Letterbox IMAP server ready") {
		t.Fatalf("greeting %q", g)
	}
	if got := c.cmd(`a LOGIN ` + user + ` "` + password + `"`); got != "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-TLS connections, use STARTTLS" {
		t.Fatalf("LOGIN: %q", got)
	}
	p := dialText(t, srv.Addr("pop3"))
	p.line()
	if got := p.cmd("USER " + user); got != "-ERR [AUTH] Plaintext authentication disallowed on non-TLS connections, use STLS" {
		t.Fatalf("USER: %q", got)
	}
	if strings.Contains(logs.String(), "require_tls_for_auth") {
		t.Fatal("warning logged with the default")
	}

	srv, logs = startServer(t, "require_tls_for_auth = false", listen)
	setup(srv)
	if !strings.Contains(logs.String(), "level=WARN msg=\"tls.require_tls_for_auth is false: plaintext passwords") {
		t.Fatalf("no start warning in:\n%s", logs)
	}
	c = dialText(t, srv.Addr("imap"))
	if g := c.line(); !strings.HasSuffix(g, " STARTTLS AUTH=SCRAM-SHA-256 AUTH=PLAIN AUTH=LOGIN] mail.example.org Letterbox IMAP server ready") {
		t.Fatalf("greeting %q", g)
	}
	if got := c.cmd(`a LOGIN ` + user + ` "` + password + `"`); !strings.HasPrefix(got, "a OK [CAPABILITY ") {
		t.Fatalf("LOGIN: %q", got)
	}
	p = dialText(t, srv.Addr("pop3"))
	p.line()
	if got := p.cmd("USER " + user); got != "+OK send PASS" {
		t.Fatalf("USER: %q", got)
	}
}

// The production wiring end to end: an account without SCRAM keys gets
// them from a password login, saved before Shutdown closes the store even
// when Shutdown follows at once; then SCRAM-SHA-256-PLUS works over imaps.
func TestSCRAMKeysWiring(t *testing.T) {
	srv, _ := newStartedServer(t, "", "imap = \"127.0.0.1:0\"\nimaps = \"127.0.0.1:0\"")
	ctx := context.Background()
	const user, password = "alice@example.org", "correct horse"
	if _, err := srv.Store.CreateAccount(ctx, user, cheapHash(password)); err != nil {
		t.Fatal(err)
	}
	c := dialText(t, srv.Addr("imap"))
	c.line()
	if got := c.cmd(`a LOGIN ` + user + ` "` + password + `"`); !strings.HasPrefix(got, "a OK ") {
		t.Fatalf("LOGIN: %q", got)
	}
	c.c.Close()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	store, err := OpenStore(srv.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	a, err := store.Account(ctx, user)
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := auth.CheckSCRAMSecret(a.SCRAMSHA256, password); !ok || err != nil {
		t.Fatalf("SCRAM secret after Shutdown: %q %v %v", a.SCRAMSHA256, ok, err)
	}

	// A new server on the same data: SCRAM-SHA-256-PLUS over imaps with
	// tls-server-end-point of the generated certificate.
	srv2, err := New(srv.Config, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv2.Shutdown(ctx)
	tc, err := tls.Dial("tcp", srv2.Addr("imaps").String(), clientConfig(t, srv2, tls.VersionTLS13))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(time.Minute))
	r := bufio.NewReader(tc)
	if g, _ := r.ReadString('\n'); !strings.Contains(g, " AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-256 AUTH=PLAIN AUTH=LOGIN]") {
		t.Fatalf("imaps greeting %q", g)
	}
	cs := tc.ConnectionState()
	cb, err := scram.NewTLSServerEndpointBinding(&cs)
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := scram.SHA256.NewClient(user, password, "")
	conv := cl.NewConversationWithChannelBinding(cb)
	first, _ := conv.Step("")
	fmt.Fprintf(tc, "a AUTHENTICATE SCRAM-SHA-256-PLUS %s\r\n", base64.StdEncoding.EncodeToString([]byte(first)))
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		l = strings.TrimSuffix(l, "\r\n")
		if strings.HasPrefix(l, "a ") {
			if !strings.HasPrefix(l, "a OK ") || !conv.Valid() {
				t.Fatalf("AUTHENTICATE: %q (server verified: %v)", l, conv.Valid())
			}
			break
		}
		ch, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(l, "+ "))
		resp, err := conv.Step(string(ch))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(tc, "%s\r\n", base64.StdEncoding.EncodeToString([]byte(resp)))
	}
}
