package imap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

// Messages of the MULTIAPPEND tests: CRLF line endings (so that the stored
// bytes equal the sent ones), 8-bit text, a dot line.
const (
	maBody1 = "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: one\r\n\r\nFirst body.\r\n"
	maBody2 = "From: Bob <bob@example.org>\r\nSubject: two\r\n\r\nSecond body: caf\xc3\xa9\r\n"
	maBody3 = "Subject: three\r\nContent-Type: text/plain\r\n\r\nThird\r\n.\r\nbody\r\n"
)

// expectStatus checks MESSAGES and UIDNEXT of a mailbox over c.
func expectStatus(c *conn, tag, name string, messages int, uidNext mailstore.UID) {
	c.t.Helper()
	c.exchange(tag, "STATUS "+name+" (MESSAGES UIDNEXT)",
		fmt.Sprintf(`* STATUS "%s" (MESSAGES %d UIDNEXT %d)`, name, messages, uidNext), tag+" OK STATUS completed")
}

// expectNoSpools checks that no spool file is left in the store's spool
// directory: every message of a failed APPEND was discarded.
func (e *testEnv) expectNoSpools() {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.store.Dir(), sqlite.BlobDir, "tmp"))
	if err != nil {
		e.t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, d := range ents {
			names = append(names, d.Name())
		}
		e.t.Fatalf("spool files left behind: %v", names)
	}
}

// fetchBodies fetches UID, FLAGS, INTERNALDATE, RFC822.SIZE and BODY[] of
// sequence numbers 1..len(want) in the selected mailbox and checks every
// octet.
func fetchBodies(c *conn, tag string, want []string, flags []string, dates []string) {
	c.t.Helper()
	c.send(fmt.Sprintf("%s FETCH 1:%d (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])", tag, len(want)))
	for i, body := range want {
		c.expect(fmt.Sprintf(`* %d FETCH (UID %d FLAGS (%s) INTERNALDATE "%s" RFC822.SIZE %d BODY[] {%d}`,
			i+1, i+1, flags[i], dates[i], len(body), len(body)))
		if got := c.readN(len(body)); got != body {
			c.t.Fatalf("message %d: BODY[] = %q, want %q", i+1, got, body)
		}
		c.expect(")")
	}
	c.expect(tag + " OK FETCH completed")
}

