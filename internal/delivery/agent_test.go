package delivery

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

var fixedNow = time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("", 3600))

func newTestAgent(t *testing.T, accounts ...string) (*Agent, *sqlite.Store, *bytes.Buffer) {
	t.Helper()
	store, err := sqlite.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	for _, a := range accounts {
		if _, err := store.CreateAccount(context.Background(), a, ""); err != nil {
			t.Fatalf("CreateAccount(%q): %v", a, err)
		}
	}
	var logs bytes.Buffer
	return &Agent{
		Store:    store,
		Hostname: "mx.example.org",
		Domains:  []string{"Example.ORG", "other.example"},
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
		now:      func() time.Time { return fixedNow },
	}, store, &logs
}

// inbox returns the stored bodies of the account's INBOX, in UID order.
func inbox(t *testing.T, store mailstore.Store, account string) ([]mailstore.Message, [][]byte) {
	t.Helper()
	ctx := context.Background()
	acct, err := store.Account(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := store.Mailbox(ctx, acct.ID, mailstore.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := store.Messages(ctx, mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	for _, m := range msgs {
		b, err := store.OpenBlob(ctx, m.BlobID)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(b)
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, data)
	}
	return msgs, bodies
}

func kindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

func TestResolve(t *testing.T) {
	a, _, _ := newTestAgent(t, "user@example.org", "tagged+literal@example.org", "postmaster@other.example",
		"jörg@example.org", "x@other.example")
	ctx := context.Background()
	tests := []struct {
		addr    string
		account string
		kind    Kind
	}{
		{"user@example.org", "user@example.org", 0},
		{"USER@EXAMPLE.ORG", "user@example.org", 0},
		{"<User@Example.Org>", "user@example.org", 0},
		{"user+news@example.org", "user@example.org", 0},
		{"user+@example.org", "user@example.org", 0},
		{"user+a+b@example.org", "user@example.org", 0},
		{`"user"@example.org`, "user@example.org", 0},
		{"tagged+literal@example.org", "tagged+literal@example.org", 0}, // literal '+' account wins
		{"tagged+other@example.org", "", KindNoSuchUser},
		{"Jörg@example.org", "jörg@example.org", 0},
		{"JÖRG+x@EXAMPLE.org", "jörg@example.org", 0},
		{"nobody@example.org", "", KindNoSuchUser},
		{"+user@example.org", "", KindNoSuchUser},
		{`"john doe"@example.org`, "", KindNoSuchUser},
		{"user@example.net", "", KindRelayDenied},
		{"user@sub.example.org", "", KindRelayDenied},
		{"user@[127.0.0.1]", "", KindRelayDenied},
		{"user@", "", KindBadAddress},
		{"x@Other.Example", "x@other.example", 0},
		// postmaster: own account if any, else the first domain's that has one.
		{"postmaster@other.example", "postmaster@other.example", 0},
		{"PostMaster@example.org", "postmaster@other.example", 0},
		{"postmaster+bounces@example.org", "postmaster@other.example", 0},
	}
	for _, tt := range tests {
		r, err := a.Resolve(ctx, tt.addr)
		if tt.kind != 0 {
			if kindOf(err) != tt.kind {
				t.Errorf("Resolve(%q) = %+v, %v; want kind %v", tt.addr, r, err, tt.kind)
			}
			continue
		}
		if err != nil || r.Account != tt.account || r.Mailbox != mailstore.Inbox || r.AccountID == 0 {
			t.Errorf("Resolve(%q) = %+v, %v; want account %q", tt.addr, r, err, tt.account)
		}
	}
}

func TestResolvePostmasterNotConfigured(t *testing.T) {
	a, _, logs := newTestAgent(t, "user@example.org")
	_, err := a.Resolve(context.Background(), "Postmaster@example.org")
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindNotConfigured || !e.Temporary() {
		t.Fatalf("Resolve(postmaster) = %v, want temporary KindNotConfigured", err)
	}
	code, enh, _ := e.SMTPStatus()
	if code != 451 || enh != [3]int{4, 3, 5} || e.ExitCode() != ExitTempFail {
		t.Errorf("postmaster not configured: %d %v exit %d", code, enh, e.ExitCode())
	}
	if !strings.Contains(logs.String(), "create=postmaster@example.org") {
		t.Errorf("no log line telling to create the postmaster account:\n%s", logs.String())
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		kind Kind
		code int
		enh  [3]int
		exit int
	}{
		{KindBadAddress, 501, [3]int{5, 1, 3}, ExitDataErr},
		{KindBadSender, 501, [3]int{5, 1, 7}, ExitDataErr},
		{KindRelayDenied, 554, [3]int{5, 7, 1}, ExitNoUser},
		{KindNoSuchUser, 550, [3]int{5, 1, 1}, ExitNoUser},
		{KindTooBig, 552, [3]int{5, 3, 4}, ExitDataErr},
		{KindNotConfigured, 451, [3]int{4, 3, 5}, ExitTempFail},
		{KindTempFail, 451, [3]int{4, 3, 0}, ExitTempFail},
		{KindOverQuota, 552, [3]int{5, 2, 2}, ExitNoPerm},
		{KindOverQuotaTemp, 452, [3]int{4, 2, 2}, ExitTempFail},
	}
	for _, tt := range tests {
		e := &Error{Kind: tt.kind, Msg: "x"}
		code, enh, text := e.SMTPStatus()
		if code != tt.code || enh != tt.enh || text != "x" || ExitCode(e) != tt.exit {
			t.Errorf("%v: %d %v %q exit %d", tt.kind, code, enh, text, ExitCode(e))
		}
		if e.Temporary() != (code/100 == 4) {
			t.Errorf("%v: Temporary() = %v for code %d", tt.kind, e.Temporary(), code)
		}
	}
	if ExitCode(nil) != 0 || ExitCode(errors.New("x")) != ExitTempFail {
		t.Error("ExitCode(nil / plain error)")
	}
	nouser := &Error{Kind: KindNoSuchUser}
	temp := &Error{Kind: KindTempFail}
	if got := ExitCodeAll([]error{nil, nouser, temp}); got != ExitTempFail {
		t.Errorf("ExitCodeAll(nil, nouser, temp) = %d", got)
	}
	if got := ExitCodeAll([]error{nil, nouser}); got != ExitNoUser {
		t.Errorf("ExitCodeAll(nil, nouser) = %d", got)
	}
	if got := ExitCodeAll([]error{nil, nil}); got != 0 {
		t.Errorf("ExitCodeAll(nil, nil) = %d", got)
	}
}

func resolveAll(t *testing.T, a *Agent, addrs ...string) []Recipient {
	t.Helper()
	var rs []Recipient
	for _, s := range addrs {
		r, err := a.Resolve(context.Background(), s)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", s, err)
		}
		rs = append(rs, r)
	}
	return rs
}

func TestDeliverTraceFieldsSMTP(t *testing.T) {
	a, store, logs := newTestAgent(t, "user@example.org")
	body := "Message-ID:\r\n <abc@client.example>\r\nSubject: hi\r\n\r\nbody\r\n"
	env := &Envelope{
		From:       "sender@client.example",
		Recipients: resolveAll(t, a, "User+tag@Example.org"),
		Protocol:   "ESMTPS",
		Helo:       "client.example",
		RemoteAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4242},
		TLS:        &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256},
		ID:         "TESTID",
	}
	errs := a.Deliver(context.Background(), env, strings.NewReader(body))
	if len(errs) != 1 || errs[0] != nil {
		t.Fatalf("Deliver: %v", errs)
	}
	want := "Return-Path: <sender@client.example>\r\n" +
		"Received: from client.example ([192.0.2.7])\r\n" +
		"\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n" +
		"\tby mx.example.org with ESMTPS id TESTID\r\n" +
		"\tfor <User+tag@Example.org>; Tue, 04 Mar 2025 05:06:07 +0100\r\n" + body
	msgs, bodies := inbox(t, store, "user@example.org")
	if len(bodies) != 1 || string(bodies[0]) != want {
		t.Fatalf("stored:\n%q\nwant:\n%q", bodies, want)
	}
	if msgs[0].Size != int64(len(want)) || !msgs[0].InternalDate.Equal(fixedNow) || msgs[0].HasFlag(mailstore.FlagSeen) {
		t.Errorf("message %+v", msgs[0])
	}
	for _, w := range []string{"id=TESTID", "message_id=<abc@client.example>", "size=" + strconv.Itoa(len(body)), "result=delivered"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, logs.String())
		}
	}
	if strings.Contains(logs.String(), "body\r\n") || strings.Contains(logs.String(), "Subject") {
		t.Errorf("log contains message content:\n%s", logs.String())
	}
}

