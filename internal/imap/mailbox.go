package imap

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// utf8Names reports whether mailbox names are exchanged as UTF-8 rather
// than modified UTF-7 (RFC 9051 §5.1, RFC 6855 §3).
func (s *session) utf8Names() bool { return s.rev2 || s.utf8 }

// mailboxArg reads a mailbox name and converts it to the store's UTF-8.
func (s *session) mailboxArg() (string, error) {
	n, err := s.p.astring()
	if err != nil {
		return "", err
	}
	return s.decodeName(n)
}

func (s *session) decodeName(n string) (string, error) {
	if strings.EqualFold(n, mailstore.Inbox) {
		return mailstore.Inbox, nil
	}
	if s.utf8Names() {
		return n, nil
	}
	d, err := decodeMUTF7(n)
	if err != nil {
		return "", syntaxErr("mailbox name is not valid modified UTF-7")
	}
	return d, nil
}

func (s *session) encodeName(n string) string {
	if s.utf8Names() {
		return n
	}
	return encodeMUTF7(n)
}

// writeName writes a mailbox name as an astring-compatible string.
func (s *session) writeName(n string) {
	writeString(s.bw, s.encodeName(n))
}

// storeFailed answers a failed store call: the expected errors with their
// RFC 5530 response codes, anything else as a logged server failure.
func (s *session) storeFailed(tag string, err error) error {
	switch {
	case errors.Is(err, mailstore.ErrNoSuchMailbox):
		s.no(tag, "[NONEXISTENT] no such mailbox")
	case errors.Is(err, mailstore.ErrMailboxExists):
		s.no(tag, "[ALREADYEXISTS] mailbox already exists")
	case errors.Is(err, mailstore.ErrInvalidName):
		s.no(tag, "[CANNOT] invalid mailbox name")
	case errors.Is(err, mailstore.ErrNotAllowed):
		s.no(tag, "[CANNOT] operation not allowed")
	case errors.Is(err, mailstore.ErrInvalidFlag):
		s.bad(tag, "invalid flag")
	case errors.Is(err, mailstore.ErrNoSuchMessage):
		s.no(tag, "[NONEXISTENT] no such message")
	case errors.Is(err, mailstore.ErrOverQuota):
		// APPEND, COPY: RFC 9208 §4.3.1, RFC 5530 §3 (quota.go).
		s.no(tag, "[OVERQUOTA] "+overQuotaText)
	case mailstore.InsufficientStorage(err):
		// The server's disk is full: a temporary failure of the
		// storage subsystem, RFC 5530 UNAVAILABLE. Not OVERQUOTA
		// (which Dovecot sends for ENOSPC): deleting mail in this
		// account is not what the user can do about it.
		s.log.Error("store error: insufficient storage", "err", err)
		s.no(tag, "[UNAVAILABLE] insufficient storage, try again later")
	default:
		s.log.Error("store error", "err", err)
		s.no(tag, "[SERVERBUG] internal server error")
	}
	return nil
}

