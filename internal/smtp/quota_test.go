package smtp

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

func withOverQuotaDefer(s *Server) { s.Agent.OverQuotaTemporary = true }

// fill stores one message in the account's INBOX and sets its quota to
// roomBytes octets more than it uses now, and at most maxMessages messages
// (0: no limit).
func (e *testEnv) fill(account string, roomBytes, maxMessages int64) {
	e.t.Helper()
	ctx := context.Background()
	acct, err := e.store.Account(ctx, account)
	if err != nil {
		e.t.Fatal(err)
	}
	mb, err := e.store.Mailbox(ctx, acct.ID, mailstore.Inbox)
	if err != nil {
		e.t.Fatal(err)
	}
	sp, err := e.store.NewSpool()
	if err != nil {
		e.t.Fatal(err)
	}
	sp.Write([]byte("Subject: already here\r\n\r\nold\r\n"))
	if _, err := e.store.Append(ctx, mb.ID, sp, nil, time.Time{}); err != nil {
		e.t.Fatal(err)
	}
	u, err := e.store.Usage(ctx, acct.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.SetQuota(ctx, account, u.Bytes+roomBytes, maxMessages); err != nil {
		e.t.Fatal(err)
	}
}

// overQuotaReply is the exact reply text (after the code) for a recipient
// over quota, permanent or temporary.
func overQuotaReply(temporary bool) (int, string) {
	if temporary {
		return 452, "4.2.2 Mailbox is full (quota exceeded), try again later"
	}
	return 552, "5.2.2 Mailbox is full (quota exceeded)"
}

// TestPythonQuotaAtRcpt: with Python's smtplib over SMTP and LMTP, a
// recipient whose account is full is refused at RCPT with exactly 552 5.2.2
// (or 452 4.2.2 with over_quota = "defer"), while the other recipient of
// the same message gets 250 and the message.
func TestPythonQuotaAtRcpt(t *testing.T) {
	t.Parallel()
	for _, lmtp := range []bool{false, true} {
		for _, temporary := range []bool{false, true} {
			name := map[bool]string{false: "smtp", true: "lmtp"}[lmtp] + "/" + map[bool]string{false: "reject", true: "defer"}[temporary]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var opts []envOpt
				args := []string{"--from", "sender@client.example", "--to", "a@example.org", "--to", "b@example.org"}
				if lmtp {
					opts = append(opts, withLMTP)
					args = append(args, "--lmtp")
				}
				if temporary {
					opts = append(opts, withOverQuotaDefer)
				}
				e := newEnv(t, opts...)
				e.fill("a@example.org", 1<<20, 1) // full by message count
				r := sendPython(t, e, pyBody, args...)
				if r.Error != nil {
					t.Fatalf("smtplib error %v", r.Error)
				}
				wantCode, wantText := overQuotaReply(temporary)
				if code, text := replyOf(t, r.Refused["a@example.org"]); len(r.Refused) != 1 || code != wantCode || text != wantText {
					t.Fatalf("refused %v; want a@example.org: %d %q", r.Refused, wantCode, wantText)
				}
				if len(r.Replies) != 1 {
					t.Fatalf("replies %v, want one", r.Replies)
				}
				code, text := replyOf(t, r.Replies[0])
				wantOK := "2.0.0 Ok: delivered as "
				if lmtp {
					wantOK = "2.0.0 <b@example.org> Ok: delivered as "
				}
				if code != 250 || !strings.HasPrefix(text, wantOK) {
					t.Fatalf("DATA reply %d %q, want 250 %q...", code, text, wantOK)
				}
				if _, body := stripTrace(t, e.only("b@example.org")); !bytes.Equal(body, r.sent(t)) {
					t.Errorf("b@ got %q, want %q", body, r.sent(t))
				}
				if n := e.count("a@example.org"); n != 1 {
					t.Errorf("a@ has %d messages, want its 1 old one", n)
				}
			})
		}
	}
}

// TestPythonLMTPQuotaAtData: the RCPT check lets a recipient through when
// its account has room for a small message (no SIZE declared), and the
// store's check at delivery refuses the actual message; LMTP reports that
// in the recipient's own reply after DATA (RFC 2033 §4.2), the other
// recipient gets 250 and the message.
func TestPythonLMTPQuotaAtData(t *testing.T) {
	t.Parallel()
	for _, temporary := range []bool{false, true} {
		t.Run(map[bool]string{false: "reject", true: "defer"}[temporary], func(t *testing.T) {
			t.Parallel()
			opts := []envOpt{withLMTP}
			if temporary {
				opts = append(opts, withOverQuotaDefer)
			}
			e := newEnv(t, opts...)
			e.fill("a@example.org", 10, 0) // 10 octets of room
			r := sendPython(t, e, pyBody, "--lmtp", "--from", "sender@client.example",
				"--to", "b@example.org", "--to", "a@example.org")
			if r.Error != nil || len(r.Refused) != 0 {
				t.Fatalf("smtplib error %v, refused %v", r.Error, r.Refused)
			}
			if len(r.Replies) != 2 {
				t.Fatalf("replies %v, want one per recipient", r.Replies)
			}
			if code, text := replyOf(t, r.Replies[0]); code != 250 || !strings.HasPrefix(text, "2.0.0 <b@example.org> Ok: delivered as ") {
				t.Errorf("b@: %d %q", code, text)
			}
			wantCode, wantText := overQuotaReply(temporary)
			wantText = wantText[:6] + "<a@example.org> " + wantText[6:]
			if code, text := replyOf(t, r.Replies[1]); code != wantCode || text != wantText {
				t.Errorf("a@: %d %q, want %d %q", code, text, wantCode, wantText)
			}
			if _, body := stripTrace(t, e.only("b@example.org")); !bytes.Equal(body, r.sent(t)) {
				t.Errorf("b@ got %q", body)
			}
			if n := e.count("a@example.org"); n != 1 {
				t.Errorf("a@ has %d messages, want its 1 old one", n)
			}
		})
	}
}

// TestSMTPQuota drives the MX by hand: the size declared with MAIL ...
// SIZE= (RFC 1870) makes RCPT refuse an account without room for it (a
// 552 to RCPT, RFC 5321 §4.3.2); without SIZE the refusal comes after
// DATA, as the one reply of the transaction.
func TestSMTPQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fill("a@example.org", 100, 0)
	c := dial(t, e.addr)
	c.greet(false)
	msg := []byte("Subject: big\r\n\r\n" + strings.Repeat("x", 200) + "\r\n")
	c.expect("MAIL FROM:<s@client.example> SIZE=101", "250 ")
	if got := c.cmd("RCPT TO:<a@example.org>"); got != "552 5.2.2 Mailbox is full (quota exceeded)" {
		t.Fatalf("RCPT with SIZE=101: %q", got)
	}
	c.expect("RSET", "250 ")
	c.expect("MAIL FROM:<s@client.example> SIZE=100", "250 ")
	c.expect("RCPT TO:<a@example.org>", "250 ")
	c.expect("RSET", "250 ")
	c.expect("MAIL FROM:<s@client.example>", "250 ")
	c.expect("RCPT TO:<a@example.org>", "250 ")
	c.expect("DATA", "354 ")
	c.send(string(dotStuff(msg)))
	if got := c.reply(); got != "552 5.2.2 Mailbox is full (quota exceeded)" {
		t.Fatalf("DATA over quota: %q", got)
	}
	if n := e.count("a@example.org"); n != 1 {
		t.Fatalf("a@ has %d messages, want 1", n)
	}
	c.expect("QUIT", "221 ")
}
