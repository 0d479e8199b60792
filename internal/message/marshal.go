package message

import (
	"encoding/binary"
	"errors"
)

// Encoding (all integers are varints, strings are a uvarint length plus
// bytes):
//
//	version=1
//	nParts nFields nParams nAddrs nLangs   (totals, for one allocation each)
//	part (pre-order):
//	  kind flags present
//	  offset headerSize bodySize bodyLines decodedSize   (signed varints)
//	  type subtype nParams {name value}
//	  [id] [description] [encoding] [md5] [location]      (if present)
//	  [disposition nDispParams {name value}]               (if present)
//	  [nLangs {tag}]                                       (if present)
//	  [envelope]                                           (if present)
//	  nFields {nameRef [name] offsetDelta size}
//	  nChildren {part}
//	envelope: present {date subject inReplyTo messageID (if present)}
//	          6 x nAddrs {kindAndInvalid name route mailbox host}
//
// Header field names are interned: nameRef 0 is followed by a new name that
// is appended to a table, nameRef n refers to the n-th table entry. Field
// offsets are stored relative to the end of the previous field (the
// part's offset for the first one).

const marshalVersion = 1

// presence bits
const (
	hasID = 1 << iota
	hasDescription
	hasEncoding
	hasMD5
	hasLocation
	hasDisposition
	hasLanguage
	hasEnvelope
)

// envelope presence bits
const (
	hasDate = 1 << iota
	hasSubject
	hasInReplyTo
	hasMessageID
)

// errCorrupt is returned by Unmarshal for input that Marshal did not
// produce.
var errCorrupt = errors.New("message: corrupt structure encoding")

type counts struct{ parts, fields, params, addrs, langs int }

func (c *counts) add(p *Part) {
	c.parts++
	c.fields += len(p.Header)
	c.params += len(p.Params) + len(p.DispositionParams)
	c.langs += len(p.Language)
	if e := p.Envelope; e != nil {
		c.addrs += len(e.From) + len(e.Sender) + len(e.ReplyTo) + len(e.To) + len(e.Cc) + len(e.Bcc)
	}
	for _, ch := range p.Children {
		c.add(ch)
	}
}

// Marshal encodes p for storage; Unmarshal restores it.
func (p *Part) Marshal() []byte {
	var c counts
	c.add(p)
	b := make([]byte, 0, 64+c.parts*48+c.fields*8)
	b = append(b, marshalVersion)
	for _, n := range []int{c.parts, c.fields, c.params, c.addrs, c.langs} {
		b = binary.AppendUvarint(b, uint64(n))
	}
	m := marshaler{b: b, names: map[string]int{}}
	m.part(p)
	return m.b
}

type marshaler struct {
	b     []byte
	names map[string]int
}

func (m *marshaler) uint(v uint64) { m.b = binary.AppendUvarint(m.b, v) }
func (m *marshaler) int(v int64)   { m.b = binary.AppendVarint(m.b, v) }
func (m *marshaler) str(s string) {
	m.uint(uint64(len(s)))
	m.b = append(m.b, s...)
}

func (m *marshaler) params(ps []Param) {
	m.uint(uint64(len(ps)))
	for _, x := range ps {
		m.str(x.Name)
		m.str(x.Value)
	}
}

func (m *marshaler) addrs(as []Address) {
	m.uint(uint64(len(as)))
	for _, a := range as {
		k := uint64(a.Kind) << 1
		if a.Invalid {
			k |= 1
		}
		m.uint(k)
		m.str(a.Name)
		m.str(a.Route)
		m.str(a.Mailbox)
		m.str(a.Host)
	}
}

