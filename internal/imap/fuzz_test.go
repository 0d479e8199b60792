package imap

import (
	"bufio"
	"bytes"
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

// FuzzParseCommand runs the command parser over arbitrary input: every
// command is read with its arguments as the handlers read them. It must
// never panic, and never return a command line longer than the limit.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"a LOGIN user \"pass\\\"word\"\r\n",
		"a LOGIN {4}\r\nuser {4+}\r\npass\r\n",
		"a UID FETCH 1:*,5,7:3 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From {2}\r\nTo)]<0.100> BINARY[1] BINARY.SIZE[2] RFC822.SIZE) (CHANGEDSINCE 5)\r\n",
		"a STORE 1 (UNCHANGEDSINCE 9) +FLAGS.SILENT (\\Seen $Junk)\r\n",
		"a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (INBOX %/*) RETURN (CHILDREN STATUS (MESSAGES))\r\n",
		"a APPEND INBOX (\\Seen) \" 1-Jan-2020 00:00:00 +0000\" {3+}\r\nabc\r\n",
		"a CREATE x (USE (\\Sent))\r\n",
		"a STATUS INBOX (MESSAGES UIDNEXT)\r\n",
		"a SEARCH OR (SEEN 1:3) NOT HEADER X-A {1+}\r\nb SENTON 1-Jan-2020 UID $\r\n",
		"a SELECT INBOX (QRESYNC (5 10 1:9 (1,3 1,4)))\r\n",
		"a FETCH $ FULL\r\n",
		"* BAD\r\n",
		strings.Repeat("x", maxLine+5) + " {3+}\r\nabc\r\nb NOOP\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), readBufSize)
		p := newParser(br, nil)
		for i := 0; i < 50; i++ {
			err := p.readSegment()
			if err == errLineTooLong {
				continue
			}
			if err != nil {
				return
			}
			if len(p.line) > maxLine+2 {
				t.Fatalf("segment of %d octets", len(p.line))
			}
			if err := parseArgs(p); err != nil {
				var pe *parseError
				if !errorsAs(err, &pe) {
					return // I/O: input exhausted
				}
				if !pe.fatal {
					if err := p.skipRest(); err != nil {
						return
					}
				}
			}
		}
	})
}

func errorsAs(err error, pe **parseError) bool {
	e, ok := err.(*parseError)
	if ok {
		*pe = e
	}
	return ok
}

// parseArgs reads a command's arguments the way its handler does.
func parseArgs(p *parser) error {
	c, err := p.readCommand()
	if err != nil {
		return err
	}
	switch c.name {
	case "FETCH", "STORE", "COPY", "MOVE":
		if err := p.sp(); err != nil {
			return err
		}
		set, err := p.seqSet()
		if err != nil {
			return err
		}
		set.resolve([]mailstore.UID{1, 2, 5, 9}, c.uid)
		if err := p.sp(); err != nil {
			return err
		}
		switch c.name {
		case "FETCH":
			_, err = p.parseFetchAtts()
		case "STORE":
			if p.peek() == '(' {
				if err := p.list(false, func() error { _, err := p.atom(); p.sp(); p.number(63); return err }); err != nil {
					return err
				}
				p.sp()
			}
			if _, err := p.atom(); err != nil {
				return err
			}
			p.sp()
			_, err = p.flagList()
		default:
			_, err = p.astring()
		}
		return err
	case "SEARCH":
		if err := p.sp(); err != nil {
			return err
		}
		_, err := p.searchKeys(0)
		return err
	case "SELECT":
		if err := p.sp(); err != nil {
			return err
		}
		if _, err := p.astring(); err != nil {
			return err
		}
		if p.consume(' ') {
			if err := p.expect('('); err != nil {
				return err
			}
			if _, err := p.atom(); err != nil {
				return err
			}
			if err := p.sp(); err != nil {
				return err
			}
			if _, err := p.qresyncParams(); err != nil {
				return err
			}
		}
		return nil
	case "LIST":
		for !p.atEnd() {
			if err := p.sp(); err != nil {
				return err
			}
			if p.peek() == '(' {
				if err := p.list(true, func() error { _, err := p.listMailbox(); return err }); err != nil {
					return err
				}
				continue
			}
			if _, err := p.listMailbox(); err != nil {
				return err
			}
		}
		return nil
	case "APPEND":
		if err := p.sp(); err != nil {
			return err
		}
		if _, err := p.astring(); err != nil {
			return err
		}
		p.sp()
		if p.peek() == '(' {
			if _, err := p.flagList(); err != nil {
				return err
			}
			p.sp()
		}
		if p.peek() == '"' {
			ds, err := p.quoted()
			if err != nil {
				return err
			}
			parseDateTime(ds)
			p.sp()
		}
		size, sync, err := p.literalHeader()
		if err != nil {
			return err
		}
		if err := p.literalStart(size, sync, 1<<20); err != nil {
			return err
		}
		if _, err := io.CopyN(io.Discard, p.br, size); err != nil {
			return err
		}
		return p.literalEnd()
	}
	for !p.atEnd() {
		if err := p.sp(); err != nil {
			return err
		}
		if _, err := p.astring(); err != nil {
			return err
		}
	}
	return p.end()
}

// panicDetector is a slog.Handler that remembers session panics only.
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

// FuzzSession feeds arbitrary bytes to a whole IMAP session over a loopback
// socket, against the real store: no panic, and no hang (after the client
// half-closes, the session must end promptly).
func FuzzSession(f *testing.F) {
	const user, password = "fuzz@example.org", "pw"
	login := "a LOGIN fuzz@example.org pw\r\n"
	for _, s := range []string{
		login + "b SELECT INBOX\r\nc FETCH 1:* (FLAGS BODY[] BODYSTRUCTURE ENVELOPE)\r\nd STORE 1 +FLAGS (\\Deleted)\r\ne EXPUNGE\r\nf LOGOUT\r\n",
		login + "b LIST \"\" *\r\nc CREATE a/b\r\nd RENAME a x\r\ne DELETE x/b\r\nf STATUS INBOX (MESSAGES SIZE)\r\n",
		login + "b SELECT INBOX\r\nc UID MOVE 1:2 Trash\r\nd COPY 1 Junk\r\ne IDLE\r\nDONE\r\nf UID FETCH 1:* BINARY[1]\r\n",
		login + "b APPEND INBOX (\\Seen) {5+}\r\nhello\r\nc EXAMINE INBOX\r\nd FETCH 1 BODY[1.MIME]<0.2>\r\n",
		"a AUTHENTICATE PLAIN\r\n" + plainResp("", user, password) + "\r\nb ENABLE CONDSTORE\r\nc SELECT INBOX (CONDSTORE)\r\nd FETCH 1:* (FLAGS) (CHANGEDSINCE 1)\r\n",
		"a STARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"a CAPABILITY\r\nb LOGIN {3}\r\n",
		strings.Repeat("A", maxLine+10) + "\r\na NOOP\r\n",
		"\x00\xff\r\n\n\r\r\n  \r\n* * *\r\n",
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
	bodies := []string{multipartMsg, "Subject: x\r\n\r\nbody\r\n", "x"}
	f.Fuzz(func(t *testing.T, data []byte) {
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
		conn.Write(data)
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
