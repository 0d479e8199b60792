package message

import (
	"bytes"
	"sort"
	"strconv"
	"strings"
)

// fieldValue returns the value of a header field's first line the way
// Dovecot's header parser does with SKIP_INITIAL_LWSP: white space after
// the colon is skipped, except that a value of white space only loses just
// its first character.
func fieldValue(afterColon []byte) []byte {
	i := 0
	for i < len(afterColon) && (afterColon[i] == ' ' || afterColon[i] == '\t') {
		i++
	}
	if i == len(afterColon) && i > 0 {
		i = 1
	}
	return afterColon[i:]
}

// unstructured returns a header value as stored in Envelope and Part
// strings: NUL replaced with U+FFFD.
func unstructured(v []byte) string {
	if bytes.IndexByte(v, 0) < 0 {
		return string(v)
	}
	return string(bytes.ReplaceAll(v, []byte{0}, []byte(replacementChar)))
}

// parseContentType parses a Content-Type value. ok is false when the value
// has no valid "type/subtype"; typ may then still hold a lone type token.
func parseContentType(v []byte) (typ, sub string, params []Param, ok bool) {
	s := newScanner(v)
	s.skipLWSP()
	var ct []byte
	ret := s.parseContentType(&ct)
	if i := bytes.IndexByte(ct, '/'); i >= 0 {
		typ, sub = string(ct[:i]), string(ct[i+1:])
	} else {
		typ = string(ct)
	}
	if ret < 0 {
		return typ, sub, nil, false
	}
	return typ, sub, parseParams(s), true
}

// rfc2231Segment is one "name*<n>[*]=value" parameter before merging.
type rfc2231Segment struct {
	key      string
	value    string
	idx      int
	extended bool
}

// parseParams parses `*(";" attribute "=" value)` the way Dovecot's
// rfc2231_parse does: broken parameters are skipped up to the next ';';
// RFC 2231 continuations are merged and appended after the plain
// parameters (sorted by name); a merged value that has any extended
// ("*") segment is returned under "name*" in the extended syntax
// (charset'language'%XX, with '%' of plain segments escaped), otherwise
// under "name". If the segment numbers are not 0, 1, 2..., the segments are
// returned unmerged as "name*<n>" or "name*<n>*".
func parseParams(s *rfc822Scanner) []Param {
	s.nulRepl = true
	var params []Param
	var segs []rfc2231Segment
	var key, value []byte
	for {
		ret := s.parseContentParam(&key, &value)
		if ret == 0 {
			break
		}
		if ret < 0 {
			// skip one byte and resynchronise at the next ';'
			if s.atEnd() {
				break
			}
			s.pos++
			continue
		}
		if seg, ok := rfc2231Key(key); ok {
			seg.value = string(value)
			segs = append(segs, seg)
			continue
		}
		params = append(params, Param{Name: string(key), Value: string(value)})
	}
	s.nulRepl = false
	if len(segs) == 0 {
		return params
	}
	sort.SliceStable(segs, func(i, j int) bool {
		if segs[i].key != segs[j].key {
			return segs[i].key < segs[j].key
		}
		return segs[i].idx < segs[j].idx
	})
	for i := 0; i < len(segs); {
		j, ok, ext := i, true, false
		for next := 0; j < len(segs) && strings.EqualFold(segs[i].key, segs[j].key); j, next = j+1, next+1 {
			if segs[j].idx != next {
				ok = false
			}
			ext = ext || segs[j].extended
		}
		if !ok {
			for _, sg := range segs[i:j] {
				k := sg.key + "*" + strconv.Itoa(sg.idx)
				if sg.extended {
					k += "*"
				}
				params = append(params, Param{Name: k, Value: sg.value})
			}
		} else {
			var b strings.Builder
			if ext && !segs[i].extended {
				b.WriteString("''")
			}
			for _, sg := range segs[i:j] {
				if ext && !sg.extended {
					b.WriteString(strings.ReplaceAll(sg.value, "%", "%25"))
				} else {
					b.WriteString(sg.value)
				}
			}
			k := segs[i].key
			if ext {
				k += "*"
			}
			params = append(params, Param{Name: k, Value: b.String()})
		}
		i = j
	}
	return params
}

