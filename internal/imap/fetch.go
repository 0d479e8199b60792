package imap

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/letterbox/letterbox/internal/imap/render"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/message"
)

type fetchKind uint8

const (
	fetchFlags fetchKind = iota
	fetchInternalDate
	fetchSize
	fetchUID
	fetchModSeq
	fetchSaveDate
	fetchEnvelope
	fetchBody          // BODY: structure without extension data
	fetchBodyStructure // BODYSTRUCTURE
	fetchSection       // BODY[...], BINARY[...], RFC822, RFC822.HEADER/TEXT
	fetchBinarySize
)

// fetchItem is one fetch attribute (RFC 9051 §6.4.5).
type fetchItem struct {
	kind fetchKind
	// name is the response item name for sections: "BODY", "BINARY",
	// "RFC822", "RFC822.HEADER" or "RFC822.TEXT".
	name    string
	spec    render.SectionSpec
	peek    bool
	partial bool
	origin  int64
	count   int64
}

func (it fetchItem) needsStructure() bool {
	return it.kind == fetchEnvelope || it.kind == fetchBody || it.kind == fetchBodyStructure ||
		it.kind == fetchSection || it.kind == fetchBinarySize
}

// parseFetchAtts reads the fetch attributes: a macro, one attribute or a
// parenthesised list.
func (p *parser) parseFetchAtts() ([]fetchItem, error) {
	if p.peek() == '(' {
		var items []fetchItem
		err := p.list(false, func() error {
			it, err := p.fetchAtt()
			items = append(items, it...)
			return err
		})
		return items, err
	}
	return p.fetchAtt()
}

func (p *parser) fetchAtt() ([]fetchItem, error) {
	name, err := p.atomWith(func(c byte) bool { return isAtomChar(c) && c != '[' && c != '<' })
	if err != nil {
		return nil, syntaxErr("expected fetch attribute")
	}
	name = upper(name)
	simple := func(k fetchKind) ([]fetchItem, error) { return []fetchItem{{kind: k}}, nil }
	switch name {
	case "ALL":
		return []fetchItem{{kind: fetchFlags}, {kind: fetchInternalDate}, {kind: fetchSize}, {kind: fetchEnvelope}}, nil
	case "FAST":
		return []fetchItem{{kind: fetchFlags}, {kind: fetchInternalDate}, {kind: fetchSize}}, nil
	case "FULL":
		return []fetchItem{{kind: fetchFlags}, {kind: fetchInternalDate}, {kind: fetchSize}, {kind: fetchEnvelope}, {kind: fetchBody}}, nil
	case "FLAGS":
		return simple(fetchFlags)
	case "INTERNALDATE":
		return simple(fetchInternalDate)
	case "RFC822.SIZE":
		return simple(fetchSize)
	case "UID":
		return simple(fetchUID)
	case "MODSEQ":
		return simple(fetchModSeq)
	case "SAVEDATE":
		return simple(fetchSaveDate)
	case "ENVELOPE":
		return simple(fetchEnvelope)
	case "BODYSTRUCTURE":
		return simple(fetchBodyStructure)
	case "RFC822":
		return []fetchItem{{kind: fetchSection, name: "RFC822"}}, nil
	case "RFC822.HEADER":
		return []fetchItem{{kind: fetchSection, name: "RFC822.HEADER", peek: true, spec: render.SectionSpec{Specifier: render.SpecHeader}}}, nil
	case "RFC822.TEXT":
		return []fetchItem{{kind: fetchSection, name: "RFC822.TEXT", spec: render.SectionSpec{Specifier: render.SpecText}}}, nil
	case "BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE":
	default:
		return nil, syntaxErr("unknown fetch attribute %q", name)
	}
	if p.peek() != '[' {
		if name == "BODY" {
			return simple(fetchBody)
		}
		return nil, syntaxErr("expected section")
	}
	it := fetchItem{kind: fetchSection, name: strings.TrimSuffix(name, ".PEEK"), peek: strings.HasSuffix(name, ".PEEK")}
	binary := strings.HasPrefix(name, "BINARY")
	if name == "BINARY.SIZE" {
		it.kind = fetchBinarySize
	}
	if it.spec, err = p.section(binary); err != nil {
		return nil, err
	}
	if p.peek() == '<' && it.kind == fetchSection {
		p.pos++
		o, err := p.number(32)
		if err != nil {
			return nil, err
		}
		if err := p.expect('.'); err != nil {
			return nil, err
		}
		n, err := p.number(32)
		if err != nil || n == 0 {
			return nil, syntaxErr("bad partial count")
		}
		if err := p.expect('>'); err != nil {
			return nil, err
		}
		it.partial, it.origin, it.count = true, int64(o), int64(n)
	}
	return []fetchItem{it}, nil
}

