package imap

import (
	"fmt"
	"strings"
	"testing"
)

func TestQresync(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(5)
	c := e.login()
	validity := mustValidity(e, "INBOX")
	c.exchange("a", fmt.Sprintf("SELECT INBOX (QRESYNC (%d 1))", validity), "a BAD QRESYNC is not enabled")
	c.exchange("b", "ENABLE QRESYNC", "* ENABLED QRESYNC", "b OK ENABLE completed")
	e.selectInbox(c, "c", 5, 1)
	before := e.messages()[4].ModSeq
	c.exchange("d", `STORE 2:3 +FLAGS.SILENT (\Deleted)`, fmt.Sprintf("* 2 FETCH (UID 2 MODSEQ (%d))", before+1),
		fmt.Sprintf("* 3 FETCH (UID 3 MODSEQ (%d))", before+2), "d OK STORE completed")
	c.exchange("e", "EXPUNGE", "* VANISHED 2:3", "e OK EXPUNGE completed")
	c.exchange("f", `STORE 3 +FLAGS.SILENT (\Seen)`, fmt.Sprintf("* 3 FETCH (UID 5 MODSEQ (%d))", mustHighest(e)+1), "f OK STORE completed")
	// Another session expunges: VANISHED, not EXPUNGE.
	b := e.login()
	e.selectInbox(b, "b1", 3, 1)
	h0 := mustHighest(e)
	b.exchange("b2", `UID STORE 4 +FLAGS.SILENT (\Deleted)`, "b2 OK STORE completed")
	b.exchange("b3", "UID EXPUNGE 4", "* 2 EXPUNGE", "b3 OK EXPUNGE completed")
	c.exchange("g", "NOOP", fmt.Sprintf(`* 2 FETCH (UID 4 FLAGS (\Deleted) MODSEQ (%d))`, h0+1), "* VANISHED 4", "g OK NOOP completed")
	// Resynchronisation: SELECT with the old MODSEQ.
	lines := c.cmd("h", fmt.Sprintf("SELECT INBOX (QRESYNC (%d %d 1:10))", validity, before))
	got := strings.Join(lines, "\n")
	want := fmt.Sprintf("* OK [CLOSED] previous mailbox closed\n"+
		"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n* 2 EXISTS\n* 0 RECENT\n* OK [UNSEEN 1] first unseen message\n"+
		"* OK [UIDVALIDITY %d] UIDs valid\n* OK [UIDNEXT 6] predicted next UID\n"+
		"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] flags permitted\n"+
		"* OK [HIGHESTMODSEQ %d] highest modseq\n* VANISHED (EARLIER) 2:4\n* 2 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (%d))\n"+
		"h OK [READ-WRITE] SELECT completed", validity, mustHighest(e), e.messages()[1].ModSeq)
	if got != want {
		t.Fatalf("SELECT QRESYNC:\n%s\nwant:\n%s", got, want)
	}
	c.exchange("i", fmt.Sprintf("UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)", before),
		"* VANISHED (EARLIER) 2:4", fmt.Sprintf(`* 2 FETCH (UID 5 FLAGS (\Seen) MODSEQ (%d))`, e.messages()[1].ModSeq), "i OK FETCH completed")
	c.exchange("j", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", "j BAD VANISHED needs UID FETCH with CHANGEDSINCE and QRESYNC enabled")
}

func mustHighest(e *testEnv) uint64 {
	mb, err := e.store.Mailbox(e.t.Context(), e.account.ID, "INBOX")
	if err != nil {
		e.t.Fatal(err)
	}
	return mb.HighestModSeq
}

// TestQresyncMoveAndIdle: MOVE reports VANISHED, and another session in
// IDLE gets VANISHED for the moved messages.
func TestQresyncMoveAndIdle(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(3)
	a := e.login()
	b := e.login()
	a.exchange("a1", "ENABLE QRESYNC", "* ENABLED QRESYNC", "a1 OK ENABLE completed")
	b.exchange("b1", "ENABLE QRESYNC", "* ENABLED QRESYNC", "b1 OK ENABLE completed")
	e.selectInbox(a, "a2", 3, 1)
	e.selectInbox(b, "b2", 3, 1)
	b.send("b3 IDLE")
	b.expect("+ idling")
	a.exchange("a3", "MOVE 1:2 Trash",
		fmt.Sprintf("* OK [COPYUID %d 1:2 1:2] Moved", mustValidity(e, "Trash")), "* VANISHED 1:2", "a3 OK MOVE completed")
	b.expect("* VANISHED 1:2")
	b.send("DONE")
	b.expect("b3 OK IDLE terminated")
	b.exchange("b4", "FETCH 1 UID", "* 1 FETCH (UID 3)", "b4 OK FETCH completed")
}
