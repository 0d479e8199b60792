package imap

import (
	"slices"
	"strconv"
	"strings"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// seqRange is one element of a sequence set; 0 stands for "*".
type seqRange struct{ lo, hi uint32 }

// seqSet is a parsed sequence-set (RFC 9051 §9). It is resolved against the
// selected mailbox's view, as sequence numbers or as UIDs. save is "$"
// (SEARCHRES, RFC 5182).
type seqSet struct {
	ranges []seqRange
	dollar bool
}

// seqSet parses a sequence set at the parser's position.
func (p *parser) seqSet() (seqSet, error) {
	var s seqSet
	if p.consume('$') {
		s.dollar = true
		return s, nil
	}
	for {
		lo, err := p.seqNumber()
		if err != nil {
			return s, err
		}
		hi := lo
		if p.consume(':') {
			if hi, err = p.seqNumber(); err != nil {
				return s, err
			}
		}
		s.ranges = append(s.ranges, seqRange{lo, hi})
		if len(s.ranges) > 100000 {
			return s, syntaxErr("sequence set too long")
		}
		if !p.consume(',') {
			return s, nil
		}
	}
}

func (p *parser) seqNumber() (uint32, error) {
	if p.consume('*') {
		return 0, nil
	}
	n, err := p.number(32)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, syntaxErr("zero is not a valid sequence number")
	}
	return uint32(n), nil
}

// resolve returns the ascending, deduplicated sequence numbers (1-based) of
// the view's messages that the set names. As sequence numbers, a number
// larger than the view is an error (RFC 9051 §9 seq-number: "invalid
// message sequence number"); as UIDs, non-existent UIDs are ignored
// (RFC 9051 §6.4.9).
func (s seqSet) resolve(uids []mailstore.UID, byUID bool) ([]uint32, bool) {
	var out []uint32
	n := uint32(len(uids))
	for _, r := range s.ranges {
		lo, hi := r.lo, r.hi
		if byUID {
			var max uint32
			if n > 0 {
				max = uint32(uids[n-1])
			}
			if lo == 0 {
				lo = max
			}
			if hi == 0 {
				hi = max
			}
			if lo > hi {
				lo, hi = hi, lo
			}
			if n == 0 || lo == 0 {
				continue
			}
			i, _ := slices.BinarySearch(uids, mailstore.UID(lo))
			for ; i < len(uids) && uint32(uids[i]) <= hi; i++ {
				out = append(out, uint32(i+1))
			}
			continue
		}
		if lo == 0 {
			lo = n
		}
		if hi == 0 {
			hi = n
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if lo == 0 || hi > n {
			return nil, false
		}
		for i := lo; i <= hi; i++ {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), true
}

// containsUID reports whether uid (which need not exist any more) is in
// the set read as UIDs; "*" is the highest UID of the view.
func (s seqSet) containsUID(uid mailstore.UID, uids []mailstore.UID) bool {
	var star uint32
	if len(uids) > 0 {
		star = uint32(uids[len(uids)-1])
	}
	for _, r := range s.ranges {
		lo, hi := r.lo, r.hi
		if lo == 0 {
			lo = star
		}
		if hi == 0 {
			hi = star
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if uint32(uid) >= lo && uint32(uid) <= hi {
			return true
		}
	}
	return false
}

// resolveSet resolves a set against the selected mailbox; "$" is the saved
// search result (SEARCHRES, RFC 5182 §2.1), whose messages that were expunged
// meanwhile are left out.
func (s *session) resolveSet(set seqSet, byUID bool) ([]uint32, bool) {
	if !set.dollar {
		return set.resolve(s.sel.uids, byUID)
	}
	var out []uint32
	for _, u := range s.sel.saved {
		if n := s.sel.seqOf(u); n > 0 {
			out = append(out, uint32(n))
		}
	}
	return out, true
}

// formatUIDSet writes UIDs (any order) as a compact sequence set in the
// given order, merging consecutive runs (for COPYUID the order of source
// and destination sets must correspond, RFC 4315 §4.3).
func formatUIDSet(uids []mailstore.UID) string {
	var b strings.Builder
	for i := 0; i < len(uids); {
		j := i
		for j+1 < len(uids) && uids[j+1] == uids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(uids[i]), 10))
		if j > i {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(uids[j]), 10))
		}
		i = j + 1
	}
	return b.String()
}
