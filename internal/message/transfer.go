package message

import (
	"io"
	"strings"
)

// transferEncoding classifies a Content-Transfer-Encoding for decoding.
type transferEncoding uint8

const (
	encIdentity transferEncoding = iota // 7bit, 8bit, binary, or absent
	encQuotedPrintable
	encBase64
	encUnknown
)

// transferEncodingOf classifies the Content-Transfer-Encoding token as
// Parse stored it (absent means 7bit, RFC 2045 section 6.1).
func transferEncodingOf(cte NString) transferEncoding {
	if !cte.Valid {
		return encIdentity
	}
	switch {
	case strings.EqualFold(cte.S, "7bit"), strings.EqualFold(cte.S, "8bit"), strings.EqualFold(cte.S, "binary"):
		return encIdentity
	case strings.EqualFold(cte.S, "quoted-printable"):
		return encQuotedPrintable
	case strings.EqualFold(cte.S, "base64"):
		return encBase64
	}
	return encUnknown
}

// bodyDecoder decodes a transfer-encoded body incrementally.
type bodyDecoder interface {
	// decode appends the decoded form of src to dst. After invalid
	// input it keeps decoding leniently and reports the error from
	// finish.
	decode(dst, src []byte) []byte
	// finish flushes and appends pending output; it returns false if
	// the input was invalid.
	finish(dst []byte) ([]byte, bool)
}

func newBodyDecoder(enc transferEncoding) bodyDecoder {
	switch enc {
	case encQuotedPrintable:
		return &qpDecoder{}
	case encBase64:
		return &base64Decoder{}
	}
	return nil
}

// NewDecoder returns a reader that decodes r according to the
// Content-Transfer-Encoding token cte ("" means 7bit). It returns
// ErrUnknownCTE for encodings other than 7bit, 8bit, binary,
// quoted-printable and base64. Reading returns ErrInvalidData after all
// decodable output when the encoded data is broken. The decoding (and
// therefore the output size) is the one Part.BinarySize is computed with;
// quoted-printable turns bare LF into CRLF and drops trailing white space of
// lines, as RFC 2045 section 6.7 rule 3 requires.
func NewDecoder(cte string, r io.Reader) (io.Reader, error) {
	enc := encIdentity
	if cte != "" {
		enc = transferEncodingOf(NS(cte))
	}
	switch enc {
	case encUnknown:
		return nil, ErrUnknownCTE
	case encIdentity:
		return r, nil
	}
	return &decodeReader{r: r, dec: newBodyDecoder(enc), in: make([]byte, 32<<10)}, nil
}

type decodeReader struct {
	r    io.Reader
	dec  bodyDecoder
	in   []byte
	out  []byte
	off  int
	err  error
	done bool
}

func (d *decodeReader) Read(p []byte) (int, error) {
	for d.off == len(d.out) {
		if d.done {
			return 0, d.err
		}
		d.out, d.off = d.out[:0], 0
		n, err := d.r.Read(d.in)
		d.out = d.dec.decode(d.out, d.in[:n])
		if err != nil {
			d.done = true
			var ok bool
			d.out, ok = d.dec.finish(d.out)
			switch {
			case err != io.EOF:
				d.err = err
			case !ok:
				d.err = ErrInvalidData
			default:
				d.err = io.EOF
			}
		}
	}
	n := copy(p, d.out[d.off:])
	d.off += n
	return n, nil
}

// qpDecoder is a quoted-printable decoder (RFC 2045 section 6.7) with the
// leniency and error rules of Dovecot's qp-decoder.c: lowercase hex is
// accepted; "=" not followed by two hex digits, "=" plus white space not
// followed by a line break, a CR not followed by LF and a trailing "=" are
// errors; white space at the end of a line is removed; bare LF becomes
// CRLF.
type qpDecoder struct {
	state   uint8
	hex     byte
	ws      []byte // pending white space
	invalid bool
}

const (
	qpText = iota
	qpWhitespace
	qpEquals
	qpEqualsWhitespace
	qpHex2
	qpCR
	qpSoftCR
)

// qpMaxWhitespace bounds the white space kept while waiting to learn
// whether it is trailing (a QP line is at most 76 characters).
const qpMaxWhitespace = 76

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// recover outputs the pending bytes of an invalid sequence literally.
func (q *qpDecoder) recover(dst []byte) []byte {
	switch q.state {
	case qpEquals:
		dst = append(dst, '=')
	case qpHex2:
		dst = append(dst, '=', q.hex)
	case qpEqualsWhitespace:
		dst = append(dst, '=')
		dst = append(dst, q.ws...)
	case qpCR:
		dst = append(dst, q.ws...)
		dst = append(dst, '\r')
	case qpSoftCR:
		dst = append(dst, '=')
		dst = append(dst, q.ws...)
		dst = append(dst, '\r')
	}
	q.ws = q.ws[:0]
	q.state = qpText
	q.invalid = true
	return dst
}

