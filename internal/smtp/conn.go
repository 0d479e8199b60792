package smtp

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/letterbox/letterbox/internal/connserver"
)

// listener wraps the listener given to Serve so that every connection is a
// *trackedConn.
type listener struct {
	net.Listener
	srv *Server
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, err := l.srv.Limiter.AcquireConn(c.RemoteAddr(), l.srv.logger())
		if err != nil {
			// RFC 5321 §3.1: a server may refuse a connection with 421
			// instead of the greeting; X.7.0 as Postfix does for its
			// connection limits.
			msg := "Too many connections, try again later"
			if err == connserver.ErrTooManyConnsFromAddr {
				msg = "Too many connections from your address, try again later"
			}
			l.srv.Limiter.Reject(c, fmt.Sprintf("421 4.7.0 %s %s\r\n", l.srv.hostname(), msg))
			continue
		}
		tc := l.srv.track(c)
		tc.release = release
		return tc, nil
	}
}

// trackedConn is the raw connection under go-smtp (and under TLS after
// STARTTLS). go-smtp gives a backend no say over the connection loop, so
// this is where the things it lacks live:
//
//   - idle/shutdown state: the connection is idle when go-smtp blocks
//     reading the next command outside a DATA/BDAT transfer; Shutdown
//     answers idle connections 421 4.3.2 at once and the others as soon as
//     they become idle, after the reply to their DATA;
//   - timeouts: a command must arrive within ReadTimeout of our last reply,
//     and during a DATA transfer every line must (go-smtp would set one
//     deadline for the whole DATA phase; a deadline per read would let a
//     client that sends one octet at a time hold the connection forever;
//     after STARTTLS the line ends are looked for in the encrypted stream,
//     which makes this approximate there);
//     every write gets WriteTimeout;
//   - closing the connection right after a reply (after a too-long line in
//     DATA the byte stream cannot be trusted any more);
//   - connect/disconnect logging.
type trackedConn struct {
	net.Conn
	srv   *Server
	id    uint64
	log   *slog.Logger
	start time.Time

	mu         sync.Mutex
	reading    bool     // blocked in Conn.Read
	dataDepth  int      // DATA/BDAT bodies being received (Session.Data running)
	armed      bool     // command read deadline set since our last write
	lineArmed  bool     // DATA/BDAT: read deadline set since the last line end
	midLine    bool     // the last octet read was not a line end
	shutdown   bool     // the server is shutting down
	closing    bool     // we decided to close; go-smtp sees net.ErrClosed
	greeted    bool     // the 220 greeting was written
	tlsPending bool     // STARTTLS accepted, TLS not yet known to be up
	reply      net.Conn // where out-of-band replies go: c, or the *tls.Conn over c
	closeAfter int      // close after this many more writes (0: never)
	// writeDeadline, when set, replaces the per-write WriteTimeout.
	writeDeadline time.Time

	closeOnce sync.Once
	done      chan struct{} // closed by Close
	release   func()        // gives back the Limiter's count; nil without one
}