func TestDeliverTraceFieldVariants(t *testing.T) {
	a, _, _ := newTestAgent(t, "user@example.org", "x@other.example")
	date := "Tue, 04 Mar 2025 05:06:07 +0100"
	one := resolveAll(t, a, "user@example.org")
	two := resolveAll(t, a, "user@example.org", "x@other.example")
	tests := []struct {
		name string
		env  Envelope
		want string
	}{
		{"local", Envelope{From: "MAILER-DAEMON", Recipients: one, ID: "I"},
			"Return-Path: <MAILER-DAEMON>\r\nReceived: by mx.example.org (letterbox deliver) id I\r\n\tfor <user@example.org>; " + date + "\r\n"},
		{"null sender, two rcpts, IPv6, no TLS", Envelope{Recipients: two, ID: "I", Protocol: "LMTP", Helo: "mta.example",
			RemoteAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}},
			"Return-Path: <>\r\nReceived: from mta.example ([IPv6:2001:db8::1])\r\n\tby mx.example.org with LMTP id I; " + date + "\r\n"},
		{"invalid HELO replaced by the address literal", Envelope{Recipients: one, ID: "I", Protocol: "ESMTP", Helo: "bad(helo);x",
			RemoteAddr: &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}},
			"Return-Path: <>\r\nReceived: from [192.0.2.1] ([192.0.2.1])\r\n\tby mx.example.org with ESMTP id I\r\n\tfor <user@example.org>; " + date + "\r\n"},
		{"unix socket", Envelope{Recipients: one, ID: "I", Protocol: "LMTP", Helo: "[127.0.0.1]",
			RemoteAddr: &net.UnixAddr{Name: "@", Net: "unix"}},
			"Return-Path: <>\r\nReceived: from [127.0.0.1]\r\n\tby mx.example.org with LMTP id I\r\n\tfor <user@example.org>; " + date + "\r\n"},
	}
	for _, tt := range tests {
		if got := a.traceFields(&tt.env, fixedNow); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

func TestDeliverOnceForSeveralRecipients(t *testing.T) {
	a, store, _ := newTestAgent(t, "a@example.org", "b@example.org", "c@other.example")
	rcpts := resolveAll(t, a, "a@example.org", "b@example.org", "c@other.example", "A+dup@example.org")
	env := &Envelope{From: "s@x.example", Recipients: rcpts, Protocol: "ESMTP", Helo: "x.example"}
	errs := a.Deliver(context.Background(), env, strings.NewReader("Subject: x\r\n\r\nhello\r\n"))
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rcpt %d: %v", i, err)
		}
	}
	var blob string
	for _, acct := range []string{"a@example.org", "b@example.org", "c@other.example"} {
		msgs, bodies := inbox(t, store, acct)
		if len(msgs) != 1 {
			t.Fatalf("%s has %d messages, want 1 (duplicates of one mailbox are merged)", acct, len(msgs))
		}
		if blob == "" {
			blob = msgs[0].BlobID
		} else if msgs[0].BlobID != blob {
			t.Errorf("%s: blob %s, want the shared %s", acct, msgs[0].BlobID, blob)
		}
		if bytes.Contains(bodies[0], []byte("\tfor <")) {
			t.Errorf("Received: has a for clause with several recipients:\n%s", bodies[0])
		}
	}
}