// section parses "[" section-spec "]" (RFC 9051 §9 section, section-binary).
func (p *parser) section(binary bool) (render.SectionSpec, error) {
	spec := render.SectionSpec{Binary: binary}
	if err := p.expect('['); err != nil {
		return spec, err
	}
	for p.peek() >= '0' && p.peek() <= '9' {
		n, err := p.number(32)
		if err != nil || n == 0 {
			return spec, syntaxErr("bad part number")
		}
		spec.Part = append(spec.Part, int(n))
		if len(spec.Part) > 100 {
			return spec, syntaxErr("part number too deep")
		}
		if !p.consume('.') {
			break
		}
	}
	if p.peek() != ']' {
		if binary {
			return spec, syntaxErr("BINARY takes a part number only")
		}
		sp, err := p.atomWith(func(c byte) bool { return isAtomChar(c) })
		if err != nil {
			return spec, syntaxErr("bad section")
		}
		spec.Specifier = upper(sp)
		switch spec.Specifier {
		case render.SpecHeader, render.SpecText:
		case render.SpecMIME:
			if len(spec.Part) == 0 {
				return spec, syntaxErr("MIME needs a part number")
			}
		case render.SpecHeaderFields, render.SpecHeaderFieldsNot:
			if err := p.sp(); err != nil {
				return spec, err
			}
			err := p.list(false, func() error {
				f, err := p.astring()
				spec.Fields = append(spec.Fields, f)
				return err
			})
			if err != nil {
				return spec, err
			}
		default:
			return spec, syntaxErr("bad section specifier")
		}
	}
	if err := p.expect(']'); err != nil {
		return spec, err
	}
	return spec, nil
}

// cmdFetch answers FETCH and UID FETCH, with the CONDSTORE modifier
// CHANGEDSINCE (RFC 7162 §3.1.4).
func (s *session) cmdFetch(c command) error {
	if err := s.p.sp(); err != nil {
		return err
	}
	set, err := s.p.seqSet()
	if err != nil {
		return err
	}
	if err := s.p.sp(); err != nil {
		return err
	}
	items, err := s.p.parseFetchAtts()
	if err != nil {
		return err
	}
	var changedSince uint64
	vanished := false
	if s.p.consume(' ') {
		err := s.p.list(false, func() error {
			a, err := s.p.atom()
			if err != nil {
				return syntaxErr("unknown FETCH modifier")
			}
			switch upper(a) {
			case "CHANGEDSINCE":
				if err := s.p.sp(); err != nil {
					return err
				}
				changedSince, err = s.p.number(63)
				return err
			case "VANISHED":
				vanished = true
				return nil
			}
			return syntaxErr("unknown FETCH modifier")
		})
		if err != nil {
			return err
		}
	}
	// RFC 7162 §3.2.6: VANISHED needs UID FETCH, CHANGEDSINCE and an
	// enabled QRESYNC.
	if vanished && (!c.uid || changedSince == 0 || !s.qresync) {
		return syntaxErr("VANISHED needs UID FETCH with CHANGEDSINCE and QRESYNC enabled")
	}
	if err := s.p.end(); err != nil {
		return err
	}
	seqs, ok := s.resolveSet(set, c.uid)
	if !ok {
		return syntaxErr("invalid message sequence number")
	}
	if changedSince > 0 && !hasKind(items, fetchModSeq) {
		items = append(items, fetchItem{kind: fetchModSeq})
	}
	if hasKind(items, fetchModSeq) {
		s.condstore = true // RFC 7162 §3.1: MODSEQ enables CONDSTORE
	}
	if c.uid && !hasKind(items, fetchUID) {
		items = append([]fetchItem{{kind: fetchUID}}, items...)
	}
	if vanished {
		gone, err := s.srv.Store.Vanished(s.srv.ctx, s.sel.mb.ID, changedSince)
		if err != nil {
			return s.storeFailed(c.tag, err)
		}
		var in []mailstore.UID
		for _, u := range gone {
			if set.containsUID(u, s.sel.uids) {
				in = append(in, u)
			}
		}
		if len(in) > 0 {
			s.untagged("VANISHED (EARLIER) %s", formatUIDSet(in))
		}
	}
	if err := s.fetch(c, seqs, items, changedSince); err != nil {
		return err
	}
	return nil
}

