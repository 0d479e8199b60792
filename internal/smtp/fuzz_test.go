package smtp

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/delivery"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

// panicWatch is a slog handler that remembers go-smtp's "panic serving"
// reports: go-smtp recovers panics in session code and only logs them, so a
// fuzz run must look for them.
type panicWatch struct {
	mu     sync.Mutex
	panics []string
}

func (p *panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicWatch) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p *panicWatch) WithGroup(string) slog.Handler            { return p }
func (p *panicWatch) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if v := a.Value.String(); strings.Contains(v, "panic") && !knownGoSMTPPanic(v) {
			p.mu.Lock()
			p.panics = append(p.panics, v)
			p.mu.Unlock()
		}
		return true
	})
	return nil
}

// knownGoSMTPPanic recognises a go-smtp v0.25.1 bug that go-smtp recovers
// from itself: the goroutine it starts for a BDAT transfer calls
// c.Session().Data when the connection was already closed (or STARTTLS
// already dropped the session), so Session() is nil. The transfer was
// aborted anyway; nothing is lost and our code is not involved (the
// panicking frame is go-smtp's own closure).
func knownGoSMTPPanic(report string) bool {
	_, after, ok := strings.Cut(report, "\npanic(")
	if !ok {
		return false
	}
	lines := strings.Split(after, "\n")
	return len(lines) > 2 && strings.Contains(report, "nil pointer dereference") &&
		strings.HasPrefix(lines[2], "github.com/emersion/go-smtp.(*Conn).handleBdat.func1()")
}

func (p *panicWatch) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.panics
	p.panics = nil
	return s
}

// upstreamRaceSeeds abort a BDAT transfer and start another one on the same
// connection, which trips a data race inside go-smtp v0.25.1 (its BDAT
// goroutine reads c.dataResult and c.bdatStatus after the next BDAT
// reassigned them; see session.Reset). They run normally, but not under
// the race detector, which would report go-smtp's race, not ours.
var upstreamRaceSeeds = []string{
	"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@example.org>\r\nBDAT 3\r\nabcRSET\r\nBDAT 0\r\nRSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@example.org>\r\nBDAT 2 LAST\r\nxy",
	"L" + "LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@example.org>\r\nBDAT 0\r\nLHLO y\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@example.org>\r\nBDAT 1 LAST\r\nz",
}

// upstreamClosePanic recognises a go-smtp v0.25.1 bug found by this fuzz
// target (seed c27c8fcc08b25e00): after its fourth protocol error go-smtp
// answers "500 5.5.1 Too many errors", closes the connection (which sets
// its session to nil) and then still handles a command it had already
// buffered; MAIL, RCPT, DATA, ... call the nil session and panic. go-smtp
// recovers the panic itself (the client, already disconnected, gets a
// 421; nothing is stored), so it is tolerated here exactly when every
// panic is such a nil dereference inside go-smtp's command handling and
// the server had said "Too many errors"; any other panic still fails.
func upstreamClosePanic(panics []string, out string) bool {
	if !strings.Contains(out, "500 5.5.1 Too many errors") {
		return false
	}
	for _, p := range panics {
		if !strings.Contains(p, "nil pointer dereference") || !strings.Contains(p, "github.com/emersion/go-smtp.(*Conn).handle") {
			return false
		}
	}
	return true
}

var fuzzSeeds = []string{
	"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<user@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n..dot\r\n.\r\nQUIT\r\n",
	"EHLO x\r\nMAIL FROM:<> SIZE=10 BODY=8BITMIME\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b+x@example.org>\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\nQUIT\r\n",
	"EHLO x\r\nMAIL FROM:<j\xc3\xb6rg@x.example> SMTPUTF8\r\nRCPT TO:<j\xc3\xb6rg@example.org>\r\nDATA\r\n\xff\x00\r\n.\r\n",
	"EHLO x\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello",
	"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n" + strings.Repeat("x", 2100) + "\r\n.\r\n",
	"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<x@example.net>\r\nRCPT TO:<\"q u\"@example.org>\r\nDATA\r\n",
	"HELO x\r\nVRFY a\r\nNOOP\r\nRSET\r\nAUTH PLAIN AA==\r\nEXPN x\r\nHELP\r\nFOO\r\n\r\nQUIT\r\n",
	"L" + "LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
	"L" + "LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 4\r\nabcdBDAT 100000000 LAST\r\nxyz",
}

// FuzzSession feeds arbitrary bytes as the client side of an SMTP session
// (or, when the input starts with 'L', an LMTP session) to a real server over
// loopback, on a real store. The session must neither panic nor hang.
func FuzzSession(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, s := range upstreamRaceSeeds {
		f.Add([]byte(s))
	}
	watch := &panicWatch{}
	logger := slog.New(watch)
	store, err := sqlite.Open(f.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	for _, a := range testAccounts {
		if _, err := store.CreateAccount(context.Background(), a, ""); err != nil {
			f.Fatal(err)
		}
	}
	cert, _ := selfSigned(f)
	agent := &delivery.Agent{Store: store, Hostname: "mx.example.org", Domains: []string{"example.org"},
		MaxMessageSize: 64 << 10, Logger: logger}
	addrs := map[bool]string{}
	var servers []*Server
	for _, lmtp := range []bool{false, true} {
		srv := &Server{Agent: agent, Hostname: "mx.example.org", LMTP: lmtp, Logger: logger,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadTimeout: time.Minute}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Fatal(err)
		}
		addrs[lmtp] = l.Addr().String()
		go srv.Serve(l)
		servers = append(servers, srv)
	}
	f.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown(context.Background())
		}
		store.Close()
	})

	f.Fuzz(func(t *testing.T, in []byte) {
		if raceEnabled && slices.Contains(upstreamRaceSeeds, string(in)) {
			t.Skip("go-smtp v0.25.1 data race on an aborted BDAT transfer (not ours)")
		}
		lmtp := len(in) > 0 && in[0] == 'L'
		if lmtp {
			in = in[1:]
		}
		conn, err := net.Dial("tcp", addrs[lmtp])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		drained := make(chan struct{})
		var out bytes.Buffer // the server's replies, read after drained
		go func() {
			io.Copy(&out, conn)
			close(drained)
		}()
		conn.Write(in) // the server may close early; that is fine
		conn.(*net.TCPConn).CloseWrite()
		// A hang detector (the server's own read timeout is longer), not
		// synchronisation: the server closes after reading EOF.
		select {
		case <-drained:
		case <-time.After(15 * time.Second):
			t.Fatalf("session did not end after EOF; input %q", in)
		}
		if p := watch.take(); len(p) > 0 {
			if upstreamClosePanic(p, out.String()) {
				t.Skip("go-smtp v0.25.1 handles a buffered command after closing for too many errors (not ours; see upstreamClosePanic)")
			}
			t.Fatalf("panic in session on input %q: %v", in, p)
		}
	})
}
