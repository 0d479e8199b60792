package message

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

func mustParse(t testing.TB, msg string) *Part {
	t.Helper()
	p, err := Parse(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, p, int64(len(msg)))
	return p
}

// crlf turns "\n" into "\r\n" in test literals.
func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// section returns the bytes of a part's header or body.
func body(msg string, p *Part) string   { return msg[p.BodyOffset():p.End()] }
func header(msg string, p *Part) string { return msg[p.Offset:p.BodyOffset()] }

var nestedMsg = crlf(`Subject: outer
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=o

preamble
--o
Content-Type: text/plain

one
--o
Content-Type: message/rfc822

Subject: inner single

inner body
--o
Content-Type: message/rfc822

Subject: inner multi
Content-Type: multipart/alternative; boundary=i

--i

alt one
--i
Content-Type: text/html

<p>alt two</p>
--i--
--o--
epilogue
`)

func TestPartAt(t *testing.T) {
	root := mustParse(t, nestedMsg)
	for _, tc := range []struct {
		path       []int
		hdr, bodyS string
	}{
		{nil, "", ""},
		{[]int{1}, "Content-Type: text/plain\r\n\r\n", "one"},
		{[]int{2}, "Content-Type: message/rfc822\r\n\r\n", "Subject: inner single\r\n\r\ninner body"},
		{[]int{2, 1}, "Subject: inner single\r\n\r\n", "inner body"},
		{[]int{3, 1}, "\r\n", "alt one"},
		{[]int{3, 2}, "Content-Type: text/html\r\n\r\n", "<p>alt two</p>"},
	} {
		p := root.PartAt(tc.path)
		if p == nil {
			t.Fatalf("PartAt(%v) = nil", tc.path)
		}
		if tc.path == nil {
			if p != root {
				t.Error("PartAt(nil) is not the root")
			}
			continue
		}
		if h, b := header(nestedMsg, p), body(nestedMsg, p); h != tc.hdr || b != tc.bodyS {
			t.Errorf("PartAt(%v): header %q body %q, want %q %q", tc.path, h, b, tc.hdr, tc.bodyS)
		}
	}
	// Dovecot's numbering: a trailing 1 after a part that is neither
	// multipart nor message/rfc822 selects the part itself
	if root.PartAt([]int{1, 1}) != root.PartAt([]int{1}) || root.PartAt([]int{3, 1, 1}) != root.PartAt([]int{3, 1}) {
		t.Error("PartAt(x.1) of a leaf is not the leaf")
	}
	for _, path := range [][]int{{0}, {4}, {1, 2}, {1, 1, 1}, {2, 2}, {3, 3}, {3, 1, 2}, {2, 1, 1}, {-1}} {
		if p := root.PartAt(path); p != nil {
			t.Errorf("PartAt(%v) = part at %d, want nil", path, p.Offset)
		}
	}
	if m := root.PartAt([]int{3}).Message(); m == nil || m.Kind != KindMultipart || m.Envelope == nil || m.Envelope.Subject.S != "inner multi" {
		t.Errorf("encapsulated message of part 3 = %+v", m)
	}
	// a single part message has part 1 = the message itself
	single := mustParse(t, "Subject: x\r\n\r\nbody")
	if single.PartAt([]int{1}) != single || single.PartAt([]int{1, 1}) != nil {
		t.Error("single part numbering")
	}
	if !strings.HasPrefix(body(nestedMsg, root), "preamble\r\n--o") || !strings.HasSuffix(body(nestedMsg, root), "--o--\r\nepilogue\r\n") {
		t.Errorf("root body %q", body(nestedMsg, root))
	}
}

