package imap

import (
	"errors"
	"io"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// maxAppendMessages bounds the messages of one APPEND (RFC 3502
// MULTIAPPEND). Each message holds an open spool, a file descriptor and a
// write buffer, until the command ends, so the bound keeps a connection's
// footprint small; a client that sends more gets NO [LIMIT] (RFC 5530) and
// nothing is appended.
const maxAppendMessages = 256

// cmdAppend answers APPEND (RFC 9051 §6.3.12) with one or more messages
// (MULTIAPPEND, RFC 3502 §6.3.11):
//
//	append         = "APPEND" SP mailbox 1*append-message
//	append-message = SP [flag-list SP] [date-time SP] append-data
//	append-data    = literal / literal8 / "UTF8" SP "(" literal8 ")"
//
// The last form is RFC 6855 §4 and needs ENABLE UTF8=ACCEPT. Each message
// is streamed from the connection into its own store spool as it arrives,
// so no message is ever held in memory; the size limit of APPENDLIMIT (RFC
// 7889) applies to each message. Only when the whole command has been read
// are the messages handed to the store, which appends all of them in one
// transaction or none (RFC 3502 §6.3.11: "If the append is unsuccessful
// for any reason (including being cancelled), the mailbox MUST be restored
// to its state before the APPEND attempt; no partial appending is
// permitted"). A command that fails part-way (bad syntax, a literal too
// large, a store error) aborts every spool and appends nothing. The tagged
// OK carries APPENDUID (UIDPLUS) with the UIDs of all messages, as a set
// (RFC 4315 §4: "append-uid =/ uid-set", for MULTIAPPEND).
func (s *session) cmdAppend(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	name, err := s.mailboxArg()
	if err != nil {
		return err
	}
	var (
		mb      mailstore.Mailbox
		msgs    []mailstore.AppendMessage
		pending int64 // octets of msgs, as literals
	)
	// Whatever way the command ends, no spool outlives it (Abort is a
	// no-op for the spools the store consumed).
	defer func() {
		for _, m := range msgs {
			m.Spool.Abort()
		}
	}()
	for {
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
		var date time.Time // zero: the store uses the time of the append
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
		if len(msgs) == 0 {
			if mb, err = s.srv.Store.Mailbox(s.srv.ctx, s.account.ID, name); err != nil {
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
		}
		// The refusals below come before the literal is acknowledged,
		// like TOOBIG in literalStart: a synchronising literal is then
		// never sent, a non-synchronising one (and the rest of the
		// command) is discarded by failCommand's skipRest, which must
		// see the literal at the end of the segment.
		if size == 0 {
			// RFC 3502 §6.3.11: "A zero-length message literal
			// argument is an error, and MUST return a NO. This can
			// be used to cancel the append."
			s.p.pos = litPos
			return &parseError{msg: "empty message, APPEND cancelled", no: true}
		}
		if len(msgs) == maxAppendMessages {
			s.p.pos = litPos
			return &parseError{msg: "too many messages in one APPEND", code: "LIMIT", no: true}
		}
		if s.quotaRefuses(pending+size, int64(len(msgs))+1) { // quota.go
			s.p.pos = litPos
			return &parseError{msg: overQuotaText, code: "OVERQUOTA", no: true}
		}
		pending += size
		sp, err := s.srv.Store.NewSpool()
		if err != nil {
			s.p.pos = litPos
			if serr := s.p.skipRest(); serr != nil {
				return serr
			}
			return s.storeFailed(c.tag, err)
		}
		msgs = append(msgs, mailstore.AppendMessage{Spool: sp, Flags: flags, Date: date})
		if err := s.p.literalStart(size, sync, s.srv.appendLimit()); err != nil {
			return err
		}
		// A long MULTIAPPEND that keeps sending is not an idle client:
		// the read deadline restarts with each message.
		if !s.armRead(s.srv.idleTimeout()) {
			return errShuttingDown
		}
		if werr, err := copyLiteral(sp, s.br, size); err != nil {
			return err
		} else if werr != nil {
			// The spool failed (a full disk): the literal was read
			// to its end; drop the rest of the command.
			if err := s.p.literalEnd(); err != nil {
				return err
			}
			if err := s.p.skipRest(); err != nil {
				return err
			}
			return s.storeFailed(c.tag, werr)
		}
		if err := s.p.literalEnd(); err != nil {
			return err
		}
		if utf8Data {
			if err := s.p.expect(')'); err != nil {
				return err
			}
		}
		if s.p.atEnd() {
			break
		}
	}
	got, err := s.srv.Store.AppendMany(s.srv.ctx, mb.ID, msgs)
	if errors.Is(err, mailstore.ErrNoSuchMailbox) {
		// Deleted while the messages arrived.
		s.no(c.tag, "[TRYCREATE] no such mailbox")
		return nil
	}
	if err != nil {
		return s.storeFailed(c.tag, err)
	}
	uids := make([]mailstore.UID, len(got))
	for i, m := range got {
		uids[i] = m.UID
	}
	// RFC 3502 §6.3.11: the new messages are reported (EXISTS) at the
	// end of the command when the mailbox is selected, by done.
	return s.done(c.tag, true, "[APPENDUID %d %s] APPEND completed", mb.UIDValidity, formatUIDSet(uids))
}

// copyLiteral copies a literal of size octets from r to the spool w. A
// failure to read is returned as err (the session cannot continue); a
// failure of the spool as werr, after the rest of the literal has been read
// and discarded, so that the session stays in step with the client.
func copyLiteral(w io.Writer, r io.Reader, size int64) (werr, err error) {
	ew := &errWriter{w: w}
	lr := &io.LimitedReader{R: r, N: size}
	_, err = io.Copy(ew, lr)
	if ew.err != nil {
		// lr.N counts what was not read yet (not what was not
		// written): that is what remains of the literal.
		if _, err := io.CopyN(io.Discard, r, lr.N); err != nil {
			return nil, err
		}
		return ew.err, nil
	}
	if err == nil && lr.N > 0 {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// errWriter remembers the error of its writer, to tell it from one of the
// reader in io.Copy.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
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
