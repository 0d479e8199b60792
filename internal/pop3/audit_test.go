package pop3

import (
	"context"
	"crypto/tls"
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

// expect checks the events recorded since the last call (the client
// address is checked and then left out of the comparison).
func (l *eventLog) expect(t *testing.T, what string, want ...audit.Event) {
	t.Helper()
	l.mu.Lock()
	got := l.events
	l.events = nil
	l.mu.Unlock()
	for i := range got {
		if !strings.HasPrefix(got[i].Remote, "127.0.0.1:") {
			t.Errorf("event %+v: remote is not the client's address", got[i])
		}
		got[i].Remote = ""
	}
	if (len(got) != 0 || len(want) != 0) && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: audit events\ngot  %+v\nwant %+v", what, got, want)
	}
}

// newAuditEnv is newEnv with Server.Audit set (it must be set before
// Serve); implicitTLS makes the listener a TLS one.
func newAuditEnv(t *testing.T, rec audit.Recorder, implicitTLS bool) *testEnv {
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
		Hostname:     testHost,
		Logger:       slog.New(e.logs),
		Audit:        rec,
		onSessionEnd: func() { e.ended <- struct{}{} },
	}
	var ln net.Listener
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	if implicitTLS {
		ln = tls.NewListener(ln, serverTLSConfig(t))
	}
	e.ln = ln
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

// TestAuditEvents: logins (failed and not), RETR, TOP and the deletions
// of QUIT are recorded with the right fields before the response.
func TestAuditEvents(t *testing.T) {
	rec := &eventLog{}
	e := newAuditEnv(t, rec, true)
	var uids []mailstore.UID
	for i := range 3 {
		uids = append(uids, e.deliver("Subject: m\r\n\r\nbody "+string(rune('a'+i))+"\r\n"))
	}
	ev := func(event string, f func(*audit.Event)) audit.Event {
		x := audit.Event{Event: event, Proto: "pop3", User: testUser, TLS: true}
		f(&x)
		return x
	}

	c := e.dialTLS()
	c.cmdExpect("USER "+testUser, "+OK send PASS")
	c.cmdPrefix("PASS wrong", "-ERR [AUTH]")
	rec.expect(t, "PASS with a wrong password", ev(audit.EventLoginFailed, func(x *audit.Event) {
		x.Mech, x.Detail = "USER", "invalid credentials"
	}))
	c.cmdPrefix("AUTH PLAIN "+plainResp("bob@example.org", testUser, testPassword), "-ERR [AUTH]")
	rec.expect(t, "AUTH as somebody else", ev(audit.EventLoginFailed, func(x *audit.Event) {
		x.Mech, x.Detail = "PLAIN", "authorization identity bob@example.org not permitted"
	}))
	c.cmdPrefix("AUTH PLAIN "+plainResp("", testUser, testPassword), "+OK maildrop locked")
	rec.expect(t, "AUTH PLAIN", ev(audit.EventLogin, func(x *audit.Event) { x.Mech = "PLAIN" }))

	c.cmdPrefix("STAT", "+OK")
	c.cmdPrefix("LIST", "+OK")
	c.multi()
	c.cmdPrefix("UIDL", "+OK")
	c.multi()
	rec.expect(t, "STAT, LIST, UIDL")
	c.retrieve(2)
	rec.expect(t, "RETR", ev(audit.EventRead, func(x *audit.Event) {
		x.Mailbox, x.UIDs, x.Detail = "INBOX", []uint32{uint32(uids[1])}, "RETR 2"
	}))
	c.cmdPrefix("TOP 3 0", "+OK")
	c.multi()
	rec.expect(t, "TOP", ev(audit.EventRead, func(x *audit.Event) {
		x.Mailbox, x.UIDs, x.Detail = "INBOX", []uint32{uint32(uids[2])}, "TOP 3 0"
	}))
	c.cmdPrefix("DELE 1", "+OK")
	c.cmdPrefix("DELE 3", "+OK")
	rec.expect(t, "DELE (not committed yet)")
	c.cmdPrefix("QUIT", "+OK")
	rec.expect(t, "QUIT", ev(audit.EventDelete, func(x *audit.Event) {
		x.Mailbox, x.UIDs = "INBOX", []uint32{uint32(uids[0]), uint32(uids[2])}
	}))
}
