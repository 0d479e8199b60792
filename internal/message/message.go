// Package message parses an RFC 5322 / MIME message once, at delivery, into
// the structure IMAP needs later: a MIME part tree with the byte offsets and
// sizes of every header and body, line counts, a header index, the decoded
// (BINARY) size of every leaf, and the ENVELOPE and BODYSTRUCTURE data of the
// message and of every encapsulated message/rfc822. The result is stored
// (Marshal/Unmarshal) and FETCH serves ENVELOPE, BODYSTRUCTURE, BODY[section],
// BINARY.SIZE and HEADER.FIELDS from it plus byte ranges of the stored blob,
// never re-parsing the message. There is no protocol formatting here: quoting,
// literals, NIL and defaults such as "7bit" belong to the imap package.
//
// # Why it is hand-written
//
// github.com/emersion/go-message (message.Read, Entity, MultipartReader and
// textproto.ReadHeader) is a reader of decoded content, not an indexer:
//
//   - It exposes no byte offsets or sizes: an Entity is a textproto.Header plus
//     a Body io.Reader, and the nested parts returned by NextPart carry neither
//     the position of their header nor of their body, so BODY[1.2.MIME],
//     BODY[1.2] and BODYSTRUCTURE sizes and line counts cannot be derived
//     from it without re-reading and re-counting the raw bytes ourselves.
//   - Entity.Body is already Content-Transfer-Encoding decoded (and charset
//     converted when a charset reader is installed), while IMAP BODY[] must
//     serve the raw bytes and BODYSTRUCTURE must count raw bytes and lines.
//   - It is strict where an IMAP server must be tolerant: ReadHeader fails on
//     a first header line that starts with white space ("malformed MIME
//     header initial line"), on any line without a colon ("malformed MIME
//     header line") and on invalid field-name bytes, and then returns no
//     Entity at all; its multipart reader (a fork of mime/multipart) only
//     recognises a delimiter that is exactly "--boundary" plus optional
//     LWSP, only knows the boundary of its own level (an outer delimiter
//     inside an unterminated inner part is not seen) and fails with
//     "unexpected line in Next()" on stray text between parts.
//
// IMAP clients expect the structure that established servers report for the
// same bytes. This package therefore reproduces the parsing rules of Dovecot's
// lib-mail (message-parser.c, message-header-parser.c, rfc822-parser.c,
// rfc2231-parser.c, message-address.c, message-part-data.c as of 2.3.19):
// prefix matching of boundaries (longest match, innermost among equals), a
// header ended early by an enclosing boundary, multipart/digest defaults, the
// "no MIME-Version and no Content-Type means no MIME" rule, first-wins
// Content-* headers, last-wins Date/Subject/Message-ID/In-Reply-To,
// concatenated address headers, RFC 2231 continuation merging, and its
// recovery of broken addresses. The differential test against recorded
// Dovecot output (shared/testdata/mime-oracle) keeps it honest.
//
// Deliberate differences from Dovecot: BINARY sizes are decided per section
// and decode with the Content-Transfer-Encoding that BODYSTRUCTURE reports
// (Dovecot converts the whole message, fails every part when one is broken,
// uses the last Content-Transfer-Encoding field, and its size range mixes
// LF-based offsets with CRLF sizes); the line break before a delimiter that
// ends an encapsulated message's header belongs to the delimiter, as RFC 2046
// section 5.1.1 says (Dovecot adds it to the message/rfc822 part); and an
// RFC 2231 "name*" parameter is always segment 0.
//
// # Input
//
// Parse expects the message as stored: CRLF line endings (the store turns bare
// LF into CRLF and keeps bare CR). Bare LF and CR are tolerated: lines end at
// LF, and all offsets and sizes are physical byte counts of the input. Parse
// streams: it keeps only the header values it needs (bounded by MaxHeaderBytes
// per part and MaxMessageHeaderBytes per message), a header index of at most
// MaxHeaderFields entries, and counters; bodies are never buffered. Lines longer
// than its 64 KiB buffer are processed in pieces.
package message

import (
	"errors"
	"fmt"
	"strings"
)

