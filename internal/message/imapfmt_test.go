package message

// Test-only IMAP formatter: renders a Part as RFC 3501 BODYSTRUCTURE / BODY
// and an Envelope as ENVELOPE, making the same choices as Dovecot 2.3.19
// (imap-bodystructure.c, imap-envelope.c, imap-quote.c). It is meant to move
// into the imap package as is; it depends only on the exported API of this
// package.

import (
	"strconv"
	"strings"
)

// imapDefaultCharset is added to text/* parameters without a charset
// (RFC 2045 section 5.2).
const imapDefaultCharset = "us-ascii"

// imapWriter accumulates IMAP response syntax.
type imapWriter struct {
	b []byte
}

// quotedMaxEscapes: a string with more quoted-specials than this is sent as
// a literal (Dovecot's QUOTED_MAX_ESCAPE_CHARS).
const quotedMaxEscapes = 4

// str writes s as a quoted string, or as a literal when it contains CR, LF,
// 8-bit bytes or many quoted-specials (RFC 3501 section 4.3).
func (w *imapWriter) str(s string) {
	escapes := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			escapes++
			if escapes > quotedMaxEscapes {
				w.literal(s)
				return
			}
		case c == '\r' || c == '\n' || c >= 0x80 || c == 0:
			w.literal(s)
			return
		}
	}
	w.b = append(w.b, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			w.b = append(w.b, '\\')
		}
		w.b = append(w.b, s[i])
	}
	w.b = append(w.b, '"')
}

func (w *imapWriter) literal(s string) {
	w.b = append(w.b, '{')
	w.b = strconv.AppendInt(w.b, int64(len(s)), 10)
	w.b = append(w.b, "}\r\n"...)
	w.b = append(w.b, s...)
}

func (w *imapWriter) nil() { w.b = append(w.b, "NIL"...) }

func (w *imapWriter) sp() { w.b = append(w.b, ' ') }

func (w *imapWriter) raw(s string) { w.b = append(w.b, s...) }

func (w *imapWriter) num(n int64) { w.b = strconv.AppendInt(w.b, n, 10) }

// nstring writes NIL or the string.
func (w *imapWriter) nstring(s NString) {
	if !s.Valid {
		w.nil()
		return
	}
	w.str(s.S)
}

// nstringNoLF writes a header value with its line breaks removed; a space
// is inserted where a line break is not followed by white space.
func (w *imapWriter) nstringNoLF(s NString) {
	if !s.Valid || !strings.ContainsAny(s.S, "\r\n") {
		w.nstring(s)
		return
	}
	var b strings.Builder
	v := s.S
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\r' && c != '\n' {
			b.WriteByte(c)
			continue
		}
		if i+1 < len(v) {
			if n := v[i+1]; n != ' ' && n != '\t' && n != '\r' && n != '\n' {
				b.WriteByte(' ')
			}
		}
	}
	w.str(b.String())
}

// human writes a header text for display: runs of white space (SP, TAB,
// CR, LF) become one space, leading and trailing white space is removed
// (Dovecot's imap_append_string_for_humans).
func (w *imapWriter) human(s string) {
	var b strings.Builder
	lwsp := true // at start: drop leading white space
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\r', '\n':
			if !lwsp {
				b.WriteByte(' ')
			}
			lwsp = true
		case 0:
			b.WriteByte(0x80)
			lwsp = false
		default:
			b.WriteByte(c)
			lwsp = false
		}
	}
	out := b.String()
	if lwsp && len(out) > 0 {
		out = out[:len(out)-1]
	}
	w.str(out)
}

// writeEnvelope writes the parenthesised ENVELOPE of e (RFC 3501 section
// 7.4.2); a nil envelope is all NIL.
func writeEnvelope(w *imapWriter, e *Envelope) {
	w.raw("(")
	if e == nil {
		w.raw("NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")
		return
	}
	w.nstringNoLF(e.Date)
	w.sp()
	if e.Subject.Valid {
		w.human(e.Subject.S)
	} else {
		w.nil()
	}
	for _, l := range [][]Address{e.From, orFrom(e.Sender, e.From), orFrom(e.ReplyTo, e.From), e.To, e.Cc, e.Bcc} {
		w.sp()
		writeAddresses(w, l)
	}
	w.sp()
	w.nstringNoLF(e.InReplyTo)
	w.sp()
	w.nstringNoLF(e.MessageID)
	w.raw(")")
}

