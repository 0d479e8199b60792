package imap

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
	// maxErrors is the number of BAD responses after which a session is
	// closed.
	maxErrors = 20
	// readBufSize and writeBufSize are the per-connection buffers.
	readBufSize  = 4096
	writeBufSize = 32 << 10
)

var errShuttingDown = errors.New("imap: server shutting down")

// state is the connection state of RFC 9051 §3.
type state int

const (
	stateNotAuthenticated state = iota
	stateAuthenticated
	stateSelected
	stateLogout
)

// session is one IMAP connection.
type session struct {
	srv    *Server
	raw    net.Conn // as accepted: deadlines and forced close
	conn   net.Conn // raw, or the TLS connection over it
	br     *bufio.Reader
	bw     *bufio.Writer
	p      *parser
	remote netip.Addr
	tls    bool
	log    *slog.Logger
	start  time.Time

	mu sync.Mutex // orders read-deadline changes against interrupt

	state    state
	nerr     int
	endCause string

	// Authenticated state.
	user    string
	account mailstore.Account
	sub     *mailstore.Subscription
	queue   []mailstore.Change // drained from sub, not yet reported
	// gone holds the UIDs the current FETCH asked for and left out
	// because the store no longer has them; update does not report flag
	// changes of these (fetch.go).
	gone map[mailstore.UID]bool

	// releaseSlot gives back the account's session slot (Limiter).
	releaseSlot func()

	compressed bool // COMPRESS DEFLATE is active

	// Enabled extensions (RFC 5161).
	rev2, condstore, qresync, utf8 bool

	// Selected state.
	sel *selected
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
	s.p = newParser(s.br, s.continueLiteral)
	s.p.maxLine, s.p.maxLiteral, s.p.maxDiscard = srv.maxLine(), srv.maxLine(), srv.appendLimit()
	s.log = srv.log.With("remote", c.RemoteAddr().String())
	return s
}

// connWriter writes with a fresh deadline per write: a client that stops
// reading is dropped after the write timeout, a slow but progressing large
// transfer is not.
type connWriter struct{ s *session }

func (w connWriter) Write(p []byte) (int, error) {
	w.s.raw.SetWriteDeadline(time.Now().Add(w.s.srv.writeTimeout()))
	n, err := w.s.conn.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = errWriteTimeout // not a read deadline: not "idle"
	}
	return n, err
}

// Close closes the connection at once (connserver.Session: Shutdown's
// deadline passed).
func (s *session) Close() { s.raw.Close() }

func (s *session) Interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw.SetReadDeadline(time.Unix(1, 0))
}

func (s *session) armRead(d time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv.conns.Closing() {
		return false
	}
	s.raw.SetReadDeadline(time.Now().Add(d))
	return true
}

// continueLiteral answers a synchronising literal (RFC 9051 §7.5).
func (s *session) continueLiteral() error {
	s.bw.WriteString("+ Ready for literal data\r\n")
	return s.bw.Flush()
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
	// RFC 9051 §7.1.1: the greeting may carry the capabilities.
	s.bw.WriteString("* OK [CAPABILITY " + s.capabilities() + "] " + s.srv.hostname + " Letterbox IMAP server ready\r\n")
	for s.state != stateLogout {
		if !s.commandPending() {
			if err := s.bw.Flush(); err != nil {
				s.endCause = "write error"
				if errors.Is(err, errWriteTimeout) {
					s.writeTimedOut()
				}
				return
			}
		}
		if !s.armRead(s.srv.idleTimeout()) {
			s.readFailed(errShuttingDown)
			break
		}
		err := s.p.readSegment()
		if err == errLineTooLong {
			s.nerr++
			s.bw.WriteString("* BAD [TOOBIG] command line too long\r\n")
			s.log.Warn("limit exceeded: command line too long", "limit", "imap_max_line_length", "max", s.p.maxLine)
		} else if err != nil {
			s.readFailed(err)
			break
		} else {
			s.command()
		}
		if s.state != stateLogout && s.nerr >= maxErrors {
			s.bw.WriteString("* BYE too many errors\r\n")
			s.log.Warn("limit exceeded: too many errors, closing", "max", maxErrors)
			s.endCause = "too many errors"
			s.state = stateLogout
		}
		if s.state != stateLogout && s.srv.conns.Closing() {
			s.bw.WriteString("* BYE server shutting down\r\n")
			s.endCause = "shutdown"
			s.state = stateLogout
		}
	}
	s.bw.Flush()
}

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
	return true
}

