package imap

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/connserver"
)

// Hostile clients (docs/configuration.md [limits]): each test does what an
// attacker or a broken client would, checks the exact protocol answer, and
// then checks that a normal client on another connection still logs in and
// reads a message byte for byte, and (where the attack sends a lot) that
// the heap stayed bounded.

const hostileMsg = "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: still here\r\n" +
	"Message-ID: <hostile@example.org>\r\n\r\nThe server survived.\r\n"

// dialFrom connects from the loopback address src: 127.0.0.0/8 is all
// loopback on Linux, so 127.0.0.2 is a client address of its own.
func (e *testEnv) dialFrom(src string) *conn {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &conn{t: e.t, conn: c, r: bufio.NewReader(c)}
}

// normalClient logs in from src on a new connection and reads message 1
// of INBOX, which must be hostileMsg exactly.
func (e *testEnv) normalClient(src string) {
	e.t.Helper()
	c := e.dialFrom(src)
	c.expectPrefix("* OK [CAPABILITY IMAP4rev1 ")
	c.send(`n1 LOGIN ` + testUser + ` "` + testPassword + `"`)
	c.expectPrefix("n1 OK [CAPABILITY ")
	c.examine("n2")
	c.send("n3 FETCH 1 BODY.PEEK[]")
	c.expect(fmt.Sprintf("* 1 FETCH (BODY[] {%d}", len(hostileMsg)))
	if got := c.readN(len(hostileMsg)); got != hostileMsg {
		e.t.Fatalf("normal client read %q, want %q", got, hostileMsg)
	}
	c.expect(")")
	c.expect("n3 OK FETCH completed")
	c.exchange("n4", "LOGOUT", "* BYE logging out", "n4 OK LOGOUT completed")
	c.expectEOF()
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// heapBound fails the test if the heap grew by more than 32 MiB since
// before, a generous bound for attacks that sent 100 MB or announced
// gigabytes.
func heapBound(t *testing.T, before uint64) {
	t.Helper()
	if after := heapInUse(); after > before && after-before > 32<<20 {
		t.Fatalf("heap grew by %d MiB (from %d to %d MiB)", (after-before)>>20, before>>20, after>>20)
	}
}

func (e *testEnv) logHas(want string) {
	e.t.Helper()
	for _, l := range e.logs.all() {
		if strings.Contains(l, want) {
			return
		}
	}
	e.t.Fatalf("log has no line containing %q", want)
}

func TestHostileLongLines(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	long := "a NOOP " + strings.Repeat("x", 100<<10)
	before := heapInUse()

	// 19 overlong lines are each answered and discarded; the session goes
	// on; the 20th error ends it.
	c := e.dial()
	for range maxErrors - 1 {
		c.send(long)
		c.expect("* BAD [TOOBIG] command line too long")
	}
	c.exchange("b", "NOOP", "b OK NOOP completed")
	c.send(long)
	c.expect("* BAD [TOOBIG] command line too long")
	c.expect("* BYE too many errors")
	c.expectEOF()
	e.waitSessionEnd()

	// 1,000 lines of 100 KB (100 MB) from 50 connections, 10 at a time.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- floodLongLines(e.addr, long, maxErrors)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	heapBound(t, before)

	// A line that never ends is not waited for: after 16 times the limit
	// the session ends. The client sends one read buffer more than that,
	// so the server has read everything when it closes.
	c = e.dial()
	c.write(strings.Repeat("y", absurdLine*maxLine+readBufSize))
	c.expect("* BYE command line too long")
	c.expectEOF()
	e.logHas("WARN limit exceeded: command line too long, closing")
	e.logHas("WARN limit exceeded: command line too long proto=imap")
	heapBound(t, before)
	e.normalClient("127.0.0.1")
}

// floodLongLines sends n overlong lines in one go and checks the n BAD
// responses, the BYE and the end of the connection.
func floodLongLines(addr, line string, n int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	go func() {
		w := bufio.NewWriter(c)
		for range n {
			w.WriteString(line + "\r\n")
		}
		w.Flush()
	}()
	r := bufio.NewReader(c)
	want := []string{"* OK [CAPABILITY"}
	for range n {
		want = append(want, "* BAD [TOOBIG] command line too long\r\n")
	}
	want = append(want, "* BYE too many errors\r\n")
	for _, w := range want {
		l, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(l, w) {
			return fmt.Errorf("got %q, %v; want %q", l, err, w)
		}
	}
	if rest, err := io.ReadAll(r); len(rest) != 0 || err != nil && !isReset(err) {
		return fmt.Errorf("after BYE: %q, %v", rest, err)
	}
	return nil
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

func TestHostileLiteralAnnouncements(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	before := heapInUse()
	c := e.dial()
	// Synchronising literals over the limit are refused before a single
	// octet is sent (the client waits for "+").
	c.exchange("a", "LOGIN {4294967296}", "a NO [TOOBIG] literal too large")
	c.exchange("b", "LOGIN {99999999999999999999}", "b NO [TOOBIG] literal too large")
	c.send(`c LOGIN ` + testUser + ` "` + testPassword + `"`)
	c.expectPrefix("c OK [CAPABILITY ")
	c.exchange("d", "APPEND INBOX {4294967296}", "d NO [TOOBIG] literal too large")
	c.exchange("e", "APPEND INBOX (\\Seen) {99999999999999999999}", "e NO [TOOBIG] literal too large")
	c.exchange("f", "APPEND INBOX {18446744073709551616}", "f NO [TOOBIG] literal too large")
	c.exchange("g", "NOOP", "g OK NOOP completed")
	// A non-synchronising literal (LITERAL+) arrives without asking: one
	// too large to skip ends the session, since its octets would
	// otherwise be read as commands.
	c.send("h APPEND INBOX {4294967296+}")
	c.expect("h BAD [TOOBIG] literal too large")
	c.expect("* BYE literal too large")
	c.expectEOF()
	for _, tc := range []struct{ cmd, tag string }{
		{"i LOGIN {99999999999999999999+}", "i"},
		{"j LOGIN " + testUser + " {4294967296+}", "j"},
	} {
		c = e.dial()
		c.send(tc.cmd)
		c.expect(tc.tag + " BAD [TOOBIG] literal too large")
		c.expect("* BYE literal too large")
		c.expectEOF()
	}
	e.logHas("WARN limit exceeded, closing proto=imap")
	if n := len(e.messages()); n != 1 {
		t.Fatalf("INBOX has %d messages, want 1", n)
	}
	heapBound(t, before)
	e.normalClient("127.0.0.1")
}

// defaultMailboxes is the LIST of a new account: nothing a hostile
// command tried to create is there.
var defaultMailboxes = []string{
	`* LIST (\HasNoChildren \Archive) "/" "Archive"`,
	`* LIST (\HasNoChildren \Drafts) "/" "Drafts"`,
	`* LIST (\HasNoChildren) "/" "INBOX"`,
	`* LIST (\HasNoChildren \Junk) "/" "Junk"`,
	`* LIST (\HasNoChildren \Sent) "/" "Sent"`,
	`* LIST (\HasNoChildren \Trash) "/" "Trash"`,
}

func TestHostileNULBytes(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	c := e.dial()
	c.send("\x00\x00\x00")
	c.expect("* BAD missing tag")
	c.send("a\x00 NOOP")
	c.expect("a BAD missing command")
	c.exchange("b", "NOOP\x00", "b BAD unexpected characters at end of command")
	c.exchange("c", "LOGIN alice@example.org \"correct\x00horse\"", "c BAD bad character in quoted string")
	// NUL inside a literal is data; as a password it is just wrong.
	c.send("d LOGIN " + testUser + " {13}")
	c.expect("+ Ready for literal data")
	c.send("correct\x00horse")
	c.expect("d NO [AUTHENTICATIONFAILED] Invalid credentials")
	c.send(`e LOGIN ` + testUser + ` "` + testPassword + `"`)
	c.expectPrefix("e OK [CAPABILITY ")
	c.exchange("f", "ENABLE UTF8=ACCEPT", "* ENABLED UTF8=ACCEPT", "f OK ENABLE completed")
	c.send("g CREATE {5+}\r\nab\x00cd")
	c.expect("g NO [CANNOT] invalid mailbox name")
	c.exchange("h", "SELECT {3+}\r\n\x00\x00\x00", "h NO [NONEXISTENT] no such mailbox")
	c.exchange("i", `LIST "" *`, slices.Concat(defaultMailboxes, []string{"i OK LIST completed"})...)
	e.normalClient("127.0.0.1")
}

func TestHostileInvalidUTF8MailboxNames(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	c := e.login()
	// IMAP4rev1: names are modified UTF-7; 8-bit octets are not.
	c.exchange("a", "CREATE \"\xff\xfe\"", "a BAD mailbox name is not valid modified UTF-7")
	c.exchange("b", "CREATE \"caf\xc3\xa9\"", "b BAD mailbox name is not valid modified UTF-7")
	c.exchange("c", "SELECT \"\xc3\x28\"", "c BAD mailbox name is not valid modified UTF-7")
	c.exchange("d", "RENAME INBOX \"\xed\xa0\x80\"", "d BAD mailbox name is not valid modified UTF-7")
	c.exchange("e", "CREATE &AGE", "e BAD mailbox name is not valid modified UTF-7")
	c.exchange("f", "CREATE &2D0-", "f BAD mailbox name is not valid modified UTF-7") // a lone surrogate
	// After ENABLE UTF8=ACCEPT names are UTF-8, and must be valid UTF-8.
	c.exchange("g", "ENABLE UTF8=ACCEPT", "* ENABLED UTF8=ACCEPT", "g OK ENABLE completed")
	for i, name := range []string{"\xff\xfe", "\xc3\x28", "\xed\xa0\x80", "ok/\xe2\x82", "\xf4\x90\x80\x80"} {
		tag := fmt.Sprintf("h%d", i)
		c.exchange(tag, "CREATE {"+fmt.Sprint(len(name))+"+}\r\n"+name, tag+" NO [CANNOT] invalid mailbox name")
		tag = fmt.Sprintf("i%d", i)
		c.exchange(tag, "SELECT \""+name+"\"", tag+" NO [NONEXISTENT] no such mailbox")
		tag = fmt.Sprintf("j%d", i)
		c.exchange(tag, "RENAME INBOX \""+name+"\"", tag+" NO [CANNOT] invalid mailbox name")
	}
	c.exchange("k", `LIST "" *`, slices.Concat(defaultMailboxes, []string{"k OK LIST completed"})...)
	c.exchange("l", "CREATE \"caf\xc3\xa9\"", "l OK CREATE completed")
	e.normalClient("127.0.0.1")
}

func TestHostileCommandsOutOfState(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	c := e.dial()
	c.exchange("a", "SELECT INBOX", "a BAD not authenticated")
	c.exchange("b", "FETCH 1 BODY[]", "b BAD not authenticated")
	c.exchange("c", "UID FETCH 1 BODY[]", "c BAD not authenticated")
	c.exchange("d", "IDLE", "d BAD not authenticated")
	c.exchange("e", "APPEND INBOX {3+}\r\nabc", "e BAD not authenticated")
	c.exchange("f", "DONE", "f BAD unknown command")
	c.send("DONE")
	c.expect("DONE BAD missing command")
	c.exchange("g", "UID LOGIN x y", "g BAD unknown command")
	c.send(`h LOGIN ` + testUser + ` "` + testPassword + `"`)
	c.expectPrefix("h OK [CAPABILITY ")
	c.exchange("i", "FETCH 1 BODY[]", "i BAD no mailbox selected")
	c.exchange("j", "EXPUNGE", "j BAD no mailbox selected")
	c.exchange("k", "LOGIN x y", "k BAD already authenticated")
	c.exchange("l", "STARTTLS", "l BAD already authenticated")
	c.exchange("m", "UID CREATE x", "m BAD unknown command")
	c.exchange("n", "NOOP", "n OK NOOP completed")
	e.normalClient("127.0.0.1")
}

func TestHostilePipelinedCommands(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	before := heapInUse()
	c := e.login()
	c.examine("s")
	const n = 10000
	var b strings.Builder
	for i := range n {
		if i%2 == 0 {
			fmt.Fprintf(&b, "t%d NOOP\r\n", i)
		} else {
			fmt.Fprintf(&b, "t%d UID FETCH 1 (UID FLAGS)\r\n", i)
		}
	}
	c.deadline()
	go io.WriteString(c.conn, b.String()) // one write; read concurrently
	for i := range n {
		if i%2 == 0 {
			c.expect(fmt.Sprintf("t%d OK NOOP completed", i))
		} else {
			c.expect("* 1 FETCH (UID 1 FLAGS ())")
			c.expect(fmt.Sprintf("t%d OK FETCH completed", i))
		}
	}
	c.exchange("z", "NOOP", "z OK NOOP completed")
	heapBound(t, before)
	e.normalClient("127.0.0.1")
}

func TestHostileHalfOpen(t *testing.T) {
	e := newEnv(t, envOptions{idle: 300 * time.Millisecond})
	e.deliver(hostileMsg)
	// Connects and sends nothing: autologout at the idle timeout.
	silent := e.dial()
	// Sends half a command.
	half := e.dial()
	half.write("a NOO")
	// Announces a literal and sends half of it.
	lit := e.dial()
	lit.send("b LOGIN " + testUser + " {10}")
	lit.expect("+ Ready for literal data")
	lit.write("corr")
	for _, c := range []*conn{silent, half, lit} {
		c.expect("* BYE autologout; idle for too long")
		c.expectEOF()
	}
	// Half-closes after half a command: the server sees the end.
	hc := e.dial()
	hc.write("c LOG")
	hc.conn.(*net.TCPConn).CloseWrite()
	hc.expectEOF()
	for range 4 {
		e.waitSessionEnd()
	}
	e.logHas("reason=idle timeout")
	e.logHas("reason=client closed connection")
	e.normalClient("127.0.0.1")
}

func TestHostileSlowLoris(t *testing.T) {
	const idle = 300 * time.Millisecond
	e := newEnv(t, envOptions{idle: idle})
	e.deliver(hostileMsg)
	for _, payload := range []string{
		"a NOOP and then some more octets, one by one\r\n",
		"b LOGIN " + testUser + " {30}\r\n" + strings.Repeat("p", 30) + "\r\n",
	} {
		// The server's idle clock starts at accept, before the
		// greeting dial reads: start ours before dialling.
		start := time.Now()
		c := e.dial()
		stop := make(chan struct{})
		go func() {
			// The hostile client: one octet every 20 ms, forever.
			for i := 0; ; i++ {
				if _, err := c.conn.Write([]byte{payload[i%len(payload)]}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		var lines []string
		for {
			l, err := c.r.ReadString('\n')
			if err != nil {
				break // closed by the server
			}
			lines = append(lines, strings.TrimSuffix(l, "\r\n"))
		}
		close(stop)
		if got := lines[len(lines)-1]; got != "* BYE autologout; idle for too long" {
			t.Fatalf("slow client got %q, want the autologout", lines)
		}
		if d := time.Since(start); d < idle {
			t.Fatalf("closed after %v, before the idle timeout %v", d, idle)
		}
		e.waitSessionEnd()
	}
	e.normalClient("127.0.0.1")
}

func TestHostileConnectionFlood(t *testing.T) {
	lim := &connserver.Limiter{MaxConns: 100, MaxConnsPerAddr: 5}
	e := newEnv(t, envOptions{tune: func(s *Server) { s.Limiter = lim }})
	e.deliver(hostileMsg)
	var conns []*conn
	for range 5 {
		conns = append(conns, e.dialFrom("127.0.0.1"))
		conns[len(conns)-1].expectPrefix("* OK [CAPABILITY ")
	}
	c := e.dialFrom("127.0.0.1")
	c.expect("* BYE [UNAVAILABLE] Too many connections from your address, try again later")
	c.expectEOF()
	e.logHas("WARN connection refused: too many connections from this address proto=imap remote=127.0.0.1:")
	// Another address is served.
	e.normalClient("127.0.0.2")
	e.waitSessionEnd()
	// When one of the five ends, the address may connect again.
	conns[0].exchange("x", "LOGOUT", "* BYE logging out", "x OK LOGOUT completed")
	e.waitSessionEnd()
	e.dialFrom("127.0.0.1").expectPrefix("* OK [CAPABILITY ")

	// The overall limit.
	lim2 := &connserver.Limiter{MaxConns: 2}
	e2 := newEnv(t, envOptions{tune: func(s *Server) { s.Limiter = lim2 }})
	e2.deliver(hostileMsg)
	e2.dialFrom("127.0.0.1").expectPrefix("* OK [CAPABILITY ")
	e2.dialFrom("127.0.0.2").expectPrefix("* OK [CAPABILITY ")
	c = e2.dialFrom("127.0.0.3")
	c.expect("* BYE [UNAVAILABLE] Too many connections, try again later")
	c.expectEOF()
}

func TestHostileSessionsPerAccount(t *testing.T) {
	lim := &connserver.Limiter{MaxSessionsPerAccount: 2}
	e := newEnv(t, envOptions{tune: func(s *Server) { s.Limiter = lim }})
	e.deliver(hostileMsg)
	c1 := e.login()
	c2 := e.login()
	c3 := e.dial()
	c3.exchange("a", `LOGIN `+testUser+` "`+testPassword+`"`,
		"a NO [LIMIT] Too many sessions for this account, try again later")
	c3.exchange("b", "SELECT INBOX", "b BAD not authenticated")
	e.logHas("WARN login refused: too many sessions for account proto=imap")
	// UNAUTHENTICATE and LOGOUT give the slots back.
	c1.exchange("c", "UNAUTHENTICATE", "c OK UNAUTHENTICATE completed")
	c3.send(`d LOGIN ` + testUser + ` "` + testPassword + `"`)
	c3.expectPrefix("d OK [CAPABILITY ")
	c2.exchange("e", "LOGOUT", "* BYE logging out", "e OK LOGOUT completed")
	e.waitSessionEnd()
	e.normalClient("127.0.0.1")
}

func TestHostileWrongPasswords(t *testing.T) {
	logs := &logRecorder{}
	const base, maxDelay = 5 * time.Millisecond, 40 * time.Millisecond
	e := newEnv(t, envOptions{tune: func(s *Server) {
		s.Auth.Throttle = &auth.Throttle{BaseDelay: base, MaxDelay: maxDelay, Forget: time.Hour,
			MaxEntries: 1000, BlockAfter: 10, BlockFor: time.Hour, Logger: slog.New(logs)}
	}})
	e.deliver(hostileMsg)
	c := e.dialFrom("127.0.0.1")
	c.expectPrefix("* OK [CAPABILITY ")
	start := time.Now()
	for i := range 50 {
		tag := fmt.Sprintf("w%d", i)
		c.exchange(tag, `LOGIN `+testUser+` "wrong `+tag+`"`, tag+" NO [AUTHENTICATIONFAILED] Invalid credentials")
	}
	// The delays grew (0, 5, 10, 20, then 40 ms) and stayed at the
	// maximum once blocked: a lower bound on the time taken.
	if min := base*(1+2+4) + maxDelay*(50-4); time.Since(start) < min {
		t.Fatalf("50 failures took %v, less than the throttle's delays %v", time.Since(start), min)
	}
	// Blocked: the right password gets the very same failure.
	c.exchange("r", `LOGIN `+testUser+` "`+testPassword+`"`, "r NO [AUTHENTICATIONFAILED] Invalid credentials")
	c.exchange("s", "AUTHENTICATE PLAIN "+plainResp("", testUser, testPassword),
		"s NO [AUTHENTICATIONFAILED] Invalid credentials")
	// Another address is not blocked: the account is only delayed.
	e.normalClient("127.0.0.2")
	// ...and that success does not lift the block of the attacker.
	c.exchange("t", `LOGIN `+testUser+` "`+testPassword+`"`, "t NO [AUTHENTICATIONFAILED] Invalid credentials")
	var warn []string
	for _, l := range logs.all() {
		warn = append(warn, l)
	}
	want := []string{
		"WARN login throttle: client address blocked addr=127.0.0.1 failures=10 blocked_for=1h0m0s user=" + testUser,
		"WARN login throttle: repeated failures for account (delayed, not blocked) user=" + testUser + " failures=10 addr=127.0.0.1",
	}
	if len(warn) != 2+40+3 || warn[0] != want[0] || warn[1] != want[1] {
		t.Fatalf("throttle log (%d lines):\n%s", len(warn), strings.Join(warn, "\n"))
	}
	for _, l := range warn[2:] {
		if !strings.HasPrefix(l, "WARN login refused: client address blocked addr=127.0.0.1 user="+testUser) {
			t.Fatalf("unexpected throttle log line %q", l)
		}
	}
}

func TestHostileMailboxLimit(t *testing.T) {
	var max int
	e := newEnv(t, envOptions{tune: func(s *Server) {
		// The account's default mailboxes (INBOX, Sent, ...) and two more.
		ctx := context.Background()
		acct, err := s.Store.Account(ctx, testUser)
		if err != nil {
			t.Fatal(err)
		}
		mbs, err := s.Store.Mailboxes(ctx, acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		max = len(mbs) + 2
		s.MaxMailboxes = max
	}})
	e.deliver(hostileMsg)
	c := e.login()
	full := fmt.Sprintf("NO [LIMIT] Too many mailboxes (at most %d)", max)
	c.exchange("a", "CREATE one", "a OK CREATE completed")
	c.exchange("b", "CREATE two", "b OK CREATE completed")
	c.exchange("c", "CREATE three", "c "+full)
	c.exchange("d", "RENAME INBOX three", "d "+full)
	c.exchange("e", "RENAME two three", "e OK RENAME completed")
	c.exchange("f", "DELETE one", "f OK DELETE completed")
	c.exchange("g", "CREATE four", "g OK CREATE completed")
	e.logHas("WARN limit exceeded: too many mailboxes proto=imap")
	e.normalClient("127.0.0.1")
}

// A client that stops reading a large FETCH is disconnected at the write
// timeout; it pins neither memory nor the session.
func TestHostileSlowReader(t *testing.T) {
	e := newEnv(t, envOptions{tune: func(s *Server) { s.WriteTimeout = 300 * time.Millisecond }})
	e.deliver(hostileMsg)
	big := "Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 32<<10)
	e.deliver(big) // 2 MiB
	before := heapInUse()
	c := e.login()
	c.examine("a")
	// 40 MiB of response; the client reads none of it.
	c.send("b FETCH 2 (" + strings.TrimSpace(strings.Repeat("BODY.PEEK[] ", 20)) + ")")
	e.waitSessionEnd()
	e.logHas("WARN limit exceeded: client stopped reading, closing proto=imap")
	e.logHas("reason=write timeout")
	heapBound(t, before)
	e.normalClient("127.0.0.1")
}

// examine opens INBOX read-only; the responses before the tagged one are
// covered by the SELECT tests.
func (c *conn) examine(tag string) {
	c.t.Helper()
	lines := c.cmd(tag, "EXAMINE INBOX")
	if last := lines[len(lines)-1]; last != tag+" OK [READ-ONLY] EXAMINE completed" {
		c.t.Fatalf("EXAMINE: %q", lines)
	}
}

// On an implicit-TLS listener (imaps) the refusal comes after the
// handshake, inside TLS.
func TestHostileConnectionFloodTLS(t *testing.T) {
	lim := &connserver.Limiter{MaxConns: 1}
	e := newEnv(t, envOptions{implicitTLS: true, tune: func(s *Server) { s.Limiter = lim }})
	dialTLS := func() *conn {
		c, err := tls.Dial("tcp", e.addr, clientTLSConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &conn{t: t, conn: c, r: bufio.NewReader(c)}
	}
	dialTLS().expectPrefix("* OK [CAPABILITY ")
	c := dialTLS()
	c.expect("* BYE [UNAVAILABLE] Too many connections, try again later")
	c.expectEOF()
}
