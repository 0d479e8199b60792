package message

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
)

// readBufferSize is the line buffer; longer lines are processed in chunks.
const readBufferSize = 64 << 10

// readerPool recycles line buffers; nothing Parse returns points into them.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

// Parse reads a whole message and returns its structure. Malformed MIME
// never makes Parse fail; only an error from r does (the structure built so
// far is discarded).
//
// The rules (Dovecot's, see the package documentation):
//
//   - A header field is a line plus the following lines that start with SP
//     or TAB; the header ends at an empty line, at the end of the input, or
//     at a line that is a delimiter of an enclosing multipart (the line
//     break before that line then belongs to the enclosing body).
//   - A message is MIME when it has MIME-Version or Content-Type; otherwise
//     its Content-* fields are ignored. Body parts of a multipart are
//     always MIME.
//   - A delimiter is a line that starts with "--" followed by the boundary
//     of any open multipart: the innermost longest match wins, trailing
//     text is allowed (RFC 2046 requires only white space there). The line
//     break before a delimiter belongs to the delimiter. A delimiter
//     followed by "--" closes its multipart and any multipart opened inside
//     it.
//   - Body parts without Content-Type are text/plain, or message/rfc822
//     inside multipart/digest (RFC 2046 section 5.1.5).
func Parse(r io.Reader) (*Part, error) {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	p := &parser{br: br, names: map[string]string{}, global: MaxMessageHeaderBytes}
	root := p.newPart(nil)
	root.env = &Envelope{}
	root.part.Envelope = root.env
	if err := p.run(); err != nil {
		return nil, err
	}
	return root.part, nil
}

var errTooLong = errors.New("line chunk")

// boundary is an open multipart's delimiter.
type boundary struct {
	b    []byte
	part *pstate
}

// pstate is the parse state of an open part.
type pstate struct {
	part   *Part
	parent *pstate
	env    *Envelope // envelope being collected, for message headers

	// parser flags (Dovecot's MESSAGE_PART_FLAG_*), from the first
	// Content-Type
	seenCT                            bool
	multipart, digest, rfc822, isMIME bool
	boundary                          []byte // from Content-Type, until the header ends
	budget                            int    // header value bytes that may still be kept
	hdrLastNL                         int    // line break length of the last header line

	hdrSize, hdrLines   int64
	bodySize, bodyLines int64
	hasNUL              bool

	dec     bodyDecoder // nil: no decoding (identity, unknown, multipart)
	decSize int64
	scratch []byte
}

// field is a header field being read.
type field struct {
	active bool
	start  int64
	name   string
	kind   fieldKind
	keep   bool   // value is retained
	value  []byte // retained value (capped)
	first  bool   // still on the first line (value not yet trimmed)
	cut    bool   // value was truncated
}

type parser struct {
	br  *bufio.Reader
	off int64 // offset of the next unread byte

	cur    *pstate
	bounds []*boundary
	total  int // parts created (Dovecot's total_parts_count)
	depth  int // open parts below the root (nested_parts_count)
	fields int // header index entries
	global int // header value bytes that may still be kept in the message

	inHeader bool
	fld      field
	names    map[string]string // interned field names

	// body state
	pendNL int // line break of the previous body line, not yet attributed

	err error
}

func (p *parser) newPart(parent *pstate) *pstate {
	ps := &pstate{part: &Part{}, parent: parent, budget: MaxHeaderBytes}
	if parent != nil {
		ps.part.Offset = parent.part.Offset + parent.hdrSize + parent.bodySize
		parent.part.Children = append(parent.part.Children, ps.part)
		p.depth++
	}
	p.total++
	p.cur = ps
	p.inHeader = true
	p.fld = field{}
	return ps
}

// readChunk returns the next chunk of input: a whole line including its
// line break, the rest of the input at EOF, or (errTooLong) a piece of a
// line longer than the buffer that never ends in CR.
func (p *parser) readChunk() ([]byte, error) {
	b, err := p.br.ReadSlice('\n')
	switch err {
	case nil:
	case bufio.ErrBufferFull:
		if n := len(b); n > 1 && b[n-1] == '\r' {
			_ = p.br.UnreadByte()
			b = b[:n-1]
		}
		err = errTooLong
	case io.EOF:
		if len(b) > 0 {
			err = nil
		}
	}
	if err != nil && err != errTooLong && err != io.EOF {
		p.err = err
	}
	p.off += int64(len(b))
	return b, err
}

