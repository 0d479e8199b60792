package imap

import (
	"fmt"
	"strings"
	"testing"
)

// selectInbox selects INBOX and checks the exact responses.
func (e *testEnv) selectInbox(c *conn, tag string, exists int, firstUnseen int) {
	e.t.Helper()
	mb, err := e.store.Mailbox(e.t.Context(), e.account.ID, "INBOX")
	if err != nil {
		e.t.Fatal(err)
	}
	want := []string{
		`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)`,
		fmt.Sprintf("* %d EXISTS", exists),
		"* 0 RECENT",
	}
	if firstUnseen > 0 {
		want = append(want, fmt.Sprintf("* OK [UNSEEN %d] first unseen message", firstUnseen))
	}
	want = append(want,
		fmt.Sprintf("* OK [UIDVALIDITY %d] UIDs valid", mb.UIDValidity),
		fmt.Sprintf("* OK [UIDNEXT %d] predicted next UID", mb.UIDNext),
		`* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] flags permitted`,
		fmt.Sprintf("* OK [HIGHESTMODSEQ %d] highest modseq", mb.HighestModSeq),
		tag+" OK [READ-WRITE] SELECT completed")
	c.exchange(tag, "SELECT INBOX", want...)
}

func TestSelectExamineClose(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(2)
	c := e.login()
	e.selectInbox(c, "a", 2, 1)
	c.exchange("b", "STORE 1 +FLAGS (\\Deleted)", `* 1 FETCH (FLAGS (\Deleted))`, "b OK STORE completed")
	c.exchange("c", "UNSELECT", "c OK UNSELECT completed")
	c.exchange("d", "EXPUNGE", "d BAD no mailbox selected")
	lines := c.cmd("e", "EXAMINE INBOX")
	if got := lines[len(lines)-1]; got != "e OK [READ-ONLY] EXAMINE completed" {
		t.Fatalf("EXAMINE: %q", got)
	}
	if !contains(lines, "* OK [PERMANENTFLAGS ()] read-only mailbox") {
		t.Fatalf("EXAMINE: %q", lines)
	}
	c.exchange("f", "STORE 1 +FLAGS (\\Seen)", "f NO [READ-ONLY] mailbox is read-only")
	c.exchange("g", "EXPUNGE", "g NO [READ-ONLY] mailbox is read-only")
	// CLOSE on a read-only mailbox does not expunge.
	c.exchange("h", "CLOSE", "h OK CLOSE completed")
	if n := len(e.messages()); n != 2 {
		t.Fatalf("%d messages after CLOSE of EXAMINE, want 2", n)
	}
	e.selectInbox(c, "i", 2, 1)
	c.exchange("j", "CLOSE", "j OK CLOSE completed")
	if ms := e.messages(); len(ms) != 1 || ms[0].UID != 2 {
		t.Fatalf("after CLOSE: %+v", ms)
	}
	c.exchange("k", "SELECT Nope", "k NO [NONEXISTENT] no such mailbox")
	c.exchange("l", "CHECK", "l BAD no mailbox selected")
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

func TestExpunge(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(5)
	c := e.login()
	e.selectInbox(c, "a", 5, 1)
	c.exchange("b", `STORE 2,4:5 +FLAGS.SILENT (\Deleted)`, "b OK STORE completed")
	// UID EXPUNGE removes only the named \Deleted messages (RFC 4315).
	c.exchange("c", "UID EXPUNGE 1:4", "* 4 EXPUNGE", "* 2 EXPUNGE", "c OK EXPUNGE completed")
	c.exchange("d", "UID FETCH 1:* (FLAGS)",
		"* 1 FETCH (UID 1 FLAGS ())", "* 2 FETCH (UID 3 FLAGS ())", `* 3 FETCH (UID 5 FLAGS (\Deleted))`,
		"d OK FETCH completed")
	c.exchange("e", "EXPUNGE", "* 3 EXPUNGE", "e OK EXPUNGE completed")
	c.exchange("f", "FETCH 3 UID", "f BAD invalid message sequence number")
	c.exchange("g", "CHECK", "g OK CHECK completed")
}

func TestStore(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(3)
	c := e.login()
	e.selectInbox(c, "a", 3, 1)
	c.exchange("b", `STORE 1:2 +FLAGS (\Seen $Label1)`,
		`* 1 FETCH (FLAGS ($Label1 \Seen))`, `* 2 FETCH (FLAGS ($Label1 \Seen))`, "b OK STORE completed")
	c.exchange("c", `UID STORE 2 -FLAGS $label1`, `* 2 FETCH (FLAGS (\Seen) UID 2)`, "c OK STORE completed")
	c.exchange("d", `STORE 3 FLAGS (\Flagged \Answered)`, `* 3 FETCH (FLAGS (\Answered \Flagged))`, "d OK STORE completed")
	c.exchange("e", `STORE 3 FLAGS.SILENT ()`, "e OK STORE completed")
	c.exchange("f", `STORE 1 +FLAGS (\Bogus)`, "f BAD invalid flag")
	c.exchange("g", `STORE 4 +FLAGS (\Seen)`, "g BAD invalid message sequence number")
	c.exchange("h", `STORE 1 +FLAGS (\Recent)`, `* 1 FETCH (FLAGS ($Label1 \Seen))`, "h OK STORE completed")
	ms := e.messages()
	got := fmt.Sprint(ms[0].Flags, ms[1].Flags, ms[2].Flags)
	if got != `[$Label1 \Seen] [\Seen] []` {
		t.Fatalf("flags in store: %s", got)
	}
	// CONDSTORE: UNCHANGEDSINCE with MODIFIED (RFC 7162 §3.1.3).
	m1 := ms[0].ModSeq
	got2 := c.cmd("i", fmt.Sprintf(`STORE 1:2 (UNCHANGEDSINCE %d) +FLAGS (\Flagged)`, m1))
	want2 := []string{fmt.Sprintf(`* 1 FETCH (FLAGS ($Label1 \Flagged \Seen) MODSEQ (%d))`, e.messages()[0].ModSeq),
		"i OK [MODIFIED 2] conditional STORE failed"}
	if fmt.Sprintf("%q", got2) != fmt.Sprintf("%q", want2) {
		t.Fatalf("UNCHANGEDSINCE: got %q, want %q", got2, want2)
	}
	c.exchange("j", "FETCH 1 (MODSEQ)", fmt.Sprintf("* 1 FETCH (MODSEQ (%d))", e.messages()[0].ModSeq), "j OK FETCH completed")
}

func TestCopyMove(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(4)
	c := e.login()
	trash, _ := e.store.Mailbox(t.Context(), e.account.ID, "Trash")
	e.selectInbox(c, "a", 4, 1)
	c.exchange("b", "COPY 1:2 Trash", fmt.Sprintf("b OK [COPYUID %d 1:2 1:2] COPY completed", trash.UIDValidity))
	c.exchange("c", "COPY 1 Nope", "c NO [TRYCREATE] no such mailbox")
	c.exchange("d", "UID MOVE 2:3 Trash",
		fmt.Sprintf("* OK [COPYUID %d 2:3 3:4] Moved", trash.UIDValidity),
		"* 3 EXPUNGE", "* 2 EXPUNGE", "d OK MOVE completed")
	c.exchange("e", "UID FETCH 1:* UID", "* 1 FETCH (UID 1)", "* 2 FETCH (UID 4)", "e OK FETCH completed")
	c.exchange("f", "UID COPY 99 Trash", "f OK COPY completed, nothing to do")
	c.exchange("g", "STATUS Trash (MESSAGES UIDNEXT)", `* STATUS "Trash" (MESSAGES 4 UIDNEXT 5)`, "g OK STATUS completed")
	c.exchange("h", "MOVE 2 Trash",
		fmt.Sprintf("* OK [COPYUID %d 4 5] Moved", trash.UIDValidity), "* 2 EXPUNGE", "h OK MOVE completed")
}

func TestAppend(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	mb, _ := e.store.Mailbox(t.Context(), e.account.ID, "Drafts")
	msg := "Subject: draft\r\n\r\nHello\r\n"
	c.send(fmt.Sprintf(`a APPEND Drafts (\Draft \Seen) " 7-Feb-2024 10:11:12 +0100" {%d}`, len(msg)))
	c.expect("+ Ready for literal data")
	c.write(msg + "\r\n")
	c.expect(fmt.Sprintf("a OK [APPENDUID %d 1] APPEND completed", mb.UIDValidity))
	// LITERAL+ and bare-LF normalisation by the spool.
	c.write("b APPEND Drafts {5+}\r\nx\n\ny\n\r\n")
	c.expect(fmt.Sprintf("b OK [APPENDUID %d 2] APPEND completed", mb.UIDValidity))
	c.exchange("c", "APPEND Nope {3}", "c NO [TRYCREATE] no such mailbox")
	c.write("d APPEND Nope {3+}\r\nabc\r\n")
	c.expect("d NO [TRYCREATE] no such mailbox")
	c.exchange("e", fmt.Sprintf("APPEND Drafts {%d}", appendLimit+1), "e NO [TOOBIG] literal too large")
	c.exchange("f", `APPEND Drafts "bad date" {3}`, "f BAD bad date-time")
	c.exchange("g", "NOOP", "g OK NOOP completed")
	ms, err := e.store.Messages(t.Context(), mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || fmt.Sprint(ms[0].Flags) != `[\Draft \Seen]` || ms[0].InternalDate.UTC().Format(dateLayout) != "07-Feb-2024 09:11:12 +0000" {
		t.Fatalf("appended: %+v", ms)
	}
	c.exchange("h", "SELECT Drafts", strings.Split(selectDraftsWant(e, mb.UIDValidity), "\n")...)
	c.exchange("i", "FETCH 1:2 (INTERNALDATE RFC822.SIZE BODY.PEEK[])",
		fmt.Sprintf(`* 1 FETCH (INTERNALDATE "07-Feb-2024 09:11:12 +0000" RFC822.SIZE %d BODY[] {%d}`, len(msg), len(msg)),
		"Subject: draft", "", "Hello", ")",
		strings.Split("* 2 FETCH (INTERNALDATE \""+ms[1].InternalDate.Format(dateLayout)+"\" RFC822.SIZE 8 BODY[] {8}\r\nx\r\n\r\ny\r\n)", "\r\n")[0],
		"x", "", "y", ")", "i OK FETCH completed")
}

func selectDraftsWant(e *testEnv, validity uint32) string {
	mb, _ := e.store.Mailbox(e.t.Context(), e.account.ID, "Drafts")
	return strings.Join([]string{
		`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)`,
		"* 2 EXISTS", "* 0 RECENT", "* OK [UNSEEN 2] first unseen message",
		fmt.Sprintf("* OK [UIDVALIDITY %d] UIDs valid", validity),
		"* OK [UIDNEXT 3] predicted next UID",
		`* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] flags permitted`,
		fmt.Sprintf("* OK [HIGHESTMODSEQ %d] highest modseq", mb.HighestModSeq),
		"h OK [READ-WRITE] SELECT completed"}, "\n")
}
