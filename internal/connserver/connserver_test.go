package connserver

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// testSession blocks in Serve until Interrupt (if it honours interrupts)
// or Close.
type testSession struct {
	c         net.Conn
	honour    bool
	started   chan struct{}
	interrupt chan struct{}
	closed    chan struct{}
	once      sync.Once
}

func (s *testSession) Serve() {
	close(s.started)
	if s.honour {
		select {
		case <-s.interrupt:
		case <-s.closed:
		}
		return
	}
	<-s.closed
}

func (s *testSession) Interrupt() { s.once.Do(func() { close(s.interrupt) }) }
func (s *testSession) Close()     { s.c.Close(); close(s.closed) }

func setup(t *testing.T, honour bool) (*Server, net.Listener, chan *testSession, chan struct{}) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	made := make(chan *testSession, 10)
	ended := make(chan struct{}, 10)
	srv := &Server{
		NewSession: func(c net.Conn) Session {
			s := &testSession{c: c, honour: honour, started: make(chan struct{}), interrupt: make(chan struct{}), closed: make(chan struct{})}
			made <- s
			return s
		},
		OnSessionEnd: func() { ended <- struct{}{} },
	}
	return srv, l, made, ended
}

func TestShutdownInterruptsSessions(t *testing.T) {
	srv, l, made, ended := setup(t, true)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess := <-made
	<-sess.started
	if srv.Closing() {
		t.Fatal("closing before Shutdown")
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-ended
	if !srv.Closing() || srv.Context().Err() != nil {
		t.Fatalf("after a clean Shutdown: closing %v, context %v", srv.Closing(), srv.Context().Err())
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve returned %v after Shutdown, want nil", err)
	}
	if _, err := net.Dial("tcp", l.Addr().String()); err == nil {
		t.Fatal("listener still accepting")
	}
	// Serve after Shutdown returns at once and closes the listener.
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := srv.Serve(l2); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestShutdownDeadlineClosesConnections(t *testing.T) {
	srv, l, made, ended := setup(t, false)
	go srv.Serve(l)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess := <-made
	<-sess.started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline error", err)
	}
	<-ended
	if srv.Context().Err() == nil {
		t.Fatal("store context not cancelled after Shutdown gave up")
	}
	select {
	case <-sess.closed:
	default:
		t.Fatal("session not closed")
	}
}
