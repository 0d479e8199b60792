package pop3

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

const (
	msg1 = "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: one\r\n\r\nHello Alice\r\n"
	// msg2 has lines that need dot-stuffing and no CRLF at the end.
	msg2 = "Subject: two\r\n\r\n.hidden\r\n..two dots\r\n.\r\nlast line without CRLF"
	msg3 = "Subject: three\r\n\r\nbody\r\nline2\r\nline3\r\n"
)

// wantSize is the size LIST announces: the body plus the CRLF added to a
// body that does not end with one.
func wantSize(body string) int {
	return len(body + lineEndFix([]byte(body[max(0, len(body)-2):])))
}

func TestTransactionCommands(t *testing.T) {
	e := newEnv(t, envOptions{})
	u1, u2, u3 := e.deliver(msg1), e.deliver(msg2), e.deliver(msg3)
	v := e.inbox.UIDValidity
	s1, s2, s3 := wantSize(msg1), wantSize(msg2), wantSize(msg3)
	if s2 != len(msg2)+2 {
		t.Fatalf("test setup: s2 = %d", s2)
	}

	c := e.login()
	c.cmdExpect("STAT", fmt.Sprintf("+OK 3 %d", s1+s2+s3))
	c.cmdExpect("LIST", fmt.Sprintf("+OK 3 messages (%d octets)", s1+s2+s3))
	if got, want := c.multi(), []string{fmt.Sprintf("1 %d", s1), fmt.Sprintf("2 %d", s2), fmt.Sprintf("3 %d", s3)}; !slices.Equal(got, want) {
		t.Fatalf("LIST = %q, want %q", got, want)
	}
	c.cmdExpect("LIST 2", fmt.Sprintf("+OK 2 %d", s2))
	c.cmdExpect("list 02", fmt.Sprintf("+OK 2 %d", s2))
	c.cmdExpect("UIDL", "+OK unique-id listing follows")
	if got, want := c.multi(), []string{fmt.Sprintf("1 %d.%d", v, u1), fmt.Sprintf("2 %d.%d", v, u2), fmt.Sprintf("3 %d.%d", v, u3)}; !slices.Equal(got, want) {
		t.Fatalf("UIDL = %q, want %q", got, want)
	}
	c.cmdExpect("UIDL 3", fmt.Sprintf("+OK 3 %d.%d", v, u3))

	ann, body := c.retrieve(1)
	if ann != fmt.Sprintf("+OK %d octets", s1) || body != msg1 {
		t.Fatalf("RETR 1 = %q %q", ann, body)
	}
	c.cmdExpect("TOP 3 0", "+OK top of message follows")
	if got := decodeMulti(t, c.multiRaw()); got != "Subject: three\r\n\r\n" {
		t.Fatalf("TOP 3 0 = %q", got)
	}
	c.cmdExpect("TOP 3 2", "+OK top of message follows")
	if got := decodeMulti(t, c.multiRaw()); got != "Subject: three\r\n\r\nbody\r\nline2\r\n" {
		t.Fatalf("TOP 3 2 = %q", got)
	}
	c.cmdExpect("TOP 3 99999999999999", "+OK top of message follows")
	if got := decodeMulti(t, c.multiRaw()); got != msg3 {
		t.Fatalf("TOP 3 many = %q", got)
	}
	c.cmdExpect("NOOP", "+OK")

	c.cmdExpect("DELE 2", "+OK message 2 deleted")
	c.cmdExpect("STAT", fmt.Sprintf("+OK 2 %d", s1+s3))
	c.cmdExpect("LIST", fmt.Sprintf("+OK 2 messages (%d octets)", s1+s3))
	if got, want := c.multi(), []string{fmt.Sprintf("1 %d", s1), fmt.Sprintf("3 %d", s3)}; !slices.Equal(got, want) {
		t.Fatalf("LIST after DELE = %q, want %q", got, want)
	}
	c.cmdExpect("UIDL", "+OK unique-id listing follows")
	if got, want := c.multi(), []string{fmt.Sprintf("1 %d.%d", v, u1), fmt.Sprintf("3 %d.%d", v, u3)}; !slices.Equal(got, want) {
		t.Fatalf("UIDL after DELE = %q, want %q", got, want)
	}
	c.cmdExpect("RSET", fmt.Sprintf("+OK maildrop has 3 messages (%d octets)", s1+s2+s3))
	c.cmdExpect("LIST 2", fmt.Sprintf("+OK 2 %d", s2))
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
	c.expectEOF()
	e.waitSessionEnd()
	if n := len(e.messages()); n != 3 {
		t.Fatalf("%d messages after RSET and QUIT, want 3", n)
	}
	if v, err := e.store.Vanished(context.Background(), e.inbox.ID, 0); err != nil || len(v) != 0 {
		t.Fatalf("Vanished = %v, %v; want none", v, err)
	}
}

func TestTransactionErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(msg1)
	e.deliver(msg2)
	c := e.login()
	c.cmdExpect("DELE 2", "+OK message 2 deleted")
	for _, tt := range []struct{ cmd, want string }{
		{"DELE 2", "-ERR message 2 already deleted"},
		{"RETR 2", "-ERR message 2 already deleted"},
		{"LIST 2", "-ERR message 2 already deleted"},
		{"UIDL 2", "-ERR message 2 already deleted"},
		{"TOP 2 0", "-ERR message 2 already deleted"},
		{"RETR 3", "-ERR no such message"},
		{"LIST 0", "-ERR no such message"},
		{"RETR 4294967296", "-ERR no such message"},
		{"RETR -1", "-ERR invalid message number"},
	} {
		c.cmdExpect(tt.cmd, tt.want)
	}
	// Nine errors so far: one more would close the session. A new one:
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (1 message deleted)")
	c.expectEOF()

	e.deliver(msg3)
	c = e.login()
	for _, tt := range []struct{ cmd, want string }{
		{"RETR", "-ERR syntax error"},
		{"RETR 1 2", "-ERR syntax error"},
		{"LIST 1 2", "-ERR syntax error"},
		{"TOP 1", "-ERR syntax error"},
		{"TOP 1 x", "-ERR invalid number of lines"},
		{"STAT 1", "-ERR syntax error"},
		{"AUTH PLAIN", "-ERR already logged in"},
		{"STLS", "-ERR already logged in"},
		{"XYZZ", "-ERR unknown command"},
	} {
		c.cmdExpect(tt.cmd, tt.want)
	}
	c.cmdExpect("STAT", fmt.Sprintf("+OK 2 %d", wantSize(msg1)+wantSize(msg3)))
}

func TestQuitExpunges(t *testing.T) {
	e := newEnv(t, envOptions{})
	u1, u2, u3 := e.deliver(msg1), e.deliver(msg2), e.deliver(msg3)
	c := e.login()
	c.cmdExpect("DELE 1", "+OK message 1 deleted")
	c.cmdExpect("DELE 3", "+OK message 3 deleted")
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (2 messages deleted)")
	c.expectEOF()
	// The +OK was sent after the expunge: it is visible at once.
	ms := e.messages()
	if len(ms) != 1 || ms[0].UID != u2 {
		t.Fatalf("messages after QUIT: %+v, want only UID %d", ms, u2)
	}
	vanished, err := e.store.Vanished(context.Background(), e.inbox.ID, 0)
	if err != nil || !slices.Equal(vanished, []mailstore.UID{u1, u3}) {
		t.Fatalf("Vanished = %v, %v; want [%d %d]", vanished, err, u1, u3)
	}
	mb, err := e.store.Mailbox(context.Background(), e.account.ID, mailstore.Inbox)
	if err != nil || mb.Messages != 1 {
		t.Fatalf("INBOX has %d messages (%v), want 1", mb.Messages, err)
	}
	c = e.login()
	c.cmdExpect("STAT", fmt.Sprintf("+OK 1 %d", wantSize(msg2)))
	c.cmdExpect("UIDL 1", fmt.Sprintf("+OK 1 %d.%d", e.inbox.UIDValidity, u2))
}

func TestDroppedConnectionDeletesNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(msg1)
	e.deliver(msg2)
	c := e.login()
	c.cmdExpect("DELE 1", "+OK message 1 deleted")
	c.cmdExpect("DELE 2", "+OK message 2 deleted")
	c.conn.Close()
	e.waitSessionEnd()
	if n := len(e.messages()); n != 2 {
		t.Fatalf("%d messages after a dropped connection, want 2", n)
	}
	if v, err := e.store.Vanished(context.Background(), e.inbox.ID, 0); err != nil || len(v) != 0 {
		t.Fatalf("Vanished = %v, %v; want none", v, err)
	}
	// The lock was released.
	c = e.login()
	c.cmdExpect("STAT", fmt.Sprintf("+OK 2 %d", wantSize(msg1)+wantSize(msg2)))
}

func TestExpungeFailureDeletesNothing(t *testing.T) {
	e := newEnv(t, envOptions{wrap: func(st mailstore.Store) mailstore.Store {
		return &hookStore{Store: st, expunge: func(context.Context, int64, []mailstore.UID) ([]mailstore.UID, error) {
			return nil, errors.New("disk on fire")
		}}
	}})
	e.deliver(msg1)
	c := e.login()
	c.cmdExpect("DELE 1", "+OK message 1 deleted")
	c.cmdExpect("QUIT", "-ERR [SYS/TEMP] some deleted messages not removed")
	c.expectEOF()
	e.waitSessionEnd()
	if n := len(e.messages()); n != 1 {
		t.Fatalf("%d messages, want 1", n)
	}
	c = e.login() // the lock was released
	c.cmdExpect("STAT", fmt.Sprintf("+OK 1 %d", wantSize(msg1)))
}

func TestRetrSetsSeenTopDoesNot(t *testing.T) {
	e := newEnv(t, envOptions{})
	u1, u2 := e.deliver(msg1), e.deliver(msg3)
	seen := func(uid mailstore.UID) bool {
		t.Helper()
		for _, m := range e.messages() {
			if m.UID == uid {
				return m.HasFlag(mailstore.FlagSeen)
			}
		}
		t.Fatalf("UID %d not found", uid)
		return false
	}
	c := e.login()
	c.cmdExpect("TOP 1 10", "+OK top of message follows")
	c.multiRaw()
	c.cmdExpect("TOP 2 0", "+OK top of message follows")
	c.multiRaw()
	if seen(u1) || seen(u2) {
		t.Fatal("TOP set \\Seen")
	}
	c.retrieve(2)
	c.retrieve(2) // again: no error
	// The mark is committed in the background, and durably before QUIT's +OK.
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
	e.waitSessionEnd()
	if !seen(u2) {
		t.Fatal("RETR did not set \\Seen")
	}
	if seen(u1) {
		t.Fatal("RETR 2 set \\Seen on message 1")
	}

	// A dropped connection keeps the marks of what was retrieved.
	c = e.login()
	c.retrieve(1)
	c.conn.Close()
	e.waitSessionEnd()
	if !seen(u1) {
		t.Fatal("RETR before a dropped connection did not set \\Seen")
	}
}