func hasKind(items []fetchItem, k fetchKind) bool {
	return slices.ContainsFunc(items, func(it fetchItem) bool { return it.kind == k })
}

// lookupMessages returns the store's records of the view's messages with
// the given sequence numbers (nil entries for messages expunged meanwhile).
// It reads only those messages: their UIDs go to the store as ranges of
// runs of consecutive view entries (mailstore.UIDRanges), so "1:*" is one
// index range scan and "7" one point lookup, whatever the mailbox size.
func (s *session) lookupMessages(seqs []uint32) ([]*mailstore.Message, error) {
	uids := make([]mailstore.UID, len(seqs))
	for i, n := range seqs {
		uids[i] = s.sel.uids[n-1]
	}
	sorted := uids
	if !slices.IsSorted(sorted) {
		sorted = slices.Clone(uids)
		slices.Sort(sorted)
		sorted = slices.Compact(sorted)
	}
	found, err := s.srv.Store.MessagesInRanges(s.srv.ctx, s.sel.mb.ID, mailstore.UIDRanges(sorted, s.sel.uids))
	if err != nil {
		return nil, err
	}
	out := make([]*mailstore.Message, len(seqs))
	for i, uid := range uids {
		if j, ok := slices.BinarySearchFunc(found, uid, func(m mailstore.Message, u mailstore.UID) int {
			return cmp.Compare(m.UID, u)
		}); ok {
			out[i] = &found[j]
		}
	}
	return out, nil
}

const dateLayout = "02-Jan-2006 15:04:05 -0700"

// fetchBatch is how many messages FETCH reads from the store at a time:
// a FETCH 1:* over 100,000 messages holds one chunk's records and
// structures in memory, never the whole mailbox's.
const fetchBatch = 256

func (s *session) fetch(c command, seqs []uint32, items []fetchItem, changedSince uint64) error {
	// Fetching a body section without PEEK sets \Seen (RFC 9051 §6.4.5);
	// the new flags are reported in the same FETCH response.
	setSeen := false
	structure := false
	for _, it := range items {
		if it.kind == fetchSection && !it.peek {
			setSeen = true
		}
		structure = structure || it.needsStructure()
	}
	setSeen = setSeen && !s.sel.readOnly
	s.auditFetch(items, seqs, changedSince)
	var failure error
	for len(seqs) > 0 {
		chunk := seqs[:min(fetchBatch, len(seqs))]
		seqs = seqs[len(chunk):]
		err := s.fetchChunk(chunk, items, changedSince, setSeen, structure)
		var w writeError
		if errors.As(err, &w) {
			return w.err
		}
		var sf storeFailure
		if errors.As(err, &sf) {
			// The responses already written stand; the command fails.
			return s.storeFailed(c.tag, sf.err)
		}
		if err != nil {
			failure = err
		}
	}
	// No EXPUNGE after FETCH by sequence number (RFC 9051 §7.5.1).
	s.update(c.uid)
	if failure != nil {
		switch {
		case errors.Is(failure, render.ErrUnknownCTE):
			s.no(c.tag, "[UNKNOWN-CTE] unknown Content-Transfer-Encoding")
		case errors.Is(failure, render.ErrParse):
			s.no(c.tag, "[PARSE] cannot decode message part")
		default:
			s.log.Error("fetch failed", "err", failure)
			s.no(c.tag, "[SERVERBUG] some messages could not be fetched")
		}
		return nil
	}
	s.ok(c.tag, "FETCH completed")
	return nil
}

