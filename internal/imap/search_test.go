package imap

import (
	"fmt"
	"testing"
)

func TestSearch(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(3) // subjects "message 1".."message 3", from Bob
	e.deliver(multipartMsg)
	e.deliver("From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nSubject: Grüße\r\nDate: Tue, 3 Jan 2006 10:00:00 +0000\r\n" +
		"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSch=F6ne Gr=FC=DFe\r\n")
	c := e.login()
	e.selectInbox(c, "a", 5, 1)
	c.exchange("b", `STORE 2,4 +FLAGS.SILENT (\Seen)`, "b OK STORE completed")
	for _, tc := range []struct{ query, want string }{
		{"ALL", "* SEARCH 1 2 3 4 5"},
		{"SEEN", "* SEARCH 2 4"},
		{"UNSEEN", "* SEARCH 1 3 5"},
		{"NOT SEEN", "* SEARCH 1 3 5"},
		{"OR 1 5", "* SEARCH 1 5"},
		{"2:4 UNSEEN", "* SEARCH 3"},
		{"(SEEN) (2:3)", "* SEARCH 2"},
		{"UID 3:*", "* SEARCH 3 4 5"},
		{`SUBJECT "MESSAGE 2"`, "* SEARCH 2"},
		{`SUBJECT "café"`, "* SEARCH 4"}, // encoded word decoded
		{`FROM "jürgen"`, "* SEARCH 5"},
		{`FROM bob`, "* SEARCH 1 2 3 4"},
		{`HEADER Message-ID <2@`, "* SEARCH 2"},
		{`HEADER Content-Transfer-Encoding ""`, "* SEARCH 5"},
		{`BODY "schöne grüße"`, "* SEARCH 5"}, // QP and ISO-8859-1 decoded
		{`BODY "of message 3"`, "* SEARCH 3"},
		{`TEXT hello`, "* SEARCH 4"},
		{`TEXT m1@example`, "* SEARCH 4"},
		{`SENTON 3-Jan-2006`, "* SEARCH 5"},
		{`SENTBEFORE 3-jan-2006`, "* SEARCH 1 2 3 4"},
		{`SINCE 1-Jan-2000 BEFORE 1-Jan-3000`, "* SEARCH 1 2 3 4 5"},
		{`BEFORE 1-Jan-2000`, "* SEARCH"},
		{`LARGER 300`, "* SEARCH 4"},
		{`SMALLER 300 NOT FROM bob`, "* SEARCH 5"},
		{`KEYWORD $Junk`, "* SEARCH"},
		{`CHARSET UTF-8 SUBJECT "grüße"`, "* SEARCH 5"},
	} {
		c.exchange("s", "SEARCH "+tc.query, tc.want, "s OK SEARCH completed")
	}
	c.exchange("u", "UID SEARCH SEEN", "* SEARCH 2 4", "u OK SEARCH completed")
	c.exchange("v", "SEARCH CHARSET KOI8-R ALL", "v NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
	c.exchange("w", "SEARCH BOGUS", `w BAD unknown search key "BOGUS"`)
	c.exchange("x", "SEARCH 9", "x BAD invalid message sequence number")
	c.exchange("y", "SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN", `* ESEARCH (TAG "y") MIN 1 MAX 5 ALL 1,3,5 COUNT 3`, "y OK SEARCH completed")
	c.exchange("z", "UID SEARCH RETURN () 1:3", `* ESEARCH (TAG "z") UID ALL 1:3`, "z OK SEARCH completed")
	c.exchange("z1", "SEARCH RETURN (COUNT) KEYWORD x", `* ESEARCH (TAG "z1") COUNT 0`, "z1 OK SEARCH completed")
	m := e.messages()
	c.exchange("z2", fmt.Sprintf("SEARCH MODSEQ %d", m[3].ModSeq), fmt.Sprintf("* SEARCH 4 (MODSEQ %d)", m[3].ModSeq), "z2 OK SEARCH completed")
}

func TestSearchRes(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(5)
	c := e.login()
	e.selectInbox(c, "a", 5, 1)
	c.exchange("b", "FETCH $ UID", "b OK FETCH completed")
	c.exchange("c", "SEARCH RETURN (SAVE) 2:4", "c OK SEARCH completed")
	c.exchange("d", "UID FETCH $ UID", "* 2 FETCH (UID 2)", "* 3 FETCH (UID 3)", "* 4 FETCH (UID 4)", "d OK FETCH completed")
	c.exchange("e", `STORE $ +FLAGS.SILENT (\Deleted)`, "e OK STORE completed")
	c.exchange("f", "UID EXPUNGE 3", "* 3 EXPUNGE", "f OK EXPUNGE completed")
	c.exchange("g", "SEARCH $", "* SEARCH 2 3", "g OK SEARCH completed")
	c.exchange("h", "SEARCH RETURN (SAVE MIN) ALL", "h OK SEARCH completed"[:0]+`* ESEARCH (TAG "h") MIN 1`, "h OK SEARCH completed")
	c.exchange("i", "COPY $ Trash", "i OK [COPYUID "+itoa(uint64(mustValidity(e, "Trash")))+" 1 1] COPY completed")
	c.exchange("j", "SEARCH RETURN (SAVE) BOGUS", `j BAD unknown search key "BOGUS"`)
	c.exchange("k", "SEARCH $", "* SEARCH", "k OK SEARCH completed")
}

func mustValidity(e *testEnv, name string) uint32 {
	mb, err := e.store.Mailbox(e.t.Context(), e.account.ID, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return mb.UIDValidity
}
