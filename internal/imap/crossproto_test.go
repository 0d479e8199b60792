package imap

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/pop3"
)

// TestIdleSeesPOP3Deletion: a POP3 session deletes a message (DELE, QUIT)
// while an IMAP session is in IDLE on INBOX; the IMAP client is told at
// once.
func TestIdleSeesPOP3Deletion(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.deliverN(2)
	a := e.login()
	e.selectInbox(a, "a1", 2, 1)
	a.send("a2 IDLE")
	a.expect("+ idling")

	ps := &pop3.Server{Store: e.store, Auth: e.srv.Auth, Hostname: testHost}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ps.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		ps.Shutdown(ctx)
	})
	pc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(ioTimeout))
	pr := bufio.NewReader(pc)
	expectOK := func() {
		t.Helper()
		l, err := pr.ReadString('\n')
		if err != nil || !strings.HasPrefix(l, "+OK") {
			t.Fatalf("pop3: %q, %v", l, err)
		}
	}
	expectOK()
	for _, cmd := range []string{"USER " + testUser, "PASS " + testPassword, "DELE 1", "QUIT"} {
		pc.Write([]byte(cmd + "\r\n"))
		expectOK()
	}
	start := time.Now()
	a.expect("* 1 EXPUNGE")
	if d := time.Since(start); d > time.Second {
		t.Errorf("EXPUNGE took %v", d)
	}
	a.send("DONE")
	a.expect("a2 OK IDLE terminated")
	a.exchange("a3", "UID FETCH 1:* UID", "* 1 FETCH (UID 2)", "a3 OK FETCH completed")
}
