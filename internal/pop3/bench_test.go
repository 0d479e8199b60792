package pop3

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

// BenchmarkRETR measures download throughput: one session retrieves every
// message of a 200-message mailbox (about 40 KiB each) over loopback.
func BenchmarkRETR(b *testing.B) {
	st, err := sqlite.Open(b.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	acct, _ := st.CreateAccount(ctx, testUser, cheapHash(testPassword))
	inbox, _ := st.Mailbox(ctx, acct.ID, mailstore.Inbox)
	const n = 200
	var total int64
	for i := range n {
		var sb strings.Builder
		fmt.Fprintf(&sb, "From: a@example.org\r\nSubject: bench %d\r\n\r\n", i)
		for sb.Len() < 40<<10 {
			sb.WriteString("The quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJ.\r\n")
		}
		sp, _ := st.NewSpool()
		io.WriteString(sp, sb.String())
		if errs := st.Deliver(ctx, sp, time.Now(), []mailstore.Recipient{{AccountID: acct.ID, Mailbox: mailstore.Inbox}}); errs[0] != nil {
			b.Fatal(errs[0])
		}
		total += int64(sb.Len())
	}
	srv := &Server{Store: st, Hostname: testHost, Logger: slog.New(slog.DiscardHandler),
		Auth: &auth.Authenticator{Throttle: auth.NewThrottle(), Lookup: func(ctx context.Context, user string) (string, string, error) {
			a, err := st.Account(ctx, user)
			return a.Name, a.PasswordHash, err
		}}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)
	uids := make([]mailstore.UID, 0, n)
	msgs, _ := st.Messages(ctx, inbox.ID)
	for _, m := range msgs {
		uids = append(uids, m.UID)
	}
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		// Every iteration downloads unread mail, as a POP3 client does.
		b.StopTimer()
		if _, _, err := st.StoreFlags(ctx, inbox.ID, uids, mailstore.FlagsRemove, []string{mailstore.FlagSeen}, 0); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		r := bufio.NewReaderSize(c, 64<<10)
		line := func() string {
			s, err := r.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			return s
		}
		line()
		fmt.Fprintf(c, "USER %s\r\nPASS %s\r\n", testUser, testPassword)
		line()
		if s := line(); !strings.HasPrefix(s, "+OK") {
			b.Fatal(s)
		}
		for i := 1; i <= n; i++ {
			fmt.Fprintf(c, "RETR %d\r\n", i)
			line()
			for {
				s, err := r.ReadSlice('\n')
				if err != nil {
					b.Fatal(err)
				}
				if len(s) == 3 && s[0] == '.' {
					break
				}
			}
		}
		fmt.Fprintf(c, "QUIT\r\n")
		line()
		c.Close()
	}
}
