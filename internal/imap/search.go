package imap

import (
	"errors"
	"fmt"
	"io"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/message"
)

// searchKey is one node of a parsed SEARCH program (RFC 9051 §6.4.4).
type searchKey struct {
	op    string // upper-cased key name; "AND" for a parenthesised list
	flag  string // flag keys: the flag; negated by not
	not   bool   // for flag keys: UN...
	set   seqSet
	num   uint64
	date  time.Time
	field string // HEADER field name, or FROM/TO/...
	value string
	kids  []*searchKey
	seqs  []uint32 // SEQSET and UID keys: the matching sequence numbers
}

// maxSearchDepth bounds the nesting of NOT/OR/parentheses.
const maxSearchDepth = 50

// maxSearchText is the default bound of how much decoded text of one
// message BODY/TEXT search looks at (Server.MaxSearchText); a SEARCH holds
// one message's text at a time.
const maxSearchText = 4 << 20

func (p *parser) searchKeys(depth int) ([]*searchKey, error) {
	var keys []*searchKey
	for {
		k, err := p.searchKey(depth)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
		if p.atEnd() || p.peek() == ')' {
			return keys, nil
		}
		if err := p.sp(); err != nil {
			return nil, err
		}
	}
}

func parseSearchDate(s string) (time.Time, error) {
	d, rest, ok := strings.Cut(s, "-")
	mon, year, ok2 := strings.Cut(rest, "-")
	if !ok || !ok2 || len(mon) != 3 {
		return time.Time{}, errors.New("bad date")
	}
	mon = strings.ToUpper(mon[:1]) + strings.ToLower(mon[1:])
	return time.Parse("2-Jan-2006", d+"-"+mon+"-"+year)
}

