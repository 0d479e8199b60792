package pop3

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/sqlite"
)

// panicDetector is a slog.Handler that remembers session panics only, so
// that a long fuzz run does not accumulate logs.
type panicDetector struct {
	mu     sync.Mutex
	panics []string
}

func (h *panicDetector) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *panicDetector) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "session panic" {
		var b strings.Builder
		r.Attrs(func(a slog.Attr) bool {
			b.WriteString(a.String() + "\n")
			return true
		})
		h.mu.Lock()
		h.panics = append(h.panics, b.String())
		h.mu.Unlock()
	}
	return nil
}
func (h *panicDetector) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *panicDetector) WithGroup(string) slog.Handler      { return h }

func (h *panicDetector) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.panics
	h.panics = nil
	return p
}

// FuzzSession feeds arbitrary bytes to a whole POP3 session over a loopback
// socket, against the real store, and checks that the session neither
// panics nor hangs: after the client half-closes, the server must end the
// session promptly.
func FuzzSession(f *testing.F) {
	const user, password = "fuzz@example.org", "pw"
	for _, s := range []string{
		"USER fuzz@example.org\r\nPASS pw\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nLIST 1\r\nRSET\r\nNOOP\r\nQUIT\r\n",
		"AUTH PLAIN " + plainResp("", user, password) + "\r\nRETR 2\r\nDELE 2\r\nQUIT\r\n",
		"AUTH PLAIN\r\n" + plainResp(user, user, password) + "\r\nUIDL 1\r\nTOP 1 0\r\n",
		"AUTH PLAIN\r\n*\r\nAUTH X\r\nAUTH\r\n",
		"CAPA\r\nSTLS\r\n\x16\x03\x01\x00\x05hello",
		"USER a\r\nPASS b\r\nUSER fuzz@example.org\r\nPASS pw\r\nRETR 99\r\nDELE 0\r\nTOP 1 -1\r\nquit\r\n",
		strings.Repeat("A", 5000) + "\r\nCAPA\r\n",
		"\x00\xff\r\n\n\r\r\n  \r\nLIST 1 2 3 4 5 6 7 8 9\r\n",
		"USER fuzz@example.org\nPASS pw\nRETR 1\nRETR 1\nRETR 3\nDELE 3\nQUIT\n",
	} {
		f.Add([]byte(s))
	}

	st, err := sqlite.Open(f.TempDir(), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	acct, err := st.CreateAccount(context.Background(), user, cheapHash(password))
	if err != nil {
		f.Fatal(err)
	}
	inbox, err := st.Mailbox(context.Background(), acct.ID, mailstore.Inbox)
	if err != nil {
		f.Fatal(err)
	}
	detector := &panicDetector{}
	ended := make(chan struct{}, 16)
	srv := &Server{
		Store: st,
		Auth: &auth.Authenticator{Lookup: func(ctx context.Context, _ string) (string, string, error) {
			// Every user name is the fuzz account, so that guessing the
			// name is not needed to reach the TRANSACTION state.
			a, err := st.Account(ctx, user)
			if err != nil {
				return "", "", err
			}
			return a.Name, a.PasswordHash, nil
		}},
		TLSConfig:    serverTLSConfig(f),
		Hostname:     testHost,
		Logger:       slog.New(detector),
		IdleTimeout:  5 * time.Second,
		onSessionEnd: func() { ended <- struct{}{} },
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go srv.Serve(ln)
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	bodies := []string{msg1, msg2, msg3, ".\r\n..\r\n", "x"}

	f.Fuzz(func(t *testing.T, data []byte) {
		// Keep some messages in the maildrop: sessions may expunge them.
		if ms, err := st.Messages(context.Background(), inbox.ID); err != nil {
			t.Fatal(err)
		} else if len(ms) < 3 {
			for _, b := range bodies {
				deliverTo(t, st, acct.ID, b)
			}
		}
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		read := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, conn)
			read <- err
		}()
		conn.Write(data) // the server may close early (errors): ignore
		conn.(*net.TCPConn).CloseWrite()
		select {
		case <-read:
		case <-time.After(20 * time.Second):
			t.Fatalf("session did not end after the client half-closed; input %q", data)
		}
		select {
		case <-ended:
		case <-time.After(20 * time.Second):
			t.Fatalf("session goroutine did not finish; input %q", data)
		}
		if p := detector.take(); len(p) > 0 {
			t.Fatalf("session panicked on %q:\n%s", data, strings.Join(p, "\n"))
		}
	})
}