// TestMultiAppend appends three messages with different flags and dates in
// one APPEND with synchronising literals (RFC 3502): one continuation
// request per literal, one APPENDUID with the set of the three UIDs (RFC
// 4315 §4), the bodies byte-exact, flags and INTERNALDATE as sent.
func TestMultiAppend(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	validity := mustValidity(e, "Archive")

	before := time.Now().Add(-time.Second)
	c.send(fmt.Sprintf(`a APPEND Archive (\Seen \flagged) " 7-Feb-2024 10:11:12 +0100" {%d}`, len(maBody1)))
	c.expect("+ Ready for literal data")
	c.send(maBody1 + fmt.Sprintf(" {%d}", len(maBody2)))
	c.expect("+ Ready for literal data")
	c.send(maBody2 + fmt.Sprintf(` ($Label \Draft) "31-Dec-1999 23:59:59 -0800" {%d}`, len(maBody3)))
	c.expect("+ Ready for literal data")
	c.send(maBody3)
	c.expect(fmt.Sprintf("a OK [APPENDUID %d 1:3] APPEND completed", validity))
	after := time.Now().Add(time.Second)

	mb := mustMailbox(e, "Archive")
	ms, err := e.store.Messages(t.Context(), mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 || mb.UIDNext != 4 {
		t.Fatalf("Archive after MULTIAPPEND: %+v, %d messages", mb, len(ms))
	}
	// The message without a date-time gets the time of the append.
	if d := ms[1].InternalDate; d.Before(before) || d.After(after) {
		t.Fatalf("INTERNALDATE of the message without date-time: %v", d)
	}
	c.exchange("b", "SELECT Archive",
		`* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Label)`,
		"* 3 EXISTS", "* 0 RECENT", "* OK [UNSEEN 2] first unseen message",
		fmt.Sprintf("* OK [UIDVALIDITY %d] UIDs valid", validity),
		"* OK [UIDNEXT 4] predicted next UID",
		`* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Label \*)] flags permitted`,
		fmt.Sprintf("* OK [HIGHESTMODSEQ %d] highest modseq", mb.HighestModSeq),
		"b OK [READ-WRITE] SELECT completed")
	fetchBodies(c, "c", []string{maBody1, maBody2, maBody3},
		[]string{`\Flagged \Seen`, "", `$Label \Draft`},
		[]string{"07-Feb-2024 09:11:12 +0000", ms[1].InternalDate.Format(dateLayout), "01-Jan-2000 07:59:59 +0000"})
	// Each message has its own MODSEQ, ascending (as three APPENDs).
	if !(ms[0].ModSeq < ms[1].ModSeq && ms[1].ModSeq < ms[2].ModSeq && ms[2].ModSeq == mb.HighestModSeq) {
		t.Fatalf("MODSEQs %d %d %d, HIGHESTMODSEQ %d", ms[0].ModSeq, ms[1].ModSeq, ms[2].ModSeq, mb.HighestModSeq)
	}
	// A single APPEND still answers with one UID.
	c.write("d APPEND Archive {5+}\r\nhello\r\n")
	c.expect("* 4 EXISTS")
	c.expect(fmt.Sprintf("d OK [APPENDUID %d 4] APPEND completed", validity))
	e.expectNoSpools()
}

// TestMultiAppendLiteralForms mixes non-synchronising (LITERAL+, RFC 7888)
// and synchronising literals, a literal8 (RFC 3516) and, after ENABLE
// UTF8=ACCEPT, the UTF8 (literal8) form of RFC 6855 §4, in one command each.
func TestMultiAppendLiteralForms(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	validity := mustValidity(e, "INBOX")

	// LITERAL+ first: no continuation request until the synchronising
	// second literal; the third is a non-synchronising literal8.
	c.write(fmt.Sprintf("a APPEND INBOX (\\Seen) {%d+}\r\n%s {%d}\r\n", len(maBody1), maBody1, len(maBody2)))
	c.expect("+ Ready for literal data")
	c.write(fmt.Sprintf("%s ~{%d+}\r\n%s\r\n", maBody2, len(maBody3), maBody3))
	c.expect(fmt.Sprintf("a OK [APPENDUID %d 1:3] APPEND completed", validity))

	// All three non-synchronising: one round trip, no continuation.
	c.write(fmt.Sprintf("b APPEND INBOX {%d+}\r\n%s (\\Answered) {%d+}\r\n%s\r\n", len(maBody3), maBody3, len(maBody1), maBody1))
	c.expect(fmt.Sprintf("b OK [APPENDUID %d 4:5] APPEND completed", validity))

	// RFC 6855 §4 needs ENABLE UTF8=ACCEPT, also for the second message.
	c.write(fmt.Sprintf("c APPEND INBOX {%d+}\r\n%s UTF8 (~{%d+}\r\n%s)\r\n", len(maBody1), maBody1, len(maBody2), maBody2))
	c.expect("c BAD bad APPEND data")
	c.exchange("d", "ENABLE UTF8=ACCEPT", "* ENABLED UTF8=ACCEPT", "d OK ENABLE completed")
	c.write(fmt.Sprintf("e APPEND INBOX UTF8 (~{%d+}\r\n%s) (\\Flagged) UTF8 (~{%d}\r\n", len(maBody1), maBody1, len(maBody2)))
	c.expect("+ Ready for literal data")
	c.write(maBody2 + ")\r\n")
	c.expect(fmt.Sprintf("e OK [APPENDUID %d 6:7] APPEND completed", validity))

	e.selectInbox(c, "f", 7, 2)
	body := []string{maBody1, maBody2, maBody3, maBody3, maBody1, maBody1, maBody2}
	flags := []string{`\Seen`, "", "", "", `\Answered`, "", `\Flagged`}
	var dates []string
	for _, m := range e.messages() {
		dates = append(dates, m.InternalDate.Format(dateLayout))
	}
	fetchBodies(c, "g", body, flags, dates)
	e.expectNoSpools()
}

// failingAppendMany is a store whose AppendMany fails without consuming
// the spools, to check that the session discards them itself.
type failingAppendMany struct {
	mailstore.Store
}

func (f *failingAppendMany) AppendMany(context.Context, int64, []mailstore.AppendMessage) ([]mailstore.Message, error) {
	return nil, errors.New("injected AppendMany failure")
}

// TestMultiAppendAllOrNothing: whatever makes a MULTIAPPEND fail part-way,
// no message is appended (RFC 3502 §6.3.11: "no partial appending is
// permitted"), MESSAGES and UIDNEXT stay as they were, every spool is
// discarded, and the connection goes on with the next command.
func TestMultiAppendAllOrNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(1)
	c := e.login()
	unchanged := func(tag string) {
		t.Helper()
		expectStatus(c, tag, "INBOX", 1, 2)
		e.expectNoSpools()
	}
	unchanged("s0")

	// The second literal is too large (synchronising): NO [TOOBIG]
	// before the client sends it (RFC 7888 §4, RFC 7889).
	c.send(fmt.Sprintf("a APPEND INBOX {%d}", len(maBody1)))
	c.expect("+ Ready for literal data")
	c.send(maBody1 + fmt.Sprintf(" (\\Seen) {%d}", appendLimit+1))
	c.expect("a NO [TOOBIG] literal too large")
	unchanged("s1")

	// A bad date-time in the second message, whose non-synchronising
	// literal and a third message follow: all read and dropped.
	c.write(fmt.Sprintf("b APPEND INBOX {%d+}\r\n%s (\\Seen) \"31-Foo-2024 00:00:00 +0000\" {%d+}\r\n%s {%d+}\r\n%s\r\n",
		len(maBody1), maBody1, len(maBody2), maBody2, len(maBody3), maBody3))
	c.expect("b BAD bad date-time")
	unchanged("s2")

	// An invalid flag in the third message.
	c.write(fmt.Sprintf("c APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s (\\Recent) {%d+}\r\n%s\r\n",
		len(maBody1), maBody1, len(maBody2), maBody2, len(maBody3), maBody3))
	c.expect("c BAD invalid flag")
	unchanged("s3")

	// Garbage instead of the next message.
	c.write(fmt.Sprintf("d APPEND INBOX {%d+}\r\n%s x {%d+}\r\n%s\r\n", len(maBody1), maBody1, len(maBody2), maBody2))
	c.expect("d BAD expected literal")
	unchanged("s4")

	// A zero-length literal cancels the whole APPEND (RFC 3502
	// §6.3.11), synchronising or not.
	c.send(fmt.Sprintf("e APPEND INBOX {%d}", len(maBody1)))
	c.expect("+ Ready for literal data")
	c.send(maBody1 + " {0}")
	c.expect("e NO empty message, APPEND cancelled")
	c.write(fmt.Sprintf("f APPEND INBOX {%d+}\r\n%s {0+}\r\n {%d+}\r\n%s\r\n", len(maBody1), maBody1, len(maBody2), maBody2))
	c.expect("f NO empty message, APPEND cancelled")
	c.exchange("g", "APPEND INBOX {0}", "g NO empty message, APPEND cancelled")
	unchanged("s5")

	// More messages than maxAppendMessages: NO [LIMIT] (RFC 5530).
	var b strings.Builder
	b.WriteString("h APPEND INBOX")
	for range maxAppendMessages + 1 {
		b.WriteString(" {1+}\r\nx")
	}
	b.WriteString(" {1+}\r\ny\r\n") // after the refused one: discarded too
	c.write(b.String())
	c.expect("h NO [LIMIT] too many messages in one APPEND")
	unchanged("s6")

	// The mailbox is deleted by another session while the messages
	// arrive: the commit finds it gone and appends nothing.
	c.exchange("i", "CREATE Work", "i OK CREATE completed")
	c.send(fmt.Sprintf("j APPEND Work {%d}", len(maBody1)))
	c.expect("+ Ready for literal data")
	other := e.login()
	other.exchange("k", "DELETE Work", "k OK DELETE completed")
	c.send(maBody1 + fmt.Sprintf(" {%d}", len(maBody2)))
	c.expect("+ Ready for literal data")
	c.send(maBody2)
	c.expect("j NO [TRYCREATE] no such mailbox")
	c.exchange("l", "CREATE Work", "l OK CREATE completed")
	expectStatus(c, "m", "Work", 0, 1)
	unchanged("s7")

	c.exchange("n", "NOOP", "n OK NOOP completed")
	if ms := e.messages(); len(ms) != 1 {
		t.Fatalf("INBOX has %d messages, want the 1 delivered", len(ms))
	}
}