// storeFailure marks a store error in the middle of a FETCH: the command
// fails with the store's error.
type storeFailure struct{ err error }

func (e storeFailure) Error() string { return e.err.Error() }

// fetchChunk answers FETCH for some of the command's messages: one read of
// their records, one of their structures (if an item needs them), one
// flag update for \Seen. It returns a writeError or storeFailure that ends
// the command, or the last per-message failure.
func (s *session) fetchChunk(seqs []uint32, items []fetchItem, changedSince uint64, setSeen, structure bool) error {
	msgs, err := s.lookupMessages(seqs)
	if err != nil {
		return storeFailure{err}
	}
	var seenNow map[mailstore.UID]bool
	if setSeen {
		var unseen []mailstore.UID
		for _, m := range msgs {
			if m != nil && !m.HasFlag(mailstore.FlagSeen) && m.ModSeq > changedSince {
				unseen = append(unseen, m.UID)
			}
		}
		if len(unseen) > 0 {
			changed, _, err := s.srv.Store.StoreFlags(s.srv.ctx, s.sel.mb.ID, unseen, mailstore.FlagsAdd,
				[]string{mailstore.FlagSeen}, 0)
			if err != nil {
				return storeFailure{err}
			}
			byUID := map[mailstore.UID]mailstore.Message{}
			for _, m := range changed {
				byUID[m.UID] = m
				s.sel.reported[m.UID] = m.ModSeq
			}
			seenNow = map[mailstore.UID]bool{}
			for _, m := range msgs {
				if m == nil {
					continue
				}
				if n, ok := byUID[m.UID]; ok {
					m.Flags, m.ModSeq = n.Flags, n.ModSeq
					seenNow[m.UID] = true
				}
			}
		}
	}
	var structs map[mailstore.UID]*message.Part
	if structure {
		var want []mailstore.UID
		for _, m := range msgs {
			if m != nil && m.ModSeq > changedSince {
				want = append(want, m.UID)
			}
		}
		slices.Sort(want)
		if structs, err = s.srv.Store.Structures(s.srv.ctx, s.sel.mb.ID, slices.Compact(want)); err != nil {
			return storeFailure{err}
		}
	}
	var failure error
	for i, m := range msgs {
		if m == nil {
			s.leftOut(s.sel.uids[seqs[i]-1])
			continue
		}
		if m.ModSeq <= changedSince {
			continue
		}
		var root *message.Part
		if structure {
			if root = structs[m.UID]; root == nil {
				s.leftOut(m.UID) // expunged since the records were read
				continue
			}
		}
		if err := s.fetchOne(seqs[i], m, items, root, seenNow[m.UID]); err != nil {
			var w writeError
			if errors.As(err, &w) {
				return w
			}
			failure = err
		}
	}
	return failure
}

// leftOut records that this FETCH has no response for uid, which the
// store no longer has (another session expunged it; the EXPUNGE comes in
// a later update). A flag change of that message still queued must then
// not be reported at the end of this command: a client takes a FETCH
// naming a UID it asked for as the answer to its command (go-imap v2 does,
// and returns the message without the data it asked for; found by the
// soak test, internal/server TestSoakFlagsOfExpungedMessage).
func (s *session) leftOut(uid mailstore.UID) {
	if s.gone == nil {
		s.gone = map[mailstore.UID]bool{}
	}
	s.gone[uid] = true
}

