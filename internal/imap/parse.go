package imap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Default limits of the command parser (Server.MaxLineLength and
// MaxMessageSize change them). A command line segment (the text between
// two literals, or up to CRLF) is at most maxLine octets; a literal that is
// an ordinary argument (a password, a search string) at most maxLiteral; an
// APPEND message at most appendLimit (advertised as APPENDLIMIT, RFC 7889).
const (
	maxLine     = 64 << 10
	maxLiteral  = 64 << 10
	appendLimit = 64 << 20
	// maxDiscard bounds how many octets of a rejected non-synchronising
	// literal the server reads and throws away to stay in step with the
	// client; a larger one closes the connection.
	maxDiscard = appendLimit
	// absurdLine is how many times maxLine an overlong line may run on
	// before the server stops discarding it and closes the connection.
	absurdLine = 16
)

// parseError is a command that cannot be executed as sent. It is answered
// with a tagged BAD (or NO when code is TOOBIG for a synchronising literal,
// RFC 7888 §4). fatal errors end the session after the response, because
// the server can no longer tell where the next command starts.
type parseError struct {
	msg   string
	code  string // response code without brackets, "" for none
	no    bool   // answer NO instead of BAD
	fatal bool
}

func (e *parseError) Error() string { return e.msg }

func syntaxErr(format string, args ...any) error {
	return &parseError{msg: fmt.Sprintf(format, args...)}
}

var errLineTooLong = &parseError{msg: "command line too long", code: "TOOBIG"}

// errLineAbsurd is a line that ran on for absurdLine times the limit: the
// client is not speaking IMAP; the session ends.
var errLineAbsurd = &parseError{msg: "command line too long", code: "TOOBIG", fatal: true}

// parser reads one command from a buffered connection, token by token. It
// never holds more than one line segment (≤ maxLine) plus one small literal
// in memory; large literals (APPEND) are streamed by the caller through
// literalReader.
type parser struct {
	br   *bufio.Reader
	line []byte // current segment without CRLF; owned copy
	pos  int
	// cont sends a continuation request ("+ ...") for a synchronising
	// literal and flushes it (RFC 9051 §7.5). nil in the fuzz harness.
	cont func() error
	// litPlus reports whether the client may use {n+} (we advertise
	// LITERAL+, RFC 7888, so always true).
	segBuf []byte
	// Limits: line segment, argument literal, discarded literal.
	maxLine, maxLiteral int
	maxDiscard          int64
}

func newParser(br *bufio.Reader, cont func() error) *parser {
	return &parser{br: br, cont: cont, segBuf: make([]byte, 0, 256),
		maxLine: maxLine, maxLiteral: maxLiteral, maxDiscard: maxDiscard}
}

// readSegment reads the next line segment. An overlong line is consumed and
// discarded (chunk by chunk, never held whole); errLineTooLong is returned.
// If the discarded line ended with a non-synchronising literal, that
// literal is discarded too, so the session stays in step with the client.
// A line that runs on past absurdLine times the limit is not waited for:
// errLineAbsurd ends the session.
func (p *parser) readSegment() error {
	p.line = p.segBuf[:0]
	p.pos = 0
	n := 0
	tooLong := false
	var tail []byte // last octets of an overlong line, to spot "{n+}"
	for {
		frag, err := p.br.ReadSlice('\n')
		n += len(frag)
		if n > absurdLine*p.maxLine {
			return errLineAbsurd
		}
		if !tooLong && n <= p.maxLine+2 {
			p.line = append(p.line, frag...)
		} else {
			if !tooLong {
				tooLong = true
				tail = append(tail[:0], lastN(p.line, 32)...)
				p.line = p.segBuf[:0]
			}
			tail = append(tail, frag...)
			tail = append(tail[:0], lastN(tail, 32)...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	if tooLong {
		t := bytes.TrimRight(tail, "\r\n")
		if size, sync, ok := trailingLiteral(t); ok && !sync {
			if err := p.discard(size); err != nil {
				return err
			}
			if err := p.readSegment(); err != nil && err != errLineTooLong {
				return err
			}
		}
		p.line = p.segBuf[:0]
		return errLineTooLong
	}
	p.line = bytes.TrimSuffix(p.line, []byte("\n"))
	p.line = bytes.TrimSuffix(p.line, []byte("\r"))
	if cap(p.line) > cap(p.segBuf) && cap(p.line) <= 4096 {
		p.segBuf = p.line[:0]
	}
	return nil
}

func lastN(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// trailingLiteral recognises "{n}" or "{n+}" at the end of b.
func trailingLiteral(b []byte) (size int64, sync bool, ok bool) {
	if len(b) < 3 || b[len(b)-1] != '}' {
		return 0, false, false
	}
	i := bytes.LastIndexByte(b, '{')
	if i < 0 {
		return 0, false, false
	}
	num := b[i+1 : len(b)-1]
	sync = true
	if len(num) > 0 && num[len(num)-1] == '+' {
		sync = false
		num = num[:len(num)-1]
	}
	if len(num) == 0 {
		return 0, false, false
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false, false
		}
	}
	size, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		// More digits than an int64 holds: a literal announced as larger
		// than anything the server will read or skip.
		size = math.MaxInt64
	}
	return size, sync, true
}

// discard throws away size octets of a rejected non-synchronising literal.
func (p *parser) discard(size int64) error {
	if size > p.maxDiscard {
		return &parseError{msg: "literal too large", code: "TOOBIG", fatal: true}
	}
	_, err := io.CopyN(io.Discard, p.br, size)
	return err
}

// skipRest abandons the current command after an error: the rest of the
// segment is dropped and, when it ends with a non-synchronising literal,
// the literal and the segments after it too (RFC 7888 §4: the client sends
// it without waiting). A synchronising literal was never acknowledged, so
// the client does not send it.
func (p *parser) skipRest() error {
	for {
		size, sync, ok := trailingLiteral(p.line[min(p.pos, len(p.line)):])
		if !ok || sync {
			p.pos = len(p.line)
			return nil
		}
		if err := p.discard(size); err != nil {
			return err
		}
		if err := p.readSegment(); err != nil {
			if err == errLineTooLong {
				continue
			}
			return err
		}
	}
}

func (p *parser) atEnd() bool { return p.pos >= len(p.line) }

func (p *parser) peek() byte {
	if p.pos < len(p.line) {
		return p.line[p.pos]
	}
	return 0
}

// end checks that the command has no further arguments.
func (p *parser) end() error {
	if !p.atEnd() {
		return syntaxErr("unexpected characters at end of command")
	}
	return nil
}

func (p *parser) sp() error {
	if p.peek() != ' ' {
		return syntaxErr("expected SP")
	}
	p.pos++
	return nil
}

// consume skips c if it is next and reports whether it did.
func (p *parser) consume(c byte) bool {
	if p.peek() == c && !p.atEnd() {
		p.pos++
		return true
	}
	return false
}

func (p *parser) expect(c byte) error {
	if !p.consume(c) {
		return syntaxErr("expected %q", c)
	}
	return nil
}

// isAtomChar: RFC 9051 §9 ATOM-CHAR (any CHAR except atom-specials).
func isAtomChar(c byte) bool {
	if c <= ' ' || c >= 0x7f {
		return false
	}
	switch c {
	case '(', ')', '{', '%', '*', '"', '\\', ']':
		return false
	}
	return true
}

// tag reads a command tag: ATOM-CHAR except "+" (RFC 9051 §9).
func (p *parser) tag() (string, error) {
	start := p.pos
	for !p.atEnd() && isAtomChar(p.line[p.pos]) && p.line[p.pos] != '+' {
		p.pos++
	}
	if p.pos == start {
		return "", syntaxErr("missing tag")
	}
	return string(p.line[start:p.pos]), nil
}

// atomWith reads a run of characters accepted by ok.
func (p *parser) atomWith(ok func(byte) bool) (string, error) {
	start := p.pos
	for !p.atEnd() && ok(p.line[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		return "", syntaxErr("expected atom")
	}
	return string(p.line[start:p.pos]), nil
}

func (p *parser) atom() (string, error) { return p.atomWith(isAtomChar) }

// astringChar: ATOM-CHAR / resp-specials ("]").
func isAStringChar(c byte) bool { return isAtomChar(c) || c == ']' }

// listChar: list-mailbox characters (atom chars plus list-wildcards and
// resp-specials), RFC 9051 §9.
func isListChar(c byte) bool { return isAStringChar(c) || c == '%' || c == '*' }

// number reads a number (RFC 9051 §9: 32-bit unsigned) or, with bits 63,
// a mod-sequence value.
func (p *parser) number(bits int) (uint64, error) {
	start := p.pos
	for !p.atEnd() && p.line[p.pos] >= '0' && p.line[p.pos] <= '9' {
		p.pos++
	}
	if p.pos == start {
		return 0, syntaxErr("expected number")
	}
	n, err := strconv.ParseUint(string(p.line[start:p.pos]), 10, bits)
	if err != nil {
		return 0, syntaxErr("number out of range")
	}
	return n, nil
}

// quoted reads a quoted string; the opening quote is next. UTF-8 is
// accepted (RFC 9051 §9 quoted-specials and QUOTED-CHAR with UTF8-2..4).
func (p *parser) quoted() (string, error) {
	p.pos++
	var b []byte
	for {
		if p.atEnd() {
			return "", syntaxErr("unterminated quoted string")
		}
		c := p.line[p.pos]
		p.pos++
		switch c {
		case '"':
			return string(b), nil
		case '\\':
			if p.atEnd() {
				return "", syntaxErr("unterminated quoted string")
			}
			c = p.line[p.pos]
			if c != '"' && c != '\\' {
				return "", syntaxErr("bad escape in quoted string")
			}
			p.pos++
			b = append(b, c)
		case '\r', '\n', 0:
			return "", syntaxErr("bad character in quoted string")
		default:
			b = append(b, c)
		}
	}
}

// literalHeader parses "{n}", "{n+}" (RFC 7888) or, with tilde, "~{n}" at
// the current position; it must be the end of the segment.
func (p *parser) literalHeader() (size int64, sync bool, err error) {
	if p.peek() == '~' {
		p.pos++
	}
	if !p.consume('{') {
		return 0, false, syntaxErr("expected literal")
	}
	start := p.pos
	n, err := p.number(63)
	if err != nil {
		if p.pos == start {
			return 0, false, err
		}
		// Too many digits: refused by size like any literal over the
		// limit (NO [TOOBIG], or the end of the session for one that
		// cannot be skipped).
		n = math.MaxInt64
	}
	sync = !p.consume('+')
	if !p.consume('}') || !p.atEnd() {
		return 0, false, syntaxErr("bad literal syntax")
	}
	return int64(n), sync, nil
}

// literalStart announces that the literal of size octets will be read:
// for a synchronising literal it sends the continuation request. A literal
// larger than limit is refused: NO [TOOBIG] for a synchronising one (the
// client does not send it), BAD [TOOBIG] after discarding a
// non-synchronising one (RFC 7888 §4).
func (p *parser) literalStart(size int64, sync bool, limit int64) error {
	if size > limit {
		if sync {
			return &parseError{msg: "literal too large", code: "TOOBIG", no: true}
		}
		if err := p.discard(size); err != nil {
			return err
		}
		p.pos = len(p.line)
		// The rest of the command follows the literal; drop it.
		if err := p.readSegment(); err != nil && err != errLineTooLong {
			return err
		}
		if err := p.skipRest(); err != nil {
			return err
		}
		return &parseError{msg: "literal too large", code: "TOOBIG"}
	}
	if sync && p.cont != nil {
		if err := p.cont(); err != nil {
			return err
		}
	}
	return nil
}

// literalEnd reads the line segment that follows a literal.
func (p *parser) literalEnd() error {
	return p.readSegment()
}

// literal reads a small literal into memory.
func (p *parser) literal() (string, error) {
	size, sync, err := p.literalHeader()
	if err != nil {
		return "", err
	}
	if err := p.literalStart(size, sync, int64(p.maxLiteral)); err != nil {
		return "", err
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(p.br, b); err != nil {
		return "", err
	}
	if err := p.literalEnd(); err != nil {
		return "", err
	}
	return string(b), nil
}

// astring reads an astring: atom (with "]"), quoted string or literal.
func (p *parser) astring() (string, error) {
	switch p.peek() {
	case '"':
		return p.quoted()
	case '{', '~':
		return p.literal()
	}
	return p.atomWith(isAStringChar)
}

// str reads a string (quoted or literal).
func (p *parser) str() (string, error) {
	switch p.peek() {
	case '"':
		return p.quoted()
	case '{', '~':
		return p.literal()
	}
	return "", syntaxErr("expected string")
}

// listMailbox reads a LIST pattern: list-char atoms or a string.
func (p *parser) listMailbox() (string, error) {
	switch p.peek() {
	case '"':
		return p.quoted()
	case '{', '~':
		return p.literal()
	}
	return p.atomWith(isListChar)
}

// list parses "(" item *(SP item) ")"; empty lists are accepted when
// allowEmpty is set.
func (p *parser) list(allowEmpty bool, item func() error) error {
	if err := p.expect('('); err != nil {
		return err
	}
	if p.consume(')') {
		if !allowEmpty {
			return syntaxErr("empty list")
		}
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		if p.consume(')') {
			return nil
		}
		if err := p.sp(); err != nil {
			return err
		}
	}
}

// flag reads a flag: "\" atom or atom (RFC 9051 §9 flag). "\*" is
// accepted when star is set (PERMANENTFLAGS never comes from clients, so
// only for completeness of the grammar).
func (p *parser) flag() (string, error) {
	start := p.pos
	p.consume('\\')
	if _, err := p.atom(); err != nil {
		return "", syntaxErr("bad flag")
	}
	return string(p.line[start:p.pos]), nil
}

// flagList reads "(" [flag *(SP flag)] ")".
func (p *parser) flagList() ([]string, error) {
	flags := []string{}
	err := p.list(true, func() error {
		f, err := p.flag()
		flags = append(flags, f)
		return err
	})
	return flags, err
}

// command is the head of a parsed command line; the arguments are read by
// the command's handler from the parser.
type command struct {
	tag  string
	name string // upper-cased
	uid  bool   // "UID" prefix
}

// readCommand reads a command's tag and name.
func (p *parser) readCommand() (command, error) {
	var c command
	tag, err := p.tag()
	if err != nil {
		return c, err
	}
	c.tag = tag
	if err := p.sp(); err != nil {
		return c, syntaxErr("missing command")
	}
	name, err := p.atom()
	if err != nil {
		return c, syntaxErr("missing command")
	}
	c.name = upper(name)
	if c.name == "UID" {
		c.uid = true
		if err := p.sp(); err != nil {
			return c, err
		}
		name, err := p.atom()
		if err != nil {
			return c, syntaxErr("missing command after UID")
		}
		c.name = upper(name)
	}
	return c, nil
}

func upper(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'a' && s[i] <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'a' && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
