package pop3

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

const (
	// maxErrors is the number of -ERR responses after which a session is
	// closed.
	maxErrors = 10
	// readBufSize and writeBufSize are the fixed per-connection buffers.
	// The read buffer holds at least one SASL line (maxSASLLine).
	readBufSize  = 4096
	writeBufSize = 16 << 10
)

// errShuttingDown is what a read returns once Shutdown was called.
var errShuttingDown = errors.New("pop3: server shutting down")

type sessionState int

const (
	stateAuthorization sessionState = iota
	stateTransaction
)

// msgEntry is one message of the maildrop snapshot taken at login.
type msgEntry struct {
	msg     mailstore.Message
	deleted bool // marked by DELE
	seen    bool // \Seen is known to be set
	// fix is the number of octets RETR adds after the body to end it with
	// CRLF (lineEndFix); -1 until computed.
	fix int8
}

// session is one POP3 connection.
type session struct {
	srv    *Server
	raw    net.Conn // as accepted: deadlines and forced close go here
	conn   net.Conn // raw, or the TLS connection over it
	br     *bufio.Reader
	bw     *bufio.Writer
	remote netip.Addr
	tls    bool
	log    *slog.Logger
	start  time.Time

	// mu orders read-deadline changes of the session against Shutdown's
	// interrupt, so that a session never re-arms a long deadline after
	// Shutdown has cut it short.
	mu sync.Mutex

	state    sessionState
	user     string // argument of the USER command just before
	userSet  bool
	nerr     int
	quit     bool   // end the session after this command
	endCause string // why the session ended, for the log

	// TRANSACTION state.
	account string
	mailbox mailstore.Mailbox
	unlock  func()
	msgs    []msgEntry
	seen    *seenMarker // \Seen marks of RETR, committed in the background

	releaseSlot func() // gives back the account's session slot (Limiter)

	nretr, ntop, ndele, nexpunged int
}

func newSession(srv *Server, c net.Conn) *session {
	s := &session{srv: srv, raw: c, conn: c, start: time.Now()}
	if tc, ok := c.(*tls.Conn); ok {
		s.raw = tc.NetConn()
	}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		s.remote = ta.AddrPort().Addr().Unmap()
	} else if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		s.remote = ap.Addr().Unmap()
	}
	s.br = bufio.NewReaderSize(c, readBufSize)
	s.bw = bufio.NewWriterSize(connWriter{s}, writeBufSize)
	s.log = srv.log.With("remote", c.RemoteAddr().String())
	return s
}

// connWriter writes to the session's current connection with a fresh
// write deadline for every write, so that a client that stops reading is
// dropped after the write timeout while a slow but progressing transfer of
// a large message is not.
type connWriter struct{ s *session }

func (w connWriter) Write(p []byte) (int, error) {
	w.s.raw.SetWriteDeadline(time.Now().Add(w.s.srv.writeTimeout()))
	return w.s.conn.Write(p)
}

// Close closes the connection at once (connserver.Session: Shutdown's
// deadline passed).
func (s *session) Close() { s.raw.Close() }

// Interrupt makes a blocked or future read return at once (Shutdown).
func (s *session) Interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw.SetReadDeadline(time.Unix(1, 0))
}

// armRead sets the read deadline for the next wait for input; it reports
// false when the server is shutting down.
func (s *session) armRead(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv.conns.Closing() {
		return false
	}
	s.raw.SetReadDeadline(time.Now().Add(d))
	return true
}

func (s *session) Serve() {
	defer s.finish()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("session panic", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			s.endCause = "internal error"
		}
	}()
	tc, implicitTLS := s.conn.(*tls.Conn)
	s.log.Info("connect", "tls", implicitTLS)
	if implicitTLS {
		if !s.handshake(tc) {
			return
		}
		s.tls = true
	}
	s.ok("%s Letterbox POP3 server ready", s.srv.hostname)
	for !s.quit {
		if !s.commandPending() {
			if err := s.flush(); err != nil {
				s.endCause = "write error"
				return
			}
		}
		line, tooLong, err := s.readLine(maxCommandLine)
		if err != nil {
			s.readFailed(err)
			break
		}
		if tooLong {
			s.fail("line too long")
		} else {
			s.dispatch(line)
		}
		if !s.quit && s.nerr >= maxErrors {
			s.endCause = "too many errors"
			s.quit = true
			s.log.Warn("limit exceeded: too many errors, closing", "max", maxErrors)
		}
	}
	s.flush()
}

// handshake runs the TLS handshake of implicit TLS or STLS.
func (s *session) handshake(tc *tls.Conn) bool {
	if !s.armRead(handshakeTimeout) {
		s.endCause = "shutdown"
		return false
	}
	s.raw.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.HandshakeContext(s.srv.ctx); err != nil {
		s.log.Info("tls handshake failed", "err", err)
		s.endCause = "tls handshake failed"
		return false
	}
	cs := tc.ConnectionState()
	s.log.Debug("tls established", "version", tls.VersionName(cs.Version),
		"cipher", tls.CipherSuiteName(cs.CipherSuite))
	return true
}

