package message

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ (written by
// TestWriteFuzzCorpus); the f.Add seeds below are the edge cases that are
// cheap to keep inline.

var parseSeeds = []string{
	"",
	"\r\n",
	"Subject: x",
	" leading: continuation\r\n\r\n",
	"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\n----\r\n",
	"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n--b--",
	"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n--d\r\n\r\n\r\n--d--\r\n",
	"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n",
	"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=\r",
	"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary*0=a; boundary*1=b\r\n\r\n--ab\r\n\r\nx\r\n--ab--\r\n",
}

func FuzzParse(f *testing.F) {
	for _, s := range append(parseSeeds, nestedMsg) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		root, err := Parse(bytes.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		if err := root.Validate(int64(len(msg))); err != nil {
			t.Fatal(err)
		}
		root.Walk(func(p *Part) bool {
			body := msg[p.BodyOffset():p.End()]
			if n := int64(bytes.Count(body, []byte{'\n'})); n != p.BodyLines {
				t.Fatalf("part at %d: %d lines, body has %d", p.Offset, p.BodyLines, n)
			}
			for _, c := range p.Children {
				if (c.Envelope != nil) != (p.Kind == KindMessage) {
					t.Fatalf("part at %d: envelope %v under a %v part", c.Offset, c.Envelope != nil, p.Kind)
				}
			}
			if p.Kind == KindLeaf && transferEncodingOf(p.Encoding) == encIdentity && p.DecodedSize != p.BodySize {
				t.Fatalf("identity part at %d: decoded %d != body %d", p.Offset, p.DecodedSize, p.BodySize)
			}
			size, err := p.BinarySize()
			if err != nil && err != ErrUnknownCTE && err != ErrInvalidData {
				t.Fatal(err)
			}
			if err == nil {
				r, err := p.BinaryReader(bytes.NewReader(msg))
				if err != nil {
					t.Fatal(err)
				}
				if b, err := io.ReadAll(r); err != nil || int64(len(b)) != size {
					t.Fatalf("part at %d: BINARY content %d bytes (%v), BinarySize %d", p.Offset, len(b), err, size)
				}
			}
			if got := ParseHeader(msg[p.Offset:p.BodyOffset()], p.Offset); p.Flags&FlagHeaderTruncated == 0 && len(got)+len(p.Header) > 0 && !reflect.DeepEqual(got, p.Header) {
				t.Fatalf("part at %d: ParseHeader differs from the index", p.Offset)
			}
			return true
		})
		for _, path := range [][]int{{1}, {1, 1}, {2, 1}, {1, 2, 1}} {
			root.PartAt(path)
		}
		stored, err := Unmarshal(root.Marshal())
		if err != nil || !reflect.DeepEqual(root, stored) {
			t.Fatalf("Marshal round trip: %v", err)
		}
		// Rendering as IMAP is fuzzed in internal/imap/render.
	})
}

func FuzzUnmarshal(f *testing.F) {
	for _, s := range append(parseSeeds, nestedMsg, deepMultipart(5)) {
		p, err := Parse(strings.NewReader(s))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p.Marshal())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Unmarshal(b)
		if err != nil {
			return
		}
		// whatever was accepted must be usable without panics, and
		// survive another round trip
		_ = p.Validate(p.End())
		p.PartAt([]int{1, 1, 1})
		_, _ = p.BinarySize()
		q, err := Unmarshal(p.Marshal())
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("second round trip: %v", err)
		}
	})
}

func FuzzParseAddressList(f *testing.F) {
	for _, s := range []string{
		"a@b", "Name <a@b>", "G: a@b, \"x\" <c@d>;, e@f", "undisclosed-recipients:;",
		"<@r1,@r2:u@h>", "Pete(A \\) chap) <pete(x)@silly.test(y)>", "\"\\", "(", "<", "a@[", ":;,@<>",
		"=?utf-8?q?x?= <a@b>", "\"a\x00b\" <c@d>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		list, err := ParseAddressList(s)
		invalid, open := false, false
		for _, a := range list {
			invalid = invalid || a.Invalid
			switch a.Kind {
			case AddrGroupStart:
				if open {
					t.Fatalf("nested group in %q", s)
				}
				open = true
			case AddrGroupEnd:
				if !open {
					t.Fatalf("group end without start in %q", s)
				}
				open = false
			default:
				// the host is never empty (that would mean group
				// syntax in an IMAP ENVELOPE); the mailbox is empty
				// only for a quoted empty local part (""@host)
				if a.Host == "" {
					t.Fatalf("address without host in %q: %+v", s, a)
				}
			}
		}
		if open {
			t.Fatalf("unterminated group in %q", s)
		}
		if invalid != (err != nil) {
			t.Fatalf("error %v but invalid=%v for %q", err, invalid, s)
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	for _, s := range []string{
		"=?UTF-8?Q?Caf=C3=A9?=", "=?utf-8?b?4oK=?= =?utf-8?b?rA==?=", "=?iso-8859-1?q?=E9?=", "=?x?q?a?= b",
		"=?utf-8?q?unterminated word =?bogus?q?abc?=", "=?=?=?", "=??q??=", "=?utf-8*en?B?w6k=?=", "\xff=?koi8-r?b?8A==?=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := DecodeHeader(s)
		if !utf8.ValidString(got) {
			t.Fatalf("DecodeHeader(%q) = %q is not UTF-8", s, got)
		}
		if utf8.ValidString(s) && !strings.Contains(s, "=?") && !strings.ContainsAny(s, "\r\n") && got != s {
			t.Fatalf("DecodeHeader changed plain text %q to %q", s, got)
		}
	})
}

// TestWriteFuzzCorpus regenerates testdata/fuzz from the oracle corpus and
// the inline seeds. Run with LETTERBOX_WRITE_FUZZ_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("LETTERBOX_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set LETTERBOX_WRITE_FUZZ_CORPUS=1 to regenerate testdata/fuzz")
	}
	pick := map[string]bool{}
	for _, id := range []string{"001", "010", "011", "016", "018", "021", "028", "033", "035", "037", "038",
		"040", "041", "045", "047", "049", "052", "054", "057", "059", "061", "062", "068", "071", "072", "073"} {
		pick[id] = true
	}
	var msgs [][]byte
	for _, file := range oracleMessages(t) {
		if pick[filepath.Base(file)[:3]] {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, normalizeCRLF(b))
		}
	}
	write := func(target string, i int, v any) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var lit string
		switch v := v.(type) {
		case []byte:
			lit = "[]byte(" + strconv.Quote(string(v)) + ")"
		case string:
			lit = "string(" + strconv.Quote(v) + ")"
		}
		data := "go test fuzz v1\n" + lit + "\n"
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%03d", i)), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range msgs {
		write("FuzzParse", i, m)
		p, err := Parse(bytes.NewReader(m))
		if err != nil {
			t.Fatal(err)
		}
		write("FuzzUnmarshal", i, p.Marshal())
		if p.Envelope != nil {
			for _, f := range p.Header {
				if k := lookupFieldKind([]byte(f.Name)); k >= fieldFrom && k <= fieldBcc {
					v := string(m[f.Offset+int64(len(f.Name))+1 : f.Offset+f.Size])
					write("FuzzParseAddressList", i*8+int(k-fieldFrom), strings.TrimSpace(v))
				}
				if lookupFieldKind([]byte(f.Name)) == fieldSubject {
					write("FuzzDecodeHeader", i, strings.TrimSpace(string(m[f.Offset+8:f.Offset+f.Size])))
				}
			}
		}
	}
}
