package smtp

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/connserver"
)

// Hostile clients (docs/configuration.md [limits]): each test does what an
// attacker or a broken client would, checks the exact reply, and then
// checks that a normal client on another connection still delivers a
// message that is stored byte for byte, and (where the attack sends a lot)
// that the heap stayed bounded.

const hostileMsg = "From: Bob <bob@example.org>\r\nTo: b@example.org\r\nSubject: still here\r\n" +
	"Message-ID: <hostile@example.org>\r\n\r\nThe server survived.\r\n"

func dialFrom(t *testing.T, addr, src string) *client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second)) // a guard against hangs only
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// normalClient delivers hostileMsg to b@example.org from src and checks
// that the store has it byte for byte.
func (e *testEnv) normalClient(src string) {
	e.t.Helper()
	before := e.count("b@example.org")
	c := dialFrom(e.t, e.addr, src)
	c.greet(e.srv.LMTP)
	c.expect("MAIL FROM:<bob@example.org>", "250 ")
	c.expect("RCPT TO:<b@example.org>", "250 ")
	c.expect("DATA", "354 ")
	deliveredID(e.t, c.cmd(strings.TrimSuffix(string(dotStuff([]byte(hostileMsg))), "\r\n")))
	c.expect("QUIT", "221 ")
	msgs, bodies := e.messages("b@example.org")
	if len(msgs) != before+1 {
		e.t.Fatalf("b@example.org has %d messages, want %d", len(msgs), before+1)
	}
	if _, got := stripTrace(e.t, bodies[len(bodies)-1]); string(got) != hostileMsg {
		e.t.Fatalf("stored %q, want %q", got, hostileMsg)
	}
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

// withConns records every accepted connection.
func withConns(ch chan *trackedConn) envOpt {
	return func(s *Server) { s.onConn = func(c *trackedConn) { ch <- c } }
}

func TestHostileLongLines(t *testing.T) {
	e := newEnv(t)
	before := heapInUse()
	// A line over the limit that arrives in one read: the exact reply.
	c := dial(t, e.addr)
	c.expectReply("220 ")
	c.send(strings.Repeat("N", 3000) + "\r\n")
	c.expectReply("500 5.4.0 Too long line, closing connection")
	c.expectEOF()
	// 100 KB lines from 100 connections, 10 at a time (10 MB). go-smtp
	// closes at the first over-long read, with the rest of the line
	// unread, so the kernel may answer with a reset that discards the
	// reply; the connection is closed either way.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	errs := make(chan error, 100)
	long := "EHLO " + strings.Repeat("x", 100<<10) + "\r\n"
	for range 100 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- floodLine(e.addr, long)
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
	e.normalClient("127.0.0.1")
}

func floodLine(addr, line string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	go io.WriteString(c, line)
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220 ") {
		return fmt.Errorf("greeting %q, %v", l, err)
	}
	rest, err := io.ReadAll(r)
	if err != nil && !isReset(err) {
		return fmt.Errorf("after the long line: %q, %v", rest, err)
	}
	if s := string(rest); s != "" && s != "500 5.4.0 Too long line, closing connection\r\n" {
		return fmt.Errorf("after the long line: %q", s)
	}
	return nil
}

func TestHostileNULBytes(t *testing.T) {
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("\x00\x00", "501 5.5.2 Bad command")
	c.expect("MAIL FROM:<a\x00@example.org>", "501 5.1.7 Bad sender address syntax")
	c.expect("MAIL FROM:<a@example.org>", "250 ")
	c.expect("RCPT TO:<us\x00er@example.org>", "501 5.1.3 Bad destination mailbox address syntax")
	c.expect("RSET", "250 2.0.0 Session reset")
	e.normalClient("127.0.0.1")
}

func TestHostileCommandsOutOfState(t *testing.T) {
	e := newEnv(t)
	c := dial(t, e.addr)
	c.expectReply("220 ")
	c.expect("MAIL FROM:<a@example.org>", "502 5.5.1 Please introduce yourself first.")
	c.expect("EHLO client.example", "250")
	c.expect("DATA", "502 5.5.1 Missing RCPT TO command.")
	c.expect("RCPT TO:<user@example.org>", "502 5.5.1 Missing MAIL FROM command.")
	c.send("BDAT 5 LAST\r\nhello") // the chunk follows, refused or not
	c.expectReply("502 5.5.1 Missing RCPT TO command.")
	c.expect("NOOP", "250 2.0.0 I have successfully done nothing")
	e.normalClient("127.0.0.1")
}

func TestHostilePipelinedCommands(t *testing.T) {
	e := newEnv(t)
	before := heapInUse()
	c := dial(t, e.addr)
	c.greet(false)
	const n = 10000
	var b strings.Builder
	for i := range n {
		if i%2 == 0 {
			b.WriteString("NOOP\r\n")
		} else {
			b.WriteString("RSET\r\n")
		}
	}
	go io.WriteString(c.conn, b.String()) // one write; read concurrently
	for i := range n {
		want := "250 2.0.0 I have successfully done nothing"
		if i%2 == 1 {
			want = "250 2.0.0 Session reset"
		}
		if got := c.reply(); got != want {
			t.Fatalf("reply %d: %q, want %q", i, got, want)
		}
	}
	c.expect("QUIT", "221 ")
	heapBound(t, before)
	e.normalClient("127.0.0.1")
}