// finish releases everything the session holds. Nothing is expunged here:
// only QUIT commits deletions.
func (s *session) finish() {
	s.seen.wait()
	s.releaseMaildrop()
	s.releaseAccountSlot()
	s.conn.Close()
	if s.endCause == "" {
		s.endCause = "closed"
	}
	s.log.Info("disconnect", "reason", s.endCause, "user", s.account,
		"duration", time.Since(s.start).Round(time.Millisecond),
		"retr", s.nretr, "top", s.ntop, "dele", s.ndele, "expunged", s.nexpunged, "errors", s.nerr)
}

func (s *session) releaseMaildrop() {
	if s.unlock != nil {
		s.unlock()
		s.unlock = nil
	}
}

// commandPending reports whether a complete command line is already
// buffered (the client pipelines); responses are then not flushed yet.
func (s *session) commandPending() bool {
	n := s.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

// readLine reads one line of at most limit octets including its line end
// (CRLF, or a bare LF from lenient clients) and returns it without the line
// end; the slice is valid until the next read. A longer line is consumed
// and discarded chunk by chunk, never held whole, and reported as tooLong.
func (s *session) readLine(limit int) (line []byte, tooLong bool, err error) {
	if !s.armRead(s.srv.idleTimeout()) {
		return nil, false, errShuttingDown
	}
	n := 0
	for {
		frag, err := s.br.ReadSlice('\n')
		n += len(frag)
		if errors.Is(err, bufio.ErrBufferFull) {
			tooLong = true
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if tooLong || n > limit {
			return nil, true, nil
		}
		line = frag[:len(frag)-1]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		return line, false, nil
	}
}

// readFailed ends the session after a failed read, telling the client why
// when there is a reason to.
func (s *session) readFailed(err error) {
	s.quit = true
	switch {
	case errors.Is(err, errShuttingDown),
		errors.Is(err, os.ErrDeadlineExceeded) && s.srv.conns.Closing():
		s.endCause = "shutdown"
		s.bw.WriteString("-ERR server shutting down\r\n")
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.endCause = "idle timeout"
		s.bw.WriteString("-ERR autologout: idle for too long\r\n")
	case errors.Is(err, io.EOF):
		s.endCause = "client closed connection"
	default:
		s.endCause = "read error"
		s.log.Debug("read failed", "err", err)
	}
}

func (s *session) flush() error {
	return s.bw.Flush()
}

// ok writes a +OK response line; format "" writes a bare "+OK".
func (s *session) ok(format string, args ...any) {
	s.bw.WriteString("+OK")
	if format != "" {
		s.bw.WriteByte(' ')
		fmt.Fprintf(s.bw, format, args...)
	}
	s.bw.WriteString("\r\n")
}

// fail writes a -ERR response line and counts the error.
func (s *session) fail(format string, args ...any) {
	s.nerr++
	s.bw.WriteString("-ERR ")
	fmt.Fprintf(s.bw, format, args...)
	s.bw.WriteString("\r\n")
}

// line writes one line of a multi-line response (never starting with '.').
func (s *session) line(format string, args ...any) {
	fmt.Fprintf(s.bw, format, args...)
	s.bw.WriteString("\r\n")
}

// end writes the terminating line of a multi-line response.
func (s *session) end() {
	s.bw.WriteString(".\r\n")
}

// dispatch runs one command line.
func (s *session) dispatch(line []byte) {
	cmd, err := parseCommand(line)
	if err != nil {
		if errors.Is(err, errEmptyCommand) {
			s.fail("empty command")
		} else {
			s.fail("syntax error")
		}
		return
	}
	// PASS is valid only immediately after USER (RFC 1939 §7).
	user, userSet := s.user, s.userSet
	s.user, s.userSet = "", false

	if s.state == stateAuthorization {
		switch cmd.name {
		case "CAPA":
			s.cmdCAPA(cmd)
		case "USER":
			s.cmdUSER(cmd)
		case "PASS":
			s.cmdPASS(cmd, user, userSet)
		case "AUTH":
			s.cmdAUTH(cmd)
		case "STLS":
			s.cmdSTLS(cmd)
		case "QUIT":
			s.cmdQUITAuthorization(cmd)
		case "APOP":
			s.fail("APOP is not supported")
		case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL":
			s.fail("not logged in")
		default:
			s.fail("unknown command")
		}
		return
	}
	switch cmd.name {
	case "CAPA":
		s.cmdCAPA(cmd)
	case "STAT":
		s.cmdSTAT(cmd)
	case "LIST":
		s.cmdLIST(cmd)
	case "UIDL":
		s.cmdUIDL(cmd)
	case "RETR":
		s.cmdRETR(cmd)
	case "TOP":
		s.cmdTOP(cmd)
	case "DELE":
		s.cmdDELE(cmd)
	case "NOOP":
		s.cmdNOOP(cmd)
	case "RSET":
		s.cmdRSET(cmd)
	case "QUIT":
		s.cmdQUIT(cmd)
	case "USER", "PASS", "AUTH", "APOP", "STLS":
		s.fail("already logged in")
	default:
		s.fail("unknown command")
	}
}
