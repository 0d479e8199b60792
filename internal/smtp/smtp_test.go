package smtp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestGreetingAndEHLO(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withTLS)
	c := dial(t, e.addr)
	if got := c.reply(); got != "220 mx.example.org ESMTP Service Ready" {
		t.Errorf("greeting %q", got)
	}
	want := strings.Join([]string{
		"250-Hello client.example",
		"250-PIPELINING",
		"250-8BITMIME",
		"250-ENHANCEDSTATUSCODES",
		"250-CHUNKING",
		"250-STARTTLS",
		"250-SMTPUTF8",
		"250 SIZE 52428800",
	}, "\n")
	if got := c.cmd("EHLO client.example"); got != want {
		t.Errorf("EHLO reply:\n%s\nwant:\n%s", got, want)
	}
	// No AUTH on this port, no relaying helpers.
	c.expect("AUTH PLAIN AGFAYg==", "502 5.7.0 Authentication not supported")
	c.expect("HELO client.example", "250 2.0.0 Hello client.example")
	c.expect("LHLO client.example", "500 5.5.1")
	c.expect("QUIT", "221 2.0.0")
	c.expectEOF()
}

func TestEHLOWithoutTLSAndAfterSTARTTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.expectReply("220 ")
	if got := c.cmd("EHLO client.example"); strings.Contains(got, "STARTTLS") {
		t.Errorf("STARTTLS advertised without TLSConfig:\n%s", got)
	}
	c.expect("STARTTLS", "502 5.5.1")

	e = newEnv(t, withTLS)
	c = dial(t, e.addr)
	c.greet(false)
	c.expect("STARTTLS", "220 2.0.0")
	tc := c.startTLS(e)
	want := strings.Join([]string{
		"250-Hello client.example",
		"250-PIPELINING",
		"250-8BITMIME",
		"250-ENHANCEDSTATUSCODES",
		"250-CHUNKING",
		"250-SMTPUTF8",
		"250 SIZE 52428800",
	}, "\n")
	if got := tc.cmd("EHLO client.example"); got != want {
		t.Errorf("EHLO after STARTTLS:\n%s\nwant:\n%s", got, want)
	}
	tc.expect("STARTTLS", "502 5.5.1")
}

func TestLHLO(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLMTP)
	c := dial(t, e.addr)
	if got := c.reply(); got != "220 mx.example.org LMTP Service Ready" {
		t.Errorf("greeting %q", got)
	}
	c.expect("EHLO client.example", "500 5.5.1")
	want := "250-Hello client.example\n250-PIPELINING\n250-8BITMIME\n250-ENHANCEDSTATUSCODES\n250-CHUNKING\n250-SMTPUTF8\n250 SIZE 52428800"
	if got := c.cmd("LHLO client.example"); got != want {
		t.Errorf("LHLO reply:\n%s\nwant:\n%s", got, want)
	}
}

// startTLS upgrades the client after a 220 to STARTTLS.
func (c *client) startTLS(e *testEnv) *client {
	c.t.Helper()
	pem, err := os.ReadFile(e.caFile)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "mx.example.org"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	return &client{t: c.t, conn: tc, r: bufio.NewReader(tc)}
}

func TestRecipientReplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<sender@client.example>", "250 2.0.0")
	tests := []struct{ rcpt, want string }{
		{"<someone@example.net>", "554 5.7.1 Relaying denied: example.net is not a local domain"},
		{"<user@mx.example.org>", "554 5.7.1 Relaying denied"},
		{"<nobody@example.org>", "550 5.1.1 <nobody@example.org>: no such user here"},
		{"<NoBody+tag@Example.ORG>", "550 5.1.1 <NoBody+tag@Example.ORG>: no such user here"},
		{"<bad..dots@example.org>", "550 5.1.1 <\"bad..dots\"@example.org>: no such user here"}, // go-smtp hands over \"bad..dots\" unquoted
		{"<a@-bad-.example.org>", "501 5.1.3 Bad destination mailbox address syntax"},
		{"<jörg@example.org>", "553 5.6.7 Non-ASCII address requires SMTPUTF8"},
		{"<user@example.org>", "250 2.0.0"},
		{"<USER+news@EXAMPLE.org>", "250 2.0.0"},
		{"<\"user\"@example.org>", "250 2.0.0"},
		{"<PostMaster@example.org>", "250 2.0.0"},
		{"user@example.org", "250 2.0.0"}, // without brackets, as some clients do
	}
	for _, tt := range tests {
		if got := c.cmd("RCPT TO:" + tt.rcpt); !strings.HasPrefix(got, tt.want) {
			t.Errorf("RCPT TO:%s: got %q, want %q", tt.rcpt, got, tt.want)
		}
	}
	c.expect("RSET", "250")
	c.expect("MAIL FROM:<bad sender@client.example>", "501")
	c.expect("MAIL FROM:<jörg@client.example>", "553 5.6.7")
}