func TestParseEdgeCases(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		p := mustParse(t, "")
		if p.Type != "text" || p.Subtype != "plain" || p.End() != 0 || p.Envelope == nil || p.Flags&FlagNoHeaderEnd == 0 {
			t.Errorf("%+v", p)
		}
	})
	t.Run("not MIME", func(t *testing.T) {
		p := mustParse(t, crlf("Content-Transfer-Encoding: base64\nContent-ID: <x>\n\nbody\n"))
		if p.Encoding.Valid || p.ID.Valid || p.Flags&FlagMIME != 0 || p.DecodedSize != 6 {
			t.Errorf("Content-* of a non-MIME message kept: %+v", p)
		}
	})
	t.Run("delimiter at EOF without line break", func(t *testing.T) {
		msg := crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b")
		p := mustParse(t, msg)
		if len(p.Children) != 1 || body(msg, p.Children[0]) != "x" {
			t.Errorf("children %d", len(p.Children))
		}
		msg += "\r\n" // now a (empty) second part begins
		if p = mustParse(t, msg); len(p.Children) != 2 || p.Children[1].End() != int64(len(msg)) {
			t.Errorf("children %d", len(p.Children))
		}
	})
	t.Run("header ended by delimiter", func(t *testing.T) {
		msg := crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n--b\nContent-Type: text/plain\n\nx\n--b--\n")
		p := mustParse(t, msg)
		c := p.Children[0]
		if len(p.Children) != 2 || c.Kind != KindMessage || header(msg, c) != "Content-Type: message/rfc822" || c.BodySize != 0 ||
			c.Flags&FlagNoHeaderEnd == 0 || c.Message().End() != c.End() {
			t.Errorf("part 1 = %+v", c)
		}
		if h := c.Header[0]; h.Size != int64(len("Content-Type: message/rfc822")) {
			t.Errorf("header field clipped to %d", h.Size)
		}
	})
	t.Run("encapsulated header ended by delimiter", func(t *testing.T) {
		// the line break before the delimiter belongs to the delimiter,
		// not to the message/rfc822 part (Dovecot differs here)
		msg := crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nSubject: x\n--b--\n")
		p := mustParse(t, msg)
		m := p.Children[0]
		if body(msg, m) != "Subject: x" || header(msg, m.Message()) != "Subject: x" || m.Message().Envelope.Subject.S != "x" {
			t.Errorf("body %q", body(msg, m))
		}
	})
	t.Run("digest default", func(t *testing.T) {
		msg := crlf("Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: s\n\nb\n--d\nContent-Type: text/plain\n\nt\n--d--\n")
		p := mustParse(t, msg)
		if p.Children[0].Kind != KindMessage || p.Children[0].Message().Envelope.Subject.S != "s" || p.Children[1].Kind != KindLeaf {
			t.Errorf("digest children %v %v", p.Children[0].Kind, p.Children[1].Kind)
		}
	})
	t.Run("boundary prefix and nesting", func(t *testing.T) {
		// an inner boundary that starts with the outer one, and an outer
		// delimiter that closes an unterminated inner multipart
		msg := crlf("Content-Type: multipart/mixed; boundary=frontier\n\n--frontier\nContent-Type: multipart/alternative; boundary=frontier-inner\n\n--frontier-inner\n\na\n--frontier\n\nb\n--frontier--\n")
		p := mustParse(t, msg)
		if len(p.Children) != 2 || len(p.Children[0].Children) != 1 || body(msg, p.Children[0].Children[0]) != "a" || body(msg, p.Children[1]) != "b" {
			t.Errorf("structure wrong")
		}
	})
	t.Run("bare LF and CR", func(t *testing.T) {
		lf := strings.ReplaceAll(nestedMsg, "\r\n", "\n")
		a, b := mustParse(t, lf), mustParse(t, nestedMsg)
		var kinds func(p *Part) string
		kinds = func(p *Part) string {
			s := p.Kind.String() + "/" + p.Type + "/" + p.Subtype + "("
			for _, c := range p.Children {
				s += kinds(c)
			}
			return s + ")"
		}
		if kinds(a) != kinds(b) {
			t.Errorf("LF structure %s != CRLF structure %s", kinds(a), kinds(b))
		}
		if got := body(lf, a.PartAt([]int{3, 2})); got != "<p>alt two</p>" {
			t.Errorf("LF part 3.2 body %q", got)
		}
		cr := mustParse(t, "Subject: a\rb\r\n\r\nx\ry\r\n")
		if cr.Envelope.Subject.S != "a\rb" || cr.BodyLines != 1 {
			t.Errorf("bare CR: %+v", cr.Envelope)
		}
	})
	t.Run("NUL", func(t *testing.T) {
		p := mustParse(t, "Subject: a\x00b\r\n\r\nx")
		if p.Flags&FlagHasNUL == 0 || p.Envelope.Subject.S != "a\uFFFDb" {
			t.Errorf("%+v", p)
		}
	})
}