// splitNL splits a complete line into content and line break length.
func splitNL(b []byte) ([]byte, int) {
	n := len(b)
	if n == 0 || b[n-1] != '\n' {
		return b, 0
	}
	if n > 1 && b[n-2] == '\r' {
		return b[:n-2], 2
	}
	return b[:n-1], 1
}

func (p *parser) run() error {
	for {
		start := p.off
		chunk, err := p.readChunk()
		if p.err != nil {
			return p.err
		}
		if err == io.EOF {
			break
		}
		complete := err != errTooLong
		for !p.line(start, chunk, complete) {
		}
		if p.err != nil {
			return p.err
		}
	}
	p.eof()
	for p.cur.parent != nil {
		p.finish()
	}
	p.finish()
	return nil
}

// line dispatches a line (its first chunk) to the current state. It returns
// false when the state changed without consuming the line, which is then
// dispatched again.
func (p *parser) line(start int64, chunk []byte, complete bool) bool {
	if p.inHeader {
		return p.headerLine(start, chunk, complete)
	}
	return p.bodyLine(start, chunk, complete)
}

// rest consumes the remaining chunks of a line whose first chunk was
// incomplete, calling fn with content bytes; it returns the line break
// length.
func (p *parser) rest(fn func([]byte)) int {
	for {
		chunk, err := p.readChunk()
		switch err {
		case errTooLong:
			fn(chunk)
			continue
		case nil:
			content, nl := splitNL(chunk)
			fn(content)
			return nl
		}
		return 0 // EOF or read error
	}
}

// findBoundary returns the open boundary that the line (first chunk)
// delimits, or nil.
func (p *parser) findBoundary(chunk []byte, complete bool) *boundary {
	if len(p.bounds) == 0 || len(chunk) < 2 || chunk[0] != '-' || chunk[1] != '-' || p.total >= MaxParts {
		return nil
	}
	data := chunk[2:]
	trailing := false
	if complete {
		var nl int
		data, nl = splitNL(data)
		trailing = nl > 0 && len(data) > 2 && data[len(data)-1] == '-' && data[len(data)-2] == '-'
	}
	var best *boundary
	for i := len(p.bounds) - 1; i >= 0; i-- {
		b := p.bounds[i]
		if len(b.b) <= len(data) && bytes.HasPrefix(data, b.b) && (best == nil || len(best.b) < len(b.b)) {
			best = b
			if len(b.b) == len(data) || (trailing && len(b.b) == len(data)-2) {
				break
			}
		}
	}
	return best
}

// headerLine handles a line in header state.
func (p *parser) headerLine(start int64, chunk []byte, complete bool) bool {
	ps := p.cur
	if p.fld.active && (chunk[0] == ' ' || chunk[0] == '\t') {
		// continuation line
		if p.fld.keep {
			p.fld.trimFirst()
			p.appendValue(lineBreak(ps.hdrLastNL))
		}
		p.consumeHeaderLine(chunk, complete, true)
		return true
	}
	p.endField(start)

	isEOH := (len(chunk) >= 1 && chunk[0] == '\n') || (len(chunk) >= 2 && chunk[0] == '\r' && chunk[1] == '\n')
	if isEOH && ps.boundary != nil && ps.isMIME {
		if p.depth+1 < MaxDepth {
			p.bounds = append(p.bounds, &boundary{b: ps.boundary, part: ps})
		} else {
			ps.multipart = false
			p.truncate(ps)
		}
		ps.boundary = nil
	}
	if b := p.findBoundary(chunk, complete); b != nil && b.part != ps {
		// The header runs into an enclosing delimiter. The line break
		// before the delimiter belongs to the delimiter (RFC 2046 section
		// 5.1.1): it leaves the header and is attributed by delimiter().
		// (Dovecot gives it to the parent's body instead, which differs
		// when the parent is a message/rfc822 part: that part would end
		// one line break after its message.)
		if nl := int64(ps.hdrLastNL); nl > 0 {
			ps.hdrSize -= nl
			ps.hdrLines--
			ps.hdrLastNL = 0
			if n := len(ps.part.Header); n > 0 {
				f := &ps.part.Header[n-1]
				if end := ps.part.Offset + ps.hdrSize; f.Offset+f.Size > end {
					f.Size = end - f.Offset
				}
			}
		}
		ps.part.Flags |= FlagNoHeaderEnd
		p.endHeader()
		return false
	}
	if isEOH {
		ps.hdrSize += int64(len(chunk))
		ps.hdrLines++
		p.endHeader()
		return true
	}
	p.startField(start, chunk)
	p.consumeHeaderLine(chunk, complete, false)
	return true
}