func TestPostmasterWithoutAccount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.store.DeleteAccount(context.Background(), "postmaster@example.org"); err != nil {
		t.Fatal(err)
	}
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<>", "250")
	c.expect("RCPT TO:<postmaster@example.org>", "451 4.3.5 Postmaster mailbox not configured")
}

var receivedDateRE = `(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}`

func TestDeliverTagAndTraceFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<Sender@Client.Example>", "250")
	c.expect("RCPT TO:<User+Tag@example.org>", "250")
	c.expect("DATA", "354")
	msg := "From: sender@client.example\r\nSubject: tag\r\nMessage-ID: <m1@client.example>\r\n\r\nHello.\r\n"
	before := time.Now().Truncate(time.Second)
	c.send(string(dotStuff([]byte(msg))))
	id := deliveredID(t, c.reply())
	after := time.Now()

	stored := e.only("user@example.org")
	trace, body := stripTrace(t, stored)
	if string(body) != msg {
		t.Errorf("stored message %q, want %q", body, msg)
	}
	re := regexp.MustCompile(`\AReturn-Path: <Sender@Client\.Example>\r\n` +
		`Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n` +
		`\tby mx\.example\.org with ESMTP id ` + id + `\r\n` +
		`\tfor <User\+Tag@example\.org>; (` + receivedDateRE + `)\r\n\z`)
	m := re.FindStringSubmatch(trace)
	if m == nil {
		t.Fatalf("trace fields:\n%s", trace)
	}
	date, err := time.Parse("Mon, 02 Jan 2006 15:04:05 -0700", m[1])
	if err != nil || date.Before(before) || date.After(after) {
		t.Errorf("Received date %q (%v) not between %v and %v", m[1], err, before, after)
	}
	logs := e.logs.String()
	for _, w := range []string{"msg=connect", "msg=helo", "helo=client.example", "msg=delivery", "id=" + id,
		"message_id=<m1@client.example>", "result=delivered", "size=" + fmt.Sprint(len(msg))} {
		if !strings.Contains(logs, w) {
			t.Errorf("log lacks %q", w)
		}
	}
	if strings.Contains(logs, "Hello.") {
		t.Error("log contains the message body")
	}
	c.expect("QUIT", "221")
	c.expectEOF()
	e.shutdown(context.Background())
	if !strings.Contains(e.logs.String(), "msg=disconnect") {
		t.Error("no disconnect log line")
	}
}

func TestNullSenderAndSMTPUTF8(t *testing.T) {
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<>", "250")
	c.expect("RCPT TO:<user@example.org>", "250")
	c.expect("DATA", "354")
	c.send(string(dotStuff([]byte("Subject: bounce\r\n\r\nx\r\n"))))
	deliveredID(t, c.reply())
	trace, _ := stripTrace(t, e.only("user@example.org"))
	if !strings.HasPrefix(trace, "Return-Path: <>\r\n") {
		t.Errorf("null sender trace:\n%s", trace)
	}

	c.expect("MAIL FROM:<José@client.example> SMTPUTF8 BODY=8BITMIME", "250")
	c.expect("RCPT TO:<Jörg@example.org>", "250")
	c.expect("DATA", "354")
	msg := "Subject: Grüße\r\n\r\nÜmlaut body\r\n"
	c.send(string(dotStuff([]byte(msg))))
	id := deliveredID(t, c.reply())
	trace, body := stripTrace(t, e.only("jörg@example.org"))
	if string(body) != msg {
		t.Errorf("body %q", body)
	}
	if !strings.HasPrefix(trace, "Return-Path: <José@client.example>\r\n") ||
		!strings.Contains(trace, "with UTF8SMTP id "+id+"\r\n\tfor <Jörg@example.org>;") {
		t.Errorf("SMTPUTF8 trace:\n%s", trace)
	}
}