// TestBinarySizeNested checks BINARY sizes through multiparts and an
// encapsulated message whose header must be rewritten.
func TestBinarySizeNested(t *testing.T) {
	msg := crlf(`Content-Type: multipart/mixed; boundary=b

--b
Content-Type: message/rfc822

Subject: inner
MIME-Version: 1.0
Content-Transfer-Encoding: base64

SGVsbG8=
--b
Content-Transfer-Encoding: x-unknown

zz
--b--
`)
	root := mustParse(t, msg)
	inner := root.PartAt([]int{1, 1})
	if n, err := inner.BinarySize(); n != 5 || err != nil {
		t.Errorf("BINARY.SIZE[1.1] = %d, %v", n, err)
	}
	// BINARY[1]: the inner header without its CTE field plus the binary
	// CTE line, then the decoded body
	wantHdr := len("Subject: inner\r\nMIME-Version: 1.0\r\n") + len(binaryCTELine) + len("\r\n")
	if n, err := root.PartAt([]int{1}).BinarySize(); n != int64(wantHdr+5) || err != nil {
		t.Errorf("BINARY.SIZE[1] = %d, %v; want %d", n, err, wantHdr+5)
	}
	if _, err := root.PartAt([]int{2}).BinarySize(); !errors.Is(err, ErrUnknownCTE) {
		t.Errorf("BINARY.SIZE[2] error = %v", err)
	}
	if _, err := root.BinarySize(); !errors.Is(err, ErrUnknownCTE) {
		t.Errorf("BINARY.SIZE[] error = %v", err)
	}
}

