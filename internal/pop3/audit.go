package pop3

import (
	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// Audit records (Server.Audit, package audit): one call at the place each
// event happens; no-ops when auditing is off.

// audit records e with the session's protocol, client address, TLS state
// and (unless e names one) account.
func (s *session) audit(e audit.Event) {
	if s.srv.Audit == nil {
		return
	}
	e.Proto, e.Remote, e.TLS = "pop3", s.raw.RemoteAddr().String(), s.tls
	if e.User == "" {
		e.User = s.account
	}
	s.srv.Audit.Record(e)
}

// auditLogin records a login or a failed one; mech is USER (USER/PASS) or
// PLAIN (AUTH PLAIN).
func (s *session) auditLogin(event, user, mech, detail string) {
	s.audit(audit.Event{Event: event, User: user, Mech: mech, Detail: detail})
}

// auditRead records a RETR or TOP of m before it is sent; cmd is the
// command line's verb and arguments ("RETR 1", "TOP 1 10").
func (s *session) auditRead(m *msgEntry, cmd string) {
	s.audit(audit.Event{Event: audit.EventRead, Mailbox: s.mailbox.Name, UIDs: []uint32{uint32(m.msg.UID)}, Detail: cmd})
}

// auditDeleted records the messages QUIT expunged.
func (s *session) auditDeleted(uids []mailstore.UID) {
	if s.srv.Audit == nil || len(uids) == 0 {
		return
	}
	s.audit(audit.Event{Event: audit.EventDelete, Mailbox: s.mailbox.Name, UIDs: audit.UIDList(uids)})
}
