package smtp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/letterbox/letterbox/internal/delivery"
)

// session is one go-smtp Session: the envelope of the current transaction.
// Mail, Rcpt, Reset and Logout run on the connection's goroutine; Data and
// LMTPData run on another goroutine for BDAT, possibly while go-smtp resets
// the transaction, hence mu and the snapshot Data takes.
type session struct {
	srv  *Server
	conn *gosmtp.Conn
	tc   *trackedConn
	log  *slog.Logger

	mu sync.Mutex
	tx *transaction

	// dataMu is held while Data/LMTPData runs, so that Reset can wait for
	// an aborted BDAT transfer's Data to return (see Reset).
	dataMu sync.Mutex
}

type transaction struct {
	from  string // RFC 5321 form, "" for the null sender
	utf8  bool   // MAIL ... SMTPUTF8
	size  int64  // MAIL ... SIZE= (RFC 1870), 0 when not declared
	helo  string
	tls   *tls.ConnectionState
	rcpts []delivery.Recipient
	keys  []string // each recipient as go-smtp passed it to Rcpt (LMTP status keys)
}

var (
	_ gosmtp.Session     = (*session)(nil)
	_ gosmtp.LMTPSession = (*session)(nil)
	_ gosmtp.AuthSession = (*session)(nil)
)

// AuthMechanisms offers none: no AUTH on the MX and LMTP ports, so EHLO
// does not advertise it.
func (s *session) AuthMechanisms() []string { return nil }

// Auth refuses every mechanism the same way, over TLS or not.
func (s *session) Auth(string) (sasl.Server, error) { return nil, gosmtp.ErrAuthUnsupported }

func reply(code int, enh gosmtp.EnhancedCode, format string, args ...any) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: code, EnhancedCode: enh, Message: fmt.Sprintf(format, args...)}
}

var (
	errTooManyRcpts = reply(452, gosmtp.EnhancedCode{4, 5, 3}, "Too many recipients")
	errNeedUTF8     = reply(553, gosmtp.EnhancedCode{5, 6, 7}, "Non-ASCII address requires SMTPUTF8")
	errBadSender    = reply(501, gosmtp.EnhancedCode{5, 1, 7}, "Bad sender address syntax")
	errBadRcpt      = reply(501, gosmtp.EnhancedCode{5, 1, 3}, "Bad destination mailbox address syntax")
	errLineTooLong  = reply(500, gosmtp.EnhancedCode{5, 5, 2}, "Line too long, message rejected, closing connection")
	errNoRcpts      = reply(503, gosmtp.EnhancedCode{5, 5, 1}, "Need MAIL and RCPT first")
	errPartial      = reply(451, gosmtp.EnhancedCode{4, 3, 0}, "Delivery failed for some recipients, try again later")
	errTemp         = reply(451, gosmtp.EnhancedCode{4, 3, 0}, "Temporary failure, try again later")
)

// replyFor maps a delivery error to the SMTP reply.
func replyFor(err error) *gosmtp.SMTPError {
	var de *delivery.Error
	if errors.As(err, &de) {
		code, enh, text := de.SMTPStatus()
		return &gosmtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
	}
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	return errTemp
}

func (s *session) Mail(from string, opts *gosmtp.MailOptions) error {
	tx := &transaction{utf8: opts.UTF8, helo: s.conn.Hostname(), size: opts.Size}
	if st, ok := s.conn.TLSConnectionState(); ok {
		tx.tls = &st
	}
	if from != "" {
		if !opts.UTF8 && !isASCII(from) {
			s.log.Info("mail rejected", "from", from, "reason", "non-ASCII without SMTPUTF8")
			return errNeedUTF8
		}
		a, err := delivery.SplitAddress(from)
		if err != nil {
			s.log.Info("mail rejected", "from", from, "reason", err.Error())
			return errBadSender
		}
		tx.from = a.String()
	}
	if lim := s.srv.Agent.MaxSize(); opts.Size > lim {
		return reply(552, gosmtp.EnhancedCode{5, 3, 4}, "Message size exceeds the maximum of %d octets", lim)
	}
	s.mu.Lock()
	s.tx = tx
	s.mu.Unlock()
	s.log.Debug("mail", "from", tx.from, "size", opts.Size, "smtputf8", opts.UTF8)
	return nil
}

func (s *session) Rcpt(to string, _ *gosmtp.RcptOptions) error {
	s.mu.Lock()
	tx := s.tx
	n := 0
	if tx != nil {
		n = len(tx.rcpts)
	}
	s.mu.Unlock()
	if tx == nil {
		return errNoRcpts
	}
	rejected := func(e *gosmtp.SMTPError, reason string) error {
		s.log.Info("rcpt rejected", "rcpt", to, "code", e.Code, "reason", reason)
		return e
	}
	if n >= s.srv.maxRecipients() {
		s.log.Warn("limit exceeded: too many recipients", "limit", "max_recipients", "max", s.srv.maxRecipients())
		return rejected(errTooManyRcpts, "too many recipients")
	}
	if !tx.utf8 && !isASCII(to) {
		return rejected(errNeedUTF8, "non-ASCII without SMTPUTF8")
	}
	addr, err := delivery.SplitAddress(to)
	if err != nil {
		return rejected(errBadRcpt, err.Error())
	}
	r, err := s.srv.Agent.ResolveAddress(s.srv.ctx, addr)
	if err != nil {
		return rejected(replyFor(err), err.Error())
	}
	// An account already too full for this message is refused now
	// (552 5.2.2 or 452 4.2.2); the store checks again at delivery.
	if err := s.srv.Agent.CheckQuota(s.srv.ctx, r, tx.size); err != nil {
		return rejected(replyFor(err), err.Error())
	}
	s.mu.Lock()
	tx.rcpts = append(tx.rcpts, r)
	tx.keys = append(tx.keys, to)
	s.mu.Unlock()
	s.log.Debug("rcpt", "rcpt", to, "account", r.Account)
	return nil
}