// TestBinaryReader checks that BINARY content has BinarySize bytes and
// decodes leaves as NewDecoder does.
func TestBinaryReader(t *testing.T) {
	msgs := append([]string{nestedMsg, crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nX: 1\nContent-Transfer-Encoding: base64\nY: 2\n\nSGVsbG8=\n--b--\n")}, oracleMessagesText()...)
	for _, msg := range msgs {
		root := mustParse(t, msg)
		ra := strings.NewReader(msg)
		root.Walk(func(p *Part) bool {
			size, serr := p.BinarySize()
			r, err := p.BinaryReader(ra)
			if errors.Is(serr, ErrUnknownCTE) {
				if !errors.Is(err, ErrUnknownCTE) {
					t.Errorf("part at %d: BinaryReader error %v, BinarySize %v", p.Offset, err, serr)
				}
				return true
			}
			if err != nil {
				t.Fatalf("part at %d: %v", p.Offset, err)
			}
			b, rerr := io.ReadAll(r)
			if serr == nil && (rerr != nil || int64(len(b)) != size) {
				t.Errorf("part at %d: BinaryReader gave %d bytes (%v), BinarySize %d", p.Offset, len(b), rerr, size)
			}
			if serr != nil && !errors.Is(rerr, ErrInvalidData) {
				t.Errorf("part at %d: BinarySize %v but reader error %v", p.Offset, serr, rerr)
			}
			return true
		})
	}
	root := mustParse(t, msgs[1])
	r, _ := root.BinaryReader(strings.NewReader(msgs[1]))
	b, _ := io.ReadAll(r)
	if want := crlf("--b\nX: 1\nY: 2\nContent-Transfer-Encoding: binary\n\nHello\n--b--\n"); string(b) != want {
		t.Errorf("BINARY[] = %q, want %q", b, want)
	}
}

// deepMultipart nests n multiparts.
func deepMultipart(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\nleaf\r\n")
	for i := n - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%d--\r\n", i)
	}
	return b.String()
}

func TestParseLimits(t *testing.T) {
	t.Run("depth", func(t *testing.T) {
		msg := deepMultipart(MaxDepth + 20)
		root := mustParse(t, msg)
		depth, p := 0, root
		for len(p.Children) > 0 {
			p = p.Children[0]
			depth++
		}
		if depth != MaxDepth-1 || p.Flags&FlagTruncated == 0 || p.Type != "application" || p.Subtype != "octet-stream" {
			t.Errorf("deepest part at depth %d: %s/%s flags %b", depth, p.Type, p.Subtype, p.Flags)
		}
		var rfc822 strings.Builder
		for i := 0; i < MaxDepth+20; i++ {
			rfc822.WriteString("Content-Type: message/rfc822\r\n\r\n")
		}
		rfc822.WriteString("\r\nbody\r\n")
		root = mustParse(t, rfc822.String())
		for depth, p = 0, root; len(p.Children) > 0; depth++ {
			p = p.Children[0]
		}
		if depth != MaxDepth-1 || p.Flags&FlagTruncated == 0 {
			t.Errorf("message/rfc822 nesting stopped at %d", depth)
		}
	})
	t.Run("parts", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("Content-Type: multipart/mixed; boundary=x\r\n\r\n")
		for i := 0; i < MaxParts+50; i++ {
			b.WriteString("--x\r\n\r\np\r\n")
		}
		b.WriteString("--x--\r\n")
		root := mustParse(t, b.String())
		if len(root.Children) != MaxParts-1 {
			t.Errorf("%d children, want %d", len(root.Children), MaxParts-1)
		}
		// the last part swallows the rest of the input
		if last := root.Children[len(root.Children)-1]; last.End() != root.End() {
			t.Errorf("last part ends at %d, message at %d", last.End(), root.End())
		}
	})
	t.Run("header values", func(t *testing.T) {
		long := strings.Repeat("word ", MaxHeaderBytes/2)
		msg := "Subject: " + long + "\r\n folded\r\nTo: a@b\r\n\r\nbody"
		root := mustParse(t, msg)
		if n := len(root.Envelope.Subject.S); root.Flags&FlagHeaderTruncated == 0 || n > MaxHeaderBytes || n < MaxHeaderBytes-8 || len(root.Envelope.To) != 0 {
			t.Errorf("subject %d bytes, to %v, flags %b", len(root.Envelope.Subject.S), root.Envelope.To, root.Flags)
		}
		if f := root.Header[0]; f.Name != "Subject" || f.Size != int64(len("Subject: "+long+"\r\n folded\r\n")) {
			t.Errorf("index entry %+v", f)
		}
	})
}

func TestParseLongLines(t *testing.T) {
	long := strings.Repeat("x", 3*readBufferSize+17)
	msg := crlf("Content-Type: multipart/mixed; boundary=b\nX-Long: "+long+"\n\t"+long+"\nSubject: after\n\n--b\n\n") +
		long + "\r\r\n" + long + "\r\n--b" + long + "\r\n\r\npart2\r\n--b--\r\n"
	root := mustParse(t, msg)
	if root.Envelope.Subject.S != "after" || len(root.Header) != 3 || root.Header[1].Size != int64(len("X-Long: "+long+"\r\n\t"+long+"\r\n")) {
		t.Fatalf("header %+v", root.Header)
	}
	if len(root.Children) != 2 {
		t.Fatalf("%d children", len(root.Children))
	}
	if got := body(msg, root.Children[0]); got != long+"\r\r\n"+long {
		t.Errorf("part 1 body has %d bytes, want %d", len(got), 2*len(long)+3)
	}
	if got := body(msg, root.Children[1]); got != "part2" {
		t.Errorf("part 2 body %q", got)
	}
	if n, _ := root.Children[0].BinarySize(); n != int64(2*len(long)+3) {
		t.Errorf("binary size %d", n)
	}
}