// rfc2231Key recognises "name*", "name*<n>" and "name*<n>*".
func rfc2231Key(key []byte) (rfc2231Segment, bool) {
	star := bytes.IndexByte(key, '*')
	if star < 0 {
		return rfc2231Segment{}, false
	}
	seg := rfc2231Segment{key: string(key[:star])}
	rest := key[star+1:]
	if len(rest) == 0 {
		// "name*": a single extended value
		seg.extended = true
		return seg, true
	}
	i := 0
	for ; i < len(rest) && rest[i] >= '0' && rest[i] <= '9'; i++ {
		if seg.idx < 1<<24 {
			seg.idx = seg.idx*10 + int(rest[i]-'0')
		}
	}
	if i < len(rest) && rest[i] == '*' {
		seg.extended = true
		i++
	}
	return seg, i == len(rest)
}

// parseToken parses a value that must be a single MIME token (optionally
// surrounded by comments), as Dovecot does for Content-Transfer-Encoding.
func parseToken(v []byte) (string, bool) {
	s := newScanner(v)
	s.skipLWSP()
	var tok []byte
	if s.parseMimeToken(&tok) >= 0 && s.skipLWSP() == 0 && len(tok) > 0 {
		return string(tok), true
	}
	return "", false
}

// parseDisposition parses a Content-Disposition value: a token (possibly
// empty) followed by parameters. ok is false when the value is unusable.
func parseDisposition(v []byte) (disp string, params []Param, ok bool) {
	s := newScanner(v)
	s.skipLWSP()
	var tok []byte
	if s.parseMimeToken(&tok) < 0 {
		return "", nil, false
	}
	return string(tok), parseParams(s), true
}

// parseLanguage parses a Content-Language value: a comma separated list of
// language tags (RFC 3282), stopping at the first item that is not an atom.
func parseLanguage(v []byte) []string {
	s := newScanner(v)
	s.skipLWSP()
	var langs []string
	var tok []byte
	for {
		tok = tok[:0]
		if s.parseAtom(&tok) < 0 {
			break
		}
		langs = append(langs, string(tok))
		if s.atEnd() || s.data[s.pos] != ',' {
			break
		}
		s.pos++
		s.skipLWSP()
	}
	return langs
}

// fieldKind identifies the header fields whose values Parse keeps.
type fieldKind uint8

const (
	fieldOther fieldKind = iota
	fieldMIMEVersion
	fieldContentType
	fieldContentTransferEncoding
	fieldContentID
	fieldContentDescription
	fieldContentDisposition
	fieldContentLanguage
	fieldContentLocation
	fieldContentMD5
	// envelope fields
	fieldDate
	fieldSubject
	fieldFrom
	fieldSender
	fieldReplyTo
	fieldTo
	fieldCc
	fieldBcc
	fieldInReplyTo
	fieldMessageID
)

var fieldKinds = map[string]fieldKind{
	"mime-version":              fieldMIMEVersion,
	"content-type":              fieldContentType,
	"content-transfer-encoding": fieldContentTransferEncoding,
	"content-id":                fieldContentID,
	"content-description":       fieldContentDescription,
	"content-disposition":       fieldContentDisposition,
	"content-language":          fieldContentLanguage,
	"content-location":          fieldContentLocation,
	"content-md5":               fieldContentMD5,
	"date":                      fieldDate,
	"subject":                   fieldSubject,
	"from":                      fieldFrom,
	"sender":                    fieldSender,
	"reply-to":                  fieldReplyTo,
	"to":                        fieldTo,
	"cc":                        fieldCc,
	"bcc":                       fieldBcc,
	"in-reply-to":               fieldInReplyTo,
	"message-id":                fieldMessageID,
}

// lookupFieldKind classifies a field name (ASCII case-insensitive) without
// allocating for names that are not of interest.
func lookupFieldKind(name []byte) fieldKind {
	if len(name) < 2 || len(name) > len("content-transfer-encoding") {
		return fieldOther
	}
	var buf [32]byte
	low := buf[:len(name)]
	for i, c := range name {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		low[i] = c
	}
	return fieldKinds[string(low)]
}