func TestDotStuffingAndSizes(t *testing.T) {
	e := newEnv(t, envOptions{})
	bodies := []string{
		msg2,
		".starts with a dot\r\n\r\n.\r\n",
		"Subject: bare CR at the end\r\n\r\nx\r",
		"Subject: x\r\n\r\n" + strings.Repeat(".line\r\n", 20000), // larger than the buffers
		"x",
	}
	for _, b := range bodies {
		e.deliver(b)
	}
	c := e.login()
	total := 0
	for i, b := range bodies {
		n := i + 1
		size := wantSize(b)
		total += size
		c.cmdExpect(fmt.Sprintf("LIST %d", n), fmt.Sprintf("+OK %d %d", n, size))
		c.cmdExpect(fmt.Sprintf("RETR %d", n), fmt.Sprintf("+OK %d octets", size))
		raw := c.multiRaw()
		got := decodeMulti(t, raw)
		if len(got) != size {
			t.Errorf("message %d: client received %d octets, LIST said %d", n, len(got), size)
		}
		if want := b + lineEndFix([]byte(b[max(0, len(b)-2):])); got != want {
			t.Errorf("message %d: received %q, want %q", n, trunc(got), trunc(want))
		}
		// Every line that starts with a dot went out with one more.
		for line := range strings.SplitSeq(strings.TrimSuffix(raw, ".\r\n"), "\r\n") {
			if strings.HasPrefix(line, ".") && !strings.HasPrefix(line, "..") {
				t.Errorf("message %d: unstuffed line %q", n, line)
			}
		}
	}
	c.cmdExpect("STAT", fmt.Sprintf("+OK %d %d", len(bodies), total))
	c.cmdExpect("TOP 1 2", "+OK top of message follows")
	if raw := c.multiRaw(); raw != "Subject: two\r\n\r\n..hidden\r\n...two dots\r\n.\r\n" {
		t.Fatalf("TOP 1 2 = %q", raw)
	}
	c.cmdExpect("TOP 2 0", "+OK top of message follows")
	if raw := c.multiRaw(); raw != "..starts with a dot\r\n\r\n.\r\n" {
		t.Fatalf("TOP 2 0 = %q", raw)
	}
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

var uidlRE = regexp.MustCompile(`^[0-9]+\.[0-9]+$`)

func TestUIDLStable(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(msg1)
	e.deliver(msg2)
	e.deliver(msg3)
	uidls := func(c *client) map[string]string { // unique-id -> message number
		t.Helper()
		c.cmdExpect("UIDL", "+OK unique-id listing follows")
		m := map[string]string{}
		for _, l := range c.multi() {
			n, id, ok := strings.Cut(l, " ")
			if !ok || !uidlRE.MatchString(id) || len(id) > 70 {
				t.Fatalf("bad UIDL line %q", l)
			}
			for _, r := range id {
				if r < 0x21 || r > 0x7e {
					t.Fatalf("UIDL %q has character %q", id, r)
				}
			}
			if _, dup := m[id]; dup {
				t.Fatalf("duplicate UIDL %q", id)
			}
			m[id] = n
		}
		return m
	}
	c := e.login()
	first := uidls(c)
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (0 messages deleted)")
	c.expectEOF()

	c = e.login()
	if again := uidls(c); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("UIDL changed between sessions: %v then %v", first, again)
	}
	c.cmdExpect("DELE 1", "+OK message 1 deleted")
	c.cmdExpect("QUIT", "+OK pop.test Letterbox POP3 server signing off (1 message deleted)")
	c.expectEOF()
	u4 := e.deliver("Subject: four\r\n\r\n4\r\n")

	c = e.login()
	after := uidls(c)
	if len(after) != 3 {
		t.Fatalf("UIDL after delete and delivery: %v", after)
	}
	for id, n := range first {
		if n == "1" {
			if _, ok := after[id]; ok {
				t.Fatalf("deleted message's UIDL %q still listed", id)
			}
			continue
		}
		// Message numbers shift, unique-ids do not.
		if _, ok := after[id]; !ok {
			t.Fatalf("UIDL %q of message %s lost after another message was deleted", id, n)
		}
	}
	if n, ok := after[fmt.Sprintf("%d.%d", e.inbox.UIDValidity, u4)]; !ok || n != "3" {
		t.Fatalf("new message's UIDL missing: %v", after)
	}
}