func TestDeliverSizeLimit(t *testing.T) {
	a, store, _ := newTestAgent(t, "user@example.org")
	a.MaxMessageSize = 100
	rcpts := resolveAll(t, a, "user@example.org")
	exact := strings.Repeat("x", 98) + "\r\n"
	if errs := a.Deliver(context.Background(), &Envelope{Recipients: rcpts}, strings.NewReader(exact)); errs[0] != nil {
		t.Fatalf("message of exactly MaxMessageSize: %v", errs[0])
	}
	errs := a.Deliver(context.Background(), &Envelope{Recipients: rcpts}, strings.NewReader(exact+"y"))
	var e *Error
	if !errors.As(errs[0], &e) || e.Kind != KindTooBig {
		t.Fatalf("message of MaxMessageSize+1: %v", errs[0])
	}
	if code, enh, _ := e.SMTPStatus(); code != 552 || enh != [3]int{5, 3, 4} {
		t.Errorf("too big: %d %v", code, enh)
	}
	// A transport saying "too large" is KindTooBig too.
	r := io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(errors.Join(ErrMessageTooLarge)))
	if errs := a.Deliver(context.Background(), &Envelope{Recipients: rcpts}, r); kindOf(errs[0]) != KindTooBig {
		t.Errorf("ErrMessageTooLarge from reader: %v", errs[0])
	}
	if msgs, _ := inbox(t, store, "user@example.org"); len(msgs) != 1 {
		t.Errorf("%d messages stored, want 1", len(msgs))
	}
	if a.MaxMessageSize = 0; a.MaxSize() != 50<<20 {
		t.Errorf("default MaxSize %d", a.MaxSize())
	}
}

