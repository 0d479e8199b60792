package render

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/letterbox/letterbox/internal/message"
)

const (
	outerHeader = "From: A <a@x>\r\nTo: b@x\r\nSubject: outer\r\nX-Folded: one\r\n two\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
	innerHeader = "From: C <c@x>\r\nSubject: inner\r\nto: d@x\r\n\r\n"
	innerMsg    = innerHeader + "inner body\r\n"
	part3Header = "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	outerBody   = "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
		"--b\r\nContent-Type: message/rfc822\r\n\r\n" + innerMsg +
		"--b\r\n" + part3Header + "AAECAw==\r\n--b--\r\n"
	testMsg = outerHeader + outerBody
)

type fixture struct {
	blob []byte
	root *message.Part
}

func newFixture(t testing.TB, msg string) fixture {
	t.Helper()
	blob, root := storedMessage(t, []byte(msg))
	return fixture{blob, root}
}

func (f fixture) section(t testing.TB, spec SectionSpec) (string, error) {
	t.Helper()
	r, n, err := Section(f.root, bytes.NewReader(f.blob), int64(len(f.blob)), spec)
	if err != nil {
		return "", err
	}
	b, err := readAll(r, n)
	if err != nil {
		t.Fatalf("%v: reading %d bytes: %v", spec, n, err)
	}
	return string(b), nil
}

func TestSection(t *testing.T) {
	f := newFixture(t, testMsg)
	for _, tt := range []struct {
		spec SectionSpec
		want string
	}{
		{SectionSpec{}, testMsg},
		{SectionSpec{Specifier: "HEADER"}, outerHeader},
		{SectionSpec{Specifier: "TEXT"}, outerBody},
		{SectionSpec{Specifier: "HEADER.FIELDS", Fields: []string{"subject", "X-FOLDED", "from", "Nope"}},
			"From: A <a@x>\r\nSubject: outer\r\nX-Folded: one\r\n two\r\n\r\n"},
		{SectionSpec{Specifier: "HEADER.FIELDS.NOT", Fields: []string{"subject", "content-type", "mime-version"}},
			"From: A <a@x>\r\nTo: b@x\r\nX-Folded: one\r\n two\r\n\r\n"},
		{SectionSpec{Specifier: "HEADER.FIELDS", Fields: []string{"Nope"}}, "\r\n"},
		{SectionSpec{Part: []int{1}}, "hello"},
		{SectionSpec{Part: []int{1}, Specifier: "MIME"}, "Content-Type: text/plain\r\n\r\n"},
		// HEADER/TEXT of a part that is not message/rfc822: empty
		{SectionSpec{Part: []int{1}, Specifier: "HEADER"}, ""},
		{SectionSpec{Part: []int{1}, Specifier: "TEXT"}, ""},
		// "1.1" of a text part is the part itself (Dovecot)
		{SectionSpec{Part: []int{1, 1}}, "hello"},
		// the message/rfc822 part and its encapsulated message
		{SectionSpec{Part: []int{2}}, innerHeader + "inner body"},
		{SectionSpec{Part: []int{2}, Specifier: "MIME"}, "Content-Type: message/rfc822\r\n\r\n"},
		{SectionSpec{Part: []int{2}, Specifier: "HEADER"}, innerHeader},
		{SectionSpec{Part: []int{2}, Specifier: "TEXT"}, "inner body"},
		{SectionSpec{Part: []int{2}, Specifier: "HEADER.FIELDS", Fields: []string{"TO"}}, "to: d@x\r\n\r\n"},
		{SectionSpec{Part: []int{2}, Specifier: "HEADER.FIELDS.NOT", Fields: []string{"TO"}}, "From: C <c@x>\r\nSubject: inner\r\n\r\n"},
		// P.1 of a single-part encapsulated message is that message:
		// its MIME header is the message header
		{SectionSpec{Part: []int{2, 1}}, "inner body"},
		{SectionSpec{Part: []int{2, 1}, Specifier: "MIME"}, innerHeader},
		{SectionSpec{Part: []int{3}}, "AAECAw=="},
		{SectionSpec{Part: []int{3}, Binary: true}, "\x00\x01\x02\x03"},
		{SectionSpec{Part: []int{1}, Binary: true}, "hello"},
		// nonexistent parts are empty
		{SectionSpec{Part: []int{4}}, ""},
		{SectionSpec{Part: []int{4}, Specifier: "MIME"}, ""},
		{SectionSpec{Part: []int{1, 2}}, ""},
		{SectionSpec{Part: []int{2, 2}}, ""},
		{SectionSpec{Part: []int{1, 1, 1}}, ""},
		{SectionSpec{Part: []int{2, 1, 1, 1}}, ""},
		{SectionSpec{Part: []int{9}, Binary: true}, ""},
	} {
		got, err := f.section(t, tt.spec)
		if err != nil || got != tt.want {
			t.Errorf("BODY[%s] (binary %v) = %q, %v; want %q", tt.spec, tt.spec.Binary, got, err, tt.want)
		}
	}
}

