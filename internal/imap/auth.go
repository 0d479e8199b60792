package imap

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/auth"
)

// plaintextAllowed reports whether this connection may carry a plaintext
// password (design.md §5: only over TLS or from loopback, unless
// tls.require_tls_for_auth is false; auth.Authenticator.PlaintextAllowed).
func (s *session) plaintextAllowed() bool {
	return s.srv.Auth.PlaintextAllowed(s.tls || s.srv.loopback(s.remote))
}

func (s *session) canStartTLS() bool {
	// Once COMPRESS is active (reachable without TLS via UNAUTHENTICATE),
	// TLS could only be started above the compression layer; RFC 4978
	// layers compression above TLS, so STARTTLS is no longer offered.
	return s.srv.TLSConfig != nil && !s.tls && !s.compressed
}

// baseCapabilities are advertised in every state. Each is implemented and
// covered by tests; see the package documentation.
var baseCapabilities = []string{
	"IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
	"UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS",
	"SPECIAL-USE", "CREATE-SPECIAL-USE", "STATUS=SIZE",
	"APPENDLIMIT=", "MULTIAPPEND", "UNAUTHENTICATE", "CONDSTORE", "ESEARCH",
	"SEARCHRES", "BINARY", "SAVEDATE", "QRESYNC", "UTF8=ACCEPT",
	// COMPRESS=DEFLATE (RFC 4978, compress.go); the command is accepted
	// only once authenticated (command-auth, RFC 4978 §5).
	"COMPRESS=DEFLATE",
	// RFC 9208 QUOTA with its resources (quota.go); no QUOTASET.
	"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE",
}

func (s *session) capabilities() string {
	caps := append([]string(nil), baseCapabilities...)
	for i, c := range caps {
		if c == "APPENDLIMIT=" {
			caps[i] = s.srv.appendLimitCap() // limits.go
		}
	}
	if s.state == stateNotAuthenticated {
		if s.canStartTLS() {
			caps = append(caps, "STARTTLS")
		}
		// LOGINDISABLED is about the LOGIN command (RFC 9051 §6.2.3);
		// AUTH= lists the SASL mechanisms usable here: SCRAM always,
		// PLAIN and LOGIN only where LOGIN is allowed (auth.Mechanisms).
		if !s.plaintextAllowed() {
			caps = append(caps, "LOGINDISABLED")
		}
		for _, m := range s.srv.Auth.Mechanisms(s.saslConn()) {
			caps = append(caps, "AUTH="+m)
		}
	}
	return strings.Join(caps, " ")
}

func (s *session) cmdCapability(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	s.untagged("CAPABILITY %s", s.capabilities())
	return s.done(c.tag, true, "CAPABILITY completed")
}

func (s *session) cmdNoop(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	return s.done(c.tag, true, "%s completed", c.name)
}

func (s *session) cmdLogout(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	s.untagged("BYE logging out")
	s.ok(c.tag, "LOGOUT completed")
	s.state = stateLogout
	s.endCause = "logout"
	return nil
}

// cmdID answers ID (RFC 2971); the client's parameters are read and ignored.
func (s *session) cmdID(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	if s.p.peek() == '(' {
		n := 0
		err := s.p.list(false, func() error {
			n++
			if n > 60 {
				return syntaxErr("too many ID parameters")
			}
			if _, err := s.p.str(); err != nil {
				return err
			}
			if err := s.p.sp(); err != nil {
				return err
			}
			return s.nstringSkip()
		})
		if err != nil {
			return err
		}
	} else if a, err := s.p.atom(); err != nil || upper(a) != "NIL" {
		return syntaxErr("expected ID parameter list or NIL")
	}
	if err := s.p.end(); err != nil {
		return err
	}
	s.untagged(`ID ("name" "Letterbox" "vendor" "Letterbox")`)
	return s.done(c.tag, true, "ID completed")
}

