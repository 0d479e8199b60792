package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/letterbox/letterbox/internal/auth"
)

var (
	capsLoopback = []string{"TOP", "UIDL", "USER", "SASL PLAIN LOGIN", "RESP-CODES", "AUTH-RESP-CODE",
		"PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION Letterbox"}
	capsLoopbackSTLS = append(slices.Clone(capsLoopback), "STLS")
	capsRemoteSTLS   = []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE",
		"PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION Letterbox", "STLS"}
	capsRemoteNoTLS = []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE",
		"PIPELINING", "EXPIRE NEVER", "IMPLEMENTATION Letterbox"}
)

func (c *client) capa(want []string) {
	c.t.Helper()
	c.cmdExpect("CAPA", "+OK Capability list follows")
	if got := c.multi(); !slices.Equal(got, want) {
		c.t.Fatalf("CAPA = %q, want %q", got, want)
	}
}

func TestAuthorizationState(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial()
	c.capa(capsLoopback)
	c.cmdExpect("capa", "+OK Capability list follows")
	if got := c.multi(); !slices.Equal(got, capsLoopback) {
		t.Fatalf("lower-case capa = %q", got)
	}
	c.cmdExpect("STAT", "-ERR not logged in")
	c.cmdExpect("NOOP", "-ERR not logged in")
	c.cmdExpect("PASS "+testPassword, "-ERR PASS must follow USER")
	c.cmdExpect("APOP alice 0123456789abcdef0123456789abcdef", "-ERR APOP is not supported")
	c.cmdExpect("USER", "-ERR missing user name")
	// PASS must come immediately after USER.
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("CAPA", "+OK Capability list follows")
	c.multi()
	c.cmdExpect("PASS "+testPassword, "-ERR PASS must follow USER")
	c.cmdExpect("STLS", "-ERR STLS not available")
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off")
	c.expectEOF()
}

func TestLoginUserPass(t *testing.T) {
	t.Parallel() // argon2 with production parameters is slow under -race
	e := newEnv(t, envOptions{})
	e.deliver("Subject: a\r\n\r\nx\r\n")
	e.deliver("Subject: b\r\n\r\ny\r\n")
	c := e.dial()
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS wrong password", "-ERR [AUTH] Authentication failed")
	// An unknown user gets the identical answer, already at USER and at PASS.
	c.cmdExpect("USER nobody@example.org", "+OK send PASS")
	c.cmdExpect("PASS "+testPassword, "-ERR [AUTH] Authentication failed")
	// The password is the rest of the line, spaces included.
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS  "+testPassword, "-ERR [AUTH] Authentication failed")
	// Login names are case-insensitive.
	c.cmdExpect("user ALICE@Example.org", "+OK send PASS")
	c.cmdExpect("pass "+testPassword, "+OK maildrop locked and ready, 2 messages")
	c.cmdExpect("STAT", "+OK 2 34")
	c.capa(capsLoopback) // the same list in the TRANSACTION state
	c.cmdExpect("USER "+testUser, "-ERR already logged in")
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
	c.expectEOF()
	e.waitSessionEnd()

	var failures, logins int
	for _, l := range e.logs.all() {
		if strings.Contains(l, "auth failed") {
			failures++
		}
		if strings.Contains(l, "msg=login") || strings.HasPrefix(l, "INFO login ") {
			logins++
			if !strings.Contains(l, "user="+testUser) {
				t.Errorf("login log without user: %s", l)
			}
		}
	}
	if failures != 3 || logins != 1 {
		t.Errorf("logged %d auth failures and %d logins, want 3 and 1:\n%s", failures, logins,
			strings.Join(e.logs.all(), "\n"))
	}
}

func TestRealPasswordHash(t *testing.T) {
	t.Parallel() // argon2 with production parameters is slow under -race
	hash, err := auth.HashPassword(testPassword)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{hash: hash})
	c := e.dial()
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword), "+OK maildrop locked and ready, 0 messages")
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
}

func TestAuthBackendFailure(t *testing.T) {
	e := newEnv(t, envOptions{lookup: func(context.Context, string) (string, string, error) {
		return "", "", errors.New("database unavailable")
	}})
	c := e.dial()
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS "+testPassword, "-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later")
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword),
		"-ERR [SYS/TEMP] Authentication temporarily unavailable, try again later")
}

func TestAuthPlain(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver("Subject: a\r\n\r\nx\r\n")
	ok := "+OK maildrop locked and ready, 1 message"
	quit := func(c *client) {
		t.Helper()
		c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
		c.expectEOF()
	}

	// Initial response.
	c := e.dial()
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword), ok)
	quit(c)

	// Continuation with an empty challenge; the mechanism name is
	// case-insensitive; authzid equal to authcid is allowed.
	c = e.dial()
	c.cmdExpect("auth plain", "+ ")
	c.cmdExpect(plainResp("ALICE@example.org", "alice@example.org", testPassword), ok)
	quit(c)

	// Failures, all in one session (fewer than ten errors).
	c = e.dial()
	c.cmdExpect("AUTH", "+OK")
	if got := c.multi(); !slices.Equal(got, []string{"PLAIN", "LOGIN"}) {
		t.Fatalf("AUTH mechanism list = %q", got)
	}
	c.cmdExpect("AUTH PLAIN", "+ ")
	c.cmdExpect("*", "-ERR authentication cancelled")
	c.cmdExpect("AUTH PLAIN", "+ ")
	c.cmdExpect("not base64!", "-ERR invalid base64 in SASL response")
	c.cmdExpect("AUTH PLAIN @@@@", "-ERR invalid base64 in SASL response")
	c.cmdExpect("AUTH PLAIN =", "-ERR malformed SASL PLAIN response")
	c.cmdExpect("AUTH PLAIN "+plainResp("bob@example.org", testUser, testPassword),
		"-ERR [AUTH] authorization identity not permitted")
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, "wrong"), "-ERR [AUTH] Authentication failed")
	c.cmdExpect("AUTH CRAM-MD5", "-ERR unsupported authentication mechanism")
	c.cmdExpect("AUTH PLAIN", "+ ")
	c.cmdExpect(strings.Repeat("QUFB", 600), "-ERR line too long")
	c.cmdExpect("AUTH PLAIN", "+ ")
	c.cmdExpect(plainResp("", testUser, testPassword), ok)
	quit(c)
}