func (s *Server) track(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, srv: s, id: s.connSeq.Add(1), start: time.Now(), done: make(chan struct{})}
	tc.reply = tc.Conn
	tc.log = s.logger().With("conn", tc.id, "remote", addrString(c.RemoteAddr()))
	s.mu.Lock()
	s.conns[tc] = struct{}{}
	tc.shutdown = s.shutdown
	s.mu.Unlock()
	tc.log.Info("connect", "local", addrString(c.LocalAddr()))
	if s.onConn != nil {
		s.onConn(tc)
	}
	return tc
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// trackedOf finds the trackedConn under c (go-smtp's Conn.Conn()).
func trackedOf(c net.Conn) *trackedConn {
	for c != nil {
		switch v := c.(type) {
		case *trackedConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

func (c *trackedConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.shutdown && c.dataDepth == 0 {
		c.closeIdleLocked() // unlocks
		return 0, net.ErrClosed
	}
	if rt := c.srv.readTimeout(); c.dataDepth > 0 {
		if !c.lineArmed {
			c.lineArmed = true
			c.Conn.SetReadDeadline(time.Now().Add(rt))
		}
	} else if !c.armed {
		c.armed = true
		c.Conn.SetReadDeadline(time.Now().Add(rt))
	}
	c.reading = true
	c.mu.Unlock()

	n, err := c.Conn.Read(p)

	c.mu.Lock()
	c.reading = false
	closing := c.closing
	if bytes.IndexByte(p[:n], '\n') >= 0 {
		c.lineArmed = false // a line arrived: the next gets ReadTimeout afresh
	}
	if n > 0 {
		c.midLine = p[n-1] != '\n'
	}
	if !closing && err == io.EOF && c.midLine {
		// The client left in the middle of a line: go-smtp would run the
		// half command it has (see below); there is no one to answer.
		c.closing = true
		c.mu.Unlock()
		c.log.Info("client closed the connection in the middle of a line")
		c.Close()
		return 0, net.ErrClosed
	}
	if !closing && errors.Is(err, os.ErrDeadlineExceeded) {
		// The timeout is answered here: go-smtp's line reader would hand
		// it a partial line as a command (bufio.Reader.ReadLine drops the
		// error when it has data), and during DATA the transfer would end
		// with a misleading reply.
		reply, pending := c.closingLocked()
		c.mu.Unlock()
		c.sayGoodbye(reply, pending, fmt.Sprintf("421 4.4.2 %s Timeout, closing connection", c.srv.hostname()),
			"timeout: no complete command or DATA line within smtp_command_timeout")
		return 0, net.ErrClosed
	}
	c.mu.Unlock()
	if closing {
		return 0, net.ErrClosed
	}
	return n, err
}

func (c *trackedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	deadline := c.writeDeadline
	c.mu.Unlock()
	if deadline.IsZero() {
		deadline = time.Now().Add(c.srv.writeTimeout())
	}
	c.Conn.SetWriteDeadline(deadline)
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.armed = false
	if !c.greeted {
		c.greeted = true
	} else if c.reply == c.Conn && bytes.HasPrefix(p, []byte("220 ")) {
		// Plaintext 220 after the greeting: go-smtp accepted STARTTLS and
		// the handshake follows; no plaintext reply may be sent now.
		c.tlsPending = true
	}
	closeNow := false
	if c.closeAfter > 0 {
		c.closeAfter--
		closeNow = c.closeAfter == 0
	}
	c.mu.Unlock()
	if closeNow {
		c.Close()
	}
	return n, err
}

// SetWriteDeadline sets a deadline that replaces the per-write timeout
// (crypto/tls sets one before its close_notify; closeIdle before the 421).
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// setReply records the connection go-smtp now talks through (the *tls.Conn
// after STARTTLS).
func (c *trackedConn) setReply(conn net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, isTLS := conn.(*tls.Conn); isTLS {
		c.reply = conn
		c.tlsPending = false
	}
}

func (c *trackedConn) dataBegin() {
	c.mu.Lock()
	c.dataDepth++
	c.lineArmed = false
	c.mu.Unlock()
}

func (c *trackedConn) dataEnd() {
	c.mu.Lock()
	c.dataDepth--
	c.mu.Unlock()
}

// closeAfterReplies makes the connection close after n more writes.
func (c *trackedConn) closeAfterReplies(n int) {
	c.mu.Lock()
	c.closeAfter = max(n, 1)
	c.mu.Unlock()
}

// beginShutdown is called once by Server.Shutdown: an idle connection is
// answered 421 and closed now; a busy one when it next becomes idle.
func (c *trackedConn) beginShutdown() {
	c.mu.Lock()
	c.shutdown = true
	if c.reading && c.dataDepth == 0 && !c.closing {
		reply, pending := c.closingLocked()
		c.mu.Unlock()
		// Concurrently: a client that does not read must not hold up
		// the others.
		go c.sayGoodbye(reply, pending, c.shutdownGoodbye(), "closing idle connection for shutdown")
		return
	}
	c.mu.Unlock()
}

// closeIdleLocked says goodbye on the connection's own goroutine (from
// Read). Called with c.mu held, which it releases.
func (c *trackedConn) closeIdleLocked() {
	reply, pending := c.closingLocked()
	c.mu.Unlock()
	c.sayGoodbye(reply, pending, c.shutdownGoodbye(), "closing idle connection for shutdown")
}

// closingLocked marks the connection as closing: from now on Read returns
// net.ErrClosed, so go-smtp, which is blocked in (or about to enter) Read
// and therefore writes nothing concurrently, ends the connection quietly.
// The goodbye write gets at most 10 seconds.
func (c *trackedConn) closingLocked() (reply net.Conn, tlsPending bool) {
	c.closing = true
	c.writeDeadline = time.Now().Add(min(c.srv.writeTimeout(), 10*time.Second))
	return c.reply, c.tlsPending
}

// sayGoodbye sends line (a 421) through the connection go-smtp talks
// through (TLS after STARTTLS) — unless a TLS handshake is under way, when
// no reply can be framed — logs why, and closes.
func (c *trackedConn) sayGoodbye(reply net.Conn, tlsPending bool, line, why string) {
	if !tlsPending {
		c.Conn.SetWriteDeadline(c.writeDeadlineNow())
		io.WriteString(reply, line+"\r\n")
	}
	c.log.Info(why)
	c.Close()
}

// shutdownGoodbye is the reply of Shutdown to an idle connection.
func (c *trackedConn) shutdownGoodbye() string {
	return fmt.Sprintf("421 4.3.2 %s Service shutting down, closing transmission channel", c.srv.hostname())
}

func (c *trackedConn) writeDeadlineNow() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writeDeadline
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.release != nil {
			c.release()
		}
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
		c.log.Info("disconnect", "duration", time.Since(c.start).Round(time.Millisecond))
		close(c.done)
	})
	return err
}
