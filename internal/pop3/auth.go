package pop3

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// plaintextAllowed reports whether this connection may carry a plaintext
// password (design.md §5: only over TLS or from loopback).
func (s *session) plaintextAllowed() bool {
	return s.tls || s.srv.loopback(s.remote)
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
		s.line("SASL PLAIN")
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

// cmdAUTH answers AUTH (RFC 5034) with the PLAIN mechanism (RFC 4616).
func (s *session) cmdAUTH(cmd command) {
	if len(cmd.args) == 0 {
		// Pre-RFC 5034 clients list mechanisms with a bare AUTH.
		s.ok("")
		if s.plaintextAllowed() {
			s.line("PLAIN")
		}
		s.end()
		return
	}
	if len(cmd.args) > 2 {
		s.fail("syntax error")
		return
	}
	if !strings.EqualFold(cmd.args[0], "PLAIN") {
		s.fail("unsupported authentication mechanism")
		return
	}
	if !s.plaintextAllowed() {
		s.refusePlaintext()
		return
	}
	var resp string
	if len(cmd.args) == 2 {
		resp = cmd.args[1]
		if resp == "=" { // an empty initial response
			resp = ""
		}
	} else {
		// An empty server challenge: "+" SP, then the client's line.
		s.bw.WriteString("+ \r\n")
		if err := s.flush(); err != nil {
			s.quit, s.endCause = true, "write error"
			return
		}
		line, tooLong, err := s.readLine(maxSASLLine)
		if err != nil {
			s.readFailed(err)
			return
		}
		if tooLong {
			s.fail("line too long")
			return
		}
		resp = string(line)
	}
	if resp == "*" {
		s.fail("authentication cancelled")
		return
	}
	dec, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		s.fail("invalid base64 in SASL response")
		return
	}
	// message = [authzid] NUL authcid NUL passwd (RFC 4616 §2)
	parts := bytes.Split(dec, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 {
		s.fail("malformed SASL PLAIN response")
		return
	}
	authzid, authcid, passwd := string(parts[0]), string(parts[1]), string(parts[2])
	if authzid != "" && !strings.EqualFold(authzid, authcid) {
		s.log.Info("auth failed", "user", authcid, "mech", "PLAIN", "reason", "authorization identity not permitted")
		s.auditLogin(audit.EventLoginFailed, authcid, "PLAIN", "authorization identity "+authzid+" not permitted")
		s.fail("[AUTH] authorization identity not permitted")
		return
	}
	s.login(authcid, passwd, "PLAIN")
}

// login checks the credentials and opens the maildrop.
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
	if err := s.openMaildrop(name); err != nil {
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