func (p *parser) searchKey(depth int) (*searchKey, error) {
	if depth > maxSearchDepth {
		return nil, syntaxErr("search program too deeply nested")
	}
	if p.peek() == '(' {
		p.pos++
		kids, err := p.searchKeys(depth + 1)
		if err != nil {
			return nil, err
		}
		if err := p.expect(')'); err != nil {
			return nil, err
		}
		return &searchKey{op: "AND", kids: kids}, nil
	}
	if c := p.peek(); (c >= '0' && c <= '9') || c == '*' || c == '$' {
		set, err := p.seqSet()
		if err != nil {
			return nil, err
		}
		return &searchKey{op: "SEQSET", set: set}, nil
	}
	name, err := p.atom()
	if err != nil {
		return nil, syntaxErr("expected search key")
	}
	k := &searchKey{op: upper(name)}
	arg := func() (string, error) {
		if err := p.sp(); err != nil {
			return "", err
		}
		return p.astring()
	}
	switch k.op {
	case "ALL", "NEW", "OLD", "RECENT", "SAVEDATESUPPORTED":
	case "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN":
		k.flag, k.op = `\`+k.op[:1]+strings.ToLower(k.op[1:]), "FLAG"
	case "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN":
		k.flag, k.not, k.op = `\`+k.op[2:3]+strings.ToLower(k.op[3:]), true, "FLAG"
	case "KEYWORD", "UNKEYWORD":
		k.not = k.op == "UNKEYWORD"
		k.op = "FLAG"
		if err := p.sp(); err != nil {
			return nil, err
		}
		if k.flag, err = p.atom(); err != nil {
			return nil, err
		}
	case "BCC", "CC", "FROM", "TO", "SUBJECT", "BODY", "TEXT":
		k.field = k.op
		if k.value, err = arg(); err != nil {
			return nil, err
		}
	case "HEADER":
		if k.field, err = arg(); err != nil {
			return nil, err
		}
		if k.value, err = arg(); err != nil {
			return nil, err
		}
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE":
		s, err := arg()
		if err != nil {
			return nil, err
		}
		if k.date, err = parseSearchDate(s); err != nil {
			return nil, syntaxErr("bad date")
		}
	case "LARGER", "SMALLER":
		if err := p.sp(); err != nil {
			return nil, err
		}
		if k.num, err = p.number(63); err != nil {
			return nil, err
		}
	case "UID":
		if err := p.sp(); err != nil {
			return nil, err
		}
		if k.set, err = p.seqSet(); err != nil {
			return nil, err
		}
	case "MODSEQ":
		// MODSEQ [entry-name entry-type-req] mod-sequence-valzer
		// (RFC 7162 §3.1.5); the entry is accepted and ignored.
		if err := p.sp(); err != nil {
			return nil, err
		}
		if p.peek() == '"' {
			if _, err := p.quoted(); err != nil {
				return nil, err
			}
			if err := p.sp(); err != nil {
				return nil, err
			}
			if _, err := p.atom(); err != nil {
				return nil, err
			}
			if err := p.sp(); err != nil {
				return nil, err
			}
		}
		if k.num, err = p.number(63); err != nil {
			return nil, err
		}
	case "NOT":
		if err := p.sp(); err != nil {
			return nil, err
		}
		kid, err := p.searchKey(depth + 1)
		if err != nil {
			return nil, err
		}
		k.kids = []*searchKey{kid}
	case "OR":
		for range 2 {
			if err := p.sp(); err != nil {
				return nil, err
			}
			kid, err := p.searchKey(depth + 1)
			if err != nil {
				return nil, err
			}
			k.kids = append(k.kids, kid)
		}
	default:
		return nil, syntaxErr("unknown search key %q", k.op)
	}
	return k, nil
}

// searchMsg is the evaluation context of one message; the structure and
// body are loaded only when a key needs them.
type searchMsg struct {
	s     *session
	batch *searchBatch
	seq   uint32
	m     *mailstore.Message
	root  *message.Part
	blob  mailstore.Blob
	hdr   []byte // the top-level header, read once for header keys
	err   error
	texts map[bool]string // decoded header (false) and body text (true)
}

// searchBatch loads the structures of one batch of messages with one
// store read, the first time a key of any of them needs one.
type searchBatch struct {
	s       *session
	uids    []mailstore.UID // ascending
	structs map[mailstore.UID]*message.Part
	err     error
	loaded  bool
}

func (b *searchBatch) structure(uid mailstore.UID) (*message.Part, error) {
	if !b.loaded {
		b.loaded = true
		b.structs, b.err = b.s.srv.Store.Structures(b.s.srv.ctx, b.s.sel.mb.ID, b.uids)
	}
	if b.err != nil {
		return nil, b.err
	}
	if p := b.structs[uid]; p != nil {
		return p, nil
	}
	return nil, mailstore.ErrNoSuchMessage
}

func (sm *searchMsg) load() bool {
	if sm.err != nil {
		return false
	}
	if sm.root == nil {
		if sm.batch != nil {
			sm.root, sm.err = sm.batch.structure(sm.m.UID)
		} else {
			sm.root, sm.err = sm.s.srv.Store.Structure(sm.s.srv.ctx, sm.s.sel.mb.ID, sm.m.UID)
		}
		if sm.err != nil {
			return false
		}
		if sm.blob, sm.err = sm.s.srv.Store.OpenBlob(sm.s.srv.ctx, sm.m.BlobID); sm.err != nil {
			return false
		}
	}
	return true
}

// maxSearchHeader bounds the top-level header read at once for header
// keys; fields beyond it are read one by one.
const maxSearchHeader = 256 << 10

// field returns the raw bytes of header field h (at most maxLine).
func (sm *searchMsg) field(h message.HeaderField) []byte {
	if sm.hdr == nil {
		n := min(sm.root.Offset+sm.root.HeaderSize, maxSearchHeader)
		sm.hdr = make([]byte, n)
		if k, err := sm.blob.ReadAt(sm.hdr, 0); err != nil && !errors.Is(err, io.EOF) {
			sm.hdr = sm.hdr[:0]
		} else {
			sm.hdr = sm.hdr[:k]
		}
	}
	size := min(h.Size, maxLine)
	if h.Offset >= 0 && h.Offset+size <= int64(len(sm.hdr)) {
		return sm.hdr[h.Offset : h.Offset+size]
	}
	b := make([]byte, size)
	k, _ := sm.blob.ReadAt(b, h.Offset)
	return b[:k]
}

func (sm *searchMsg) close() {
	if sm.blob != nil {
		sm.blob.Close()
	}
}

// headerValues returns the decoded values of the named header fields of
// the message (all fields for name "").
func (sm *searchMsg) headerValues(name string) []string {
	if !sm.load() {
		return nil
	}
	var out []string
	for _, h := range sm.root.Header {
		if name != "" && !strings.EqualFold(h.Name, name) {
			continue
		}
		v := string(sm.field(h))
		if i := strings.IndexByte(v, ':'); i >= 0 {
			if name != "" {
				v = v[i+1:]
			}
		}
		out = append(out, message.DecodeHeader(strings.TrimSpace(v)))
	}
	return out
}

// bodyText returns the decoded text of the message's text parts.
func (sm *searchMsg) bodyText() string {
	if t, ok := sm.texts[true]; ok {
		return t
	}
	if !sm.load() {
		return ""
	}
	var b strings.Builder
	left := sm.s.srv.maxSearchText()
	sm.root.Walk(func(p *message.Part) bool {
		if left <= 0 {
			return false
		}
		if len(p.Children) > 0 || !(p.IsText() || p == sm.root) {
			return true
		}
		r, err := message.NewDecoder(p.Encoding.S, io.NewSectionReader(sm.blob, p.BodyOffset(), p.BodySize))
		if err != nil {
			r = io.NewSectionReader(sm.blob, p.BodyOffset(), p.BodySize)
		}
		raw, _ := io.ReadAll(io.LimitReader(r, left))
		left -= int64(len(raw))
		cs, _ := p.Param("charset")
		b.WriteString(message.DecodeCharsetLenient(cs, raw))
		b.WriteByte('\n')
		return true
	})
	if sm.texts == nil {
		sm.texts = map[bool]string{}
	}
	sm.texts[true] = b.String()
	return sm.texts[true]
}

func containsFold(hay, needle string) bool {
	return strings.Contains(strings.ToLower(hay), strings.ToLower(needle))
}

func anyContains(vals []string, needle string) bool {
	for _, v := range vals {
		if containsFold(v, needle) {
			return true
		}
	}
	return false
}

func sameDay(a, b time.Time) int {
	ay, am, ad := a.Date()
	x := time.Date(ay, am, ad, 0, 0, 0, 0, time.UTC)
	return x.Compare(b)
}

func (sm *searchMsg) sentDate() time.Time {
	if sm.load() && sm.root.Envelope != nil && sm.root.Envelope.Date.Valid {
		if t, err := mail.ParseDate(sm.root.Envelope.Date.S); err == nil {
			return t
		}
	}
	return sm.m.InternalDate
}

func (s *session) match(k *searchKey, sm *searchMsg, byUID bool) bool {
	m := sm.m
	switch k.op {
	case "ALL", "OLD", "SAVEDATESUPPORTED":
		return true
	case "NEW", "RECENT":
		return false // \Recent is not implemented
	case "AND":
		for _, kid := range k.kids {
			if !s.match(kid, sm, byUID) {
				return false
			}
		}
		return true
	case "NOT":
		return !s.match(k.kids[0], sm, byUID)
	case "OR":
		return s.match(k.kids[0], sm, byUID) || s.match(k.kids[1], sm, byUID)
	case "FLAG":
		return m.HasFlag(k.flag) != k.not
	case "SEQSET", "UID":
		_, ok := slices.BinarySearch(k.seqs, sm.seq)
		return ok
	case "LARGER":
		return uint64(m.Size) > k.num
	case "SMALLER":
		return uint64(m.Size) < k.num
	case "MODSEQ":
		return m.ModSeq >= k.num
	case "BEFORE":
		return sameDay(m.InternalDate, k.date) < 0
	case "ON":
		return sameDay(m.InternalDate, k.date) == 0
	case "SINCE":
		return sameDay(m.InternalDate, k.date) >= 0
	case "SAVEDBEFORE":
		return sameDay(m.SaveDate, k.date) < 0
	case "SAVEDON":
		return sameDay(m.SaveDate, k.date) == 0
	case "SAVEDSINCE":
		return sameDay(m.SaveDate, k.date) >= 0
	case "SENTBEFORE":
		return sameDay(sm.sentDate(), k.date) < 0
	case "SENTON":
		return sameDay(sm.sentDate(), k.date) == 0
	case "SENTSINCE":
		return sameDay(sm.sentDate(), k.date) >= 0
	case "BCC", "CC", "FROM", "TO", "SUBJECT":
		return anyContains(sm.headerValues(k.field), k.value)
	case "HEADER":
		vals := sm.headerValues(k.field)
		if k.value == "" {
			return len(vals) > 0
		}
		return anyContains(vals, k.value)
	case "BODY":
		return containsFold(sm.bodyText(), k.value)
	case "TEXT":
		return anyContains(sm.headerValues(""), k.value) || containsFold(sm.bodyText(), k.value)
	}
	return false
}

// checkSets resolves every sequence set of the program once, instead of
// per message; it reports false for an invalid sequence number.
func (s *session) checkSets(k *searchKey) bool {
	if k.op == "SEQSET" || k.op == "UID" {
		seqs, ok := s.resolveSet(k.set, k.op == "UID")
		if !ok {
			return false
		}
		k.seqs = seqs
	}
	for _, kid := range k.kids {
		if !s.checkSets(kid) {
			return false
		}
	}
	return true
}

// candidates returns the ascending sequence numbers that can match k as
// far as its sequence-set and UID keys at the top level (or in nested
// parenthesised lists) say, or nil when they do not restrict it: only those
// messages are read from the store, so "UID SEARCH UID 5:9 ..." on a large
// mailbox does not read every message. checkSets must have run.
func candidates(k *searchKey) []uint32 {
	switch k.op {
	case "SEQSET", "UID":
		if k.seqs == nil {
			return []uint32{}
		}
		return k.seqs
	case "AND":
		var out []uint32
		restricted := false
		for _, kid := range k.kids {
			c := candidates(kid)
			if c == nil {
				continue
			}
			if !restricted {
				out, restricted = c, true
				continue
			}
			var both []uint32
			for _, n := range out {
				if _, ok := slices.BinarySearch(c, n); ok {
					both = append(both, n)
				}
			}
			if both == nil {
				both = []uint32{}
			}
			out = both
		}
		return out
	}
	return nil
}

func hasModSeq(k *searchKey) bool {
	if k.op == "MODSEQ" {
		return true
	}
	for _, kid := range k.kids {
		if hasModSeq(kid) {
			return true
		}
	}
	return false
}

// cmdSearch answers SEARCH and UID SEARCH, with ESEARCH return options MIN,
// MAX, COUNT and ALL (RFC 4731).
func (s *session) cmdSearch(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	var ret []string
	esearch := false
	if s.p.peek() == 'R' || s.p.peek() == 'r' {
		save := s.p.pos
		if a, err := s.p.atom(); err == nil && upper(a) == "RETURN" {
			esearch = true
			if err := s.p.sp(); err != nil {
				return err
			}
			err := s.p.list(true, func() error {
				o, err := s.p.atom()
				o = upper(o)
				if err == nil && o != "MIN" && o != "MAX" && o != "COUNT" && o != "ALL" && o != "SAVE" {
					return syntaxErr("unknown SEARCH return option")
				}
				ret = append(ret, o)
				return err
			})
			if err != nil {
				return err
			}
			if len(ret) == 0 {
				ret = []string{"ALL"}
			}
			if containsStr(ret, "SAVE") {
				// RFC 5182 §2.1: even a SEARCH that fails empties "$".
				s.sel.saved = nil
			}
			if err := s.p.sp(); err != nil {
				return err
			}
		} else {
			s.p.pos = save
		}
	}
	if s.p.peek() == 'C' || s.p.peek() == 'c' {
		save := s.p.pos
		if a, err := s.p.atom(); err == nil && upper(a) == "CHARSET" {
			if err := s.p.sp(); err != nil {
				return err
			}
			cs, err := s.p.astring()
			if err != nil {
				return err
			}
			if err := s.p.sp(); err != nil {
				return err
			}
			if u := upper(cs); u != "UTF-8" && u != "US-ASCII" {
				s.no(c.tag, "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
				s.p.pos = len(s.p.line)
				return nil
			}
		} else {
			s.p.pos = save
		}
	}
	if s.rev2 && !esearch {
		// RFC 9051 §6.4.4: a rev2 SEARCH always answers with ESEARCH.
		esearch, ret = true, []string{"ALL"}
	}
	keys, err := s.p.searchKeys(0)
	if err != nil {
		return err
	}
	if err := s.p.end(); err != nil {
		return err
	}
	save := containsStr(ret, "SAVE")
	prog := &searchKey{op: "AND", kids: keys}
	if !s.checkSets(prog) {
		return syntaxErr("invalid message sequence number")
	}
	modseq := hasModSeq(prog)
	if modseq {
		s.condstore = true
	}
	cand := candidates(prog)
	if cand == nil {
		cand = make([]uint32, len(s.sel.uids))
		for i := range cand {
			cand[i] = uint32(i + 1)
		}
	}
	var hits []uint64
	var maxMod uint64
	var savedUIDs []mailstore.UID
	// The messages' records are read fetchBatch at a time, like FETCH:
	// a SEARCH holds one batch, not the whole mailbox.
	for start := 0; start < len(cand); start += fetchBatch {
		chunk := cand[start:min(start+fetchBatch, len(cand))]
		msgs, err := s.lookupMessages(chunk)
		if err != nil {
			return s.storeFailed(c.tag, err)
		}
		batch := &searchBatch{s: s}
		for _, m := range msgs {
			if m != nil {
				batch.uids = append(batch.uids, m.UID)
			}
		}
		slices.Sort(batch.uids)
		batch.uids = slices.Compact(batch.uids)
		for i, m := range msgs {
			if m == nil {
				continue
			}
			seq := chunk[i]
			sm := &searchMsg{s: s, batch: batch, seq: seq, m: m}
			ok := s.match(prog, sm, c.uid)
			sm.close()
			if !ok {
				continue
			}
			if c.uid {
				hits = append(hits, uint64(m.UID))
			} else {
				hits = append(hits, uint64(seq))
			}
			maxMod = max(maxMod, m.ModSeq)
			savedUIDs = append(savedUIDs, m.UID)
		}
	}
	if save {
		// RFC 5182 §2.4: with MIN and/or MAX (and not ALL or COUNT),
		// only those messages are saved.
		minmax := (containsStr(ret, "MIN") || containsStr(ret, "MAX")) && !containsStr(ret, "ALL") && !containsStr(ret, "COUNT")
		for i, u := range savedUIDs {
			if !minmax || (i == 0 && containsStr(ret, "MIN")) || (i == len(savedUIDs)-1 && containsStr(ret, "MAX")) {
				s.sel.saved = append(s.sel.saved, u)
			}
		}
		if len(ret) == 1 {
			esearch = false // SAVE alone: no ESEARCH response (RFC 5182 §2.4)
		}
	}
	if save && !esearch {
		// nothing to report
	} else if esearch {
		fmt.Fprintf(s.bw, `* ESEARCH (TAG "%s")`, c.tag)
		if c.uid {
			s.bw.WriteString(" UID")
		}
		if len(hits) > 0 {
			for _, o := range ret {
				switch o {
				case "MIN":
					fmt.Fprintf(s.bw, " MIN %d", hits[0])
				case "MAX":
					fmt.Fprintf(s.bw, " MAX %d", hits[len(hits)-1])
				case "ALL":
					ids := make([]mailstore.UID, len(hits))
					for i, h := range hits {
						ids[i] = mailstore.UID(h)
					}
					s.bw.WriteString(" ALL " + formatUIDSet(ids))
				}
			}
		}
		if containsStr(ret, "COUNT") {
			fmt.Fprintf(s.bw, " COUNT %d", len(hits))
		}
		if modseq && len(hits) > 0 {
			fmt.Fprintf(s.bw, " MODSEQ %d", maxMod)
		}
		s.bw.WriteString("\r\n")
	} else {
		s.bw.WriteString("* SEARCH")
		for _, h := range hits {
			s.bw.WriteString(" " + strconv.FormatUint(h, 10))
		}
		if modseq && len(hits) > 0 {
			fmt.Fprintf(s.bw, " (MODSEQ %d)", maxMod)
		}
		s.bw.WriteString("\r\n")
	}
	s.update(c.uid)
	s.ok(c.tag, "SEARCH completed")
	return nil
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