func TestDeliverReadError(t *testing.T) {
	a, store, _ := newTestAgent(t, "user@example.org")
	rcpts := resolveAll(t, a, "user@example.org")
	r := io.MultiReader(strings.NewReader("Subject: x\r\n\r\npartial"), iotest.ErrReader(io.ErrUnexpectedEOF))
	errs := a.Deliver(context.Background(), &Envelope{Recipients: rcpts}, r)
	var e *Error
	if !errors.As(errs[0], &e) || e.Kind != KindTempFail || !errors.Is(errs[0], io.ErrUnexpectedEOF) {
		t.Fatalf("read error: %v", errs[0])
	}
	if msgs, _ := inbox(t, store, "user@example.org"); len(msgs) != 0 {
		t.Errorf("%d messages stored after a read error", len(msgs))
	}
}

func TestDeliverBadSender(t *testing.T) {
	a, _, _ := newTestAgent(t, "user@example.org")
	rcpts := resolveAll(t, a, "user@example.org")
	for _, from := range []string{"a b@x", "a>@x", "x\r\nX-Injected: 1"} {
		errs := a.Deliver(context.Background(), &Envelope{From: from, Recipients: rcpts}, strings.NewReader("x\r\n"))
		if kindOf(errs[0]) != KindBadSender {
			t.Errorf("From %q: %v", from, errs[0])
		}
	}
}

func TestDeliverAccountVanished(t *testing.T) {
	a, store, _ := newTestAgent(t, "a@example.org", "b@example.org")
	rcpts := resolveAll(t, a, "a@example.org", "b@example.org")
	if err := store.DeleteAccount(context.Background(), "b@example.org"); err != nil {
		t.Fatal(err)
	}
	errs := a.Deliver(context.Background(), &Envelope{Recipients: rcpts}, strings.NewReader("x\r\n"))
	if errs[0] != nil || kindOf(errs[1]) != KindNoSuchUser {
		t.Fatalf("errs = %v, want [nil, no-such-user]", errs)
	}
	if msgs, _ := inbox(t, store, "a@example.org"); len(msgs) != 1 {
		t.Errorf("a@ has %d messages", len(msgs))
	}
}

func TestDeliverNoRecipients(t *testing.T) {
	a, _, _ := newTestAgent(t)
	if errs := a.Deliver(context.Background(), &Envelope{}, strings.NewReader("x")); len(errs) != 0 {
		t.Errorf("errs = %v", errs)
	}
}

func TestHeaderSniffer(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Message-ID: <a@b>\r\n\r\nMessage-ID: <body@x>\r\n", "<a@b>"},
		{"Subject: x\nmessage-id :\n\t<c@d>\n\nbody", "<c@d>"},
		{"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n", ""},
		{"\r\nMessage-ID: <x@y>\r\n", ""},
		{"X-Message-ID: <no@no>\r\nMessage-Id: <yes@yes>\r\n", "<yes@yes>"},
	}
	for _, tt := range tests {
		h := &headerSniffer{}
		for i := range len(tt.in) { // byte by byte: boundaries anywhere
			h.Write([]byte{tt.in[i]})
		}
		if got := h.messageID(); got != tt.want {
			t.Errorf("messageID(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	h := &headerSniffer{}
	h.Write([]byte("Message-ID: <" + strings.Repeat("x", 1000) + ">\r\n\r\n"))
	if got := h.messageID(); len(got) != 256 {
		t.Errorf("long Message-ID not truncated: %d", len(got))
	}
	h = &headerSniffer{}
	h.Write(bytes.Repeat([]byte("X: y\r\n"), 20000))
	if len(h.buf) != maxSniff {
		t.Errorf("sniffer kept %d octets", len(h.buf))
	}
}

func TestNewID(t *testing.T) {
	a, b := NewID(), NewID()
	if len(a) != 16 || a == b || strings.ContainsAny(a, "=/+") {
		t.Errorf("NewID() = %q, %q", a, b)
	}
}
