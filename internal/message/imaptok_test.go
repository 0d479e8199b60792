package message

// Test-only IMAP response tokenizer: turns response text into a tree of
// lists, strings (quoted or literal, which compare equal), and atoms
// (including NIL and numbers), so that responses are compared as data, not
// bytes.

import (
	"fmt"
	"strconv"
	"strings"
)

type inodeKind uint8

const (
	iAtom inodeKind = iota
	iString
	iList
)

type inode struct {
	kind inodeKind
	val  string
	list []inode
}

func (n inode) String() string {
	switch n.kind {
	case iAtom:
		return n.val
	case iString:
		return strconv.Quote(n.val)
	}
	parts := make([]string, len(n.list))
	for i, c := range n.list {
		parts[i] = c.String()
	}
	return "(" + strings.Join(parts, " ") + ")"
}

// equalNodes compares trees; atoms compare ASCII case-insensitively.
func equalNodes(a, b inode) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case iAtom:
		return strings.EqualFold(a.val, b.val)
	case iString:
		return a.val == b.val
	}
	if len(a.list) != len(b.list) {
		return false
	}
	for i := range a.list {
		if !equalNodes(a.list[i], b.list[i]) {
			return false
		}
	}
	return true
}

type imapTokenizer struct {
	b   []byte
	pos int
}

// parseIMAPLine parses one response (up to its final CRLF, literals
// included) into its top-level items.
func parseIMAPLine(b []byte) ([]inode, error) {
	t := &imapTokenizer{b: b}
	items, err := t.items(0)
	if err != nil {
		return nil, err
	}
	return items, nil
}

func (t *imapTokenizer) items(depth int) ([]inode, error) {
	var out []inode
	for {
		if t.pos >= len(t.b) {
			if depth > 0 {
				return nil, fmt.Errorf("unterminated list")
			}
			return out, nil
		}
		switch c := t.b[t.pos]; c {
		case ' ':
			t.pos++
		case '\r', '\n':
			if depth > 0 {
				return nil, fmt.Errorf("line break inside list at %d", t.pos)
			}
			t.pos++
		case '(':
			t.pos++
			l, err := t.items(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, inode{kind: iList, list: l})
		case ')':
			if depth == 0 {
				return nil, fmt.Errorf("unbalanced ) at %d", t.pos)
			}
			t.pos++
			return out, nil
		case '"':
			s, err := t.quoted()
			if err != nil {
				return nil, err
			}
			out = append(out, inode{kind: iString, val: s})
		case '{':
			s, err := t.literal()
			if err != nil {
				return nil, err
			}
			out = append(out, inode{kind: iString, val: s})
		default:
			out = append(out, inode{kind: iAtom, val: t.atom()})
		}
	}
}

func (t *imapTokenizer) quoted() (string, error) {
	var b strings.Builder
	for t.pos++; t.pos < len(t.b); t.pos++ {
		switch c := t.b[t.pos]; c {
		case '\\':
			t.pos++
			if t.pos >= len(t.b) {
				return "", fmt.Errorf("bad escape")
			}
			b.WriteByte(t.b[t.pos])
		case '"':
			t.pos++
			return b.String(), nil
		case '\r', '\n':
			return "", fmt.Errorf("line break in quoted string")
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("unterminated quoted string")
}

func (t *imapTokenizer) literal() (string, error) {
	end := strings.Index(string(t.b[t.pos:]), "}\r\n")
	if end < 0 {
		return "", fmt.Errorf("bad literal")
	}
	n, err := strconv.Atoi(string(t.b[t.pos+1 : t.pos+end]))
	if err != nil || n < 0 {
		return "", fmt.Errorf("bad literal length")
	}
	start := t.pos + end + 3
	if start+n > len(t.b) {
		return "", fmt.Errorf("short literal")
	}
	t.pos = start + n
	return string(t.b[start : start+n]), nil
}

// atom reads an atom; "[...]" inside it (FETCH section specifiers) may
// contain spaces and parentheses.
func (t *imapTokenizer) atom() string {
	start := t.pos
	for t.pos < len(t.b) {
		c := t.b[t.pos]
		if c == '[' {
			if end := strings.IndexByte(string(t.b[t.pos:]), ']'); end >= 0 {
				t.pos += end + 1
				continue
			}
		}
		if c == ' ' || c == '(' || c == ')' || c == '\r' || c == '\n' {
			break
		}
		t.pos++
	}
	return string(t.b[start:t.pos])
}

// readResponse splits the next response (with its literals) from b and
// returns it and the rest.
func readResponse(b []byte) (resp, rest []byte, err error) {
	pos := 0
	for {
		i := strings.Index(string(b[pos:]), "\r\n")
		if i < 0 {
			return nil, nil, fmt.Errorf("response without CRLF")
		}
		lineEnd := pos + i
		if lineEnd > 0 && b[lineEnd-1] == '}' {
			open := strings.LastIndexByte(string(b[pos:lineEnd]), '{')
			if open >= 0 {
				if n, err := strconv.Atoi(string(b[pos+open+1 : lineEnd-1])); err == nil {
					pos = lineEnd + 2 + n
					if pos > len(b) {
						return nil, nil, fmt.Errorf("short literal")
					}
					continue
				}
			}
		}
		return b[:lineEnd+2], b[lineEnd+2:], nil
	}
}
