package imap

import (
	"errors"
	"strconv"
	"time"

	"github.com/letterbox/letterbox/internal/connserver"
)

// Defaults of the limits that Server's zero values stand for
// (docs/configuration.md [limits]).
const (
	// DefaultWriteTimeout bounds each write: a client that takes nothing
	// for this long (its receive window full) is disconnected, so that it
	// pins neither a goroutine nor a FETCH's batch for longer.
	DefaultWriteTimeout = 5 * time.Minute
	// DefaultMaxMailboxes bounds CREATE per account, INBOX included.
	DefaultMaxMailboxes = 1000
)

// errWriteTimeout is a write that did not complete within the write
// timeout: the client stopped reading.
var errWriteTimeout = errors.New("imap: write timeout, client not reading")

// writeTimedOut ends the session of a client that stopped reading; nothing
// more can be written to it.
func (s *session) writeTimedOut() {
	s.state = stateLogout
	s.endCause = "write timeout"
	s.log.Warn("limit exceeded: client stopped reading, closing", "limit", "write_timeout",
		"max", s.srv.writeTimeout().String())
}

// refusal is the greeting of a connection over a Limiter limit
// (RFC 9051 §7.1.5: BYE as the greeting refuses the connection).
func refusal(err error) string {
	if err == connserver.ErrTooManyConnsFromAddr {
		return "* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n"
	}
	return "* BYE [UNAVAILABLE] Too many connections, try again later\r\n"
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return DefaultWriteTimeout
}

func (s *Server) maxLine() int {
	if s.MaxLineLength > 0 {
		return s.MaxLineLength
	}
	return maxLine
}

// appendLimit is the largest APPEND message, advertised as APPENDLIMIT
// (RFC 7889); it is also how much of a refused non-synchronising literal
// the server skips rather than closing the connection.
func (s *Server) appendLimit() int64 {
	if s.MaxMessageSize > 0 {
		return s.MaxMessageSize
	}
	return appendLimit
}

func (s *Server) maxMailboxes() int {
	if s.MaxMailboxes > 0 {
		return s.MaxMailboxes
	}
	return DefaultMaxMailboxes
}

func (s *Server) maxSearchText() int64 {
	if s.MaxSearchText > 0 {
		return s.MaxSearchText
	}
	return maxSearchText
}

// appendLimitCap is the APPENDLIMIT capability of this server.
func (s *Server) appendLimitCap() string {
	return "APPENDLIMIT=" + strconv.FormatInt(s.appendLimit(), 10)
}

// acquireAccountSlot takes one of the account's session slots at login. If
// the account has max_sessions_per_account sessions already, it answers
// the command NO [LIMIT] (RFC 5530: an implementation limit), logs it and
// returns false; the session stays not authenticated.
func (s *session) acquireAccountSlot(tag, account string) bool {
	release, ok := s.srv.Limiter.AcquireSession(account)
	if !ok {
		s.log.Warn("login refused: too many sessions for account", "user", account,
			"limit", "max_sessions_per_account", "max", s.srv.Limiter.MaxSessionsPerAccount)
		s.no(tag, "[LIMIT] Too many sessions for this account, try again later")
		return false
	}
	s.releaseSlot = release
	return true
}

// releaseAccountSlot gives the slot back (LOGOUT, UNAUTHENTICATE, end).
func (s *session) releaseAccountSlot() {
	if s.releaseSlot != nil {
		s.releaseSlot()
		s.releaseSlot = nil
	}
}

// mailboxLimitReached answers NO [LIMIT] and returns true when the account
// cannot have another mailbox. Concurrent CREATEs of one account can
// overshoot the limit by the number of sessions racing, no more.
func (s *session) mailboxLimitReached(tag string) (bool, error) {
	mbs, err := s.srv.Store.Mailboxes(s.srv.ctx, s.account.ID)
	if err != nil {
		return true, s.storeFailed(tag, err)
	}
	if max := s.srv.maxMailboxes(); len(mbs) >= max {
		s.log.Warn("limit exceeded: too many mailboxes", "user", s.user, "limit", "max_mailboxes_per_account", "max", max)
		s.no(tag, "[LIMIT] Too many mailboxes (at most %d)", max)
		return true, nil
	}
	return false, nil
}
