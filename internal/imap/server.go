package imap

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/letterbox/letterbox/internal/auth"
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

	// isLoopback decides whether a non-TLS client may log in with a
	// plaintext mechanism; nil means netip.Addr.IsLoopback. Tests replace
	// it to simulate remote clients.
	isLoopback func(netip.Addr) bool
	// onSessionEnd, if set, is called when a session has ended.
	onSessionEnd func()

	initOnce sync.Once
	ctx      context.Context // for store calls; cancelled when Shutdown gives up
	cancel   context.CancelFunc
	log      *slog.Logger
	hostname string

	closing   atomic.Bool
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	wg        sync.WaitGroup
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.ctx, s.cancel = context.WithCancel(context.Background())
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
		s.listeners = make(map[net.Listener]struct{})
		s.sessions = make(map[*session]struct{})
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
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.startSession(c)
	}
}

func (s *Server) startSession(c net.Conn) {
	sess := newSession(s, c)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.sessions, sess)
			s.mu.Unlock()
			s.wg.Done()
			if s.onSessionEnd != nil {
				s.onSessionEnd()
			}
		}()
		sess.serve()
	}()
}

// Shutdown closes the listeners and ends every session: a session waiting
// for a command (or in IDLE) gets "* BYE" at once, one executing a command
// gets it after that command. It waits for the sessions to end or for ctx;
// when ctx is done first it closes the remaining connections, cancels their
// store calls and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.interrupt()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.cancel()
		for _, sess := range sessions {
			sess.raw.Close()
		}
		return ctx.Err()
	}
}
