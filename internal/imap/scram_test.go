package imap

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xdg-go/scram"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// scramAuthenticator is the production wiring (internal/server
// NewAuthenticator) over st, with a fast throttle.
func scramAuthenticator(st mailstore.Store) *auth.Authenticator {
	return &auth.Authenticator{
		Credentials: func(ctx context.Context, user string) (auth.Credentials, error) {
			a, err := st.Account(ctx, user)
			if errors.Is(err, mailstore.ErrNoSuchAccount) {
				return auth.Credentials{}, auth.ErrUnknownUser
			}
			if err != nil {
				return auth.Credentials{}, err
			}
			return auth.Credentials{Name: a.Name, PasswordHash: a.PasswordHash, SCRAMSHA256: a.SCRAMSHA256}, nil
		},
		SaveSCRAM: st.SetSCRAMIfHash,
		Throttle: &auth.Throttle{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond,
			Forget: time.Minute, MaxEntries: 1000},
	}
}

// scramSecret is the stored SCRAM-SHA-256 secret of password with 4096
// iterations (cheap for the test client), computed with xdg-go/scram's
// client and encoded as documented in auth.NewSCRAMSecret: an
// independent check of the format the server parses.
func scramSecret(t testing.TB, password string) string {
	t.Helper()
	salt := make([]byte, 16)
	rand.Read(salt)
	cl, err := scram.SHA256.NewClient("x", password, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: 4096})
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.StdEncoding
	return fmt.Sprintf("SCRAM-SHA-256$4096:%s$%s:%s", enc.EncodeToString(salt), enc.EncodeToString(c.StoredKey), enc.EncodeToString(c.ServerKey))
}

// newSCRAMEnv is newEnv with the SCRAM-capable authenticator, and
// SCRAM keys for testUser.
func newSCRAMEnv(t *testing.T, o envOptions, tune func(*Server)) *testEnv {
	t.Helper()
	o.tune = func(s *Server) {
		s.Auth = scramAuthenticator(s.Store)
		s.Auth.Logger = s.Logger
		if tune != nil {
			tune(s)
		}
	}
	e := newEnv(t, o)
	if err := e.store.SetCredentials(context.Background(), testUser, cheapHash(testPassword), scramSecret(t, testPassword)); err != nil {
		t.Fatal(err)
	}
	return e
}

// authenticate runs AUTHENTICATE mech with an xdg-go/scram client
// conversation and returns every line the server sent, continuations
// decoded ("+ " and the challenge text). With ir, the client-first-message
// goes as SASL-IR initial response.
func (c *conn) authenticate(tag, mech string, conv *scram.ClientConversation, ir bool) []string {
	c.t.Helper()
	cmd := tag + " AUTHENTICATE " + mech
	if ir {
		first, err := conv.Step("")
		if err != nil {
			c.t.Fatal(err)
		}
		cmd += " " + base64.StdEncoding.EncodeToString([]byte(first))
	}
	c.send(cmd)
	var got []string
	for {
		l := c.line()
		if strings.HasPrefix(l, tag+" ") {
			return append(got, l)
		}
		ch, ok := strings.CutPrefix(l, "+ ")
		if !ok {
			c.t.Fatalf("unexpected line %q", l)
		}
		dec, err := base64.StdEncoding.DecodeString(ch)
		if err != nil {
			c.t.Fatalf("continuation %q is not base64", l)
		}
		got = append(got, "+ "+string(dec))
		resp, err := conv.Step(string(dec))
		if err != nil {
			c.t.Fatalf("client rejects the server's message %q: %v", dec, err)
		}
		c.send(base64.StdEncoding.EncodeToString([]byte(resp)))
	}
}

