package pop3

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// plaintextAllowed reports whether this connection may carry a plaintext
// password (design.md §5: only over TLS or from loopback, unless
// tls.require_tls_for_auth is false; auth.Authenticator.PlaintextAllowed).
func (s *session) plaintextAllowed() bool {
	return s.srv.Auth.PlaintextAllowed(s.tls || s.srv.loopback(s.remote))
}

// canSTLS reports whether STLS is available (RFC 2595 §4).
func (s *session) canSTLS() bool {
	return s.srv.TLSConfig != nil && !s.tls
}

// refusePlaintext answers a plaintext login attempt on an insecure
// connection. [AUTH] is RFC 3206's code for "an attempt to authenticate in
// violation of policy (such as from an invalid location ...)".
func (s *session) refusePlaintext() {
	if s.canSTLS() {
		s.fail("[AUTH] Plaintext authentication disallowed on non-TLS connections, use STLS")
	} else {
		s.fail("[AUTH] Plaintext authentication disallowed on non-TLS connections")
	}
	s.log.Info("auth refused: plaintext without TLS")
}

// cmdCAPA answers CAPA (RFC 2449 §5). The list is the same in both states:
// "Capabilities available in the AUTHORIZATION state MUST be announced in
// both states."
func (s *session) cmdCAPA(cmd command) {
	if len(cmd.args) != 0 {
		s.fail("syntax error")
		return
	}
	s.ok("Capability list follows")
	s.line("TOP")
	s.line("UIDL")
	if s.plaintextAllowed() {
		s.line("USER")
	}
	// SASL (RFC 5034 §3): SCRAM on every connection, PLAIN and LOGIN only
	// where USER is offered (auth.Mechanisms).
	if mechs := s.srv.Auth.Mechanisms(s.saslConn()); len(mechs) > 0 {
		s.line("SASL %s", strings.Join(mechs, " "))
	}
	s.line("RESP-CODES")
	s.line("AUTH-RESP-CODE")
	s.line("PIPELINING")
	s.line("EXPIRE NEVER")
	s.line("IMPLEMENTATION Letterbox")
	if s.canSTLS() {
		s.line("STLS")
	}
	s.end()
}

// cmdUSER answers USER (RFC 1939 §7). It never reveals whether the user
// exists.
func (s *session) cmdUSER(cmd command) {
	name := strings.Trim(cmd.rest, " ")
	if name == "" {
		s.fail("missing user name")
		return
	}
	if !s.plaintextAllowed() {
		s.refusePlaintext()
		return
	}
	s.user, s.userSet = name, true
	s.ok("send PASS")
}

// cmdPASS answers PASS. The password is everything after "PASS ", spaces
// included (RFC 1939 §7).
func (s *session) cmdPASS(cmd command, user string, userSet bool) {
	if !userSet {
		s.fail("PASS must follow USER")
		return
	}
	if !s.plaintextAllowed() {
		s.refusePlaintext()
		return
	}
	s.login(user, cmd.rest, "USER")
}

