package pop3

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/connserver"
)

// Hostile clients (docs/configuration.md [limits]): each test does what an
// attacker or a broken client would, checks the exact answer, and then
// checks that a normal client on another connection still logs in and
// reads a message byte for byte, and (where the attack sends a lot) that
// the heap stayed bounded.

const hostileMsg = "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: still here\r\n" +
	"Message-ID: <hostile@example.org>\r\n\r\n.The server survived.\r\n"

// dialFrom connects from the loopback address src: 127.0.0.0/8 is all
// loopback on Linux, so 127.0.0.2 is a client address of its own.
func (e *testEnv) dialFrom(src string) *client {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return &client{t: e.t, conn: conn, r: bufio.NewReader(conn)}
}

const greeting = "+OK " + testHost + " Letterbox POP3 server ready"

// normalClient logs in from src on a new connection and retrieves message
// 1, which must be hostileMsg exactly.
func (e *testEnv) normalClient(src string) {
	e.t.Helper()
	c := e.dialFrom(src)
	c.expect(greeting)
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdPrefix("PASS "+testPassword, "+OK maildrop locked and ready")
	announced, body := c.retrieve(1)
	if want := fmt.Sprintf("+OK %d octets", len(hostileMsg)); announced != want || body != hostileMsg {
		e.t.Fatalf("normal client: %q %q; want %q %q", announced, body, want, hostileMsg)
	}
	c.cmdPrefix("QUIT", "+OK ")
	c.expectEOF()
	e.waitSessionEnd()
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

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
	long := "USER " + strings.Repeat("x", 100<<10)
	before := heapInUse()
	c := e.dial()
	for range maxErrors - 1 {
		c.cmdExpect(long, "-ERR line too long")
	}
	c.cmdPrefix("NOOP", "-ERR not logged in") // the tenth error
	c.expectEOF()
	e.waitSessionEnd()
	e.logHas("WARN limit exceeded: too many errors, closing proto=pop3")

	// 1,000 lines of 100 KB (100 MB) from 100 connections, 10 at a time;
	// each is closed after its tenth error.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	errs := make(chan error, 100)
	for range 100 {
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
	for range 100 {
		e.waitSessionEnd()
	}
	heapBound(t, before)
	e.normalClient("127.0.0.1")
}

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
	want := []string{greeting + "\r\n"}
	for range n {
		want = append(want, "-ERR line too long\r\n")
	}
	for _, w := range want {
		if l, err := r.ReadString('\n'); err != nil || l != w {
			return fmt.Errorf("got %q, %v; want %q", l, err, w)
		}
	}
	if rest, err := io.ReadAll(r); len(rest) != 0 || err != nil {
		return fmt.Errorf("after the last error: %q, %v", rest, err)
	}
	return nil
}

func TestHostileNULBytesAndGarbage(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	c := e.dial()
	c.cmdExpect("\x00\x00\x00", "-ERR syntax error")
	c.cmdExpect("USER\x00 x", "-ERR syntax error")
	c.cmdExpect("\xff\xfe\xfd\xfc", "-ERR syntax error")
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS correct\x00horse", "-ERR syntax error") // NUL is refused anywhere in a line
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser+"\x00", testPassword), "-ERR malformed SASL PLAIN response")
	c.cmdExpect("QUIT", "+OK "+testHost+" Letterbox POP3 server signing off")
	c.expectEOF()
	e.waitSessionEnd()
	e.normalClient("127.0.0.1")
}

func TestHostileCommandsOutOfState(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	c := e.dial()
	c.cmdExpect("RETR 1", "-ERR not logged in")
	c.cmdExpect("DELE 1", "-ERR not logged in")
	c.cmdExpect("PASS "+testPassword, "-ERR PASS must follow USER")
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("NOOP", "-ERR not logged in")
	c.cmdExpect("PASS "+testPassword, "-ERR PASS must follow USER") // not right after USER
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdPrefix("PASS "+testPassword, "+OK maildrop locked and ready")
	c.cmdExpect("USER "+testUser, "-ERR already logged in")
	c.cmdExpect("STLS", "-ERR already logged in")
	c.cmdExpect("AUTH PLAIN", "-ERR already logged in")
	c.cmdExpect("RETR 99", "-ERR no such message")
	c.cmdExpect("QUIT", "+OK "+testHost+" Letterbox POP3 server signing off (0 messages deleted)")
	c.expectEOF()
	e.waitSessionEnd()
	e.normalClient("127.0.0.1")
}

func TestHostilePipelinedCommands(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(hostileMsg)
	before := heapInUse()
	c := e.login()
	const n = 10000
	var b strings.Builder
	for i := range n {
		if i%2 == 0 {
			b.WriteString("NOOP\r\n")
		} else {
			b.WriteString("UIDL 1\r\n")
		}
	}
	c.deadline()
	go io.WriteString(c.conn, b.String()) // one write; read concurrently
	uidl := c.cmdPrefix("UIDL 1", "+OK 1 ")
	for i := range n {
		if i%2 == 0 {
			c.expect("+OK")
		} else {
			c.expect(uidl)
		}
	}
	c.cmdExpect("QUIT", "+OK "+testHost+" Letterbox POP3 server signing off (0 messages deleted)")
	e.waitSessionEnd()
	heapBound(t, before)
	e.normalClient("127.0.0.1")
}