// Limits applied by Parse. Beyond them the structure degrades the way Dovecot
// degrades it; Parse never fails because of them.
const (
	// MaxDepth is the maximum nesting of MIME parts (multipart children
	// and encapsulated messages); deeper multiparts and message/rfc822
	// parts are not descended into and are reported as
	// application/octet-stream with FlagTruncated.
	MaxDepth = 100
	// MaxParts is the maximum number of parts in a message; once reached,
	// boundaries are no longer recognised.
	MaxParts = 10000
	// MaxHeaderBytes caps the bytes of header values retained per part
	// (envelope and Content-* values); longer values are cut and the part
	// gets FlagHeaderTruncated.
	MaxHeaderBytes = 64 << 10
	// MaxMessageHeaderBytes caps the header value bytes retained for the
	// whole message, except Content-Type and Content-Transfer-Encoding,
	// which define the structure (they are bounded by MaxHeaderBytes per
	// part only).
	MaxMessageHeaderBytes = 1 << 20
	// MaxHeaderFields caps the header index entries kept per message; the
	// part where the cap is hit gets FlagHeaderTruncated and its index is
	// incomplete (serve HEADER.FIELDS by ParseHeader on its header bytes).
	MaxHeaderFields = 100000
	// MaxBoundaryLen is the number of bytes of a boundary parameter that is
	// used for matching (RFC 2046 allows 70; longer ones are truncated).
	MaxBoundaryLen = 80
)

// Kind is the structural kind of a part.
type Kind uint8

const (
	// KindLeaf is a part with a body and no children (text/plain, images,
	// message/global, a multipart that could not be descended into, ...).
	KindLeaf Kind = iota
	// KindMultipart is a multipart/* part. Its Children are the body
	// parts; there may be none when the boundary is missing or never
	// occurs (IMAP BODYSTRUCTURE then shows one empty text/plain part).
	KindMultipart
	// KindMessage is a message/rfc822 part (also the default type of
	// parts without Content-Type inside multipart/digest). It has exactly
	// one child: the encapsulated message, whose header is the
	// encapsulated header and whose Envelope is set.
	KindMessage
)

// String returns "leaf", "multipart" or "message".
func (k Kind) String() string {
	switch k {
	case KindMultipart:
		return "multipart"
	case KindMessage:
		return "message"
	}
	return "leaf"
}

// Flags are properties of a part found while parsing.
type Flags uint16

const (
	// FlagHasNUL: the part's header or body (children included) contains a
	// NUL byte. IMAP BODY[] must not send NUL in a literal; Dovecot sends
	// 0x80 instead.
	FlagHasNUL Flags = 1 << iota
	// FlagTruncated: MaxDepth or MaxParts stopped the parser from
	// descending into this multipart or message/rfc822 part; Type/Subtype
	// were rewritten to application/octet-stream (as Dovecot reports it).
	FlagTruncated
	// FlagHeaderTruncated: a retained header value was cut at
	// MaxHeaderBytes, or the header index is incomplete (MaxHeaderFields).
	FlagHeaderTruncated
	// FlagMIME: the part is MIME (a body part of a multipart, or a
	// message with MIME-Version or Content-Type). Content-* fields of a
	// non-MIME message are ignored, as RFC 2045 section 4 allows.
	FlagMIME
	// FlagNoHeaderEnd: the header was not terminated by an empty line (it
	// ran into a boundary or the end of the message).
	FlagNoHeaderEnd
	// flagBinaryUnknown and flagBinaryInvalid record the result of
	// decoding the body for BINARY (see Part.BinarySize).
	flagBinaryUnknown
	flagBinaryInvalid
)

// Errors reported by BinarySize; they map to the IMAP response codes
// [UNKNOWN-CTE] and [PARSE] of RFC 3516.
var (
	ErrUnknownCTE  = errors.New("message: unknown Content-Transfer-Encoding")
	ErrInvalidData = errors.New("message: invalid data in MIME part")
)

// NString is a string that may be absent (IMAP nstring: NIL vs "").
type NString struct {
	S     string
	Valid bool
}

// NS returns a present NString.
func NS(s string) NString { return NString{S: s, Valid: true} }

