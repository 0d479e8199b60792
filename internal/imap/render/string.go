package render

import (
	"bufio"
	"strconv"
	"strings"
	"sync"

	"github.com/letterbox/letterbox/internal/message"
)

// quotedMaxEscapes is the number of quoted-specials ('"' and '\') a string
// may contain and still be sent as a quoted string; with more it is sent as
// a literal, which is easier to read and no longer (Dovecot's
// imap_append_nstring makes the same choice).
const quotedMaxEscapes = 4

// nulReplacement is the byte sent instead of NUL in strings and BODY[]
// literals. IMAP literals are CHAR8 (%x01-ff, RFC 3501 section 9 / RFC 9051
// section 9): NUL may only appear in a literal8 (BINARY, RFC 3516). Dovecot
// sends 0x80.
const nulReplacement = 0x80

// String writes s as an IMAP string (RFC 3501 section 4.3, RFC 9051 section
// 4.3): a quoted string when that is possible, otherwise a literal. It never
// writes an atom: the string grammar has none, and BODYSTRUCTURE fields such
// as "text" must be quoted (use AString where an atom is allowed).
//
// A literal is chosen when s contains CR or LF (not allowed in quoted
// strings), NUL or 8-bit bytes (quoted strings are 7-bit in IMAP4rev1, and a
// literal is valid in both revisions, UTF8=ACCEPT or not), or more than four
// quoted-specials. NUL bytes are written as 0x80 (see the package doc).
func String(w *bufio.Writer, s string) {
	literal, escapes := classify(s)
	switch {
	case literal:
		writeLiteral(w, s)
	case escapes == 0:
		w.WriteByte('"')
		w.WriteString(s)
		w.WriteByte('"')
	default:
		writeQuotedEscaped(w, s)
	}
}

// NString writes NIL for an absent string, else the string (RFC 3501
// nstring).
func NString(w *bufio.Writer, s message.NString) {
	if !s.Valid {
		w.WriteString("NIL")
		return
	}
	String(w, s.S)
}

// AString writes s as an IMAP astring: an atom when s is a non-empty run of
// ASTRING-CHARs (RFC 3501 section 9) other than "NIL" (which a reader of an
// nstring would take for NIL), else as String does.
func AString(w *bufio.Writer, s string) {
	if isAtom(s) {
		w.WriteString(s)
		return
	}
	String(w, s)
}

// Literal writes the prefix of a literal of n bytes ("{n}" CRLF); the caller
// writes the n bytes. For a BINARY section use Literal8.
func Literal(w *bufio.Writer, n int64) {
	w.WriteByte('{')
	w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
	w.WriteString("}\r\n")
}

// Literal8 writes the prefix of a literal8 of n bytes ("~{n}" CRLF, RFC 3516
// section 4.3, RFC 9051 section 4.3), which may contain NUL.
func Literal8(w *bufio.Writer, n int64) {
	w.WriteByte('~')
	Literal(w, n)
}

// isAtom reports whether s can be sent as an astring atom.
func isAtom(s string) bool {
	if s == "" || strings.EqualFold(s, "NIL") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		// atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
		// quoted-specials / resp-specials; astring allows "]".
		if c <= ' ' || c >= 0x7f || c == '(' || c == ')' || c == '{' ||
			c == '%' || c == '*' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// classify reports whether s must be a literal, and how many characters
// need escaping in a quoted string.
func classify[T string | []byte](s T) (literal bool, escapes int) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			escapes++
			if escapes > quotedMaxEscapes {
				return true, escapes
			}
		case c == '\r' || c == '\n' || c == 0 || c >= 0x80:
			return true, escapes
		}
	}
	return false, escapes
}

func writeQuotedEscaped(w *bufio.Writer, s string) {
	w.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			w.WriteString(s[start:i])
			w.WriteByte('\\')
			start = i
		}
	}
	w.WriteString(s[start:])
	w.WriteByte('"')
}

// writeLiteral writes s as a literal, NUL bytes as 0x80.
func writeLiteral(w *bufio.Writer, s string) {
	Literal(w, int64(len(s)))
	writeNoNUL(w, s)
}

// writeNoNUL writes s with NUL bytes replaced by 0x80.
func writeNoNUL(w *bufio.Writer, s string) {
	for {
		i := strings.IndexByte(s, 0)
		if i < 0 {
			w.WriteString(s)
			return
		}
		w.WriteString(s[:i])
		w.WriteByte(nulReplacement)
		s = s[i+1:]
	}
}

func isLWSP(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// nstringNoLF writes a header value with its line breaks removed (Dovecot's
// imap_append_nstring_nolf): a CR or LF disappears, and a space takes the
// place of a line break that is not followed by white space, so that an
// unfolded value keeps its words apart. Used for Date, Message-ID,
// In-Reply-To and the Content-* strings of BODYSTRUCTURE.
func nstringNoLF(w *bufio.Writer, s message.NString) {
	if !s.Valid || !strings.ContainsAny(s.S, "\r\n") {
		NString(w, s)
		return
	}
	v := s.S
	bp := getScratch()
	b := *bp
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\r' && c != '\n' {
			b = append(b, c)
			continue
		}
		if i+1 < len(v) && !isLWSP(v[i+1]) {
			b = append(b, ' ')
		}
	}
	stringBytes(w, b)
	putScratch(bp, b)
}

// human writes a header text meant for display (Subject, display names):
// runs of white space (SP, TAB, CR, LF) become one space and leading and
// trailing white space is removed (Dovecot's imap_append_string_for_humans).
// Encoded words are not decoded (RFC 3501 section 7.4.2 leaves that to the
// client).
func human(w *bufio.Writer, s string) {
	if !needsSqueeze(s) {
		String(w, s)
		return
	}
	bp := getScratch()
	b := *bp
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isLWSP(c) {
			space = len(b) > 0
			continue
		}
		if space {
			b = append(b, ' ')
			space = false
		}
		b = append(b, c)
	}
	stringBytes(w, b)
	putScratch(bp, b)
}

// scratch buffers for transformed header strings, so that rendering a
// folded Subject does not allocate.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func getScratch() *[]byte {
	bp := scratchPool.Get().(*[]byte)
	*bp = (*bp)[:0]
	return bp
}

func putScratch(bp *[]byte, b []byte) {
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		scratchPool.Put(bp)
	}
}

// stringBytes is String for a byte slice that it may modify (NUL bytes
// are replaced in place).
func stringBytes(w *bufio.Writer, b []byte) {
	literal, escapes := classify(b)
	switch {
	case literal:
		Literal(w, int64(len(b)))
		replaceNUL(b)
		w.Write(b)
	case escapes == 0:
		w.WriteByte('"')
		w.Write(b)
		w.WriteByte('"')
	default:
		w.WriteByte('"')
		start := 0
		for i, c := range b {
			if c == '"' || c == '\\' {
				w.Write(b[start:i])
				w.WriteByte('\\')
				start = i
			}
		}
		w.Write(b[start:])
		w.WriteByte('"')
	}
}

// needsSqueeze reports whether human changes s.
func needsSqueeze(s string) bool {
	if s == "" {
		return false
	}
	if isLWSP(s[0]) || isLWSP(s[len(s)-1]) {
		return true
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\t', '\r', '\n':
			return true
		case ' ':
			if isLWSP(s[i+1]) { // s[i] is not the last byte
				return true
			}
		}
	}
	return false
}