func TestSectionErrors(t *testing.T) {
	f := newFixture(t, testMsg)
	for _, spec := range []SectionSpec{
		{Specifier: "MIME"},
		{Specifier: "HEADER.FIELDS"},
		{Part: []int{1}, Specifier: "BOGUS"},
		{Part: []int{0}},
		{Part: []int{1, -1}},
		{Part: []int{1}, Specifier: "TEXT", Binary: true},
	} {
		if err := spec.Validate(); !errors.Is(err, ErrBadSection) {
			t.Errorf("%+v.Validate() = %v, want ErrBadSection", spec, err)
		}
		if _, err := f.section(t, spec); !errors.Is(err, ErrBadSection) {
			t.Errorf("%+v: %v, want ErrBadSection", spec, err)
		}
	}
	blob := bytes.NewReader(f.blob)
	if _, _, err := Section(f.root, blob, int64(len(f.blob))-1, SectionSpec{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("wrong size: %v, want ErrCorrupt", err)
	}
	if _, _, err := Section(nil, blob, 0, SectionSpec{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("nil root: %v, want ErrCorrupt", err)
	}
	if _, err := BinarySize(f.root, blob, 5, []int{1}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("BinarySize wrong size: %v, want ErrCorrupt", err)
	}
	if _, err := BinarySize(f.root, blob, int64(len(f.blob)), []int{0}); !errors.Is(err, ErrBadSection) {
		t.Errorf("BinarySize part 0: %v, want ErrBadSection", err)
	}
}

func TestPartial(t *testing.T) {
	r := strings.NewReader("0123456789")
	for _, tt := range []struct {
		origin, count int64
		want          string
	}{
		{0, 10, "0123456789"},
		{0, 100, "0123456789"},
		{3, 4, "3456"},
		{9, 5, "9"},
		{10, 5, ""}, // origin at the end
		{11, 5, ""}, // beyond the end
		{0, 0, ""},
		{-1, 2, "01"},
		{2, -1, ""},
	} {
		pr, n := Partial(r, 10, tt.origin, tt.count)
		b, err := readAll(pr, n)
		if err != nil || string(b) != tt.want {
			t.Errorf("Partial(%d, %d) = %q, %v; want %q", tt.origin, tt.count, b, err, tt.want)
		}
	}
	// partial of a composed section
	f := newFixture(t, testMsg)
	r2, n, _ := Section(f.root, bytes.NewReader(f.blob), int64(len(f.blob)), SectionSpec{Part: []int{3}, Binary: true})
	pr, pn := Partial(r2, n, 1, 2)
	if b, err := readAll(pr, pn); err != nil || string(b) != "\x01\x02" {
		t.Errorf("BINARY[3]<1.2> = %q, %v", b, err)
	}
}

func TestBinary(t *testing.T) {
	const qpMsg = "Subject: qp\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nsoft\r\n"
	const qpHeaderBinary = "Subject: qp\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\n"
	f := newFixture(t, qpMsg)
	size := int64(len(f.blob))
	blob := bytes.NewReader(f.blob)
	for _, tt := range []struct {
		part []int
		want string
	}{
		{nil, qpHeaderBinary + "café soft\r\n"},
		{[]int{1}, "café soft\r\n"},
	} {
		got, err := f.section(t, SectionSpec{Part: tt.part, Binary: true})
		if err != nil || got != tt.want {
			t.Errorf("BINARY[%v] = %q, %v; want %q", tt.part, got, err, tt.want)
		}
		n, err := BinarySize(f.root, blob, size, tt.part)
		if err != nil || n != int64(len(tt.want)) {
			t.Errorf("BINARY.SIZE[%v] = %d, %v; want %d", tt.part, n, err, len(tt.want))
		}
	}
	// a multipart: encoded parts get a rewritten header
	f = newFixture(t, testMsg)
	got, err := f.section(t, SectionSpec{Binary: true})
	want := strings.Replace(testMsg, part3Header+"AAECAw==",
		"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\x03", 1)
	if err != nil || got != want {
		t.Errorf("BINARY[] = %q, %v\nwant %q", got, err, want)
	}
	if n, err := BinarySize(f.root, bytes.NewReader(f.blob), int64(len(f.blob)), nil); err != nil || n != int64(len(want)) {
		t.Errorf("BINARY.SIZE[] = %d, %v; want %d", n, err, len(want))
	}

	const bad = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
		"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--b\r\n\r\nplain\r\n--b--\r\n"
	f = newFixture(t, bad)
	blob, size = bytes.NewReader(f.blob), int64(len(f.blob))
	for _, tt := range []struct {
		part []int
		err  error
	}{
		{[]int{1}, ErrUnknownCTE},
		{[]int{2}, ErrParse},
		{[]int{3}, nil},
		{nil, ErrUnknownCTE},
	} {
		_, err := f.section(t, SectionSpec{Part: tt.part, Binary: true})
		_, err2 := BinarySize(f.root, blob, size, tt.part)
		if !errors.Is(err, tt.err) || !errors.Is(err2, tt.err) {
			t.Errorf("BINARY[%v]: %v / BINARY.SIZE: %v; want %v", tt.part, err, err2, tt.err)
		}
	}
	// the BODY section of such a part is still served
	if got, err := f.section(t, SectionSpec{Part: []int{1}}); err != nil || got != "begin" {
		t.Errorf("BODY[1] = %q, %v", got, err)
	}
}

func TestNUL(t *testing.T) {
	const msg = "Subject: a\x00b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nx\x00y\r\n"
	f := newFixture(t, msg)
	want := strings.ReplaceAll(msg, "\x00", "\x80")
	for _, tt := range []struct {
		spec SectionSpec
		want string
	}{
		{SectionSpec{}, want},
		{SectionSpec{Specifier: "TEXT"}, "x\x80y\r\n"},
		{SectionSpec{Specifier: "HEADER.FIELDS", Fields: []string{"SUBJECT"}}, "Subject: a\x80b\r\n\r\n"},
		{SectionSpec{Part: []int{1}}, "x\x80y\r\n"},
		{SectionSpec{Part: []int{1}, Binary: true}, "x\x00y\r\n"}, // literal8 keeps NUL
	} {
		got, err := f.section(t, tt.spec)
		if err != nil || got != tt.want {
			t.Errorf("%+v = %q, %v; want %q", tt.spec, got, err, tt.want)
		}
	}
}

// TestHeaderFieldsTruncatedIndex: when the header index is incomplete
// (FlagHeaderTruncated), HEADER.FIELDS indexes the header bytes again.
func TestHeaderFieldsTruncatedIndex(t *testing.T) {
	f := newFixture(t, testMsg)
	f.root.Flags |= message.FlagHeaderTruncated
	f.root.Header = f.root.Header[:1]
	got, err := f.section(t, SectionSpec{Specifier: "HEADER.FIELDS", Fields: []string{"X-Folded", "to"}})
	if want := "To: b@x\r\nX-Folded: one\r\n two\r\n\r\n"; err != nil || got != want {
		t.Errorf("HEADER.FIELDS = %q, %v; want %q", got, err, want)
	}
}

// TestHeaderFieldsNoHeaderEnd: a header that ends without a line break
// still gives CRLF-terminated lines plus CRLF.
func TestHeaderFieldsNoHeaderEnd(t *testing.T) {
	f := newFixture(t, "Subject: x\r\nFrom: a@b")
	for _, tt := range []struct {
		spec SectionSpec
		want string
	}{
		{SectionSpec{Specifier: "HEADER.FIELDS", Fields: []string{"FROM"}}, "From: a@b\r\n\r\n"},
		{SectionSpec{Specifier: "HEADER.FIELDS.NOT", Fields: []string{"SUBJECT"}}, "From: a@b\r\n\r\n"},
		{SectionSpec{Specifier: "HEADER"}, "Subject: x\r\nFrom: a@b"},
		{SectionSpec{Specifier: "TEXT"}, ""},
	} {
		got, err := f.section(t, tt.spec)
		if err != nil || got != tt.want {
			t.Errorf("%+v = %q, %v; want %q", tt.spec, got, err, tt.want)
		}
	}
}

// TestStreamReaderAt reads a BINARY section out of order and concurrently.
func TestStreamReaderAt(t *testing.T) {
	body := strings.Repeat("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\r\n", 200)
	msg := "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body
	f := newFixture(t, msg)
	r, n, err := Section(f.root, bytes.NewReader(f.blob), int64(len(f.blob)), SectionSpec{Part: []int{1}, Binary: true})
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{}, 0)
	for i := 0; i < 200; i++ {
		for c := byte(0); c < 48; c++ {
			want = append(want, c)
		}
	}
	if n != int64(len(want)) {
		t.Fatalf("size %d, want %d", n, len(want))
	}
	check := func(off, l int64) {
		buf := make([]byte, l)
		k, err := r.ReadAt(buf, off)
		end := min(off+l, n)
		if off >= n {
			if k != 0 || err != io.EOF {
				t.Errorf("ReadAt(%d) beyond end: %d, %v", off, k, err)
			}
			return
		}
		if int64(k) != end-off || !bytes.Equal(buf[:k], want[off:end]) || (end < off+l) != (err == io.EOF) {
			t.Errorf("ReadAt(%d, %d) = %d, %v", off, l, k, err)
		}
	}
	for _, x := range [][2]int64{{0, 100}, {100, 100}, {5000, 10}, {10, 10}, {n - 5, 10}, {n, 1}, {0, n}} {
		check(x[0], x[1])
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for off := int64(i * 97); off < n; off += 1000 {
				check(off, 333)
			}
		})
	}
	wg.Wait()
	if _, err := r.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("negative offset accepted")
	}
}
