package imap

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

const multipartMsg = "From: Bob <bob@example.org>\r\n" +
	"To: alice@example.org\r\n" +
	"Subject: =?utf-8?q?caf=C3=A9?=\r\n" +
	"Date: Mon, 2 Jan 2006 15:04:05 +0000\r\n" +
	"Message-ID: <m1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=XX\r\n" +
	"\r\n" +
	"preamble\r\n" +
	"--XX\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello\r\n" +
	"--XX\r\n" +
	"Content-Type: application/octet-stream; name=a.bin\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"AAECAw==\r\n" +
	"--XX--\r\n"

func TestFetch(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(multipartMsg)
	c := e.login()
	e.selectInbox(c, "a", 1, 1)
	m := e.messages()[0]
	date := m.InternalDate.Format(dateLayout)
	c.exchange("b", "FETCH 1 (UID RFC822.SIZE INTERNALDATE FLAGS)",
		fmt.Sprintf(`* 1 FETCH (UID 1 RFC822.SIZE %d INTERNALDATE "%s" FLAGS ())`, m.Size, date), "b OK FETCH completed")
	c.exchange("c", "FETCH 1 ENVELOPE",
		`* 1 FETCH (ENVELOPE ("Mon, 2 Jan 2006 15:04:05 +0000" "=?utf-8?q?caf=C3=A9?=" (("Bob" NIL "bob" "example.org")) `+
			`(("Bob" NIL "bob" "example.org")) (("Bob" NIL "bob" "example.org")) ((NIL NIL "alice" "example.org")) NIL NIL NIL "<m1@example.org>"))`,
		"c OK FETCH completed")
	c.exchange("d", "FETCH 1 BODY",
		`* 1 FETCH (BODY (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 0)`+
			`("application" "octet-stream" ("name" "a.bin") NIL NIL "base64" 8) "mixed"))`,
		"d OK FETCH completed")
	c.exchange("e", "FETCH 1 BODYSTRUCTURE",
		`* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)`+
			`("application" "octet-stream" ("name" "a.bin") NIL NIL "base64" 8 NIL NIL NIL NIL) "mixed" ("boundary" "XX") NIL NIL NIL))`,
		"e OK FETCH completed")
	c.exchange("f", "FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME] BINARY.SIZE[2] BODY.PEEK[HEADER.FIELDS (Subject message-id)])",
		"* 1 FETCH (BODY[1] {5}", "Hello BODY[2.MIME] {89}",
		"Content-Type: application/octet-stream; name=a.bin",
		"Content-Transfer-Encoding: base64", "", " BINARY.SIZE[2] 4 BODY[HEADER.FIELDS (SUBJECT MESSAGE-ID)] {64}",
		"Subject: =?utf-8?q?caf=C3=A9?=", "Message-ID: <m1@example.org>", "", ")",
		"f OK FETCH completed")
	// BINARY decodes; the literal8 carries the raw octets.
	c.send("g FETCH 1 BINARY.PEEK[2]")
	c.expect("* 1 FETCH (BINARY[2] ~{4}")
	if got := c.readN(7); got != "\x00\x01\x02\x03)\r\n" {
		t.Fatalf("BINARY[2] = %q", got)
	}
	c.expect("g OK FETCH completed")
	// Partial fetch: <origin.count>, the response names only the origin.
	c.exchange("h", "FETCH 1 BODY.PEEK[]<6.3>", "* 1 FETCH (BODY[]<6> {3}", "Bob)", "h OK FETCH completed")
	c.exchange("i", "FETCH 1 FLAGS", "* 1 FETCH (FLAGS ())", "i OK FETCH completed")
	// Without PEEK, \Seen is set and reported (RFC 9051 §6.4.5).
	got := c.cmd("j", "FETCH 1 RFC822")
	want := "* 1 FETCH (RFC822 {" + itoa(uint64(len(multipartMsg))) + "}\n" +
		strings.TrimSuffix(strings.ReplaceAll(multipartMsg, "\r\n", "\n"), "\n") + "\n FLAGS (\\Seen))\nj OK FETCH completed"
	if strings.Join(got, "\n") != want {
		t.Fatalf("RFC822:\n%q\nwant\n%q", strings.Join(got, "\n"), want)
	}
	c.exchange("k", "FETCH 1 FLAGS", `* 1 FETCH (FLAGS (\Seen))`, "k OK FETCH completed")
	c.exchange("l", "UID FETCH 1 (RFC822.HEADER)", "* 1 FETCH (UID 1 RFC822.HEADER {"+itoa(uint64(strings.Index(multipartMsg, "\r\n\r\n")+4))+"}",
		"From: Bob <bob@example.org>", "To: alice@example.org", "Subject: =?utf-8?q?caf=C3=A9?=",
		"Date: Mon, 2 Jan 2006 15:04:05 +0000", "Message-ID: <m1@example.org>", "MIME-Version: 1.0",
		"Content-Type: multipart/mixed; boundary=XX", "", ")", "l OK FETCH completed")
	c.exchange("m", "FETCH 1 FAST", fmt.Sprintf(`* 1 FETCH (FLAGS (\Seen) INTERNALDATE "%s" RFC822.SIZE %d)`, date, m.Size), "m OK FETCH completed")
	c.exchange("n", "FETCH 1 (BODY[1.2.3.HEADER]", "n BAD expected SP")
	c.exchange("o", "FETCH 1 BODY[FOO]", "o BAD bad section specifier")
	c.exchange("p", "FETCH 1 BINARY[1.TEXT]", "p BAD BINARY takes a part number only")
	c.exchange("q", "UID FETCH 5:* FLAGS", "* 1 FETCH (UID 1 FLAGS (\\Seen))", "q OK FETCH completed")
	c.exchange("r", "UID FETCH 5:6 FLAGS", "r OK FETCH completed")
	c.exchange("s", "FETCH 1 (FLAGS) (CHANGEDSINCE 1000000)", "s OK FETCH completed")
	c.exchange("t", "FETCH 1 (FLAGS) (CHANGEDSINCE 1)", fmt.Sprintf(`* 1 FETCH (FLAGS (\Seen) MODSEQ (%d))`, e.messages()[0].ModSeq), "t OK FETCH completed")
}

