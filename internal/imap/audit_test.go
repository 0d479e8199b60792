package imap

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

// eventLog is an audit.Recorder that keeps the events.
type eventLog struct {
	mu     sync.Mutex
	events []audit.Event
}

func (l *eventLog) Record(e audit.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// take returns the events recorded since the last take, with the client
// address checked and blanked.
func (l *eventLog) take(t *testing.T) []audit.Event {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := l.events
	l.events = nil
	for i := range ev {
		if !strings.HasPrefix(ev[i].Remote, "127.0.0.1:") {
			t.Errorf("event %+v: remote is not the client's address", ev[i])
		}
		ev[i].Remote = ""
	}
	return ev
}

func (l *eventLog) expect(t *testing.T, what string, want ...audit.Event) {
	t.Helper()
	got := l.take(t)
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: audit events\ngot  %+v\nwant %+v", what, got, want)
	}
}

// newAuditEnv is newEnv with Server.Audit set (it must be set before
// Serve).
func newAuditEnv(t *testing.T, rec audit.Recorder) *testEnv {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &testEnv{t: t, store: st, logs: &logRecorder{}, ended: make(chan struct{}, 100)}
	ctx := context.Background()
	if e.account, err = st.CreateAccount(ctx, testUser, cheapHash(testPassword)); err != nil {
		t.Fatal(err)
	}
	if e.inbox, err = st.Mailbox(ctx, e.account.ID, mailstore.Inbox); err != nil {
		t.Fatal(err)
	}
	lookup := func(ctx context.Context, user string) (string, string, error) {
		a, err := st.Account(ctx, user)
		if errors.Is(err, mailstore.ErrNoSuchAccount) {
			return "", "", auth.ErrUnknownUser
		}
		return a.Name, a.PasswordHash, err
	}
	e.srv = &Server{
		Store: st,
		Auth: &auth.Authenticator{Lookup: lookup, Throttle: &auth.Throttle{BaseDelay: time.Millisecond,
			MaxDelay: 10 * time.Millisecond, Forget: time.Minute, MaxEntries: 1000}},
		Hostname: testHost,
		Logger:   slog.New(e.logs),
		Audit:    rec,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr, e.ln = ln.Addr().String(), ln
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-served
	})
	return e
}

// TestAuditEvents: each audited command records one event with the right
// fields, before its response; commands that send no message bytes or
// remove nothing record nothing.
func TestAuditEvents(t *testing.T) {
	rec := &eventLog{}
	e := newAuditEnv(t, rec)
	e.deliverN(4)
	ev := func(event string, f func(*audit.Event)) audit.Event {
		x := audit.Event{Event: event, Proto: "imap", User: testUser}
		if f != nil {
			f(&x)
		}
		return x
	}

	c := e.dial()
	c.cmd("a", `LOGIN `+testUser+` "wrong"`)
	rec.expect(t, "LOGIN with a wrong password", ev(audit.EventLoginFailed, func(x *audit.Event) {
		x.Mech, x.Detail = "LOGIN", "invalid credentials"
	}))
	c.cmd("b", "AUTHENTICATE PLAIN "+plainResp("bob@example.org", testUser, testPassword))
	rec.expect(t, "AUTHENTICATE as somebody else", ev(audit.EventLoginFailed, func(x *audit.Event) {
		x.Mech, x.Detail = "PLAIN", "authorization identity bob@example.org not permitted"
	}))
	c.cmd("c", "AUTHENTICATE PLAIN "+plainResp("", testUser, testPassword))
	rec.expect(t, "AUTHENTICATE", ev(audit.EventLogin, func(x *audit.Event) { x.Mech = "PLAIN" }))

	c.cmd("d", "SELECT INBOX")
	c.cmd("e", "FETCH 1:4 (FLAGS ENVELOPE BODYSTRUCTURE RFC822.SIZE BINARY.SIZE[1])")
	rec.expect(t, "FETCH without message bytes")
	c.cmd("f", "FETCH 1:2 (BODY.PEEK[HEADER] BODY[]<0.10>)")
	rec.expect(t, "FETCH of sections", ev(audit.EventRead, func(x *audit.Event) {
		x.Mailbox, x.UIDs, x.Detail = "INBOX", []uint32{1, 2}, "BODY.PEEK[HEADER] BODY[]<0.10>"
	}))
	c.cmd("g", "UID FETCH 3 (RFC822 BINARY.PEEK[1])")
	rec.expect(t, "UID FETCH", ev(audit.EventRead, func(x *audit.Event) {
		x.Mailbox, x.UIDs, x.Detail = "INBOX", []uint32{3}, "RFC822 BINARY.PEEK[1]"
	}))

	c.cmd("h", `STORE 1 +FLAGS (\Deleted)`)
	c.cmd("i", "EXPUNGE")
	rec.expect(t, "EXPUNGE", ev(audit.EventExpunge, func(x *audit.Event) { x.Mailbox, x.UIDs = "INBOX", []uint32{1} }))
	c.cmd("j", "EXPUNGE")
	rec.expect(t, "EXPUNGE of nothing")
	c.cmd("k", `STORE 1:2 +FLAGS (\Deleted)`)
	c.cmd("l", "UID EXPUNGE 2")
	rec.expect(t, "UID EXPUNGE", ev(audit.EventExpunge, func(x *audit.Event) { x.Mailbox, x.UIDs = "INBOX", []uint32{2} }))

	c.cmd("m", "CREATE Archive")
	c.cmd("n", "COPY 1 Archive")
	rec.expect(t, "COPY", ev(audit.EventCopy, func(x *audit.Event) {
		x.Mailbox, x.Dest, x.UIDs = "INBOX", "Archive", []uint32{3}
	}))
	c.cmd("o", "MOVE 1:2 Archive")
	rec.expect(t, "MOVE", ev(audit.EventMove, func(x *audit.Event) {
		x.Mailbox, x.Dest, x.UIDs = "INBOX", "Archive", []uint32{3, 4}
	}))
	c.cmd("p", "SELECT Archive")
	// Archive 1 (COPY) and 2 (MOVE) are copies of INBOX UID 3, which
	// was flagged \Deleted by STORE k.
	c.cmd("q", `STORE 3 +FLAGS (\Deleted)`)
	c.cmd("r", "CLOSE")
	rec.expect(t, "CLOSE", ev(audit.EventExpunge, func(x *audit.Event) { x.Mailbox, x.UIDs = "Archive", []uint32{1, 2, 3} }))
	c.cmd("s", "DELETE Archive")
	rec.expect(t, "DELETE", ev(audit.EventMailboxDelete, func(x *audit.Event) { x.Mailbox = "Archive" }))
	c.cmd("t", "LOGOUT")
}