func newSCRAMClient(t *testing.T, user, password string) *scram.Client {
	t.Helper()
	cl, err := scram.SHA256.NewClient(user, password, "")
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// startTLS upgrades c with STARTTLS and returns the client's view of the
// TLS connection.
func (c *conn) startTLS(cfg *tls.Config) tls.ConnectionState {
	c.t.Helper()
	c.exchange("tls", "STARTTLS", "tls OK Begin TLS negotiation now")
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	return tc.ConnectionState()
}

func TestSCRAMCapabilities(t *testing.T) {
	e := newSCRAMEnv(t, envOptions{stls: true, remote: true}, nil)
	c := e.dialRaw()
	// Remote without TLS: LOGIN disabled, SCRAM offered (it never
	// reveals the password), no -PLUS (no channel to bind to).
	c.expect("* OK [CAPABILITY " + wantCaps + " STARTTLS LOGINDISABLED AUTH=SCRAM-SHA-256] imap.test Letterbox IMAP server ready")
	c.startTLS(clientTLSConfig(t))
	c.exchange("a", "CAPABILITY", "* CAPABILITY "+wantCaps+" AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-256 AUTH=PLAIN AUTH=LOGIN",
		"a OK CAPABILITY completed")

	// Loopback without TLS: plaintext allowed, no -PLUS.
	e2 := newSCRAMEnv(t, envOptions{}, nil)
	c2 := e2.dialRaw()
	c2.expect("* OK [CAPABILITY " + wantCaps + " AUTH=SCRAM-SHA-256 AUTH=PLAIN AUTH=LOGIN] imap.test Letterbox IMAP server ready")

	// Implicit TLS without a Server.TLSConfig: tls-exporter only, so
	// -PLUS is still offered.
	e3 := newSCRAMEnv(t, envOptions{implicitTLS: true, remote: true}, nil)
	tc, err := tls.Dial("tcp", e3.addr, clientTLSConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	c3 := &conn{t: t, conn: tc, r: bufio.NewReader(tc)}
	c3.expect("* OK [CAPABILITY " + wantCaps + " AUTH=SCRAM-SHA-256-PLUS AUTH=SCRAM-SHA-256 AUTH=PLAIN AUTH=LOGIN] imap.test Letterbox IMAP server ready")
}

func TestSCRAMAuthenticate(t *testing.T) {
	rec := &eventLog{}
	e := newSCRAMEnv(t, envOptions{}, func(s *Server) { s.Audit = rec })
	for _, ir := range []bool{true, false} {
		c := e.dial()
		conv := newSCRAMClient(t, "Alice@Example.org", testPassword).NewConversation()
		got := c.authenticate("a", "SCRAM-SHA-256", conv, ir)
		if !conv.Valid() {
			t.Fatal("client did not verify the server signature")
		}
		if !ir {
			if got[0] != "+ " {
				t.Fatalf("first challenge %q, want empty", got[0])
			}
			got = got[1:]
		}
		if len(got) != 3 || !strings.HasPrefix(got[0], "+ r=") || !strings.HasSuffix(got[0], ",i=4096") ||
			!strings.HasPrefix(got[1], "+ v=") || got[2] != "a OK [CAPABILITY "+wantCaps+"] AUTHENTICATE completed" {
			t.Fatalf("ir=%v: transcript %q", ir, got)
		}
		if sel := c.cmd("b", "SELECT INBOX"); sel[len(sel)-1] != "b OK [READ-WRITE] SELECT completed" {
			t.Fatalf("SELECT after SCRAM: %q", sel)
		}
		rec.expect(t, "SCRAM login", audit.Event{Event: audit.EventLogin, Proto: "imap", User: testUser, Mech: "SCRAM-SHA-256"})
	}

	c := e.dial()
	// A wrong password and an unknown user: the same exchange, the same
	// failure.
	for _, user := range []string{testUser, "nobody@example.org"} {
		got := c.authenticate("c", "SCRAM-SHA-256", newSCRAMClient(t, user, "wrong").NewConversation(), true)
		if len(got) != 2 || !strings.HasPrefix(got[0], "+ r=") || got[1] != "c NO [AUTHENTICATIONFAILED] Invalid credentials" {
			t.Fatalf("%s: %q", user, got)
		}
		rec.expect(t, "failed SCRAM", audit.Event{Event: audit.EventLoginFailed, Proto: "imap", User: user,
			Mech: "SCRAM-SHA-256", Detail: "invalid credentials"})
	}
	// Cancel (RFC 9051 §6.2.2: BAD), invalid base64 (BAD), a malformed
	// message (NO), -PLUS without TLS (not offered: NO).
	c.send("d AUTHENTICATE SCRAM-SHA-256")
	c.expect("+ ")
	c.send("*")
	c.expect("d BAD authentication cancelled")
	c.send("e AUTHENTICATE SCRAM-SHA-256 " + base64.StdEncoding.EncodeToString([]byte("n,,n="+testUser+",r=abcdefgh")))
	c.expectPrefix("+ ")
	c.send("*")
	c.expect("e BAD authentication cancelled")
	c.exchange("f", "AUTHENTICATE SCRAM-SHA-256 bm9wZQ", "f BAD invalid base64")
	c.exchange("g", "AUTHENTICATE SCRAM-SHA-256 "+base64.StdEncoding.EncodeToString([]byte("hello")),
		"g NO [AUTHENTICATIONFAILED] malformed SCRAM-SHA-256 response")
	c.exchange("h", "AUTHENTICATE SCRAM-SHA-256-PLUS "+base64.StdEncoding.EncodeToString([]byte("p=tls-exporter,,n=a,r=b")),
		"h NO unsupported authentication mechanism")
	// The authorization identity must be the user itself.
	cl, _ := scram.SHA256.NewClient(testUser, testPassword, "bob@example.org")
	got := c.authenticate("i", "SCRAM-SHA-256", cl.NewConversation(), true)
	if got[len(got)-1] != "i NO [AUTHZFAILED] authorization identity not permitted" {
		t.Fatalf("authz: %q", got)
	}
	rec.expect(t, "authz", audit.Event{Event: audit.EventLoginFailed, Proto: "imap", User: testUser,
		Mech: "SCRAM-SHA-256", Detail: "authorization identity bob@example.org not permitted"})
	// Still not authenticated after all that.
	c.exchange("j", "SELECT INBOX", "j BAD not authenticated")
}

// SCRAM-SHA-256-PLUS over implicit TLS 1.3 and over STARTTLS with TLS
// 1.2, with both binding types, the binding data computed by the client
// from its own view of the connection (xdg-go/scram).
func TestSCRAMPlusChannelBinding(t *testing.T) {
	rec := &eventLog{}
	e := newSCRAMEnv(t, envOptions{stls: true, remote: true}, func(s *Server) { s.Audit = rec })
	bindings := map[string]func(*tls.ConnectionState) (scram.ChannelBinding, error){
		"tls-exporter":         scram.NewTLSExporterBinding,
		"tls-server-end-point": scram.NewTLSServerEndpointBinding,
	}
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for name, bind := range bindings {
			cfg := clientTLSConfig(t)
			cfg.MaxVersion = version
			c := e.dialRaw()
			c.line()
			cs := c.startTLS(cfg)
			if cs.Version != version {
				t.Fatalf("negotiated %x, want %x", cs.Version, version)
			}
			cb, err := bind(&cs)
			if err != nil {
				t.Fatal(err)
			}
			conv := newSCRAMClient(t, testUser, testPassword).NewConversationWithChannelBinding(cb)
			got := c.authenticate("a", "SCRAM-SHA-256-PLUS", conv, version == tls.VersionTLS13)
			if got[len(got)-1] != "a OK [CAPABILITY "+wantCaps+"] AUTHENTICATE completed" || !conv.Valid() {
				t.Fatalf("TLS %x %s: %q", version, name, got)
			}
			rec.expect(t, name, audit.Event{Event: audit.EventLogin, Proto: "imap", User: testUser, TLS: true, Mech: "SCRAM-SHA-256-PLUS"})
		}
	}

	// The binding of another TLS connection (what a man in the middle
	// that terminates TLS would have to send) is refused.
	other := e.dialRaw()
	other.line()
	otherCS := other.startTLS(clientTLSConfig(t))
	wrong, _ := scram.NewTLSExporterBinding(&otherCS)
	c := e.dialRaw()
	c.line()
	c.startTLS(clientTLSConfig(t))
	got := c.authenticate("b", "SCRAM-SHA-256-PLUS", newSCRAMClient(t, testUser, testPassword).NewConversationWithChannelBinding(wrong), true)
	if len(got) != 2 || got[1] != "b NO [AUTHENTICATIONFAILED] SCRAM channel binding failed" {
		t.Fatalf("foreign binding: %q", got)
	}
	rec.expect(t, "foreign binding", audit.Event{Event: audit.EventLoginFailed, Proto: "imap", User: testUser, TLS: true,
		Mech: "SCRAM-SHA-256-PLUS", Detail: "auth: SCRAM channel binding failed: channel binding data does not match this connection"})

	// Downgrade protection (RFC 5802 §6): a client that supports channel
	// binding but did not see -PLUS (gs2 flag "y") is refused on a
	// connection where -PLUS is offered.
	got = c.authenticate("c", "SCRAM-SHA-256", newSCRAMClient(t, testUser, testPassword).NewConversationAdvertisingChannelBinding(), true)
	if len(got) != 1 || got[0] != "c NO [AUTHENTICATIONFAILED] SCRAM channel binding failed" {
		t.Fatalf("downgrade: %q", got)
	}
	rec.take(t)
	e.logHasSubstring("possible downgrade attack")
	// The same client flag without TLS is the truth, and accepted.
	plain := newSCRAMEnv(t, envOptions{}, nil)
	pc := plain.dial()
	conv := newSCRAMClient(t, testUser, testPassword).NewConversationAdvertisingChannelBinding()
	if got := pc.authenticate("d", "SCRAM-SHA-256", conv, true); got[len(got)-1] != "d OK [CAPABILITY "+wantCaps+"] AUTHENTICATE completed" {
		t.Fatalf("y without TLS: %q", got)
	}
}

func (e *testEnv) logHasSubstring(s string) {
	e.t.Helper()
	for _, l := range e.logs.all() {
		if strings.Contains(l, s) {
			return
		}
	}
	e.t.Fatalf("no log line contains %q", s)
}

// The LOGIN mechanism: "Username:" and "Password:" prompts, or the user
// name as initial response; plaintext rules as for PLAIN.
func TestAuthenticateLoginMechanism(t *testing.T) {
	rec := &eventLog{}
	e := newSCRAMEnv(t, envOptions{stls: true, remote: true}, func(s *Server) { s.Audit = rec })
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c := e.dial()
	c.exchange("a", "AUTHENTICATE LOGIN", "a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-TLS connections, use STARTTLS")
	c.exchange("b", "AUTHENTICATE PLAIN "+plainResp("", testUser, testPassword),
		"b NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-TLS connections, use STARTTLS")
	c.startTLS(clientTLSConfig(t))
	c.send("c AUTHENTICATE LOGIN")
	c.expect("+ VXNlcm5hbWU6") // "Username:"
	c.send(b64(testUser))
	c.expect("+ UGFzc3dvcmQ6") // "Password:"
	c.send(b64("wrong"))
	c.expect("c NO [AUTHENTICATIONFAILED] Invalid credentials")
	rec.expect(t, "LOGIN mech failed", audit.Event{Event: audit.EventLoginFailed, Proto: "imap", User: testUser, TLS: true,
		Mech: "SASL-LOGIN", Detail: "invalid credentials"})
	c.send("d AUTHENTICATE LOGIN " + b64(testUser))
	c.expect("+ UGFzc3dvcmQ6")
	c.send(b64(testPassword))
	c.expect("d OK [CAPABILITY " + wantCaps + "] AUTHENTICATE completed")
	rec.expect(t, "LOGIN mech", audit.Event{Event: audit.EventLogin, Proto: "imap", User: testUser, TLS: true, Mech: "SASL-LOGIN"})
}

// Accounts without SCRAM keys (made before SCRAM support) fail SCRAM like
// a wrong password, and get keys at their next password login.
func TestSCRAMKeysAfterPasswordLogin(t *testing.T) {
	var authn *auth.Authenticator
	e := newEnv(t, envOptions{tune: func(s *Server) {
		authn = scramAuthenticator(s.Store)
		authn.Logger = s.Logger
		s.Auth = authn
	}})
	ctx := context.Background()
	got := e.dial().authenticate("a", "SCRAM-SHA-256", newSCRAMClient(t, testUser, testPassword).NewConversation(), true)
	if got[len(got)-1] != "a NO [AUTHENTICATIONFAILED] Invalid credentials" {
		t.Fatalf("SCRAM without keys: %q", got)
	}
	e.login()
	if err := authn.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := e.store.Account(ctx, testUser)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := auth.CheckSCRAMSecret(a.SCRAMSHA256, testPassword); !ok || err != nil {
		t.Fatalf("stored secret %q: %v %v", a.SCRAMSHA256, ok, err)
	}
	conv := newSCRAMClient(t, testUser, testPassword).NewConversation()
	got = e.dial().authenticate("b", "SCRAM-SHA-256", conv, true)
	if got[len(got)-1] != "b OK [CAPABILITY "+wantCaps+"] AUTHENTICATE completed" || !strings.HasSuffix(got[0], ",i=65536") {
		t.Fatalf("SCRAM with the new keys: %q", got)
	}
	e.logHasSubstring("SCRAM-SHA-256 keys stored after password login")
}

// tls.require_tls_for_auth = false: plaintext passwords on a remote
// connection without TLS.
func TestPlaintextAllowedWithoutTLS(t *testing.T) {
	e := newSCRAMEnv(t, envOptions{stls: true, remote: true}, func(s *Server) { s.Auth.AllowPlaintextWithoutTLS = true })
	c := e.dialRaw()
	c.expect("* OK [CAPABILITY " + wantCaps + " STARTTLS AUTH=SCRAM-SHA-256 AUTH=PLAIN AUTH=LOGIN] imap.test Letterbox IMAP server ready")
	c.exchange("a", "LOGIN "+testUser+` "`+testPassword+`"`, "a OK [CAPABILITY "+wantCaps+"] LOGIN completed")
	c2 := e.dial()
	c2.exchange("b", "AUTHENTICATE PLAIN "+plainResp("", testUser, testPassword), "b OK [CAPABILITY "+wantCaps+"] AUTHENTICATE completed")
}

// TestPythonSCRAM: an independent SCRAM-SHA-256 client, written in Python
// from RFC 5802 with hashlib and hmac only (testdata/scram_imaplib.py),
// logs in through imaplib.
func TestPythonSCRAM(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	e := newSCRAMEnv(t, envOptions{}, nil)
	host, port, _ := strings.Cut(e.addr, ":")
	out, err := exec.Command(py, "testdata/scram_imaplib.py", host, port, testUser, testPassword).CombinedOutput()
	want := "ok capability AUTH=SCRAM-SHA-256\nok wrong password refused\nok server signature verified\nok select\nok logout\n"
	if err != nil || string(out) != want {
		t.Fatalf("scram_imaplib.py: %v\n%s", err, out)
	}
}
