package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// A minimal IMAP4rev1 client (RFC 3501/9051), enough to drive and verify the
// benchmark: tagged commands, untagged responses, literals {n} (and literal8
// ~{n}) inside responses, and a generic parser for FETCH data. It does not
// pipeline: one command at a time per connection, as most clients do.

type imapClient struct {
	c       net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	tagN    int
	timeout time.Duration
}

// imapStatusError is a tagged NO or BAD (or an untagged BYE).
type imapStatusError struct {
	cmd    string
	status string
	text   string
}

func (e *imapStatusError) Error() string {
	return fmt.Sprintf("%s: %s %s", e.cmd, e.status, e.text)
}

func dialIMAP(addr string, timeout time.Duration) (*imapClient, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	ic := newIMAPClient(c, timeout)
	ic.c.SetDeadline(time.Now().Add(timeout))
	greet, err := ic.readResp()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if !bytes.HasPrefix(greet, []byte("* OK")) && !bytes.HasPrefix(greet, []byte("* PREAUTH")) {
		c.Close()
		return nil, fmt.Errorf("greeting: %q", trunc(greet, 200))
	}
	return ic, nil
}

func newIMAPClient(c net.Conn, timeout time.Duration) *imapClient {
	return &imapClient{c: c, br: bufio.NewReaderSize(c, 64<<10), bw: bufio.NewWriterSize(c, 4<<10), timeout: timeout}
}