// consumeHeaderLine accounts for a header line (first chunk given) and
// retains its value bytes if the current field is kept.
func (p *parser) consumeHeaderLine(chunk []byte, complete, continuation bool) {
	ps := p.cur
	var content []byte
	nl := 0
	if complete {
		content, nl = splitNL(chunk)
	} else {
		content = chunk
	}
	if p.fld.keep {
		if continuation {
			p.appendValue(content)
		} else {
			// value starts after the colon
			p.appendValue(content[bytes.IndexByte(content, ':')+1:])
		}
	}
	if bytes.IndexByte(chunk, 0) >= 0 {
		ps.hasNUL = true
	}
	if !complete {
		nl = p.rest(func(b []byte) {
			if p.fld.keep {
				p.appendValue(b)
			}
			if bytes.IndexByte(b, 0) >= 0 {
				ps.hasNUL = true
			}
		})
	}
	ps.hdrLastNL = nl
	if nl > 0 {
		ps.hdrLines++
	}
	ps.hdrSize = p.off - ps.part.Offset
}

var crlfBytes, lfBytes = []byte("\r\n"), []byte("\n")

// lineBreak returns a line break of length n (read-only).
func lineBreak(n int) []byte {
	switch n {
	case 2:
		return crlfBytes
	case 1:
		return lfBytes
	}
	return nil
}

// startField begins a header field at a line that is not a continuation.
func (p *parser) startField(start int64, chunk []byte) {
	ps := p.cur
	name := fieldName(chunk)
	p.fld = field{active: true, start: start, first: true}
	if name == nil {
		return
	}
	p.fld.name = p.intern(name)
	k := lookupFieldKind(name)
	if k == fieldOther || (k.envelope() && ps.env == nil) {
		return
	}
	switch k {
	case fieldMIMEVersion:
		// its presence makes the message MIME; the value is not used
		ps.isMIME = true
		return
	case fieldContentType:
		// so does Content-Type (Dovecot is not MIME-Version strict)
		ps.isMIME = true
	}
	p.fld.kind = k
	p.fld.keep = true
}

func (p *parser) intern(name []byte) string {
	if s, ok := p.names[string(name)]; ok {
		return s
	}
	s := string(name)
	if len(p.names) < 1000 {
		p.names[s] = s
	}
	return s
}

// appendValue retains value bytes of the current field within the part's
// budget and, except for the fields that define the MIME structure, the
// message's budget.
func (p *parser) appendValue(b []byte) {
	ps, f := p.cur, &p.fld
	limit := ps.budget
	structural := f.kind == fieldContentType || f.kind == fieldContentTransferEncoding
	if !structural && p.global < limit {
		limit = p.global
	}
	if len(b) > limit {
		b = b[:limit]
		f.cut = true
	}
	ps.budget -= len(b)
	if !structural {
		p.global -= len(b)
	}
	f.value = append(f.value, b...)
}

// trimFirst applies the initial white space rule once the first line of the
// value is complete.
func (f *field) trimFirst() {
	if f.first {
		f.first = false
		f.value = fieldValue(f.value)
	}
}

