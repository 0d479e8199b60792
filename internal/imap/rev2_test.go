package imap

import (
	"fmt"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

func TestIMAP4rev2(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(2)
	c := e.login()
	c.exchange("a", "ENABLE IMAP4rev2", "* ENABLED IMAP4rev2", "a OK ENABLE completed")
	c.exchange("b", "ENABLE IMAP4rev2", "* ENABLED", "b OK ENABLE completed")
	validity := mustValidity(e, "INBOX")
	c.exchange("c", "SELECT INBOX",
		`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)`, "* 2 EXISTS",
		fmt.Sprintf("* OK [UIDVALIDITY %d] UIDs valid", validity), "* OK [UIDNEXT 3] predicted next UID",
		`* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] flags permitted`,
		fmt.Sprintf("* OK [HIGHESTMODSEQ %d] highest modseq", mustHighest(e)),
		`* LIST () "/" "INBOX"`, "c OK [READ-WRITE] SELECT completed")
	c.exchange("d", "SEARCH ALL", `* ESEARCH (TAG "d") ALL 1:2`, "d OK SEARCH completed")
	c.exchange("e", "UID SEARCH UID 5", `* ESEARCH (TAG "e") UID`, "e OK SEARCH completed")
	// UTF-8 mailbox names (RFC 9051 §5.1).
	c.exchange("f", `CREATE "Grüße"`, "f OK CREATE completed")
	c.exchange("g", `LIST "" "Gr*"`, `* LIST (\HasNoChildren) "/" {7}`, `Grüße)`[:0]+"Grüße", "g OK LIST completed")
	c.exchange("g1", `STORE 2 +FLAGS.SILENT (\Deleted)`, "g1 OK STORE completed")
	c.exchange("g2", "STATUS INBOX (DELETED MESSAGES)", `* STATUS "INBOX" (DELETED 1 MESSAGES 2)`, "g2 OK STATUS completed")
	c.exchange("h", "EXAMINE Trash", "* OK [CLOSED] previous mailbox closed",
		`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)`, "* 0 EXISTS",
		fmt.Sprintf("* OK [UIDVALIDITY %d] UIDs valid", mustValidity(e, "Trash")), "* OK [UIDNEXT 1] predicted next UID",
		`* OK [PERMANENTFLAGS ()] read-only mailbox`,
		fmt.Sprintf("* OK [HIGHESTMODSEQ %d] highest modseq", mustMailbox(e, "Trash").HighestModSeq),
		`* LIST (\Trash) "/" "Trash"`, "h OK [READ-ONLY] EXAMINE completed")
}

func TestUTF8Accept(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	c.exchange("a", `APPEND INBOX UTF8 (~{3}`, "a BAD bad APPEND data")
	c.exchange("b", "ENABLE UTF8=ACCEPT", "* ENABLED UTF8=ACCEPT", "b OK ENABLE completed")
	c.exchange("c", `CREATE "Entwürfe"`, "c OK CREATE completed")
	msg := "Subject: Grüße\r\n\r\nx\r\n"
	c.send(fmt.Sprintf(`d APPEND "Entwürfe" UTF8 (~{%d}`, len(msg)))
	c.expect("+ Ready for literal data")
	c.write(msg + ")\r\n")
	c.expect(fmt.Sprintf("d OK [APPENDUID %d 1] APPEND completed", mustValidity(e, "Entwürfe")))
	c.exchange("e", `STATUS "Entwürfe" (MESSAGES)`, "* STATUS {9}", "Entwürfe (MESSAGES 1)", "e OK STATUS completed")
}

func mustMailbox(e *testEnv, name string) mailstore.Mailbox {
	mb, err := e.store.Mailbox(e.t.Context(), e.account.ID, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return mb
}