func trunc(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// readResp reads one complete server response: a line plus any literals it
// announces ({n}CRLF followed by n octets, then the rest of the line). The
// result includes the literal octets in place and lacks the final CRLF.
func (ic *imapClient) readResp() ([]byte, error) {
	var out []byte
	for {
		line, err := ic.br.ReadSlice('\n')
		out = append(out, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		n, ok := literalAtEnd(out)
		if !ok {
			return bytes.TrimRight(out, "\r\n"), nil
		}
		if n > 1<<30 {
			return nil, fmt.Errorf("literal of %d octets", n)
		}
		start := len(out)
		out = append(out, make([]byte, n)...)
		if _, err := io.ReadFull(ic.br, out[start:]); err != nil {
			return nil, fmt.Errorf("literal: %w", err)
		}
		// A large literal on a slow machine: renew the deadline.
		ic.c.SetReadDeadline(time.Now().Add(ic.timeout))
	}
}

// literalAtEnd reports whether b (a line ending in LF) ends with a literal
// announcement "{n}CRLF" (or "{n+}"), and returns n.
func literalAtEnd(b []byte) (int, bool) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) < 3 || b[len(b)-1] != '}' {
		return 0, false
	}
	i := bytes.LastIndexByte(b, '{')
	if i < 0 {
		return 0, false
	}
	num := bytes.TrimSuffix(b[i+1:len(b)-1], []byte("+"))
	if len(num) == 0 || len(num) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// cmd sends one command and reads responses up to its tagged completion.
// Each untagged response ("* ...") is passed to onUntagged (which may be
// nil); an error it returns is reported after the command completed. A
// tagged NO/BAD is returned as *imapStatusError. lits are sent as
// synchronising literals: each "{n}" at the end of a segment of the
// command waits for the server's "+" continuation.
func (ic *imapClient) cmd(command string, onUntagged func(resp []byte) error, lits ...[]byte) (string, error) {
	ic.tagN++
	tag := "A" + strconv.Itoa(ic.tagN)
	ic.c.SetDeadline(time.Now().Add(ic.timeout))
	verb, _, _ := strings.Cut(command, " ")
	if strings.EqualFold(verb, "UID") {
		v2, _, _ := strings.Cut(command[4:], " ")
		verb = "UID " + v2
	}
	segs := []string{command}
	if len(lits) > 0 {
		// "SEARCH CHARSET UTF-8 SUBJECT {%d}" style: the command text holds
		// one "{}" marker per literal.
		segs = strings.Split(command, "{}")
		if len(segs) != len(lits)+1 {
			return "", fmt.Errorf("command %q: %d literal markers for %d literals", command, len(segs)-1, len(lits))
		}
	}
	ic.bw.WriteString(tag + " ")
	var uerr error
	for i, seg := range segs {
		ic.bw.WriteString(seg)
		if i == len(lits) {
			break
		}
		ic.bw.WriteString("{" + strconv.Itoa(len(lits[i])) + "}\r\n")
		if err := ic.bw.Flush(); err != nil {
			return "", err
		}
		for { // wait for the continuation
			resp, err := ic.readResp()
			if err != nil {
				return "", fmt.Errorf("%s: %w", verb, err)
			}
			if bytes.HasPrefix(resp, []byte("+")) {
				break
			}
			if bytes.HasPrefix(resp, []byte("* ")) {
				if onUntagged != nil && uerr == nil {
					uerr = onUntagged(resp)
				}
				continue
			}
			return "", fmt.Errorf("%s: literal refused: %s", verb, trunc(resp, 200))
		}
		ic.bw.Write(lits[i])
	}
	ic.bw.WriteString("\r\n")
	if err := ic.bw.Flush(); err != nil {
		return "", err
	}
	for {
		resp, err := ic.readResp()
		if err != nil {
			return "", fmt.Errorf("%s: %w", verb, err)
		}
		if bytes.HasPrefix(resp, []byte("* ")) {
			if bytes.HasPrefix(resp, []byte("* BYE")) && !strings.EqualFold(verb, "LOGOUT") {
				return "", &imapStatusError{verb, "BYE", string(resp[5:])}
			}
			if onUntagged != nil && uerr == nil {
				uerr = onUntagged(resp)
			}
			continue
		}
		if bytes.HasPrefix(resp, []byte("+")) {
			return "", fmt.Errorf("%s: unexpected continuation %q", verb, trunc(resp, 200))
		}
		rest, ok := bytes.CutPrefix(resp, []byte(tag+" "))
		if !ok {
			return "", fmt.Errorf("%s: unexpected response %q", verb, trunc(resp, 200))
		}
		status, text, _ := strings.Cut(string(rest), " ")
		if !strings.EqualFold(status, "OK") {
			return text, &imapStatusError{verb, strings.ToUpper(status), text}
		}
		if uerr != nil {
			return text, fmt.Errorf("%s: %w", verb, uerr)
		}
		return text, nil
	}
}

// imapQuote returns s as an IMAP quoted string.
func imapQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func (ic *imapClient) login(user, password string) error {
	_, err := ic.cmd("LOGIN "+imapQuote(user)+" "+imapQuote(password), nil)
	return err
}

// selectInfo is what SELECT reported.
type selectInfo struct {
	Exists      int
	UIDValidity uint32
	UIDNext     uint32
}

func (ic *imapClient) selectMailbox(name string) (selectInfo, error) {
	var si selectInfo
	si.Exists = -1
	_, err := ic.cmd("SELECT "+imapQuote(name), func(resp []byte) error {
		u := parseUntagged(resp)
		switch {
		case u.hasNum && u.word == "EXISTS":
			si.Exists = int(u.num)
		case u.word == "OK":
			if v, ok := respCode(u.rest, "UIDVALIDITY"); ok {
				n, _ := strconv.ParseUint(v, 10, 32)
				si.UIDValidity = uint32(n)
			}
			if v, ok := respCode(u.rest, "UIDNEXT"); ok {
				n, _ := strconv.ParseUint(v, 10, 32)
				si.UIDNext = uint32(n)
			}
		}
		return nil
	})
	if err == nil && si.Exists < 0 {
		err = errors.New("SELECT: no EXISTS response")
	}
	return si, err
}

func (ic *imapClient) logout() {
	ic.cmd("LOGOUT", nil)
	ic.c.Close()
}

// untagged is a parsed untagged response: "* 12 FETCH (...)" has num 12,
// word "FETCH" and rest "(...)"; "* SEARCH 1 2" has word "SEARCH", rest "1 2".
type untagged struct {
	num    uint32
	hasNum bool
	word   string // upper case
	rest   []byte
}

func parseUntagged(resp []byte) untagged {
	var u untagged
	b, _ := bytes.CutPrefix(resp, []byte("* "))
	if len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
		i := 0
		var n uint64
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			n = n*10 + uint64(b[i]-'0')
			i++
		}
		u.num, u.hasNum = uint32(min(n, 1<<32-1)), true
		b = bytes.TrimPrefix(b[i:], []byte(" "))
	}
	w, rest, _ := bytes.Cut(b, []byte(" "))
	u.word = strings.ToUpper(string(w))
	u.rest = rest
	return u
}

// respCode returns the argument of a response code "[NAME arg]" at the
// start of text.
func respCode(text []byte, name string) (string, bool) {
	if len(text) < len(name)+2 || text[0] != '[' {
		return "", false
	}
	end := bytes.IndexByte(text, ']')
	if end < 0 {
		return "", false
	}
	code, arg, _ := strings.Cut(string(text[1:end]), " ")
	if !strings.EqualFold(code, name) {
		return "", false
	}
	return arg, true
}