// deliver snapshots the transaction and hands the body to the agent.
func (s *session) deliver(r io.Reader) (*transaction, *delivery.Envelope, []error, *bodyReader) {
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	s.tc.dataBegin()
	defer s.tc.dataEnd()
	s.mu.Lock()
	var tx *transaction
	if s.tx != nil {
		snap := *s.tx
		snap.rcpts = slices.Clone(snap.rcpts)
		snap.keys = slices.Clone(snap.keys)
		tx = &snap
	}
	s.mu.Unlock()
	if tx == nil || len(tx.rcpts) == 0 {
		return nil, nil, nil, nil
	}
	env := &delivery.Envelope{
		From:       tx.from,
		Recipients: tx.rcpts,
		Protocol:   s.protocol(tx),
		Helo:       tx.helo,
		RemoteAddr: s.tc.RemoteAddr(),
		TLS:        tx.tls,
		Logger:     s.log,
	}
	body := &bodyReader{r: r}
	errs := s.srv.Agent.Deliver(s.srv.ctx, env, body)
	return tx, env, errs, body
}

// Data handles DATA and BDAT in SMTP mode: one reply, 250 only when every
// recipient's copy is durable. When only some recipients failed, the reply
// is a temporary failure: the client retries, and the recipients that got
// the message get it twice, which beats anyone losing it silently (an MX
// without an outbound queue cannot send a bounce instead).
func (s *session) Data(r io.Reader) error {
	tx, env, errs, body := s.deliver(r)
	if tx == nil {
		return errNoRcpts
	}
	if body.lineTooLong {
		s.tc.closeAfterReplies(1)
		return errLineTooLong
	}
	var firstTemp, first error
	failed := 0
	for _, err := range errs {
		if err == nil {
			continue
		}
		failed++
		if first == nil {
			first = err
		}
		var de *delivery.Error
		if firstTemp == nil && errors.As(err, &de) && de.Temporary() {
			firstTemp = err
		}
	}
	switch {
	case failed == 0:
		return s.ok(env)
	case failed < len(errs):
		return errPartial
	case firstTemp != nil:
		return replyFor(firstTemp)
	}
	return replyFor(first)
}

// LMTPData handles DATA and BDAT in LMTP mode: one reply per recipient,
// each 250 only when that recipient's copy is durable.
func (s *session) LMTPData(r io.Reader, status gosmtp.StatusCollector) error {
	tx, env, errs, body := s.deliver(r)
	if tx == nil {
		return errNoRcpts
	}
	if body.lineTooLong {
		s.tc.closeAfterReplies(len(tx.keys))
		return errLineTooLong
	}
	// A failure before the store was reached is the same for everyone;
	// returning it lets go-smtp fill in every status.
	if uniform(errs) {
		if errs[0] == nil {
			return s.ok(env)
		}
		return replyFor(errs[0])
	}
	for i, err := range errs {
		if err == nil {
			status.SetStatus(tx.keys[i], s.ok(env))
		} else {
			status.SetStatus(tx.keys[i], replyFor(err))
		}
	}
	return nil
}

func uniform(errs []error) bool {
	for _, e := range errs[1:] {
		if e != errs[0] {
			return false
		}
	}
	return true
}

// ok is the success reply; go-smtp sends an error's code and text as the
// reply, so a 250 "error" carries the delivery ID to the client.
func (s *session) ok(env *delivery.Envelope) error {
	return reply(250, gosmtp.EnhancedCode{2, 0, 0}, "Ok: delivered as %s", env.ID)
}

func (s *session) protocol(tx *transaction) string {
	p := "ESMTP"
	switch {
	case s.srv.LMTP && tx.utf8:
		p = "UTF8LMTP"
	case s.srv.LMTP:
		p = "LMTP"
	case tx.utf8:
		p = "UTF8SMTP"
	}
	if tx.tls != nil {
		p += "S"
	}
	return p
}

// Reset ends the transaction. When it aborts a BDAT transfer (RSET, EHLO,
// a 552 for an oversized chunk), go-smtp has already closed the transfer's
// pipe, and its goroutine is still in Data; Reset waits for Data to return.
// go-smtp v0.25.1's BDAT goroutine then still reads Conn fields that the
// next BDAT transaction overwrites (c.dataResult, c.bdatStatus): a data
// race in go-smtp that waiting here narrows to a few instructions but
// cannot close.
func (s *session) Reset() {
	s.dataMu.Lock()
	s.dataMu.Unlock() //nolint:staticcheck // wait for a running Data
	s.mu.Lock()
	s.tx = nil
	s.mu.Unlock()
}

func (s *session) Logout() error {
	// After STARTTLS go-smtp logs the old session out right after the
	// handshake; from now on out-of-band replies go through TLS.
	s.tc.setReply(s.conn.Conn())
	return nil
}

// bodyReader translates go-smtp's reader errors for the agent.
type bodyReader struct {
	r           io.Reader
	lineTooLong bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case errors.Is(err, gosmtp.ErrDataTooLarge):
		err = fmt.Errorf("%w: %v", delivery.ErrMessageTooLarge, err)
	case errors.Is(err, gosmtp.ErrTooLongLine):
		b.lineTooLong = true
	}
	return n, err
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
