package imap

import (
	"strconv"
	"strings"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// Audit records (Server.Audit, package audit). Each helper is one call at
// the place the event happens; all are no-ops when auditing is off.

// audit records e with the session's protocol, client address, TLS state
// and (unless e names one) user.
func (s *session) audit(e audit.Event) {
	if s.srv.Audit == nil {
		return
	}
	e.Proto, e.Remote, e.TLS = "imap", s.raw.RemoteAddr().String(), s.tls
	if e.User == "" {
		e.User = s.user
	}
	s.srv.Audit.Record(e)
}

// auditLogin records a login (event audit.EventLogin) or a failed one;
// cmd is LOGIN (the command) or the SASL mechanism of AUTHENTICATE
// (saslAuditMech: PLAIN, SASL-LOGIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS).
func (s *session) auditLogin(event, user, cmd, detail string) {
	mech := cmd
	if cmd == "AUTHENTICATE" {
		mech = "PLAIN"
	}
	s.audit(audit.Event{Event: event, User: user, Mech: mech, Detail: detail})
}

// auditFetch records a FETCH that returns message bytes (a BODY[...],
// BINARY[...] or RFC822* item, peeking or not; not FLAGS, ENVELOPE or
// BODYSTRUCTURE alone): the selected mailbox and the UIDs the command
// covers. It is called before any data is sent.
func (s *session) auditFetch(items []fetchItem, seqs []uint32, changedSince uint64) {
	if s.srv.Audit == nil || len(seqs) == 0 {
		return
	}
	var sections []string
	for _, it := range items {
		if it.kind != fetchSection {
			continue
		}
		name := it.name
		if !strings.HasPrefix(name, "RFC822") {
			if it.peek {
				name += ".PEEK"
			}
			name += "[" + it.spec.String() + "]"
			if it.partial {
				name += "<" + strconv.FormatInt(it.origin, 10) + "." + strconv.FormatInt(it.count, 10) + ">"
			}
		}
		sections = append(sections, name)
	}
	if len(sections) == 0 {
		return
	}
	detail := strings.Join(sections, " ")
	if changedSince > 0 {
		detail += " CHANGEDSINCE " + strconv.FormatUint(changedSince, 10)
	}
	uids := make([]uint32, len(seqs))
	for i, n := range seqs {
		uids[i] = uint32(s.sel.uids[n-1])
	}
	s.audit(audit.Event{Event: audit.EventRead, Mailbox: s.sel.mb.Name, UIDs: uids, Detail: detail})
}

// auditUIDs records an event on messages of mailbox (expunge, move, copy);
// nothing when uids is empty.
func (s *session) auditUIDs(event, mailbox, dest string, uids []mailstore.UID) {
	if s.srv.Audit == nil || len(uids) == 0 {
		return
	}
	s.audit(audit.Event{Event: event, Mailbox: mailbox, Dest: dest, UIDs: audit.UIDList(uids)})
}

// auditCopy records a MOVE or COPY: the source mailbox and UIDs and the
// destination.
func (s *session) auditCopy(move bool, dest string, src []mailstore.UID) {
	event := audit.EventCopy
	if move {
		event = audit.EventMove
	}
	s.auditUIDs(event, s.sel.mb.Name, dest, src)
}
