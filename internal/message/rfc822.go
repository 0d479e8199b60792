package message

// This file is an RFC 5322 / RFC 2045 token scanner with the leniency of
// Dovecot's rfc822-parser.c: comments nest, CR/LF are white space, folding
// inside quoted strings and comments is removed, obsolete syntax is accepted,
// and NUL can be replaced inside quoted strings, comments and domain literals.
//
// The scanning functions return 1 when more input follows, 0 at the end of
// the input (a value may still have been produced) and -1 on invalid input.
// White space and comments after a value are skipped, not before it.

// atext classes: 1 = atext, 2 = alphanumeric or 8-bit, 4 = atext that is a
// MIME tspecial ('/', '=', '?').
var atextClass = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= 0x80:
			t[c] = 2
		}
	}
	for _, c := range []byte("!#$%&'*+-^_`{|}~") {
		t[c] = 1
	}
	for _, c := range []byte("/=?") {
		t[c] = 4
	}
	return t
}()

func isAtext(c byte) bool { return atextClass[c] != 0 }

// isTokenChar reports a MIME token character (RFC 2045 token = atext without
// tspecials); '.' is allowed too.
func isTokenChar(c byte) bool { return atextClass[c]&3 != 0 || c == '.' }

const replacementChar = "\uFFFD"

type rfc822Scanner struct {
	data []byte
	pos  int
	// comment, when non-nil, receives the text of the last comment
	// skipped.
	comment *[]byte
	// nulRepl replaces NUL with U+FFFD in quoted strings, comments and
	// domain literals.
	nulRepl bool
}

func newScanner(b []byte) *rfc822Scanner { return &rfc822Scanner{data: b} }

func (s *rfc822Scanner) atEnd() bool { return s.pos >= len(s.data) }

// peek returns the current byte, or 0 at the end (mirroring a C string's
// terminating NUL).
func (s *rfc822Scanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *rfc822Scanner) more() int {
	if s.pos < len(s.data) {
		return 1
	}
	return 0
}

// skipComment skips a (possibly nested) comment; s.data[s.pos] is '('.
func (s *rfc822Scanner) skipComment() int {
	if s.comment != nil {
		*s.comment = (*s.comment)[:0]
	}
	level := 1
	s.pos++
	start := s.pos
	for ; s.pos < len(s.data); s.pos++ {
		switch s.data[s.pos] {
		case 0:
			if s.comment != nil && s.nulRepl {
				*s.comment = append(*s.comment, s.data[start:s.pos]...)
				*s.comment = append(*s.comment, replacementChar...)
				start = s.pos + 1
			}
		case '(':
			level++
		case ')':
			level--
			if level == 0 {
				if s.comment != nil {
					*s.comment = append(*s.comment, s.data[start:s.pos]...)
				}
				s.pos++
				return s.more()
			}
		case '\n':
			// folding white space: drop the (CR)LF
			if s.comment == nil {
				break
			}
			end := s.pos
			if end > start && s.data[end-1] == '\r' {
				end--
			}
			*s.comment = append(*s.comment, s.data[start:end]...)
			start = s.pos + 1
		case '\\':
			s.pos++
			if s.pos >= len(s.data) {
				return -1
			}
			if c := s.data[s.pos]; c == '\r' || c == '\n' || c == 0 {
				// not a quoted-pair; obs-qp allows them
				s.pos--
				break
			}
			if s.comment != nil {
				*s.comment = append(*s.comment, s.data[start:s.pos-1]...)
			}
			start = s.pos
		}
	}
	return -1 // missing ')'
}

// skipLWSP skips white space (SP, TAB, CR, LF) and comments.
func (s *rfc822Scanner) skipLWSP() int {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
			continue
		case '(':
			if s.skipComment() < 0 {
				return -1
			}
			continue
		}
		break
	}
	return s.more()
}

