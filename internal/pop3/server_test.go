package pop3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

func TestOverlongLine(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial()
	// 512 octets including CRLF is the limit.
	c.cmdExpect("USER "+strings.Repeat("a", 505), "+OK send PASS")
	c.cmdExpect("USER "+strings.Repeat("a", 506), "-ERR line too long")
	// A huge line is discarded as it streams in, then the session goes on.
	c.send(strings.Repeat("X", 4<<20), "CAPA")
	c.expect("-ERR line too long")
	c.expect("+OK Capability list follows")
	c.multi()
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off")
	c.expectEOF()
}

func TestGarbage(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial()
	c.cmdExpect("", "-ERR empty command")
	c.cmdExpect("   ", "-ERR empty command")
	c.cmdExpect("\x00\x01\x02", "-ERR syntax error")
	c.cmdExpect("ÄÖÜ", "-ERR syntax error")
	c.cmdExpect("RETRIEVE 1", "-ERR syntax error")
	c.cmdExpect("HELO there", "-ERR unknown command")
	// A bare LF ends a line too.
	c.conn.Write([]byte("CAPA\n"))
	c.expect("+OK Capability list follows")
	c.multi()
}

func TestTooManyErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(msg1)
	c := e.login()
	c.cmdExpect("DELE 1", "+OK message 1 deleted")
	for i := 1; i <= 9; i++ {
		c.cmdExpect("BOGU", "-ERR unknown command")
	}
	c.cmdExpect("NOOP", "+OK") // nine errors: still open
	c.cmdExpect("BOGU", "-ERR unknown command")
	c.expectEOF()
	e.waitSessionEnd()
	if n := len(e.messages()); n != 1 {
		t.Fatalf("closing after errors deleted messages: %d left", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	// Long enough for login and DELE on a loaded CI machine with the
	// race detector.
	e := newEnv(t, envOptions{idle: time.Second})
	e.deliver(msg1)
	c := e.login()
	c.cmdExpect("DELE 1", "+OK message 1 deleted")
	start := time.Now()
	c.expect("-ERR autologout: idle for too long")
	c.expectEOF()
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("autologout after %v", d)
	}
	e.waitSessionEnd()
	if n := len(e.messages()); n != 1 {
		t.Fatalf("autologout deleted messages: %d left", n)
	}
}

func TestPipelining(t *testing.T) {
	var cl *countingListener
	e := newEnv(t, envOptions{listener: func(l net.Listener) net.Listener {
		cl = &countingListener{Listener: l}
		return cl
	}})
	e.deliver(msg1)
	e.deliver(msg2)
	s1, s2 := wantSize(msg1), wantSize(msg2)
	v := e.inbox.UIDValidity
	ms := e.messages()

	// Login pipelined too (RFC 2449 §6.6).
	c := e.dial()
	c.send("USER "+testUser, "PASS "+testPassword)
	c.expect("+OK send PASS")
	c.expect("+OK maildrop locked and ready, 2 messages")

	type step struct {
		cmd  string
		resp []string // first line, then the multi-line body (decoded) if any
	}
	var steps []step
	for i := range 50 {
		switch i % 7 {
		case 0:
			steps = append(steps, step{"STAT", []string{fmt.Sprintf("+OK 2 %d", s1+s2)}})
		case 1:
			steps = append(steps, step{"LIST 2", []string{fmt.Sprintf("+OK 2 %d", s2)}})
		case 2:
			steps = append(steps, step{"UIDL", []string{"+OK unique-id listing follows",
				fmt.Sprintf("1 %d.%d", v, ms[0].UID), fmt.Sprintf("2 %d.%d", v, ms[1].UID)}})
		case 3:
			steps = append(steps, step{"NOOP", []string{"+OK"}})
		case 4:
			steps = append(steps, step{"RETR 1", append([]string{fmt.Sprintf("+OK %d octets", s1)},
				strings.Split(strings.TrimSuffix(msg1, "\r\n"), "\r\n")...)})
		case 5:
			steps = append(steps, step{"TOP 2 1", []string{"+OK top of message follows", "Subject: two", "", ".hidden"}})
		case 6:
			steps = append(steps, step{"LIST", []string{"+OK 2 messages (" + fmt.Sprint(s1+s2) + " octets)",
				fmt.Sprintf("1 %d", s1), fmt.Sprintf("2 %d", s2)}})
		}
	}
	cmds := make([]string, len(steps))
	for i, s := range steps {
		cmds[i] = s.cmd
	}
	before := cl.count()
	c.send(cmds...) // one write
	for _, s := range steps {
		c.expect(s.resp[0])
		if len(s.resp) > 1 || strings.HasSuffix(s.resp[0], "follows") || strings.HasSuffix(s.resp[0], "octets") {
			got := c.multi()
			if fmt.Sprint(got) != fmt.Sprint(s.resp[1:]) {
				t.Fatalf("%s: got %q, want %q", s.cmd, got, s.resp[1:])
			}
		}
	}
	// The 50 responses (about 4 KB) went out in a single flush, not one
	// write per response. Allow one more in case TCP split the commands.
	if w := cl.count() - before; w > 2 {
		t.Fatalf("50 pipelined responses took %d writes", w)
	}
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
}