// TestBinaryAppendSaveDate covers APPEND of a literal8 (RFC 3516 §4.4),
// FETCH SAVEDATE and SEARCH SAVED* (RFC 8514).
func TestBinaryAppendSaveDate(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	msg := "Subject: bin\r\nContent-Transfer-Encoding: binary\r\n\r\na\x00b\r\n"
	c.send(fmt.Sprintf("a APPEND INBOX ~{%d}", len(msg)))
	c.expect("+ Ready for literal data")
	c.write(msg + "\r\n")
	c.expectPrefix("a OK [APPENDUID ")
	e.selectInbox(c, "b", 1, 1)
	m := e.messages()[0]
	c.exchange("c", "FETCH 1 (SAVEDATE BINARY.SIZE[1])",
		fmt.Sprintf(`* 1 FETCH (SAVEDATE "%s" BINARY.SIZE[1] 5)`, m.SaveDate.Format(dateLayout)), "c OK FETCH completed")
	c.send("d FETCH 1 BINARY.PEEK[1]")
	c.expect("* 1 FETCH (BINARY[1] ~{5}")
	if got := c.readN(8); got != "a\x00b\r\n)\r\n" {
		t.Fatalf("BINARY[1] = %q", got)
	}
	c.expect("d OK FETCH completed")
	// BODY[] replaces NUL with 0x80 (see package render).
	c.exchange("e", "FETCH 1 BODY.PEEK[TEXT]", "* 1 FETCH (BODY[TEXT] {5}", "a\x80b", ")", "e OK FETCH completed")
	day := m.SaveDate.Format("2-Jan-2006")
	c.exchange("f", "SEARCH SAVEDON "+day+" SAVEDATESUPPORTED", "* SEARCH 1", "f OK SEARCH completed")
	c.exchange("g", "SEARCH SAVEDBEFORE "+day, "* SEARCH", "g OK SEARCH completed")
	c.exchange("h", "SEARCH SAVEDSINCE 1-Jan-2000", "* SEARCH 1", "h OK SEARCH completed")
}