func (q *qpDecoder) decode(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		c := src[i]
		switch q.state {
		case qpText:
			start := i
			for i < len(src) && src[i] > '=' {
				i++
			}
			dst = append(dst, src[start:i]...)
			if i == len(src) {
				continue
			}
			switch c = src[i]; c {
			case '=':
				q.state = qpEquals
			case '\r':
				q.state = qpCR
			case '\n':
				dst = append(dst, '\r', '\n')
			case ' ', '\t':
				q.state = qpWhitespace
				q.ws = append(q.ws, c)
			default:
				dst = append(dst, c)
			}
		case qpWhitespace:
			switch c {
			case ' ', '\t':
				if len(q.ws) <= qpMaxWhitespace {
					q.ws = append(q.ws, c)
				}
			case '\r':
				q.state = qpCR
			case '\n':
				// trailing white space is dropped
				dst = append(dst, '\r', '\n')
				q.ws = q.ws[:0]
				q.state = qpText
			default:
				if len(q.ws) > qpMaxWhitespace {
					// some white space was already dropped
					q.invalid = true
				}
				dst = append(dst, q.ws...)
				q.ws = q.ws[:0]
				q.state = qpText
				continue // reprocess c as text
			}
		case qpEquals:
			switch {
			case c == ' ' || c == '\t':
				q.ws = append(q.ws[:0], c)
				q.state = qpEqualsWhitespace
			case c == '\r':
				q.state = qpSoftCR
			case c == '\n':
				q.state = qpText
			default:
				if _, ok := unhex(c); ok {
					q.hex = c
					q.state = qpHex2
				} else {
					dst = q.recover(dst)
					continue
				}
			}
		case qpHex2:
			lo, ok := unhex(c)
			if !ok {
				dst = q.recover(dst)
				continue
			}
			hi, _ := unhex(q.hex)
			dst = append(dst, hi<<4|lo)
			q.state = qpText
		case qpEqualsWhitespace:
			switch c {
			case ' ', '\t':
				if len(q.ws) <= qpMaxWhitespace {
					q.ws = append(q.ws, c)
				}
			case '\r':
				q.state = qpSoftCR
			case '\n':
				q.ws = q.ws[:0]
				q.state = qpText
			default:
				dst = q.recover(dst)
				continue
			}
		case qpCR, qpSoftCR:
			if c != '\n' {
				dst = q.recover(dst)
				continue
			}
			q.ws = q.ws[:0]
			if q.state == qpCR {
				dst = append(dst, '\r', '\n')
			}
			q.state = qpText
		}
		i++
	}
	return dst
}

func (q *qpDecoder) finish(dst []byte) ([]byte, bool) {
	if q.state != qpText && q.state != qpWhitespace {
		dst = q.recover(dst)
	}
	q.ws = q.ws[:0]
	q.state = qpText
	return dst, !q.invalid
}

// base64Decoder is a base64 decoder (RFC 2045 section 6.8) with the rules of
// Dovecot's base64_decode_more: white space (SP, TAB, CR, LF) is ignored
// anywhere; any other character outside the alphabet, data after the final
// padding and a truncated final quantum are errors.
type base64Decoder struct {
	sub     uint8 // position in the current 4-character quantum
	buf     byte
	padding bool // inside the padding: one '=' seen, another expected
	end     bool // padding complete: only white space may follow
	invalid bool
}

var base64Value = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

func isB64Space(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func (b *base64Decoder) decode(dst, src []byte) []byte {
	if b.invalid {
		return dst
	}
	for _, c := range src {
		if isB64Space(c) {
			continue
		}
		if b.end {
			b.invalid = true
			return dst
		}
		if b.padding {
			// the second '=' of "xx=="
			if c != '=' {
				b.invalid = true
				return dst
			}
			b.padding, b.end, b.sub = false, true, 0
			continue
		}
		v := base64Value[c]
		if v == 0xff {
			switch {
			case c != '=' || b.sub < 2:
				b.invalid = true
				return dst
			case b.sub == 2:
				b.padding = true
				b.sub = 3
			default: // sub == 3: "xxx="
				b.end, b.sub = true, 0
			}
			continue
		}
		switch b.sub {
		case 0:
			b.buf = v
		case 1:
			dst = append(dst, b.buf<<2|v>>4)
			b.buf = v
		case 2:
			dst = append(dst, b.buf<<4|v>>2)
			b.buf = v
		case 3:
			dst = append(dst, b.buf<<6|v)
		}
		b.sub = (b.sub + 1) & 3
	}
	return dst
}

func (b *base64Decoder) finish(dst []byte) ([]byte, bool) {
	return dst, !b.invalid && !b.padding && b.sub == 0
}