func TestTooManyRecipients(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	var b strings.Builder
	b.WriteString("MAIL FROM:<s@client.example>\r\n")
	for i := range 101 {
		// The same account 101 times: 100 are accepted, one copy stored.
		fmt.Fprintf(&b, "RCPT TO:<user+%d@example.org>\r\n", i)
	}
	c.send(b.String()) // pipelined
	c.expectReply("250")
	for i := range 100 {
		if got := c.reply(); !strings.HasPrefix(got, "250 2.0.0") {
			t.Fatalf("RCPT %d: %q", i, got)
		}
	}
	if got := c.reply(); got != "452 4.5.3 Too many recipients" {
		t.Errorf("101st RCPT: %q", got)
	}
	c.expect("DATA", "354")
	c.send(string(dotStuff([]byte("Subject: many\r\n\r\nx\r\n"))))
	deliveredID(t, c.reply())
	if n := e.count("user@example.org"); n != 1 {
		t.Errorf("%d copies stored, want 1", n)
	}
}

func TestMaxRecipientsSetting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *Server) { s.MaxRecipients = 2 })
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<>", "250")
	c.expect("RCPT TO:<a@example.org>", "250")
	c.expect("RCPT TO:<nobody@example.org>", "550") // refused ones do not count
	c.expect("RCPT TO:<b@example.org>", "250")
	c.expect("RCPT TO:<c@example.org>", "452 4.5.3 Too many recipients")
}

func TestSizeLimits(t *testing.T) {
	t.Parallel()
	const max = 1000
	e := newEnv(t, withMaxSize(max))
	c := dial(t, e.addr)
	c.greet(false)
	if got := c.cmd("EHLO client.example"); !strings.HasSuffix(got, "\n250 SIZE 1000") {
		t.Errorf("EHLO does not advertise SIZE 1000:\n%s", got)
	}
	c.expect("MAIL FROM:<s@client.example> SIZE=1001", "552 5.3.4")
	c.expect("MAIL FROM:<s@client.example> SIZE=1000", "250")
	c.expect("RCPT TO:<user@example.org>", "250")
	c.expect("DATA", "354")
	big := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"), 20)
	c.send(string(dotStuff(big)))
	c.expectReply("552 5.3.4")

	// Just under the limit passes DATA; exactly the limit does not (a
	// go-smtp quirk: its DATA reader refuses to read past the limit even
	// to see the terminating dot).
	for _, tt := range []struct {
		size int
		want string
	}{{max - 1, "250 2.0.0"}, {max, "552 5.3.4"}, {max + 1, "552 5.3.4"}} {
		c.expect("MAIL FROM:<s@client.example>", "250")
		c.expect("RCPT TO:<user@example.org>", "250")
		c.expect("DATA", "354")
		msg := append(bytes.Repeat([]byte("x"), tt.size-2), '\r', '\n')
		c.send(string(dotStuff(msg)))
		c.expectReply(tt.want)
	}
	// BDAT: exactly the limit passes; one more octet does not, whether
	// announced in one chunk or only known from the sum of chunks.
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<user@example.org>", "250")
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", max, bytes.Repeat([]byte("y"), max)))
	deliveredID(t, c.reply())
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<user@example.org>", "250")
	c.send(fmt.Sprintf("BDAT %d\r\n%s", max, bytes.Repeat([]byte("y"), max)))
	c.expectReply("250 2.0.0")
	c.send("BDAT 1 LAST\r\nz")
	c.expectReply("552 5.3.4")
	c.expect("NOOP", "250") // the stream is still in sync

	if n := e.count("user@example.org"); n != 2 {
		t.Errorf("%d messages stored, want 2", n)
	}
}

