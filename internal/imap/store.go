package imap

import (
	"errors"
	"fmt"
	"strings"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// cmdStore answers STORE and UID STORE (RFC 9051 §6.4.6) with the
// CONDSTORE modifier UNCHANGEDSINCE (RFC 7162 §3.1.3).
func (s *session) cmdStore(c command) error {
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
	var unchangedSince uint64
	if s.p.peek() == '(' {
		err := s.p.list(false, func() error {
			a, err := s.p.atom()
			if err != nil || upper(a) != "UNCHANGEDSINCE" {
				return syntaxErr("unknown STORE modifier")
			}
			if err := s.p.sp(); err != nil {
				return err
			}
			unchangedSince, err = s.p.number(63)
			return err
		})
		if err != nil {
			return err
		}
		if err := s.p.sp(); err != nil {
			return err
		}
	}
	item, err := s.p.atom()
	if err != nil {
		return err
	}
	item = upper(item)
	op := mailstore.FlagsReplace
	switch {
	case strings.HasPrefix(item, "+"):
		op, item = mailstore.FlagsAdd, item[1:]
	case strings.HasPrefix(item, "-"):
		op, item = mailstore.FlagsRemove, item[1:]
	}
	silent := false
	switch item {
	case "FLAGS":
	case "FLAGS.SILENT":
		silent = true
	default:
		return syntaxErr("unknown STORE data item")
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	var flags []string
	if s.p.peek() == '(' {
		if flags, err = s.p.flagList(); err != nil {
			return err
		}
	} else {
		for {
			f, err := s.p.flag()
			if err != nil {
				return err
			}
			flags = append(flags, f)
			if !s.p.consume(' ') {
				break
			}
		}
	}
	if err := s.p.end(); err != nil {
		return err
	}
	seqs, ok := s.resolveSet(set, c.uid)
	if !ok {
		return syntaxErr("invalid message sequence number")
	}
	if s.sel.readOnly {
		s.no(c.tag, "[READ-ONLY] mailbox is read-only")
		return nil
	}
	// \Recent cannot be set by clients (RFC 3501 §2.3.2); ignore it.
	kept := flags[:0]
	for _, f := range flags {
		if !strings.EqualFold(f, `\Recent`) {
			kept = append(kept, f)
		}
	}
	flags, err = mailstore.CanonicalFlags(kept)
	if err != nil {
		return syntaxErr("invalid flag")
	}
	if unchangedSince > 0 {
		s.condstore = true // RFC 7162 §3.1
	}
	uids := make([]mailstore.UID, len(seqs))
	for i, n := range seqs {
		uids[i] = s.sel.uids[n-1]
	}
	var changed []mailstore.Message
	var failed []mailstore.UID
	if len(uids) > 0 {
		changed, failed, err = s.srv.Store.StoreFlags(s.srv.ctx, s.sel.mb.ID, uids, op, flags, unchangedSince)
		if err != nil {
			if errors.Is(err, mailstore.ErrInvalidFlag) {
				return syntaxErr("invalid flag")
			}
			return s.storeFailed(c.tag, err)
		}
	}
	for _, m := range changed {
		s.sel.reported[m.UID] = m.ModSeq
	}
	failedSet := map[mailstore.UID]bool{}
	for _, u := range failed {
		failedSet[u] = true
	}
	switch {
	case !silent:
		// RFC 9051 §6.4.6: the updated flags of every message, also of
		// those whose flags did not change.
		msgs, err := s.lookupMessages(seqs)
		if err != nil {
			return s.storeFailed(c.tag, err)
		}
		for i, m := range msgs {
			if m == nil || failedSet[m.UID] {
				continue
			}
			s.storeResponse(seqs[i], m, c.uid)
		}
	case s.condstore:
		// RFC 7162 §3.2: with .SILENT the new MODSEQ is still reported.
		for _, m := range changed {
			if n := s.sel.seqOf(m.UID); n > 0 {
				fmt.Fprintf(s.bw, "* %d FETCH (UID %d MODSEQ (%d))\r\n", n, m.UID, m.ModSeq)
			}
		}
	}
	s.update(c.uid)
	if len(failed) > 0 {
		// RFC 7162 §3.1.3: [MODIFIED set], as UIDs for UID STORE and
		// sequence numbers for STORE.
		var ids []mailstore.UID
		for _, u := range failed {
			if c.uid {
				ids = append(ids, u)
			} else if n := s.sel.seqOf(u); n > 0 {
				ids = append(ids, mailstore.UID(n))
			}
		}
		s.ok(c.tag, "[MODIFIED %s] conditional STORE failed", formatUIDSet(ids))
		return nil
	}
	s.ok(c.tag, "STORE completed")
	return nil
}

func (s *session) storeResponse(seq uint32, m *mailstore.Message, uid bool) {
	fmt.Fprintf(s.bw, "* %d FETCH (FLAGS (%s)", seq, strings.Join(m.Flags, " "))
	if uid {
		fmt.Fprintf(s.bw, " UID %d", m.UID)
	}
	if s.condstore {
		fmt.Fprintf(s.bw, " MODSEQ (%d)", m.ModSeq)
	}
	s.bw.WriteString(")\r\n")
}