// endField completes the pending header field, which ends at offset end.
func (p *parser) endField(end int64) {
	if !p.fld.active {
		return
	}
	ps := p.cur
	f := &p.fld
	f.active = false
	if p.fields < MaxHeaderFields {
		ps.part.Header = append(ps.part.Header, HeaderField{Name: f.name, Offset: f.start, Size: end - f.start})
		p.fields++
	} else {
		ps.part.Flags |= FlagHeaderTruncated
	}
	if !f.keep {
		return
	}
	f.trimFirst()
	if f.cut {
		ps.part.Flags |= FlagHeaderTruncated
	}
	switch {
	case f.kind == fieldContentType:
		if !ps.seenCT {
			ps.seenCT = true
			p.contentType(ps, f.value)
		}
	case f.kind.envelope():
		applyEnvelopeField(ps.env, f.kind, f.value)
	default:
		applyContentField(ps.part, f.kind, f.value)
	}
	f.value = nil
}

// contentType records the first Content-Type of a part: the MIME type data
// and the parser flags (multipart, digest, message/rfc822, boundary).
func (p *parser) contentType(ps *pstate, v []byte) {
	part := ps.part
	var ok bool
	part.Type, part.Subtype, part.Params, ok = parseContentType(v)
	ct := part.Type
	if ok {
		ct += "/" + part.Subtype
	}
	switch {
	case strings.EqualFold(ct, "message/rfc822"):
		ps.rfc822 = true
	case len(ct) >= 10 && strings.EqualFold(ct[:10], "multipart/"):
		ps.multipart = true
		ps.digest = strings.EqualFold(ct[10:], "digest")
		if !ok {
			break
		}
		for _, prm := range part.Params {
			if strings.EqualFold(prm.Name, "boundary") {
				b := prm.Value
				if len(b) > MaxBoundaryLen {
					b = b[:MaxBoundaryLen]
				}
				ps.boundary = []byte(b)
				break
			}
		}
	}
}

// truncate marks a part that cannot be descended into.
func (p *parser) truncate(ps *pstate) {
	ps.part.Flags |= FlagTruncated
	ps.part.Type, ps.part.Subtype = "application", "octet-stream"
}

// endHeader finishes the current part's header and selects the next state.
func (p *parser) endHeader() {
	ps := p.cur
	part := ps.part
	part.HeaderSize = ps.hdrSize
	if ps.isMIME {
		part.Flags |= FlagMIME
	} else {
		// not MIME: forget Content-*
		ps.multipart, ps.digest, ps.rfc822 = false, false, false
		*part = Part{Offset: part.Offset, HeaderSize: part.HeaderSize, Flags: part.Flags,
			Envelope: part.Envelope, Header: part.Header, Children: part.Children}
	}
	ps.boundary = nil
	if !ps.seenCT || !ps.isMIME {
		if ps.parent != nil && ps.parent.digest {
			ps.rfc822 = true
			part.Type, part.Subtype = "message", "rfc822"
		} else {
			part.Type, part.Subtype = "text", "plain"
		}
	}
	p.inHeader = false
	p.pendNL = 0

	switch {
	case len(p.bounds) > 0 && p.bounds[len(p.bounds)-1].part == ps:
		part.Kind = KindMultipart
	case ps.multipart:
		part.Kind = KindMultipart // no usable boundary: no children
	case ps.rfc822:
		if p.depth+1 >= MaxDepth || p.total >= MaxParts {
			ps.rfc822 = false
			p.truncate(ps)
			break
		}
		part.Kind = KindMessage
		child := p.newPart(ps)
		child.env = &Envelope{}
		child.part.Envelope = child.env
		return
	}
	if part.Kind == KindLeaf {
		switch enc := transferEncodingOf(part.Encoding); enc {
		case encUnknown:
			part.Flags |= flagBinaryUnknown
		case encQuotedPrintable, encBase64:
			ps.dec = newBodyDecoder(enc)
		}
	}
}

// eof handles the end of the input in the current state.
func (p *parser) eof() {
	for p.inHeader {
		p.endField(p.off)
		p.cur.part.Flags |= FlagNoHeaderEnd
		p.endHeader()
	}
	p.attributeNL()
}