func (m *marshaler) part(p *Part) {
	present := 0
	for i, ns := range []NString{p.ID, p.Description, p.Encoding, p.MD5, p.Location, p.Disposition} {
		if ns.Valid {
			present |= 1 << i
		}
	}
	if p.Language != nil {
		present |= hasLanguage
	}
	if p.Envelope != nil {
		present |= hasEnvelope
	}
	m.b = append(m.b, byte(p.Kind))
	m.uint(uint64(p.Flags))
	m.uint(uint64(present))
	m.int(p.Offset)
	m.int(p.HeaderSize)
	m.int(p.BodySize)
	m.int(p.BodyLines)
	m.int(p.DecodedSize)
	m.str(p.Type)
	m.str(p.Subtype)
	m.params(p.Params)
	for _, ns := range []NString{p.ID, p.Description, p.Encoding, p.MD5, p.Location} {
		if ns.Valid {
			m.str(ns.S)
		}
	}
	if p.Disposition.Valid {
		m.str(p.Disposition.S)
		m.params(p.DispositionParams)
	}
	if p.Language != nil {
		m.uint(uint64(len(p.Language)))
		for _, l := range p.Language {
			m.str(l)
		}
	}
	if e := p.Envelope; e != nil {
		ep := 0
		for i, ns := range []NString{e.Date, e.Subject, e.InReplyTo, e.MessageID} {
			if ns.Valid {
				ep |= 1 << i
			}
		}
		m.uint(uint64(ep))
		for _, ns := range []NString{e.Date, e.Subject, e.InReplyTo, e.MessageID} {
			if ns.Valid {
				m.str(ns.S)
			}
		}
		for _, l := range [][]Address{e.From, e.Sender, e.ReplyTo, e.To, e.Cc, e.Bcc} {
			m.addrs(l)
		}
	}
	m.uint(uint64(len(p.Header)))
	prev := p.Offset
	for _, f := range p.Header {
		if ref, ok := m.names[f.Name]; ok {
			m.uint(uint64(ref))
		} else {
			m.uint(0)
			m.str(f.Name)
			m.names[f.Name] = len(m.names) + 1
		}
		m.int(f.Offset - prev)
		m.int(f.Size)
		prev = f.Offset + f.Size
	}
	m.uint(uint64(len(p.Children)))
	for _, c := range p.Children {
		m.part(c)
	}
}

// Unmarshal decodes a Part encoded by Marshal. It never panics; corrupt
// input gives an error. The result does not reference b.
func Unmarshal(b []byte) (*Part, error) {
	if len(b) == 0 || b[0] != marshalVersion {
		return nil, errCorrupt
	}
	u := unmarshaler{b: b, s: string(b), pos: 1}
	// The totals size the allocations; each item takes at least minBytes
	// of the encoding, so corrupt totals cannot make us allocate more
	// than a small multiple of len(b).
	minBytes := [5]uint64{13, 3, 2, 5, 1} // part, field, param, address, language
	var n [5]int
	need := uint64(0)
	for i := range n {
		v := u.uint()
		if v > uint64(len(b)) {
			return nil, errCorrupt
		}
		n[i] = int(v)
		need += v * minBytes[i]
	}
	if n[0] == 0 || need > uint64(len(b)) {
		return nil, errCorrupt
	}
	u.parts = make([]Part, n[0])
	u.children = make([]*Part, n[0]-1)
	u.fields = make([]HeaderField, n[1])
	u.params = make([]Param, n[2])
	u.addrs = make([]Address, n[3])
	u.langs = make([]string, n[4])
	root := u.part(0)
	if u.err != nil || u.pos != len(b) {
		return nil, errCorrupt
	}
	return root, nil
}

type unmarshaler struct {
	b   []byte
	s   string // b as a string: strings are sliced from it without copies
	pos int
	err error

	parts    []Part
	children []*Part
	fields   []HeaderField
	params   []Param
	addrs    []Address
	langs    []string
	names    []string
}

func (u *unmarshaler) fail() {
	if u.err == nil {
		u.err = errCorrupt
	}
	u.pos = len(u.b)
}

func (u *unmarshaler) uint() uint64 {
	v, n := binary.Uvarint(u.b[u.pos:])
	if n <= 0 {
		u.fail()
		return 0
	}
	u.pos += n
	return v
}

func (u *unmarshaler) int() int64 {
	v, n := binary.Varint(u.b[u.pos:])
	if n <= 0 {
		u.fail()
		return 0
	}
	u.pos += n
	return v
}

func (u *unmarshaler) byte() byte {
	if u.pos >= len(u.b) {
		u.fail()
		return 0
	}
	c := u.b[u.pos]
	u.pos++
	return c
}