func (s *session) finish() {
	if s.sub != nil {
		s.sub.Close()
	}
	s.releaseAccountSlot()
	s.conn.Close()
	if s.endCause == "" {
		s.endCause = "closed"
	}
	s.log.Info("disconnect", "reason", s.endCause, "user", s.user,
		"duration", time.Since(s.start).Round(time.Millisecond), "errors", s.nerr)
}

// commandPending reports whether a complete line is already buffered (the
// client pipelines); responses are then not flushed yet, so one flush
// covers several commands.
func (s *session) commandPending() bool {
	n := s.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

func (s *session) readFailed(err error) {
	s.state = stateLogout
	switch {
	case errors.Is(err, errShuttingDown),
		errors.Is(err, os.ErrDeadlineExceeded) && s.srv.conns.Closing():
		s.endCause = "shutdown"
		s.bw.WriteString("* BYE server shutting down\r\n")
	case errors.Is(err, errWriteTimeout):
		s.writeTimedOut()
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.endCause = "idle timeout"
		s.bw.WriteString("* BYE autologout; idle for too long\r\n")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		s.endCause = "client closed connection"
	default:
		var pe *parseError
		if errors.As(err, &pe) {
			s.endCause = pe.msg
			s.bw.WriteString("* BYE " + pe.msg + "\r\n")
			if pe == errLineAbsurd {
				s.log.Warn("limit exceeded: command line too long, closing", "limit", "imap_max_line_length",
					"max", s.p.maxLine)
			}
			return
		}
		s.endCause = "read error"
		s.log.Debug("read failed", "err", err)
	}
}

// --- response helpers ---

// untagged writes "* " + the formatted text + CRLF.
func (s *session) untagged(format string, args ...any) {
	s.bw.WriteString("* ")
	fmt.Fprintf(s.bw, format, args...)
	s.bw.WriteString("\r\n")
}

func (s *session) ok(tag, format string, args ...any) {
	s.bw.WriteString(tag + " OK ")
	fmt.Fprintf(s.bw, format, args...)
	s.bw.WriteString("\r\n")
}

func (s *session) no(tag, format string, args ...any) {
	s.bw.WriteString(tag + " NO ")
	fmt.Fprintf(s.bw, format, args...)
	s.bw.WriteString("\r\n")
}

func (s *session) bad(tag, format string, args ...any) {
	s.nerr++
	s.bw.WriteString(tag + " BAD ")
	fmt.Fprintf(s.bw, format, args...)
	s.bw.WriteString("\r\n")
}

// writeString writes s as a quoted string when it can be one, otherwise as
// a literal (RFC 9051 §4.3).
func writeString(w *bufio.Writer, str string) {
	quotable := len(str) < 1024
	for i := 0; quotable && i < len(str); i++ {
		c := str[i]
		if c == '\r' || c == '\n' || c == 0 || c >= 0x80 {
			quotable = false
		}
	}
	if !quotable {
		fmt.Fprintf(w, "{%d}\r\n", len(str))
		w.WriteString(str)
		return
	}
	w.WriteByte('"')
	for i := 0; i < len(str); i++ {
		if str[i] == '"' || str[i] == '\\' {
			w.WriteByte('\\')
		}
		w.WriteByte(str[i])
	}
	w.WriteByte('"')
}

// writeLiteral streams n octets of r from off as a literal, never holding
// them in memory beyond the write buffer.
func writeLiteral(w *bufio.Writer, r io.ReaderAt, off, n int64) error {
	fmt.Fprintf(w, "{%d}\r\n", n)
	m, err := io.Copy(w, io.NewSectionReader(r, off, n))
	if err == nil && m != n {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// --- dispatch ---

type handler struct {
	fn func(s *session, c command) error
	// states in which the command is valid
	notAuth, auth, sel bool
	// noExpunge: the command is FETCH, STORE or SEARCH by sequence
	// number, after which EXPUNGE responses must not be sent (RFC 9051
	// §7.5.1).
	uidOK bool
}

var handlers map[string]handler

func init() {
	any := handler{notAuth: true, auth: true, sel: true}
	na := handler{notAuth: true}
	au := handler{auth: true, sel: true}
	se := handler{sel: true}
	with := func(h handler, fn func(*session, command) error) handler { h.fn = fn; return h }
	handlers = map[string]handler{
		"CAPABILITY":     with(any, (*session).cmdCapability),
		"NOOP":           with(any, (*session).cmdNoop),
		"LOGOUT":         with(any, (*session).cmdLogout),
		"ID":             with(any, (*session).cmdID),
		"STARTTLS":       with(na, (*session).cmdStartTLS),
		"LOGIN":          with(na, (*session).cmdLogin),
		"AUTHENTICATE":   with(na, (*session).cmdAuthenticate),
		"ENABLE":         with(au, (*session).cmdEnable),
		"COMPRESS":       with(au, (*session).cmdCompress),
		"NAMESPACE":      with(au, (*session).cmdNamespace),
		"UNAUTHENTICATE": with(au, (*session).cmdUnauthenticate),
		"LIST":           with(au, (*session).cmdList),
		"LSUB":           with(au, (*session).cmdLsub),
		"CREATE":         with(au, (*session).cmdCreate),
		"DELETE":         with(au, (*session).cmdDelete),
		"RENAME":         with(au, (*session).cmdRename),
		"SUBSCRIBE":      with(au, (*session).cmdSubscribe),
		"UNSUBSCRIBE":    with(au, (*session).cmdUnsubscribe),
		"STATUS":         with(au, (*session).cmdStatus),
		"SELECT":         with(au, (*session).cmdSelect),
		"EXAMINE":        with(au, (*session).cmdSelect),
		"APPEND":         with(au, (*session).cmdAppend),
		"IDLE":           with(au, (*session).cmdIdle),
		"GETQUOTA":       with(au, (*session).cmdGetQuota),
		"GETQUOTAROOT":   with(au, (*session).cmdGetQuotaRoot),
		"SETQUOTA":       with(au, (*session).cmdSetQuota),
		"CHECK":          with(se, (*session).cmdNoop),
		"CLOSE":          with(se, (*session).cmdClose),
		"UNSELECT":       with(se, (*session).cmdUnselect),
		"EXPUNGE":        with(se, (*session).cmdExpunge),
		"FETCH":          with(se, (*session).cmdFetch),
		"STORE":          with(se, (*session).cmdStore),
		"COPY":           with(se, (*session).cmdCopy),
		"MOVE":           with(se, (*session).cmdCopy),
		"SEARCH":         with(se, (*session).cmdSearch),
	}
	for _, n := range []string{"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE"} {
		h := handlers[n]
		h.uidOK = true
		handlers[n] = h
	}
}

// command reads and executes one command; the first segment is in the
// parser.
func (s *session) command() {
	c, err := s.p.readCommand()
	tag := c.tag
	if tag == "" {
		tag = "*"
	}
	if err != nil {
		s.failCommand(tag, err)
		return
	}
	h, ok := handlers[c.name]
	if !ok || (c.uid && !h.uidOK) {
		s.failCommand(tag, syntaxErr("unknown command"))
		return
	}
	var allowed bool
	switch s.state {
	case stateNotAuthenticated:
		allowed = h.notAuth
	case stateAuthenticated:
		allowed = h.auth
	case stateSelected:
		allowed = h.sel
	}
	if !allowed {
		msg := "command not valid in this state"
		switch {
		case s.state == stateNotAuthenticated:
			msg = "not authenticated"
		case !h.auth && h.sel:
			msg = "no mailbox selected"
		case h.notAuth && !h.auth:
			msg = "already authenticated"
		}
		s.failCommand(tag, syntaxErr("%s", msg))
		return
	}
	if err := h.fn(s, c); err != nil {
		s.failCommand(tag, err)
		return
	}
}

// failCommand answers a command that failed to parse or read.
func (s *session) failCommand(tag string, err error) {
	var pe *parseError
	if !errors.As(err, &pe) {
		// An I/O error while reading the command's literals.
		s.readFailed(err)
		return
	}
	if !pe.fatal {
		if serr := s.p.skipRest(); serr != nil {
			if errors.As(serr, &pe) {
				err = serr
			} else {
				s.readFailed(serr)
				return
			}
		}
	}
	code := ""
	if pe.code != "" {
		code = "[" + pe.code + "] "
	}
	if pe.no {
		s.no(tag, "%s%s", code, pe.msg)
	} else {
		s.bad(tag, "%s%s", code, pe.msg)
	}
	if pe.fatal {
		s.bw.WriteString("* BYE " + pe.msg + "\r\n")
		s.endCause = pe.msg
		s.state = stateLogout
		s.log.Warn("limit exceeded, closing", "reason", pe.msg)
	}
}

// done finishes a successful command: it reports pending changes of other
// sessions (RFC 9051 §7: at command completion), then the tagged OK.
// expunges says whether EXPUNGE/VANISHED may be sent (not after FETCH,
// STORE or SEARCH by sequence number, RFC 9051 §7.5.1).
func (s *session) done(tag string, expunges bool, format string, args ...any) error {
	s.update(expunges)
	s.ok(tag, format, args...)
	return nil
}