// cmdAUTH answers AUTH (RFC 5034): a SASL exchange with SCRAM-SHA-256,
// SCRAM-SHA-256-PLUS (RFC 7677), PLAIN (RFC 4616) or LOGIN, with an
// optional initial response (RFC 5034 §4). The mechanisms are in package
// auth (Authenticator.Run), shared with IMAP; this is the POP3 framing:
// "+ " challenges, "*" to cancel, -ERR with RFC 3206 codes.
func (s *session) cmdAUTH(cmd command) {
	if len(cmd.args) == 0 {
		// Pre-RFC 5034 clients list mechanisms with a bare AUTH.
		s.ok("")
		for _, m := range s.srv.Auth.Mechanisms(s.saslConn()) {
			s.line("%s", m)
		}
		s.end()
		return
	}
	if len(cmd.args) > 2 {
		s.fail("syntax error")
		return
	}
	if s.srv.Auth == nil {
		s.fail("[SYS/TEMP] authentication unavailable")
		return
	}
	var initial *string
	if len(cmd.args) == 2 {
		initial = &cmd.args[1]
	}
	res, err := s.srv.Auth.Run(s.srv.ctx, s.saslConn(), cmd.args[0], initial, saslTransport{s})
	auditMech := res.Mech
	if auditMech == auth.MechLogin {
		// Not to be confused with IMAP's LOGIN command in the audit log.
		auditMech = "SASL-LOGIN"
	}
	var te transportError
	switch {
	case err == nil:
		s.enter(res.Name, auditMech)
	case errors.As(err, &te):
		if te.write {
			s.quit, s.endCause = true, "write error"
		} else {
			s.readFailed(te.err)
		}
	case errors.Is(err, auth.ErrUnsupportedMechanism):
		s.fail("unsupported authentication mechanism")
	case errors.Is(err, auth.ErrPlaintextRefused):
		s.refusePlaintext()
	case errors.Is(err, errSASLTooLong):
		s.fail("line too long")
	case errors.Is(err, auth.ErrCancelled):
		s.fail("authentication cancelled")
	case errors.Is(err, auth.ErrBadBase64):
		s.fail("invalid base64 in SASL response")
	case errors.Is(err, auth.ErrMalformed):
		s.log.Info("auth failed", "user", res.User, "mech", res.Mech, "err", err)
		s.fail("malformed SASL %s response", res.Mech)
	case errors.Is(err, auth.ErrAuthzFailed):
		s.log.Info("auth failed", "user", res.User, "mech", res.Mech, "reason", "authorization identity not permitted")
		s.auditLogin(audit.EventLoginFailed, res.User, auditMech, "authorization identity "+res.Authz+" not permitted")
		s.fail("[AUTH] authorization identity not permitted")
	case errors.Is(err, auth.ErrInvalidCredentials):
		s.log.Warn("auth failed", "user", res.User, "mech", res.Mech)
		s.auditLogin(audit.EventLoginFailed, res.User, auditMech, "invalid credentials")
		s.fail("[AUTH] Authentication failed")
	case errors.Is(err, auth.ErrChannelBinding):
		s.log.Warn("auth failed: channel binding", "user", res.User, "mech", res.Mech, "err", err)
		s.auditLogin(audit.EventLoginFailed, res.User, auditMech, err.Error())
		s.fail("[AUTH] SCRAM channel binding failed")
	default:
		s.log.Error("auth backend failed", "user", res.User, "mech", res.Mech, "err", err)
		s.fail("[SYS/TEMP] Authentication temporarily unavailable, try again later")
	}
}

// errSASLTooLong is a SASL response line longer than maxSASLLine.
var errSASLTooLong = errors.New("pop3: SASL response too long")

// transportError is an I/O error of saslTransport; the session ends.
type transportError struct {
	err   error
	write bool
}

func (e transportError) Error() string { return e.err.Error() }
func (e transportError) Unwrap() error { return e.err }

// saslTransport carries a SASL exchange in POP3 AUTH challenges (RFC 5034
// §4: "+" SP base64 CRLF; the client answers with a base64 line).
type saslTransport struct{ s *session }

func (t saslTransport) Challenge(data []byte) error {
	s := t.s
	s.bw.WriteString("+ ")
	s.bw.WriteString(base64.StdEncoding.EncodeToString(data))
	s.bw.WriteString("\r\n")
	if err := s.flush(); err != nil {
		return transportError{err: err, write: true}
	}
	return nil
}

func (t saslTransport) Response() (string, error) {
	line, tooLong, err := t.s.readLine(maxSASLLine)
	if err != nil {
		return "", transportError{err: err}
	}
	if tooLong {
		return "", errSASLTooLong
	}
	return string(line), nil
}

// saslConn describes this connection to package auth: whether it may carry
// plaintext passwords, and its TLS channel bindings (tls-server-end-point
// from Server.TLSConfig's certificate: a pop3s listener must use the same
// configuration, as internal/server does).
func (s *session) saslConn() auth.Conn {
	c := auth.Conn{Remote: s.remote, PlaintextOK: s.plaintextAllowed()}
	if tc, ok := s.conn.(*tls.Conn); ok && s.tls {
		c.Bindings = auth.TLSChannelBindings(tc.ConnectionState(), s.srv.TLSConfig)
	}
	return c
}