// parseAtom appends 1*atext.
func (s *rfc822Scanner) parseAtom(dst *[]byte) int {
	if s.pos >= len(s.data) || !isAtext(s.data[s.pos]) {
		return -1
	}
	start := s.pos
	for s.pos++; s.pos < len(s.data); s.pos++ {
		if !isAtext(s.data[s.pos]) {
			*dst = append(*dst, s.data[start:s.pos]...)
			return s.skipLWSP()
		}
	}
	*dst = append(*dst, s.data[start:]...)
	return 0
}

// parseDotAtom appends atext *("." atext), allowing CFWS around the dots
// (RFC 822 compatibility).
func (s *rfc822Scanner) parseDotAtom(dst *[]byte) int {
	if s.pos >= len(s.data) || !isAtext(s.data[s.pos]) {
		return -1
	}
	start := s.pos
	s.pos++
	for s.pos < len(s.data) {
		if isAtext(s.data[s.pos]) {
			s.pos++
			continue
		}
		if start == s.pos {
			return -1
		}
		*dst = append(*dst, s.data[start:s.pos]...)
		if ret := s.skipLWSP(); ret <= 0 {
			return ret
		}
		if s.data[s.pos] != '.' {
			return 1
		}
		s.pos++
		*dst = append(*dst, '.')
		if s.skipLWSP() <= 0 {
			return -1
		}
		start = s.pos
	}
	*dst = append(*dst, s.data[start:]...)
	return 0
}

// parseMimeToken appends a MIME token (possibly empty).
func (s *rfc822Scanner) parseMimeToken(dst *[]byte) int {
	start := s.pos
	for ; s.pos < len(s.data); s.pos++ {
		if !isTokenChar(s.data[s.pos]) {
			*dst = append(*dst, s.data[start:s.pos]...)
			return s.skipLWSP()
		}
	}
	*dst = append(*dst, s.data[start:]...)
	return 0
}

// parseQuotedString appends the unquoted content of a quoted string;
// s.data[s.pos] is '"'.
func (s *rfc822Scanner) parseQuotedString(dst *[]byte) int {
	s.pos++
	start := s.pos
	for ; s.pos < len(s.data); s.pos++ {
		switch s.data[s.pos] {
		case 0:
			if s.nulRepl {
				*dst = append(*dst, s.data[start:s.pos]...)
				*dst = append(*dst, replacementChar...)
				start = s.pos + 1
			}
		case '"':
			*dst = append(*dst, s.data[start:s.pos]...)
			s.pos++
			return s.skipLWSP()
		case '\n':
			end := s.pos
			if end > start && s.data[end-1] == '\r' {
				end--
			}
			*dst = append(*dst, s.data[start:end]...)
			start = s.pos + 1
		case '\\':
			s.pos++
			if s.pos >= len(s.data) {
				return -1
			}
			if c := s.data[s.pos]; c == '\r' || c == '\n' || c == 0 {
				s.pos--
				break
			}
			*dst = append(*dst, s.data[start:s.pos-1]...)
			start = s.pos
		}
	}
	return -1 // missing '"'
}

// parseAtomOrDot appends a run of atext and '.'.
func (s *rfc822Scanner) parseAtomOrDot(dst *[]byte) int {
	start := s.pos
	for ; s.pos < len(s.data); s.pos++ {
		if c := s.data[s.pos]; !isAtext(c) && c != '.' {
			*dst = append(*dst, s.data[start:s.pos]...)
			return s.skipLWSP()
		}
	}
	*dst = append(*dst, s.data[start:]...)
	return 0
}

// parsePhrase appends words (atoms, quoted strings, obs-phrase dots)
// separated by single spaces.
func (s *rfc822Scanner) parsePhrase(dst *[]byte) int {
	if s.pos >= len(s.data) {
		return 0
	}
	if s.data[s.pos] == '.' {
		return -1
	}
	for {
		var ret int
		if s.data[s.pos] == '"' {
			ret = s.parseQuotedString(dst)
		} else {
			ret = s.parseAtomOrDot(dst)
		}
		if ret <= 0 {
			return ret
		}
		if c := s.data[s.pos]; !isAtext(c) && c != '"' && c != '.' {
			break
		}
		*dst = append(*dst, ' ')
	}
	return s.skipLWSP()
}

