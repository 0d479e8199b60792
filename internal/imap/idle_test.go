package imap

import (
	"context"
	"testing"
	"time"
)

func TestIdleSeesOtherSessions(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(1)
	a := e.login()
	b := e.login()
	e.selectInbox(a, "a1", 1, 1)
	e.selectInbox(b, "b1", 1, 1)
	a.send("a2 IDLE")
	a.expect("+ idling")
	start := time.Now()
	e.deliverN(1) // a delivery (as SMTP/LMTP would make it)
	a.expect("* 2 EXISTS")
	b.exchange("b2", `STORE 1 +FLAGS (\Flagged)`, `* 1 FETCH (FLAGS (\Flagged))`, "* 2 EXISTS", "b2 OK STORE completed")
	a.expect(`* 1 FETCH (UID 1 FLAGS (\Flagged))`)
	b.exchange("b3", `STORE 1 +FLAGS.SILENT (\Deleted)`, "b3 OK STORE completed")
	a.expect(`* 1 FETCH (UID 1 FLAGS (\Deleted \Flagged))`)
	b.exchange("b4", "EXPUNGE", "* 1 EXPUNGE", "b4 OK EXPUNGE completed")
	a.expect("* 1 EXPUNGE")
	if d := time.Since(start); d > time.Second {
		t.Errorf("changes took %v to arrive", d)
	}
	a.send("DONE")
	a.expect("a2 OK IDLE terminated")
	a.exchange("a3", "UID FETCH 1:* UID", "* 1 FETCH (UID 2)", "a3 OK FETCH completed")
}

func TestUpdatesAtCommandEnd(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(3)
	a := e.login()
	b := e.login()
	e.selectInbox(a, "a1", 3, 1)
	e.selectInbox(b, "b1", 3, 1)
	b.exchange("b2", `STORE 2 +FLAGS.SILENT (\Deleted)`, "b2 OK STORE completed")
	b.exchange("b3", "EXPUNGE", "* 2 EXPUNGE", "b3 OK EXPUNGE completed")
	e.deliverN(1)
	// FETCH by sequence number: no EXPUNGE (RFC 9051 §7.5.1); the
	// flag change and the new message are reported.
	a.exchange("a2", "FETCH 1 UID", "* 1 FETCH (UID 1)", `* 2 FETCH (UID 2 FLAGS (\Deleted))`, "* 4 EXISTS", "a2 OK FETCH completed")
	a.exchange("a3", "NOOP", "* 2 EXPUNGE", "a3 OK NOOP completed")
	a.exchange("a4", "UID FETCH 1:* UID", "* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 4)", "a4 OK FETCH completed")
	// Own changes are not reported twice.
	a.exchange("a5", `STORE 1 +FLAGS (\Seen)`, `* 1 FETCH (FLAGS (\Seen))`, "a5 OK STORE completed")
	a.exchange("a6", "NOOP", "a6 OK NOOP completed")
	// APPEND to the selected mailbox is reported as EXISTS.
	a.write("a7 APPEND INBOX {3+}\r\nx\r\n\r\n")
	a.expect("* 4 EXISTS")
	a.expectPrefix("a7 OK [APPENDUID ")
}

func TestShutdownDuringIdle(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.login()
	a.send("a1 IDLE")
	a.expect("+ idling")
	b := e.login()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	a.expect("* BYE server shutting down")
	a.expectEOF()
	b.expect("* BYE server shutting down")
	b.expectEOF()
}
