package imap

// Integration tests with go-imap v2's client (imapclient), an independent
// IMAP implementation, doing what a desktop client such as Thunderbird does:
// capabilities, LIST with special-use and LIST-STATUS, SELECT with
// CONDSTORE, UID FETCH of the message list and of bodies, STORE seen from a
// second session, IDLE, APPEND, MOVE, UID EXPUNGE, ESEARCH, mailbox
// management. go-imap decodes every response itself (ENVELOPE,
// BODYSTRUCTURE, literals, response codes), so the assertions below compare
// its decoded values with values derived from the messages by hand.
//
// go-imap is a test-only dependency: it is imported from _test.go files
// only.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

// giAltMsg is a multipart/alternative message as mail clients send it: a
// quoted-printable text/plain part (with a soft line break) and an 8bit
// text/html part, RFC 2047 words in Subject and Cc, In-Reply-To.
const giAltMsg = "From: \"Bob Example\" <bob@example.org>\r\n" +
	"To: Alice <alice@example.org>, carol@example.net\r\n" +
	"Cc: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\n" +
	"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from the team\r\n" +
	"Date: Tue, 3 Feb 2026 10:11:12 +0100\r\n" +
	"Message-ID: <alt-1@example.org>\r\n" +
	"In-Reply-To: <parent@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=\"alt-boundary\"\r\n" +
	"\r\n" +
	"--alt-boundary\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Gr=C3=BC=C3=9Fe!\r\n" + // 18 octets with CRLF
	"Second line, with a trailing space =\r\n" + // 38
	"and a soft break.\r\n" + // 17 + the CRLF that belongs to the boundary
	"--alt-boundary\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"<html><body><p>Grüße!</p></body></html>\r\n" + // 41 octets (ü, ß are 2 each)
	"--alt-boundary--\r\n"

// giAttPayload is the attachment of giAttMsg: every byte value, then some text.
var giAttPayload = append(func() []byte {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}(), "%PDF-1.4 end\n"...)

// giAttBase64 is giAttPayload in base64 with 76-character lines, as MIME
// writers produce it: 269 octets encode to 360 characters, in 5 lines.
func giAttBase64() string {
	enc := base64.StdEncoding.EncodeToString(giAttPayload)
	var b strings.Builder
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	return b.String()
}

// giAttMsg is a multipart/mixed message with a PDF attachment whose file name
// is non-ASCII: RFC 2231 continuations with a charset in
// Content-Disposition (as Thunderbird writes long names), an RFC 2047 word
// in the Content-Type name parameter (as many clients still do).
var giAttMsg = "From: Carol <carol@example.net>\r\n" +
	"To: alice@example.org\r\n" +
	"Subject: Quarterly rates\r\n" +
	"Date: Wed, 4 Feb 2026 08:00:00 +0000\r\n" +
	"Message-ID: <att-2@example.net>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"mixed-b\"\r\n" +
	"\r\n" +
	"This is a multi-part message in MIME format.\r\n" +
	"--mixed-b\r\n" +
	"Content-Type: text/plain; charset=us-ascii\r\n" +
	"\r\n" +
	"See the attached file.\r\n" + // 22 octets + the boundary's CRLF
	"--mixed-b\r\n" +
	"Content-Type: application/pdf; name=\"=?utf-8?q?=E2=82=AC_quarterly_rates.pdf?=\"\r\n" +
	"Content-Disposition: attachment;\r\n" +
	" filename*0*=utf-8''%E2%82%AC%20quarterly%20;\r\n" +
	" filename*1=rates.pdf\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"Content-Description: rates table\r\n" +
	"\r\n" +
	giAttBase64() + // 5 lines, 368 octets without the boundary's CRLF
	"--mixed-b--\r\n"

// giTranscript collects a client's protocol transcript (written by its reader
// goroutine and by command writers) for failure messages.
type giTranscript struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *giTranscript) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *giTranscript) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// giUnilateral records a client's unilateral responses on channels, so that a
// test waits for them with a timeout instead of sleeping.
type giUnilateral struct {
	t       *testing.T
	exists  chan uint32
	expunge chan uint32
	fetch   chan *imapclient.FetchMessageBuffer
}

func newGIUnilateral(t *testing.T) *giUnilateral {
	return &giUnilateral{
		t:       t,
		exists:  make(chan uint32, 100),
		expunge: make(chan uint32, 100),
		fetch:   make(chan *imapclient.FetchMessageBuffer, 100),
	}
}

func (u *giUnilateral) handler() *imapclient.UnilateralDataHandler {
	return &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) { u.expunge <- seq },
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				u.exists <- *d.NumMessages
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			// Runs on its own goroutine; it must consume the items.
			buf, err := msg.Collect()
			if err != nil {
				u.t.Errorf("unilateral FETCH: %v", err)
			}
			u.fetch <- buf
		},
	}
}

// giWait receives one value or fails the test after ioTimeout.
func giWait[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(ioTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// giExpectNone checks that nothing is queued on ch. The caller has already
// waited for a tagged response that follows anything the server would send;
// go-imap reports EXISTS and EXPUNGE before it completes that command, but
// hands a unilateral FETCH to a new goroutine, so for FETCH this can miss a
// late one (it never fails wrongly).
func giExpectNone[T any](t *testing.T, what string, ch <-chan T) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %+v", what, v)
	default:
	}
}

// giClient is a go-imap client connected to the test server.
type giClient struct {
	*imapclient.Client
	t   *testing.T
	log *giTranscript
	u   *giUnilateral
}

// dialGo connects a go-imap client without logging in.
func (e *testEnv) dialGo(opts *imapclient.Options) *giClient {
	e.t.Helper()
	u := newGIUnilateral(e.t)
	log := &giTranscript{}
	if opts == nil {
		opts = &imapclient.Options{}
	}
	opts.DebugWriter = log
	opts.UnilateralDataHandler = u.handler()
	var c *imapclient.Client
	var err error
	switch {
	case opts.TLSConfig != nil && e.srv.TLSConfig != nil:
		c, err = imapclient.DialStartTLS(e.addr, opts)
	case opts.TLSConfig != nil:
		c, err = imapclient.DialTLS(e.addr, opts)
	default:
		c, err = imapclient.DialInsecure(e.addr, opts)
	}
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	g := &giClient{Client: c, t: e.t, log: log, u: u}
	e.t.Cleanup(func() {
		c.Close()
		if e.t.Failed() {
			e.t.Logf("go-imap transcript:\n%s", log)
		}
	})
	if err := c.WaitGreeting(); err != nil {
		e.t.Fatalf("greeting: %v", err)
	}
	return g
}

// loginGo connects a go-imap client and logs in with LOGIN.
func (e *testEnv) loginGo() *giClient {
	e.t.Helper()
	g := e.dialGo(nil)
	g.must("LOGIN", g.Login(testUser, testPassword).Wait())
	return g
}

func (g *giClient) must(what string, err error) {
	g.t.Helper()
	if err != nil {
		g.t.Fatalf("%s: %v", what, err)
	}
}

func (g *giClient) selectBox(name string, opts *imap.SelectOptions) *imap.SelectData {
	g.t.Helper()
	d, err := g.Select(name, opts).Wait()
	g.must("SELECT "+name, err)
	return d
}

func (g *giClient) fetch(set imap.NumSet, opts *imap.FetchOptions) []*imapclient.FetchMessageBuffer {
	g.t.Helper()
	msgs, err := g.Fetch(set, opts).Collect()
	g.must("FETCH "+set.String(), err)
	return msgs
}

// giIMAPError asserts that err is an IMAP status response of the given type
// and code.
func giIMAPError(t *testing.T, what string, err error, typ imap.StatusResponseType, code imap.ResponseCode) {
	t.Helper()
	var ie *imap.Error
	if !errors.As(err, &ie) || ie.Type != typ || ie.Code != code {
		t.Fatalf("%s: got error %v, want %s [%s]", what, err, typ, code)
	}
}