func TestHostileHalfOpenAndSlowLoris(t *testing.T) {
	const idle = 300 * time.Millisecond
	e := newEnv(t, envOptions{idle: idle})
	e.deliver(hostileMsg)
	silent := e.dial()
	half := e.dial()
	half.conn.Write([]byte("USE"))
	for _, c := range []*client{silent, half} {
		c.expect("-ERR autologout: idle for too long")
		c.expectEOF()
	}
	hc := e.dial()
	hc.conn.Write([]byte("USER al"))
	hc.conn.(*net.TCPConn).CloseWrite()
	hc.expectEOF()
	for range 3 {
		e.waitSessionEnd()
	}
	e.logHas("reason=client closed connection")

	// One octet every 20 ms, forever: closed at the idle timeout.
	// The server's idle clock starts at accept, before the greeting
	// dial reads: start ours before dialling.
	start := time.Now()
	c := e.dial()
	stop := make(chan struct{})
	go func() {
		payload := "USER " + testUser + " and more octets\r\n"
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
	c.expect("-ERR autologout: idle for too long")
	if d := time.Since(start); d < idle {
		t.Fatalf("closed after %v, before the idle timeout %v", d, idle)
	}
	close(stop)
	e.waitSessionEnd()
	e.normalClient("127.0.0.1")
}

func TestHostileConnectionFlood(t *testing.T) {
	lim := &connserver.Limiter{MaxConns: 100, MaxConnsPerAddr: 5}
	e := newEnv(t, envOptions{tune: func(s *Server) { s.Limiter = lim }})
	e.deliver(hostileMsg)
	var conns []*client
	for range 5 {
		c := e.dialFrom("127.0.0.1")
		c.expect(greeting)
		conns = append(conns, c)
	}
	c := e.dialFrom("127.0.0.1")
	c.expect("-ERR [SYS/TEMP] Too many connections from your address, try again later")
	c.expectEOF()
	e.logHas("WARN connection refused: too many connections from this address proto=pop3 remote=127.0.0.1:")
	e.normalClient("127.0.0.2")
	conns[0].cmdPrefix("QUIT", "+OK ")
	e.waitSessionEnd()
	e.dialFrom("127.0.0.1").expect(greeting)

	lim2 := &connserver.Limiter{MaxConns: 1}
	e2 := newEnv(t, envOptions{tune: func(s *Server) { s.Limiter = lim2 }})
	e2.dialFrom("127.0.0.1").expect(greeting)
	c = e2.dialFrom("127.0.0.2")
	c.expect("-ERR [SYS/TEMP] Too many connections, try again later")
	c.expectEOF()
}

func TestHostileSessionsPerAccount(t *testing.T) {
	lim := &connserver.Limiter{MaxSessionsPerAccount: 1}
	e := newEnv(t, envOptions{tune: func(s *Server) { s.Limiter = lim }})
	e.deliver(hostileMsg)
	c1 := e.login()
	c2 := e.dial()
	c2.cmdExpect("USER "+testUser, "+OK send PASS")
	c2.cmdExpect("PASS "+testPassword, "-ERR [SYS/TEMP] Too many sessions for this account, try again later")
	c2.cmdExpect("STAT", "-ERR not logged in")
	e.logHas("WARN login refused: too many sessions for account proto=pop3")
	c1.cmdPrefix("QUIT", "+OK ")
	e.waitSessionEnd()
	e.normalClient("127.0.0.1")
}

func TestHostileWrongPasswords(t *testing.T) {
	logs := &logRecorder{}
	e := newEnv(t, envOptions{tune: func(s *Server) {
		s.Auth.Throttle = &auth.Throttle{BaseDelay: 2 * time.Millisecond, MaxDelay: 20 * time.Millisecond,
			Forget: time.Hour, MaxEntries: 1000, BlockAfter: 10, BlockFor: time.Hour, Logger: slog.New(logs)}
	}})
	e.deliver(hostileMsg)
	// 50 wrong passwords; a session ends after ten errors, so the
	// attacker reconnects every ten.
	for round := range 50 / maxErrors {
		c := e.dialFrom("127.0.0.1")
		c.expect(greeting)
		for j := range maxErrors {
			c.cmdExpect("USER "+testUser, "+OK send PASS")
			c.cmdExpect(fmt.Sprintf("PASS wrong%d", round*maxErrors+j), "-ERR [AUTH] Authentication failed")
		}
		c.expectEOF()
		e.waitSessionEnd()
	}
	// Blocked: the right password fails the same way, by USER/PASS and
	// by AUTH PLAIN.
	c := e.dialFrom("127.0.0.1")
	c.expect(greeting)
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS "+testPassword, "-ERR [AUTH] Authentication failed")
	c.cmdExpect("AUTH PLAIN "+plainResp("", testUser, testPassword), "-ERR [AUTH] Authentication failed")
	// Another address is not blocked.
	e.normalClient("127.0.0.2")
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdExpect("PASS "+testPassword, "-ERR [AUTH] Authentication failed")
	logged := strings.Join(logs.all(), "\n")
	for _, want := range []string{
		"WARN login throttle: client address blocked addr=127.0.0.1 failures=10 blocked_for=1h0m0s user=" + testUser,
		"WARN login refused: client address blocked addr=127.0.0.1 user=" + testUser,
	} {
		if !strings.Contains(logged, want) {
			t.Fatalf("throttle log lacks %q:\n%s", want, logged)
		}
	}
}
