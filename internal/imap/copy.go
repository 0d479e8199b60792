package imap

import (
	"errors"
	"slices"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// cmdCopy answers COPY, MOVE (RFC 6851) and their UID forms, with COPYUID
// (UIDPLUS, RFC 4315 §3).
func (s *session) cmdCopy(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	set, err := s.p.seqSet()
	if err != nil {
		return err
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	seqs, ok := s.resolveSet(set, c.uid)
	if !ok {
		return syntaxErr("invalid message sequence number")
	}
	move := c.name == "MOVE"
	if move && s.sel.readOnly {
		s.no(c.tag, "[READ-ONLY] mailbox is read-only")
		return nil
	}
	dst, err := s.srv.Store.Mailbox(s.srv.ctx, s.account.ID, name)
	if errors.Is(err, mailstore.ErrNoSuchMailbox) {
		// RFC 9051 §6.4.7: the client may create it and retry.
		s.no(c.tag, "[TRYCREATE] no such mailbox")
		return nil
	}
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	if len(seqs) == 0 {
		return s.done(c.tag, true, "%s completed, nothing to do", c.name)
	}
	uids := make([]mailstore.UID, len(seqs))
	for i, n := range seqs {
		uids[i] = s.sel.uids[n-1]
	}
	var src, dstUIDs []mailstore.UID
	if move {
		src, dstUIDs, err = s.srv.Store.Move(s.srv.ctx, s.sel.mb.ID, uids, dst.ID)
	} else {
		src, dstUIDs, err = s.srv.Store.Copy(s.srv.ctx, s.sel.mb.ID, uids, dst.ID)
	}
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	s.auditCopy(move, dst.Name, src)
	code := ""
	if len(src) > 0 {
		code = "[COPYUID " + itoa(uint64(dst.UIDValidity)) + " " + formatUIDSet(src) + " " + formatUIDSet(dstUIDs) + "] "
	}
	if !move {
		return s.done(c.tag, true, "%sCOPY completed", code)
	}
	// RFC 6851 §4.3: COPYUID goes in an untagged OK before the
	// expunges.
	if code != "" {
		s.untagged("OK %sMoved", code)
	}
	sorted := slices.Clone(src)
	slices.Sort(sorted)
	s.reportExpunged(sorted)
	return s.done(c.tag, true, "MOVE completed")
}
