package pop3

import (
	"errors"
	"io"
	"strconv"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// This file holds the TRANSACTION and UPDATE state commands (RFC 1939 §5,
// §6, §7).

// message resolves a message-number argument. It answers -ERR itself and
// returns nil for a malformed or unknown number or a deleted message.
func (s *session) message(arg string) (int, *msgEntry) {
	n, ok := parseNumber(arg)
	if !ok {
		s.fail("invalid message number")
		return 0, nil
	}
	if n == 0 || n > uint64(len(s.msgs)) {
		s.fail("no such message")
		return 0, nil
	}
	m := &s.msgs[n-1]
	if m.deleted {
		s.fail("message %d already deleted", n)
		return 0, nil
	}
	return int(n), m
}

// size returns the size RETR announces for m: the blob plus the line end
// added after a body that does not end in CRLF (see the package doc).
func (s *session) size(m *msgEntry) int64 {
	if m.fix < 0 {
		s.computeFix(m, nil)
	}
	return m.msg.Size + int64(max(m.fix, 0))
}

// computeFix reads the last two octets of m's body. b is the open blob, or
// nil to open it here. A failure leaves fix unknown (it is retried later)
// and counts the blob as ending in CRLF for now; RETR reports the failure.
func (s *session) computeFix(m *msgEntry, b mailstore.Blob) {
	if m.msg.Size == 0 {
		m.fix = 0
		return
	}
	if b == nil {
		var err error
		b, err = s.srv.Store.OpenBlob(s.srv.ctx, m.msg.BlobID)
		if err != nil {
			s.log.Warn("cannot open message body", "uid", m.msg.UID, "err", err)
			return
		}
		defer b.Close()
	}
	size := b.Size()
	if size != m.msg.Size {
		s.log.Warn("message body size differs from the recorded size", "uid", m.msg.UID,
			"recorded", m.msg.Size, "blob", size)
	}
	var tail [2]byte
	k := min(size, 2)
	if k <= 0 {
		m.fix = 0
		return
	}
	if _, err := b.ReadAt(tail[:k], size-k); err != nil && !errors.Is(err, io.EOF) {
		s.log.Warn("cannot read message body", "uid", m.msg.UID, "err", err)
		return
	}
	m.fix = int8(len(lineEndFix(tail[:k])))
}

// totals returns the number and total size of the messages not marked as
// deleted.
func (s *session) totals() (n int, size int64) {
	for i := range s.msgs {
		if m := &s.msgs[i]; !m.deleted {
			n++
			size += s.size(m)
		}
	}
	return n, size
}

func (s *session) cmdSTAT(cmd command) {
	if len(cmd.args) != 0 {
		s.fail("syntax error")
		return
	}
	n, size := s.totals()
	s.ok("%d %d", n, size)
}

func (s *session) cmdLIST(cmd command) {
	switch len(cmd.args) {
	case 0:
		n, size := s.totals()
		s.ok("%s (%d octets)", plural(n, "message"), size)
		for i := range s.msgs {
			if m := &s.msgs[i]; !m.deleted {
				s.line("%d %d", i+1, s.size(m))
			}
		}
		s.end()
	case 1:
		if n, m := s.message(cmd.args[0]); m != nil {
			s.ok("%d %d", n, s.size(m))
		}
	default:
		s.fail("syntax error")
	}
}

// uidl is the unique-id of a message (RFC 1939 §7): "<UIDVALIDITY>.<UID>",
// 3 to 21 characters from 0x30-0x39 and '.'.
func (s *session) uidl(m *msgEntry) (uint32, mailstore.UID) {
	return s.mailbox.UIDValidity, m.msg.UID
}

func (s *session) cmdUIDL(cmd command) {
	switch len(cmd.args) {
	case 0:
		s.ok("unique-id listing follows")
		for i := range s.msgs {
			if m := &s.msgs[i]; !m.deleted {
				v, u := s.uidl(m)
				s.line("%d %d.%d", i+1, v, u)
			}
		}
		s.end()
	case 1:
		if n, m := s.message(cmd.args[0]); m != nil {
			v, u := s.uidl(m)
			s.ok("%d %d.%d", n, v, u)
		}
	default:
		s.fail("syntax error")
	}
}

// openBody opens the body of m for RETR or TOP, answering -ERR on failure.
func (s *session) openBody(n int, m *msgEntry) mailstore.Blob {
	b, err := s.srv.Store.OpenBlob(s.srv.ctx, m.msg.BlobID)
	if err != nil {
		s.log.Error("cannot open message body", "user", s.account, "uid", m.msg.UID, "err", err)
		s.fail("[SYS/TEMP] cannot read message %d", n)
		return nil
	}
	return b
}

// sendBody streams a multi-line response body. A failure after the +OK
// line cannot be reported in the protocol, so it ends the session: the
// client then sees a response without its terminating line instead of a
// silently truncated message.
func (s *session) sendBody(b mailstore.Blob, lim *topLimiter) bool {
	d := newDotWriter(s.bw)
	err := streamBody(d, b, lim)
	if err == nil {
		err = d.Close()
	}
	if err != nil {
		s.log.Warn("sending message failed", "user", s.account, "err", err)
		s.quit, s.endCause = true, "transfer failed"
		return false
	}
	return true
}

func (s *session) cmdRETR(cmd command) {
	if len(cmd.args) != 1 {
		s.fail("syntax error")
		return
	}
	n, m := s.message(cmd.args[0])
	if m == nil {
		return
	}
	b := s.openBody(n, m)
	if b == nil {
		return
	}
	defer b.Close()
	s.auditRead(m, "RETR "+cmd.args[0])
	if m.fix < 0 {
		s.computeFix(m, b)
	}
	s.ok("%d octets", s.size(m))
	if !s.sendBody(b, nil) {
		return
	}
	s.nretr++
	if !m.seen {
		// RETR marks the message read for IMAP; TOP does not.
		if s.seen == nil {
			s.seen = &seenMarker{store: s.srv.Store, mailbox: s.mailbox.ID, log: s.log.With("user", s.account)}
		}
		s.seen.mark(s.srv.ctx, m.msg.UID)
		m.seen = true
	}
}

func (s *session) cmdTOP(cmd command) {
	if len(cmd.args) != 2 {
		s.fail("syntax error")
		return
	}
	n, m := s.message(cmd.args[0])
	if m == nil {
		return
	}
	lines, ok := parseNumber(cmd.args[1])
	if !ok {
		s.fail("invalid number of lines")
		return
	}
	b := s.openBody(n, m)
	if b == nil {
		return
	}
	defer b.Close()
	s.auditRead(m, "TOP "+cmd.args[0]+" "+cmd.args[1])
	s.ok("top of message follows")
	if s.sendBody(b, &topLimiter{lines: lines}) {
		s.ntop++
	}
}

func (s *session) cmdDELE(cmd command) {
	if len(cmd.args) != 1 {
		s.fail("syntax error")
		return
	}
	n, m := s.message(cmd.args[0])
	if m == nil {
		return
	}
	m.deleted = true
	s.ndele++
	s.ok("message %d deleted", n)
}

func (s *session) cmdNOOP(cmd command) {
	if len(cmd.args) != 0 {
		s.fail("syntax error")
		return
	}
	s.ok("")
}

func (s *session) cmdRSET(cmd command) {
	if len(cmd.args) != 0 {
		s.fail("syntax error")
		return
	}
	for i := range s.msgs {
		s.msgs[i].deleted = false
	}
	s.ndele = 0
	n, size := s.totals()
	s.ok("maildrop has %s (%d octets)", plural(n, "message"), size)
}

// cmdQUIT enters the UPDATE state (RFC 1939 §6): the messages marked as
// deleted are expunged in one atomic, durable store call before +OK is
// sent; if that fails nothing is deleted and the answer is -ERR. Either way
// the lock is released and the session ends.
func (s *session) cmdQUIT(cmd command) {
	if len(cmd.args) != 0 {
		s.fail("syntax error")
		return
	}
	s.quit, s.endCause = true, "quit"
	// The \Seen marks are durable before +OK, like the deletions.
	s.seen.wait()
	var uids []mailstore.UID
	for i := range s.msgs {
		if s.msgs[i].deleted {
			uids = append(uids, s.msgs[i].msg.UID)
		}
	}
	if len(uids) > 0 {
		removed, err := s.srv.Store.Expunge(s.srv.ctx, s.mailbox.ID, uids)
		if err != nil {
			s.releaseMaildrop()
			s.log.Error("expunge failed", "user", s.account, "messages", len(uids), "err", err)
			s.fail("[SYS/TEMP] some deleted messages not removed")
			return
		}
		s.nexpunged = len(removed)
		s.auditDeleted(removed)
	}
	// The expunge is durable: release the lock before answering, so that
	// a client reconnecting right after +OK finds the maildrop free.
	s.releaseMaildrop()
	s.log.Info("quit", "user", s.account, "retr", s.nretr, "dele", len(uids), "expunged", s.nexpunged)
	s.ok("%s Letterbox POP3 server signing off (%s deleted)", s.srv.hostname, plural(len(uids), "message"))
}

// plural formats "1 message", "2 messages".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
