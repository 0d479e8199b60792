package imap

import (
	"bufio"
	"compress/flate"
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

const wantCaps = "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN " +
	"LIST-EXTENDED LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE STATUS=SIZE APPENDLIMIT=67108864 MULTIAPPEND UNAUTHENTICATE CONDSTORE ESEARCH SEARCHRES BINARY SAVEDATE QRESYNC UTF8=ACCEPT COMPRESS=DEFLATE QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE"

func TestGreetingCapabilityLogout(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dialRaw()
	c.expect("* OK [CAPABILITY " + wantCaps + " AUTH=PLAIN AUTH=LOGIN] imap.test Letterbox IMAP server ready")
	c.exchange("a1", "CAPABILITY", "* CAPABILITY "+wantCaps+" AUTH=PLAIN AUTH=LOGIN", "a1 OK CAPABILITY completed")
	c.exchange("a2", "noop", "a2 OK NOOP completed")
	c.exchange("a3", "LOGOUT", "* BYE logging out", "a3 OK LOGOUT completed")
	c.expectEOF()
}

func TestLogin(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial()
	c.exchange("a", "LOGIN "+testUser+` "wrong"`, "a NO [AUTHENTICATIONFAILED] Invalid credentials")
	c.exchange("b", "LOGIN nobody@example.org x", "b NO [AUTHENTICATIONFAILED] Invalid credentials")
	c.exchange("c", "SELECT INBOX", "c BAD not authenticated")
	c.exchange("d", "LOGIN "+testUser+` "`+testPassword+`"`, "d OK [CAPABILITY "+wantCaps+"] LOGIN completed")
	c.exchange("e", "LOGIN "+testUser+` x`, "e BAD already authenticated")
	c.exchange("f", "FETCH 1 FLAGS", "f BAD no mailbox selected")
	c.exchange("g", "NAMESPACE", `* NAMESPACE (("" "/")) NIL NIL`, "g OK NAMESPACE completed")
	c.exchange("h", `ID ("name" "test" "version" NIL)`, `* ID ("name" "Letterbox" "vendor" "Letterbox")`, "h OK ID completed")
	c.exchange("i", "ENABLE CONDSTORE UTF8=ACCEPT X-UNKNOWN", "* ENABLED CONDSTORE UTF8=ACCEPT", "i OK ENABLE completed")
	c.exchange("j", "UNAUTHENTICATE", "j OK UNAUTHENTICATE completed")
	c.exchange("k", "LIST \"\" *", "k BAD not authenticated")
}

func TestLoginLiteralUser(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial()
	// A synchronising literal gets a continuation request; LITERAL+
	// does not (RFC 7888).
	c.send("a LOGIN {" + itoa(uint64(len(testUser))) + "}")
	c.expect("+ Ready for literal data")
	c.write(testUser + " {" + itoa(uint64(len(testPassword))) + "+}\r\n" + testPassword + "\r\n")
	c.expectPrefix("a OK [CAPABILITY ")
}

func TestAuthenticatePlain(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial()
	c.exchange("a", "AUTHENTICATE PLAIN "+plainResp("", testUser, "bad"), "a NO [AUTHENTICATIONFAILED] Invalid credentials")
	c.exchange("b", "AUTHENTICATE CRAM-MD5", "b NO unsupported authentication mechanism")
	c.send("c AUTHENTICATE PLAIN")
	c.expect("+ ")
	c.send("*")
	c.expect("c BAD authentication cancelled")
	c.send("d AUTHENTICATE PLAIN")
	c.expect("+ ")
	c.send(plainResp(testUser, testUser, testPassword))
	c.expect("d OK [CAPABILITY " + wantCaps + "] AUTHENTICATE completed")

	c2 := e.dial()
	c2.exchange("a", "AUTHENTICATE PLAIN "+plainResp("", testUser, testPassword), "a OK [CAPABILITY "+wantCaps+"] AUTHENTICATE completed")
}

func TestRemotePlaintextRefused(t *testing.T) {
	e := newEnv(t, envOptions{remote: true, stls: true})
	c := e.dialRaw()
	c.expect("* OK [CAPABILITY " + wantCaps + " STARTTLS LOGINDISABLED] imap.test Letterbox IMAP server ready")
	c.exchange("a", "LOGIN "+testUser+` "`+testPassword+`"`,
		"a NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-TLS connections, use STARTTLS")
	c.exchange("b", "AUTHENTICATE PLAIN "+plainResp("", testUser, testPassword),
		"b NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-TLS connections, use STARTTLS")
	// Input pipelined after STARTTLS is discarded (command injection).
	c.send("c STARTTLS", "d LOGIN injected x")
	c.expect("c OK Begin TLS negotiation now")
	tc := tls.Client(c.conn, clientTLSConfig(t))
	c.conn = tc
	c.r = bufio.NewReader(tc)
	c.exchange("e", "CAPABILITY", "* CAPABILITY "+wantCaps+" AUTH=PLAIN AUTH=LOGIN", "e OK CAPABILITY completed")
	c.exchange("f", "STARTTLS", "f BAD already authenticated"[:0]+"f BAD STARTTLS not available")
	c.exchange("g", "LOGIN "+testUser+` "`+testPassword+`"`, "g OK [CAPABILITY "+wantCaps+"] LOGIN completed")
}

func TestImplicitTLS(t *testing.T) {
	e := newEnv(t, envOptions{implicitTLS: true, remote: true, stls: true})
	tc, err := tls.Dial("tcp", e.addr, clientTLSConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	c := &conn{t: t, conn: tc, r: bufio.NewReader(tc)}
	c.expect("* OK [CAPABILITY " + wantCaps + " AUTH=PLAIN AUTH=LOGIN] imap.test Letterbox IMAP server ready")
	c.exchange("a", "LOGIN "+testUser+` "`+testPassword+`"`, "a OK [CAPABILITY "+wantCaps+"] LOGIN completed")
}

func TestParserEdgeCases(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	c.exchange("a", "FROBNICATE", "a BAD unknown command")
	c.exchange("b", "", "b BAD missing command"[:0]+"b BAD missing command")
	c.send("")
	c.expect("* BAD missing tag")
	c.exchange("c", `SELECT "INBOX`, "c BAD unterminated quoted string")
	c.exchange("d", "NOOP extra", "d BAD unexpected characters at end of command")
	c.exchange("e", "UID NOOP", "e BAD unknown command")
	// An overlong line is discarded whole, then the session goes on.
	c.send("f NOOP " + strings.Repeat("x", maxLine+10))
	c.expect("* BAD [TOOBIG] command line too long")
	c.exchange("g", "NOOP", "g OK NOOP completed")
	// A too-large synchronising literal: NO [TOOBIG], no continuation.
	c.exchange("h", "CREATE {100000}", "h NO [TOOBIG] literal too large")
	// A too-large non-synchronising literal is read and discarded.
	c.write("i CREATE {70000+}\r\n" + strings.Repeat("y", 70000) + "\r\n")
	c.expect("i BAD [TOOBIG] literal too large")
	// A rejected command's non-synchronising literal is skipped.
	c.write("j BOGUS {5+}\r\nhello\r\n")
	c.expect("j BAD unknown command")
	c.exchange("k", "NOOP", "k OK NOOP completed")
	// An overlong line ending in a LITERAL+ literal: both are skipped.
	c.write("l NOOP " + strings.Repeat("x", maxLine) + " {3+}\r\nabc\r\n")
	c.expect("* BAD [TOOBIG] command line too long")
	c.exchange("m", "NOOP", "m OK NOOP completed")
	// Mailbox names as literals.
	c.send("n CREATE {4}")
	c.expect("+ Ready for literal data")
	c.write("Lit1\r\n")
	c.expect("n OK CREATE completed")
	c.exchange("o", `LIST "" Lit*`, `* LIST (\HasNoChildren) "/" "Lit1"`, "o OK LIST completed")
}

func TestTooManyErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial()
	for i := 0; i < maxErrors-1; i++ {
		c.exchange("x", "BOGUS", "x BAD unknown command")
	}
	c.send("x BOGUS")
	c.expect("x BAD unknown command")
	c.expect("* BYE too many errors")
	c.expectEOF()
}

func TestCompressDeflate(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(1)
	c := e.login()
	c.exchange("a", "COMPRESS GZIP", "a NO unsupported compression algorithm")
	c.exchange("b", "COMPRESS DEFLATE", "b OK DEFLATE active")
	fw, err := flate.NewWriter(c.conn, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	c.r = bufio.NewReader(flate.NewReader(c.conn))
	send := func(line string) {
		t.Helper()
		c.deadline()
		if _, err := fw.Write([]byte(line + "\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := fw.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	send("c SELECT INBOX")
	if got := c.until("c"); got[len(got)-1] != "c OK [READ-WRITE] SELECT completed" {
		t.Fatalf("SELECT: %q", got)
	}
	send("d FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
	c.expect("* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {22}")
	c.expect("Subject: message 1")
	c.expect("")
	c.expect(")")
	c.expect("d OK FETCH completed")
	send("e COMPRESS DEFLATE")
	c.expect("e NO [COMPRESSIONACTIVE] DEFLATE is already active")
	send("f LOGOUT")
	c.expect("* BYE logging out")
	c.expect("f OK LOGOUT completed")
}

func TestAutologout(t *testing.T) {
	e := newEnv(t, envOptions{idle: 300 * time.Millisecond})
	c := e.login()
	c.expect("* BYE autologout; idle for too long")
	c.expectEOF()
}
