package message

import (
	"encoding/base64"
	"strings"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
)

// This file decodes header text for display and SEARCH: RFC 2047 encoded
// words, RFC 2231 extended parameter values, and charsets. Parse never
// decodes (IMAP reports header strings as written); these helpers are for
// consumers that want Unicode text.

// DecodeHeader decodes the RFC 2047 encoded words in an unstructured header
// value (or a display name or parameter value) and returns UTF-8 text.
//
// It is lenient in the ways real mail needs and Dovecot is: encoded words are
// recognised anywhere, not only between white space; encoded text may contain
// spaces; the RFC 2231 language suffix ("=?utf-8*en?q?...?=") is ignored.
// White space between adjacent encoded words is removed (RFC 2047 section
// 6.2), and adjacent encoded words in the same charset are converted together
// so that a multi-byte character split across words survives. Malformed
// encoded words (unknown encoding letter, missing "?=") are left as written;
// undecodable base64 yields what could be decoded. Text in an unknown
// charset and raw 8-bit bytes are kept where they are valid UTF-8, other
// bytes become U+FFFD. Folding line breaks are removed.
func DecodeHeader(s string) string {
	if !strings.Contains(s, "=?") {
		return unfoldUTF8(s)
	}
	var out strings.Builder
	var run []byte // decoded bytes of adjacent encoded words
	runCharset, afterWord := "", false
	flush := func() {
		if len(run) > 0 {
			out.WriteString(DecodeCharsetLenient(runCharset, run))
			run = run[:0]
		}
	}
	start := 0 // start of text not yet written
	for pos := 0; pos+1 < len(s); {
		if s[pos] != '=' || s[pos+1] != '?' {
			pos++
			continue
		}
		charset, text, n, ok := encodedWord(s[pos+2:])
		if !ok {
			pos += 2
			continue
		}
		if between := s[start:pos]; afterWord && isLWSPOnly(between) {
			// white space between encoded words is dropped
			if !strings.EqualFold(charset, runCharset) {
				flush()
			}
		} else {
			flush()
			out.WriteString(unfoldUTF8(between))
		}
		runCharset, afterWord = charset, true
		run = append(run, text...)
		pos += 2 + n
		start = pos
	}
	flush()
	out.WriteString(unfoldUTF8(s[start:]))
	return out.String()
}

// encodedWord parses "charset?E?text?=" (s follows "=?"). It returns the
// charset without a language suffix, the decoded bytes and the length
// consumed.
func encodedWord(s string) (charset string, text []byte, n int, ok bool) {
	q1 := strings.IndexByte(s, '?')
	if q1 <= 0 || q1+2 >= len(s) || s[q1+2] != '?' {
		return "", nil, 0, false
	}
	charset = s[:q1]
	if strings.ContainsAny(charset, " \t\r\n\"()<>@,;:/[]=") {
		return "", nil, 0, false
	}
	enc := s[q1+1]
	rest := s[q1+3:]
	end := strings.IndexByte(rest, '?')
	if end < 0 || end+1 >= len(rest) || rest[end+1] != '=' {
		return "", nil, 0, false
	}
	raw := rest[:end]
	switch enc {
	case 'Q', 'q':
		text = decodeQ(raw)
	case 'B', 'b':
		text = decodeBLenient(raw)
	default:
		return "", nil, 0, false
	}
	if i := strings.IndexByte(charset, '*'); i >= 0 {
		charset = charset[:i] // RFC 2231 section 5 language
	}
	return charset, text, q1 + 3 + end + 2, true
}

// decodeQ decodes the RFC 2047 "Q" encoding; invalid escapes are kept.
func decodeQ(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '_':
			b = append(b, ' ')
		case '=':
			if i+2 < len(s) {
				hi, ok1 := unhex(s[i+1])
				lo, ok2 := unhex(s[i+2])
				if ok1 && ok2 {
					b = append(b, hi<<4|lo)
					i += 2
					continue
				}
			}
			b = append(b, c)
		default:
			b = append(b, c)
		}
	}
	return b
}

// decodeBLenient decodes base64, ignoring white space, returning what could
// be decoded before the first invalid character.
func decodeBLenient(s string) []byte {
	clean := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isB64Space(c) {
			continue
		}
		if c == '=' || base64Value[c] == 0xff {
			break
		}
		clean = append(clean, c)
	}
	clean = clean[:len(clean)/4*4+validTail(len(clean)%4)]
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, _ := base64.RawStdEncoding.Decode(out, clean)
	return out[:n]
}