// ivalKind is the type of a parsed IMAP data item.
type ivalKind uint8

const (
	ivAtom   ivalKind = iota + 1 // atoms and numbers, also BODY[...]<n> section keys
	ivString                     // quoted string or literal
	ivNil
	ivList
)

// ival is one parsed IMAP value. b aliases the response buffer.
type ival struct {
	kind ivalKind
	b    []byte
	list []ival
}

func (v ival) String() string {
	switch v.kind {
	case ivNil:
		return "NIL"
	case ivList:
		s := make([]string, len(v.list))
		for i, x := range v.list {
			s[i] = x.String()
		}
		return "(" + strings.Join(s, " ") + ")"
	case ivString:
		return strconv.Quote(string(v.b))
	}
	return string(v.b)
}

// num returns the value as a number.
func (v ival) num() (uint64, bool) {
	if v.kind != ivAtom || len(v.b) == 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(v.b), 10, 64)
	return n, err == nil
}

// nstring returns the octets of a string, or nil for NIL.
func (v ival) str() ([]byte, bool) {
	switch v.kind {
	case ivString:
		return v.b, true
	case ivNil:
		return nil, true
	}
	return nil, false
}

type ivalParser struct {
	b   []byte
	pos int
}

func (p *ivalParser) errf(f string, a ...any) error {
	lo := max(0, p.pos-30)
	hi := min(len(p.b), p.pos+30)
	return fmt.Errorf("%s at offset %d near %q", fmt.Sprintf(f, a...), p.pos, p.b[lo:hi])
}

// value parses one value at p.pos.
func (p *ivalParser) value(depth int) (ival, error) {
	if depth > 100 {
		return ival{}, p.errf("nesting too deep")
	}
	if p.pos >= len(p.b) {
		return ival{}, p.errf("unexpected end")
	}
	switch c := p.b[p.pos]; c {
	case '(':
		p.pos++
		v := ival{kind: ivList}
		for {
			if p.pos >= len(p.b) {
				return ival{}, p.errf("unterminated list")
			}
			if p.b[p.pos] == ')' {
				p.pos++
				return v, nil
			}
			if len(v.list) > 0 {
				// The parts of a multipart BODYSTRUCTURE follow each
				// other without a space: "((...)(...) "mixed" ...)".
				switch {
				case p.b[p.pos] == ' ':
					p.pos++
				case p.b[p.pos] == '(' && v.list[len(v.list)-1].kind == ivList:
				default:
					return ival{}, p.errf("expected space in list")
				}
			}
			x, err := p.value(depth + 1)
			if err != nil {
				return ival{}, err
			}
			v.list = append(v.list, x)
		}
	case '"':
		p.pos++
		start := p.pos
		esc := false
		for p.pos < len(p.b) && p.b[p.pos] != '"' {
			if p.b[p.pos] == '\\' {
				esc = true
				p.pos++
			}
			p.pos++
		}
		if p.pos >= len(p.b) {
			return ival{}, p.errf("unterminated quoted string")
		}
		s := p.b[start:p.pos]
		p.pos++
		if esc {
			u := make([]byte, 0, len(s))
			for i := 0; i < len(s); i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				u = append(u, s[i])
			}
			s = u
		}
		return ival{kind: ivString, b: s}, nil
	case '{', '~':
		if c == '~' {
			p.pos++
			if p.pos >= len(p.b) || p.b[p.pos] != '{' {
				return ival{}, p.errf("bad literal8")
			}
		}
		end := bytes.IndexByte(p.b[p.pos:], '}')
		if end < 0 {
			return ival{}, p.errf("unterminated literal length")
		}
		n, err := strconv.Atoi(strings.TrimSuffix(string(p.b[p.pos+1:p.pos+end]), "+"))
		if err != nil || n < 0 {
			return ival{}, p.errf("bad literal length")
		}
		p.pos += end + 1
		if !bytes.HasPrefix(p.b[p.pos:], []byte("\r\n")) {
			return ival{}, p.errf("literal length not followed by CRLF")
		}
		p.pos += 2
		if len(p.b)-p.pos < n {
			return ival{}, p.errf("literal of %d octets truncated", n)
		}
		v := ival{kind: ivString, b: p.b[p.pos : p.pos+n]}
		p.pos += n
		return v, nil
	}
	// An atom; "[...]" inside it (BODY[HEADER.FIELDS (A B)]) may hold
	// spaces and parentheses.
	start := p.pos
	for p.pos < len(p.b) {
		c := p.b[p.pos]
		if c == ' ' || c == '(' || c == ')' || c == '\r' || c == '\n' || c == '"' || c == '{' {
			break
		}
		if c == '[' {
			d := 0
			for p.pos < len(p.b) {
				ch := p.b[p.pos]
				p.pos++
				if ch == '[' {
					d++
				} else if ch == ']' {
					if d--; d == 0 {
						break
					}
				}
			}
			if d != 0 {
				return ival{}, p.errf("unterminated [")
			}
			continue
		}
		p.pos++
	}
	if p.pos == start {
		return ival{}, p.errf("unexpected %q", p.b[p.pos])
	}
	a := p.b[start:p.pos]
	if len(a) == 3 && (a[0]|0x20) == 'n' && (a[1]|0x20) == 'i' && (a[2]|0x20) == 'l' {
		return ival{kind: ivNil}, nil
	}
	return ival{kind: ivAtom, b: a}, nil
}

