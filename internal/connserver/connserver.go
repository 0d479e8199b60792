// Package connserver is the connection side shared by Letterbox's
// hand-written protocol servers (pop3, imap): the accept loop with backoff
// on temporary errors, the connection limits (Limiter, shared with smtp),
// the registry of live sessions, and graceful shutdown. It exists so that
// both protocols stop the same way: listeners close, sessions waiting for
// input are interrupted at once, sessions in the middle of a command finish
// it, and when the caller's deadline passes the remaining connections are
// closed and their store calls cancelled.
package connserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Session is one connection's protocol session.
type Session interface {
	// Serve runs the session until it ends. It must return soon after
	// Interrupt or Close.
	Serve()
	// Interrupt asks the session to end at its next wait for input (it
	// sends the protocol's goodbye then). It is called from another
	// goroutine.
	Interrupt()
	// Close closes the connection at once (Shutdown's deadline passed).
	Close()
}

// Server tracks listeners and sessions. Set the exported fields before the
// first Serve; the zero value is not usable without NewSession.
type Server struct {
	NewSession   func(net.Conn) Session
	OnSessionEnd func() // optional; called after a session ended (tests)
	Log          *slog.Logger
	// Limiter, if set, counts the connections; one over its limits is
	// answered with Refusal(err) (the protocol's "try again later" line,
	// CRLF included) and closed, without a session.
	Limiter *Limiter
	Refusal func(err error) string

	initOnce  sync.Once
	ctx       context.Context
	cancel    context.CancelFunc
	closing   atomic.Bool
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[Session]struct{}
	wg        sync.WaitGroup
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		if s.Log == nil {
			s.Log = slog.New(slog.DiscardHandler)
		}
		s.listeners = make(map[net.Listener]struct{})
		s.sessions = make(map[Session]struct{})
	})
}

// Context is the context for the sessions' store calls: it is cancelled
// when Shutdown gives up waiting.
func (s *Server) Context() context.Context {
	s.init()
	return s.ctx
}

// Closing reports whether Shutdown has begun. Sessions check it before
// arming a long read deadline, so that none re-arms one after Shutdown's
// Interrupt.
func (s *Server) Closing() bool { return s.closing.Load() }

// Serve accepts connections on l and runs a session for each in its own
// goroutine. It returns nil after Shutdown, or the listener's error. It may
// be called for several listeners concurrently.
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
				// E.g. EMFILE: wait and retry, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.Log.Warn("accept failed; retrying", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.start(c)
	}
}

func (s *Server) start(c net.Conn) {
	release, err := s.Limiter.AcquireConn(c.RemoteAddr(), s.Log)
	if err != nil {
		line := ""
		if s.Refusal != nil {
			line = s.Refusal(err)
		}
		s.Limiter.Reject(c, line)
		return
	}
	sess := s.NewSession(c)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		release()
		c.Close()
		return
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer func() {
			release()
			s.mu.Lock()
			delete(s.sessions, sess)
			s.mu.Unlock()
			s.wg.Done()
			if s.OnSessionEnd != nil {
				s.OnSessionEnd()
			}
		}()
		sess.Serve()
	}()
}

// Shutdown closes the listeners, interrupts every session and waits for
// them to end or for ctx; when ctx is done first, it closes the remaining
// connections, cancels Context and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		l.Close()
	}
	sessions := make([]Session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()

	for _, sess := range sessions {
		sess.Interrupt()
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
			sess.Close()
		}
		return ctx.Err()
	}
}
