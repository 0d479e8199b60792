package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xdg-go/scram"
)

// testSCRAMIters keeps the client's PBKDF2 cheap in tests; production
// secrets use SCRAMIterations (TestNewSCRAMSecret).
const testSCRAMIters = 4096

var (
	remoteIP = netip.MustParseAddr("192.0.2.10")
	// Binding data of a pretend TLS connection; TLSChannelBindings is
	// tested against real connections in channelbinding_test.go.
	testBindings = ChannelBindings{
		ServerEndPoint: []byte("0123456789abcdef0123456789abcdef"),
		Exporter:       []byte("fedcba9876543210fedcba9876543210"),
	}
)

// testAccounts is an account table for a test Authenticator.
type testAccounts struct {
	mu    sync.Mutex
	creds map[string]Credentials // by lower-case name
	fail  error                  // returned by every lookup when set
	calls int
}

func (ta *testAccounts) lookup(ctx context.Context, user string) (Credentials, error) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.calls++
	if ta.fail != nil {
		return Credentials{}, ta.fail
	}
	c, ok := ta.creds[strings.ToLower(user)]
	if !ok {
		return Credentials{}, ErrUnknownUser
	}
	return c, nil
}

// newTestAuth returns an Authenticator with alice@example.org (password
// "pencil", argon2 hash and SCRAM secret) and old@example.org (password
// "pencil", no SCRAM secret).
func newTestAuth(t testing.TB) (*Authenticator, *testAccounts) {
	t.Helper()
	hash, err := hashWith("pencil", fastParams)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := newSCRAMSecretWith("pencil", testSCRAMIters)
	if err != nil {
		t.Fatal(err)
	}
	ta := &testAccounts{creds: map[string]Credentials{
		"alice@example.org": {Name: "alice@example.org", PasswordHash: hash, SCRAMSHA256: secret},
		"old@example.org":   {Name: "old@example.org", PasswordHash: hash},
	}}
	a := &Authenticator{
		Credentials: ta.lookup,
		Throttle:    &Throttle{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, Forget: time.Minute, MaxEntries: 100},
	}
	return a, ta
}

// clientTransport plays the client side of an exchange: respond computes
// each response line from the server's challenge.
type clientTransport struct {
	respond    func(challenge []byte) (string, error)
	challenges []string
}

func (c *clientTransport) Challenge(data []byte) error {
	c.challenges = append(c.challenges, string(data))
	return nil
}

