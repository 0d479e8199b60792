package imap

import (
	"fmt"
	"slices"
	"strings"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// selected is the session's view of the selected mailbox (RFC 9051 §2.3.1):
// the UID of each message by sequence number, and nothing else per message
// (4 bytes each); flags and sizes are read from the store when needed.
type selected struct {
	mb       mailstore.Mailbox
	readOnly bool
	uids     []mailstore.UID
	// reported holds flag changes this session already answered (STORE,
	// FETCH setting \Seen), so that the change notification of its own
	// change is not reported a second time.
	reported map[mailstore.UID]uint64
	// saved is the result of the last SEARCH RETURN (SAVE), as UIDs
	// (SEARCHRES, RFC 5182).
	saved []mailstore.UID
}

// seqOf returns the sequence number of uid, or 0.
func (v *selected) seqOf(uid mailstore.UID) int {
	i, ok := slices.BinarySearch(v.uids, uid)
	if !ok {
		return 0
	}
	return i + 1
}

func (s *session) cmdSelect(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	condstore := false
	var qr *qresyncParams
	if s.p.consume(' ') {
		err := s.p.list(false, func() error {
			a, err := s.p.atom()
			if err != nil {
				return err
			}
			switch upper(a) {
			case "CONDSTORE":
				condstore = true
			case "QRESYNC":
				if !s.qresync {
					return syntaxErr("QRESYNC is not enabled")
				}
				if err := s.p.sp(); err != nil {
					return err
				}
				qr, err = s.p.qresyncParams()
				return err
			default:
				return syntaxErr("unknown SELECT parameter")
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := s.p.end(); err != nil {
		return err
	}
	// RFC 9051 §6.3.2: a SELECT first deselects the current mailbox,
	// even if the new SELECT fails; [CLOSED] tells the client where the
	// old mailbox's responses end (RFC 7162 §3.2.11).
	if s.sel != nil {
		s.sel = nil
		s.state = stateAuthenticated
		if s.condstore || s.rev2 {
			s.untagged("OK [CLOSED] previous mailbox closed")
		}
	}
	if s.sub != nil {
		s.sub.Drain() // the snapshot below includes these changes
	}
	s.queue = s.queue[:0]
	// The view needs only the UIDs, UNSEEN and the keywords in use:
	// View reads them without materialising every message.
	view, err := s.srv.Store.View(s.srv.ctx, mustMailboxID(s, name))
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	mb, err := s.srv.Store.Mailbox(s.srv.ctx, s.account.ID, name)
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	if condstore && !s.condstore {
		s.condstore = true // RFC 7162 §3.1: CONDSTORE parameter enables it
	}
	v := &selected{mb: mb, readOnly: c.name == "EXAMINE", uids: view.UIDs,
		reported: map[mailstore.UID]uint64{}}
	if v.uids == nil {
		v.uids = []mailstore.UID{}
	}
	firstUnseen := 0
	if view.FirstUnseen != 0 {
		firstUnseen = v.seqOf(view.FirstUnseen)
	}
	keywords := view.Keywords
	if len(keywords) > 200 {
		keywords = keywords[:200]
	}
	slices.Sort(keywords)
	flags := `\Answered \Flagged \Deleted \Seen \Draft` + prefixEach(keywords)
	s.untagged("FLAGS (%s)", flags)
	s.untagged("%d EXISTS", len(v.uids))
	if !s.rev2 {
		s.untagged("0 RECENT")
		if firstUnseen > 0 {
			s.untagged("OK [UNSEEN %d] first unseen message", firstUnseen)
		}
	}
	s.untagged("OK [UIDVALIDITY %d] UIDs valid", mb.UIDValidity)
	s.untagged("OK [UIDNEXT %d] predicted next UID", mb.UIDNext)
	if v.readOnly {
		s.untagged("OK [PERMANENTFLAGS ()] read-only mailbox")
	} else {
		s.untagged(`OK [PERMANENTFLAGS (%s \*)] flags permitted`, flags)
	}
	// RFC 7162 §3.1.2.1: sent on every SELECT by a CONDSTORE server.
	s.untagged("OK [HIGHESTMODSEQ %d] highest modseq", mb.HighestModSeq)
	if s.rev2 {
		// RFC 9051 §6.3.2: the mailbox's LIST response, with its name
		// as the server spells it.
		attrs := ""
		if mb.SpecialUse != "" {
			attrs = mb.SpecialUse
		}
		s.bw.WriteString("* LIST (" + attrs + `) "/" `)
		s.writeName(mb.Name)
		s.bw.WriteString("\r\n")
	}
	s.sel = v
	s.state = stateSelected
	if qr != nil && qr.uidValidity == mb.UIDValidity {
		if err := s.qresyncReport(v, qr); err != nil {
			return s.storeFailed(c.tag, err)
		}
	}
	access := "READ-WRITE"
	if v.readOnly {
		access = "READ-ONLY"
	}
	s.ok(c.tag, "[%s] %s completed", access, c.name)
	return nil
}

// mustMailboxID resolves a mailbox name to its ID, or -1 (which the store
// reports as ErrNoSuchMailbox).
func mustMailboxID(s *session, name string) int64 {
	mb, err := s.srv.Store.Mailbox(s.srv.ctx, s.account.ID, name)
	if err != nil {
		return -1
	}
	return mb.ID
}

func (s *session) cmdUnselect(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	s.sel = nil
	s.state = stateAuthenticated
	s.ok(c.tag, "UNSELECT completed")
	return nil
}

// cmdClose: expunge silently (no EXPUNGE responses, RFC 9051 §6.4.1)
// unless read-only, then deselect.
func (s *session) cmdClose(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	v := s.sel
	s.sel = nil
	s.state = stateAuthenticated
	if !v.readOnly {
		if _, err := s.expungeDeleted(v, nil); err != nil {
			return s.storeFailed(c.tag, err)
		}
	}
	s.ok(c.tag, "CLOSE completed")
	return nil
}

// expungeDeleted expunges the view's messages flagged \Deleted (only those
// in only, when non-nil) and returns the removed UIDs.
func (s *session) expungeDeleted(v *selected, only map[mailstore.UID]bool) ([]mailstore.UID, error) {
	cand := v.uids
	if only == nil {
		// CLOSE and EXPUNGE usually find nothing to remove: the count
		// costs a few bytes per message, reading them a few hundred.
		view, err := s.srv.Store.View(s.srv.ctx, v.mb.ID)
		if err != nil {
			return nil, err
		}
		if view.Deleted == 0 {
			return nil, nil
		}
	} else {
		cand = make([]mailstore.UID, 0, len(only))
		for u := range only {
			cand = append(cand, u)
		}
		slices.Sort(cand)
	}
	msgs, err := s.srv.Store.MessagesInRanges(s.srv.ctx, v.mb.ID, mailstore.UIDRanges(cand, v.uids))
	if err != nil {
		return nil, err
	}
	var del []mailstore.UID
	for _, m := range msgs {
		if m.HasFlag(mailstore.FlagDeleted) && v.seqOf(m.UID) > 0 && (only == nil || only[m.UID]) {
			del = append(del, m.UID)
		}
	}
	if len(del) == 0 {
		return nil, nil
	}
	removed, err := s.srv.Store.Expunge(s.srv.ctx, v.mb.ID, del)
	if err == nil {
		s.auditUIDs(audit.EventExpunge, v.mb.Name, "", removed)
	}
	return removed, err
}

// cmdExpunge answers EXPUNGE and UID EXPUNGE (RFC 4315 §2.1).
func (s *session) cmdExpunge(c command) error {
	var only map[mailstore.UID]bool
	if c.uid {
		if err := s.p.sp(); err != nil {
			return err
		}
		set, err := s.p.seqSet()
		if err != nil {
			return err
		}
		if err := s.p.end(); err != nil {
			return err
		}
		seqs, _ := s.resolveSet(set, true)
		only = make(map[mailstore.UID]bool, len(seqs))
		for _, n := range seqs {
			only[s.sel.uids[n-1]] = true
		}
	} else if err := s.p.end(); err != nil {
		return err
	}
	if s.sel.readOnly {
		s.no(c.tag, "[READ-ONLY] mailbox is read-only")
		return nil
	}
	removed, err := s.expungeDeleted(s.sel, only)
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	s.reportExpunged(removed)
	return s.done(c.tag, true, "EXPUNGE completed")
}

// reportExpunged removes UIDs from the view and sends EXPUNGE responses,
// highest sequence number first so that each number is valid when sent
// (RFC 9051 §7.5.1).
func (s *session) reportExpunged(uids []mailstore.UID) {
	v := s.sel
	if s.qresync {
		// RFC 7162 §3.2.10: VANISHED instead of EXPUNGE.
		var gone []mailstore.UID
		for _, u := range uids {
			if n := v.seqOf(u); n > 0 {
				v.uids = slices.Delete(v.uids, n-1, n)
				gone = append(gone, u)
			}
		}
		if len(gone) > 0 {
			s.untagged("VANISHED %s", formatUIDSet(gone))
		}
		return
	}
	for i := len(uids) - 1; i >= 0; i-- {
		n := v.seqOf(uids[i])
		if n == 0 {
			continue
		}
		v.uids = slices.Delete(v.uids, n-1, n)
		s.untagged("%d EXPUNGE", n)
	}
}

// update reports the changes other sessions (and deliveries) committed to
// the selected mailbox since the last report: EXISTS for new messages,
// EXPUNGE for removed ones (only when expunges is set, RFC 9051 §7.5.1)
// and FETCH (FLAGS) for flag changes (RFC 9051 §7: unilateral responses
// at command completion).
func (s *session) update(expunges bool) {
	gone := s.gone // UIDs this command's FETCH left out (fetch.go leftOut)
	s.gone = nil
	if s.sub == nil {
		return
	}
	s.queue = append(s.queue, s.sub.Drain()...)
	v := s.sel
	if v == nil {
		s.queue = s.queue[:0]
		return
	}
	exists := false
	var vanished []mailstore.UID
	announce := func() {
		if len(vanished) > 0 {
			s.untagged("VANISHED %s", formatUIDSet(vanished))
			vanished = vanished[:0]
		}
		if exists {
			s.untagged("%d EXISTS", len(v.uids))
			exists = false
		}
	}
	// Expunges that may not be reported yet stay queued; the other
	// changes can still be reported, since the deferred messages keep
	// their sequence numbers meanwhile.
	var deferred []mailstore.Change
	for _, ch := range s.queue {
		if ch.MailboxID != v.mb.ID {
			continue
		}
		switch ch.Kind {
		case mailstore.ChangeAppend:
			if n := len(v.uids); n == 0 || ch.UID > v.uids[n-1] {
				v.uids = append(v.uids, ch.UID)
				exists = true
			}
		case mailstore.ChangeExpunge:
			if !expunges {
				deferred = append(deferred, ch)
				continue
			}
			if n := v.seqOf(ch.UID); n > 0 {
				if s.qresync {
					if exists {
						announce()
					}
					v.uids = slices.Delete(v.uids, n-1, n)
					vanished = append(vanished, ch.UID)
					continue
				}
				announce()
				v.uids = slices.Delete(v.uids, n-1, n)
				s.untagged("%d EXPUNGE", n)
			}
		case mailstore.ChangeFlags:
			if m, ok := v.reported[ch.UID]; ok && m >= ch.ModSeq || gone[ch.UID] {
				continue
			}
			if n := v.seqOf(ch.UID); n > 0 {
				announce()
				s.bw.WriteString("* ")
				fmt.Fprintf(s.bw, "%d FETCH (UID %d FLAGS (%s)", n, ch.UID, strings.Join(ch.Flags, " "))
				if s.condstore {
					fmt.Fprintf(s.bw, " MODSEQ (%d)", ch.ModSeq)
				}
				s.bw.WriteString(")\r\n")
			}
		case mailstore.ChangeMailboxRename:
			v.mb.Name = ch.MailboxName
		case mailstore.ChangeMailboxDelete:
			// The mailbox is gone: nothing sensible can be reported
			// about it any more (RFC 9051 §7.1.5, BYE).
			s.untagged("BYE selected mailbox was deleted")
			s.state = stateLogout
			s.endCause = "selected mailbox deleted"
			s.queue = s.queue[:0]
			return
		}
	}
	announce()
	s.queue = append(s.queue[:0], deferred...)
	clear(v.reported)
}

// qresyncParams are the QRESYNC parameters of SELECT/EXAMINE (RFC 7162
// §3.2.5): the client's UIDVALIDITY and MODSEQ, and optionally the UIDs it
// knows. The sequence match data is accepted and not used: the expunge log
// is complete, so it is not needed to narrow down VANISHED.
type qresyncParams struct {
	uidValidity uint32
	modSeq      uint64
	known       *seqSet
}

func (p *parser) qresyncParams() (*qresyncParams, error) {
	q := &qresyncParams{}
	if err := p.expect('('); err != nil {
		return nil, err
	}
	v, err := p.number(32)
	if err != nil || v == 0 {
		return nil, syntaxErr("bad UIDVALIDITY")
	}
	q.uidValidity = uint32(v)
	if err := p.sp(); err != nil {
		return nil, err
	}
	if q.modSeq, err = p.number(63); err != nil {
		return nil, err
	}
	if p.consume(' ') {
		if p.peek() != '(' {
			set, err := p.seqSet()
			if err != nil || set.dollar {
				return nil, syntaxErr("bad known-uids")
			}
			q.known = &set
			p.consume(' ')
		}
		if p.peek() == '(' {
			p.pos++
			if _, err := p.seqSet(); err != nil {
				return nil, err
			}
			if err := p.sp(); err != nil {
				return nil, err
			}
			if _, err := p.seqSet(); err != nil {
				return nil, err
			}
			if err := p.expect(')'); err != nil {
				return nil, err
			}
		}
	}
	if err := p.expect(')'); err != nil {
		return nil, err
	}
	return q, nil
}

// inKnown reports whether uid is in the client's known-uids (all UIDs when
// it gave none).
func (q *qresyncParams) inKnown(uid mailstore.UID) bool {
	if q.known == nil {
		return true
	}
	for _, r := range q.known.ranges {
		lo, hi := r.lo, r.hi
		if lo == 0 {
			lo = ^uint32(0)
		}
		if hi == 0 {
			hi = ^uint32(0)
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if uint32(uid) >= lo && uint32(uid) <= hi {
			return true
		}
	}
	return false
}

// qresyncReport sends what changed since the client's MODSEQ: VANISHED
// (EARLIER) from the expunge log, then FETCH (UID FLAGS MODSEQ) of changed
// messages (RFC 7162 §3.2.5.1).
func (s *session) qresyncReport(v *selected, q *qresyncParams) error {
	gone, err := s.srv.Store.Vanished(s.srv.ctx, v.mb.ID, q.modSeq)
	if err != nil {
		return err
	}
	var vanished []mailstore.UID
	for _, u := range gone {
		if q.inKnown(u) {
			vanished = append(vanished, u)
		}
	}
	if len(vanished) > 0 {
		s.untagged("VANISHED (EARLIER) %s", formatUIDSet(vanished))
	}
	changed, err := s.srv.Store.MessagesChangedSince(s.srv.ctx, v.mb.ID, q.modSeq)
	if err != nil {
		return err
	}
	for _, m := range changed {
		// Messages appended after the view's snapshot are announced
		// by the update that follows.
		if n := v.seqOf(m.UID); n > 0 {
			fmt.Fprintf(s.bw, "* %d FETCH (UID %d FLAGS (%s) MODSEQ (%d))\r\n", n, m.UID, strings.Join(m.Flags, " "), m.ModSeq)
		}
	}
	return nil
}