// parseDomainLiteral appends "[...]" including the brackets; backslashes are
// kept.
func (s *rfc822Scanner) parseDomainLiteral(dst *[]byte) int {
	start := s.pos
	for s.pos++; s.pos < len(s.data); s.pos++ {
		switch s.data[s.pos] {
		case 0:
			if s.nulRepl {
				*dst = append(*dst, s.data[start:s.pos]...)
				*dst = append(*dst, replacementChar...)
				start = s.pos + 1
			}
		case '[':
			return -1
		case ']':
			*dst = append(*dst, s.data[start:s.pos+1]...)
			s.pos++
			return s.skipLWSP()
		case '\n':
			end := s.pos
			if end > start && s.data[end-1] == '\r' {
				end--
			}
			*dst = append(*dst, s.data[start:end]...)
			start = s.pos + 1
		case '\\':
			s.pos++
			if s.pos >= len(s.data) {
				return -1
			}
			if c := s.data[s.pos]; c == '\r' || c == '\n' || c == 0 {
				*dst = append(*dst, s.data[start:s.pos]...)
				start = s.pos
				s.pos--
			}
		}
	}
	return -1 // missing ']'
}

// parseDomain appends a domain; s.data[s.pos] is '@'.
func (s *rfc822Scanner) parseDomain(dst *[]byte) int {
	s.pos++
	if s.skipLWSP() <= 0 {
		return -1
	}
	if s.data[s.pos] == '[' {
		return s.parseDomainLiteral(dst)
	}
	return s.parseDotAtom(dst)
}

// parseContentType appends "type/subtype"; on invalid input it returns -1
// and appends nothing or only the type token.
func (s *rfc822Scanner) parseContentType(dst *[]byte) int {
	n0 := len(*dst)
	if s.skipLWSP() <= 0 {
		return -1
	}
	if s.parseMimeToken(dst) <= 0 || len(*dst) == n0 {
		// Dovecot keeps a lone type token that ends the value
		// ("Content-Type: text" gives type "text", subtype "").
		return -1
	}
	if s.peek() != '/' {
		*dst = (*dst)[:n0]
		return -1
	}
	s.pos++
	if s.skipLWSP() <= 0 {
		*dst = (*dst)[:n0]
		return -1
	}
	*dst = append(*dst, '/')
	n1 := len(*dst)
	ret := s.parseMimeToken(dst)
	if ret < 0 || len(*dst) == n1 || (s.pos < len(s.data) && s.data[s.pos] != ';') {
		*dst = (*dst)[:n0]
		return -1
	}
	return ret
}

// parseContentParam parses `";" attribute "=" value`. It returns 1 with the
// key and value, 0 at the end of the input, -1 on invalid input.
func (s *rfc822Scanner) parseContentParam(key, value *[]byte) int {
	*key = (*key)[:0]
	*value = (*value)[:0]
	if s.pos >= len(s.data) {
		return 0
	}
	if s.data[s.pos] != ';' {
		return -1
	}
	s.pos++
	if s.skipLWSP() <= 0 {
		return -1
	}
	if s.parseMimeToken(key) <= 0 {
		return -1
	}
	if s.data[s.pos] != '=' {
		return -1
	}
	s.pos++
	ret := s.skipLWSP()
	switch {
	case ret <= 0:
		// broken: no value
	case s.data[s.pos] == '"':
		ret = s.parseQuotedString(value)
	case s.data[s.pos] == '=':
		// workaround for name==?utf-8?b?...?=
		for s.pos < len(s.data) {
			c := s.data[s.pos]
			if c == ';' || c == ' ' || c == '\t' || c == '\r' || c == '\n' {
				break
			}
			*value = append(*value, c)
			s.pos++
		}
	default:
		ret = s.parseMimeToken(value)
	}
	if ret < 0 {
		return -1
	}
	return 1
}