func giCaps(caps string) imap.CapSet {
	s := imap.CapSet{}
	for _, c := range strings.Fields(caps) {
		s[imap.Cap(c)] = struct{}{}
	}
	return s
}

func giSortedAttrs(a []imap.MailboxAttr) []imap.MailboxAttr {
	a = slices.Clone(a)
	slices.Sort(a)
	return a
}

// giSameFlags compares flag lists as sets: their order carries no meaning.
func giSameFlags(got []imap.Flag, want ...imap.Flag) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

func giU32(v uint32) *uint32 { return &v }
func giI64(v int64) *int64   { return &v }

func giUIDs(uids ...imap.UID) imap.UIDSet {
	var s imap.UIDSet
	for _, u := range uids {
		s.AddNum(u)
	}
	return s
}

func TestIMAPClientLoginCapabilityList(t *testing.T) {
	e := newEnv(t, envOptions{})
	bodies := e.deliverN(3)
	g := e.dialGo(nil)
	// The greeting carries the capabilities (RFC 9051 §7.1.1): go-imap
	// takes them from there without a CAPABILITY command.
	if got, want := g.Caps(), giCaps(wantCaps+" AUTH=PLAIN AUTH=LOGIN"); !reflect.DeepEqual(got, want) {
		t.Fatalf("greeting capabilities:\n got %v\nwant %v", got, want)
	}
	giIMAPError(t, "LOGIN with a wrong password", g.Login(testUser, "wrong").Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeAuthenticationFailed)
	// (The session state is checked through the server's answers, not
	// go-imap's State(): go-imap updates it after Wait has returned.)
	_, err := g.Select("INBOX", nil).Wait()
	giIMAPError(t, "SELECT before LOGIN", err, imap.StatusResponseTypeBad, "")
	g.must("LOGIN", g.Login(testUser, testPassword).Wait())
	caps, err := g.Capability().Wait()
	g.must("CAPABILITY", err)
	if want := giCaps(wantCaps); !reflect.DeepEqual(caps, want) {
		t.Fatalf("CAPABILITY after LOGIN:\n got %v\nwant %v", caps, want)
	}

	// Thunderbird's folder discovery: LIST (SPECIAL-USE) finds the special
	// folders, LIST ... RETURN (SUBSCRIBED SPECIAL-USE STATUS (...)) the
	// whole tree with counters in one round trip.
	special, err := g.List("", "*", &imap.ListOptions{SelectSpecialUse: true}).Collect()
	g.must("LIST (SPECIAL-USE)", err)
	var gotSpecial []string
	for _, l := range special {
		gotSpecial = append(gotSpecial, fmt.Sprintf("%s %q %v", l.Mailbox, l.Delim, giSortedAttrs(l.Attrs)))
	}
	wantSpecial := []string{
		`Archive '/' [\Archive \HasNoChildren]`,
		`Drafts '/' [\Drafts \HasNoChildren]`,
		`Junk '/' [\HasNoChildren \Junk]`,
		`Sent '/' [\HasNoChildren \Sent]`,
		`Trash '/' [\HasNoChildren \Trash]`,
	}
	if !slices.Equal(gotSpecial, wantSpecial) {
		t.Fatalf("LIST (SPECIAL-USE):\n got %q\nwant %q", gotSpecial, wantSpecial)
	}

	g.must("UNSUBSCRIBE Junk", g.Unsubscribe("Junk").Wait())
	inboxSize := int64(0)
	for _, b := range bodies {
		inboxSize += int64(len(b))
	}
	list, err := g.List("", "*", &imap.ListOptions{
		ReturnSubscribed: true,
		ReturnSpecialUse: true,
		ReturnStatus: &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true,
			NumUnseen: true, Size: true, HighestModSeq: true},
	}).Collect()
	g.must("LIST RETURN (STATUS)", err)
	type row struct {
		attrs  []imap.MailboxAttr
		status imap.StatusData
	}
	want := map[string]row{}
	for _, name := range []string{"Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"} {
		mb := mustMailbox(e, name)
		r := row{status: imap.StatusData{Mailbox: name, NumMessages: giU32(0), UIDNext: 1, UIDValidity: mb.UIDValidity,
			NumUnseen: giU32(0), Size: giI64(0), HighestModSeq: mb.HighestModSeq}}
		switch name {
		case "INBOX":
			r.attrs = []imap.MailboxAttr{imap.MailboxAttrHasNoChildren, imap.MailboxAttrSubscribed}
			r.status.NumMessages, r.status.UIDNext, r.status.NumUnseen, r.status.Size = giU32(3), 4, giU32(3), giI64(inboxSize)
		case "Junk":
			r.attrs = []imap.MailboxAttr{imap.MailboxAttrHasNoChildren, imap.MailboxAttrJunk}
		default:
			r.attrs = []imap.MailboxAttr{imap.MailboxAttrHasNoChildren, imap.MailboxAttrSubscribed, imap.MailboxAttr(`\` + name)}
		}
		slices.Sort(r.attrs)
		want[name] = r
	}
	if len(list) != len(want) {
		t.Fatalf("LIST RETURN (STATUS): %d mailboxes, want %d: %+v", len(list), len(want), list)
	}
	for _, l := range list {
		w, ok := want[l.Mailbox]
		if !ok {
			t.Fatalf("LIST: unexpected mailbox %q", l.Mailbox)
		}
		if l.Delim != '/' || !slices.Equal(giSortedAttrs(l.Attrs), w.attrs) {
			t.Errorf("LIST %s: delim %q attrs %v, want '/' %v", l.Mailbox, l.Delim, giSortedAttrs(l.Attrs), w.attrs)
		}
		if l.Status == nil || !reflect.DeepEqual(*l.Status, w.status) {
			t.Errorf("LIST %s STATUS:\n got %s\nwant %s", l.Mailbox, giFmtStatus(l.Status), giFmtStatus(&w.status))
		}
	}

	// STATUS of a mailbox that is not selected, as a client polls folders.
	st, err := g.Status("INBOX", &imap.StatusOptions{NumMessages: true, UIDNext: true, NumUnseen: true, Size: true}).Wait()
	g.must("STATUS", err)
	if wantSt := (imap.StatusData{Mailbox: "INBOX", NumMessages: giU32(3), UIDNext: 4, NumUnseen: giU32(3), Size: giI64(inboxSize)}); !reflect.DeepEqual(*st, wantSt) {
		t.Fatalf("STATUS INBOX:\n got %s\nwant %s", giFmtStatus(st), giFmtStatus(&wantSt))
	}
	_, err = g.Status("Nope", &imap.StatusOptions{NumMessages: true}).Wait()
	giIMAPError(t, "STATUS of a missing mailbox", err, imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent)

	g.must("LOGOUT", g.Logout().Wait())
	e.waitSessionEnd()
}

func giFmtStatus(s *imap.StatusData) string {
	if s == nil {
		return "<nil>"
	}
	p := func(v *uint32) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprint(*v)
	}
	size := "-"
	if s.Size != nil {
		size = fmt.Sprint(*s.Size)
	}
	return fmt.Sprintf("%s MESSAGES %s UIDNEXT %d UIDVALIDITY %d UNSEEN %s SIZE %s HIGHESTMODSEQ %d",
		s.Mailbox, p(s.NumMessages), s.UIDNext, s.UIDValidity, p(s.NumUnseen), size, s.HighestModSeq)
}

var giPermanentFlags = []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft, imap.FlagWildcard}

// TestIMAPClientSelectFetch fetches the message list and message bodies the
// way Thunderbird does, and compares what go-imap decodes.
func TestIMAPClientSelectFetch(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliver(giAltMsg)
	e.deliver(giAttMsg)
	g := e.loginGo()

	sel := g.selectBox("INBOX", &imap.SelectOptions{CondStore: true})
	inbox := mustMailbox(e, "INBOX")
	wantSel := &imap.SelectData{
		Flags:          []imap.Flag{imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagSeen, imap.FlagDraft},
		PermanentFlags: giPermanentFlags,
		NumMessages:    2,
		UIDNext:        3,
		UIDValidity:    inbox.UIDValidity,
		HighestModSeq:  inbox.HighestModSeq,
	}
	if inbox.HighestModSeq == 0 || !reflect.DeepEqual(sel, wantSel) {
		t.Fatalf("SELECT INBOX (CONDSTORE):\n got %+v\nwant %+v", sel, wantSel)
	}
	if mb := g.Mailbox(); mb == nil || mb.Name != "INBOX" || mb.NumMessages != 2 {
		t.Fatalf("client's selected mailbox: %+v", mb)
	}

	// The message list: UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE
	// ENVELOPE BODYSTRUCTURE).
	stored := e.messages()
	msgs := g.fetch(imap.UIDSetNum(1, 2), &imap.FetchOptions{
		UID: true, Flags: true, RFC822Size: true, InternalDate: true, Envelope: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
	})
	if len(msgs) != 2 {
		t.Fatalf("UID FETCH 1:2: %d messages", len(msgs))
	}
	for i, m := range msgs {
		if m.SeqNum != uint32(i+1) || m.UID != imap.UID(i+1) || len(m.Flags) != 0 {
			t.Errorf("message %d: seq %d UID %d flags %v", i+1, m.SeqNum, m.UID, m.Flags)
		}
		// INTERNALDATE has second precision.
		if !m.InternalDate.Equal(stored[i].InternalDate.Truncate(time.Second)) {
			t.Errorf("message %d INTERNALDATE %v, want %v", i+1, m.InternalDate, stored[i].InternalDate)
		}
	}
	if msgs[0].RFC822Size != int64(len(giAltMsg)) || msgs[1].RFC822Size != int64(len(giAttMsg)) {
		t.Errorf("RFC822.SIZE %d %d, want %d %d", msgs[0].RFC822Size, msgs[1].RFC822Size, len(giAltMsg), len(giAttMsg))
	}

	bob := []imap.Address{{Name: "Bob Example", Mailbox: "bob", Host: "example.org"}}
	giCheckEnvelope(t, msgs[0].Envelope, &imap.Envelope{
		Date:    time.Date(2026, 2, 3, 10, 11, 12, 0, time.FixedZone("", 3600)),
		Subject: "Grüße from the team",
		From:    bob, Sender: bob, ReplyTo: bob,
		To:        []imap.Address{{Name: "Alice", Mailbox: "alice", Host: "example.org"}, {Mailbox: "carol", Host: "example.net"}},
		Cc:        []imap.Address{{Name: "Jürgen", Mailbox: "j", Host: "example.de"}},
		InReplyTo: []string{"parent@example.org"},
		MessageID: "alt-1@example.org",
	})
	carol := []imap.Address{{Name: "Carol", Mailbox: "carol", Host: "example.net"}}
	giCheckEnvelope(t, msgs[1].Envelope, &imap.Envelope{
		Date:    time.Date(2026, 2, 4, 8, 0, 0, 0, time.UTC),
		Subject: "Quarterly rates",
		From:    carol, Sender: carol, ReplyTo: carol,
		To:        []imap.Address{{Mailbox: "alice", Host: "example.org"}},
		MessageID: "att-2@example.net",
	})

	noExt := &imap.BodyStructureSinglePartExt{}
	giCheckBodyStructure(t, "multipart/alternative", msgs[0].BodyStructure, &imap.BodyStructureMultiPart{
		Subtype: "alternative",
		Children: []imap.BodyStructure{
			&imap.BodyStructureSinglePart{Type: "text", Subtype: "plain", Params: map[string]string{"charset": "utf-8"},
				Encoding: "quoted-printable", Size: 73, Text: &imap.BodyStructureText{NumLines: 2}, Extended: noExt},
			&imap.BodyStructureSinglePart{Type: "text", Subtype: "html", Params: map[string]string{"charset": "utf-8"},
				Encoding: "8bit", Size: 41, Text: &imap.BodyStructureText{NumLines: 0}, Extended: noExt},
		},
		Extended: &imap.BodyStructureMultiPartExt{Params: map[string]string{"boundary": "alt-boundary"}},
	})
	pdf := &imap.BodyStructureSinglePart{Type: "application", Subtype: "pdf",
		// go-imap decodes the RFC 2047 word of the name parameter itself.
		Params:      map[string]string{"name": "€ quarterly rates.pdf"},
		Description: "rates table", Encoding: "base64", Size: 368,
		Extended: &imap.BodyStructureSinglePartExt{Disposition: &imap.BodyStructureDisposition{
			Value: "attachment",
			// The RFC 2231 continuations arrive merged into one extended
			// value, as Dovecot sends them; decoding the charset and
			// percent-escapes is left to the client.
			Params: map[string]string{"filename*": "utf-8''%E2%82%AC%20quarterly%20rates.pdf"},
		}},
	}
	giCheckBodyStructure(t, "multipart/mixed", msgs[1].BodyStructure, &imap.BodyStructureMultiPart{
		Subtype: "mixed",
		Children: []imap.BodyStructure{
			&imap.BodyStructureSinglePart{Type: "text", Subtype: "plain", Params: map[string]string{"charset": "us-ascii"},
				Encoding: "7bit", Size: 22, Text: &imap.BodyStructureText{NumLines: 0}, Extended: noExt},
			pdf,
		},
		Extended: &imap.BodyStructureMultiPartExt{Params: map[string]string{"boundary": "mixed-b"}},
	})
	var parts []string
	msgs[1].BodyStructure.Walk(func(path []int, part imap.BodyStructure) bool {
		parts = append(parts, fmt.Sprintf("%v %s", path, part.MediaType()))
		return true
	})
	if want := []string{"[] multipart/mixed", "[1] text/plain", "[2] application/pdf"}; !slices.Equal(parts, want) {
		t.Errorf("BODYSTRUCTURE walk: %q, want %q", parts, want)
	}

	// Bodies: BODY.PEEK[] byte-exact, the header fields a client shows in
	// the message list, BINARY of the base64 attachment and of the
	// quoted-printable text, BINARY.SIZE.
	whole := &imap.FetchItemBodySection{Peek: true}
	fields := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true,
		HeaderFields: []string{"From", "Subject", "Date", "Message-ID", "Content-Type", "References"}}
	textPart := &imap.FetchItemBodySection{Part: []int{1}, Peek: true}
	mimeHdr := &imap.FetchItemBodySection{Part: []int{2}, Specifier: imap.PartSpecifierMIME, Peek: true}
	bin1 := &imap.FetchItemBinarySection{Part: []int{1}, Peek: true}
	bin2 := &imap.FetchItemBinarySection{Part: []int{2}, Peek: true}
	msgs = g.fetch(imap.UIDSetNum(1, 2), &imap.FetchOptions{
		UID:               true,
		BodySection:       []*imap.FetchItemBodySection{whole, fields, textPart, mimeHdr},
		BinarySection:     []*imap.FetchItemBinarySection{bin1, bin2},
		BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{2}}},
	})
	if len(msgs) != 2 {
		t.Fatalf("UID FETCH bodies: %d messages", len(msgs))
	}
	check := func(what string, got []byte, want string) {
		t.Helper()
		if string(got) != want {
			t.Errorf("%s:\n got %q\nwant %q", what, got, want)
		}
	}
	check("alt BODY[]", msgs[0].FindBodySection(whole), giAltMsg)
	check("att BODY[]", msgs[1].FindBodySection(whole), giAttMsg)
	check("alt BODY[HEADER.FIELDS]", msgs[0].FindBodySection(fields),
		"From: \"Bob Example\" <bob@example.org>\r\n"+
			"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= from the team\r\n"+
			"Date: Tue, 3 Feb 2026 10:11:12 +0100\r\n"+
			"Message-ID: <alt-1@example.org>\r\n"+
			"Content-Type: multipart/alternative; boundary=\"alt-boundary\"\r\n\r\n")
	check("att BODY[HEADER.FIELDS]", msgs[1].FindBodySection(fields),
		"From: Carol <carol@example.net>\r\n"+
			"Subject: Quarterly rates\r\n"+
			"Date: Wed, 4 Feb 2026 08:00:00 +0000\r\n"+
			"Message-ID: <att-2@example.net>\r\n"+
			"Content-Type: multipart/mixed; boundary=\"mixed-b\"\r\n\r\n")
	check("alt BODY[1]", msgs[0].FindBodySection(textPart),
		"Gr=C3=BC=C3=9Fe!\r\nSecond line, with a trailing space =\r\nand a soft break.")
	check("att BODY[1]", msgs[1].FindBodySection(textPart), "See the attached file.")
	check("alt BODY[2.MIME]", msgs[0].FindBodySection(mimeHdr),
		"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	check("att BODY[2.MIME]", msgs[1].FindBodySection(mimeHdr),
		"Content-Type: application/pdf; name=\"=?utf-8?q?=E2=82=AC_quarterly_rates.pdf?=\"\r\n"+
			"Content-Disposition: attachment;\r\n filename*0*=utf-8''%E2%82%AC%20quarterly%20;\r\n filename*1=rates.pdf\r\n"+
			"Content-Transfer-Encoding: base64\r\nContent-Description: rates table\r\n\r\n")
	// BINARY decodes the Content-Transfer-Encoding on the server (RFC 3516).
	check("alt BINARY[1] (quoted-printable)", msgs[0].FindBinarySection(bin1),
		"Grüße!\r\nSecond line, with a trailing space and a soft break.")
	check("alt BINARY[2] (8bit)", msgs[0].FindBinarySection(bin2), "<html><body><p>Grüße!</p></body></html>")
	check("att BINARY[1] (7bit)", msgs[1].FindBinarySection(bin1), "See the attached file.")
	check("att BINARY[2] (base64)", msgs[1].FindBinarySection(bin2), string(giAttPayload))
	for i, want := range []uint32{41, uint32(len(giAttPayload))} {
		if size, ok := msgs[i].FindBinarySectionSize([]int{2}); !ok || size != want {
			t.Errorf("message %d BINARY.SIZE[2] = %d, %v; want %d", i+1, size, ok, want)
		}
	}

	// Everything so far was a PEEK: no \Seen. A BODY[] without PEEK sets
	// \Seen (RFC 3501 §6.4.5), and the server reports the new flags.
	msgs = g.fetch(imap.UIDSetNum(1, 2), &imap.FetchOptions{UID: true, Flags: true, ModSeq: true})
	for _, m := range msgs {
		if len(m.Flags) != 0 || m.ModSeq == 0 || m.ModSeq > inbox.HighestModSeq {
			t.Fatalf("after PEEKs: UID %d flags %v modseq %d (HIGHESTMODSEQ %d)", m.UID, m.Flags, m.ModSeq, inbox.HighestModSeq)
		}
	}
	read := &imap.FetchItemBodySection{Part: []int{1}}
	msgs = g.fetch(imap.UIDSetNum(2), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{read}})
	if len(msgs) != 1 || string(msgs[0].FindBodySection(read)) != "See the attached file." ||
		!giSameFlags(msgs[0].Flags, imap.FlagSeen) {
		t.Fatalf("UID FETCH 2 BODY[1]: %+v", msgs)
	}
	if ms := e.messages(); len(ms[0].Flags) != 0 || !ms[1].HasFlag(`\Seen`) {
		t.Fatalf("store after BODY[1]: %+v", ms)
	}
	// A UID that does not exist yields no FETCH response (RFC 9051 §6.4.8).
	if msgs := g.fetch(imap.UIDSetNum(7), &imap.FetchOptions{UID: true, Flags: true}); len(msgs) != 0 {
		t.Fatalf("UID FETCH 7: %+v", msgs)
	}
}

func giCheckEnvelope(t *testing.T, got, want *imap.Envelope) {
	t.Helper()
	if got == nil {
		t.Errorf("no ENVELOPE, want %+v", want)
		return
	}
	if !got.Date.Equal(want.Date) {
		t.Errorf("ENVELOPE %s date %v, want %v", want.MessageID, got.Date, want.Date)
	}
	g, w := *got, *want
	g.Date, w.Date = time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("ENVELOPE %s:\n got %+v\nwant %+v", want.MessageID, g, w)
	}
}

func giCheckBodyStructure(t *testing.T, what string, got, want imap.BodyStructure) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("BODYSTRUCTURE of the %s message:\n got %s\nwant %s", what, giFmtBS(got), giFmtBS(want))
	}
}

// giFmtBS prints a decoded BODYSTRUCTURE with the pointers followed.
func giFmtBS(bs imap.BodyStructure) string {
	switch b := bs.(type) {
	case *imap.BodyStructureMultiPart:
		var kids []string
		for _, c := range b.Children {
			kids = append(kids, giFmtBS(c))
		}
		ext := "<nil>"
		if b.Extended != nil {
			ext = fmt.Sprintf("%+v", *b.Extended)
		}
		return fmt.Sprintf("multipart/%s(%s) ext %s", b.Subtype, strings.Join(kids, ", "), ext)
	case *imap.BodyStructureSinglePart:
		s := fmt.Sprintf("%s/%s params %v id %q desc %q enc %q size %d", b.Type, b.Subtype, b.Params, b.ID, b.Description, b.Encoding, b.Size)
		if b.Text != nil {
			s += fmt.Sprintf(" lines %d", b.Text.NumLines)
		}
		if b.Extended != nil {
			s += fmt.Sprintf(" ext {lang %v loc %q", b.Extended.Language, b.Extended.Location)
			if d := b.Extended.Disposition; d != nil {
				s += fmt.Sprintf(" disp %q %v", d.Value, d.Params)
			}
			s += "}"
		}
		return "[" + s + "]"
	}
	return fmt.Sprintf("%#v", bs)
}

// TestIMAPClientStoreSeenBySecondSession: flags stored in one session reach
// another session that has the mailbox selected, as unilateral FETCH
// responses at its next command (RFC 9051 §7.4.2).
func TestIMAPClientStoreSeenBySecondSession(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(3)
	a := e.loginGo()
	b := e.loginGo()
	a.selectBox("INBOX", nil)
	b.selectBox("INBOX", nil)

	// UID STORE answers with the new flags and the UID (RFC 3501 §6.4.8),
	// which go-imap needs to match the answer to the command.
	msgs, err := a.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd,
		Flags: []imap.Flag{imap.FlagFlagged, "$Forwarded"}}, nil).Collect()
	a.must("UID STORE +FLAGS", err)
	if len(msgs) != 1 || msgs[0].SeqNum != 2 || msgs[0].UID != 2 ||
		!giSameFlags(msgs[0].Flags, imap.FlagFlagged, "$Forwarded") {
		t.Fatalf("UID STORE 2 +FLAGS: %+v", msgs)
	}
	giExpectNone(t, "unilateral FETCH in the storing session", a.u.fetch)

	// Session B learns about it at its next command.
	b.must("NOOP", b.Noop().Wait())
	f := giWait(t, "unilateral FETCH in session B", b.u.fetch)
	if f.SeqNum != 2 || !giSameFlags(f.Flags, imap.FlagFlagged, "$Forwarded") {
		t.Fatalf("session B unilateral FETCH: %+v", f)
	}
	giExpectNone(t, "second unilateral FETCH", b.u.fetch)

	// Sequence-number STORE with .SILENT: no answer to A, B still sees it.
	msgs, err = a.Store(imap.SeqSetNum(1, 3), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagSeen}}, nil).Collect()
	a.must("STORE +FLAGS.SILENT", err)
	if len(msgs) != 0 {
		t.Fatalf("STORE .SILENT answered %+v", msgs)
	}
	b.must("NOOP", b.Noop().Wait())
	got := map[uint32][]imap.Flag{}
	for range 2 {
		f := giWait(t, "unilateral FETCH in session B", b.u.fetch)
		got[f.SeqNum] = f.Flags
	}
	if want := map[uint32][]imap.Flag{1: {imap.FlagSeen}, 3: {imap.FlagSeen}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("session B after STORE 1,3 +FLAGS.SILENT (\\Seen): %v, want %v", got, want)
	}

	// B's own fetch shows the state A left.
	msgs = b.fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{UID: true, Flags: true})
	var states []string
	for _, m := range msgs {
		flags := slices.Clone(m.Flags)
		slices.Sort(flags)
		states = append(states, fmt.Sprintf("%d:%d %v", m.SeqNum, m.UID, flags))
	}
	if want := []string{`1:1 [\Seen]`, `2:2 [$Forwarded \Flagged]`, `3:3 [\Seen]`}; !slices.Equal(states, want) {
		t.Fatalf("session B FETCH FLAGS: %q, want %q", states, want)
	}
	// Replacing the flag set (STORE FLAGS) from B; A sees it.
	if _, err := b.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsSet,
		Flags: []imap.Flag{imap.FlagAnswered}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	a.must("NOOP", a.Noop().Wait())
	if f := giWait(t, "unilateral FETCH in session A", a.u.fetch); f.SeqNum != 2 || !giSameFlags(f.Flags, imap.FlagAnswered) {
		t.Fatalf("session A unilateral FETCH: %+v", f)
	}
	if ms := e.messages(); !ms[1].HasFlag(`\Answered`) || ms[1].HasFlag(`\Flagged`) || ms[1].HasFlag("$Forwarded") {
		t.Fatalf("store after STORE FLAGS: %+v", ms[1])
	}
}

// TestIMAPClientIdle: a session in IDLE sees an APPEND and an EXPUNGE of
// another session at once (RFC 2177), and the appended message is
// byte-exact.
func TestIMAPClientIdle(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(2)
	a := e.loginGo()
	b := e.loginGo()
	a.selectBox("INBOX", nil)

	idle, err := a.Idle()
	a.must("IDLE", err)

	body := "From: Dave <dave@example.org>\r\nTo: alice@example.org\r\nSubject: appended while idling\r\n" +
		"Date: Thu, 5 Feb 2026 09:30:00 +0000\r\nMessage-ID: <idle-3@example.org>\r\n\r\n" +
		"Line one\r\n.leading dot\r\n\r\nNon-ASCII: caf\xc3\xa9\r\n"
	date := time.Date(2026, 2, 5, 9, 30, 1, 0, time.FixedZone("", -5*3600))
	app := b.Append("INBOX", int64(len(body)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen, "$Label1"}, Time: date})
	if _, err := app.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	b.must("APPEND close", app.Close())
	ad, err := app.Wait()
	b.must("APPEND", err)
	if want := (imap.AppendData{UID: 3, UIDValidity: mustValidity(e, "INBOX")}); *ad != want {
		t.Fatalf("APPENDUID: %+v, want %+v", *ad, want)
	}

	if n := giWait(t, "EXISTS during IDLE", a.u.exists); n != 3 {
		t.Fatalf("EXISTS %d during IDLE, want 3", n)
	}
	// B deletes message 1 while A is still idling: A gets EXPUNGE 1.
	b.selectBox("INBOX", nil)
	if _, err := b.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	if seqs, err := b.UIDExpunge(imap.UIDSetNum(1)).Collect(); err != nil || !slices.Equal(seqs, []uint32{1}) {
		t.Fatalf("UID EXPUNGE 1: %v %v", seqs, err)
	}
	if seq := giWait(t, "EXPUNGE during IDLE", a.u.expunge); seq != 1 {
		t.Fatalf("EXPUNGE %d during IDLE, want 1", seq)
	}
	// (The \Deleted flag change of message 1 may or may not have been
	// reported before the expunge; either is correct.)

	a.must("IDLE close", idle.Close())
	a.must("IDLE", idle.Wait())
	if mb := a.Mailbox(); mb.NumMessages != 2 {
		t.Fatalf("session A counts %d messages after IDLE, want 2", mb.NumMessages)
	}
	whole := &imap.FetchItemBodySection{Peek: true}
	msgs := a.fetch(imap.UIDSetNum(3), &imap.FetchOptions{UID: true, Flags: true, InternalDate: true, RFC822Size: true,
		BodySection: []*imap.FetchItemBodySection{whole}})
	if len(msgs) != 1 {
		t.Fatalf("UID FETCH 3: %d messages", len(msgs))
	}
	m := msgs[0]
	if m.SeqNum != 2 || string(m.FindBodySection(whole)) != body || m.RFC822Size != int64(len(body)) ||
		!m.InternalDate.Equal(date) || !giSameFlags(m.Flags, imap.FlagSeen, "$Label1") {
		t.Fatalf("appended message as seen by session A: seq %d size %d date %v flags %v body %q",
			m.SeqNum, m.RFC822Size, m.InternalDate, m.Flags, m.FindBodySection(whole))
	}
	// A second IDLE ends cleanly with nothing reported.
	idle, err = a.Idle()
	a.must("IDLE", err)
	a.must("IDLE close", idle.Close())
	a.must("IDLE", idle.Wait())
	giExpectNone(t, "EXISTS", a.u.exists)
}

// TestIMAPClientMoveExpungeSearch: MOVE with COPYUID, UID EXPUNGE of one
// of two \Deleted messages, ESEARCH.
func TestIMAPClientMoveExpungeSearch(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(6)
	g := e.loginGo()
	g.selectBox("INBOX", nil)

	// Thunderbird moves to Trash with UID MOVE; the COPYUID in the untagged
	// OK before the EXPUNGEs (RFC 6851 §4.3) maps old to new UIDs.
	md, err := g.Move(giUIDs(2, 4, 5), "Trash").Wait()
	g.must("UID MOVE", err)
	if md.UIDValidity != mustValidity(e, "Trash") || md.SourceUIDs.String() != "2,4:5" || md.DestUIDs.String() != "1:3" {
		t.Fatalf("MOVE COPYUID: validity %d src %v dst %v, want %d 2,4:5 1:3",
			md.UIDValidity, md.SourceUIDs, md.DestUIDs, mustValidity(e, "Trash"))
	}
	// Apply the EXPUNGEs to the view (any order is correct, as long as each
	// sequence number is valid at the time it is sent).
	view := []imap.UID{1, 2, 3, 4, 5, 6}
	for range 3 {
		seq := giWait(t, "EXPUNGE after MOVE", g.u.expunge)
		if seq < 1 || int(seq) > len(view) {
			t.Fatalf("EXPUNGE %d with %d messages", seq, len(view))
		}
		view = slices.Delete(view, int(seq-1), int(seq))
	}
	if !slices.Equal(view, []imap.UID{1, 3, 6}) || g.Mailbox().NumMessages != 3 {
		t.Fatalf("after MOVE: view %v, client counts %d", view, g.Mailbox().NumMessages)
	}
	giExpectNone(t, "EXPUNGE", g.u.expunge)

	// Two messages marked \Deleted, UID EXPUNGE removes only the one named.
	if _, err := g.Store(giUIDs(1, 6), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	seqs, err := g.UIDExpunge(imap.UIDSetNum(6)).Collect()
	if err != nil || !slices.Equal(seqs, []uint32{3}) {
		t.Fatalf("UID EXPUNGE 6: %v %v, want [3]", seqs, err)
	}
	if ms := e.messages(); len(ms) != 2 || ms[0].UID != 1 || !ms[0].HasFlag(`\Deleted`) || ms[1].UID != 3 {
		t.Fatalf("INBOX after UID EXPUNGE: %+v", ms)
	}

	// ESEARCH (RFC 4731): go-imap sends SEARCH RETURN (...).
	all := &imap.SearchOptions{ReturnMin: true, ReturnMax: true, ReturnCount: true, ReturnAll: true}
	sd, err := g.UIDSearch(&imap.SearchCriteria{}, all).Wait()
	g.must("UID SEARCH RETURN ALL", err)
	if sd.Min != 1 || sd.Max != 3 || sd.Count != 2 || !slices.Equal(sd.AllUIDs(), []imap.UID{1, 3}) {
		t.Fatalf("UID SEARCH RETURN (MIN MAX COUNT ALL) ALL: %+v", sd)
	}
	sd, err = g.Search(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagDeleted}}, all).Wait()
	g.must("SEARCH UNDELETED", err)
	if sd.Min != 2 || sd.Max != 2 || sd.Count != 1 || !slices.Equal(sd.AllSeqNums(), []uint32{2}) {
		t.Fatalf("SEARCH RETURN (...) UNDELETED: %+v", sd)
	}
	sd, err = g.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "message 3"}}},
		&imap.SearchOptions{ReturnCount: true}).Wait()
	g.must("UID SEARCH SUBJECT", err)
	if sd.Count != 1 || len(sd.AllUIDs()) != 0 {
		t.Fatalf("UID SEARCH RETURN (COUNT) SUBJECT: %+v", sd)
	}
	// A search without match: ESEARCH with no data (RFC 4731 §3.1).
	sd, err = g.UIDSearch(&imap.SearchCriteria{Body: []string{"no such text"}}, all).Wait()
	g.must("UID SEARCH BODY", err)
	if sd.Min != 0 || sd.Max != 0 || sd.Count != 0 || len(sd.AllUIDs()) != 0 {
		t.Fatalf("UID SEARCH without match: %+v", sd)
	}
	// Plain SEARCH (no RETURN): the IMAP4rev1 SEARCH response.
	sd, err = g.UIDSearch(&imap.SearchCriteria{Body: []string{"Body of message"}, Flag: []imap.Flag{imap.FlagDeleted}}, nil).Wait()
	g.must("UID SEARCH", err)
	if !slices.Equal(sd.AllUIDs(), []imap.UID{1}) {
		t.Fatalf("UID SEARCH BODY DELETED: %+v", sd)
	}

	// The moved messages in Trash, with their new UIDs.
	st, err := g.Status("Trash", &imap.StatusOptions{NumMessages: true, UIDNext: true, NumUnseen: true}).Wait()
	g.must("STATUS Trash", err)
	if want := (imap.StatusData{Mailbox: "Trash", NumMessages: giU32(3), UIDNext: 4, NumUnseen: giU32(3)}); !reflect.DeepEqual(*st, want) {
		t.Fatalf("STATUS Trash: %s, want %s", giFmtStatus(st), giFmtStatus(&want))
	}
	ro := g.selectBox("Trash", &imap.SelectOptions{ReadOnly: true})
	if ro.NumMessages != 3 || ro.UIDValidity != mustValidity(e, "Trash") || len(ro.PermanentFlags) != 0 {
		t.Fatalf("EXAMINE Trash: %+v", ro)
	}
	subj := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}, Peek: true}
	var got []string
	for _, m := range g.fetch(imap.UIDSetNum(1, 2, 3), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{subj}}) {
		got = append(got, fmt.Sprintf("%d %q", m.UID, m.FindBodySection(subj)))
	}
	want := []string{`1 "Subject: message 2\r\n\r\n"`, `2 "Subject: message 4\r\n\r\n"`, `3 "Subject: message 5\r\n\r\n"`}
	if !slices.Equal(got, want) {
		t.Fatalf("Trash: %q, want %q", got, want)
	}
	// EXAMINE is read-only: STORE fails with [READ-ONLY] (a go-imap Error
	// with that code).
	_, err = g.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Collect()
	giIMAPError(t, "STORE in EXAMINE", err, imap.StatusResponseTypeNo, "READ-ONLY")
	g.must("UNSELECT", g.Unselect().Wait())
	_, err = g.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true}).Collect()
	giIMAPError(t, "FETCH after UNSELECT", err, imap.StatusResponseTypeBad, "")
}

// TestIMAPClientMailboxes: CREATE (with a special use), RENAME of a
// hierarchy, DELETE, SUBSCRIBE, and non-ASCII names.
func TestIMAPClientMailboxes(t *testing.T) {
	e := newEnv(t, envOptions{})
	g := e.loginGo()
	names := func(pattern string) []string {
		t.Helper()
		l, err := g.List("", pattern, nil).Collect()
		g.must("LIST", err)
		var out []string
		for _, d := range l {
			out = append(out, fmt.Sprintf("%s %v", d.Mailbox, giSortedAttrs(d.Attrs)))
		}
		return out
	}
	g.must("CREATE Work", g.Create("Work", nil).Wait())
	g.must("CREATE Work/Reports", g.Create("Work/Reports", nil).Wait())
	g.must("CREATE Work/Reports/2026", g.Create("Work/Reports/2026", nil).Wait())
	g.must("CREATE Saved", g.Create("Saved", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrArchive}}).Wait())
	giIMAPError(t, "CREATE Work again", g.Create("Work", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeAlreadyExists)
	giIMAPError(t, "CREATE with \\Flagged", g.Create("X", &imap.CreateOptions{SpecialUse: []imap.MailboxAttr{imap.MailboxAttrFlagged}}).Wait(),
		imap.StatusResponseTypeNo, "USEATTR")
	if got, want := names("Work*"), []string{`Work [\HasChildren]`, `Work/Reports [\HasChildren]`, `Work/Reports/2026 [\HasNoChildren]`}; !slices.Equal(got, want) {
		t.Fatalf("LIST Work*: %q, want %q", got, want)
	}
	if got, want := names("Saved"), []string{`Saved [\Archive \HasNoChildren]`}; !slices.Equal(got, want) {
		t.Fatalf("LIST Saved: %q, want %q", got, want)
	}

	// A message in a child survives the rename of its parent (RFC 9051
	// §6.3.6: inferior names are renamed too).
	app := g.Append("Work/Reports/2026", 12, nil)
	if _, err := app.Write([]byte("Subject: x\r\n")); err != nil {
		t.Fatal(err)
	}
	g.must("APPEND close", app.Close())
	ad, err := app.Wait()
	g.must("APPEND", err)
	g.must("RENAME Work Job", g.Rename("Work", "Job", nil).Wait())
	if got, want := names("*o*"), []string{`Job [\HasChildren]`, `Job/Reports [\HasChildren]`, `Job/Reports/2026 [\HasNoChildren]`}; !slices.Equal(got, want) {
		t.Fatalf("LIST after RENAME: %q, want %q", got, want)
	}
	st, err := g.Status("Job/Reports/2026", &imap.StatusOptions{NumMessages: true, UIDValidity: true}).Wait()
	g.must("STATUS", err)
	if *st.NumMessages != 1 || st.UIDValidity != ad.UIDValidity {
		t.Fatalf("STATUS of the renamed child: %s (APPENDUID validity %d)", giFmtStatus(st), ad.UIDValidity)
	}
	giIMAPError(t, "RENAME to an existing name", g.Rename("Saved", "Job", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeAlreadyExists)
	giIMAPError(t, "RENAME of a missing mailbox", g.Rename("Nope", "Nope2", nil).Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent)

	// Deleting a parent with children leaves it \Noselect (RFC 3501
	// §6.3.4); deleting the leaves then removes everything.
	g.must("DELETE Job", g.Delete("Job").Wait())
	if got, want := names("Job*"), []string{`Job [\HasChildren \Noselect]`, `Job/Reports [\HasChildren]`, `Job/Reports/2026 [\HasNoChildren]`}; !slices.Equal(got, want) {
		t.Fatalf("LIST after DELETE Job: %q, want %q", got, want)
	}
	g.must("DELETE Job/Reports/2026", g.Delete("Job/Reports/2026").Wait())
	g.must("DELETE Job/Reports", g.Delete("Job/Reports").Wait())
	giIMAPError(t, "DELETE of a missing mailbox", g.Delete("Job/Reports").Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent)
	if got := names("Job*"); len(got) != 0 {
		t.Fatalf("LIST Job* after deleting the tree: %q", got)
	}
	giIMAPError(t, "DELETE INBOX", g.Delete("INBOX").Wait(), imap.StatusResponseTypeNo, imap.ResponseCodeCannot)

	// Subscriptions: LIST (SUBSCRIBED).
	g.must("SUBSCRIBE", g.Subscribe("Saved").Wait())
	sub, err := g.List("", "Sa*", &imap.ListOptions{SelectSubscribed: true}).Collect()
	g.must("LIST (SUBSCRIBED)", err)
	if len(sub) != 1 || sub[0].Mailbox != "Saved" || !slices.Contains(sub[0].Attrs, imap.MailboxAttrSubscribed) {
		t.Fatalf("LIST (SUBSCRIBED): %+v", sub)
	}

	// Non-ASCII names. go-imap (v2.0.0-beta.8) sends names as UTF-8
	// quoted strings as soon as the server advertises IMAP4rev2, without
	// enabling it. An IMAP4rev1 session takes modified UTF-7 only (RFC
	// 3501 §5.1.3; a quoted string is 7-bit there), and a client that
	// wants IMAP4rev2 from a server offering both MUST send ENABLE
	// IMAP4rev2 (RFC 9051 Appendix A). So the server refuses the 8-bit
	// name; a client that sends modified UTF-7 gets the mailbox.
	// Thunderbird enables UTF8=ACCEPT (RFC 6855) first; then UTF-8 names
	// are the protocol's names.
	err = g.Create("Ablage-ä", nil).Wait()
	if strings.Contains(g.log.String(), `CREATE "Ablage-ä"`) {
		giIMAPError(t, "CREATE of an 8-bit name in an IMAP4rev1 session", err, imap.StatusResponseTypeBad, "")
	} else {
		g.must(`CREATE "Ablage-&AOQ-"`, err)
		mustMailbox(e, "Ablage-ä")
	}
	en, err := g.Enable(imap.CapUTF8Accept).Wait()
	g.must("ENABLE UTF8=ACCEPT", err)
	if !reflect.DeepEqual(en.Caps, giCaps("UTF8=ACCEPT")) {
		t.Fatalf("ENABLED %v", en.Caps)
	}
	g.must("CREATE Entwürfe", g.Create("Entwürfe", nil).Wait())
	g.must("CREATE Entwürfe/Café", g.Create("Entwürfe/Café", nil).Wait())
	if got, want := names("Entw*"), []string{`Entwürfe [\HasChildren]`, `Entwürfe/Café [\HasNoChildren]`}; !slices.Equal(got, want) {
		t.Fatalf("LIST Entw* (UTF8=ACCEPT): %q, want %q", got, want)
	}
	mustMailbox(e, "Entwürfe/Café") // stored as UTF-8
	// Another session without UTF8=ACCEPT gets modified UTF-7, which
	// go-imap decodes to the same names.
	h := e.loginGo()
	l, err := h.List("", "Entw*", nil).Collect()
	h.must("LIST", err)
	if len(l) != 2 || l[0].Mailbox != "Entwürfe" || l[1].Mailbox != "Entwürfe/Café" {
		t.Fatalf("LIST Entw* (IMAP4rev1): %+v", l)
	}
	if !strings.Contains(h.log.String(), `"Entw&APw-rfe/Caf&AOk-"`) {
		t.Fatalf("no modified UTF-7 name on the wire:\n%s", h.log)
	}
	g.must("RENAME", g.Rename("Entwürfe/Café", "Ärger", nil).Wait())
	st, err = g.Status("Ärger", &imap.StatusOptions{NumMessages: true}).Wait()
	g.must("STATUS Ärger", err)
	if st.Mailbox != "Ärger" || *st.NumMessages != 0 {
		t.Fatalf("STATUS Ärger: %s", giFmtStatus(st))
	}
	mustMailbox(e, "Ärger")
}

// TestIMAPClientCondStore: CONDSTORE (RFC 7162) as a caching client uses
// it: per-message MODSEQ, FETCH CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH
// MODSEQ, unilateral FETCH with MODSEQ, STATUS HIGHESTMODSEQ.
//
// go-imap's Enable refuses CONDSTORE ("not supported": it only enables
// extensions whose syntax it knows to change), so CONDSTORE is enabled the
// other way RFC 7162 §3.1 allows: SELECT ... (CONDSTORE).
//
// QRESYNC is not covered here: go-imap v2.0.0-beta.8 has no SELECT
// (QRESYNC ...) parameter, refuses ENABLE QRESYNC, and treats a VANISHED
// response as a protocol error ("unsupported response type"), so it cannot
// drive QRESYNC. qresync_test.go covers it with exact wire transcripts.
func TestIMAPClientCondStore(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(3)
	a := e.loginGo()
	b := e.loginGo()

	h0 := mustHighest(e)
	st, err := b.Status("INBOX", &imap.StatusOptions{HighestModSeq: true}).Wait()
	b.must("STATUS HIGHESTMODSEQ", err)
	if st.HighestModSeq != h0 {
		t.Fatalf("STATUS HIGHESTMODSEQ %d, want %d", st.HighestModSeq, h0)
	}
	if sel := a.selectBox("INBOX", &imap.SelectOptions{CondStore: true}); sel.HighestModSeq != h0 {
		t.Fatalf("SELECT (CONDSTORE) HIGHESTMODSEQ %d, want %d", sel.HighestModSeq, h0)
	}
	b.selectBox("INBOX", &imap.SelectOptions{CondStore: true})

	stored := e.messages()
	msgs := a.fetch(imap.UIDSetNum(1, 2, 3), &imap.FetchOptions{UID: true, ModSeq: true})
	for i, m := range msgs {
		if m.UID != imap.UID(stored[i].UID) || m.ModSeq != stored[i].ModSeq || m.ModSeq > h0 {
			t.Fatalf("FETCH MODSEQ: UID %d modseq %d, want UID %d modseq %d (<= %d)", m.UID, m.ModSeq, stored[i].UID, stored[i].ModSeq, h0)
		}
	}

	// A STORE answers with the new MODSEQ; it is the new HIGHESTMODSEQ.
	msgs, err = a.Store(imap.UIDSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Collect()
	a.must("UID STORE", err)
	h1 := mustHighest(e)
	if len(msgs) != 1 || msgs[0].UID != 2 || msgs[0].ModSeq != h1 || h1 <= h0 ||
		!giSameFlags(msgs[0].Flags, imap.FlagFlagged) {
		t.Fatalf("UID STORE 2 +FLAGS: %+v (HIGHESTMODSEQ %d -> %d)", msgs, h0, h1)
	}
	// The other CONDSTORE session gets the change with its MODSEQ.
	b.must("NOOP", b.Noop().Wait())
	if f := giWait(t, "unilateral FETCH", b.u.fetch); f.SeqNum != 2 || f.ModSeq != h1 || !giSameFlags(f.Flags, imap.FlagFlagged) {
		t.Fatalf("session B unilateral FETCH: %+v, want seq 2 modseq %d", f, h1)
	}

	// FETCH CHANGEDSINCE: only what changed after h0.
	msgs = a.fetch(imap.UIDSetNum(1, 2, 3), &imap.FetchOptions{UID: true, Flags: true, ModSeq: true, ChangedSince: h0})
	if len(msgs) != 1 || msgs[0].UID != 2 || msgs[0].ModSeq != h1 {
		t.Fatalf("UID FETCH 1:3 (CHANGEDSINCE %d): %+v", h0, msgs)
	}
	if msgs := a.fetch(imap.UIDSetNum(1, 2, 3), &imap.FetchOptions{UID: true, Flags: true, ChangedSince: h1}); len(msgs) != 0 {
		t.Fatalf("UID FETCH 1:3 (CHANGEDSINCE %d): %+v", h1, msgs)
	}

	// STORE UNCHANGEDSINCE h0: message 1 is unchanged since and gets
	// \Seen; message 2 changed after h0, so it is left alone (its UID goes
	// into [MODIFIED 2], a response code go-imap does not expose).
	msgs, err = a.Store(imap.UIDSetNum(1, 2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}},
		&imap.StoreOptions{UnchangedSince: h0}).Collect()
	a.must("UID STORE UNCHANGEDSINCE", err)
	h2 := mustHighest(e)
	if len(msgs) != 1 || msgs[0].UID != 1 || msgs[0].ModSeq != h2 || !giSameFlags(msgs[0].Flags, imap.FlagSeen) {
		t.Fatalf("UID STORE 1:2 (UNCHANGEDSINCE %d): %+v", h0, msgs)
	}
	if ms := e.messages(); !ms[0].HasFlag(`\Seen`) || ms[1].HasFlag(`\Seen`) || ms[1].ModSeq != h1 {
		t.Fatalf("store after STORE UNCHANGEDSINCE: %+v", ms)
	}
	if !strings.Contains(a.log.String(), " OK [MODIFIED 2] ") {
		t.Fatalf("no [MODIFIED 2] in the transcript:\n%s", a.log)
	}

	// SEARCH MODSEQ: the messages changed after h0, and the highest
	// MODSEQ among them (RFC 7162 §3.1.5).
	sd, err := a.UIDSearch(&imap.SearchCriteria{ModSeq: &imap.SearchCriteriaModSeq{ModSeq: h0 + 1}}, nil).Wait()
	a.must("UID SEARCH MODSEQ", err)
	if !slices.Equal(sd.AllUIDs(), []imap.UID{1, 2}) || sd.ModSeq != h2 {
		t.Fatalf("UID SEARCH MODSEQ %d: %+v, want UIDs 1,2 MODSEQ %d", h0+1, sd, h2)
	}
	st, err = a.Status("Trash", &imap.StatusOptions{HighestModSeq: true, NumMessages: true}).Wait()
	a.must("STATUS Trash", err)
	if st.HighestModSeq != mustMailbox(e, "Trash").HighestModSeq || *st.NumMessages != 0 {
		t.Fatalf("STATUS Trash: %s", giFmtStatus(st))
	}
}

// TestIMAPClientTLS: implicit TLS (imaps) and STARTTLS with AUTHENTICATE
// PLAIN, as a client configured for "SSL/TLS" or "STARTTLS" connects.
func TestIMAPClientTLS(t *testing.T) {
	t.Run("implicit", func(t *testing.T) {
		e := newEnv(t, envOptions{implicitTLS: true})
		body := e.deliverN(1)[0]
		g := e.dialGo(&imapclient.Options{TLSConfig: clientTLSConfig(t)})
		g.must("LOGIN", g.Login(testUser, testPassword).Wait())
		g.selectBox("INBOX", nil)
		whole := &imap.FetchItemBodySection{Peek: true}
		msgs := g.fetch(imap.UIDSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{whole}})
		if len(msgs) != 1 || string(msgs[0].FindBodySection(whole)) != body {
			t.Fatalf("BODY[] over TLS: %+v", msgs)
		}
	})
	t.Run("starttls", func(t *testing.T) {
		e := newEnv(t, envOptions{stls: true, remote: true})
		// Without TLS a remote client is told LOGINDISABLED and refused.
		plain := e.dialGo(nil)
		if caps := plain.Caps(); !caps.Has(imap.CapStartTLS) || !caps.Has(imap.CapLoginDisabled) || caps.Has(imap.AuthCap("PLAIN")) {
			t.Fatalf("plaintext capabilities: %v", caps)
		}
		giIMAPError(t, "LOGIN without TLS", plain.Login(testUser, testPassword).Wait(), imap.StatusResponseTypeNo, "PRIVACYREQUIRED")
		g := e.dialGo(&imapclient.Options{TLSConfig: clientTLSConfig(t)})
		// After STARTTLS go-imap asks for the capabilities again.
		caps, err := g.Capability().Wait()
		g.must("CAPABILITY", err)
		if want := giCaps(wantCaps + " AUTH=PLAIN AUTH=LOGIN"); !reflect.DeepEqual(caps, want) {
			t.Fatalf("capabilities after STARTTLS:\n got %v\nwant %v", caps, want)
		}
		g.must("AUTHENTICATE PLAIN", g.Authenticate(sasl.NewPlainClient("", testUser, testPassword)))
		if !strings.Contains(g.log.String(), "AUTHENTICATE PLAIN "+plainResp("", testUser, testPassword)) {
			t.Fatalf("go-imap did not use SASL-IR:\n%s", g.log)
		}
		if sel := g.selectBox("INBOX", nil); sel.NumMessages != 0 {
			t.Fatalf("SELECT after AUTHENTICATE: %+v", sel)
		}
	})
}

// TestIMAPClientIMAP4rev2: go-imap is an IMAP4rev2 client; after ENABLE
// IMAP4rev2 the server answers the rev2 way (RFC 9051): LIST in the SELECT
// answer, ESEARCH for every SEARCH, STATUS DELETED, UTF-8 names.
func TestIMAPClientIMAP4rev2(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(3)
	g := e.loginGo()
	en, err := g.Enable(imap.CapIMAP4rev2).Wait()
	g.must("ENABLE IMAP4rev2", err)
	if !reflect.DeepEqual(en.Caps, giCaps("IMAP4rev2")) {
		t.Fatalf("ENABLED %v", en.Caps)
	}
	sel := g.selectBox("INBOX", nil)
	if sel.NumMessages != 3 || sel.List == nil || sel.List.Mailbox != "INBOX" || sel.List.Delim != '/' {
		t.Fatalf("SELECT in IMAP4rev2: %+v (LIST %+v)", sel, sel.List)
	}
	if _, err := g.Store(imap.SeqSetNum(2), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true,
		Flags: []imap.Flag{imap.FlagDeleted}}, nil).Collect(); err != nil {
		t.Fatal(err)
	}
	st, err := g.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumDeleted: true}).Wait()
	g.must("STATUS DELETED", err)
	if *st.NumMessages != 3 || st.NumDeleted == nil || *st.NumDeleted != 1 {
		t.Fatalf("STATUS INBOX (MESSAGES DELETED): %s deleted %v", giFmtStatus(st), st.NumDeleted)
	}
	// SEARCH without RETURN: an IMAP4rev2 server answers ESEARCH.
	sd, err := g.Search(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagDeleted}}, nil).Wait()
	g.must("SEARCH", err)
	if !slices.Equal(sd.AllSeqNums(), []uint32{1, 3}) {
		t.Fatalf("SEARCH UNDELETED: %+v", sd)
	}
	if !strings.Contains(g.log.String(), "* ESEARCH (TAG ") {
		t.Fatalf("no ESEARCH answer in IMAP4rev2:\n%s", g.log)
	}
	seqs, err := g.Expunge().Collect()
	if err != nil || !slices.Equal(seqs, []uint32{2}) {
		t.Fatalf("EXPUNGE: %v %v", seqs, err)
	}
	g.must("CREATE", g.Create("Entwürfe", nil).Wait())
	l, err := g.List("", "Entw*", nil).Collect()
	g.must("LIST", err)
	if len(l) != 1 || l[0].Mailbox != "Entwürfe" {
		t.Fatalf("LIST Entw*: %+v", l)
	}
	mustMailbox(e, "Entwürfe")
}
