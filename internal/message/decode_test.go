package message

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

func TestDecodeHeader(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"folded\r\n text", "folded text"},
		{"=?UTF-8?Q?Caf=C3=A9_meeting_=E2=80=93_agenda?=", "Café meeting – agenda"},
		{"=?utf-8?q?Ren=C3=A9e_Dupr=C3=A9?=", "Renée Dupré"},
		{"=?UTF-8?B?5Lya6K2w44Gu44GK55+l44KJ44Gb?=", "会議のお知らせ"},
		{"=?utf-8?b?8J+YgCBTbWlsZXk=?=", "😀 Smiley"},
		{"=?iso-8859-1?q?Fran=E7ois_M=FCller?=", "François Müller"},
		{"=?ISO-8859-15?Q?=A4uro_Desk?=", "€uro Desk"},
		{"=?windows-1252?Q?=93Quoted=94_=96_price_=80_99?= and\r\n =?iso-8859-1?b?qSBjb3B5cmlnaHQ=?=", "“Quoted” – price € 99 and © copyright"},
		// white space between adjacent encoded words goes (RFC 2047 6.2)
		{"=?utf-8?q?Hello?= =?utf-8?q?_World?=", "Hello World"},
		{"=?utf-8?q?a?=\r\n\t =?utf-8?q?b?=", "ab"},
		// a UTF-8 sequence split across two words survives
		{"split:=?utf-8?b?4oK=?= =?utf-8?b?rA==?= end", "split:€ end"},
		// malformed words stay as written
		{"=?utf-8?x?WrongEncoding?=", "=?utf-8?x?WrongEncoding?="},
		{"=?utf-8?q?unterminated", "=?utf-8?q?unterminated"},
		{"=?utf-8?q?unterminated word =?bogus-charset?q?abc?=", "=?utf-8?q?unterminated word abc"},
		{"=?utf-8?b?!!not*base64!!?=", ""},
		{"word=?utf-8?q?inside?=word", "wordinsideword"},
		{"=?utf-8?q??=", ""},
		{"=?utf-8*en?q?with_language?=", "with language"},
		{"=?x-unknown?q?Mystery?=", "Mystery"},
		{"=?utf-8?q?bad=ZZhex?=", "bad=ZZhex"},
		{"raw \xff byte", "raw \uFFFD byte"},
		{"=?", "=?"},
		{"=?a?q?", "=?a?q?"},
	} {
		if got := DecodeHeader(tc.in); got != tc.want {
			t.Errorf("DecodeHeader(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDecodeRFC2231AndParams(t *testing.T) {
	v, lang, ok := DecodeRFC2231("iso-8859-1'de'Gr%FC%DFe.txt")
	if !ok || v != "Grüße.txt" || lang != "de" {
		t.Errorf("DecodeRFC2231 = %q %q %v", v, lang, ok)
	}
	if _, _, ok := DecodeRFC2231("no quotes"); ok {
		t.Error("DecodeRFC2231 accepted a plain value")
	}
	params := []Param{
		{"charset", "utf-8"},
		{"name", "=?utf-8?q?=C3=9Cbersicht.pdf?="},
		{"filename*", "utf-8''Sehr%20langer%20Dateiname%20%C3%A4%C3%B6%C3%BC-final.txt"},
		{"title", "plain"},
	}
	for _, tc := range []struct{ name, want string }{
		{"NAME", "Übersicht.pdf"},
		{"filename", "Sehr langer Dateiname äöü-final.txt"},
		{"title", "plain"},
	} {
		if got, ok := LookupParam(params, tc.name); !ok || got != tc.want {
			t.Errorf("LookupParam(%s) = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
	if _, ok := LookupParam(params, "missing"); ok {
		t.Error("LookupParam found a missing parameter")
	}
	p := &Part{Params: params[:2], DispositionParams: []Param{{"filename", "a.txt"}}}
	if f, _ := p.Filename(); f != "a.txt" {
		t.Errorf("Filename = %q", f)
	}
	p.DispositionParams = nil
	if f, _ := p.Filename(); f != "Übersicht.pdf" {
		t.Errorf("Filename from name = %q", f)
	}
}

func TestDecodeCharset(t *testing.T) {
	for _, tc := range []struct {
		charset, in, want string
		ok                bool
	}{
		{"utf-8", "ok ✓", "ok ✓", true},
		{"US-ASCII", "abc", "abc", true},
		{"iso-8859-1", "Gr\xfc\xdfe", "Grüße", true},
		{"latin1", "\xe9", "é", true},
		{"koi8-r", "\xf0\xd2\xc9\xd7\xc5\xd4", "Привет", true},
		{"shift_jis", "\x93\xfa\x96\x7b", "日本", true},
		{"x-klingon-42", "a\xffb", "a\uFFFDb", false},
	} {
		got, ok := DecodeCharset(tc.charset, []byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("DecodeCharset(%s, %q) = %q, %v; want %q, %v", tc.charset, tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func decodeAll(t *testing.T, cte, in string) (string, error) {
	t.Helper()
	r, err := NewDecoder(cte, iotest.OneByteReader(strings.NewReader(in)))
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(r)
	return string(b), err
}

func TestTransferDecoders(t *testing.T) {
	for _, tc := range []struct {
		cte, in, want string
		err           error
	}{
		{"7bit", "as is\r\n", "as is\r\n", nil},
		{"", "as is", "as is", nil},
		{"x-uuencode", "", "", ErrUnknownCTE},
		{"quoted-printable", "r=E9sum=e9 =3D\r\n", "r\xe9sum\xe9 =\r\n", nil},
		{"quoted-printable", "soft=\r\nbreak", "softbreak", nil},
		{"quoted-printable", "space before soft break =  \r\nx", "space before soft break x", nil},
		{"quoted-printable", "trailing   \r\nws\t\r\n", "trailing\r\nws\r\n", nil},
		{"quoted-printable", "bare\nlf", "bare\r\nlf", nil},
		{"quoted-printable", "bad =ZZ", "bad =ZZ", ErrInvalidData},
		{"quoted-printable", "short =4 x", "short =4 x", ErrInvalidData},
		{"quoted-printable", "ends with=", "ends with=", ErrInvalidData},
		{"quoted-printable", "bare\rcr", "bare\rcr", ErrInvalidData},
		{"quoted-printable", "=  x", "=  x", ErrInvalidData},
		{"base64", "SGVsbG8g\r\nd29ybGQ=\r\n", "Hello world", nil},
		{"BASE64", "AAEC\r\nAwQFBgcI\r\nCQoL DA0O", "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e", nil},
		{"base64", "SGk=", "Hi", nil},
		{"base64", "SGk=\r\n \r\n", "Hi", nil},
		{"base64", "SQ==", "I", nil},
		{"base64", "SQ=\r\n=", "I", nil},
		{"base64", "SGVsbG8gd29ybGQ", "Hello world", ErrInvalidData}, // truncated quantum
		{"base64", "SGVsbG8g!!d29y*bGQ=", "Hello ", ErrInvalidData},
		{"base64", "SGk=SGVsbG8=", "Hi", ErrInvalidData},
		{"base64", "SQ=", "I", ErrInvalidData},
		{"base64", "S===", "", ErrInvalidData},
	} {
		got, err := decodeAll(t, tc.cte, tc.in)
		if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%s %q: error %v, want %v", tc.cte, tc.in, err, tc.err)
		}
		if tc.err != ErrUnknownCTE && got != tc.want {
			t.Errorf("%s %q: got %q, want %q", tc.cte, tc.in, got, tc.want)
		}
	}
	// a read error is passed through
	r, _ := NewDecoder("base64", iotest.ErrReader(io.ErrUnexpectedEOF))
	if _, err := io.ReadAll(r); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("read error = %v", err)
	}
}

func TestDecodedSizeMatchesDecoder(t *testing.T) {
	// Parse's BINARY sizes and NewDecoder must agree byte for byte.
	body := strings.Repeat("line with trailing space   \r\nsoft=\r\nbreak =C3=A9\r\n", 2000)
	msg := "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + body
	p, err := Parse(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := NewDecoder("quoted-printable", strings.NewReader(body))
	dec, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := p.BinarySize(); err != nil || n != int64(len(dec)) {
		t.Errorf("BinarySize = %d, %v; decoder gives %d", n, err, len(dec))
	}
	if !bytes.Contains(dec, []byte("line with trailing space\r\nsoftbreak \xc3\xa9\r\n")) {
		t.Errorf("unexpected decoding %q", dec[:60])
	}
}

// TestBase64DecoderChunking compares the decoder with encoding/base64 on
// random data split into random lines and random write boundaries.
func TestBase64DecoderChunking(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 300; n++ {
		data := make([]byte, rng.IntN(400))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		enc := base64.StdEncoding.EncodeToString(data)
		var b strings.Builder
		for len(enc) > 0 {
			k := min(len(enc), 1+rng.IntN(80))
			b.WriteString(enc[:k])
			b.WriteString([]string{"\r\n", "\n", " ", ""}[rng.IntN(4)])
			enc = enc[k:]
		}
		in := b.String()
		d := &base64Decoder{}
		var out []byte
		for len(in) > 0 {
			k := min(len(in), rng.IntN(20))
			out = d.decode(out, []byte(in[:k]))
			in = in[k:]
		}
		out, ok := d.finish(out)
		if !ok || !bytes.Equal(out, data) {
			t.Fatalf("decoded %d bytes (ok=%v), want %d: %q", len(out), ok, len(data), b.String())
		}
	}
}