// TestMultiAppendStoreFailure: the store refuses the batch; the session
// answers NO, discards every spool itself and stays usable.
func TestMultiAppendStoreFailure(t *testing.T) {
	e := newEnv(t, envOptions{wrap: func(st mailstore.Store) mailstore.Store { return &failingAppendMany{st} }})
	c := e.login()
	c.write(fmt.Sprintf("a APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n", len(maBody1), maBody1, len(maBody2), maBody2))
	c.expect("a NO [SERVERBUG] internal server error")
	e.expectNoSpools()
	expectStatus(c, "b", "INBOX", 0, 1)
}

// TestMultiAppendTooBigNonSync: a non-synchronising literal above
// APPENDLIMIT cannot be skipped (it exceeds what the server discards), so
// the connection is closed (RFC 7888 §4); the earlier messages of the
// command are not appended.
func TestMultiAppendTooBigNonSync(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.login()
	c.write(fmt.Sprintf("a APPEND INBOX {%d+}\r\n%s {%d+}\r\n", len(maBody1), maBody1, appendLimit+1))
	c.expect("a BAD [TOOBIG] literal too large")
	c.expect("* BYE literal too large")
	c.expectEOF()
	e.waitSessionEnd()
	if ms := e.messages(); len(ms) != 0 {
		t.Fatalf("INBOX has %d messages after a failed MULTIAPPEND", len(ms))
	}
	e.expectNoSpools()
}

