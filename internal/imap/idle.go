package imap

import (
	"errors"
	"strings"
)

// cmdIdle answers IDLE (RFC 2177): changes are pushed as they are
// committed, until the client sends DONE.
func (s *session) cmdIdle(c command) error {
	if err := s.p.end(); err != nil {
		return err
	}
	s.bw.WriteString("+ idling\r\n")
	s.update(true)
	if err := s.bw.Flush(); err != nil {
		return err
	}
	if !s.armRead(s.srv.idleTimeout()) {
		return errShuttingDown
	}
	done := make(chan error, 1)
	go func() { done <- s.p.readSegment() }()
	for {
		select {
		case <-s.sub.Ready():
			s.update(true)
			if err := s.bw.Flush(); err != nil {
				s.Interrupt()
				<-done
				return err
			}
			if s.state == stateLogout {
				s.Interrupt()
				<-done
				return nil
			}
		case err := <-done:
			if err != nil {
				var pe *parseError
				if errors.As(err, &pe) && !pe.fatal {
					s.bad(c.tag, "expected DONE")
					return nil
				}
				return err
			}
			if !strings.EqualFold(string(s.p.line), "DONE") {
				s.p.pos = len(s.p.line)
				s.bad(c.tag, "expected DONE")
				return nil
			}
			s.p.pos = len(s.p.line)
			return s.done(c.tag, true, "IDLE terminated")
		}
	}
}
