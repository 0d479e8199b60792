package render

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/letterbox/letterbox/internal/message"
)

// Errors returned by Section and BinarySize.
var (
	// ErrUnknownCTE: a BINARY section must decode a part whose
	// Content-Transfer-Encoding is not known (RFC 3516 section 4.1:
	// respond NO [UNKNOWN-CTE]). It is message.ErrUnknownCTE.
	ErrUnknownCTE = message.ErrUnknownCTE
	// ErrParse: a BINARY section contains broken base64 or
	// quoted-printable data (respond NO [PARSE], as Dovecot does). It is
	// message.ErrInvalidData.
	ErrParse = message.ErrInvalidData
	// ErrBadSection: the SectionSpec is not a valid section (the
	// command parser should not produce one; respond BAD).
	ErrBadSection = errors.New("render: invalid section specification")
	// ErrCorrupt: the stored structure does not describe the stored
	// message (it failed message.Part.Validate against the blob size);
	// respond NO [SERVERBUG] rather than cut wrong byte ranges.
	ErrCorrupt = errors.New("render: stored message structure does not match the message")
)

// Section specifiers (RFC 3501 section 6.4.5, RFC 9051 section 6.4.5).
const (
	SpecHeader          = "HEADER"
	SpecHeaderFields    = "HEADER.FIELDS"
	SpecHeaderFieldsNot = "HEADER.FIELDS.NOT"
	SpecText            = "TEXT"
	SpecMIME            = "MIME"
)

// SectionSpec is a FETCH section: the part of BODY[<section>] or
// BINARY[<section>] between the brackets.
type SectionSpec struct {
	// Part is the part number, e.g. []int{1, 2} for "1.2"; nil or empty
	// is the whole message.
	Part []int
	// Specifier is "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT",
	// "TEXT" or "MIME" (compared case-insensitively).
	Specifier string
	// Fields are the header field names of HEADER.FIELDS[.NOT].
	Fields []string
	// Binary selects BINARY[...] (RFC 3516): the content-transfer-decoded
	// section. Only a part number (no Specifier) is allowed.
	Binary bool
}

// String returns the section in the canonical form used in the FETCH
// response item name, without brackets: part numbers, the specifier and the
// field names upper-cased (Dovecot upper-cases the section too), e.g.
// "1.2.HEADER.FIELDS (FROM TO)". A field name that is not an atom is
// written as a quoted string or literal (header-fld-name is an astring).
func (s SectionSpec) String() string {
	var b strings.Builder
	for i, n := range s.Part {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(n))
	}
	if s.Specifier == "" {
		return b.String()
	}
	if len(s.Part) > 0 {
		b.WriteByte('.')
	}
	spec := asciiUpper(s.Specifier)
	b.WriteString(spec)
	if spec == SpecHeaderFields || spec == SpecHeaderFieldsNot {
		b.WriteString(" (")
		for i, f := range s.Fields {
			if i > 0 {
				b.WriteByte(' ')
			}
			f = asciiUpper(f)
			if isAtom(f) {
				b.WriteString(f)
				continue
			}
			if lit, _ := classify(f); lit {
				b.WriteString("{" + strconv.Itoa(len(f)) + "}\r\n")
				b.WriteString(strings.ReplaceAll(f, "\x00", "\x80"))
				continue
			}
			b.WriteString(strconv.Quote(f)) // only '"' and '\' need escapes
		}
		b.WriteByte(')')
	}
	return b.String()
}