func (s *session) nstringSkip() error {
	if s.p.peek() == '"' || s.p.peek() == '{' {
		_, err := s.p.str()
		return err
	}
	a, err := s.p.atom()
	if err != nil || upper(a) != "NIL" {
		return syntaxErr("expected string or NIL")
	}
	return nil
}

// cmdStartTLS (RFC 9051 §6.2.1). Input the client pipelined after the
// command is discarded with the old buffer (command injection, RFC 9051
// §11.1 / CVE-2011-0411).
func (s *session) cmdStartTLS(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	if !s.canStartTLS() {
		s.bad(c.tag, "STARTTLS not available")
		return nil
	}
	s.ok(c.tag, "Begin TLS negotiation now")
	if err := s.bw.Flush(); err != nil {
		s.state = stateLogout
		return nil
	}
	tc := tls.Server(s.conn, s.srv.TLSConfig)
	if !s.handshake(tc) {
		s.state = stateLogout
		return nil
	}
	s.conn = tc
	s.tls = true
	s.br.Reset(tc)
	s.bw.Reset(connWriter{s})
	return nil
}

// refusePlaintext answers LOGIN / AUTHENTICATE PLAIN on a connection that
// must not carry passwords (RFC 9051 §6.2.3, LOGINDISABLED).
func (s *session) refusePlaintext(tag string) {
	msg := "Plaintext authentication disallowed on non-TLS connections"
	if s.canStartTLS() {
		msg += ", use STARTTLS"
	}
	s.no(tag, "[PRIVACYREQUIRED] %s", msg)
	s.log.Info("auth refused: plaintext without TLS")
}