func TestPipelining(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.expectReply("220")
	c.send("EHLO client.example\r\nMAIL FROM:<s@client.example>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
	c.expectReply("250-Hello")
	c.expectReply("250 2.0.0 Roger")
	c.expectReply("250 2.0.0")
	c.expectReply("550 5.1.1")
	c.expectReply("250 2.0.0")
	c.expectReply("354")
	msg := "Subject: pipelined\r\n\r\nbody\r\n"
	// Data, the next transaction and QUIT in one write.
	c.send(string(dotStuff([]byte(msg))) + "MAIL FROM:<>\r\nRCPT TO:<c@example.org>\r\nNOOP\r\nQUIT\r\n")
	deliveredID(t, c.reply())
	c.expectReply("250 2.0.0 Roger")
	c.expectReply("250 2.0.0")
	c.expectReply("250 2.0.0")
	c.expectReply("221")
	c.expectEOF()
	for _, a := range []string{"a@example.org", "b@example.org"} {
		if _, body := stripTrace(t, e.only(a)); string(body) != msg {
			t.Errorf("%s: %q", a, body)
		}
	}
	if n := e.count("c@example.org"); n != 0 {
		t.Errorf("c@ got %d messages from a transaction without DATA", n)
	}
}

func TestBodyStoredOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<s@client.example>", "250")
	for _, r := range []string{"a@example.org", "b@example.org", "c@example.org"} {
		c.expect("RCPT TO:<"+r+">", "250")
	}
	c.expect("DATA", "354")
	msg := "Subject: three\r\n\r\nfor three\r\n"
	c.send(string(dotStuff([]byte(msg))))
	id := deliveredID(t, c.reply())
	var blob string
	for _, a := range []string{"a@example.org", "b@example.org", "c@example.org"} {
		msgs, bodies := e.messages(a)
		if len(msgs) != 1 {
			t.Fatalf("%s: %d messages", a, len(msgs))
		}
		if blob == "" {
			blob = msgs[0].BlobID
		} else if msgs[0].BlobID != blob {
			t.Errorf("%s: BlobID %q, want the shared %q", a, msgs[0].BlobID, blob)
		}
		trace, body := stripTrace(t, bodies[0])
		if string(body) != msg {
			t.Errorf("%s: body %q", a, body)
		}
		// No "for" clause with several recipients.
		if !regexp.MustCompile(`\tby mx\.example\.org with ESMTP id ` + id + `; ` + receivedDateRE + "\r\n\\z").MatchString(trace) {
			t.Errorf("trace:\n%s", trace)
		}
	}
}

// exactnessCases are messages whose bytes must be stored exactly.
func exactnessCases() map[string][]byte {
	rng := rand.New(rand.NewPCG(7, 7))
	big := make([]byte, 0, 5<<20+100)
	big = append(big, "Subject: big\r\n\r\n"...)
	for len(big) < 5<<20 {
		n := rng.IntN(200)
		for range n {
			c := byte(rng.IntN(256))
			if c == '\r' || c == '\n' {
				c = 'x'
			}
			big = append(big, c)
		}
		big = append(big, '\r', '\n')
	}
	return map[string][]byte{
		"dots":          []byte("Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n. \r\n...\r\nend\r\n"),
		"no final CRLF": []byte("Subject: x\r\n\r\nlast line without CRLF"),
		"8bit":          []byte("Subject: =?utf-8?q?x?=\r\n\r\n\xe4\xf6\xfc \xff\xfe\x80 \xc3\xa9t\xc3\xa9\r\n"),
		"NUL":           []byte("Subject: nul\r\n\r\na\x00b\x00\x00c\r\n\x00\r\n"),
		"5 MiB":         big,
	}
}

