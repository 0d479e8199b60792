package server

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/config"
)

// [limits] reaches every listener, and the connection limit is one pool
// for all protocols.
func TestLimitsWired(t *testing.T) {
	srv, logs := startServer(t, "[limits]\nmax_connections = 2\nlogin_block_after = 3\n",
		"imap = \"127.0.0.1:0\"\npop3 = \"127.0.0.1:0\"\nsmtp = \"127.0.0.1:0\"")
	greet := func(listener string) string {
		t.Helper()
		c, err := net.Dial("tcp", srv.Addr(listener).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(time.Minute))
		l, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", listener, err)
		}
		return l
	}
	if g := greet("imap"); !strings.Contains(g, " APPENDLIMIT=52428800 ") {
		t.Fatalf("IMAP greeting %q: APPENDLIMIT is not max_message_size", g)
	}
	if g := greet("pop3"); !strings.HasPrefix(g, "+OK ") {
		t.Fatalf("POP3 greeting %q", g)
	}
	if g := greet("smtp"); g != "421 4.7.0 mail.example.org Too many connections, try again later\r\n" {
		t.Fatalf("third connection got %q", g)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="connection refused: too many connections" listener=smtp remote=127.0.0.1:`) {
		t.Fatalf("refusal not logged:\n%s", logs.String())
	}
	th := srv.Auth.Throttle
	if th.BlockAfter != 3 || th.BlockFor != config.DefaultLoginBlockDuration || th.MaxDelay != config.DefaultLoginMaxDelay ||
		th.BaseDelay != config.DefaultLoginFailureDelay || th.MaxEntries != config.DefaultLoginMaxTracked {
		t.Fatalf("throttle not from [limits]: %+v", th)
	}
	lim := srv.Limiter
	if lim.MaxConnsPerAddr != config.DefaultMaxConnectionsPerIP || lim.MaxSessionsPerAccount != config.DefaultMaxSessionsPerAccount ||
		!lim.ExemptAddr(netip.MustParseAddr("::1")) || !lim.ExemptAddr(netip.MustParseAddr("127.0.0.2")) ||
		lim.ExemptAddr(netip.MustParseAddr("192.0.2.1")) {
		t.Fatalf("limiter not from [limits]: %+v", lim)
	}
}
