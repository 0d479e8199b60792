package pop3

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdg-go/scram"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/mailstore"
)

const loggedIn = "+OK maildrop locked and ready, 0 messages"

// quit ends a logged-in session.
func quit(c *client) {
	c.t.Helper()
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
	c.expectEOF()
}

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

// scramSecret is the SCRAM-SHA-256 secret of password with 4096
// iterations, computed by xdg-go/scram's client and encoded as documented
// in auth.NewSCRAMSecret.
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

// newSCRAMEnv is newEnv with the SCRAM-capable authenticator and SCRAM
// keys for testUser.
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

// authenticate runs AUTH mech with an xdg-go/scram client conversation and
// returns the lines the server sent, challenges decoded ("+ " and the
// text). With ir, the client-first-message is the initial response.
func (c *client) authenticate(mech string, conv *scram.ClientConversation, ir bool) []string {
	c.t.Helper()
	cmd := "AUTH " + mech
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
		ch, ok := strings.CutPrefix(l, "+ ")
		if !ok {
			return append(got, l)
		}
		dec, err := base64.StdEncoding.DecodeString(ch)
		if err != nil {
			c.t.Fatalf("challenge %q is not base64", l)
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

// stls upgrades c with STLS and returns the client's view of the TLS
// connection.
func (c *client) stls(cfg *tls.Config) tls.ConnectionState {
	c.t.Helper()
	c.cmdExpect("STLS", "+OK Begin TLS negotiation now")
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	return tc.ConnectionState()
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

func TestSCRAMCapa(t *testing.T) {
	e := newSCRAMEnv(t, envOptions{stls: true, remote: true}, nil)
	c := e.dial()
	// Remote without TLS: no USER, SASL with SCRAM only.
	c.capa([]string{"TOP", "UIDL", "SASL SCRAM-SHA-256", "RESP-CODES", "AUTH-RESP-CODE",
		"PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION Letterbox", "STLS"})
	c.cmdExpect("AUTH", "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"SCRAM-SHA-256"}) {
		t.Fatalf("AUTH list %q", got)
	}
	c.stls(clientTLSConfig(t))
	c.capa([]string{"TOP", "UIDL", "USER", "SASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN", "RESP-CODES", "AUTH-RESP-CODE",
		"PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION Letterbox"})
	c.cmdExpect("AUTH", "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"}) {
		t.Fatalf("AUTH list over TLS %q", got)
	}
}

func TestSCRAMAuth(t *testing.T) {
	e := newSCRAMEnv(t, envOptions{remote: true}, nil)
	for _, ir := range []bool{true, false} {
		c := e.dial()
		conv := newSCRAMClient(t, testUser, testPassword).NewConversation()
		got := c.authenticate("scram-sha-256", conv, ir)
		if !ir {
			if got[0] != "+ " {
				t.Fatalf("first challenge %q", got[0])
			}
			got = got[1:]
		}
		if len(got) != 3 || !strings.HasPrefix(got[0], "+ r=") || !strings.HasPrefix(got[1], "+ v=") || got[2] != loggedIn || !conv.Valid() {
			t.Fatalf("ir=%v: %q", ir, got)
		}
		c.cmdExpect("STAT", "+OK 0 0")
		quit(c)
	}
	c := e.dial()
	for _, user := range []string{testUser, "nobody@example.org"} {
		got := c.authenticate("SCRAM-SHA-256", newSCRAMClient(t, user, "wrong").NewConversation(), true)
		if len(got) != 2 || got[1] != "-ERR [AUTH] Authentication failed" {
			t.Fatalf("%s: %q", user, got)
		}
	}
	c.cmdExpect("AUTH SCRAM-SHA-256", "+ ")
	c.cmdExpect("*", "-ERR authentication cancelled")
	c.cmdExpect("AUTH SCRAM-SHA-256 "+base64.StdEncoding.EncodeToString([]byte("bad")), "-ERR malformed SASL SCRAM-SHA-256 response")
	c.cmdExpect("AUTH SCRAM-SHA-256 !!", "-ERR invalid base64 in SASL response")
	c.cmdExpect("AUTH SCRAM-SHA-256-PLUS "+base64.StdEncoding.EncodeToString([]byte("p=tls-exporter,,n=a,r=b")),
		"-ERR unsupported authentication mechanism")
	// PLAIN and LOGIN stay refused without TLS.
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword),
		"-ERR [AUTH] Plaintext authentication disallowed on non-TLS connections")
	c.cmdExpect("AUTH LOGIN", "-ERR [AUTH] Plaintext authentication disallowed on non-TLS connections")
	c.cmdExpect("STAT", "-ERR not logged in")
}

