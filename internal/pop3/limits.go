package pop3

import (
	"time"

	"github.com/letterbox/letterbox/internal/connserver"
)

// DefaultWriteTimeout bounds each write: a client that takes nothing for
// this long (its receive window full) is disconnected, so that it does not
// pin a goroutine and its buffers for longer (docs/configuration.md
// [limits] write_timeout).
const DefaultWriteTimeout = 5 * time.Minute

// refusal is the greeting of a connection over a Limiter limit: -ERR as the
// greeting refuses the connection; [SYS/TEMP] (RFC 3206) says it is a
// temporary condition of the server, not of the client's credentials.
func refusal(err error) string {
	if err == connserver.ErrTooManyConnsFromAddr {
		return "-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n"
	}
	return "-ERR [SYS/TEMP] Too many connections, try again later\r\n"
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return DefaultWriteTimeout
}

// acquireAccountSlot takes one of the account's session slots at login; if
// the account has max_sessions_per_account IMAP and POP3 sessions already,
// it answers -ERR [SYS/TEMP], logs it and returns false.
func (s *session) acquireAccountSlot(account string) bool {
	release, ok := s.srv.Limiter.AcquireSession(account)
	if !ok {
		s.log.Warn("login refused: too many sessions for account", "user", account,
			"limit", "max_sessions_per_account", "max", s.srv.Limiter.MaxSessionsPerAccount)
		s.fail("[SYS/TEMP] Too many sessions for this account, try again later")
		return false
	}
	s.releaseSlot = release
	return true
}

func (s *session) releaseAccountSlot() {
	if s.releaseSlot != nil {
		s.releaseSlot()
		s.releaseSlot = nil
	}
}