// Param is a Content-Type or Content-Disposition parameter as Dovecot
// reports it in BODYSTRUCTURE: names keep their case; RFC 2231 continuations
// are merged (name*0, name*1 -> name; name*0*, ... -> name* whose value keeps
// the charset'language'%XX form); values are unquoted but not decoded. Use
// LookupParam for decoded values.
type Param struct {
	Name, Value string
}

// HeaderField is one header field (with its continuation lines) in the
// header index.
type HeaderField struct {
	// Name is the field name as written, with white space before the
	// colon removed; "" for a line without a colon.
	Name string
	// Offset is the absolute offset of the field's first byte in the
	// message.
	Offset int64
	// Size is the field's length in bytes including its continuation
	// lines and final line ending (if it has one inside the header).
	Size int64
}

// AddressKind distinguishes RFC 5322 group syntax in address lists, as in
// RFC 3501 ENVELOPE.
type AddressKind uint8

const (
	// AddrMailbox is an ordinary address.
	AddrMailbox AddressKind = iota
	// AddrGroupStart opens a group; Mailbox holds the group's display
	// name (IMAP: NIL NIL "name" NIL).
	AddrGroupStart
	// AddrGroupEnd closes a group (IMAP: NIL NIL NIL NIL).
	AddrGroupEnd
)

// Placeholders that ParseAddressList puts where an address is broken, so that
// an ordinary address never has an empty host (an IMAP ENVELOPE address with
// a NIL host means group syntax) and has a mailbox unless it was written as
// a quoted empty string (""@host). They are the values Dovecot reports.
const (
	MissingMailbox = "MISSING_MAILBOX"
	MissingDomain  = "MISSING_DOMAIN"
	SyntaxError    = "SYNTAX_ERROR"
	InvalidRoute   = "INVALID_ROUTE"
)

// Address is one entry of an address list. Strings are as written, unquoted
// and with comments removed; encoded words are not decoded (see
// DecodeHeader).
type Address struct {
	Kind AddressKind
	// Name is the display name (phrase), or the trailing comment of a
	// bare addr-spec ("a@b (Name)"); "" when there is none.
	Name string
	// Route is the obsolete source route (RFC 3501 "adl"), e.g.
	// "@a.example,@b.example"; "" when there is none.
	Route string
	// Mailbox is the local part; for AddrGroupStart, the group name.
	Mailbox string
	// Host is the domain; "" only for group markers.
	Host string
	// Invalid reports that this entry was recovered from a syntax error.
	Invalid bool
}

// Envelope is the data of an IMAP ENVELOPE (RFC 3501 section 7.4.2) of a
// message or of an encapsulated message.
//
// The string fields hold the field body as written, with white space after
// the colon removed, folding line breaks kept, NUL replaced by U+FFFD and
// encoded words not decoded; the last occurrence of a duplicated field wins.
// Serving them (Dovecot behaviour): Date, In-Reply-To and Message-ID with
// CR and LF removed; Subject with runs of white space (CR, LF, TAB, SP)
// collapsed to one space and leading/trailing white space removed.
//
// Address lists are parsed with ParseAddressList; duplicated fields are
// concatenated. Sender and ReplyTo are nil when absent: ENVELOPE then
// repeats From.
type Envelope struct {
	Date, Subject                 NString
	From, Sender, ReplyTo, To, Cc []Address
	Bcc                           []Address
	InReplyTo, MessageID          NString
}