func (c *clientTransport) Response() (string, error) {
	return c.respond([]byte(c.challenges[len(c.challenges)-1]))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// scramRun is the outcome of runSCRAM.
type scramRun struct {
	res        Result
	err        error
	challenges []string
	clientErr  error // the client's own verdict (server signature)
	clientDone bool
}

// runSCRAM drives an xdg-go/scram client conversation through Run. With
// ir, the client-first-message is the initial response; without, the
// client answers the server's empty first challenge with it.
func runSCRAM(a *Authenticator, c Conn, mech string, conv *scram.ClientConversation, ir bool) scramRun {
	var r scramRun
	tr := &clientTransport{respond: func(ch []byte) (string, error) {
		out, err := conv.Step(string(ch))
		if err != nil {
			r.clientErr = err
			return "*", nil
		}
		r.clientDone = conv.Done() && conv.Valid()
		return b64(out), nil
	}}
	var initial *string
	if ir {
		first, _ := conv.Step("")
		s := b64(first)
		initial = &s
	}
	r.res, r.err = a.Run(context.Background(), c, mech, initial, tr)
	r.challenges = tr.challenges
	return r
}

func newClient(t *testing.T, user, password, authz string) *scram.Client {
	t.Helper()
	cl, err := scram.SHA256.NewClient(user, password, authz)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestSCRAMHappyPath(t *testing.T) {
	a, _ := newTestAuth(t)
	for _, ir := range []bool{true, false} {
		cl := newClient(t, "Alice@Example.org", "pencil", "")
		r := runSCRAM(a, Conn{Remote: remoteIP}, "scram-sha-256", cl.NewConversation(), ir)
		if r.err != nil || r.clientErr != nil || !r.clientDone {
			t.Fatalf("ir=%v: err %v, client err %v, client done %v", ir, r.err, r.clientErr, r.clientDone)
		}
		want := Result{Mech: "SCRAM-SHA-256", User: "Alice@Example.org", Name: "alice@example.org"}
		if r.res != want {
			t.Fatalf("ir=%v: result %+v, want %+v", ir, r.res, want)
		}
		// Without an initial response: an empty challenge, then the
		// server-first and server-final messages.
		n := 2
		if !ir {
			n = 3
			if r.challenges[0] != "" {
				t.Fatalf("first challenge %q, want empty", r.challenges[0])
			}
		}
		if len(r.challenges) != n || !strings.HasPrefix(r.challenges[n-1], "v=") {
			t.Fatalf("ir=%v: challenges %q", ir, r.challenges)
		}
		if !strings.HasSuffix(r.challenges[n-2], ",i=4096") {
			t.Fatalf("server-first %q does not carry the stored iteration count", r.challenges[n-2])
		}
	}
}

// RFC 7677 §3's example exchange, byte for byte: the stored secret of
// "pencil" with the example's salt yields the example's server messages.
func TestSCRAMRFC7677Vector(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	sec, err := deriveSCRAM("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	a := &Authenticator{
		Credentials: func(ctx context.Context, user string) (Credentials, error) {
			if user != "user" {
				return Credentials{}, ErrUnknownUser
			}
			return Credentials{Name: "user", SCRAMSHA256: sec.String()}, nil
		},
		scramNonce: func() string { return "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0" },
	}
	lines := []string{
		b64("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
		"",
	}
	tr := &clientTransport{respond: func([]byte) (string, error) {
		l := lines[0]
		lines = lines[1:]
		return l, nil
	}}
	ir := b64("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
	res, err := a.Run(context.Background(), Conn{}, MechSCRAMSHA256, &ir, tr)
	if err != nil || res.Name != "user" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	want := []string{
		"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
	}
	if !slices.Equal(tr.challenges, want) {
		t.Fatalf("server messages\n%q\nwant\n%q", tr.challenges, want)
	}
}

func TestSCRAMFailuresLookAlike(t *testing.T) {
	a, _ := newTestAuth(t)
	a.Throttle = nil // no waiting; counted separately below
	// A wrong password, an unknown user and an account without SCRAM
	// keys fail the same way, at the proof, after a server-first-message
	// of the same shape; the salt of a name is stable.
	salts := map[string]string{}
	for _, tc := range []struct{ user, pass string }{
		{"alice@example.org", "pencil2"},
		{"nobody@example.org", "pencil"},
		{"nobody@example.org", "pencil"},
		{"old@example.org", "pencil"},
	} {
		cl := newClient(t, tc.user, tc.pass, "")
		r := runSCRAM(a, Conn{Remote: remoteIP}, MechSCRAMSHA256, cl.NewConversation(), true)
		if !errors.Is(r.err, ErrInvalidCredentials) || r.res.User != tc.user || r.res.Name != "" {
			t.Fatalf("%s/%s: %+v %v", tc.user, tc.pass, r.res, r.err)
		}
		if len(r.challenges) != 1 {
			t.Fatalf("%s: challenges %q", tc.user, r.challenges)
		}
		f := strings.Split(r.challenges[0], ",")
		if len(f) != 3 || !strings.HasPrefix(f[1], "s=") || len(f[1]) != len("s=")+24 {
			t.Fatalf("%s: server-first %q", tc.user, r.challenges[0])
		}
		if tc.user != "alice@example.org" && f[2] != "i=65536" {
			t.Fatalf("%s: fake iteration count %q, want SCRAMIterations", tc.user, f[2])
		}
		if s, seen := salts[tc.user]; seen && s != f[1] {
			t.Fatalf("%s: salt changed between attempts: %s, %s", tc.user, s, f[1])
		}
		salts[tc.user] = f[1]
	}
}

func TestSCRAMThrottle(t *testing.T) {
	a, _ := newTestAuth(t)
	wrong := newClient(t, "alice@example.org", "wrong", "")
	for i := range 3 {
		r := runSCRAM(a, Conn{Remote: remoteIP}, MechSCRAMSHA256, wrong.NewConversation(), true)
		if !errors.Is(r.err, ErrInvalidCredentials) {
			t.Fatalf("attempt %d: %v", i, r.err)
		}
	}
	if n := a.Throttle.Failures(remoteIP); n != 3 {
		t.Fatalf("failures %d, want 3", n)
	}
	// A PLAIN failure counts on the same throttle.
	ir := b64("\x00alice@example.org\x00wrong")
	if _, err := a.Run(context.Background(), Conn{Remote: remoteIP, PlaintextOK: true}, MechPlain, &ir, nil); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatal(err)
	}
	if n := a.Throttle.Failures(remoteIP); n != 4 {
		t.Fatalf("failures %d, want 4", n)
	}
	right := newClient(t, "alice@example.org", "pencil", "")
	if r := runSCRAM(a, Conn{Remote: remoteIP}, MechSCRAMSHA256, right.NewConversation(), true); r.err != nil {
		t.Fatal(r.err)
	}
	if n := a.Throttle.Failures(remoteIP); n != 0 {
		t.Fatalf("failures after success %d, want 0", n)
	}
	// A cancelled context ends the throttle wait with its error.
	a.Throttle.Failure(remoteIP, "alice@example.org")
	a.Throttle.BaseDelay, a.Throttle.MaxDelay = time.Hour, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	first, _ := right.NewConversation().Step("")
	ir = b64(first)
	if _, err := a.Run(ctx, Conn{Remote: remoteIP}, MechSCRAMSHA256, &ir, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
}

func TestSCRAMChannelBinding(t *testing.T) {
	a, _ := newTestAuth(t)
	tlsConn := Conn{Remote: remoteIP, Bindings: testBindings}
	cl := newClient(t, "alice@example.org", "pencil", "")
	for _, tc := range []struct {
		name    string
		conn    Conn
		mech    string
		conv    *scram.ClientConversation
		wantErr error
		detail  string
	}{
		{"exporter", tlsConn, MechSCRAMSHA256Plus,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-exporter", Data: testBindings.Exporter}), nil, ""},
		{"server-end-point", tlsConn, MechSCRAMSHA256Plus,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-server-end-point", Data: testBindings.ServerEndPoint}), nil, ""},
		{"endpoint only", Conn{Bindings: ChannelBindings{ServerEndPoint: testBindings.ServerEndPoint}}, MechSCRAMSHA256Plus,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-server-end-point", Data: testBindings.ServerEndPoint}), nil, ""},
		// A client bound to another TLS session (a man in the middle
		// terminating TLS) fails at the final message.
		{"exporter mismatch", tlsConn, MechSCRAMSHA256Plus,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-exporter", Data: []byte("another TLS session's exporter.")}),
			ErrChannelBinding, "does not match"},
		{"end-point mismatch", tlsConn, MechSCRAMSHA256Plus,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-server-end-point", Data: []byte("another certificate")}),
			ErrChannelBinding, "does not match"},
		{"type unavailable", Conn{Bindings: ChannelBindings{ServerEndPoint: testBindings.ServerEndPoint}}, MechSCRAMSHA256Plus,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-exporter", Data: testBindings.Exporter}),
			ErrChannelBinding, `"tls-exporter" is not available`},
		{"tls-unique", tlsConn, MechSCRAMSHA256Plus,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-unique", Data: []byte("finished")}),
			ErrChannelBinding, `"tls-unique" is not available`},
		// The -PLUS mechanism without binding ("n") is refused.
		{"plus without binding", tlsConn, MechSCRAMSHA256Plus, cl.NewConversation(), ErrChannelBinding, "requires channel binding"},
		// Downgrade protection (RFC 5802 §6): "y" means the client
		// supports binding but thinks the server does not; PLUS was
		// offered here, so something removed it from the list.
		{"downgrade y", tlsConn, MechSCRAMSHA256, cl.NewConversationAdvertisingChannelBinding(), ErrChannelBinding, "downgrade"},
		// Without TLS nothing was offered: "y" is the truth and accepted.
		{"y without TLS", Conn{Remote: remoteIP}, MechSCRAMSHA256, cl.NewConversationAdvertisingChannelBinding(), nil, ""},
		// "n" on TLS: the client does not do binding; accepted.
		{"n on TLS", tlsConn, MechSCRAMSHA256, cl.NewConversation(), nil, ""},
		// "p" with the plain mechanism (Cyrus SASL does this): the
		// binding is checked, so it is as strong as -PLUS; accepted.
		{"p with plain mech", tlsConn, MechSCRAMSHA256,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-exporter", Data: testBindings.Exporter}), nil, ""},
		{"p without TLS", Conn{}, MechSCRAMSHA256,
			cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-exporter", Data: testBindings.Exporter}),
			ErrChannelBinding, "not available"},
	} {
		r := runSCRAM(a, tc.conn, tc.mech, tc.conv, true)
		if tc.wantErr == nil {
			if r.err != nil || r.clientErr != nil || !r.clientDone || r.res.Name != "alice@example.org" {
				t.Errorf("%s: %+v, err %v, client err %v", tc.name, r.res, r.err, r.clientErr)
			}
			continue
		}
		if !errors.Is(r.err, tc.wantErr) || !strings.Contains(r.err.Error(), tc.detail) || r.res.Name != "" {
			t.Errorf("%s: %+v, err %v; want %v containing %q", tc.name, r.res, r.err, tc.wantErr, tc.detail)
		}
	}
	// PLUS is not accepted where it is not offered.
	r := runSCRAM(a, Conn{}, MechSCRAMSHA256Plus, cl.NewConversation(), true)
	if !errors.Is(r.err, ErrUnsupportedMechanism) || len(r.challenges) != 0 {
		t.Fatalf("PLUS without TLS: %v, %q", r.err, r.challenges)
	}
}

// A binding mismatch counts as a failed login for the throttle.
func TestSCRAMChannelBindingMismatchThrottled(t *testing.T) {
	a, _ := newTestAuth(t)
	cl := newClient(t, "alice@example.org", "pencil", "")
	conv := cl.NewConversationWithChannelBinding(scram.ChannelBinding{Type: "tls-exporter", Data: []byte("x")})
	r := runSCRAM(a, Conn{Remote: remoteIP, Bindings: testBindings}, MechSCRAMSHA256Plus, conv, true)
	if !errors.Is(r.err, ErrChannelBinding) || a.Throttle.Failures(remoteIP) != 1 {
		t.Fatalf("err %v, failures %d", r.err, a.Throttle.Failures(remoteIP))
	}
}

func TestSCRAMAuthz(t *testing.T) {
	a, _ := newTestAuth(t)
	r := runSCRAM(a, Conn{}, MechSCRAMSHA256, newClient(t, "alice@example.org", "pencil", "ALICE@example.org").NewConversation(), true)
	if r.err != nil || r.res.Name != "alice@example.org" || r.res.Authz != "ALICE@example.org" {
		t.Fatalf("authz = self: %+v %v", r.res, r.err)
	}
	r = runSCRAM(a, Conn{}, MechSCRAMSHA256, newClient(t, "alice@example.org", "pencil", "bob@example.org").NewConversation(), true)
	if !errors.Is(r.err, ErrAuthzFailed) || r.res.Authz != "bob@example.org" || r.res.Name != "" {
		t.Fatalf("authz = other: %+v %v", r.res, r.err)
	}
	// A wrong password with a foreign authz is a credentials failure:
	// authorization is decided only for an authenticated client.
	r = runSCRAM(a, Conn{}, MechSCRAMSHA256, newClient(t, "alice@example.org", "x", "bob@example.org").NewConversation(), true)
	if !errors.Is(r.err, ErrInvalidCredentials) {
		t.Fatalf("authz = other, wrong password: %v", r.err)
	}
}

// scripted runs an exchange whose client responses are the given lines.
func scripted(a *Authenticator, c Conn, mech string, initial *string, lines ...string) (Result, []string, error) {
	tr := &clientTransport{respond: func([]byte) (string, error) {
		if len(lines) == 0 {
			return "", errors.New("script exhausted")
		}
		l := lines[0]
		lines = lines[1:]
		return l, nil
	}}
	res, err := a.Run(context.Background(), c, mech, initial, tr)
	return res, tr.challenges, err
}

func ptr(s string) *string { return &s }

func TestSCRAMMalformed(t *testing.T) {
	a, ta := newTestAuth(t)
	cl := newClient(t, "alice@example.org", "pencil", "")
	for _, tc := range []struct {
		name    string
		initial *string
		lines   []string
		want    error
	}{
		{"not base64", ptr("n,,n=alice"), nil, ErrBadBase64},
		{"cancel", nil, []string{"*"}, ErrCancelled},
		{"garbage first", ptr(b64("hello")), nil, ErrMalformed},
		{"bad gs2 flag", ptr(b64("x,,n=alice@example.org,r=abcdefgh")), nil, ErrMalformed},
		{"extension m=", ptr(b64("n,,m=ext,n=alice@example.org,r=abcdefgh")), nil, ErrMalformed},
		{"bad saslname", ptr(b64("n,,n=al=ice,r=abcdefgh")), nil, ErrMalformed},
		{"no nonce", ptr(b64("n,,n=alice@example.org")), nil, ErrMalformed},
		{"garbage final", ptr(b64("n,,n=alice@example.org,r=abcdefgh")), []string{b64("c=biws")}, ErrMalformed},
		{"final not base64", ptr(b64("n,,n=alice@example.org,r=abcdefgh")), []string{"!!"}, ErrBadBase64},
		{"wrong nonce", ptr(b64("n,,n=alice@example.org,r=abcdefgh")),
			[]string{b64("c=biws,r=abcdefghOTHER,p=" + b64(strings.Repeat("x", 32)))}, ErrMalformed},
		{"cancel at final", ptr(b64("n,,n=alice@example.org,r=abcdefgh")), []string{"*"}, ErrCancelled},
	} {
		res, _, err := scripted(a, Conn{Remote: remoteIP}, MechSCRAMSHA256, tc.initial, tc.lines...)
		if !errors.Is(err, tc.want) || res.Name != "" {
			t.Errorf("%s: %+v, %v; want %v", tc.name, res, err, tc.want)
		}
	}
	// A proof of the wrong length, with the right nonce.
	tr := &clientTransport{}
	tr.respond = func(ch []byte) (string, error) {
		nonce := strings.TrimPrefix(strings.Split(string(ch), ",")[0], "r=")
		return b64("c=biws,r=" + nonce + ",p=" + b64("short")), nil
	}
	if _, err := a.Run(context.Background(), Conn{}, MechSCRAMSHA256, ptr(b64("n,,n=alice@example.org,r=abcdefgh")), tr); !errors.Is(err, ErrMalformed) {
		t.Errorf("short proof: %v", err)
	}
	// Something other than an empty response after the server-final
	// message fails the exchange although the proof was right.
	conv := cl.NewConversation()
	first, _ := conv.Step("")
	step := 0
	tr = &clientTransport{respond: func(ch []byte) (string, error) {
		step++
		if step == 2 {
			return b64("extra"), nil
		}
		out, err := conv.Step(string(ch))
		return b64(out), err
	}}
	if res, err := a.Run(context.Background(), Conn{}, MechSCRAMSHA256, ptr(b64(first)), tr); !errors.Is(err, ErrMalformed) || res.Name != "" || res.User != "alice@example.org" {
		t.Errorf("response after v=: %+v %v", res, err)
	}
	// None of the malformed exchanges counted as a failed login.
	if n := a.Throttle.Failures(remoteIP); n != 0 {
		t.Errorf("malformed messages counted %d failures", n)
	}
	// A backend failure is reported as itself, not as bad credentials.
	ta.fail = errors.New("database down")
	if _, _, err := scripted(a, Conn{}, MechSCRAMSHA256, ptr(b64("n,,n=alice@example.org,r=abcdefgh"))); err != ta.fail {
		t.Errorf("backend failure: %v", err)
	}
	ta.fail = nil
	// So is a corrupt stored secret.
	ta.creds["bad@example.org"] = Credentials{Name: "bad@example.org", SCRAMSHA256: "SCRAM-SHA-256$1:x$y:z"}
	if _, _, err := scripted(a, Conn{}, MechSCRAMSHA256, ptr(b64("n,,n=bad@example.org,r=abcdefgh"))); !errors.Is(err, ErrMalformedSCRAMSecret) {
		t.Errorf("corrupt secret: %v", err)
	}
}

func TestPlainAndLogin(t *testing.T) {
	a, _ := newTestAuth(t)
	secure := Conn{Remote: remoteIP, PlaintextOK: true}
	for _, tc := range []struct {
		name       string
		conn       Conn
		mech       string
		initial    *string
		lines      []string
		want       Result
		wantErr    error
		challenges []string
	}{
		{"plain ir", secure, "plain", ptr(b64("\x00alice@example.org\x00pencil")), nil,
			Result{Mech: "PLAIN", User: "alice@example.org", Name: "alice@example.org"}, nil, nil},
		{"plain continuation", secure, "PLAIN", nil, []string{b64("ALICE@example.org\x00alice@example.org\x00pencil")},
			Result{Mech: "PLAIN", User: "alice@example.org", Authz: "ALICE@example.org", Name: "alice@example.org"}, nil, []string{""}},
		{"plain wrong", secure, "PLAIN", ptr(b64("\x00alice@example.org\x00x")), nil,
			Result{Mech: "PLAIN", User: "alice@example.org"}, ErrInvalidCredentials, nil},
		{"plain authz", secure, "PLAIN", ptr(b64("bob@example.org\x00alice@example.org\x00pencil")), nil,
			Result{Mech: "PLAIN", User: "alice@example.org", Authz: "bob@example.org"}, ErrAuthzFailed, nil},
		{"plain empty", secure, "PLAIN", ptr("="), nil, Result{Mech: "PLAIN"}, ErrMalformed, nil},
		{"plain no authcid", secure, "PLAIN", ptr(b64("\x00\x00pencil")), nil, Result{Mech: "PLAIN"}, ErrMalformed, nil},
		{"plain four parts", secure, "PLAIN", ptr(b64("\x00a\x00b\x00c")), nil, Result{Mech: "PLAIN"}, ErrMalformed, nil},
		{"plain insecure", Conn{}, "PLAIN", ptr("!!"), nil, Result{Mech: "PLAIN"}, ErrPlaintextRefused, nil},
		{"login", secure, "login", nil, []string{b64("alice@example.org"), b64("pencil")},
			Result{Mech: "LOGIN", User: "alice@example.org", Name: "alice@example.org"}, nil, []string{"Username:", "Password:"}},
		{"login ir", secure, "LOGIN", ptr(b64("alice@example.org")), []string{b64("pencil")},
			Result{Mech: "LOGIN", User: "alice@example.org", Name: "alice@example.org"}, nil, []string{"Password:"}},
		{"login empty ir", secure, "LOGIN", ptr("="), []string{b64("alice@example.org"), b64("pencil")},
			Result{Mech: "LOGIN", User: "alice@example.org", Name: "alice@example.org"}, nil, []string{"Username:", "Password:"}},
		{"login wrong", secure, "LOGIN", nil, []string{b64("alice@example.org"), b64("nope")},
			Result{Mech: "LOGIN", User: "alice@example.org"}, ErrInvalidCredentials, []string{"Username:", "Password:"}},
		{"login empty user", secure, "LOGIN", nil, []string{""}, Result{Mech: "LOGIN"}, ErrMalformed, []string{"Username:"}},
		{"login cancel", secure, "LOGIN", nil, []string{b64("alice@example.org"), "*"},
			Result{Mech: "LOGIN", User: "alice@example.org"}, ErrCancelled, []string{"Username:", "Password:"}},
		{"login insecure", Conn{}, "LOGIN", nil, nil, Result{Mech: "LOGIN"}, ErrPlaintextRefused, nil},
		{"unknown mech", secure, "CRAM-MD5", ptr("!!"), nil, Result{Mech: "CRAM-MD5"}, ErrUnsupportedMechanism, nil},
	} {
		res, ch, err := scripted(a, tc.conn, tc.mech, tc.initial, tc.lines...)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) || res != tc.want || !slices.Equal(ch, tc.challenges) {
			t.Errorf("%s: %+v %q %v; want %+v %q %v", tc.name, res, ch, err, tc.want, tc.challenges, tc.wantErr)
		}
	}
}

func TestMechanisms(t *testing.T) {
	a, _ := newTestAuth(t)
	for _, tc := range []struct {
		c    Conn
		want []string
	}{
		{Conn{}, []string{"SCRAM-SHA-256"}},
		{Conn{PlaintextOK: true}, []string{"SCRAM-SHA-256", "PLAIN", "LOGIN"}},
		{Conn{PlaintextOK: true, Bindings: testBindings}, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"}},
		{Conn{Bindings: ChannelBindings{Exporter: []byte("x")}}, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}},
	} {
		if got := a.Mechanisms(tc.c); !slices.Equal(got, tc.want) {
			t.Errorf("Mechanisms(%+v) = %q, want %q", tc.c, got, tc.want)
		}
	}
	// Without a source of SCRAM secrets SCRAM is neither offered nor run.
	legacy := &Authenticator{Lookup: func(context.Context, string) (string, string, error) { return "", "", ErrUnknownUser }}
	if got := legacy.Mechanisms(Conn{PlaintextOK: true, Bindings: testBindings}); !slices.Equal(got, []string{"PLAIN", "LOGIN"}) {
		t.Errorf("legacy Mechanisms = %q", got)
	}
	if _, _, err := scripted(legacy, Conn{}, MechSCRAMSHA256, ptr(b64("n,,n=a,r=abcdefgh"))); !errors.Is(err, ErrUnsupportedMechanism) {
		t.Errorf("legacy SCRAM: %v", err)
	}
	// PlaintextAllowed: secure connections always; others by policy.
	if !a.PlaintextAllowed(true) || a.PlaintextAllowed(false) {
		t.Error("PlaintextAllowed with the default policy")
	}
	a.AllowPlaintextWithoutTLS = true
	if !a.PlaintextAllowed(false) {
		t.Error("AllowPlaintextWithoutTLS ignored")
	}
	var none *Authenticator
	if none.PlaintextAllowed(false) || !none.PlaintextAllowed(true) {
		t.Error("nil Authenticator policy")
	}
}

func TestSaveSCRAMAfterPasswordLogin(t *testing.T) {
	a, ta := newTestAuth(t)
	type save struct{ name, hash, secret string }
	var mu sync.Mutex
	var saves []save
	release := make(chan struct{})
	a.SaveSCRAM = func(ctx context.Context, name, hash, secret string) (bool, error) {
		<-release
		mu.Lock()
		saves = append(saves, save{name, hash, secret})
		mu.Unlock()
		return true, nil
	}
	ctx := context.Background()
	// Two logins of the old account while the first save is pending:
	// one save. The login itself does not wait for it.
	for range 2 {
		if name, err := a.Authenticate(ctx, "OLD@example.org", "pencil", remoteIP); err != nil || name != "old@example.org" {
			t.Fatalf("login: %q %v", name, err)
		}
	}
	// An account that has a secret, and a failed login, save nothing.
	if _, err := a.Authenticate(ctx, "alice@example.org", "pencil", remoteIP); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(ctx, "old@example.org", "wrong", remoteIP); err != ErrInvalidCredentials {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, time.Millisecond)
	if err := a.Wait(waitCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a save pending: %v", err)
	}
	cancel()
	close(release)
	if err := a.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if len(saves) != 1 || saves[0].name != "old@example.org" || saves[0].hash != ta.creds["old@example.org"].PasswordHash {
		t.Fatalf("saves %+v", saves)
	}
	if ok, err := CheckSCRAMSecret(saves[0].secret, "pencil"); !ok || err != nil {
		t.Fatalf("saved secret does not match the password: %v %v", ok, err)
	}
	if !strings.HasPrefix(saves[0].secret, "SCRAM-SHA-256$65536:") {
		t.Fatalf("saved secret %q does not use SCRAMIterations", saves[0].secret)
	}
	// With the secret stored, SCRAM works for the account.
	old := ta.creds["old@example.org"]
	old.SCRAMSHA256 = saves[0].secret
	ta.creds["old@example.org"] = old
	r := runSCRAM(a, Conn{}, MechSCRAMSHA256, newClient(t, "old@example.org", "pencil", "").NewConversation(), true)
	if r.err != nil || r.res.Name != "old@example.org" {
		t.Fatalf("SCRAM after the save: %+v %v", r.res, r.err)
	}
}
