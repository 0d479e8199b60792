package pop3

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/connserver"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// DefaultIdleTimeout is the autologout timer of RFC 1939 §3 ("at least 10
// minutes").
const DefaultIdleTimeout = 10 * time.Minute

// handshakeTimeout bounds a TLS handshake (implicit TLS or after STLS).
const handshakeTimeout = 30 * time.Second

// Server is a POP3 server. Set the exported fields, then call Serve for each
// listener (plain POP3 with optional STLS, or a TLS listener for pop3s).
type Server struct {
	Store     mailstore.Store
	Auth      *auth.Authenticator
	TLSConfig *tls.Config // nil: no STLS
	Hostname  string      // in the greeting; "" means os.Hostname
	Logger    *slog.Logger
	// IdleTimeout closes a session that sends nothing for this long
	// (RFC 1939 §3 autologout); 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Audit records logins, RETR/TOP and the deletions of QUIT
	// (audit.go); nil records nothing.
	Audit audit.Recorder
	// Limiter counts connections and logged-in sessions per account
	// (limits.go); nil limits nothing.
	Limiter *connserver.Limiter
	// WriteTimeout bounds each write; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration

	// isLoopback decides whether a non-TLS client may log in with a
	// plaintext mechanism; nil means netip.Addr.IsLoopback. Tests replace
	// it to simulate remote clients.
	isLoopback func(netip.Addr) bool
	// onSessionEnd, if set, is called when a session has ended: its lock
	// is released and its connection closed (tests wait on it).
	onSessionEnd func()

	initOnce sync.Once
	ctx      context.Context // for store calls; cancelled when Shutdown gives up
	log      *slog.Logger
	hostname string
	conns    connserver.Server
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		s.log = s.log.With("proto", "pop3")
		s.hostname = s.Hostname
		if s.hostname == "" {
			if h, err := os.Hostname(); err == nil && h != "" {
				s.hostname = h
			} else {
				s.hostname = "localhost"
			}
		}
		s.conns = connserver.Server{
			NewSession:   func(c net.Conn) connserver.Session { return newSession(s, c) },
			OnSessionEnd: s.onSessionEnd,
			Log:          s.log,
			Limiter:      s.Limiter,
			Refusal:      refusal,
		}
		s.ctx = s.conns.Context()
	})
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

func (s *Server) loopback(a netip.Addr) bool {
	if s.isLoopback != nil {
		return s.isLoopback(a)
	}
	return a.IsValid() && a.Unmap().IsLoopback()
}

// Serve accepts connections on l and serves each in its own goroutine. If
// l is a TLS listener (crypto/tls.NewListener), connections are implicit
// TLS (pop3s) and STLS is not offered on them. Serve returns nil after
// Shutdown, or the listener's error otherwise. It may be called for
// several listeners concurrently.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	return s.conns.Serve(l)
}

// Shutdown stops the server: it closes the listeners, lets every session
// that is executing a command finish that command, and ends every session
// that is waiting for input with "-ERR server shutting down". Deletions are
// committed only by a QUIT, never by Shutdown. It waits for the sessions to
// end or for ctx; when ctx is done first, it closes the remaining
// connections, cancels their store calls and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	return s.conns.Shutdown(ctx)
}