func TestPlaintextRefusedWithoutTLS(t *testing.T) {
	e := newEnv(t, envOptions{remote: true, stls: true})
	e.deliver("Subject: a\r\n\r\nx\r\n")
	c := e.dial()
	c.capa(capsRemoteSTLS)
	refusal := "-ERR [AUTH] Plaintext authentication disallowed on non-TLS connections, use STLS"
	c.cmdExpect("USER "+testUser, refusal)
	c.cmdExpect("PASS "+testPassword, "-ERR PASS must follow USER")
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword), refusal)
	c.cmdExpect("AUTH PLAIN", refusal)
	c.cmdExpect("AUTH", "+OK")
	if got := c.multi(); len(got) != 0 {
		t.Fatalf("AUTH lists %q without TLS", got)
	}

	// STLS, then the same connection may log in.
	c.cmdExpect("STLS", "+OK Begin TLS negotiation now")
	tc := tls.Client(c.conn, clientTLSConfig(t))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = &client{t: t, conn: tc, r: bufio.NewReader(tc)}
	c.capa(capsLoopback)
	c.cmdExpect("STLS", "-ERR command not permitted when TLS active")
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS "+testPassword, "+OK maildrop locked and ready, 1 message")
	c.cmdExpect("LIST 1", "+OK 1 17")
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
	c.expectEOF()

	refused := 0
	for _, l := range e.logs.all() {
		if strings.Contains(l, "auth refused") {
			refused++
		}
	}
	if refused != 3 {
		t.Errorf("logged %d refusals, want 3", refused)
	}
}

func TestPlaintextRefusedNoTLSConfig(t *testing.T) {
	e := newEnv(t, envOptions{remote: true})
	c := e.dial()
	c.capa(capsRemoteNoTLS)
	c.cmdExpect("USER "+testUser, "-ERR [AUTH] Plaintext authentication disallowed on non-TLS connections")
	c.cmdExpect("STLS", "-ERR STLS not available")
}

func TestSTLSResetsAuthorizationState(t *testing.T) {
	e := newEnv(t, envOptions{stls: true})
	c := e.dial()
	c.capa(capsLoopbackSTLS)
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	// A command pipelined in plaintext after STLS must not be executed
	// inside the TLS session (the STARTTLS injection attack).
	c.send("STLS", "USER "+testUser)
	c.expect("+OK Begin TLS negotiation now")
	tc := tls.Client(c.conn, clientTLSConfig(t))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = &client{t: t, conn: tc, r: bufio.NewReader(tc)}
	// Neither the USER before STLS nor the injected one survives.
	c.cmdExpect("PASS "+testPassword, "-ERR PASS must follow USER")
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword), "+OK maildrop locked and ready, 0 messages")
}

func TestSTLSBadHandshake(t *testing.T) {
	e := newEnv(t, envOptions{stls: true})
	c := e.dial()
	c.cmdExpect("STLS", "+OK Begin TLS negotiation now")
	c.send("this is not a TLS ClientHello")
	e.waitSessionEnd()
}

func TestImplicitTLS(t *testing.T) {
	// Implicit TLS counts as secure even for a non-loopback client, and
	// offers no STLS.
	e := newEnv(t, envOptions{implicitTLS: true, remote: true, stls: true})
	e.deliver("Subject: a\r\n\r\nx\r\n")
	c := e.dialTLS()
	c.capa(capsLoopback)
	c.cmdExpect("STLS", "-ERR command not permitted when TLS active")
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS "+testPassword, "+OK maildrop locked and ready, 1 message")
	_, body := c.retrieve(1)
	if body != "Subject: a\r\n\r\nx\r\n" {
		t.Fatalf("RETR over TLS = %q", body)
	}
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
}

func TestInUse(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver("Subject: a\r\n\r\nx\r\n")
	a := e.login()

	b := e.dial()
	b.cmdExpect("USER "+testUser, "+OK send PASS")
	b.cmdExpect("PASS "+testPassword, "-ERR [IN-USE] Mailbox is locked by another POP3 session")
	// b stays in the AUTHORIZATION state.
	b.cmdExpect("STAT", "-ERR not logged in")
	b.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword),
		"-ERR [IN-USE] Mailbox is locked by another POP3 session")

	// QUIT releases the lock before its +OK, so b can log in at once.
	a.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
	b.cmdExpect("USER "+testUser, "+OK send PASS")
	b.cmdExpect("PASS "+testPassword, "+OK maildrop locked and ready, 1 message")
	b.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
}