func (u *unmarshaler) str() string {
	n := u.uint()
	if n > uint64(len(u.b)-u.pos) {
		u.fail()
		return ""
	}
	s := u.s[u.pos : u.pos+int(n)]
	u.pos += int(n)
	return s
}

// count reads a count and checks it against the remaining pool size.
func (u *unmarshaler) count(avail int) int {
	n := u.uint()
	if n > uint64(avail) {
		u.fail()
		return 0
	}
	return int(n)
}

func (u *unmarshaler) paramList() []Param {
	n := u.count(len(u.params))
	if n == 0 {
		return nil
	}
	ps := u.params[:n:n]
	u.params = u.params[n:]
	for i := range ps {
		ps[i].Name = u.str()
		ps[i].Value = u.str()
	}
	return ps
}

func (u *unmarshaler) addrList() []Address {
	n := u.count(len(u.addrs))
	if n == 0 {
		return nil
	}
	as := u.addrs[:n:n]
	u.addrs = u.addrs[n:]
	for i := range as {
		k := u.uint()
		if k>>1 > uint64(AddrGroupEnd) {
			u.fail()
		}
		as[i] = Address{Kind: AddressKind(k >> 1), Invalid: k&1 != 0,
			Name: u.str(), Route: u.str(), Mailbox: u.str(), Host: u.str()}
	}
	return as
}

func (u *unmarshaler) part(depth int) *Part {
	if depth > 2*MaxDepth || len(u.parts) == 0 {
		u.fail()
		return nil
	}
	p := &u.parts[0]
	u.parts = u.parts[1:]
	kind := u.byte()
	if kind > byte(KindMessage) {
		u.fail()
	}
	p.Kind = Kind(kind)
	p.Flags = Flags(u.uint())
	present := u.uint()
	p.Offset = u.int()
	p.HeaderSize = u.int()
	p.BodySize = u.int()
	p.BodyLines = u.int()
	p.DecodedSize = u.int()
	p.Type = u.str()
	p.Subtype = u.str()
	p.Params = u.paramList()
	for i, ns := range []*NString{&p.ID, &p.Description, &p.Encoding, &p.MD5, &p.Location} {
		if present&(1<<i) != 0 {
			*ns = NS(u.str())
		}
	}
	if present&hasDisposition != 0 {
		p.Disposition = NS(u.str())
		p.DispositionParams = u.paramList()
	}
	if present&hasLanguage != 0 {
		n := u.count(len(u.langs))
		p.Language = u.langs[:n:n]
		u.langs = u.langs[n:]
		for i := range p.Language {
			p.Language[i] = u.str()
		}
	}
	if present&hasEnvelope != 0 {
		e := &Envelope{}
		ep := u.uint()
		for i, ns := range []*NString{&e.Date, &e.Subject, &e.InReplyTo, &e.MessageID} {
			if ep&(1<<i) != 0 {
				*ns = NS(u.str())
			}
		}
		for _, l := range []*[]Address{&e.From, &e.Sender, &e.ReplyTo, &e.To, &e.Cc, &e.Bcc} {
			*l = u.addrList()
		}
		p.Envelope = e
	}
	if n := u.count(len(u.fields)); n > 0 {
		p.Header = u.fields[:n:n]
		u.fields = u.fields[n:]
		prev := p.Offset
		for i := range p.Header {
			f := &p.Header[i]
			ref := u.uint()
			switch {
			case ref == 0:
				f.Name = u.str()
				u.names = append(u.names, f.Name)
			case ref <= uint64(len(u.names)):
				f.Name = u.names[ref-1]
			default:
				u.fail()
			}
			f.Offset = prev + u.int()
			f.Size = u.int()
			prev = f.Offset + f.Size
		}
	}
	if n := u.count(len(u.children)); n > 0 {
		p.Children = u.children[:n:n]
		u.children = u.children[n:]
		for i := range p.Children {
			p.Children[i] = u.part(depth + 1)
			if u.err != nil {
				return nil
			}
		}
	}
	if u.err != nil {
		return nil
	}
	return p
}