// writeError marks a failure to write to the client: the session ends.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }

// sectionData is a prepared section to stream.
type sectionData struct {
	r    io.ReaderAt
	size int64
}

// fetchOne writes the FETCH response of one message. Everything that can
// fail for reasons of the message (its structure, BINARY decoding) is
// prepared before the first byte is written, so a failing message is left
// out whole.
func (s *session) fetchOne(seq uint32, m *mailstore.Message, items []fetchItem, root *message.Part, seen bool) error {
	var blob mailstore.Blob
	data := make([]sectionData, len(items))
	binSizes := make([]int64, len(items))
	for i, it := range items {
		switch it.kind {
		case fetchSection:
			if blob == nil {
				var err error
				if blob, err = s.srv.Store.OpenBlob(s.srv.ctx, m.BlobID); err != nil {
					return err
				}
				defer blob.Close()
			}
			r, n, err := render.Section(root, blob, m.Size, it.spec)
			if err != nil {
				return err
			}
			if it.partial {
				r, n = render.Partial(r, n, it.origin, it.count)
			}
			data[i] = sectionData{r, n}
		case fetchBinarySize:
			n, err := render.BinarySize(root, nil, m.Size, it.spec.Part)
			if err != nil {
				return err
			}
			binSizes[i] = n
		}
	}
	w := s.bw
	fmt.Fprintf(w, "* %d FETCH (", seq)
	first := true
	sep := func() {
		if !first {
			w.WriteByte(' ')
		}
		first = false
	}
	flagsDone := false
	for i, it := range items {
		sep()
		switch it.kind {
		case fetchFlags:
			w.WriteString("FLAGS (" + strings.Join(m.Flags, " ") + ")")
			flagsDone = true
		case fetchInternalDate:
			w.WriteString(`INTERNALDATE "` + m.InternalDate.Format(dateLayout) + `"`)
		case fetchSize:
			w.WriteString("RFC822.SIZE " + strconv.FormatInt(m.Size, 10))
		case fetchUID:
			w.WriteString("UID " + strconv.FormatUint(uint64(m.UID), 10))
		case fetchModSeq:
			w.WriteString("MODSEQ (" + strconv.FormatUint(m.ModSeq, 10) + ")")
		case fetchSaveDate:
			if m.SaveDate.IsZero() {
				w.WriteString("SAVEDATE NIL")
			} else {
				w.WriteString(`SAVEDATE "` + m.SaveDate.Format(dateLayout) + `"`)
			}
		case fetchEnvelope:
			w.WriteString("ENVELOPE ")
			render.Envelope(w, root.Envelope)
		case fetchBody:
			w.WriteString("BODY ")
			render.BodyStructure(w, root, false)
		case fetchBodyStructure:
			w.WriteString("BODYSTRUCTURE ")
			render.BodyStructure(w, root, true)
		case fetchBinarySize:
			w.WriteString("BINARY.SIZE[" + it.spec.String() + "] " + strconv.FormatInt(binSizes[i], 10))
		case fetchSection:
			if strings.HasPrefix(it.name, "RFC822") {
				w.WriteString(it.name + " ")
			} else {
				w.WriteString(it.name + "[" + it.spec.String() + "]")
				if it.partial {
					w.WriteString("<" + strconv.FormatInt(it.origin, 10) + ">")
				}
				w.WriteByte(' ')
			}
			d := data[i]
			if it.spec.Binary {
				render.Literal8(w, d.size)
			} else {
				render.Literal(w, d.size)
			}
			n, err := io.Copy(w, io.NewSectionReader(d.r, 0, d.size))
			if err != nil || n != d.size {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				// The announced literal cannot be completed: the
				// connection is unusable.
				return writeError{fmt.Errorf("streaming section: %w", err)}
			}
		}
	}
	if seen && !flagsDone {
		sep()
		w.WriteString("FLAGS (" + strings.Join(m.Flags, " ") + ")")
	}
	w.WriteString(")\r\n")
	return nil
}