// Part is one node of a message's MIME tree. The root Part is the whole
// message (Offset 0, HeaderSize+BodySize = RFC822.SIZE).
type Part struct {
	Kind  Kind
	Flags Flags

	// Offset is the absolute offset of the first byte of the part's
	// header (for a multipart body part: the byte after the boundary
	// line). The header is [Offset, Offset+HeaderSize), including the
	// empty line that ends it; the body is [BodyOffset(), End()). A body
	// part ends before the line break that precedes the next boundary.
	Offset     int64
	HeaderSize int64
	BodySize   int64
	// BodyLines is the number of LF bytes in the body (the line count
	// that BODYSTRUCTURE reports for text/* and message/rfc822 parts).
	BodyLines int64
	// DecodedSize is the size of the body after Content-Transfer-Encoding
	// decoding, valid for parts without children; see BinarySize.
	DecodedSize int64

	// Type and Subtype keep the case of the Content-Type header. Without
	// a usable Content-Type they are text/plain (message/rfc822 inside
	// multipart/digest). A Content-Type without a valid "type/subtype"
	// gives "" and "" and no parameters (as Dovecot reports it).
	Type, Subtype string
	// Params are the Content-Type parameters in header order, RFC 2231
	// merged parameters last.
	Params []Param

	// The first occurrence of each Content-* field (raw value as in
	// Envelope strings; Encoding is the Content-Transfer-Encoding token,
	// case kept; Disposition the disposition type token).
	ID, Description, Encoding, MD5, Location NString
	Disposition                              NString
	DispositionParams                        []Param
	// Language holds the Content-Language tags, nil when absent.
	Language []string

	// Envelope is set on the root and on the child of a KindMessage part.
	Envelope *Envelope

	// Header indexes every field of the part's header in order.
	Header []HeaderField

	// Children are the body parts of a multipart, or the single
	// encapsulated message of a KindMessage part.
	Children []*Part
}

// BodyOffset returns the absolute offset of the part's body.
func (p *Part) BodyOffset() int64 { return p.Offset + p.HeaderSize }

// End returns the absolute offset just past the part's body.
func (p *Part) End() int64 { return p.Offset + p.HeaderSize + p.BodySize }

// IsText reports whether the part is text/* (BODYSTRUCTURE then carries a line
// count and the default charset parameter).
func (p *Part) IsText() bool {
	return p.Kind == KindLeaf && strings.EqualFold(p.Type, "text")
}

// Param returns the value of the Content-Type parameter name (ASCII
// case-insensitive), without RFC 2231 decoding.
func (p *Part) Param(name string) (string, bool) {
	for _, x := range p.Params {
		if strings.EqualFold(x.Name, name) {
			return x.Value, true
		}
	}
	return "", false
}

// Message returns the encapsulated message of a KindMessage part, else nil.
func (p *Part) Message() *Part {
	if p.Kind == KindMessage && len(p.Children) == 1 {
		return p.Children[0]
	}
	return nil
}

// PartAt returns the part that an IMAP section part number (RFC 3501 section
// 6.4.5, e.g. []int{2, 1} for "2.1") refers to, or nil when there is no such
// part (IMAP then returns an empty string). An empty path returns p.
//
// The rules are Dovecot's: in a multipart, n selects the n-th body part; any
// other part only has part 1, which is the part itself (so "1.1" of a text
// part is that part); when the path goes on below a message/rfc822 part, it
// continues in the encapsulated message. So for a message/rfc822 part P,
// "P.1" is the encapsulated message itself when it is not multipart
// ("P.1.MIME" is then its header) and its first body part when it is.
func (p *Part) PartAt(path []int) *Part {
	part := p
	for i, n := range path {
		more := i+1 < len(path)
		if part.Kind == KindMultipart {
			if n < 1 || n > len(part.Children) {
				return nil
			}
			part = part.Children[n-1]
		} else if n != 1 || (more && part.Kind != KindMessage) {
			return nil
		}
		if more && part.Kind == KindMessage {
			part = part.Message()
			if part == nil {
				return nil
			}
		}
	}
	return part
}

// Walk calls fn for p and its descendants, depth first, parents before
// children. It stops early when fn returns false.
func (p *Part) Walk(fn func(*Part) bool) bool {
	if !fn(p) {
		return false
	}
	for _, c := range p.Children {
		if !c.Walk(fn) {
			return false
		}
	}
	return true
}

// binaryCTELine is the header line that replaces the Content-Transfer-Encoding
// fields of a decoded part inside a BINARY section (RFC 3516 section 4.2).
const binaryCTELine = "Content-Transfer-Encoding: binary\r\n"

