package imap

import (
	"strconv"
	"strings"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// QUOTA (RFC 9208). Each account has at most one quota root, named ""
// (RFC 9208 §3.2: root names are opaque; the RFC's own examples use ""),
// which governs every mailbox of the account. It exists while the account
// has a limit (mailstore.Usage.Limited): an account without limits has no
// quota root, so GETQUOTAROOT lists none and GETQUOTA "" is NO, as
// Dovecot does for a user without quota rules. The resources are STORAGE
// (RFC 9208 §5.1, in units of 1024 octets) and MESSAGE (§5.2), each listed
// only when it has a limit. Limits are set by the administrator (`letterbox
// user quota`), never by users: SETQUOTA is refused and QUOTASET, which
// announces SETQUOTA (RFC 9208 §1, §4.1.3), is not advertised. The
// capabilities (auth.go) are QUOTA and one QUOTA=RES-<name> per resource
// (RFC 9208 §3.1.1).
//
// Enforcement is the store's (mailstore.ErrOverQuota, checked in the
// transaction that adds the messages): APPEND and COPY that would exceed a
// limit get "NO [OVERQUOTA]" (RFC 9208 §4.3.1, RFC 5530 §3) from
// storeFailed (APPEND also before each literal, quotaRefuses); MOVE never
// does, it does not change the usage.

// overQuotaText follows the OVERQUOTA response code.
const overQuotaText = "quota exceeded (mailbox is full)"

// quotaRefuses reports whether the account has no room for bytes more
// octets in n more messages. APPEND asks before it acknowledges each
// literal, so that a client is refused before it uploads a message that
// cannot be stored (a stored message is never smaller than its literal:
// the spool only adds CRs); the store checks again, exactly, when it
// appends. A failed lookup refuses nothing.
func (s *session) quotaRefuses(bytes, n int64) bool {
	u, err := s.srv.Store.Usage(s.srv.ctx, s.account.ID)
	return err == nil && !u.Allows(bytes, n)
}

// quotaRoot is the name of the account's only quota root.
const quotaRoot = ""

// kibibytes converts octets to the units of STORAGE, rounding up, as
// Dovecot does (quota_get_resource: (value + 1023) / 1024): a mailbox with
// a few octets in it never reads as empty, and a limit below 1024 octets
// never reads as 0.
func kibibytes(octets int64) int64 { return (octets + 1023) / 1024 }

// writeQuota writes the untagged QUOTA response (RFC 9208 §4.2.1) of the
// account's root; u must be Limited.
func (s *session) writeQuota(u mailstore.Usage) {
	var res []string
	if u.QuotaBytes > 0 {
		res = append(res, "STORAGE "+strconv.FormatInt(kibibytes(u.Bytes), 10)+" "+strconv.FormatInt(kibibytes(u.QuotaBytes), 10))
	}
	if u.QuotaMessages > 0 {
		res = append(res, "MESSAGE "+strconv.FormatInt(u.Messages, 10)+" "+strconv.FormatInt(u.QuotaMessages, 10))
	}
	s.bw.WriteString("* QUOTA ")
	writeString(s.bw, quotaRoot)
	s.bw.WriteString(" (" + strings.Join(res, " ") + ")\r\n")
}

// cmdGetQuotaRoot answers GETQUOTAROOT mailbox (RFC 9208 §4.1.2): the
// QUOTAROOT response, and QUOTA for each root listed.
func (s *session) cmdGetQuotaRoot(c command) error {
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
	mb, err := s.srv.Store.Mailbox(s.srv.ctx, s.account.ID, name)
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	u, err := s.srv.Store.Usage(s.srv.ctx, s.account.ID)
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	s.bw.WriteString("* QUOTAROOT ")
	s.writeName(mb.Name)
	if u.Limited() {
		s.bw.WriteByte(' ')
		writeString(s.bw, quotaRoot)
		s.bw.WriteString("\r\n")
		s.writeQuota(u)
	} else {
		s.bw.WriteString("\r\n")
	}
	return s.done(c.tag, true, "GETQUOTAROOT completed")
}

// cmdGetQuota answers GETQUOTA root (RFC 9208 §4.1.1).
func (s *session) cmdGetQuota(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	root, err := s.p.astring()
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	u, err := s.srv.Store.Usage(s.srv.ctx, s.account.ID)
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	if root != quotaRoot || !u.Limited() {
		s.no(c.tag, "[NONEXISTENT] no such quota root")
		return nil
	}
	s.writeQuota(u)
	return s.done(c.tag, true, "GETQUOTA completed")
}

// cmdSetQuota parses SETQUOTA (RFC 9208 §4.1.3, §7:
//
//	setquota      = "SETQUOTA" SP quota-root-name SP setquota-list
//	setquota-list = "(" [setquota-resource *(SP setquota-resource)] ")"
//	setquota-resource = resource-name SP resource-limit
//
// ) and refuses it: quotas are the administrator's.
func (s *session) cmdSetQuota(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	if _, err := s.p.astring(); err != nil {
		return err
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	err := s.p.list(true, func() error {
		if _, err := s.p.atom(); err != nil {
			return err
		}
		if err := s.p.sp(); err != nil {
			return err
		}
		_, err := s.p.number(63)
		return err
	})
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	s.no(c.tag, "[NOPERM] quotas are set by the administrator")
	return nil
}