// attributeNL adds the pending line break to the current body.
func (p *parser) attributeNL() {
	if p.pendNL > 0 {
		p.addBody(lineBreak(p.pendNL))
		p.pendNL = 0
	}
}

// addBody attributes body bytes to the current part.
func (p *parser) addBody(b []byte) {
	ps := p.cur
	ps.bodySize += int64(len(b))
	ps.bodyLines += int64(bytes.Count(b, lfBytes))
	if bytes.IndexByte(b, 0) >= 0 {
		ps.hasNUL = true
	}
	if ps.dec != nil {
		ps.scratch = ps.dec.decode(ps.scratch[:0], b)
		ps.decSize += int64(len(ps.scratch))
	}
}

// bodyLine handles a line in body state.
func (p *parser) bodyLine(start int64, chunk []byte, complete bool) bool {
	if b := p.findBoundary(chunk, complete); b != nil {
		p.delimiter(b, start, chunk, complete)
		return true
	}
	p.attributeNL()
	if complete {
		content, nl := splitNL(chunk)
		p.addBody(content)
		p.pendNL = nl
		return true
	}
	p.addBody(chunk)
	p.pendNL = p.rest(p.addBody)
	return true
}

// delimiter handles a delimiter line of b starting at offset start.
func (p *parser) delimiter(b *boundary, start int64, chunk []byte, complete bool) {
	// The bytes before the line that no part has taken yet are the line
	// break that precedes the delimiter (none on the first line of a
	// body): they belong to the delimiter, i.e. to the multipart's body.
	cur := p.cur
	nl := int(start - (cur.part.Offset + cur.hdrSize + cur.bodySize))
	p.pendNL = 0
	for p.cur != b.part {
		p.finish()
	}
	// a delimiter followed by "--" closes its multipart and the ones
	// opened inside it
	content := chunk
	if complete {
		content, _ = splitNL(chunk)
	}
	rest := content[2+len(b.b):]
	closing := len(rest) >= 2 && rest[0] == '-' && rest[1] == '-'
	for i := len(p.bounds) - 1; i >= 0; i-- {
		if p.bounds[i] == b {
			if closing {
				i--
			}
			p.bounds = p.bounds[:i+1]
			break
		}
	}
	// the line break before the delimiter and the delimiter line belong
	// to the multipart's body
	p.addBody(lineBreak(nl))
	p.addBody(chunk)
	lineNL := 0
	if complete {
		_, lineNL = splitNL(chunk)
	} else {
		lineNL = p.rest(p.addBody)
		p.addBody(lineBreak(lineNL))
	}
	if lineNL == 0 {
		return // end of input
	}
	if len(p.bounds) > 0 && p.bounds[len(p.bounds)-1].part == p.cur {
		// a new body part begins
		p.newPart(p.cur).isMIME = true
		return
	}
	// epilogue
}

// finish closes the current part and returns to its parent.
func (p *parser) finish() {
	ps := p.cur
	part := ps.part
	if p.inHeader {
		// defensive: the header and EOF states end headers first
		p.endField(p.off)
		ps.part.HeaderSize = ps.hdrSize
		p.inHeader = false
	}
	part.HeaderSize = ps.hdrSize
	part.BodySize = ps.bodySize
	part.BodyLines = ps.bodyLines
	if ps.hasNUL {
		part.Flags |= FlagHasNUL
	}
	if part.Kind == KindLeaf {
		if ps.dec != nil {
			var ok bool
			ps.scratch, ok = ps.dec.finish(ps.scratch[:0])
			part.DecodedSize = ps.decSize + int64(len(ps.scratch))
			if !ok {
				part.Flags |= flagBinaryInvalid
			}
			ps.dec, ps.scratch = nil, nil
		} else if part.Flags&flagBinaryUnknown == 0 {
			part.DecodedSize = part.BodySize
		}
	}
	parent := ps.parent
	if parent == nil {
		return
	}
	parent.bodySize += ps.hdrSize + ps.bodySize
	parent.bodyLines += ps.hdrLines + ps.bodyLines
	parent.hasNUL = parent.hasNUL || ps.hasNUL
	p.depth--
	p.cur = parent
	p.inHeader = false
}