// fetchItem is one "NAME value" pair of a FETCH response.
type fetchItem struct {
	name string // upper case: UID, FLAGS, ENVELOPE, BODY[], BODY[HEADER.FIELDS (SUBJECT)], ...
	val  ival
}

// fetchData is a parsed "* n FETCH (...)" response.
type fetchData struct {
	seq   uint32
	items []fetchItem
}

func (f *fetchData) get(name string) (ival, bool) {
	for _, it := range f.items {
		if it.name == name {
			return it.val, true
		}
	}
	return ival{}, false
}

// getPrefix returns the first item whose name starts with prefix (section
// names differ in case and spacing between servers).
func (f *fetchData) getPrefix(prefix string) (ival, bool) {
	for _, it := range f.items {
		if strings.HasPrefix(it.name, prefix) {
			return it.val, true
		}
	}
	return ival{}, false
}

func (f *fetchData) uid() (uint32, bool) {
	v, ok := f.get("UID")
	if !ok {
		return 0, false
	}
	n, ok := v.num()
	return uint32(n), ok && n > 0 && n < 1<<32
}

// parseFetch parses an untagged response; ok is false when it is not a FETCH.
func parseFetch(resp []byte) (*fetchData, bool, error) {
	u := parseUntagged(resp)
	if !u.hasNum || u.word != "FETCH" {
		return nil, false, nil
	}
	p := &ivalParser{b: u.rest}
	v, err := p.value(0)
	if err != nil {
		return nil, true, fmt.Errorf("FETCH %d: %w", u.num, err)
	}
	if v.kind != ivList || len(v.list)%2 != 0 {
		return nil, true, fmt.Errorf("FETCH %d: not a list of pairs: %s", u.num, trunc(u.rest, 200))
	}
	if p.pos != len(p.b) {
		return nil, true, fmt.Errorf("FETCH %d: trailing data %q", u.num, trunc(p.b[p.pos:], 50))
	}
	fd := &fetchData{seq: u.num, items: make([]fetchItem, 0, len(v.list)/2)}
	for i := 0; i < len(v.list); i += 2 {
		k := v.list[i]
		if k.kind != ivAtom {
			return nil, true, fmt.Errorf("FETCH %d: item name %s is not an atom", u.num, k)
		}
		fd.items = append(fd.items, fetchItem{name: strings.ToUpper(string(k.b)), val: v.list[i+1]})
	}
	return fd, true, nil
}

// parseSearch returns the numbers of a "* SEARCH ..." response (with or
// without a trailing "(MODSEQ n)").
func parseSearch(rest []byte) ([]uint32, error) {
	if i := bytes.IndexByte(rest, '('); i >= 0 {
		rest = rest[:i]
	}
	f := strings.Fields(string(rest))
	out := make([]uint32, 0, len(f))
	for _, s := range f {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("SEARCH: bad number %q", s)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// flagsOf returns the flags of a FLAGS list value.
func flagsOf(v ival) ([]string, bool) {
	if v.kind != ivList {
		return nil, false
	}
	out := make([]string, 0, len(v.list))
	for _, x := range v.list {
		if x.kind != ivAtom {
			return nil, false
		}
		out = append(out, string(x.b))
	}
	return out, true
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if strings.EqualFold(x, f) {
			return true
		}
	}
	return false
}