func TestHostileTooManyRecipients(t *testing.T) {
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<bob@example.org>", "250 ")
	for i := range DefaultMaxRecipients {
		c.expect(fmt.Sprintf("RCPT TO:<user+%d@example.org>", i), "250 ")
	}
	c.expect("RCPT TO:<a@example.org>", "452 4.5.3 Too many recipients")
	c.expect("RCPT TO:<b@example.org>", "452 4.5.3 Too many recipients")
	c.expect("RSET", "250 ")
	if !regexp.MustCompile(`level=WARN msg="limit exceeded: too many recipients" conn=1 remote=127\.0\.0\.1:\d+ limit=max_recipients max=100`).MatchString(e.logs.String()) {
		t.Fatalf("not logged:\n%s", e.logs.String())
	}

	// A configured limit: the message goes to the recipients accepted.
	e2 := newEnv(t, func(s *Server) { s.MaxRecipients = 2 })
	c = dial(t, e2.addr)
	c.greet(false)
	c.expect("MAIL FROM:<bob@example.org>", "250 ")
	c.expect("RCPT TO:<a@example.org>", "250 ")
	c.expect("RCPT TO:<c@example.org>", "250 ")
	c.expect("RCPT TO:<b@example.org>", "452 4.5.3 Too many recipients")
	c.expect("DATA", "354 ")
	deliveredID(t, c.cmd("Subject: x\r\n\r\nx\r\n."))
	if e2.count("a@example.org") != 1 || e2.count("c@example.org") != 1 || e2.count("b@example.org") != 0 {
		t.Fatal("delivered to the wrong recipients")
	}
	e2.normalClient("127.0.0.1")
}

func TestHostileHalfOpenAndSlowLoris(t *testing.T) {
	const timeout = 300 * time.Millisecond
	e := newEnv(t, func(s *Server) { s.ReadTimeout = timeout })
	silent := dial(t, e.addr)
	silent.expectReply("220 ")
	half := dial(t, e.addr)
	half.expectReply("220 ")
	half.send("EHL")
	for _, c := range []*client{silent, half} {
		c.expectReply("421 4.4.2 mx.example.org Timeout, closing connection")
		c.expectEOF()
	}
	hc := dial(t, e.addr)
	hc.expectReply("220 ")
	hc.send("EHLO cl")
	hc.conn.(*net.TCPConn).CloseWrite()
	hc.expectEOF()

	// One octet every 20 ms: closed at the timeout, in a command and in
	// the middle of a DATA line alike.
	for _, tc := range []struct {
		prep    []string
		payload string
	}{
		{nil, "EHLO slow.example and more octets that never end"},
		{[]string{"EHLO slow.example", "MAIL FROM:<a@example.org>", "RCPT TO:<user@example.org>", "DATA"},
			"Subject: a header line that never ends"},
	} {
		// The server's clock restarts when it reads a command (or at
		// accept); ours restarts before we send one, so it never runs
		// behind the server's.
		start := time.Now()
		c := dial(t, e.addr)
		c.expectReply("220 ")
		for _, p := range tc.prep {
			start = time.Now()
			c.send(p + "\r\n")
			c.reply()
		}
		stop := make(chan struct{})
		go func() {
			for i := 0; ; i++ {
				if _, err := c.conn.Write([]byte{tc.payload[i%len(tc.payload)]}); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		c.expectReply("421 4.4.2 mx.example.org Timeout, closing connection")
		if d := time.Since(start); d < timeout {
			t.Fatalf("closed after %v, before the timeout %v", d, timeout)
		}
		close(stop)
		c.expectEOF()
	}
	if n := e.count("user@example.org"); n != 0 {
		t.Fatalf("%d messages delivered from an unfinished DATA", n)
	}
	e.normalClient("127.0.0.1")
}

func TestHostileConnectionFlood(t *testing.T) {
	conns := make(chan *trackedConn, 100)
	lim := &connserver.Limiter{MaxConns: 100, MaxConnsPerAddr: 3}
	e := newEnv(t, func(s *Server) { s.Limiter = lim }, withConns(conns))
	var open []*client
	for range 3 {
		c := dialFrom(t, e.addr, "127.0.0.1")
		c.expectReply("220 ")
		open = append(open, c)
	}
	c := dialFrom(t, e.addr, "127.0.0.1")
	c.expectReply("421 4.7.0 mx.example.org Too many connections from your address, try again later")
	c.expectEOF()
	if !strings.Contains(e.logs.String(), `level=WARN msg="connection refused: too many connections from this address" remote=127.0.0.1:`) {
		t.Fatalf("refusal not logged:\n%s", e.logs.String())
	}
	e.normalClient("127.0.0.2")
	first := <-conns
	open[0].expect("QUIT", "221 ")
	<-first.done
	dialFrom(t, e.addr, "127.0.0.1").expectReply("220 ")

	lim2 := &connserver.Limiter{MaxConns: 1}
	e2 := newEnv(t, func(s *Server) { s.Limiter = lim2 })
	dialFrom(t, e2.addr, "127.0.0.1").expectReply("220 ")
	c = dialFrom(t, e2.addr, "127.0.0.2")
	c.expectReply("421 4.7.0 mx.example.org Too many connections, try again later")
	c.expectEOF()
}

// There is no AUTH on the MX and LMTP ports: password guessing gets the
// same answer every time, and nothing to guess.
func TestHostileWrongPasswords(t *testing.T) {
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	for i := range 50 {
		c.expect("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("\x00user@example.org\x00wrong%d", i))),
			"502 5.7.0 Authentication not supported")
	}
	c.expect("NOOP", "250 ")
	e.normalClient("127.0.0.2")
}