// TestFlushPerCommand checks the write policy: one socket write for a
// whole FETCH response, and one for several pipelined commands.
func TestFlushPerCommand(t *testing.T) {
	cl := &countingListener{}
	e := newEnv(t, envOptions{listener: func(l net.Listener) net.Listener { cl.Listener = l; return cl }})
	e.deliverN(50)
	c := e.login()
	e.selectInbox(c, "a", 50, 1)
	before := cl.count()
	lines := c.cmd("b", "FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)")
	if len(lines) != 51 || lines[50] != "b OK FETCH completed" {
		t.Fatalf("FETCH: %d lines, last %q", len(lines), lines[len(lines)-1])
	}
	if n := cl.count() - before; n != 1 {
		t.Fatalf("FETCH of 50 messages took %d writes, want 1", n)
	}
	before = cl.count()
	c.send("c NOOP", "d UID FETCH 1:3 FLAGS", "e NOOP")
	c.until("e")
	if n := cl.count() - before; n != 1 {
		t.Fatalf("3 pipelined commands took %d writes, want 1", n)
	}
}

// messagesCounter counts Store.Messages calls: the session must read only
// the messages a command names (MessagesInRanges) and build its view with
// View, never load the whole mailbox.
type messagesCounter struct {
	mailstore.Store
	n atomic.Int64
}

func (m *messagesCounter) Messages(ctx context.Context, mailboxID int64) ([]mailstore.Message, error) {
	m.n.Add(1)
	return m.Store.Messages(ctx, mailboxID)
}

func TestSubsetReads(t *testing.T) {
	var counter *messagesCounter
	e := newEnv(t, envOptions{wrap: func(st mailstore.Store) mailstore.Store {
		counter = &messagesCounter{Store: st}
		return counter
	}})
	e.deliverN(6)
	c := e.login()
	e.selectInbox(c, "a", 6, 1)
	c.exchange("b", `STORE 2,4 +FLAGS.SILENT (\Deleted)`, "b OK STORE completed")
	c.exchange("c", "EXPUNGE", "* 4 EXPUNGE", "* 2 EXPUNGE", "c OK EXPUNGE completed")
	// The view is now UIDs 1 3 5 6.
	c.exchange("d", "UID FETCH 1:* UID", "* 1 FETCH (UID 1)", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 5)",
		"* 4 FETCH (UID 6)", "d OK FETCH completed")
	c.exchange("e", "FETCH 2:3 UID", "* 2 FETCH (UID 3)", "* 3 FETCH (UID 5)", "e OK FETCH completed")
	c.exchange("f", "UID FETCH 2,4 UID", "f OK FETCH completed")
	c.exchange("g", "UID FETCH 4:5,1 UID", "* 1 FETCH (UID 1)", "* 3 FETCH (UID 5)", "g OK FETCH completed")
	c.exchange("h", `STORE 3:4 +FLAGS (\Flagged)`, `* 3 FETCH (FLAGS (\Flagged))`, `* 4 FETCH (FLAGS (\Flagged))`,
		"h OK STORE completed")
	for _, tc := range []struct{ query, want string }{
		{"UID SEARCH UID 2:5", "* SEARCH 3 5"},
		{"SEARCH 2:4 NOT 3", "* SEARCH 2 4"},
		{"SEARCH OR 1 4", "* SEARCH 1 4"},
		{"SEARCH (2:4 (UID 5:*))", "* SEARCH 3 4"},
		{"SEARCH 1 UID 6", "* SEARCH"},
		{"SEARCH UID 2,4", "* SEARCH"},
		{"SEARCH 2:* FLAGGED", "* SEARCH 3 4"},
		{"UID SEARCH 1:2 UNFLAGGED", "* SEARCH 1 3"},
	} {
		c.exchange("s", tc.query, tc.want, "s OK SEARCH completed")
	}
	c.exchange("i", `UID STORE 5 +FLAGS.SILENT (\Deleted)`, "i OK STORE completed")
	c.exchange("j", "UID EXPUNGE 1:3", "j OK EXPUNGE completed")
	c.exchange("k", "UID EXPUNGE 4:*", "* 3 EXPUNGE", "k OK EXPUNGE completed")
	c.exchange("l", "COPY 1:* Trash", "l OK [COPYUID "+itoa(uint64(mustValidity(e, "Trash")))+" 1,3,6 1:3] COPY completed")
	if n := counter.n.Load(); n != 0 {
		t.Errorf("Store.Messages called %d times", n)
	}
}
