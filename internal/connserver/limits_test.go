package connserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineLog keeps log records as "LEVEL msg k=v ..." lines.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (h *lineLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *lineLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *lineLog) WithGroup(string) slog.Handler            { return h }
func (h *lineLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, b.String())
	h.mu.Unlock()
	return nil
}

func (h *lineLog) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.lines...)
}

// greeter is a session that greets and then waits for the client to
// close (or Interrupt/Close).
type greeter struct {
	c    net.Conn
	stop chan struct{}
	once sync.Once
}

func (g *greeter) Serve() {
	io.WriteString(g.c, "HELLO\r\n")
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, g.c)
		close(done)
	}()
	select {
	case <-done:
	case <-g.stop:
	}
	g.c.Close()
}

func (g *greeter) Interrupt() { g.once.Do(func() { close(g.stop) }) }
func (g *greeter) Close()     { g.Interrupt() }

type limitEnv struct {
	t     *testing.T
	srv   *Server
	addr  string
	ended chan struct{}
	log   *lineLog
}

func newLimitEnv(t *testing.T, lim *Limiter) *limitEnv {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &limitEnv{t: t, addr: l.Addr().String(), ended: make(chan struct{}, 100), log: &lineLog{}}
	e.srv = &Server{
		NewSession:   func(c net.Conn) Session { return &greeter{c: c, stop: make(chan struct{})} },
		OnSessionEnd: func() { e.ended <- struct{}{} },
		Log:          slog.New(e.log),
		Limiter:      lim,
		Refusal:      func(err error) string { return "BUSY " + err.Error() + "\r\n" },
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// dialFrom connects from the loopback address src (127.0.0.0/8 is all
// loopback on Linux, so 127.0.0.2 is a second client address).
func (e *limitEnv) dialFrom(src string) (net.Conn, *bufio.Reader) {
	e.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Minute)) // a guard against hangs only
	e.t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func (e *limitEnv) expect(r *bufio.Reader, want string) {
	e.t.Helper()
	got, err := r.ReadString('\n')
	if err != nil || got != want+"\r\n" {
		e.t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

func (e *limitEnv) expectEOF(r *bufio.Reader) {
	e.t.Helper()
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		e.t.Fatalf("want EOF, got %q, %v", rest, err)
	}
}

func (e *limitEnv) waitEnded() {
	e.t.Helper()
	select {
	case <-e.ended:
	case <-time.After(time.Minute):
		e.t.Fatal("session did not end")
	}
}

func TestConnLimitPerAddr(t *testing.T) {
	lim := &Limiter{MaxConns: 100, MaxConnsPerAddr: 2}
	e := newLimitEnv(t, lim)
	c1, r1 := e.dialFrom("127.0.0.1")
	e.expect(r1, "HELLO")
	_, r2 := e.dialFrom("127.0.0.1")
	e.expect(r2, "HELLO")
	_, r3 := e.dialFrom("127.0.0.1")
	e.expect(r3, "BUSY too many connections from this address")
	e.expectEOF(r3)
	// Another address is not affected.
	_, r4 := e.dialFrom("127.0.0.2")
	e.expect(r4, "HELLO")
	if conns, addrs, _ := lim.Counts(); conns != 3 || addrs != 2 {
		t.Fatalf("counts: %d connections, %d addresses; want 3, 2", conns, addrs)
	}
	// Once a connection has ended, the address may connect again.
	c1.Close()
	e.waitEnded()
	_, r5 := e.dialFrom("127.0.0.1")
	e.expect(r5, "HELLO")
	logs := strings.Join(e.log.all(), "\n")
	if !strings.Contains(logs, "WARN connection refused: too many connections from this address remote=127.0.0.1:") ||
		!strings.Contains(logs, "limit=max_connections_per_ip max=2") {
		t.Fatalf("refusal not logged at warn with the address:\n%s", logs)
	}
}

func TestConnLimitOverall(t *testing.T) {
	lim := &Limiter{MaxConns: 2, MaxConnsPerAddr: 10}
	e := newLimitEnv(t, lim)
	c1, r1 := e.dialFrom("127.0.0.1")
	e.expect(r1, "HELLO")
	_, r2 := e.dialFrom("127.0.0.2")
	e.expect(r2, "HELLO")
	_, r3 := e.dialFrom("127.0.0.3")
	e.expect(r3, "BUSY too many connections")
	e.expectEOF(r3)
	c1.Close()
	e.waitEnded()
	_, r4 := e.dialFrom("127.0.0.3")
	e.expect(r4, "HELLO")
	// Everything is given back when the sessions end.
	e.srv.Shutdown(context.Background())
	if conns, addrs, _ := lim.Counts(); conns != 0 || addrs != 0 {
		t.Fatalf("after shutdown: %d connections, %d addresses counted", conns, addrs)
	}
}

func TestConnLimitExempt(t *testing.T) {
	lim := &Limiter{MaxConnsPerAddr: 1, ExemptAddr: func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") }}
	e := newLimitEnv(t, lim)
	for range 3 {
		_, r := e.dialFrom("127.0.0.1")
		e.expect(r, "HELLO")
	}
	_, r := e.dialFrom("127.0.0.2")
	e.expect(r, "HELLO")
	_, r = e.dialFrom("127.0.0.2")
	e.expect(r, "BUSY too many connections from this address")
}

func TestAddrKeyIPv6Prefix(t *testing.T) {
	lim := &Limiter{MaxConnsPerAddr: 1}
	a := &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1"), Port: 1000}
	b := &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::9"), Port: 1000}
	other := &net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1"), Port: 1000}
	mapped := &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}
	v4 := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 2}
	rel, err := lim.AcquireConn(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.AcquireConn(b, nil); err != ErrTooManyConnsFromAddr {
		t.Fatalf("same /64: %v, want ErrTooManyConnsFromAddr", err)
	}
	if _, err := lim.AcquireConn(other, nil); err != nil {
		t.Fatalf("other /64: %v", err)
	}
	if _, err := lim.AcquireConn(mapped, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := lim.AcquireConn(v4, nil); err != ErrTooManyConnsFromAddr {
		t.Fatalf("IPv4-mapped and IPv4 are one address: %v", err)
	}
	rel()
	rel() // idempotent
	if _, err := lim.AcquireConn(b, nil); err != nil {
		t.Fatalf("after release: %v", err)
	}
	// Unix sockets have no address: only the overall limit applies.
	if _, err := lim.AcquireConn(&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, nil); err != nil {
		t.Fatal(err)
	}
	if conns, addrs, _ := lim.Counts(); conns != 4 || addrs != 3 {
		t.Fatalf("counts %d %d, want 4 3", conns, addrs)
	}
}

func TestSessionsPerAccount(t *testing.T) {
	lim := &Limiter{MaxSessionsPerAccount: 2}
	r1, ok1 := lim.AcquireSession("Ann@Example.org")
	_, ok2 := lim.AcquireSession("ann@example.org")
	_, ok3 := lim.AcquireSession("ANN@example.org")
	_, okOther := lim.AcquireSession("bob@example.org")
	if !ok1 || !ok2 || ok3 || !okOther {
		t.Fatalf("acquire: %v %v %v %v; want true true false true", ok1, ok2, ok3, okOther)
	}
	r1()
	r1()
	if _, ok := lim.AcquireSession("ann@example.org"); !ok {
		t.Fatal("slot not given back")
	}
	var nilLim *Limiter
	if rel, ok := nilLim.AcquireSession("x"); !ok || rel == nil {
		t.Fatal("nil Limiter must not limit")
	}
}

func TestRefusalLogRateLimited(t *testing.T) {
	log := &lineLog{}
	now := time.Unix(1e9, 0)
	lim := &Limiter{MaxConns: 1, now: func() time.Time { return now }}
	if _, err := lim.AcquireConn(&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}, slog.New(log)); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := lim.AcquireConn(&net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: i}, slog.New(log)); err != ErrTooManyConns {
			t.Fatalf("err %v", err)
		}
	}
	now = now.Add(time.Second)
	lim.AcquireConn(&net.TCPAddr{IP: net.ParseIP("192.0.2.3"), Port: 7}, slog.New(log))
	want := []string{
		"WARN connection refused: too many connections remote=192.0.2.2:0 limit=max_connections max=1",
		"WARN connection refused: too many connections remote=192.0.2.3:7 limit=max_connections max=1 suppressed=4",
	}
	if got := log.all(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
