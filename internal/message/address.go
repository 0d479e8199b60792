package message

import (
	"errors"
	"fmt"
)

// ParseAddressList parses an RFC 5322 address-list (the value of From, To,
// Cc, ...), including group syntax (RFC 5322 section 3.4) and the obsolete
// forms of section 4.4 (route-addr, CFWS around dots, missing commas are
// not accepted). It never gives up: broken entries are recovered the way
// Dovecot recovers them and flagged Invalid, with MissingMailbox,
// MissingDomain, SyntaxError or InvalidRoute as placeholders. The returned
// error describes the first recovered entry and is nil when the whole list
// was well-formed.
//
// A group is returned as an AddrGroupStart entry (Mailbox = group name),
// its members, and an AddrGroupEnd entry. A bare addr-spec's trailing
// comment becomes its Name ("a@b (Name)"). Encoded words are left as
// written; NUL inside quoted strings, comments and domain literals becomes
// U+FFFD.
//
// net/mail is not used: it rejects route-addrs, group syntax in
// ParseAddressList, unquoted specials and 8-bit garbage, and stops at the
// first error, while an IMAP server must report something for every entry,
// exactly as other servers do.
func ParseAddressList(s string) ([]Address, error) {
	list := parseAddressList([]byte(s))
	for i, a := range list {
		if a.Invalid {
			return list, fmt.Errorf("%w: entry %d", ErrAddressSyntax, i+1)
		}
	}
	return list, nil
}

// ErrAddressSyntax is wrapped by the error ParseAddressList returns for an
// address list that needed recovery.
var ErrAddressSyntax = errors.New("message: address list syntax error")

// maxAddresses bounds the entries parsed from one header value.
const maxAddresses = 10000

type addrParser struct {
	s       rfc822Scanner
	comment []byte
	str     []byte
	cur     Address
	// set tracks which of cur's fields are set (Dovecot's NULL vs "").
	hasName, hasMailbox, hasDomain bool
	list                           []Address
}

func parseAddressList(v []byte) []Address {
	p := &addrParser{}
	p.s = rfc822Scanner{data: v, comment: &p.comment, nulRepl: true}
	if p.s.skipLWSP() > 0 {
		p.parseList()
	}
	return p.list
}

func (p *addrParser) add() {
	if p.cur.Kind == AddrMailbox && !p.hasName {
		p.cur.Name = ""
	}
	p.list = append(p.list, p.cur)
	p.cur = Address{}
	p.hasName, p.hasMailbox, p.hasDomain = false, false, false
}

func (p *addrParser) setName(b []byte) {
	p.cur.Name, p.hasName = string(b), true
}

func (p *addrParser) setMailbox(b []byte) {
	p.cur.Mailbox, p.hasMailbox = string(b), true
}

func (p *addrParser) setDomain(s string) {
	p.cur.Host, p.hasDomain = s, true
}

// addFixed adds cur as an ordinary address, filling in placeholders.
func (p *addrParser) addFixed() {
	if !p.hasMailbox {
		p.setMailbox([]byte(MissingMailbox))
		p.cur.Invalid = true
	}
	if !p.hasDomain || p.cur.Host == "" {
		p.setDomain(MissingDomain)
		p.cur.Invalid = true
	}
	p.add()
}

// parseNonstrictDotAtom parses a local part that may have leading,
// trailing or repeated dots.
func (p *addrParser) parseNonstrictDotAtom() int {
	s := &p.s
	ret := -1
	for {
		for s.peek() == '.' {
			p.str = append(p.str, '.')
			s.pos++
			if s.atEnd() {
				return 0 // @domain missing, local part ok
			}
			ret = 1
		}
		if s.peek() == '@' {
			break
		}
		ret = s.parseAtom(&p.str)
		if ret <= 0 || s.peek() != '.' {
			break
		}
	}
	return ret
}

func (p *addrParser) parseLocalPart() int {
	p.str = p.str[:0]
	var ret int
	if p.s.peek() == '"' {
		ret = p.s.parseQuotedString(&p.str)
	} else {
		ret = p.parseNonstrictDotAtom()
	}
	if ret < 0 {
		return -1
	}
	p.setMailbox(p.str)
	return ret
}

func (p *addrParser) parseDomain() int {
	p.str = p.str[:0]
	ret := p.s.parseDomain(&p.str)
	if ret < 0 {
		return -1
	}
	p.setDomain(string(p.str))
	return ret
}

// parseDomainList parses an obs-domain-list ("@a,@b") into cur.Route.
func (p *addrParser) parseDomainList() int {
	s := &p.s
	p.str = p.str[:0]
	for {
		if s.atEnd() {
			return 0
		}
		if s.data[s.pos] != '@' {
			break
		}
		if len(p.str) > 0 {
			p.str = append(p.str, ',')
		}
		p.str = append(p.str, '@')
		if ret := s.parseDomain(&p.str); ret <= 0 {
			return ret
		}
		for s.skipLWSP() > 0 && s.data[s.pos] == ',' {
			s.pos++
		}
	}
	p.cur.Route = string(p.str)
	return 1
}

