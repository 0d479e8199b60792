package pop3

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// lineEndFix returns the line end that has to be sent after a message body
// whose last (at most two) octets are tail so that the body ends in CRLF
// before the terminating "." line (see the package documentation).
func lineEndFix(tail []byte) string {
	switch {
	case len(tail) == 0:
		return ""
	case len(tail) >= 2 && tail[len(tail)-2] == '\r' && tail[len(tail)-1] == '\n':
		return ""
	case tail[len(tail)-1] == '\r':
		return "\n"
	default:
		return "\r\n"
	}
}

// dotWriter writes the body of a multi-line response (RFC 1939 §3): it
// byte-stuffs lines that begin with '.', and Close ends the body with CRLF
// if needed and writes the terminating ".\r\n". It writes into a
// bufio.Writer and never flushes it: the session flushes once per response.
type dotWriter struct {
	w    *bufio.Writer
	bol  bool    // the next octet starts a line
	tail [2]byte // the last two body octets written
	n    int64   // body octets written (before stuffing)
}

func newDotWriter(w *bufio.Writer) *dotWriter {
	return &dotWriter{w: w, bol: true}
}

func (d *dotWriter) Write(p []byte) (int, error) {
	total := len(p)
	switch len(p) {
	case 0:
		return 0, nil
	case 1:
		d.tail[0], d.tail[1] = d.tail[1], p[0]
	default:
		d.tail[0], d.tail[1] = p[len(p)-2], p[len(p)-1]
	}
	d.n += int64(len(p))
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return 0, err
			}
		}
		chunk := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			chunk = p[:i+1]
			d.bol = true
		} else {
			d.bol = false
		}
		if _, err := d.w.Write(chunk); err != nil {
			return 0, err
		}
		p = p[len(chunk):]
	}
	return total, nil
}

// Close completes the body with the same line-end rule that lineEndFix
// applies to sizes and writes the terminating line.
func (d *dotWriter) Close() error {
	tail := d.tail[:]
	if d.n < 2 {
		tail = d.tail[2-d.n:]
	}
	if fix := lineEndFix(tail); fix != "" {
		if _, err := d.w.WriteString(fix); err != nil {
			return err
		}
	}
	_, err := d.w.WriteString(".\r\n")
	return err
}

// topLimiter decides how much of a message TOP sends: the header, the
// blank line that ends it, and then n lines of the body (RFC 1939 §7). A
// message without a blank line is all header and is sent whole.
type topLimiter struct {
	lines   uint64 // body lines still to send
	inBody  bool
	lineLen int  // octets of the current line so far, without LF
	lastCR  bool // the last octet of the current line is CR
}

// take returns how many octets of p are to be sent and whether the limit
// was reached (nothing after p[:n] is to be sent).
func (t *topLimiter) take(p []byte) (int, bool) {
	if t.inBody && t.lines == 0 {
		return 0, true
	}
	for i, c := range p {
		if c != '\n' {
			t.lineLen++
			t.lastCR = c == '\r'
			continue
		}
		if !t.inBody {
			if t.lineLen == 0 || t.lineLen == 1 && t.lastCR {
				t.inBody = true
				if t.lines == 0 {
					return i + 1, true
				}
			}
		} else {
			t.lines--
			if t.lines == 0 {
				return i + 1, true
			}
		}
		t.lineLen, t.lastCR = 0, false
	}
	return len(p), false
}

// copyBufs are the read buffers for streaming blobs, shared by sessions so
// that an idle connection holds none.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// streamBody copies r to d. With lim non-nil it stops where lim says.
func streamBody(d *dotWriter, r io.Reader, lim *topLimiter) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			p, done := buf[:n], false
			if lim != nil {
				var k int
				k, done = lim.take(p)
				p = p[:k]
			}
			if _, err := d.Write(p); err != nil {
				return err
			}
			if done {
				return nil
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