// orFrom implements "if Sender/Reply-To is absent, use From" (RFC 3501
// section 7.4.2).
func orFrom(l, from []Address) []Address {
	if len(l) == 0 {
		return from
	}
	return l
}

func writeAddresses(w *imapWriter, l []Address) {
	if len(l) == 0 {
		w.nil()
		return
	}
	w.raw("(")
	for _, a := range l {
		w.raw("(")
		switch a.Kind {
		case AddrGroupStart:
			w.raw("NIL NIL ")
			w.str(a.Mailbox)
			w.raw(" NIL")
		case AddrGroupEnd:
			w.raw("NIL NIL NIL NIL")
		default:
			if a.Name == "" {
				w.nil()
			} else {
				w.human(a.Name)
			}
			w.sp()
			if a.Route == "" {
				w.nil()
			} else {
				w.str(a.Route)
			}
			w.sp()
			w.str(a.Mailbox)
			w.sp()
			w.str(a.Host)
		}
		w.raw(")")
	}
	w.raw(")")
}

// writeParams writes a parameter list; text parts get the default charset
// when they have none.
func writeParams(w *imapWriter, params []Param, text bool) {
	if len(params) == 0 && !text {
		w.nil()
		return
	}
	w.raw("(")
	seenCharset := false
	for i, p := range params {
		if i > 0 {
			w.sp()
		}
		if strings.EqualFold(p.Name, "charset") {
			seenCharset = true
		}
		w.str(p.Name)
		w.sp()
		w.str(p.Value)
	}
	if text && !seenCharset {
		if len(params) > 0 {
			w.sp()
		}
		w.raw(`"charset" "` + imapDefaultCharset + `"`)
	}
	w.raw(")")
}

// writeExtensionCommon writes body-fld-dsp, body-fld-lang and
// body-fld-loc.
func writeExtensionCommon(w *imapWriter, p *Part) {
	w.sp()
	if !p.Disposition.Valid {
		w.nil()
	} else {
		w.raw("(")
		w.str(p.Disposition.S)
		w.sp()
		writeParams(w, p.DispositionParams, false)
		w.raw(")")
	}
	w.sp()
	if p.Language == nil {
		w.nil()
	} else {
		w.raw("(")
		for i, l := range p.Language {
			if i > 0 {
				w.sp()
			}
			w.str(l)
		}
		w.raw(")")
	}
	w.sp()
	w.nstringNoLF(p.Location)
}

// writeBodyStructure writes BODYSTRUCTURE (extended) or BODY of p, without
// the outer parentheses of the response item.
func writeBodyStructure(w *imapWriter, p *Part, extended bool) {
	if p.Kind == KindMultipart {
		if len(p.Children) == 0 {
			// a multipart must have a part: report an empty text/plain
			w.raw(`("text" "plain" ("charset" "` + imapDefaultCharset + `") NIL NIL "7bit" 0 0`)
			if extended {
				w.raw(" NIL NIL NIL NIL")
			}
			w.raw(")")
		}
		for _, c := range p.Children {
			w.raw("(")
			writeBodyStructure(w, c, extended)
			w.raw(")")
		}
		w.sp()
		w.str(p.Subtype)
		if extended {
			w.sp()
			writeParams(w, p.Params, false)
			writeExtensionCommon(w, p)
		}
		return
	}
	text := p.IsText()
	if p.Kind == KindMessage {
		w.raw(`"message" "rfc822"`)
	} else {
		w.str(p.Type)
		w.sp()
		w.str(p.Subtype)
	}
	w.sp()
	writeParams(w, p.Params, text)
	w.sp()
	w.nstringNoLF(p.ID)
	w.sp()
	w.nstringNoLF(p.Description)
	w.sp()
	if p.Encoding.Valid {
		w.str(p.Encoding.S)
	} else {
		w.raw(`"7bit"`)
	}
	w.sp()
	w.num(p.BodySize)
	if text {
		w.sp()
		w.num(p.BodyLines)
	} else if m := p.Message(); m != nil {
		w.sp()
		writeEnvelope(w, m.Envelope)
		w.raw(" (")
		writeBodyStructure(w, m, extended)
		w.raw(") ")
		w.num(p.BodyLines)
	}
	if !extended {
		return
	}
	w.sp()
	w.nstringNoLF(p.MD5)
	writeExtensionCommon(w, p)
}
