package server

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// Found by TestSoak: a POP3 RETR sets \Seen on a message, QUIT expunges
// it, and an IMAP session that still has it in its view runs UID FETCH on
// it. The FETCH leaves the message out (it is gone); the changes reported
// after it must not include a FETCH (FLAGS) for it before its EXPUNGE:
// go-imap v2 takes that as the command's answer for the UID and returns
// the message without the data asked for.
func TestSoakFlagsOfExpungedMessage(t *testing.T) {
	srv, _ := startServer(t, "", "imap = \"127.0.0.1:0\"\nlmtp = \"127.0.0.1:0\"")
	ctx := context.Background()
	a, err := srv.Store.CreateAccount(ctx, soakAccount(0), cheapHash(soakPassword))
	if err != nil {
		t.Fatal(err)
	}
	h := &soakHarness{addr: map[string]string{"lmtp": srv.Addr("lmtp").String()}, accounts: 1,
		sessionTimeout: time.Minute, ledger: newSoakLedger(), stats: &soakStats{}}
	h.lmtpSession(rand.New(rand.NewPCG(1, 2)), 2)
	if n := h.stats.errors.Load(); n > 0 {
		t.Fatal(h.stats.errorList())
	}
	mb, err := srv.Store.Mailbox(ctx, a.ID, mailstore.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	seenThenExpunge := func(uid mailstore.UID) {
		t.Helper()
		if _, _, err := srv.Store.StoreFlags(ctx, mb.ID, []mailstore.UID{uid}, mailstore.FlagsAdd, []string{mailstore.FlagSeen}, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Store.Expunge(ctx, mb.ID, []mailstore.UID{uid}); err != nil {
			t.Fatal(err)
		}
	}

	// On the wire.
	c := dialText(t, srv.Addr("imap"))
	c.line()
	c.cmd("a LOGIN " + soakAccount(0) + ` "` + soakPassword + `"`)
	c.c.Write([]byte("b SELECT INBOX\r\n"))
	for l := c.line(); !strings.HasPrefix(l, "b "); l = c.line() {
	}
	seenThenExpunge(1)
	c.c.Write([]byte("c UID FETCH 1:2 (UID ENVELOPE)\r\n"))
	var got []string
	for l := c.line(); ; l = c.line() {
		got = append(got, l)
		if strings.HasPrefix(l, "c ") {
			break
		}
	}
	if len(got) != 3 || !strings.HasPrefix(got[0], "* 2 FETCH (UID 2 ENVELOPE (") || got[1] != "* 1 EXPUNGE" || got[2] != "c OK FETCH completed" {
		t.Errorf("UID FETCH of an expunged and a present message:\n%s", strings.Join(got, "\n"))
	}

	// What go-imap makes of it.
	g, err := imapclient.DialInsecure(srv.Addr("imap").String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Login(soakAccount(0), soakPassword).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	seenThenExpunge(2)
	msgs, err := g.Fetch(imap.UIDSetNum(2), &imap.FetchOptions{UID: true, Envelope: true}).Collect()
	if err != nil || len(msgs) != 0 {
		for _, m := range msgs {
			t.Errorf("go-imap got UID %d with envelope %v, flags %v", m.UID, m.Envelope, m.Flags)
		}
		t.Errorf("UID FETCH of an expunged message: %d messages, %v", len(msgs), err)
	}
}
