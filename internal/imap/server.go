package imap

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

// DefaultIdleTimeout is the autologout timer: "at least 30 minutes"
// (RFC 9051 §5.4).
const DefaultIdleTimeout = 30 * time.Minute

// handshakeTimeout bounds a TLS handshake (implicit TLS or STARTTLS).
const handshakeTimeout = 30 * time.Second

// Server is an IMAP server. Set the exported fields, then call Serve for
// each listener (plain IMAP with optional STARTTLS, or a TLS listener for
// imaps).
type Server struct {
	Store     mailstore.Store
	Auth      *auth.Authenticator
	TLSConfig *tls.Config // nil: no STARTTLS
	Hostname  string      // in the greeting; "" means os.Hostname
	Logger    *slog.Logger
	// IdleTimeout ends a session that sends nothing for this long
	// (RFC 9051 §5.4 autologout); 0 means DefaultIdleTimeout. It also
	// bounds an IDLE command.
	IdleTimeout time.Duration
	// Audit records logins, body reads, expunges, moves, copies and
	// mailbox deletions (audit.go); nil records nothing.
	Audit audit.Recorder

	// Limits (limits.go; docs/configuration.md [limits]). Zero values
	// mean the defaults; a nil Limiter limits no connections or sessions.
	Limiter        *connserver.Limiter
	WriteTimeout   time.Duration // each write; default DefaultWriteTimeout
	MaxLineLength  int           // command line segment and argument literal; default 64 KiB
	MaxMessageSize int64         // APPEND literal, advertised as APPENDLIMIT; default 64 MiB
	MaxMailboxes   int           // per account, INBOX included; default DefaultMaxMailboxes
	MaxSearchText  int64         // decoded text per message for SEARCH BODY/TEXT; default 4 MiB

	// isLoopback decides whether a non-TLS client may log in with a
	// plaintext mechanism; nil means netip.Addr.IsLoopback. Tests replace
	// it to simulate remote clients.
	isLoopback func(netip.Addr) bool
	// onSessionEnd, if set, is called when a session has ended.
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
		s.log = s.log.With("proto", "imap")
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
// l is a TLS listener, connections are implicit TLS (imaps, RFC 8314) and
// STARTTLS is not offered on them. Serve returns nil after Shutdown, or the
// listener's error otherwise.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	return s.conns.Serve(l)
}

// Shutdown closes the listeners and ends every session: a session waiting
// for a command (or in IDLE) gets "* BYE" at once, one executing a command
// gets it after that command. It waits for the sessions to end or for ctx;
// when ctx is done first it closes the remaining connections, cancels their
// store calls and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	return s.conns.Shutdown(ctx)
}
