package render

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// NodeKind is the kind of a Node.
type NodeKind uint8

const (
	// NodeAtom is an atom, including NIL, numbers and FETCH item names
	// such as BODY[HEADER.FIELDS (FROM)]<0>.
	NodeAtom NodeKind = iota
	// NodeString is a quoted string, literal or literal8; they compare
	// equal when their contents are equal.
	NodeString
	// NodeList is a parenthesised list.
	NodeList
)

// Node is one item of IMAP response data, as parsed by ParseData: tests
// compare responses as trees of Nodes rather than as bytes, so that a
// quoted string equals the same string sent as a literal.
type Node struct {
	Kind  NodeKind
	Value string // atom text or string contents
	List  []Node // items of a list
}

// String returns a canonical, single-line rendering of n (strings in Go
// quoted form), for test failure messages.
func (n Node) String() string {
	switch n.Kind {
	case NodeAtom:
		return n.Value
	case NodeString:
		return strconv.Quote(n.Value)
	}
	var b strings.Builder
	b.WriteByte('(')
	for i, c := range n.List {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(c.String())
	}
	b.WriteByte(')')
	return b.String()
}

// Equal reports whether n and m are the same data: atoms compare ASCII
// case-insensitively (RFC 3501 section 9 note 3), strings byte for byte,
// lists item by item.
func (n Node) Equal(m Node) bool {
	if n.Kind != m.Kind {
		return false
	}
	switch n.Kind {
	case NodeAtom:
		return strings.EqualFold(n.Value, m.Value)
	case NodeString:
		return n.Value == m.Value
	}
	if len(n.List) != len(m.List) {
		return false
	}
	for i := range n.List {
		if !n.List[i].Equal(m.List[i]) {
			return false
		}
	}
	return true
}

// maxDataDepth bounds list nesting in ParseData.
const maxDataDepth = 1000

// ErrData is wrapped by the errors of ParseData and SplitResponse.
var ErrData = errors.New("render: malformed IMAP data")

// ParseData parses IMAP data — one response line with its literals, or a
// fragment such as the output of BodyStructure — into its top-level items.
// Lists must be balanced and may not contain line breaks outside literals;
// a CRLF at top level separates nothing and is skipped. Quoted strings,
// literals ({n} CRLF ...) and literal8s (~{n} CRLF ...) become NodeString.
// In an atom, a "[...]" part may contain spaces and parentheses, so FETCH
// item names with section specifiers stay one atom.
func ParseData(b []byte) ([]Node, error) {
	t := tokenizer{b: b}
	return t.items(0)
}

type tokenizer struct {
	b   []byte
	pos int
}

func (t *tokenizer) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", ErrData, t.pos, fmt.Sprintf(format, args...))
}

func (t *tokenizer) items(depth int) ([]Node, error) {
	if depth > maxDataDepth {
		return nil, t.errorf("lists nested deeper than %d", maxDataDepth)
	}
	var out []Node
	for {
		if t.pos >= len(t.b) {
			if depth > 0 {
				return nil, t.errorf("unterminated list")
			}
			return out, nil
		}
		switch c := t.b[t.pos]; c {
		case ' ':
			t.pos++
		case '\r', '\n':
			if depth > 0 {
				return nil, t.errorf("line break inside a list")
			}
			t.pos++
		case '(':
			t.pos++
			l, err := t.items(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, Node{Kind: NodeList, List: l})
		case ')':
			if depth == 0 {
				return nil, t.errorf("unbalanced )")
			}
			t.pos++
			return out, nil
		case '"':
			s, err := t.quoted()
			if err != nil {
				return nil, err
			}
			out = append(out, Node{Kind: NodeString, Value: s})
		case '{', '~':
			if c == '~' && (t.pos+1 >= len(t.b) || t.b[t.pos+1] != '{') {
				out = append(out, Node{Kind: NodeAtom, Value: t.atom()})
				continue
			}
			s, err := t.literal()
			if err != nil {
				return nil, err
			}
			out = append(out, Node{Kind: NodeString, Value: s})
		default:
			out = append(out, Node{Kind: NodeAtom, Value: t.atom()})
		}
	}
}

func (t *tokenizer) quoted() (string, error) {
	var b strings.Builder
	for t.pos++; t.pos < len(t.b); t.pos++ {
		switch c := t.b[t.pos]; c {
		case '\\':
			t.pos++
			if t.pos >= len(t.b) || (t.b[t.pos] != '"' && t.b[t.pos] != '\\') {
				return "", t.errorf("bad escape in quoted string")
			}
			b.WriteByte(t.b[t.pos])
		case '"':
			t.pos++
			return b.String(), nil
		case '\r', '\n', 0:
			return "", t.errorf("CR, LF or NUL in quoted string")
		default:
			b.WriteByte(c)
		}
	}
	return "", t.errorf("unterminated quoted string")
}

func (t *tokenizer) literal() (string, error) {
	if t.b[t.pos] == '~' {
		t.pos++
	}
	end := bytes.Index(t.b[t.pos:], []byte("}\r\n"))
	if end < 0 {
		return "", t.errorf("bad literal")
	}
	n, err := strconv.Atoi(string(t.b[t.pos+1 : t.pos+end]))
	if err != nil || n < 0 {
		return "", t.errorf("bad literal length")
	}
	start := t.pos + end + 3
	if n > len(t.b)-start {
		return "", t.errorf("short literal")
	}
	t.pos = start + n
	return string(t.b[start:t.pos]), nil
}

func (t *tokenizer) atom() string {
	start := t.pos
	for t.pos < len(t.b) {
		c := t.b[t.pos]
		if c == '[' {
			if end := bytes.IndexByte(t.b[t.pos:], ']'); end >= 0 {
				t.pos += end + 1
				continue
			}
		}
		if c == ' ' || c == '(' || c == ')' || c == '\r' || c == '\n' || c == '"' {
			break
		}
		t.pos++
	}
	if t.pos == start { // a byte no rule accepts: make progress
		t.pos++
	}
	return string(t.b[start:t.pos])
}

// SplitResponse splits the first response (up to the CRLF that ends it,
// literals included) off b.
func SplitResponse(b []byte) (resp, rest []byte, err error) {
	pos := 0
	for {
		i := bytes.Index(b[pos:], []byte("\r\n"))
		if i < 0 {
			return nil, nil, fmt.Errorf("%w: response without CRLF", ErrData)
		}
		lineEnd := pos + i
		if lineEnd > pos && b[lineEnd-1] == '}' {
			if open := bytes.LastIndexByte(b[pos:lineEnd], '{'); open >= 0 {
				if n, err := strconv.Atoi(string(b[pos+open+1 : lineEnd-1])); err == nil && n >= 0 {
					if n > len(b)-(lineEnd+2) {
						return nil, nil, fmt.Errorf("%w: short literal", ErrData)
					}
					pos = lineEnd + 2 + n
					continue
				}
			}
		}
		return b[:lineEnd+2], b[lineEnd+2:], nil
	}
}