// TestParseReaders checks that the result does not depend on how the input
// is delivered, and that read errors are reported.
func TestParseReaders(t *testing.T) {
	msgs := []string{nestedMsg, deepMultipart(30)}
	for _, file := range oracleFilesIfPresent() {
		b, _ := os.ReadFile(file)
		msgs = append(msgs, string(normalizeCRLF(b)))
	}
	for _, msg := range msgs {
		want := mustParse(t, msg)
		for _, r := range []io.Reader{iotest.OneByteReader(strings.NewReader(msg)), iotest.HalfReader(strings.NewReader(msg)), iotest.DataErrReader(strings.NewReader(msg))} {
			got, err := Parse(r)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("result differs with %T (%v)", r, err)
			}
		}
	}
	boom := errors.New("boom")
	if _, err := Parse(io.MultiReader(strings.NewReader(nestedMsg[:100]), iotest.ErrReader(boom))); !errors.Is(err, boom) {
		t.Errorf("read error = %v", err)
	}
}

func oracleFilesIfPresent() []string {
	files, _ := filepathGlob(oracleDir + "/messages/*.eml")
	return files
}

// TestParseHeaderMatchesIndex: ParseHeader on a part's header bytes gives
// the index Parse built.
func TestParseHeaderMatchesIndex(t *testing.T) {
	for _, msg := range append([]string{nestedMsg}, oracleMessagesText()...) {
		root := mustParse(t, msg)
		root.Walk(func(p *Part) bool {
			got := ParseHeader([]byte(msg[p.Offset:p.BodyOffset()]), p.Offset)
			if len(got) == 0 && len(p.Header) == 0 {
				return true
			}
			if !reflect.DeepEqual(got, p.Header) {
				t.Errorf("part at %d: ParseHeader %+v, index %+v", p.Offset, got, p.Header)
			}
			return true
		})
	}
}

func oracleMessagesText() []string {
	var out []string
	for _, f := range oracleFilesIfPresent() {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, string(normalizeCRLF(b)))
		}
	}
	return out
}

func TestMarshalRoundTrip(t *testing.T) {
	msgs := append([]string{nestedMsg, deepMultipart(MaxDepth + 5), ""}, oracleMessagesText()...)
	for _, msg := range msgs {
		p := mustParse(t, msg)
		enc := p.Marshal()
		q, err := Unmarshal(enc)
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip failed (%v)", err)
		}
		// truncations and byte corruptions must fail cleanly (every
		// position of small encodings, a sample of large ones; the fuzz
		// target does the rest)
		step := 1 + len(enc)/512
		for i := 0; i < len(enc); i += step {
			if _, err := Unmarshal(enc[:i]); err == nil {
				t.Fatalf("truncation at %d of %d accepted", i, len(enc))
			}
			c := bytes.Clone(enc)
			c[i] ^= 0xff
			_, _ = Unmarshal(c)
		}
	}
	if _, err := Unmarshal(nil); err == nil {
		t.Error("empty input accepted")
	}
}

func filepathGlob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

func TestValidate(t *testing.T) {
	msg := nestedMsg
	good := mustParse(t, msg)
	for name, corrupt := range map[string]func(p *Part){
		"size":       func(p *Part) { p.BodySize++ },
		"child":      func(p *Part) { p.Children[1].Offset = p.Children[0].Offset },
		"field":      func(p *Part) { p.Header[1].Offset++ },
		"lines":      func(p *Part) { p.Children[0].BodyLines = 99 },
		"kind":       func(p *Part) { p.Children[0].Kind = KindMessage },
		"leaf":       func(p *Part) { p.Kind = KindLeaf },
		"no message": func(p *Part) { p.Children[1].Children = nil },
	} {
		p, _ := Unmarshal(good.Marshal())
		corrupt(p)
		if err := p.Validate(int64(len(msg))); err == nil {
			t.Errorf("%s: corruption not detected", name)
		}
	}
	if err := good.Validate(int64(len(msg)) + 1); err == nil {
		t.Error("wrong message size not detected")
	}
}