// TestShutdown checks that Shutdown lets a command in progress finish (a
// QUIT whose expunge is blocked) and ends idle sessions with
// "-ERR server shutting down" without committing their deletions.
func TestShutdown(t *testing.T) {
	expungeStarted, release := make(chan struct{}), make(chan struct{})
	e := newEnv(t, envOptions{wrap: func(st mailstore.Store) mailstore.Store {
		return &hookStore{Store: st, expunge: func(ctx context.Context, mb int64, uids []mailstore.UID) ([]mailstore.UID, error) {
			close(expungeStarted)
			<-release
			return st.Expunge(ctx, mb, uids)
		}}
	}})
	e.deliver(msg1)
	e.deliver(msg2)

	// bob is idle in the TRANSACTION state with a deletion pending.
	bob, err := e.store.CreateAccount(context.Background(), "bob@example.org", cheapHash("bobpw"))
	if err != nil {
		t.Fatal(err)
	}
	deliverTo(t, e.store, bob.ID, msg3)
	b := e.dial()
	b.cmdExpect("AUTH PLAIN "+plainResp("", "bob@example.org", "bobpw"), "+OK maildrop locked and ready, 1 message")
	b.cmdExpect("DELE 1", "+OK message 1 deleted")
	// idle is idle in the AUTHORIZATION state.
	idle := e.dial()

	// alice's QUIT is in progress when Shutdown starts.
	a := e.login()
	a.cmdExpect("DELE 1", "+OK message 1 deleted")
	a.send("QUIT")
	<-expungeStarted

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		shut <- e.srv.Shutdown(ctx)
	}()
	b.expect("-ERR server shutting down")
	b.expectEOF()
	idle.expect("-ERR server shutting down")
	idle.expectEOF()
	if conn, err := net.Dial("tcp", e.addr); err == nil {
		conn.Close()
		t.Fatal("listener still accepts after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a QUIT was in progress", err)
	default:
	}

	close(release)
	a.expect("+OK pop.test Letterbox POP3 server signing off (1 message deleted)")
	a.expectEOF()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if ms := e.messages(); len(ms) != 1 {
		t.Fatalf("alice has %d messages, want 1 (QUIT finished)", len(ms))
	}
	bobInbox, _ := e.store.Mailbox(context.Background(), bob.ID, mailstore.Inbox)
	if ms, _ := e.store.Messages(context.Background(), bobInbox.ID); len(ms) != 1 {
		t.Fatalf("bob has %d messages, want 1 (no QUIT)", len(ms))
	}
}

func TestShutdownTimeout(t *testing.T) {
	expungeStarted := make(chan struct{})
	e := newEnv(t, envOptions{wrap: func(st mailstore.Store) mailstore.Store {
		return &hookStore{Store: st, expunge: func(ctx context.Context, mb int64, uids []mailstore.UID) ([]mailstore.UID, error) {
			close(expungeStarted)
			<-ctx.Done() // stuck until Shutdown gives up
			return nil, ctx.Err()
		}}
	}})
	e.deliver(msg1)
	a := e.login()
	a.cmdExpect("DELE 1", "+OK message 1 deleted")
	a.send("QUIT")
	<-expungeStarted
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	// The connection was closed under the session.
	a.deadline()
	if _, err := io.ReadAll(a.r); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("read after forced shutdown: %v", err)
	}
	e.waitSessionEnd()
	if n := len(e.messages()); n != 1 {
		t.Fatalf("%d messages after a failed QUIT, want 1", n)
	}
}

func TestServeAfterShutdown(t *testing.T) {
	srv := &Server{}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); err != nil {
		t.Fatalf("Serve after Shutdown = %v, want nil", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener not closed: %v", err)
	}
}