// parseAngleAddr parses "<" [route ":"] addr-spec ">".
func (p *addrParser) parseAngleAddr() int {
	s := &p.s
	s.pos++ // '<'
	if s.skipLWSP() <= 0 {
		return -1
	}
	if s.data[s.pos] == '@' {
		if p.parseDomainList() > 0 && s.peek() == ':' {
			s.pos++
		} else {
			p.cur.Route = InvalidRoute
			p.cur.Invalid = true
			if s.atEnd() {
				return -1
			}
		}
		if s.skipLWSP() <= 0 {
			return -1
		}
	}
	if s.data[s.pos] != '>' { // "<>" is not a valid address
		if p.parseLocalPart() <= 0 {
			return -1
		}
		if s.data[s.pos] == '@' {
			if p.parseDomain() <= 0 {
				return -1
			}
		}
	}
	if s.peek() != '>' {
		return -1
	}
	s.pos++
	return s.skipLWSP()
}

func (p *addrParser) parseNameAddr() int {
	s := &p.s
	p.str = p.str[:0]
	if s.parsePhrase(&p.str) <= 0 || s.data[s.pos] != '<' {
		return -1
	}
	if len(p.str) > 0 { // "<addr>" has no display name
		p.setName(p.str)
	}
	if p.parseAngleAddr() < 0 {
		p.setDomain(SyntaxError)
		p.cur.Invalid = true
	}
	return s.more()
}

func (p *addrParser) parseAddrSpec() int {
	s := &p.s
	p.comment = p.comment[:0]
	quoted := s.peek() == '"'
	ret, ret2 := p.parseLocalPart(), -2
	if ret <= 0 {
		p.cur.Invalid = true
	}
	if ret != 0 && s.peek() == '@' && !s.atEnd() {
		ret2 = p.parseDomain()
		if ret2 <= 0 {
			ret = ret2
		}
	}
	if len(p.comment) > 0 {
		p.setName(p.comment)
	} else if ret2 == -2 {
		// "user" without @domain: a mailbox if alone, otherwise the
		// start of a display name.
		p.str = append(p.str, ' ')
		n := len(p.str)
		s.parsePhrase(&p.str)
		if len(p.str) != n {
			p.cur.Mailbox, p.hasMailbox = "", false
			p.setName(p.str)
		} else if !quoted {
			p.setDomain("")
		}
		p.cur.Invalid = true
		ret = -1
	}
	return ret
}

func (p *addrParser) parseMailbox() int {
	start := p.s.pos
	ret := p.parseNameAddr()
	if ret < 0 {
		p.s.pos = start
		ret = p.parseAddrSpec()
		if p.cur.Invalid && !p.hasName && p.hasMailbox && !p.hasDomain {
			p.setName([]byte(p.cur.Mailbox))
			p.cur.Mailbox, p.hasMailbox = "", false
		}
	}
	if ret < 0 {
		p.cur.Invalid = true
	}
	p.addFixed()
	return ret
}

func (p *addrParser) parseGroup() int {
	s := &p.s
	p.str = p.str[:0]
	if s.parsePhrase(&p.str) <= 0 || s.data[s.pos] != ':' {
		return -1
	}
	// From now on this is a group, whatever follows.
	s.pos++
	ret := s.skipLWSP()
	invalid := ret <= 0
	p.cur = Address{Kind: AddrGroupStart, Mailbox: string(p.str), Invalid: invalid}
	p.add()
	if ret > 0 && s.data[s.pos] != ';' {
		for len(p.list) < maxAddresses {
			p.parseMailbox()
			if s.atEnd() || s.data[s.pos] != ',' {
				break
			}
			s.pos++
			if s.skipLWSP() <= 0 {
				ret = -1
				break
			}
		}
	}
	if ret >= 0 {
		if s.atEnd() || s.data[s.pos] != ';' {
			ret = -1
		} else {
			s.pos++
			ret = s.skipLWSP()
		}
	}
	p.cur = Address{Kind: AddrGroupEnd, Invalid: ret < 0}
	p.add()
	if ret == 0 {
		return 0
	}
	return 1
}

func (p *addrParser) parseAddress() int {
	start := p.s.pos
	ret := p.parseGroup()
	if ret < 0 {
		p.s.pos = start
		p.cur = Address{}
		ret = p.parseMailbox()
	}
	return ret
}

func (p *addrParser) parseList() {
	s := &p.s
	for len(p.list) < maxAddresses {
		if p.parseAddress() == 0 {
			break
		}
		if s.atEnd() || s.data[s.pos] != ',' {
			break
		}
		s.pos++
		if ret := s.skipLWSP(); ret <= 0 {
			if ret < 0 {
				// ends with garbage
				p.addFixed()
			}
			break
		}
	}
}