// BinarySize returns the size of BINARY[section] for this part (RFC 3516):
// the body with the Content-Transfer-Encoding of every leaf below it decoded,
// and the header of every decoded body part below it rewritten to carry
// "Content-Transfer-Encoding: binary". It returns ErrUnknownCTE when a part
// that must be decoded has an encoding other than 7bit, 8bit, binary,
// quoted-printable or base64, and ErrInvalidData when the encoded data is
// broken (both decided per section, not per message).
//
// The decoding follows Content-Transfer-Encoding as reported in BODYSTRUCTURE
// (the first such field). A multipart's own encoding is ignored for its body.
func (p *Part) BinarySize() (int64, error) {
	if transferEncodingOf(p.Encoding) == encUnknown {
		return 0, ErrUnknownCTE
	}
	if len(p.Children) == 0 {
		switch {
		case p.Kind == KindMultipart:
			return p.BodySize, nil
		case p.Flags&flagBinaryUnknown != 0:
			return 0, ErrUnknownCTE
		case p.Flags&flagBinaryInvalid != 0:
			return 0, ErrInvalidData
		}
		return p.DecodedSize, nil
	}
	size := p.BodySize
	for _, c := range p.Children {
		h, err := c.binaryHeaderSize()
		if err != nil {
			return 0, err
		}
		b, err := c.BinarySize()
		if err != nil {
			return 0, err
		}
		size += h + b - c.HeaderSize - c.BodySize
	}
	return size, nil
}

// binaryHeaderSize returns the size of the part's header inside a BINARY
// section of an ancestor.
func (p *Part) binaryHeaderSize() (int64, error) {
	switch transferEncodingOf(p.Encoding) {
	case encUnknown:
		return 0, ErrUnknownCTE
	case encQuotedPrintable, encBase64:
		size := p.HeaderSize + int64(len(binaryCTELine))
		for _, f := range p.Header {
			if strings.EqualFold(f.Name, "Content-Transfer-Encoding") {
				size -= f.Size
			}
		}
		return size, nil
	}
	return p.HeaderSize, nil
}

// Validate checks that p is a consistent structure for a message of size
// bytes: the root covers the message, every part lies inside its parent's
// body after its previous sibling, header fields tile the start of their
// header, sizes are not negative, and kinds and children agree. Parse's
// results always pass; the imap package should validate a Part read from
// storage before cutting sections of the blob with its offsets.
func (p *Part) Validate(size int64) error {
	if p.Offset != 0 || p.HeaderSize < 0 || p.BodySize < 0 || p.End() != size {
		return fmt.Errorf("message: root covers [%d,%d), message has %d bytes", p.Offset, p.End(), size)
	}
	return p.validate(0)
}

func (p *Part) validate(depth int) error {
	switch {
	case depth > MaxDepth:
		return fmt.Errorf("message: parts nested deeper than %d", MaxDepth)
	case p.HeaderSize < 0 || p.BodySize < 0 || p.BodyLines < 0 || p.BodyLines > p.BodySize || p.DecodedSize < 0:
		return fmt.Errorf("message: part at %d: bad sizes", p.Offset)
	case p.Kind == KindMessage && (len(p.Children) != 1 || p.Children[0].Envelope == nil ||
		p.Children[0].Offset != p.BodyOffset() || p.Children[0].End() != p.End()):
		return fmt.Errorf("message: message/rfc822 part at %d does not contain exactly its message", p.Offset)
	case p.Kind == KindLeaf && len(p.Children) != 0:
		return fmt.Errorf("message: leaf part at %d has children", p.Offset)
	case p.Kind > KindMessage:
		return fmt.Errorf("message: part at %d has kind %d", p.Offset, p.Kind)
	}
	next := p.Offset
	for _, f := range p.Header {
		if f.Offset != next || f.Size < 0 || f.Offset+f.Size > p.BodyOffset() {
			return fmt.Errorf("message: part at %d: header field %q at [%d,+%d) misplaced", p.Offset, f.Name, f.Offset, f.Size)
		}
		next = f.Offset + f.Size
	}
	next = p.BodyOffset()
	for _, c := range p.Children {
		if c.Offset < next || c.HeaderSize < 0 || c.BodySize < 0 || c.End() > p.End() {
			return fmt.Errorf("message: part at %d is not inside its parent's body [%d,%d)", c.Offset, next, p.End())
		}
		if err := c.validate(depth + 1); err != nil {
			return err
		}
		next = c.End()
	}
	return nil
}