// TestMultiAppendIdle: a session in IDLE on the mailbox sees the messages
// of a MULTIAPPEND at once, as one EXISTS (they are committed, and
// published, together); the appending session, with the mailbox selected,
// gets the EXISTS before its tagged OK (RFC 3502 §6.3.11).
func TestMultiAppendIdle(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(1)
	a := e.login()
	b := e.login()
	e.selectInbox(a, "a1", 1, 1)
	e.selectInbox(b, "b1", 1, 1)
	a.send("a2 IDLE")
	a.expect("+ idling")
	b.write(fmt.Sprintf("b2 APPEND INBOX {%d+}\r\n%s (\\Seen) {%d+}\r\n%s {%d+}\r\n%s\r\n",
		len(maBody1), maBody1, len(maBody2), maBody2, len(maBody3), maBody3))
	b.expect("* 4 EXISTS")
	b.expect(fmt.Sprintf("b2 OK [APPENDUID %d 2:4] APPEND completed", mustValidity(e, "INBOX")))
	a.expect("* 4 EXISTS")
	a.send("DONE")
	a.expect("a2 OK IDLE terminated")
	a.exchange("a3", "UID FETCH 2:* (UID FLAGS)",
		"* 2 FETCH (UID 2 FLAGS ())", `* 3 FETCH (UID 3 FLAGS (\Seen))`, "* 4 FETCH (UID 4 FLAGS ())", "a3 OK FETCH completed")
}

// brokenSpool is a spool whose writes fail (a full disk).
type brokenSpool struct{ mailstore.Spool }

func (brokenSpool) Write([]byte) (int, error) {
	return 0, errors.New("injected: no space left on device")
}

// brokenSecondSpool hands out a broken spool for every second message.
type brokenSecondSpool struct {
	mailstore.Store
	n int
}

func (b *brokenSecondSpool) NewSpool() (mailstore.Spool, error) {
	sp, err := b.Store.NewSpool()
	if err != nil {
		return nil, err
	}
	b.n++
	if b.n%2 == 0 {
		return brokenSpool{sp}, nil
	}
	return sp, nil
}

// TestMultiAppendSpoolFails: writing the second message to its spool fails
// (say, the disk is full). The rest of that literal and of the command is
// read and dropped, nothing is appended, and the session goes on.
func TestMultiAppendSpoolFails(t *testing.T) {
	e := newEnv(t, envOptions{wrap: func(st mailstore.Store) mailstore.Store { return &brokenSecondSpool{Store: st} }})
	c := e.login()
	big := strings.Repeat("0123456789abcdef", 10000) // several reads of the copy loop
	c.write(fmt.Sprintf("a APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s {%d+}\r\n%s\r\n",
		len(maBody1), maBody1, len(big), big, len(maBody3), maBody3))
	c.expect("a NO [SERVERBUG] internal server error")
	e.expectNoSpools()
	expectStatus(c, "b", "INBOX", 0, 1)
	// The third spool is a working one again: a single APPEND succeeds.
	c.write("c APPEND INBOX {5+}\r\nhello\r\n")
	c.expect(fmt.Sprintf("c OK [APPENDUID %d 1] APPEND completed", mustValidity(e, "INBOX")))
}

// TestCopyLiteralStaysInStep: when the spool fails part-way, copyLiteral
// consumes exactly the literal, however much of it the copy loop had read.
func TestCopyLiteralStaysInStep(t *testing.T) {
	lit := strings.Repeat("x", 100000)
	for _, failAt := range []int{0, 1, 40000, 99999} {
		r := strings.NewReader(lit + "NEXT")
		w := &failAfter{n: failAt}
		werr, err := copyLiteral(w, r, int64(len(lit)))
		if err != nil || werr == nil {
			t.Fatalf("fail at %d: werr %v, err %v", failAt, werr, err)
		}
		if rest, _ := io.ReadAll(r); string(rest) != "NEXT" {
			t.Fatalf("fail at %d: %d octets left after the literal, want 4", failAt, len(rest))
		}
	}
	// A short read is an error of the connection.
	if _, err := copyLiteral(io.Discard, strings.NewReader("abc"), 4); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short literal: %v", err)
	}
}

// failAfter accepts n octets, then fails (with a short write).
type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) <= f.n {
		f.n -= len(p)
		return len(p), nil
	}
	k := f.n
	f.n = 0
	return k, errors.New("injected write failure")
}