// login checks the credentials of USER/PASS and opens the maildrop.
func (s *session) login(user, password, mech string) {
	if s.srv.Auth == nil {
		s.fail("[SYS/TEMP] authentication unavailable")
		return
	}
	ctx := s.srv.ctx
	name, err := s.srv.Auth.Authenticate(ctx, user, password, s.remote)
	if errors.Is(err, auth.ErrInvalidCredentials) {
		s.log.Warn("auth failed", "user", user, "mech", mech)
		s.auditLogin(audit.EventLoginFailed, user, mech, "invalid credentials")
		s.fail("[AUTH] Authentication failed")
		return
	}
	if err != nil {
		s.log.Error("auth backend failed", "user", user, "mech", mech, "err", err)
		s.fail("[SYS/TEMP] Authentication temporarily unavailable, try again later")
		return
	}
	s.enter(name, mech)
}

// enter opens the maildrop of account name, which mech authenticated, and
// enters the TRANSACTION state.
func (s *session) enter(name, mech string) {
	user := name
	if !s.acquireAccountSlot(name) {
		return
	}
	if err := s.openMaildrop(name); err != nil {
		s.releaseAccountSlot()
		switch {
		case errors.Is(err, mailstore.ErrLocked):
			s.log.Info("maildrop in use", "user", name)
			s.fail("[IN-USE] Mailbox is locked by another POP3 session")
		case errors.Is(err, mailstore.ErrNoSuchAccount):
			// Deleted between the password check and now.
			s.log.Warn("auth failed", "user", user, "mech", mech, "reason", "account vanished")
			s.fail("[AUTH] Authentication failed")
		default:
			s.log.Error("cannot open maildrop", "user", name, "err", err)
			s.fail("[SYS/TEMP] Cannot open mailbox, try again later")
		}
		return
	}
	s.state = stateTransaction
	s.log.Info("login", "user", name, "mech", mech, "tls", s.tls, "messages", len(s.msgs))
	s.auditLogin(audit.EventLogin, name, mech, "")
	s.ok("maildrop locked and ready, %s", plural(len(s.msgs), "message"))
}

// openMaildrop locks the account's INBOX and takes the message snapshot
// that defines the message numbers of this session (design.md §3).
func (s *session) openMaildrop(name string) error {
	ctx, st := s.srv.ctx, s.srv.Store
	acc, err := st.Account(ctx, name)
	if err != nil {
		return err
	}
	mb, err := st.Mailbox(ctx, acc.ID, mailstore.Inbox)
	if err != nil {
		return err
	}
	unlock, err := st.LockMailbox(ctx, mb.ID)
	if err != nil {
		return err
	}
	msgs, err := st.Messages(ctx, mb.ID)
	if err != nil {
		unlock()
		return err
	}
	s.account, s.mailbox, s.unlock = acc.Name, mb, unlock
	s.msgs = make([]msgEntry, len(msgs))
	for i, m := range msgs {
		s.msgs[i] = msgEntry{msg: m, seen: m.HasFlag(mailstore.FlagSeen), fix: -1}
	}
	return nil
}

// cmdSTLS answers STLS (RFC 2595 §4) and starts TLS. Afterwards the session
// is a fresh AUTHORIZATION state: a USER given before is forgotten (the
// dispatcher already cleared it), and plaintext that the client pipelined
// after STLS is discarded, never read as commands.
func (s *session) cmdSTLS(cmd command) {
	if len(cmd.args) != 0 {
		s.fail("syntax error")
		return
	}
	if s.tls {
		s.fail("command not permitted when TLS active")
		return
	}
	if s.srv.TLSConfig == nil {
		s.fail("STLS not available")
		return
	}
	s.ok("Begin TLS negotiation now")
	if err := s.flush(); err != nil {
		s.quit, s.endCause = true, "write error"
		return
	}
	if n := s.br.Buffered(); n > 0 {
		s.log.Warn("discarding plaintext sent after STLS", "octets", n)
	}
	tc := tls.Server(s.raw, s.srv.TLSConfig)
	s.conn = tc
	s.br.Reset(tc)
	s.bw.Reset(connWriter{s})
	if !s.handshake(tc) {
		s.quit = true
		return
	}
	s.tls = true
}

// cmdQUITAuthorization answers QUIT before login (RFC 1939 §4).
func (s *session) cmdQUITAuthorization(cmd command) {
	if len(cmd.args) != 0 {
		s.fail("syntax error")
		return
	}
	s.ok("%s Letterbox POP3 server signing off", s.srv.hostname)
	s.quit, s.endCause = true, "quit"
}
