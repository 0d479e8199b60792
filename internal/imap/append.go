package imap

import (
	"errors"
	"io"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// cmdAppend answers APPEND (RFC 9051 §6.3.12) with APPENDUID (UIDPLUS) and
// the size limit of APPENDLIMIT (RFC 7889). The message is streamed from
// the connection into a store spool; it is never held in memory.
func (s *session) cmdAppend(c command) error {
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
	var flags []string
	if s.p.peek() == '(' {
		if flags, err = s.p.flagList(); err != nil {
			return err
		}
		if err := s.p.sp(); err != nil {
			return err
		}
	}
	date := time.Now()
	if s.p.peek() == '"' {
		ds, err := s.p.quoted()
		if err != nil {
			return err
		}
		if date, err = parseDateTime(ds); err != nil {
			return syntaxErr("bad date-time")
		}
		if err := s.p.sp(); err != nil {
			return err
		}
	}
	if flags, err = mailstore.CanonicalFlags(flags); err != nil {
		return syntaxErr("invalid flag")
	}
	utf8Data := false
	if s.p.peek() == 'U' || s.p.peek() == 'u' {
		// RFC 6855 §4: APPEND ... UTF8 (literal8).
		a, err := s.p.atom()
		if err != nil || upper(a) != "UTF8" || !s.utf8 {
			return syntaxErr("bad APPEND data")
		}
		if err := s.p.sp(); err != nil {
			return err
		}
		if err := s.p.expect('('); err != nil {
			return err
		}
		if s.p.peek() != '~' {
			return syntaxErr("UTF8 APPEND needs a literal8")
		}
		utf8Data = true
	}
	litPos := s.p.pos
	size, sync, err := s.p.literalHeader()
	if err != nil {
		return err
	}
	mb, err := s.srv.Store.Mailbox(s.srv.ctx, s.account.ID, name)
	if err != nil {
		// Refuse before the client sends the message; a
		// non-synchronising literal is read and discarded.
		s.p.pos = litPos // keep the literal visible to skipRest
		if serr := s.p.skipRest(); serr != nil {
			return serr
		}
		if errors.Is(err, mailstore.ErrNoSuchMailbox) {
			s.no(c.tag, "[TRYCREATE] no such mailbox")
			return nil
		}
		return s.storeFailed(c.tag, err)
	}
	if err := s.p.literalStart(size, sync, appendLimit); err != nil {
		return err
	}
	sp, err := s.srv.Store.NewSpool()
	if err != nil {
		// The literal must still be consumed to stay in step.
		if _, derr := io.CopyN(io.Discard, s.br, size); derr != nil {
			return derr
		}
		if err := s.p.literalEnd(); err != nil {
			return err
		}
		s.p.pos = len(s.p.line)
		return s.storeFailed(c.tag, err)
	}
	defer sp.Abort()
	if _, err := io.CopyN(sp, s.br, size); err != nil {
		return err
	}
	if err := s.p.literalEnd(); err != nil {
		return err
	}
	if utf8Data {
		if err := s.p.expect(')'); err != nil {
			return err
		}
	}
	if err := s.p.end(); err != nil {
		return err // MULTIAPPEND is not supported
	}
	msg, err := s.srv.Store.Append(s.srv.ctx, mb.ID, sp, flags, date)
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	return s.done(c.tag, true, "[APPENDUID %d %d] APPEND completed", mb.UIDValidity, msg.UID)
}

// parseDateTime parses an IMAP date-time (RFC 9051 §9), whose day may be
// padded with a space.
func parseDateTime(s string) (time.Time, error) {
	for _, layout := range []string{"_2-Jan-2006 15:04:05 -0700", "2-Jan-2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, errors.New("bad date-time")
}

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return string(b[i:])
}
