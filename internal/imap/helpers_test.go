package imap

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

const (
	testHost     = "imap.test"
	testUser     = "alice@example.org"
	testPassword = "correct horse"
	ioTimeout    = 2 * time.Minute // only a guard against a hung test (argon2 under -race is slow)
)

// cheapHash returns a valid argon2id PHC hash with the smallest parameters
// auth accepts, so that logins in tests cost microseconds instead of the
// production cost. TestRealPasswordHash covers auth.HashPassword.
func cheapHash(password string) string {
	salt := []byte("letterbox-salt-1")
	key := argon2.IDKey([]byte(password), salt, 1, 8, 1, 32)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=8,t=1,p=1$%s$%s", argon2.Version,
		enc.EncodeToString(salt), enc.EncodeToString(key))
}

// logRecorder is a slog.Handler that keeps every record as a line of text.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
	attrs []slog.Attr
	root  *logRecorder
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	root := h.root
	if root == nil {
		root = h
	}
	root.mu.Lock()
	root.lines = append(root.lines, b.String())
	root.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	root := h.root
	if root == nil {
		root = h
	}
	return &logRecorder{root: root, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

func (h *logRecorder) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.lines...)
}

// hookStore wraps the real store to inject failures or delays into one
// method; everything else is the real backend.
type hookStore struct {
	mailstore.Store
	expunge func(ctx context.Context, mailboxID int64, uids []mailstore.UID) ([]mailstore.UID, error)
}

func (h *hookStore) Expunge(ctx context.Context, mailboxID int64, uids []mailstore.UID) ([]mailstore.UID, error) {
	if h.expunge != nil {
		return h.expunge(ctx, mailboxID, uids)
	}
	return h.Store.Expunge(ctx, mailboxID, uids)
}

type envOptions struct {
	stls        bool // TLSConfig set: STLS offered on plain connections
	implicitTLS bool // the listener is a TLS listener
	remote      bool // the loopback check says no: a "remote" client
	idle        time.Duration
	wrap        func(mailstore.Store) mailstore.Store
	lookup      auth.LookupFunc // replaces the store lookup
	hash        string          // password hash of testUser; "" = cheapHash
	listener    func(net.Listener) net.Listener
	tune        func(*Server) // adjusts the Server before it serves (limits)
}

type testEnv struct {
	t       *testing.T
	store   *sqlite.Store
	srv     *Server
	addr    string
	account mailstore.Account
	inbox   mailstore.Mailbox
	logs    *logRecorder
	ended   chan struct{}
	ln      net.Listener
}

func newEnv(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	logs := &logRecorder{}
	st, err := sqlite.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &testEnv{t: t, store: st, logs: logs, ended: make(chan struct{}, 1000)}
	ctx := context.Background()
	hash := o.hash
	if hash == "" {
		hash = cheapHash(testPassword)
	}
	if e.account, err = st.CreateAccount(ctx, testUser, hash); err != nil {
		t.Fatal(err)
	}
	if e.inbox, err = st.Mailbox(ctx, e.account.ID, mailstore.Inbox); err != nil {
		t.Fatal(err)
	}
	var store mailstore.Store = st
	if o.wrap != nil {
		store = o.wrap(st)
	}
	lookup := o.lookup
	if lookup == nil {
		lookup = func(ctx context.Context, user string) (string, string, error) {
			a, err := st.Account(ctx, user)
			if errors.Is(err, mailstore.ErrNoSuchAccount) {
				return "", "", auth.ErrUnknownUser
			}
			if err != nil {
				return "", "", err
			}
			return a.Name, a.PasswordHash, nil
		}
	}
	e.srv = &Server{
		Store: store,
		Auth: &auth.Authenticator{Lookup: lookup, Throttle: &auth.Throttle{BaseDelay: 10 * time.Millisecond,
			MaxDelay: 200 * time.Millisecond, Forget: time.Minute, MaxEntries: 1000}},
		Hostname:     testHost,
		Logger:       slog.New(logs),
		IdleTimeout:  o.idle,
		onSessionEnd: func() { e.ended <- struct{}{} },
	}
	if o.stls {
		e.srv.TLSConfig = serverTLSConfig(t)
	}
	if o.remote {
		e.srv.isLoopback = func(netip.Addr) bool { return false }
	}
	if o.tune != nil {
		o.tune(e.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	if o.listener != nil {
		ln = o.listener(ln)
	}
	if o.implicitTLS {
		ln = tls.NewListener(ln, serverTLSConfig(t))
	}
	e.ln = ln
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
		for _, l := range logs.all() {
			if strings.Contains(l, "panic") {
				t.Errorf("logged: %s", l)
			}
			if strings.Contains(l, testPassword) {
				t.Errorf("password in log: %s", l)
			}
		}
		if t.Failed() {
			for _, l := range logs.all() {
				t.Log("server log:", l)
			}
		}
	})
	return e
}

// deliver stores a message in the test user's INBOX and returns its UID.
func (e *testEnv) deliver(body string) mailstore.UID {
	e.t.Helper()
	return deliverTo(e.t, e.store, e.account.ID, body)
}

