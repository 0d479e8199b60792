package pop3

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLineEndFix(t *testing.T) {
	tests := map[string]string{
		"":         "",
		"a":        "\r\n",
		"\r":       "\n",
		"\n":       "\r\n",
		"a\r\n":    "",
		"\r\n":     "",
		"ab\r":     "\n",
		"ab\n":     "\r\n",
		"abc":      "\r\n",
		"\n\r":     "\n",
		"\r\n\r\n": "",
	}
	for in, want := range tests {
		tail := []byte(in)
		if len(tail) > 2 {
			tail = tail[len(tail)-2:]
		}
		if got := lineEndFix(tail); got != want {
			t.Errorf("lineEndFix(%q) = %q, want %q", in, got, want)
		}
	}
}

// unstuff decodes a multi-line response body the way RFC 1939 §3 clients
// do and checks the terminating line.
func unstuff(t *testing.T, wire string) string {
	t.Helper()
	if !strings.HasSuffix(wire, "\r\n.\r\n") && wire != ".\r\n" {
		t.Fatalf("response %q does not end with CRLF.CRLF", wire)
	}
	body := strings.TrimSuffix(wire, ".\r\n")
	var out strings.Builder
	for line := range strings.SplitAfterSeq(body, "\n") {
		if strings.HasPrefix(line, ".") {
			line = line[1:]
		}
		out.WriteString(line)
	}
	return out.String()
}

func TestDotWriter(t *testing.T) {
	tests := []struct{ body, wire string }{
		{"", ".\r\n"},
		{"a\r\n", "a\r\n.\r\n"},
		{"a", "a\r\n.\r\n"},
		{"a\r", "a\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{".", "..\r\n.\r\n"},
		{"x\r\n.hidden\r\n..two\r\n.\r\nend", "x\r\n..hidden\r\n...two\r\n..\r\nend\r\n.\r\n"},
		{"no.dot\r\n. \r\n", "no.dot\r\n.. \r\n.\r\n"},
		{"a\n.b\n", "a\n..b\n\r\n.\r\n"}, // bare LF (not produced by the store)
	}
	for _, tt := range tests {
		// Every way of splitting the body into writes gives the same output.
		for _, chunk := range []int{1, 2, 3, 1000} {
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			d := newDotWriter(bw)
			for p := tt.body; len(p) > 0; {
				n := min(chunk, len(p))
				if k, err := d.Write([]byte(p[:n])); k != n || err != nil {
					t.Fatalf("Write = %d, %v", k, err)
				}
				p = p[n:]
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			if buf.String() != tt.wire {
				t.Errorf("body %q in chunks of %d: wire %q, want %q", tt.body, chunk, buf.String(), tt.wire)
			}
			got := unstuff(t, buf.String())
			if want := tt.body + lineEndFix([]byte(tt.body[max(0, len(tt.body)-2):])); got != want {
				t.Errorf("body %q: client decodes %q, want %q", tt.body, got, want)
			}
		}
	}
}

func TestTopLimiter(t *testing.T) {
	msg := "From: a\r\nSubject: b\r\n\r\nl1\r\nl2\r\n\r\nl4\r\nl5"
	tests := []struct {
		lines uint64
		want  string
	}{
		{0, "From: a\r\nSubject: b\r\n\r\n"},
		{1, "From: a\r\nSubject: b\r\n\r\nl1\r\n"},
		{3, "From: a\r\nSubject: b\r\n\r\nl1\r\nl2\r\n\r\n"},
		{5, msg},
		{1 << 32, msg},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 7, 4096} {
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			d := newDotWriter(bw)
			r := iotest.HalfReader(strings.NewReader(msg))
			if chunk == 1 {
				r = iotest.OneByteReader(strings.NewReader(msg))
			}
			if err := streamBody(d, r, &topLimiter{lines: tt.lines}); err != nil {
				t.Fatal(err)
			}
			d.Close()
			bw.Flush()
			got := unstuff(t, buf.String())
			want := tt.want + lineEndFix([]byte(tt.want[len(tt.want)-2:]))
			if got != want {
				t.Errorf("TOP %d (chunk %d) = %q, want %q", tt.lines, chunk, got, want)
			}
		}
	}
	// Without a blank line the message is all header.
	var lim topLimiter
	if n, done := lim.take([]byte("A: b\r\nC: d\r\n")); n != 12 || done {
		t.Errorf("header-only take = %d, %v", n, done)
	}
	// A first line that is empty ends an empty header.
	lim = topLimiter{lines: 1}
	if n, done := lim.take([]byte("\r\nbody\r\nmore\r\n")); n != 8 || !done {
		t.Errorf("empty-header take = %d, %v", n, done)
	}
}
