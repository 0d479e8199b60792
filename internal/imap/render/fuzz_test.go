package render

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/letterbox/letterbox/internal/message"
)

// The seed corpus lives in testdata/fuzz/FuzzBodyStructure/ (written from
// oracle messages by TestWriteFuzzCorpus); the f.Add seeds are edge cases
// cheap to keep inline.
var fuzzSeeds = []string{
	"",
	"\r\n",
	"Subject: x",
	testMsg,
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n--b--",
	"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: \"\"\"\"\"\"\r\n\r\n",
	"MIME-Version: 1.0\r\nContent-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n--d\r\n\r\n\r\n--d--\r\n",
	"From: \"a\\\"b\" <x@y>, g: ;\r\nSubject: \x00\xff\r\n\r\n\x00",
	"Content-Type: text/plain; name*0*=utf-8''%41; name*1=\"{5}\r\n\"\r\nContent-Language: ,\r\n\r\n",
}

func FuzzBodyStructure(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		root, err := message.Parse(bytes.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		root, err = message.Unmarshal(root.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		for _, extended := range []bool{false, true} {
			out := render(func(w *bufio.Writer) { BodyStructure(w, root, extended) })
			mustBeList(t, "BODYSTRUCTURE", out)
		}
		blob, size := bytes.NewReader(msg), int64(len(msg))
		root.Walk(func(p *message.Part) bool {
			if p.Envelope != nil {
				mustBeList(t, "ENVELOPE", render(func(w *bufio.Writer) { Envelope(w, p.Envelope) }))
			}
			return true
		})
		forEachPart(root, func(path []int) {
			for _, spec := range []SectionSpec{
				{Part: path},
				{Part: path, Specifier: SpecMIME},
				{Part: path, Specifier: SpecHeader},
				{Part: path, Specifier: SpecText},
				{Part: path, Specifier: SpecHeaderFields, Fields: []string{"Subject", "content-type"}},
				{Part: path, Specifier: SpecHeaderFieldsNot, Fields: []string{"Subject"}},
			} {
				if spec.Specifier == SpecMIME && len(path) == 0 {
					continue
				}
				r, n, err := Section(root, blob, size, spec)
				if err != nil {
					t.Fatalf("BODY[%s]: %v", spec, err)
				}
				b, err := readAll(r, n)
				if err != nil || bytes.IndexByte(b, 0) >= 0 {
					t.Fatalf("BODY[%s]: %d bytes, %v, NUL %v", spec, n, err, bytes.IndexByte(b, 0) >= 0)
				}
				// the section as a literal is valid IMAP data
				var lit bytes.Buffer
				lit.WriteString("(BODY[" + spec.String() + "] {" + strconv.FormatInt(n, 10) + "}\r\n")
				lit.Write(b)
				lit.WriteString(")")
				mustBeList(t, "BODY[]", lit.Bytes())
			}
			n, err := BinarySize(root, blob, size, path)
			r, m, err2 := Section(root, blob, size, SectionSpec{Part: path, Binary: true})
			if err != nil || err2 != nil {
				if !errors.Is(err, ErrUnknownCTE) && !errors.Is(err, ErrParse) || !errors.Is(err2, err) {
					t.Fatalf("BINARY[%v]: %v / BINARY.SIZE: %v", path, err2, err)
				}
				return
			}
			if b, err := readAll(r, m); err != nil || m != n || int64(len(b)) != n {
				t.Fatalf("BINARY[%v]: read %d (%v), size %d, BINARY.SIZE %d", path, len(b), err, m, n)
			}
		})
	})
}

// mustBeList fails unless out is exactly one balanced parenthesised list.
func mustBeList(t *testing.T, what string, out []byte) {
	t.Helper()
	items, err := ParseData(out)
	if err != nil || len(items) != 1 || items[0].Kind != NodeList {
		t.Fatalf("%s output %q: %d items, %v", what, out, len(items), err)
	}
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzBodyStructure from
// oracle messages. Run with LETTERBOX_WRITE_FUZZ_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("LETTERBOX_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set LETTERBOX_WRITE_FUZZ_CORPUS=1 to regenerate testdata/fuzz")
	}
	pick := map[string]bool{}
	for _, id := range []string{"006", "011", "018", "021", "023", "029", "035", "037", "041", "047",
		"049", "053", "057", "059", "061", "069", "073"} {
		pick[id] = true
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzBodyStructure")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range oracleMessages(t) {
		base := filepath.Base(file)
		if !pick[base[:3]] {
			continue
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(normalizeCRLF(raw))))
		if err := os.WriteFile(filepath.Join(dir, "oracle-"+base[:len(base)-4]), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(pick) {
		t.Errorf("wrote %d seeds, want %d", n, len(pick))
	}
}

// FuzzStoredStructure feeds arbitrary bytes to message.Unmarshal, as a
// corrupted database row would: whatever Unmarshal accepts must render
// without panicking and as balanced IMAP lists.
func FuzzStoredStructure(f *testing.F) {
	for _, s := range fuzzSeeds {
		root, err := message.Parse(bytes.NewReader([]byte(s)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(root.Marshal())
	}
	f.Fuzz(func(t *testing.T, stored []byte) {
		root, err := message.Unmarshal(stored)
		if err != nil {
			return
		}
		for _, extended := range []bool{false, true} {
			mustBeList(t, "BODYSTRUCTURE", render(func(w *bufio.Writer) { BodyStructure(w, root, extended) }))
		}
		root.Walk(func(p *message.Part) bool {
			if p.Envelope != nil {
				mustBeList(t, "ENVELOPE", render(func(w *bufio.Writer) { Envelope(w, p.Envelope) }))
			}
			return true
		})
	})
}
