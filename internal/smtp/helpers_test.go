package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/delivery"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

// testAccounts exist in every test store.
var testAccounts = []string{"user@example.org", "a@example.org", "b@example.org", "c@example.org",
	"postmaster@example.org", "jörg@example.org"}

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

type testEnv struct {
	t      *testing.T
	store  *sqlite.Store
	srv    *Server
	addr   string
	logs   *syncBuffer
	caFile string // PEM of the self-signed certificate, when TLS is on
	served chan error
	down   bool
}

type envOpt func(*Server)

func withLMTP(s *Server) { s.LMTP = true }
func withTLS(s *Server)  { s.TLSConfig = &tls.Config{} } // replaced by a real config in newEnv
func withMaxSize(n int64) envOpt {
	return func(s *Server) { s.Agent.MaxMessageSize = n }
}

// newEnv starts a Server on a loopback port over a fresh sqlite store.
func newEnv(t *testing.T, opts ...envOpt) *testEnv {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store, err := sqlite.Open(t.TempDir(), logger)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range testAccounts {
		if _, err := store.CreateAccount(context.Background(), a, ""); err != nil {
			t.Fatal(err)
		}
	}
	srv := &Server{
		Agent: &delivery.Agent{
			Store:    store,
			Hostname: "mx.example.org",
			Domains:  []string{"example.org"},
			Logger:   logger,
		},
		Hostname: "mx.example.org",
		Logger:   logger,
	}
	for _, o := range opts {
		o(srv)
	}
	e := &testEnv{t: t, store: store, srv: srv, logs: logs, served: make(chan error, 1)}
	if srv.TLSConfig != nil {
		var cert tls.Certificate
		cert, e.caFile = selfSigned(t)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	go func() { e.served <- srv.Serve(l) }()
	t.Cleanup(func() {
		if !e.down {
			e.shutdown(context.Background())
		}
		store.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return e
}

func (e *testEnv) shutdown(ctx context.Context) error {
	e.down = true
	err := e.srv.Shutdown(ctx)
	if serr := <-e.served; serr != nil {
		e.t.Errorf("Serve returned %v after Shutdown", serr)
	}
	return err
}

// selfSigned makes an ECDSA certificate for 127.0.0.1 and mx.example.org
// and writes it as a CA file.
func selfSigned(t testing.TB) (tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mx.example.org"},
		DNSNames:              []string{"mx.example.org", "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, ca
}

// messages returns the messages of the account's INBOX and their bodies.
func (e *testEnv) messages(account string) ([]mailstore.Message, [][]byte) {
	e.t.Helper()
	ctx := context.Background()
	acct, err := e.store.Account(ctx, account)
	if err != nil {
		e.t.Fatal(err)
	}
	mb, err := e.store.Mailbox(ctx, acct.ID, mailstore.Inbox)
	if err != nil {
		e.t.Fatal(err)
	}
	msgs, err := e.store.Messages(ctx, mb.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	var bodies [][]byte
	for _, m := range msgs {
		b, err := e.store.OpenBlob(ctx, m.BlobID)
		if err != nil {
			e.t.Fatal(err)
		}
		data, err := io.ReadAll(b)
		b.Close()
		if err != nil {
			e.t.Fatal(err)
		}
		if int64(len(data)) != m.Size {
			e.t.Errorf("UID %d: size %d, blob has %d octets", m.UID, m.Size, len(data))
		}
		bodies = append(bodies, data)
	}
	return msgs, bodies
}

// only returns the body of the single message in the account's INBOX.
func (e *testEnv) only(account string) []byte {
	e.t.Helper()
	_, bodies := e.messages(account)
	if len(bodies) != 1 {
		e.t.Fatalf("%s has %d messages, want 1", account, len(bodies))
	}
	return bodies[0]
}

func (e *testEnv) count(account string) int {
	e.t.Helper()
	msgs, _ := e.messages(account)
	return len(msgs)
}

var traceRE = regexp.MustCompile(`\AReturn-Path: <[^>\r\n]*>\r\nReceived: [^\r\n]*(\r\n\t[^\r\n]*)*\r\n`)

// stripTrace splits a stored message into its trace fields and the message
// as the client sent it.
func stripTrace(t *testing.T, stored []byte) (trace string, msg []byte) {
	t.Helper()
	loc := traceRE.FindIndex(stored)
	if loc == nil {
		t.Fatalf("stored message does not start with Return-Path and Received:\n%q", stored[:min(len(stored), 400)])
	}
	return string(stored[:loc[1]]), stored[loc[1]:]
}

// client is a raw protocol client over a real socket.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// A safety net against hangs, not synchronisation.
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	return c
}

// reply reads one (possibly multi-line) reply; lines are joined with "\n".
func (c *client) reply() string {
	c.t.Helper()
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply: %v (so far %q)", err, lines)
		}
		if !strings.HasSuffix(line, "\r\n") {
			c.t.Fatalf("reply line %q does not end in CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// cmd sends a command line and returns the reply.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.reply()
}

// expect sends a command and checks the reply starts with want.
func (c *client) expect(line, want string) string {
	c.t.Helper()
	got := c.cmd(line)
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("%q: got %q, want %q...", line, got, want)
	}
	return got
}

func (c *client) expectReply(want string) string {
	c.t.Helper()
	got := c.reply()
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("got %q, want %q...", got, want)
	}
	return got
}

// expectEOF checks that the server closed the connection.
func (c *client) expectEOF() {
	c.t.Helper()
	line, err := c.r.ReadString('\n')
	if err == nil || !(errors.Is(err, io.EOF) || isReset(err)) {
		c.t.Fatalf("expected the connection to be closed, read %q, %v", line, err)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// greet reads the greeting and says EHLO (or LHLO).
func (c *client) greet(lmtp bool) {
	c.t.Helper()
	c.expectReply("220 ")
	if lmtp {
		c.expect("LHLO client.example", "250")
	} else {
		c.expect("EHLO client.example", "250")
	}
}

var deliveredRE = regexp.MustCompile(`^250 2\.0\.0 (?:<[^>]*> )?Ok: delivered as ([A-Z2-7]{16})$`)

// deliveredID checks a 250 reply and returns the delivery ID in it.
func deliveredID(t *testing.T, reply string) string {
	t.Helper()
	m := deliveredRE.FindStringSubmatch(reply)
	if m == nil {
		t.Fatalf("reply %q is not a delivery success", reply)
	}
	return m[1]
}

// dotStuff encodes a message for DATA: leading dots doubled, ended by
// CRLF.CRLF (adding a CRLF first if the message does not end with one).
func dotStuff(msg []byte) []byte {
	var b bytes.Buffer
	atLineStart := true
	for _, c := range msg {
		if atLineStart && c == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(c)
		atLineStart = c == '\n'
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}