// validTail returns how many trailing base64 characters can be decoded (a
// single leftover character carries no complete byte).
func validTail(n int) int {
	if n == 1 {
		return 0
	}
	return n
}

func isLWSPOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\r', '\n':
		default:
			return false
		}
	}
	return true
}

// unfoldUTF8 removes folding line breaks and replaces invalid UTF-8.
func unfoldUTF8(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r\n", "", "\n", "", "\r", "").Replace(s)
	}
	return strings.ToValidUTF8(s, replacementChar)
}

// lookupCharset returns the decoder for a charset name, (nil, true) for
// UTF-8 and US-ASCII, and (nil, false) for unknown charsets.
func lookupCharset(name string) (encoding.Encoding, bool) {
	name = strings.TrimSpace(name)
	switch strings.ToLower(name) {
	case "utf-8", "utf8", "us-ascii", "ascii", "":
		return nil, true
	}
	if e, err := ianaindex.MIME.Encoding(name); err == nil && e != nil {
		return e, true
	}
	if e, err := htmlindex.Get(name); err == nil && e != nil {
		return e, true
	}
	return nil, false
}

// DecodeCharset converts b from the named charset (IANA or WHATWG names,
// case-insensitive) to UTF-8. ok is false when the charset is unknown; the
// result then keeps b's valid UTF-8 and replaces the rest with U+FFFD.
func DecodeCharset(charset string, b []byte) (s string, ok bool) {
	e, known := lookupCharset(charset)
	if e == nil {
		return strings.ToValidUTF8(string(b), replacementChar), known
	}
	out, err := e.NewDecoder().Bytes(b)
	if err != nil {
		return strings.ToValidUTF8(string(b), replacementChar), false
	}
	return strings.ToValidUTF8(string(out), replacementChar), true
}

// DecodeCharsetLenient is DecodeCharset without the known flag.
func DecodeCharsetLenient(charset string, b []byte) string {
	s, _ := DecodeCharset(charset, b)
	return s
}

// DecodeRFC2231 decodes an RFC 2231 extended parameter value
// ("charset'language'percent-encoded", the value of a "name*" Param) to
// UTF-8. ok is false when v is not in that form.
func DecodeRFC2231(v string) (value, language string, ok bool) {
	q1 := strings.IndexByte(v, '\'')
	if q1 < 0 {
		return "", "", false
	}
	q2 := strings.IndexByte(v[q1+1:], '\'')
	if q2 < 0 {
		return "", "", false
	}
	charset, language, enc := v[:q1], v[q1+1:q1+1+q2], v[q1+2+q2:]
	b := make([]byte, 0, len(enc))
	for i := 0; i < len(enc); i++ {
		if enc[i] == '%' && i+2 < len(enc) {
			hi, ok1 := unhex(enc[i+1])
			lo, ok2 := unhex(enc[i+2])
			if ok1 && ok2 {
				b = append(b, hi<<4|lo)
				i += 2
				continue
			}
		}
		b = append(b, enc[i])
	}
	return DecodeCharsetLenient(charset, b), language, true
}

// LookupParam returns the decoded value of parameter name (ASCII
// case-insensitive) from a Param list as Parse stores it: an RFC 2231
// "name*" value is charset-decoded and preferred over a plain "name"; a
// plain value has its encoded words decoded (a common violation of RFC 2047
// section 5 in filenames).
func LookupParam(params []Param, name string) (string, bool) {
	plain, found := "", false
	for _, p := range params {
		n := p.Name
		if strings.HasSuffix(n, "*") && strings.EqualFold(n[:len(n)-1], name) {
			if v, _, ok := DecodeRFC2231(p.Value); ok {
				return v, true
			}
			return DecodeHeader(p.Value), true
		}
		if !found && strings.EqualFold(n, name) {
			plain, found = p.Value, true
		}
	}
	if !found {
		return "", false
	}
	return DecodeHeader(plain), true
}

// Filename returns the part's decoded file name: the Content-Disposition
// filename parameter, else the Content-Type name parameter.
func (p *Part) Filename() (string, bool) {
	if v, ok := LookupParam(p.DispositionParams, "filename"); ok {
		return v, true
	}
	return LookupParam(p.Params, "name")
}
