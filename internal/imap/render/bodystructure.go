package render

import (
	"bufio"
	"strconv"
	"strings"

	"github.com/letterbox/letterbox/internal/message"
)

// defaultCharset is the charset parameter that BODYSTRUCTURE reports for
// text/* parts without one (RFC 2045 section 5.2).
const defaultCharset = "us-ascii"

// emptyTextPart is the body reported for a multipart without usable body
// parts (a boundary that is missing or never occurs, or zero parts): the
// body grammar needs at least one part, and Dovecot reports an empty
// text/plain part.
const emptyTextPart = `("text" "plain" ("charset" "` + defaultCharset + `") NIL NIL "7bit" 0 0`

// BodyStructure writes the parenthesised body structure of p (RFC 3501
// section 7.4.2 "body", RFC 9051 section 7.5.2): without extension data
// (FETCH BODY) when extended is false, with it (FETCH BODYSTRUCTURE) when
// true. p is normally the root of a message; any part of a valid tree may be
// given.
//
// Defaults applied here (package message stores what the message says):
// the body-fld-enc of a part without Content-Transfer-Encoding is "7bit";
// text/* parts without a charset parameter get ("charset" "us-ascii"); a
// multipart without children shows one empty text/plain part. Strings are
// served as in ENVELOPE (see the package doc); encoded words in
// Content-Description are not decoded.
//
// p should be a tree that passed message.Part.Validate (Section and
// BinarySize check it; BodyStructure cuts no byte ranges, so a corrupt tree
// can only give wrong numbers). The recursion is bounded by the depth of p,
// which Validate limits to message.MaxDepth and message.Unmarshal to twice
// that.
func BodyStructure(w *bufio.Writer, p *message.Part, extended bool) {
	w.WriteByte('(')
	bodyStructure(w, p, extended)
	w.WriteByte(')')
}

// bodyStructure writes the body of p without its enclosing parentheses.
func bodyStructure(w *bufio.Writer, p *message.Part, extended bool) {
	if p.Kind == message.KindMultipart {
		// body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart]
		if len(p.Children) == 0 {
			w.WriteString(emptyTextPart)
			if extended {
				w.WriteString(" NIL NIL NIL NIL")
			}
			w.WriteByte(')')
		}
		for _, c := range p.Children {
			w.WriteByte('(')
			bodyStructure(w, c, extended)
			w.WriteByte(')')
		}
		w.WriteByte(' ')
		String(w, p.Subtype)
		if extended {
			// body-ext-mpart = body-fld-param [SP body-fld-dsp
			//                  [SP body-fld-lang [SP body-fld-loc]]]
			w.WriteByte(' ')
			params(w, p.Params, false)
			extensionCommon(w, p)
		}
		return
	}
	// body-type-1part = (body-type-basic / body-type-msg / body-type-text)
	//                   [SP body-ext-1part]
	text := p.IsText()
	if p.Kind == message.KindMessage {
		w.WriteString(`"message" "rfc822"`)
	} else {
		String(w, p.Type)
		w.WriteByte(' ')
		String(w, p.Subtype)
	}
	// body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP
	//               body-fld-enc SP body-fld-octets
	w.WriteByte(' ')
	params(w, p.Params, text)
	w.WriteByte(' ')
	nstringNoLF(w, p.ID)
	w.WriteByte(' ')
	nstringNoLF(w, p.Description)
	w.WriteByte(' ')
	if p.Encoding.Valid {
		String(w, p.Encoding.S)
	} else {
		w.WriteString(`"7bit"`)
	}
	w.WriteByte(' ')
	writeInt(w, p.BodySize)
	if text {
		// body-type-text: SP body-fld-lines
		w.WriteByte(' ')
		writeInt(w, p.BodyLines)
	} else if m := p.Message(); m != nil {
		// body-type-msg: SP envelope SP body SP body-fld-lines
		w.WriteByte(' ')
		Envelope(w, m.Envelope)
		w.WriteString(" (")
		bodyStructure(w, m, extended)
		w.WriteString(") ")
		writeInt(w, p.BodyLines)
	}
	if !extended {
		return
	}
	// body-ext-1part = body-fld-md5 [SP body-fld-dsp [SP body-fld-lang
	//                  [SP body-fld-loc]]]
	w.WriteByte(' ')
	nstringNoLF(w, p.MD5)
	extensionCommon(w, p)
}

// params writes body-fld-param: NIL or a list of name/value pairs. Text
// parts get the default charset when they have none.
func params(w *bufio.Writer, ps []message.Param, text bool) {
	if len(ps) == 0 && !text {
		w.WriteString("NIL")
		return
	}
	w.WriteByte('(')
	charset := false
	for i := range ps {
		if i > 0 {
			w.WriteByte(' ')
		}
		if strings.EqualFold(ps[i].Name, "charset") {
			charset = true
		}
		String(w, ps[i].Name)
		w.WriteByte(' ')
		String(w, ps[i].Value)
	}
	if text && !charset {
		if len(ps) > 0 {
			w.WriteByte(' ')
		}
		w.WriteString(`"charset" "` + defaultCharset + `"`)
	}
	w.WriteByte(')')
}

// extensionCommon writes SP body-fld-dsp SP body-fld-lang SP body-fld-loc.
func extensionCommon(w *bufio.Writer, p *message.Part) {
	w.WriteByte(' ')
	if !p.Disposition.Valid {
		w.WriteString("NIL")
	} else {
		w.WriteByte('(')
		String(w, p.Disposition.S)
		w.WriteByte(' ')
		params(w, p.DispositionParams, false)
		w.WriteByte(')')
	}
	w.WriteByte(' ')
	if len(p.Language) == 0 {
		// "()" is not valid syntax: no tags is NIL
		w.WriteString("NIL")
	} else {
		w.WriteByte('(')
		for i, l := range p.Language {
			if i > 0 {
				w.WriteByte(' ')
			}
			String(w, l)
		}
		w.WriteByte(')')
	}
	w.WriteByte(' ')
	nstringNoLF(w, p.Location)
}

func writeInt(w *bufio.Writer, n int64) {
	w.Write(strconv.AppendInt(w.AvailableBuffer(), n, 10))
}
