package message

import (
	"io"
	"slices"
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
	for i := 0; i < len(src); i++ {
		if b.invalid {
			return dst
		}
		if b.sub == 0 && !b.padding && !b.end && len(src)-i >= 4 {
			dst, i = b.decodeQuanta(dst, src, i)
			if i == len(src) {
				break
			}
		}
		b.decodeByte(&dst, src[i])
	}
	return dst
}

// decodeQuanta decodes whole 4-character quanta of alphabet characters
// starting at src[i]; it stops before the first quantum that holds anything
// else.
func (b *base64Decoder) decodeQuanta(dst, src []byte, i int) ([]byte, int) {
	n := len(dst)
	dst = slices.Grow(dst, (len(src)-i)/4*3)
	out := dst[:cap(dst)]
	for ; len(src)-i >= 4; i += 4 {
		v0, v1, v2, v3 := base64Value[src[i]], base64Value[src[i+1]], base64Value[src[i+2]], base64Value[src[i+3]]
		if (v0|v1|v2|v3)&0xc0 != 0 {
			break
		}
		out[n], out[n+1], out[n+2] = v0<<2|v1>>4, v1<<4|v2>>2, v2<<6|v3
		n += 3
	}
	return out[:n], i
}

// decodeByte handles one character outside the fast path.
func (b *base64Decoder) decodeByte(dst *[]byte, c byte) {
	if isB64Space(c) {
		return
	}
	if b.end {
		b.invalid = true
		return
	}
	if b.padding {
		// the second '=' of "xx=="
		if c != '=' {
			b.invalid = true
			return
		}
		b.padding, b.end, b.sub = false, true, 0
		return
	}
	v := base64Value[c]
	if v == 0xff {
		switch {
		case c != '=' || b.sub < 2:
			b.invalid = true
		case b.sub == 2:
			b.padding = true
			b.sub = 3
		default: // sub == 3: "xxx="
			b.end, b.sub = true, 0
		}
		return
	}
	switch b.sub {
	case 0:
		b.buf = v
	case 1:
		*dst = append(*dst, b.buf<<2|v>>4)
		b.buf = v
	case 2:
		*dst = append(*dst, b.buf<<4|v>>2)
		b.buf = v
	case 3:
		*dst = append(*dst, b.buf<<6|v)
	}
	b.sub = (b.sub + 1) & 3
}

func (b *base64Decoder) finish(dst []byte) ([]byte, bool) {
	return dst, !b.invalid && !b.padding && b.sub == 0
}

// BinaryReader returns the content of BINARY[section] for this part (RFC
// 3516), reading the stored message from msg: the body decoded as
// BinarySize describes, so exactly BinarySize bytes when BinarySize returns
// no error. It fails up front with ErrUnknownCTE; broken encoded data is
// reported by the reader (ErrInvalidData) after the decodable output, so
// call BinarySize first to choose between a literal and NO [PARSE]. The
// result may contain NUL (send it as a literal8, RFC 3516 section 4.3).
func (p *Part) BinaryReader(msg io.ReaderAt) (io.Reader, error) {
	if transferEncodingOf(p.Encoding) == encUnknown {
		return nil, ErrUnknownCTE
	}
	section := func(from, to int64) io.Reader { return io.NewSectionReader(msg, from, to-from) }
	if len(p.Children) == 0 {
		body := section(p.BodyOffset(), p.End())
		if p.Kind == KindMultipart {
			return body, nil
		}
		return NewDecoder(p.Encoding.S, body)
	}
	var rs []io.Reader
	next := p.BodyOffset()
	for _, c := range p.Children {
		rs = append(rs, section(next, c.Offset))
		switch transferEncodingOf(c.Encoding) {
		case encUnknown:
			return nil, ErrUnknownCTE
		case encQuotedPrintable, encBase64:
			// the header without its Content-Transfer-Encoding
			// fields, "Content-Transfer-Encoding: binary" before the
			// empty line (the bytes after the last indexed field)
			from := c.Offset
			for _, f := range c.Header {
				if strings.EqualFold(f.Name, "Content-Transfer-Encoding") {
					rs = append(rs, section(from, f.Offset))
					from = f.Offset + f.Size
				}
			}
			end := c.Offset
			if n := len(c.Header); n > 0 {
				end = c.Header[n-1].Offset + c.Header[n-1].Size
			}
			rs = append(rs, section(from, end), strings.NewReader(binaryCTELine), section(end, c.BodyOffset()))
		default:
			rs = append(rs, section(c.Offset, c.BodyOffset()))
		}
		b, err := c.BinaryReader(msg)
		if err != nil {
			return nil, err
		}
		rs = append(rs, b)
		next = c.End()
	}
	rs = append(rs, section(next, p.End()))
	return io.MultiReader(rs...), nil
}