// asciiUpper upper-cases ASCII letters only (header field names are ASCII
// case-insensitive; other bytes are kept as they are, valid UTF-8 or not).
func asciiUpper(s string) string {
	for i := 0; i < len(s); i++ {
		if 'a' <= s[i] && s[i] <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'a' <= b[j] && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// Validate reports ErrBadSection (wrapped) when s is not a section the
// grammar of RFC 3501 section 9 / RFC 3516 allows: a part number below 1,
// an unknown specifier, MIME without a part number, HEADER.FIELDS[.NOT]
// without field names, or BINARY with a specifier. A command parser can call
// it to answer BAD before any message is read; Section and BinarySize check
// the same.
func (s SectionSpec) Validate() error {
	_, err := s.check()
	return err
}

// check validates the spec (see Validate) and returns the upper-cased
// specifier.
func (s SectionSpec) check() (string, error) {
	for _, n := range s.Part {
		if n < 1 {
			return "", fmt.Errorf("%w: part number %d", ErrBadSection, n)
		}
	}
	spec := asciiUpper(s.Specifier)
	switch spec {
	case "", SpecHeader, SpecText:
	case SpecMIME:
		if len(s.Part) == 0 {
			return "", fmt.Errorf("%w: MIME needs a part number", ErrBadSection)
		}
	case SpecHeaderFields, SpecHeaderFieldsNot:
		if len(s.Fields) == 0 {
			return "", fmt.Errorf("%w: %s needs field names", ErrBadSection, spec)
		}
	default:
		return "", fmt.Errorf("%w: unknown specifier %q", ErrBadSection, s.Specifier)
	}
	if s.Binary && spec != "" {
		return "", fmt.Errorf("%w: BINARY takes a part number only", ErrBadSection)
	}
	return spec, nil
}

// empty is the empty section.
var empty = bytes.NewReader(nil)

// Section returns the content of BODY[spec] or, with spec.Binary,
// BINARY[spec], as an io.ReaderAt of size bytes. root is the stored
// structure of the message, blob the stored message (CRLF line endings) and
// size its length. The result reads from blob on demand (sections are not
// copied, except HEADER.FIELDS[.NOT], which is assembled in memory), and is
// safe for concurrent ReadAt calls if blob is. Apply <origin.count> with
// Partial.
//
// Section semantics (RFC 3501 section 6.4.5, with Dovecot's choices where
// the RFC is silent):
//
//   - "" with no part number is the whole message; with part number P it
//     is the body of P (for a message/rfc822 part, the whole encapsulated
//     message; for a multipart, the body with its delimiters).
//   - HEADER, TEXT and HEADER.FIELDS[.NOT] apply to the message, or with a
//     part number, to the encapsulated message of a message/rfc822 part
//     (for other parts the section is empty). HEADER includes the empty line
//     that ends the header. HEADER.FIELDS returns the header lines (with
//     their continuation lines) whose names match, in their original
//     order, followed by CRLF; HEADER.FIELDS.NOT the lines whose names do
//     not match (lines without a colon included), followed by CRLF.
//   - P.MIME is the header of part P. Part numbering follows
//     message.Part.PartAt: part 1 of a non-multipart message is the
//     message itself, so 1.MIME of a single-part message is the message
//     header, and P.1.MIME of a message/rfc822 part whose message is not
//     multipart is the encapsulated message's header.
//   - A part number that does not exist gives an empty section (RFC 3501
//     section 6.4.5 lets the server return an empty string; clients
//     expect it rather than an error), and so does BINARY of one.
//   - NUL bytes are served as 0x80 in BODY sections; BINARY sections keep
//     them (send them as literal8).
//   - BINARY decodes the Content-Transfer-Encoding of every leaf in the
//     section and rewrites the encoded parts' headers to
//     "Content-Transfer-Encoding: binary" (RFC 3516 section 4.2); its size is
//     BinarySize. It fails with ErrUnknownCTE or ErrParse, decided for the
//     section only (see message.Part.BinarySize).
//
// Other errors: ErrBadSection for a spec outside the grammar (MIME without a
// part number, HEADER.FIELDS without fields, BINARY with a specifier, part
// number 0) and ErrCorrupt when root does not describe a message of size
// bytes.
func Section(root *message.Part, blob io.ReaderAt, size int64, spec SectionSpec) (io.ReaderAt, int64, error) {
	specifier, err := spec.check()
	if err != nil {
		return nil, 0, err
	}
	if err := validate(root, size); err != nil {
		return nil, 0, err
	}
	part := root.PartAt(spec.Part)
	if part == nil {
		return empty, 0, nil
	}
	if spec.Binary {
		return binarySection(root, part, blob, len(spec.Part) == 0)
	}
	var from, to int64
	switch specifier {
	case "":
		if len(spec.Part) == 0 {
			from, to = 0, size
		} else {
			from, to = part.BodyOffset(), part.End()
		}
	case SpecMIME:
		from, to = part.Offset, part.BodyOffset()
	default:
		if len(spec.Part) > 0 {
			// HEADER/TEXT of a part number: only message/rfc822
			// parts have them (RFC 3501 section 6.4.5).
			if part = part.Message(); part == nil {
				return empty, 0, nil
			}
		}
		switch specifier {
		case SpecHeader:
			from, to = part.Offset, part.BodyOffset()
		case SpecText:
			from, to = part.BodyOffset(), part.End()
		default:
			b, err := headerFields(part, blob, spec.Fields, specifier == SpecHeaderFieldsNot)
			if err != nil {
				return nil, 0, err
			}
			if root.Flags&message.FlagHasNUL != 0 {
				replaceNUL(b)
			}
			return bytes.NewReader(b), int64(len(b)), nil
		}
	}
	var r io.ReaderAt = io.NewSectionReader(blob, from, to-from)
	if root.Flags&message.FlagHasNUL != 0 {
		r = nulReaderAt{r}
	}
	return r, to - from, nil
}

// Partial applies a FETCH partial <origin.count> (RFC 3501 section 6.4.5) to
// a section of size bytes: the bytes from origin, at most count of them. An
// origin at or beyond the end gives an empty section (the response item is
// still named BODY[...]<origin>). Negative arguments count as 0.
func Partial(r io.ReaderAt, size, origin, count int64) (io.ReaderAt, int64) {
	origin, count = max(origin, 0), max(count, 0)
	if origin >= size || count == 0 {
		return empty, 0
	}
	n := min(count, size-origin)
	return io.NewSectionReader(r, origin, n), n
}

// BinarySize returns BINARY.SIZE[part] (RFC 3516 section 4.2): the size of
// BINARY[part] as Section returns it. A part that does not exist has size 0.
// The size was computed at delivery; blob is not read (it is accepted so
// that a structure without decoded sizes could be served by decoding).
// Errors: ErrUnknownCTE, ErrParse, ErrBadSection and ErrCorrupt as for
// Section.
func BinarySize(root *message.Part, blob io.ReaderAt, size int64, part []int) (int64, error) {
	if _, err := (SectionSpec{Part: part, Binary: true}).check(); err != nil {
		return 0, err
	}
	if err := validate(root, size); err != nil {
		return 0, err
	}
	p := root.PartAt(part)
	if p == nil {
		return 0, nil
	}
	n, err := p.BinarySize()
	if err != nil || len(part) > 0 {
		return n, err
	}
	h, err := binaryHeaderSize(p)
	return h + n, err
}

func validate(root *message.Part, size int64) error {
	if root == nil {
		return fmt.Errorf("%w: no structure", ErrCorrupt)
	}
	if err := root.Validate(size); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

// headerFields assembles HEADER.FIELDS (not=false) or HEADER.FIELDS.NOT of
// the header of p.
func headerFields(p *message.Part, blob io.ReaderAt, names []string, not bool) ([]byte, error) {
	fields := p.Header
	if p.Flags&message.FlagHeaderTruncated != 0 {
		// The index may be incomplete (message.MaxHeaderFields):
		// index this header again. Only pathological headers get here.
		b := make([]byte, p.HeaderSize)
		if err := readAt(blob, b, p.Offset); err != nil {
			return nil, err
		}
		fields = message.ParseHeader(b, p.Offset)
	}
	var out []byte
	// Read runs of adjacent selected fields with one ReadAt each.
	var runFrom, runTo int64 = -1, -1
	flush := func() error {
		if runFrom < 0 {
			return nil
		}
		n := len(out)
		out = append(out, make([]byte, runTo-runFrom)...)
		err := readAt(blob, out[n:], runFrom)
		runFrom, runTo = -1, -1
		return err
	}
	for _, f := range fields {
		match := false
		if f.Name != "" {
			for _, n := range names {
				if strings.EqualFold(f.Name, n) {
					match = true
					break
				}
			}
		}
		if match == not {
			continue
		}
		if f.Offset != runTo {
			if err := flush(); err != nil {
				return nil, err
			}
			runFrom = f.Offset
		}
		runTo = f.Offset + f.Size
	}
	if err := flush(); err != nil {
		return nil, err
	}
	// A header that ran into a boundary or the end of the message may
	// end without a line break; every returned line ends with one.
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\r', '\n')
	}
	return append(out, '\r', '\n'), nil
}

// readAt fills b from r at off; io.EOF with b filled is success (io.ReaderAt
// allows either).
func readAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// replaceNUL replaces NUL bytes by 0x80 in place.
func replaceNUL(b []byte) {
	for {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			return
		}
		b[i] = nulReplacement
		b = b[i+1:]
	}
}

// nulReaderAt serves NUL bytes as 0x80.
type nulReaderAt struct{ r io.ReaderAt }

func (n nulReaderAt) ReadAt(p []byte, off int64) (int, error) {
	k, err := n.r.ReadAt(p, off)
	replaceNUL(p[:k])
	return k, err
}