func TestDataByteExact(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	for name, msg := range exactnessCases() {
		c.expect("MAIL FROM:<s@client.example>", "250")
		c.expect("RCPT TO:<a@example.org>", "250")
		c.expect("DATA", "354")
		c.send(string(dotStuff(msg)))
		deliveredID(t, c.reply())
		msgs, bodies := e.messages("a@example.org")
		_, body := stripTrace(t, bodies[len(bodies)-1])
		want := msg
		if !bytes.HasSuffix(want, []byte("\r\n")) {
			// DATA cannot carry a message not ending in CRLF: the CRLF
			// before the final dot ends the last line (RFC 5321 §4.1.1.4).
			want = append(append([]byte{}, want...), '\r', '\n')
		}
		if !bytes.Equal(body, want) {
			t.Errorf("%s: stored %d octets differ from the %d sent (first 200: %q)", name, len(body), len(want), body[:min(200, len(body))])
		}
		_ = msgs
	}
}

func TestBDATByteExact(t *testing.T) {
	t.Parallel()
	for _, lmtp := range []bool{false, true} {
		t.Run(map[bool]string{false: "SMTP", true: "LMTP"}[lmtp], func(t *testing.T) {
			opts := []envOpt{}
			if lmtp {
				opts = append(opts, withLMTP)
			}
			e := newEnv(t, opts...)
			c := dial(t, e.addr)
			c.greet(lmtp)
			cases := exactnessCases()
			cases["end marker inside"] = []byte("Subject: x\r\n\r\nline\r\n.\r\nMAIL FROM:<evil@x>\r\n")
			for name, msg := range cases {
				c.expect("MAIL FROM:<s@client.example>", "250")
				c.expect("RCPT TO:<a@example.org>", "250")
				c.expect("RCPT TO:<b@example.org>", "250")
				// Three chunks of arbitrary sizes, the last possibly empty.
				cut1, cut2 := len(msg)/3, len(msg)/3*2+1
				if cut2 > len(msg) {
					cut2 = len(msg)
				}
				c.send(fmt.Sprintf("BDAT %d\r\n%s", cut1, msg[:cut1]))
				c.expectReply("250 2.0.0")
				c.send(fmt.Sprintf("BDAT %d\r\n%s", cut2-cut1, msg[cut1:cut2]))
				c.expectReply("250 2.0.0")
				c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg)-cut2, msg[cut2:]))
				id := deliveredID(t, c.reply())
				if lmtp {
					if id2 := deliveredID(t, c.reply()); id2 != id {
						t.Errorf("%s: ids %s and %s", name, id, id2)
					}
				}
				for _, a := range []string{"a@example.org", "b@example.org"} {
					_, bodies := e.messages(a)
					_, body := stripTrace(t, bodies[len(bodies)-1])
					if !bytes.Equal(body, msg) {
						t.Errorf("%s: %s: stored %d octets differ from the %d sent (first 200: %q)", name, a, len(body), len(msg), body[:min(200, len(body))])
					}
				}
			}
		})
	}
}

func TestBDATMixedWithDATA(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<a@example.org>", "250")
	c.send("BDAT 5\r\nhello")
	c.expectReply("250")
	c.expect("DATA", "502 5.5.1")
	c.expect("RSET", "250")
	c.send("BDAT 0 LAST\r\n")
	c.expectReply("502 5.5.1") // no transaction any more
	if n := e.count("a@example.org"); n != 0 {
		t.Errorf("a reset BDAT transfer stored %d messages", n)
	}
}

func TestLMTPPerRecipientReplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLMTP)
	c := dial(t, e.addr)
	c.greet(true)
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<a@example.org>", "250")
	c.expect("RCPT TO:<nobody@example.org>", "550 5.1.1")
	c.expect("RCPT TO:<b@example.org>", "250")
	c.expect("RCPT TO:<c@example.org>", "250")
	c.expect("RCPT TO:<A+again@example.org>", "250")
	// c@ vanishes between RCPT and DATA: its delivery fails after DATA.
	if err := e.store.DeleteAccount(context.Background(), "c@example.org"); err != nil {
		t.Fatal(err)
	}
	c.expect("DATA", "354")
	msg := "Subject: lmtp\r\n\r\nper recipient\r\n"
	c.send(string(dotStuff([]byte(msg))))
	r1 := c.reply()
	id := deliveredID(t, r1)
	want := []string{
		"250 2.0.0 <a@example.org> Ok: delivered as " + id,
		"250 2.0.0 <b@example.org> Ok: delivered as " + id,
		"550 5.1.1 <c@example.org> <c@example.org>: no such user here",
		"250 2.0.0 <A+again@example.org> Ok: delivered as " + id,
	}
	got := []string{r1, c.reply(), c.reply(), c.reply()}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reply %d: %q, want %q", i, got[i], want[i])
		}
	}
	c.expect("NOOP", "250")
	for _, a := range []string{"a@example.org", "b@example.org"} {
		trace, body := stripTrace(t, e.only(a))
		if string(body) != msg || !strings.Contains(trace, "with LMTP id "+id+"; ") {
			t.Errorf("%s:\n%s%s", a, trace, body)
		}
	}
}

func TestLMTPUniformFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLMTP, withMaxSize(100))
	c := dial(t, e.addr)
	c.greet(true)
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<a@example.org>", "250")
	c.expect("RCPT TO:<b@example.org>", "250")
	c.expect("DATA", "354")
	c.send(string(dotStuff(bytes.Repeat([]byte("x"), 200))))
	c.expectReply("552 5.3.4")
	c.expectReply("552 5.3.4")
	c.expect("NOOP", "250")
}

func TestSMTPPartialFailureIsTemporary(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<a@example.org>", "250")
	c.expect("RCPT TO:<c@example.org>", "250")
	if err := e.store.DeleteAccount(context.Background(), "c@example.org"); err != nil {
		t.Fatal(err)
	}
	c.expect("DATA", "354")
	c.send(string(dotStuff([]byte("Subject: x\r\n\r\nx\r\n"))))
	c.expectReply("451 4.3.0 Delivery failed for some recipients")
	// All recipients gone: the permanent error.
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<b@example.org>", "250")
	if err := e.store.DeleteAccount(context.Background(), "b@example.org"); err != nil {
		t.Fatal(err)
	}
	c.expect("DATA", "354")
	c.send(string(dotStuff([]byte("Subject: x\r\n\r\nx\r\n"))))
	c.expectReply("550 5.1.1 <b@example.org>: no such user here")
}

func TestLongLines(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// In DATA: the message is refused, nothing stored, connection closed.
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<a@example.org>", "250")
	c.expect("DATA", "354")
	c.send("Subject: long\r\n\r\n" + strings.Repeat("x", 2000) + "\r\nmore\r\n.\r\nQUIT\r\n")
	if got := c.reply(); got != "500 5.5.2 Line too long, message rejected, closing connection" {
		t.Errorf("long DATA line: %q", got)
	}
	c.expectEOF()
	if n := e.count("a@example.org"); n != 0 {
		t.Errorf("%d messages stored", n)
	}

	// A line just within the limit is fine (1998 octets + CRLF).
	c = dial(t, e.addr)
	c.greet(false)
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<a@example.org>", "250")
	c.expect("DATA", "354")
	msg := "Subject: long\r\n\r\n" + strings.Repeat("y", 1998) + "\r\n"
	c.send(string(dotStuff([]byte(msg))))
	deliveredID(t, c.reply())
	if _, body := stripTrace(t, e.only("a@example.org")); string(body) != msg {
		t.Errorf("stored %q", body)
	}

	// A command line.
	c = dial(t, e.addr)
	c.greet(false)
	c.send("MAIL FROM:<" + strings.Repeat("x", 2000) + "@client.example>\r\n")
	c.expectReply("500 5.4.0 Too long line, closing connection")
	c.expectEOF()
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	// Long enough for the greeting exchange on a loaded CI machine with
	// the race detector (200 ms once expired between 220 and EHLO).
	e := newEnv(t, func(s *Server) { s.ReadTimeout = time.Second })
	c := dial(t, e.addr)
	c.greet(false)
	// The client waits; the server's timer ends the session.
	c.expectReply("421 4.4.2")
	c.expectEOF()
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// busy: in the middle of DATA when Shutdown starts.
	busy := dial(t, e.addr)
	busy.greet(false)
	busy.expect("MAIL FROM:<s@client.example>", "250")
	busy.expect("RCPT TO:<a@example.org>", "250")
	busy.expect("DATA", "354")
	msg := "Subject: in flight\r\n\r\nfirst half\r\n"
	busy.send("Subject: in flight\r\n\r\n")
	// midTx: MAIL and RCPT given, no DATA yet: idle, refused.
	midTx := dial(t, e.addr)
	midTx.greet(false)
	midTx.expect("MAIL FROM:<s@client.example>", "250")
	midTx.expect("RCPT TO:<b@example.org>", "250")
	// idle: youngest connection, just greeted.
	idle := dial(t, e.addr)
	idle.greet(false)

	done := make(chan error, 1)
	go func() { done <- e.shutdown(context.Background()) }()

	for _, c := range []*client{midTx, idle} {
		if got := c.reply(); got != "421 4.3.2 mx.example.org Service shutting down, closing transmission channel" {
			t.Errorf("idle connection got %q", got)
		}
		c.expectEOF()
	}
	// Connections are told oldest first, so busy knows about the shutdown
	// now; the server must still be waiting for it.
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a DATA transfer was in progress", err)
	default:
	}
	if _, err := net.Dial("tcp", e.addr); err == nil {
		t.Error("new connection accepted during shutdown")
	}
	busy.send("first half\r\n.\r\n")
	deliveredID(t, busy.reply())
	busy.expectReply("421 4.3.2")
	busy.expectEOF()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, body := stripTrace(t, e.only("a@example.org")); string(body) != msg {
		t.Errorf("in-flight message stored as %q", body)
	}
	if n := e.count("b@example.org"); n != 0 {
		t.Errorf("b@ got %d messages", n)
	}
}

func TestShutdownDuringBDATAndTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withTLS)
	busy := dial(t, e.addr)
	busy.greet(false)
	busy.expect("STARTTLS", "220")
	busy = busy.startTLS(e)
	busy.expect("EHLO client.example", "250")
	busy.expect("MAIL FROM:<s@client.example>", "250")
	busy.expect("RCPT TO:<a@example.org>", "250")
	busy.send("BDAT 6\r\nSubjec")
	busy.expectReply("250")

	idle := dial(t, e.addr)
	idle.greet(false)
	idle.expect("STARTTLS", "220")
	idle = idle.startTLS(e)
	idle.expect("EHLO client.example", "250")

	done := make(chan error, 1)
	go func() { done <- e.shutdown(context.Background()) }()
	// Through TLS.
	idle.expectReply("421 4.3.2")
	idle.expectEOF()
	busy.send("BDAT 8 LAST\r\nt: x\r\n\r\n")
	deliveredID(t, busy.reply())
	busy.expectReply("421 4.3.2")
	busy.expectEOF()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, body := stripTrace(t, e.only("a@example.org")); string(body) != "Subject: x\r\n\r\n" {
		t.Errorf("stored %q", body)
	}
}

func TestShutdownContextExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	busy := dial(t, e.addr)
	busy.greet(false)
	busy.expect("MAIL FROM:<s@client.example>", "250")
	busy.expect("RCPT TO:<a@example.org>", "250")
	busy.expect("DATA", "354")
	busy.send("Subject: never finished\r\n")
	idle := dial(t, e.addr)
	idle.greet(false)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.shutdown(ctx) }()
	idle.expectReply("421 4.3.2")
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Shutdown = %v, want context.Canceled", err)
	}
	busy.expectEOF()
	if n := e.count("a@example.org"); n != 0 {
		t.Errorf("%d messages stored", n)
	}
}

func TestSTARTTLSDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withTLS)
	c := dial(t, e.addr)
	c.greet(false)
	c.expect("STARTTLS", "220 2.0.0")
	tc := c.startTLS(e)
	tc.expect("EHLO client.example", "250")
	tc.expect("MAIL FROM:<s@client.example>", "250")
	tc.expect("RCPT TO:<a@example.org>", "250")
	tc.expect("DATA", "354")
	tc.send(string(dotStuff([]byte("Subject: tls\r\n\r\nsecret\r\n"))))
	id := deliveredID(t, tc.reply())
	trace, _ := stripTrace(t, e.only("a@example.org"))
	re := regexp.MustCompile(`\AReturn-Path: <s@client\.example>\r\n` +
		`Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n` +
		`\t\(using TLSv1\.3 with cipher TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|CHACHA20_POLY1305_SHA256)\)\r\n` +
		`\tby mx\.example\.org with ESMTPS id ` + id + `\r\n` +
		`\tfor <a@example\.org>; ` + receivedDateRE + `\r\n\z`)
	if !re.MatchString(trace) {
		t.Errorf("trace fields:\n%s", trace)
	}
	if !strings.Contains(e.logs.String(), "tls=\"TLS 1.3 TLS_") {
		t.Error("no TLS in the helo log line")
	}
}

func TestSessionOrderErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := dial(t, e.addr)
	c.expectReply("220")
	c.expect("MAIL FROM:<s@client.example>", "502 5.5.1") // before EHLO (go-smtp uses 502, not 503)
	c.expect("EHLO client.example", "250")
	c.expect("RCPT TO:<a@example.org>", "502 5.5.1")
	c.expect("DATA", "502 5.5.1")
	c.expect("VRFY a@example.org", "252")
	c.expect("EXPN list", "502")
}

func TestLMTPUnixSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLMTP)
	path := filepath.Join(t.TempDir(), "lmtp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(l) }() // a second listener on the same Server
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.greet(true)
	c.expect("MAIL FROM:<s@client.example>", "250")
	c.expect("RCPT TO:<a@example.org>", "250")
	c.expect("DATA", "354")
	c.send(string(dotStuff([]byte("Subject: unix\r\n\r\nx\r\n"))))
	id := deliveredID(t, c.reply())
	trace, _ := stripTrace(t, e.only("a@example.org"))
	want := regexp.MustCompile(`\AReturn-Path: <s@client\.example>\r\nReceived: from client\.example\r\n\tby mx\.example\.org with LMTP id ` +
		id + `\r\n\tfor <a@example\.org>; ` + receivedDateRE + "\r\n\\z")
	if !want.MatchString(trace) {
		t.Errorf("trace %q", trace)
	}
	if err := e.shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.expectReply("421 4.3.2")
	c.expectEOF()
	if err := <-served; err != nil {
		t.Errorf("Serve(unix) = %v", err)
	}
}

// TestBDATAbortedThenNewTransaction: RSET in the middle of a BDAT transfer
// discards it, and the next transaction on the connection works.
func TestBDATAbortedThenNewTransaction(t *testing.T) {
	t.Parallel()
	if raceEnabled {
		t.Skip("trips go-smtp v0.25.1's own data race on aborted BDAT transfers (see session.Reset)")
	}
	for _, lmtp := range []bool{false, true} {
		opts := []envOpt{}
		if lmtp {
			opts = append(opts, withLMTP)
		}
		e := newEnv(t, opts...)
		c := dial(t, e.addr)
		c.greet(lmtp)
		for range 20 {
			c.expect("MAIL FROM:<s@client.example>", "250")
			c.expect("RCPT TO:<a@example.org>", "250")
			c.send("BDAT 5\r\nhello")
			c.expectReply("250 2.0.0")
			c.expect("RSET", "250")
			c.expect("MAIL FROM:<s@client.example>", "250")
			c.expect("RCPT TO:<b@example.org>", "250")
			c.send("BDAT 3 LAST\r\nxyz")
			deliveredID(t, c.reply())
		}
		if n := e.count("a@example.org"); n != 0 {
			t.Errorf("aborted transfers stored %d messages", n)
		}
		msgs, bodies := e.messages("b@example.org")
		if len(msgs) != 20 {
			t.Fatalf("b@ has %d messages, want 20", len(msgs))
		}
		for _, b := range bodies {
			if _, body := stripTrace(t, b); string(body) != "xyz" {
				t.Errorf("stored %q", body)
			}
		}
	}
}