func (s *session) cmdLogin(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	user, err := s.p.astring()
	if err != nil {
		return err
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	pass, err := s.p.astring()
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	if !s.plaintextAllowed() {
		s.refusePlaintext(c.tag)
		return nil
	}
	s.login(c.tag, user, pass, "LOGIN")
	return nil
}

// cmdAuthenticate runs a SASL exchange (RFC 9051 §6.2.2): SCRAM-SHA-256
// and SCRAM-SHA-256-PLUS (RFC 7677), PLAIN (RFC 4616) and LOGIN, with an
// optional initial response (SASL-IR, RFC 4959). The mechanisms
// themselves are in package auth (Authenticator.Run), shared with POP3;
// this is the IMAP framing: "+ " continuations, a cancelling "*" and
// invalid base64 answered BAD (RFC 9051 §6.2.2), failures NO with RFC
// 5530 response codes.
func (s *session) cmdAuthenticate(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	mech, err := s.p.atom()
	if err != nil {
		return err
	}
	var initial *string
	if s.p.consume(' ') {
		ir, err := s.p.atomWith(func(b byte) bool { return isAtomChar(b) || b == '=' })
		if err != nil {
			return err
		}
		initial = &ir
	}
	if err := s.p.end(); err != nil {
		return err
	}
	res, err := s.srv.Auth.Run(s.srv.ctx, s.saslConn(), mech, initial, saslTransport{s})
	auditMech := saslAuditMech(res.Mech)
	switch {
	case err == nil:
		s.enter(c.tag, res.Name, "AUTHENTICATE", auditMech)
	case errors.Is(err, auth.ErrUnsupportedMechanism):
		s.no(c.tag, "unsupported authentication mechanism")
	case errors.Is(err, auth.ErrPlaintextRefused):
		s.refusePlaintext(c.tag)
	case errors.Is(err, errSASLTooLong):
		s.bad(c.tag, "SASL response too long")
	case errors.Is(err, auth.ErrCancelled):
		s.bad(c.tag, "authentication cancelled")
	case errors.Is(err, auth.ErrBadBase64):
		s.bad(c.tag, "invalid base64")
	case errors.Is(err, auth.ErrMalformed):
		s.log.Info("auth failed", "user", res.User, "mech", res.Mech, "err", err)
		s.no(c.tag, "[AUTHENTICATIONFAILED] malformed %s response", res.Mech)
	case errors.Is(err, auth.ErrAuthzFailed):
		s.log.Info("auth failed", "user", res.User, "mech", res.Mech, "reason", "authorization identity not permitted")
		s.auditLogin(audit.EventLoginFailed, res.User, auditMech, "authorization identity "+res.Authz+" not permitted")
		s.no(c.tag, "[AUTHZFAILED] authorization identity not permitted")
	case errors.Is(err, auth.ErrInvalidCredentials):
		s.log.Info("auth failed", "user", res.User, "mech", res.Mech)
		s.auditLogin(audit.EventLoginFailed, res.User, auditMech, "invalid credentials")
		s.no(c.tag, "[AUTHENTICATIONFAILED] Invalid credentials")
	case errors.Is(err, auth.ErrChannelBinding):
		// Not an ordinary failed guess: the client is not talking to us
		// directly (or wrongly believes PLUS is not offered).
		s.log.Warn("auth failed: channel binding", "user", res.User, "mech", res.Mech, "err", err)
		s.auditLogin(audit.EventLoginFailed, res.User, auditMech, err.Error())
		s.no(c.tag, "[AUTHENTICATIONFAILED] SCRAM channel binding failed")
	case errors.As(err, new(transportError)):
		return errors.Unwrap(err)
	default:
		s.log.Warn("auth error", "mech", res.Mech, "err", err)
		s.no(c.tag, "[UNAVAILABLE] temporary failure, try again later")
	}
	return nil
}

// errSASLTooLong is a SASL response line longer than a command line may be.
var errSASLTooLong = errors.New("imap: SASL response too long")

// saslTransport carries a SASL exchange in AUTHENTICATE continuations.
type saslTransport struct{ s *session }

// Challenge sends "+ " and the base64 challenge (RFC 9051 §7.5: an empty
// challenge is "+ " followed by nothing).
func (t saslTransport) Challenge(data []byte) error {
	s := t.s
	s.bw.WriteString("+ ")
	s.bw.WriteString(base64.StdEncoding.EncodeToString(data))
	s.bw.WriteString("\r\n")
	if err := s.bw.Flush(); err != nil {
		return transportError{err}
	}
	return nil
}

// Response reads the client's response line.
func (t saslTransport) Response() (string, error) {
	s := t.s
	if !s.armRead(s.srv.idleTimeout()) {
		return "", transportError{errShuttingDown}
	}
	if err := s.p.readSegment(); err != nil {
		if err == errLineTooLong {
			return "", errSASLTooLong
		}
		return "", transportError{err}
	}
	line := string(s.p.line)
	s.p.pos = len(s.p.line)
	return line, nil
}

// transportError is an I/O error of saslTransport: the connection failed,
// or the server is shutting down, while the exchange waited for the
// client. The session ends with it (as for a command's read error).
type transportError struct{ err error }

func (e transportError) Error() string { return e.err.Error() }
func (e transportError) Unwrap() error { return e.err }

// saslConn describes this connection to package auth: whether it may carry
// plaintext passwords, and its TLS channel bindings. tls-server-end-point
// is computed from Server.TLSConfig's certificate, so an implicit-TLS
// listener must use the same configuration (as internal/server does); with
// another, SCRAM-SHA-256-PLUS fails safe (a binding mismatch).
func (s *session) saslConn() auth.Conn {
	c := auth.Conn{Remote: s.remote, PlaintextOK: s.plaintextAllowed()}
	if tc, ok := s.conn.(*tls.Conn); ok && s.tls {
		c.Bindings = auth.TLSChannelBindings(tc.ConnectionState(), s.srv.TLSConfig)
	}
	return c
}

// saslAuditMech is the audit record's mech for a SASL mechanism: its name,
// except that the LOGIN mechanism is SASL-LOGIN, so that it is not
// confused with the LOGIN command (mech LOGIN).
func saslAuditMech(mech string) string {
	if mech == auth.MechLogin {
		return "SASL-LOGIN"
	}
	return mech
}

// login checks the credentials of the LOGIN command and enters the
// authenticated state.
func (s *session) login(tag, user, pass, cmd string) {
	name, err := s.srv.Auth.Authenticate(s.srv.ctx, user, pass, s.remote)
	if errors.Is(err, auth.ErrInvalidCredentials) {
		s.log.Info("auth failed", "user", user)
		s.auditLogin(audit.EventLoginFailed, user, cmd, "invalid credentials")
		s.no(tag, "[AUTHENTICATIONFAILED] Invalid credentials")
		return
	}
	if err != nil {
		s.log.Warn("auth error", "err", err)
		s.no(tag, "[UNAVAILABLE] temporary failure, try again later")
		return
	}
	s.enter(tag, name, cmd, cmd)
}

// enter enters the authenticated state as account name, which cmd (LOGIN
// or AUTHENTICATE) with mechanism mech (for the audit record) has
// authenticated.
func (s *session) enter(tag, name, cmd, mech string) {
	acct, err := s.srv.Store.Account(context.WithoutCancel(s.srv.ctx), name)
	if err != nil {
		s.log.Warn("account lookup failed", "user", name, "err", err)
		s.no(tag, "[UNAVAILABLE] temporary failure, try again later")
		return
	}
	if !s.acquireAccountSlot(tag, acct.Name) {
		return
	}
	s.account = acct
	s.user = acct.Name
	s.sub = s.srv.Store.Subscribe(acct.ID)
	s.state = stateAuthenticated
	s.log.Info("login", "user", acct.Name, "mech", mech)
	s.auditLogin(audit.EventLogin, acct.Name, mech, "")
	s.ok(tag, "[CAPABILITY %s] %s completed", s.capabilities(), cmd)
}

// cmdUnauthenticate (RFC 8437): back to the not authenticated state; the
// selected mailbox is closed without expunge.
func (s *session) cmdUnauthenticate(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	s.sel = nil
	if s.sub != nil {
		s.sub.Close()
		s.sub = nil
	}
	s.queue = nil
	s.releaseAccountSlot()
	s.rev2, s.condstore, s.qresync, s.utf8 = false, false, false, false
	s.state = stateNotAuthenticated
	s.user = ""
	s.ok(c.tag, "UNAUTHENTICATE completed")
	return nil
}

// cmdEnable (RFC 5161).
func (s *session) cmdEnable(c command) error {
	var names []string
	for s.p.consume(' ') {
		a, err := s.p.atom()
		if err != nil {
			return err
		}
		names = append(names, a)
	}
	if len(names) == 0 {
		return syntaxErr("missing capability")
	}
	if err := s.p.end(); err != nil {
		return err
	}
	var enabled []string
	for _, n := range names {
		switch upper(n) {
		case "CONDSTORE":
			if !s.condstore {
				s.condstore = true
				enabled = append(enabled, "CONDSTORE")
			}
		case "IMAP4REV2":
			// RFC 9051 Appendix E: rev2 semantics for the rest of the
			// session (UTF-8 names, ESEARCH results, no \Recent).
			if !s.rev2 {
				s.rev2 = true
				enabled = append(enabled, "IMAP4rev2")
			}
		case "UTF8=ACCEPT":
			// RFC 6855 §3: UTF-8 mailbox names and APPEND UTF8.
			if !s.utf8 {
				s.utf8 = true
				enabled = append(enabled, "UTF8=ACCEPT")
			}
		case "QRESYNC":
			// RFC 7162 §3.2.3: QRESYNC implies CONDSTORE.
			if !s.qresync {
				s.qresync, s.condstore = true, true
				enabled = append(enabled, "QRESYNC")
			}
		}
	}
	s.untagged("ENABLED%s", prefixEach(enabled))
	return s.done(c.tag, true, "ENABLE completed")
}

func prefixEach(l []string) string {
	var b strings.Builder
	for _, x := range l {
		b.WriteByte(' ')
		b.WriteString(x)
	}
	return b.String()
}

func (s *session) cmdNamespace(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	s.untagged(`NAMESPACE (("" "/")) NIL NIL`)
	return s.done(c.tag, true, "NAMESPACE completed")
}