// SCRAM-SHA-256-PLUS over pop3s (TLS 1.3) and STLS (TLS 1.2), with both
// binding types; a foreign binding and a downgrade are refused.
func TestSCRAMPlus(t *testing.T) {
	e := newSCRAMEnv(t, envOptions{stls: true, remote: true}, nil)
	bindings := map[string]func(*tls.ConnectionState) (scram.ChannelBinding, error){
		"tls-exporter":         scram.NewTLSExporterBinding,
		"tls-server-end-point": scram.NewTLSServerEndpointBinding,
	}
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		for name, bind := range bindings {
			cfg := clientTLSConfig(t)
			cfg.MaxVersion = version
			c := e.dial()
			cs := c.stls(cfg)
			cb, err := bind(&cs)
			if err != nil {
				t.Fatal(err)
			}
			conv := newSCRAMClient(t, testUser, testPassword).NewConversationWithChannelBinding(cb)
			got := c.authenticate("SCRAM-SHA-256-PLUS", conv, version == tls.VersionTLS12)
			if got[len(got)-1] != loggedIn || !conv.Valid() {
				t.Fatalf("TLS %x %s: %q", version, name, got)
			}
			quit(c)
		}
	}
	e.logHasSubstring("mech=SCRAM-SHA-256-PLUS")

	other := e.dial()
	otherCS := other.stls(clientTLSConfig(t))
	wrong, _ := scram.NewTLSServerEndpointBinding(&otherCS)
	wrong.Data = append([]byte(nil), wrong.Data...)
	wrong.Data[0] ^= 1 // another certificate
	c := e.dial()
	c.stls(clientTLSConfig(t))
	got := c.authenticate("SCRAM-SHA-256-PLUS", newSCRAMClient(t, testUser, testPassword).NewConversationWithChannelBinding(wrong), true)
	if len(got) != 2 || got[1] != "-ERR [AUTH] SCRAM channel binding failed" {
		t.Fatalf("foreign binding: %q", got)
	}
	got = c.authenticate("SCRAM-SHA-256", newSCRAMClient(t, testUser, testPassword).NewConversationAdvertisingChannelBinding(), true)
	if len(got) != 1 || got[0] != "-ERR [AUTH] SCRAM channel binding failed" {
		t.Fatalf("downgrade: %q", got)
	}
	e.logHasSubstring("possible downgrade attack")
}

// pop3s (implicit TLS): tls-server-end-point needs Server.TLSConfig's
// certificate; with it both bindings work on the implicit-TLS listener.
func TestSCRAMPlusImplicitTLS(t *testing.T) {
	e := newSCRAMEnv(t, envOptions{implicitTLS: true, stls: true, remote: true}, nil)
	for _, bind := range []func(*tls.ConnectionState) (scram.ChannelBinding, error){scram.NewTLSExporterBinding, scram.NewTLSServerEndpointBinding} {
		c := e.dialTLS()
		cs := c.conn.(*tls.Conn).ConnectionState()
		cb, err := bind(&cs)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.authenticate("SCRAM-SHA-256-PLUS", newSCRAMClient(t, testUser, testPassword).NewConversationWithChannelBinding(cb), true); got[len(got)-1] != loggedIn {
			t.Fatalf("%s: %q", cb.Type, got)
		}
		quit(c)
	}
}

func TestAuthLoginMechanism(t *testing.T) {
	e := newSCRAMEnv(t, envOptions{}, nil)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c := e.dial()
	c.cmdExpect("AUTH LOGIN", "+ VXNlcm5hbWU6")
	c.cmdExpect(b64(testUser), "+ UGFzc3dvcmQ6")
	c.cmdExpect(b64("wrong"), "-ERR [AUTH] Authentication failed")
	c.cmdExpect("AUTH LOGIN "+b64(testUser), "+ UGFzc3dvcmQ6")
	c.cmdExpect(b64(testPassword), loggedIn)
	e.logHasSubstring("mech=SASL-LOGIN")
}

// Keys for an account without them at its next USER/PASS login.
func TestSCRAMKeysAfterUserPass(t *testing.T) {
	var authn *auth.Authenticator
	e := newEnv(t, envOptions{tune: func(s *Server) {
		authn = scramAuthenticator(s.Store)
		s.Auth = authn
	}})
	c := e.dial()
	if got := c.authenticate("SCRAM-SHA-256", newSCRAMClient(t, testUser, testPassword).NewConversation(), true); got[len(got)-1] != "-ERR [AUTH] Authentication failed" {
		t.Fatalf("SCRAM without keys: %q", got)
	}
	quit(e.login())
	ctx := context.Background()
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
	if got := e.dial().authenticate("SCRAM-SHA-256", newSCRAMClient(t, testUser, testPassword).NewConversation(), false); got[len(got)-1] != loggedIn {
		t.Fatalf("SCRAM with the new keys: %q", got)
	}
}

// tls.require_tls_for_auth = false: USER/PASS and PLAIN on a remote
// connection without TLS.
func TestPlaintextAllowedWithoutTLS(t *testing.T) {
	e := newSCRAMEnv(t, envOptions{stls: true, remote: true}, func(s *Server) { s.Auth.AllowPlaintextWithoutTLS = true })
	c := e.dial()
	c.capa([]string{"TOP", "UIDL", "USER", "SASL SCRAM-SHA-256 PLAIN LOGIN", "RESP-CODES", "AUTH-RESP-CODE",
		"PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION Letterbox", "STLS"})
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS "+testPassword, loggedIn)
	quit(c)
	c = e.dial()
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword), loggedIn)
}