func deliverTo(t testing.TB, st mailstore.Store, accountID int64, body string) mailstore.UID {
	t.Helper()
	ctx := context.Background()
	sp, err := st.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Abort()
	if _, err := io.WriteString(sp, body); err != nil {
		t.Fatal(err)
	}
	errs := st.Deliver(ctx, sp, time.Now(), []mailstore.Recipient{{AccountID: accountID, Mailbox: mailstore.Inbox}})
	if len(errs) != 1 || errs[0] != nil {
		t.Fatalf("Deliver: %v", errs)
	}
	mb, err := st.Mailbox(ctx, accountID, mailstore.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	return mb.UIDNext - 1
}

// messages returns the INBOX messages from the store.
func (e *testEnv) messages() []mailstore.Message {
	e.t.Helper()
	ms, err := e.store.Messages(context.Background(), e.inbox.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return ms
}

// waitSessionEnd waits until a session has fully ended on the server.
func (e *testEnv) waitSessionEnd() {
	e.t.Helper()
	select {
	case <-e.ended:
	case <-time.After(ioTimeout):
		e.t.Fatal("session did not end")
	}
}

var (
	certOnce sync.Once
	certPEM  tls.Certificate
	certPool *x509.CertPool
)

// testCert generates a self-signed ECDSA certificate for testHost once.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: testHost},
			DNSNames:              []string{testHost},
			IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		certPEM = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
		certPool = x509.NewCertPool()
		certPool.AddCert(cert)
	})
	return certPEM, certPool
}

func serverTLSConfig(t testing.TB) *tls.Config {
	cert, _ := testCert(t)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func clientTLSConfig(t testing.TB) *tls.Config {
	_, pool := testCert(t)
	return &tls.Config{RootCAs: pool, ServerName: testHost, MinVersion: tls.VersionTLS12}
}

// conn is a raw IMAP client that shows the exact bytes.
type conn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (e *testEnv) dialRaw() *conn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &conn{t: e.t, conn: c, r: bufio.NewReader(c)}
}

// dial connects and reads the greeting.
func (e *testEnv) dial() *conn {
	e.t.Helper()
	c := e.dialRaw()
	c.expectPrefix("* OK [CAPABILITY IMAP4rev1 ")
	return c
}

// login connects and logs in with LOGIN.
func (e *testEnv) login() *conn {
	e.t.Helper()
	c := e.dial()
	c.send(`a LOGIN ` + testUser + ` "` + testPassword + `"`)
	c.expectPrefix("a OK [CAPABILITY ")
	return c
}

func (c *conn) deadline() { c.conn.SetDeadline(time.Now().Add(ioTimeout)) }

func (c *conn) send(lines ...string) {
	c.t.Helper()
	c.deadline()
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	if _, err := io.WriteString(c.conn, b.String()); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *conn) write(s string) {
	c.t.Helper()
	c.deadline()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// line reads one response line without CRLF.
func (c *conn) line() string {
	c.t.Helper()
	c.deadline()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.t.Fatalf("line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

func (c *conn) expect(want string) {
	c.t.Helper()
	if got := c.line(); got != want {
		c.t.Fatalf("got %q, want %q", got, want)
	}
}

func (c *conn) expectPrefix(prefix string) string {
	c.t.Helper()
	got := c.line()
	if !strings.HasPrefix(got, prefix) {
		c.t.Fatalf("got %q, want prefix %q", got, prefix)
	}
	return got
}

// until reads lines up to and including the tagged response of tag and
// returns them all.
func (c *conn) until(tag string) []string {
	c.t.Helper()
	var lines []string
	for {
		l := c.line()
		lines = append(lines, l)
		if strings.HasPrefix(l, tag+" ") {
			return lines
		}
	}
}

// cmd sends a command and returns its responses (the last is tagged).
func (c *conn) cmd(tag, line string) []string {
	c.t.Helper()
	c.send(tag + " " + line)
	return c.until(tag)
}

// exchange sends a command and checks the exact responses.
func (c *conn) exchange(tag, line string, want ...string) {
	c.t.Helper()
	got := c.cmd(tag, line)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		c.t.Fatalf("%s %s:\ngot:\n%s\nwant:\n%s\n%q", tag, line, strings.Join(got, "\n"), strings.Join(want, "\n"), got)
	}
}

// readN reads exactly n bytes (a literal's content).
func (c *conn) readN(n int) string {
	c.t.Helper()
	c.deadline()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Fatalf("read literal: %v", err)
	}
	return string(b)
}

func (c *conn) expectEOF() {
	c.t.Helper()
	c.deadline()
	rest, err := io.ReadAll(c.r)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.t.Fatalf("expected EOF, got %v", err)
	}
	if len(rest) != 0 {
		c.t.Fatalf("unexpected data before EOF: %q", rest)
	}
}

// deliverN delivers n numbered messages and returns their bodies.
func (e *testEnv) deliverN(n int) []string {
	e.t.Helper()
	var bodies []string
	for i := 1; i <= n; i++ {
		b := fmt.Sprintf("From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: message %d\r\n"+
			"Date: Mon, 2 Jan 2006 15:04:05 +0000\r\nMessage-ID: <%d@example.org>\r\n\r\nBody of message %d.\r\n", i, i, i)
		e.deliver(b)
		bodies = append(bodies, b)
	}
	return bodies
}

// plainResp is the base64 SASL PLAIN response for the credentials.
func plainResp(authzid, authcid, password string) string {
	return base64.StdEncoding.EncodeToString([]byte(authzid + "\x00" + authcid + "\x00" + password))
}

// countingListener counts the Write calls on accepted connections, to see
// how responses are batched.
type countingListener struct {
	net.Listener
	mu     sync.Mutex
	writes int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, l: l}, nil
}

func (l *countingListener) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writes
}

type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.writes++
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}