func (k fieldKind) envelope() bool { return k >= fieldDate }

// applyContentField records a Content-* field other than Content-Type
// (which the parser handles) in p; the first occurrence wins, as in
// Dovecot's message-part-data.c.
func applyContentField(p *Part, k fieldKind, v []byte) {
	switch k {
	case fieldContentTransferEncoding:
		if !p.Encoding.Valid {
			if tok, ok := parseToken(v); ok {
				p.Encoding = NS(tok)
			}
		}
	case fieldContentID:
		if !p.ID.Valid {
			p.ID = NS(unstructured(v))
		}
	case fieldContentDescription:
		if !p.Description.Valid {
			p.Description = NS(unstructured(v))
		}
	case fieldContentMD5:
		if !p.MD5.Valid {
			p.MD5 = NS(unstructured(v))
		}
	case fieldContentLocation:
		if !p.Location.Valid {
			p.Location = NS(unstructured(v))
		}
	case fieldContentLanguage:
		if p.Language == nil {
			p.Language = parseLanguage(v)
		}
	case fieldContentDisposition:
		// Dovecot re-parses while no parameters were found.
		if p.DispositionParams == nil {
			if d, params, ok := parseDisposition(v); ok {
				p.Disposition, p.DispositionParams = NS(d), params
			}
		}
	}
}

// applyEnvelopeField records an envelope field: the last Date, Subject,
// In-Reply-To and Message-ID win; address fields accumulate.
func applyEnvelopeField(e *Envelope, k fieldKind, v []byte) {
	switch k {
	case fieldDate:
		e.Date = NS(unstructured(v))
	case fieldSubject:
		e.Subject = NS(unstructured(v))
	case fieldInReplyTo:
		e.InReplyTo = NS(unstructured(v))
	case fieldMessageID:
		e.MessageID = NS(unstructured(v))
	case fieldFrom:
		e.From = append(e.From, parseAddressList(v)...)
	case fieldSender:
		e.Sender = append(e.Sender, parseAddressList(v)...)
	case fieldReplyTo:
		e.ReplyTo = append(e.ReplyTo, parseAddressList(v)...)
	case fieldTo:
		e.To = append(e.To, parseAddressList(v)...)
	case fieldCc:
		e.Cc = append(e.Cc, parseAddressList(v)...)
	case fieldBcc:
		e.Bcc = append(e.Bcc, parseAddressList(v)...)
	}
}

// ParseHeader indexes a header block (for example the bytes
// [p.Offset, p.BodyOffset()) of a part whose index is incomplete). base is
// added to the offsets. Field boundaries follow Parse: a field is a line and
// the lines after it that start with SP or TAB; an empty line ends the
// header.
func ParseHeader(b []byte, base int64) []HeaderField {
	var fields []HeaderField
	for off := 0; off < len(b); {
		end := bytes.IndexByte(b[off:], '\n')
		if end < 0 {
			end = len(b)
		} else {
			end += off + 1
		}
		line := b[off:end]
		if len(line) > 0 && (line[0] == '\n' || (len(line) > 1 && line[0] == '\r' && line[1] == '\n')) {
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1].Size += int64(len(line))
		} else {
			fields = append(fields, HeaderField{Name: string(fieldName(line)), Offset: base + int64(off), Size: int64(len(line))})
		}
		off = end
	}
	return fields
}

// fieldName returns the name of a header line: the bytes before the first
// colon without trailing white space, or nil if there is no colon or the
// name is longer than 1000 bytes (RFC 5322 section 2.1.1 line limit).
func fieldName(line []byte) []byte {
	colon := bytes.IndexByte(line, ':')
	if nl := bytes.IndexByte(line, '\n'); colon < 0 || (nl >= 0 && nl < colon) {
		return nil
	}
	name := line[:colon]
	for len(name) > 0 && (name[len(name)-1] == ' ' || name[len(name)-1] == '\t') {
		name = name[:len(name)-1]
	}
	if len(name) > maxFieldNameLen {
		return nil
	}
	return name
}

const maxFieldNameLen = 1000