// matchPattern matches a LIST pattern ("*" any string, "%" any string
// without the hierarchy separator, RFC 9051 §6.3.9) against name, in
// O(len(pattern)·len(name)).
func matchPattern(pattern, name string) bool {
	// INBOX is case-insensitive, also as the first level of a pattern.
	if len(pattern) >= 5 && strings.EqualFold(pattern[:5], mailstore.Inbox) &&
		(len(name) < 5 || name[:5] == mailstore.Inbox) {
		pattern = mailstore.Inbox + pattern[5:]
	}
	// prev[j]: pattern[:i] matches name[:j].
	prev := make([]bool, len(name)+1)
	cur := make([]bool, len(name)+1)
	prev[0] = true
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		cur[0] = prev[0] && (c == '*' || c == '%')
		for j := 1; j <= len(name); j++ {
			switch c {
			case '*':
				cur[j] = prev[j] || cur[j-1]
			case '%':
				cur[j] = prev[j] || (cur[j-1] && name[j-1] != mailstore.HierarchySeparator)
			default:
				cur[j] = prev[j-1] && name[j-1] == c
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(name)]
}

type listOptions struct {
	selSubscribed, selSpecialUse, recursive   bool
	retSubscribed, retSpecialUse, retChildren bool
	status                                    []string
	extended                                  bool
}

// cmdList answers LIST with the LIST-EXTENDED (RFC 5258) selection and
// return options SUBSCRIBED, SPECIAL-USE (RFC 6154), CHILDREN and STATUS
// (LIST-STATUS, RFC 5819).
func (s *session) cmdList(c command) error {
	var o listOptions
	if err := s.p.sp(); err != nil {
		return err
	}
	if s.p.peek() == '(' {
		o.extended = true
		err := s.p.list(true, func() error {
			a, err := s.p.atom()
			if err != nil {
				return err
			}
			switch upper(a) {
			case "SUBSCRIBED":
				o.selSubscribed = true
			case "SPECIAL-USE":
				o.selSpecialUse = true
			case "RECURSIVEMATCH":
				o.recursive = true
			case "REMOTE":
			default:
				return syntaxErr("unknown LIST selection option")
			}
			return nil
		})
		if err != nil {
			return err
		}
		if o.recursive && !o.selSubscribed {
			return syntaxErr("RECURSIVEMATCH needs another selection option")
		}
		if err := s.p.sp(); err != nil {
			return err
		}
	}
	ref, err := s.p.astring()
	if err != nil {
		return err
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	var patterns []string
	if s.p.peek() == '(' {
		o.extended = true
		err = s.p.list(false, func() error {
			pt, err := s.p.listMailbox()
			patterns = append(patterns, pt)
			return err
		})
	} else {
		var pt string
		pt, err = s.p.listMailbox()
		patterns = append(patterns, pt)
	}
	if err != nil {
		return err
	}
	if s.p.consume(' ') {
		a, err := s.p.atom()
		if err != nil || upper(a) != "RETURN" {
			return syntaxErr("expected RETURN")
		}
		if err := s.p.sp(); err != nil {
			return err
		}
		o.extended = true
		err = s.p.list(true, func() error {
			a, err := s.p.atom()
			if err != nil {
				return err
			}
			switch upper(a) {
			case "SUBSCRIBED":
				o.retSubscribed = true
			case "SPECIAL-USE":
				o.retSpecialUse = true
			case "CHILDREN":
				o.retChildren = true
			case "STATUS":
				if err := s.p.sp(); err != nil {
					return err
				}
				o.status = []string{}
				return s.p.list(false, func() error {
					it, err := s.p.atom()
					o.status = append(o.status, upper(it))
					return err
				})
			default:
				return syntaxErr("unknown LIST return option")
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
	for _, it := range o.status {
		if !validStatusItem(it) {
			return syntaxErr("unknown STATUS item")
		}
	}
	return s.list(c, ref, patterns, o, "LIST")
}

func (s *session) cmdLsub(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	ref, err := s.p.astring()
	if err != nil {
		return err
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	pt, err := s.p.listMailbox()
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	return s.list(c, ref, []string{pt}, listOptions{selSubscribed: true}, "LSUB")
}

func (s *session) list(c command, ref string, patterns []string, o listOptions, resp string) error {
	if len(patterns) == 1 && patterns[0] == "" && resp == "LIST" {
		// RFC 9051 §6.3.9: an empty pattern returns the hierarchy
		// delimiter and the root name.
		s.untagged(`LIST (\Noselect) "/" ""`)
		return s.done(c.tag, true, "LIST completed")
	}
	var pats []string
	for _, pt := range patterns {
		full, err := s.decodeName(ref + pt)
		if err != nil {
			return err
		}
		if len(full) > 1024 {
			return syntaxErr("pattern too long")
		}
		pats = append(pats, full)
	}
	mbs, err := s.srv.Store.Mailboxes(s.srv.ctx, s.account.ID)
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	exists := make(map[string]*mailstore.Mailbox, len(mbs))
	var names []string
	for i := range mbs {
		exists[mbs[i].Name] = &mbs[i]
		names = append(names, mbs[i].Name)
	}
	// Parents that do not exist themselves but have children
	// (RFC 9051 §6.3.9: \NonExistent; rev1: \Noselect).
	for _, m := range mbs {
		n := m.Name
		for {
			i := strings.LastIndexByte(n, mailstore.HierarchySeparator)
			if i <= 0 {
				break
			}
			n = n[:i]
			if _, ok := exists[n]; !ok && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	hasChildren := func(n string) bool {
		i, _ := slices.BinarySearch(names, n+"/")
		return i < len(names) && strings.HasPrefix(names[i], n+"/")
	}
	subscribedBelow := func(n string) bool {
		for _, m := range mbs {
			if m.Subscribed && strings.HasPrefix(m.Name, n+"/") {
				return true
			}
		}
		return false
	}
	for _, n := range names {
		matched := false
		for _, pt := range pats {
			if matchPattern(pt, n) {
				matched = true
				break
			}
		}
		if !matched {
			continue
		}
		m := exists[n]
		childInfo := false
		if o.selSubscribed && (m == nil || !m.Subscribed) {
			if !o.recursive || !subscribedBelow(n) {
				continue
			}
			childInfo = true
		}
		if o.selSpecialUse && (m == nil || m.SpecialUse == "") {
			continue
		}
		var attrs []string
		if m == nil {
			if o.extended || s.rev2 {
				attrs = append(attrs, `\NonExistent`)
			} else {
				attrs = append(attrs, `\Noselect`)
			}
		}
		if resp == "LIST" {
			if hasChildren(n) {
				attrs = append(attrs, `\HasChildren`)
			} else {
				attrs = append(attrs, `\HasNoChildren`)
			}
			if m != nil && m.SpecialUse != "" {
				attrs = append(attrs, m.SpecialUse)
			}
			if m != nil && m.Subscribed && (o.selSubscribed || o.retSubscribed) {
				attrs = append(attrs, `\Subscribed`)
			}
		}
		s.bw.WriteString("* " + resp + " (" + strings.Join(attrs, " ") + `) "/" `)
		s.writeName(n)
		if childInfo {
			s.bw.WriteString(` ("CHILDINFO" ("SUBSCRIBED"))`)
		}
		s.bw.WriteString("\r\n")
		if o.status != nil && m != nil {
			s.writeStatus(*m, o.status)
		}
	}
	return s.done(c.tag, true, "%s completed", resp)
}

func (s *session) cmdCreate(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	use := ""
	if s.p.consume(' ') {
		// CREATE-SPECIAL-USE (RFC 6154 §3): "(USE (\Sent))".
		err := s.p.list(false, func() error {
			a, err := s.p.atom()
			if err != nil || upper(a) != "USE" {
				return syntaxErr("unknown CREATE parameter")
			}
			if err := s.p.sp(); err != nil {
				return err
			}
			return s.p.list(false, func() error {
				f, err := s.p.flag()
				if err != nil {
					return err
				}
				if use != "" {
					return &parseError{msg: "only one special-use attribute per mailbox", code: "USEATTR", no: true}
				}
				use = f
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	if err := s.p.end(); err != nil {
		return err
	}
	if use != "" {
		ok := false
		for _, su := range []string{mailstore.SpecialSent, mailstore.SpecialDrafts, mailstore.SpecialTrash,
			mailstore.SpecialJunk, mailstore.SpecialArchive} {
			if strings.EqualFold(use, su) {
				use, ok = su, true
			}
		}
		if !ok {
			s.no(c.tag, "[USEATTR] unsupported special-use attribute")
			return nil
		}
	}
	// RFC 9051 §6.3.4: a trailing separator only says the client
	// intends to create children.
	name = strings.TrimSuffix(name, "/")
	if strings.EqualFold(name, mailstore.Inbox) {
		s.no(c.tag, "[ALREADYEXISTS] INBOX always exists")
		return nil
	}
	if full, err := s.mailboxLimitReached(c.tag); full {
		return err
	}
	if _, err := s.srv.Store.CreateMailbox(s.srv.ctx, s.account.ID, name, use); err != nil {
		return s.storeFailed(c.tag, err)
	}
	return s.done(c.tag, true, "CREATE completed")
}

func (s *session) cmdDelete(c command) error {
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
	if err := s.srv.Store.DeleteMailbox(s.srv.ctx, s.account.ID, name); err != nil {
		return s.storeFailed(c.tag, err)
	}
	s.audit(audit.Event{Event: audit.EventMailboxDelete, Mailbox: name})
	return s.done(c.tag, true, "DELETE completed")
}

func (s *session) cmdRename(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	from, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	to, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	if from == mailstore.Inbox {
		// Renaming INBOX creates the new mailbox and keeps INBOX.
		if full, err := s.mailboxLimitReached(c.tag); full {
			return err
		}
	}
	if err := s.srv.Store.RenameMailbox(s.srv.ctx, s.account.ID, from, strings.TrimSuffix(to, "/")); err != nil {
		return s.storeFailed(c.tag, err)
	}
	return s.done(c.tag, true, "RENAME completed")
}

func (s *session) cmdSubscribe(c command) error   { return s.subscribe(c, true) }
func (s *session) cmdUnsubscribe(c command) error { return s.subscribe(c, false) }

func (s *session) subscribe(c command, on bool) error {
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
	if err := s.srv.Store.SetSubscribed(s.srv.ctx, s.account.ID, name, on); err != nil {
		return s.storeFailed(c.tag, err)
	}
	return s.done(c.tag, true, "%s completed", c.name)
}

func validStatusItem(it string) bool {
	switch it {
	case "MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "RECENT", "DELETED",
		"DELETED-STORAGE":
		return true
	}
	return false
}

func (s *session) cmdStatus(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	var items []string
	err = s.p.list(false, func() error {
		it, err := s.p.atom()
		if err != nil {
			return err
		}
		it = upper(it)
		if !validStatusItem(it) {
			return syntaxErr("unknown STATUS item %q", it)
		}
		items = append(items, it)
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	mb, err := s.srv.Store.Mailbox(s.srv.ctx, s.account.ID, name)
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	s.writeStatus(mb, items)
	return s.done(c.tag, true, "STATUS completed")
}

func (s *session) writeStatus(mb mailstore.Mailbox, items []string) {
	// DELETED and DELETED-STORAGE come from one View, read once.
	var view *mailstore.MailboxView
	deleted := func() *mailstore.MailboxView {
		if view == nil {
			v, err := s.srv.Store.View(s.srv.ctx, mb.ID)
			if err != nil {
				s.log.Warn("STATUS DELETED", "mailbox", mb.Name, "err", err)
				v = mailstore.MailboxView{}
			}
			view = &v
		}
		return view
	}
	s.bw.WriteString("* STATUS ")
	s.writeName(mb.Name)
	s.bw.WriteString(" (")
	for i, it := range items {
		if i > 0 {
			s.bw.WriteByte(' ')
		}
		var v any
		switch it {
		case "MESSAGES":
			v = mb.Messages
		case "UIDNEXT":
			v = mb.UIDNext
		case "UIDVALIDITY":
			v = mb.UIDValidity
		case "UNSEEN":
			v = mb.Unseen
		case "SIZE":
			v = mb.Size
		case "HIGHESTMODSEQ":
			v = mb.HighestModSeq
		case "RECENT":
			v = 0 // \Recent is not implemented (RFC 9051 removed it)
		case "DELETED":
			// RFC 9051 §6.3.11, counted by the store's View query.
			v = deleted().Deleted
		case "DELETED-STORAGE":
			// RFC 9208 §4.1.4: what EXPUNGE would reclaim, in octets:
			// usage is the sum of message sizes, so this is exact.
			v = deleted().DeletedSize
		}
		fmt.Fprintf(s.bw, "%s %v", it, v)
	}
	s.bw.WriteString(")\r\n")
}
