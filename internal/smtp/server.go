// Package smtp is Letterbox's inbound SMTP (MX) and LMTP (RFC 2033) front
// end. It exists to put github.com/emersion/go-smtp, which parses the
// protocol, behind a small adapter that applies Letterbox's rules: local
// domains only (no relaying, no AUTH on these ports), recipients resolved by
// the delivery agent at RCPT time, replies to DATA/BDAT (and each LMTP
// per-recipient reply) sent only once the store made the copies durable
// (design.md §4), bounded line lengths, message size and recipient count,
// per-read timeouts, structured logs, and a graceful Shutdown that lets a
// transfer in progress finish while idle clients get 421 4.3.2.
//
// One Server type serves both roles; LMTP selects RFC 2033 mode (LHLO, one
// reply per recipient after DATA). Delivery itself (trace fields, size
// limit, store) is package delivery's job.
package smtp

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/letterbox/letterbox/internal/connserver"
	"github.com/letterbox/letterbox/internal/delivery"
)

// Defaults for the zero values of Server's fields.
const (
	DefaultMaxRecipients = 100
	// DefaultReadTimeout bounds the wait for a command (RFC 5321
	// §4.5.3.2.7: a server SHOULD wait at least 5 minutes) and for each
	// line of a DATA/BDAT transfer (conn.go; over STARTTLS the line ends
	// are seen in the encrypted stream, so there it is approximate).
	DefaultReadTimeout = 5 * time.Minute
	// DefaultWriteTimeout bounds each write (RFC 5321 §4.5.3.2.6 allows
	// the client 10 minutes for the final reply; we give writes as long).
	DefaultWriteTimeout = 10 * time.Minute
	// MaxLineLength bounds command and DATA lines, in octets. RFC 5321
	// §4.5.3.1.6 allows 1000 including CRLF; like go-smtp's default we
	// accept twice that before rejecting.
	MaxLineLength = 2000
)

// ErrServerClosed is returned by Serve and Shutdown after Shutdown.
var ErrServerClosed = errors.New("smtp: server closed")

// Server is an SMTP or LMTP server delivering to local accounts through
// Agent. Set its fields before calling Serve; Serve may be called for
// several listeners.
type Server struct {
	Agent     *delivery.Agent
	TLSConfig *tls.Config // nil: no STARTTLS
	Hostname  string      // greeting; default Agent.Hostname
	// LMTP selects RFC 2033 mode: LHLO, and one reply per recipient after
	// DATA/BDAT.
	LMTP          bool
	Logger        *slog.Logger
	MaxRecipients int // default DefaultMaxRecipients
	ReadTimeout   time.Duration
	WriteTimeout  time.Duration
	// Limiter counts connections (shared with the other listeners); one
	// over its limits gets "421 4.7.0" and is closed. nil limits nothing.
	Limiter *connserver.Limiter

	initOnce sync.Once
	gs       *gosmtp.Server
	ctx      context.Context // cancelled when Shutdown gives up waiting
	cancel   context.CancelFunc
	connSeq  atomic.Uint64
	onConn   func(*trackedConn) // test hook, called for each accepted connection

	mu        sync.Mutex
	shutdown  bool
	listeners []net.Listener
	conns     map[*trackedConn]struct{}
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.conns = make(map[*trackedConn]struct{})
		gs := gosmtp.NewServer(&backend{s})
		gs.Domain = s.hostname()
		gs.LMTP = s.LMTP
		gs.TLSConfig = s.TLSConfig
		gs.MaxMessageBytes = s.Agent.MaxSize()
		gs.MaxLineLength = MaxLineLength
		// Enforced by the session instead: go-smtp would advertise
		// "LIMITS RCPTMAX=n" and word the 452 differently.
		gs.MaxRecipients = 0
		// Deadlines are managed by trackedConn (per read during DATA).
		gs.ReadTimeout, gs.WriteTimeout = 0, 0
		gs.EnableSMTPUTF8 = true
		// There are no AUTH mechanisms; this only makes AUTH fail with
		// "502 5.7.0 Authentication not supported" instead of go-smtp's
		// "523 TLS is required", which would suggest AUTH works over TLS.
		gs.AllowInsecureAuth = true
		gs.ErrorLog = errorLog{s.logger()}
		s.gs = gs
	})
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Server) hostname() string {
	switch {
	case s.Hostname != "":
		return s.Hostname
	case s.Agent != nil && s.Agent.Hostname != "":
		return s.Agent.Hostname
	}
	return "localhost"
}

func (s *Server) maxRecipients() int {
	if s.MaxRecipients > 0 {
		return s.MaxRecipients
	}
	return DefaultMaxRecipients
}

func (s *Server) readTimeout() time.Duration {
	if s.ReadTimeout > 0 {
		return s.ReadTimeout
	}
	return DefaultReadTimeout
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return DefaultWriteTimeout
}

// Serve accepts connections on l until Shutdown. It returns nil after
// Shutdown, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	err := s.gs.Serve(&listener{Listener: l, srv: s})
	s.mu.Lock()
	down := s.shutdown
	s.mu.Unlock()
	if down {
		return nil
	}
	return err
}

// Shutdown stops accepting connections. A DATA or BDAT transfer in progress
// finishes and gets its reply (after the store made the message durable);
// every connection waiting for a command — at once, or after that reply —
// gets "421 4.3.2" and is closed. Shutdown returns when all connections
// are gone, or, when ctx ends first, closes the remaining connections and
// returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.shutdown = true
	for _, l := range s.listeners {
		l.Close()
	}
	conns := make([]*trackedConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Oldest first: deterministic, and a test can tell from a younger
	// connection's 421 that the older ones were told.
	slices.SortFunc(conns, func(a, b *trackedConn) int { return cmp.Compare(a.id, b.id) })

	for _, c := range conns {
		c.beginShutdown()
	}
	// go-smtp's Shutdown waits for its connection goroutines; its error
	// from closing the already closed listeners is of no interest.
	err := s.gs.Shutdown(ctx)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.Conn.Close()
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// backend creates a session for each HELO/EHLO/LHLO that go-smtp sees
// without a session (the first, and the first after STARTTLS).
type backend struct{ srv *Server }

func (b *backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	tc := trackedOf(c.Conn())
	if tc == nil {
		return nil, errors.New("smtp: connection not accepted by Server.Serve")
	}
	tc.setReply(c.Conn())
	sess := &session{srv: b.srv, conn: c, tc: tc, log: tc.log}
	attrs := []any{"helo", c.Hostname()}
	if st, ok := c.TLSConnectionState(); ok {
		attrs = append(attrs, "tls", tlsDescription(st))
	}
	tc.log.Info("helo", attrs...)
	return sess, nil
}

func tlsDescription(st tls.ConnectionState) string {
	return fmt.Sprintf("%s %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
}

// errorLog adapts go-smtp's internal error log to slog.
type errorLog struct{ l *slog.Logger }

func (e errorLog) Printf(format string, v ...any) {
	e.l.Info("go-smtp", "detail", fmt.Sprintf(format, v...))
}

func (e errorLog) Println(v ...any) {
	e.l.Info("go-smtp", "detail", fmt.Sprint(v...))
}
