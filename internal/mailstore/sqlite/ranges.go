package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// Statements of MessagesInRanges. One range is one index range scan of the
// (mailbox_id, uid) primary key. Several ranges are passed as one JSON
// array of [min,max] pairs and joined with CROSS JOIN, which makes SQLite
// keep json_each as the outer loop: one primary-key range scan per range,
// in the order of the (sorted, disjoint) ranges, so rows come out
// ascending by UID without a sort and in one statement (one snapshot).
const (
	qRange  = `SELECT ` + msgCols + msgFrom + `WHERE m.mailbox_id = ? AND m.uid BETWEEN ? AND ? ORDER BY m.uid`
	qRanges = `SELECT ` + msgCols + ` FROM json_each(?) r CROSS JOIN messages m CROSS JOIN blobs b` +
		` WHERE m.mailbox_id = ? AND m.uid BETWEEN r.value->>0 AND r.value->>1 AND b.id = m.blob_id`
	qStructRanges = `SELECT m.uid, b.structure FROM json_each(?) r CROSS JOIN messages m CROSS JOIN blobs b` +
		` WHERE m.mailbox_id = ? AND m.uid BETWEEN r.value->>0 AND r.value->>1 AND b.id = m.blob_id`
)

// rangesJSON encodes ranges as the JSON array of [min,max] pairs the
// multi-range statements read with json_each.
func rangesJSON(rs []mailstore.UIDRange) string {
	b := make([]byte, 0, 2+len(rs)*16)
	b = append(b, '[')
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendUint(b, uint64(r.Min), 10)
		b = append(b, ',')
		b = strconv.AppendUint(b, uint64(r.Max), 10)
		b = append(b, ']')
	}
	return string(append(b, ']'))
}

// normRanges returns ranges sorted, with empty ones dropped and
// overlapping or adjacent ones merged.
func normRanges(ranges []mailstore.UIDRange) []mailstore.UIDRange {
	out := make([]mailstore.UIDRange, 0, len(ranges))
	for _, r := range ranges {
		if r.Min <= r.Max {
			out = append(out, r)
		}
	}
	if !slices.IsSortedFunc(out, cmpRange) {
		slices.SortFunc(out, cmpRange)
	}
	n := 0
	for _, r := range out {
		if n > 0 && (r.Min <= out[n-1].Max || r.Min-1 == out[n-1].Max) {
			out[n-1].Max = max(out[n-1].Max, r.Max)
			continue
		}
		out[n] = r
		n++
	}
	return out[:n]
}

func cmpRange(a, b mailstore.UIDRange) int {
	if a.Min != b.Min {
		if a.Min < b.Min {
			return -1
		}
		return 1
	}
	return 0
}

// MessagesInRanges lists the messages whose UID lies in one of ranges,
// ascending by UID.
func (s *Store) MessagesInRanges(ctx context.Context, mailboxID int64, ranges []mailstore.UIDRange) ([]mailstore.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rs := normRanges(ranges)
	var out []mailstore.Message
	if len(rs) > 0 {
		var span uint64
		for _, r := range rs {
			span += uint64(r.Max-r.Min) + 1
		}
		out = make([]mailstore.Message, 0, min(span, 4096))
		var rows *sql.Rows
		var err error
		if len(rs) == 1 {
			rows, err = s.query(ctx, qRange, mailboxID, rs[0].Min, rs[0].Max)
		} else {
			rows, err = s.query(ctx, qRanges, rangesJSON(rs), mailboxID)
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanMsg(rows)
			if err != nil {
				return nil, fmt.Errorf("sqlite: %w", err)
			}
			out = append(out, r.Message)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		// The plan yields ascending UIDs; stay correct should a future
		// SQLite choose another one.
		if !slices.IsSortedFunc(out, cmpMsg) {
			slices.SortFunc(out, cmpMsg)
		}
	}
	if len(out) == 0 {
		if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return out, nil
}

func cmpMsg(a, b mailstore.Message) int {
	switch {
	case a.UID < b.UID:
		return -1
	case a.UID > b.UID:
		return 1
	}
	return 0
}

// qView computes a mailbox's view in one aggregate statement (one
// snapshot): the per-message work stays inside SQLite, and one row of a few
// strings crosses into Go instead of one driver row per message. The UIDs
// come in primary-key order (View checks, and sorts should a future SQLite
// do otherwise; an ORDER BY inside group_concat costs a sort). Keywords are
// atoms, which cannot contain a backslash, so instr finds exactly the
// \Deleted system flag (stored canonically spelled). The distinct flag
// combinations are few; View picks the keywords out of them. The sizes
// live in blobs: the subquery runs only for the rows that pass the
// \Deleted filter, so the common view (few deleted messages) stays one
// scan of the mailbox's message rows.
const qView = `SELECT coalesce(group_concat(uid, ','), ''),
	coalesce(min(uid) FILTER (WHERE seen = 0), 0),
	count(*) FILTER (WHERE instr(flags, '\Deleted') > 0),
	json_group_array(DISTINCT flags) FILTER (WHERE flags <> ''),
	coalesce(sum((SELECT b.size FROM blobs b WHERE b.id = blob_id)) FILTER (WHERE instr(flags, '\Deleted') > 0), 0)
	FROM messages WHERE mailbox_id = ?1`

// qViewModSeq is the mailbox's HIGHESTMODSEQ, read alone to validate a
// cached view, and with the view (same statement, one snapshot) to tag it.
const qViewModSeq = `SELECT highest_modseq FROM mailboxes WHERE id = ?1`

// viewCache keeps the last computed view of recently selected mailboxes,
// tagged with the mailbox's HIGHESTMODSEQ at that moment. Every change to
// a mailbox's messages (append, flag change, expunge) raises
// HIGHESTMODSEQ in the same transaction, also when it comes from another
// process, so a cached view whose tag equals the current HIGHESTMODSEQ is
// exactly what qView would compute: a SELECT of an unchanged mailbox costs
// one primary-key lookup and a copy of the UID list instead of a scan of
// every message row.
type viewCache struct {
	mu sync.Mutex
	m  map[int64]cachedView
}

type cachedView struct {
	modseq uint64
	v      mailstore.MailboxView
}

// viewCacheSize bounds the cache: at 100,000 messages a view is ~400 KB.
const viewCacheSize = 64

func (c *viewCache) get(mailboxID int64, modseq uint64) (mailstore.MailboxView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[mailboxID]
	if !ok || e.modseq != modseq {
		return mailstore.MailboxView{}, false
	}
	v := e.v
	v.UIDs = slices.Clone(v.UIDs)
	v.Keywords = slices.Clone(v.Keywords)
	return v, true
}

func (c *viewCache) put(mailboxID int64, modseq uint64, v mailstore.MailboxView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[int64]cachedView)
	}
	if _, ok := c.m[mailboxID]; !ok && len(c.m) >= viewCacheSize {
		for id := range c.m { // evict an arbitrary entry
			delete(c.m, id)
			break
		}
	}
	v.UIDs = slices.Clone(v.UIDs)
	v.Keywords = slices.Clone(v.Keywords)
	c.m[mailboxID] = cachedView{modseq, v}
}

// View returns the UIDs, first unseen UID, keywords and \Deleted count and
// size of a mailbox.
func (s *Store) View(ctx context.Context, mailboxID int64) (v mailstore.MailboxView, err error) {
	if err := s.enter(); err != nil {
		return v, err
	}
	defer s.leave()
	var modseq uint64
	switch err := s.queryRow(ctx, qViewModSeq, mailboxID).Scan(&modseq); {
	case errors.Is(err, sql.ErrNoRows):
		_, err := s.mailboxByID(ctx, mailboxID)
		if err == nil {
			err = mailstore.ErrNoSuchMailbox
		}
		return v, err
	case err != nil:
		return v, fmt.Errorf("sqlite: %w", err)
	}
	if cached, ok := s.views.get(mailboxID, modseq); ok {
		return cached, nil
	}
	var list, kwJSON []byte
	var first int64
	if err := s.queryRow(ctx, `SELECT (`+qViewModSeq+`), v.* FROM (`+qView+`) v`, mailboxID).Scan(&modseq, &list, &first, &v.Deleted, &kwJSON, &v.DeletedSize); err != nil {
		return v, fmt.Errorf("sqlite: %w", err)
	}
	defer func() {
		if err == nil {
			s.views.put(mailboxID, modseq, v)
		}
	}()
	v.FirstUnseen = mailstore.UID(first)
	if len(list) > 0 {
		v.UIDs = make([]mailstore.UID, 0, bytes.Count(list, []byte{','})+1)
		var u uint64
		for _, c := range list {
			if c == ',' {
				v.UIDs = append(v.UIDs, mailstore.UID(u))
				u = 0
				continue
			}
			if c < '0' || c > '9' {
				return v, fmt.Errorf("sqlite: bad UID list")
			}
			u = u*10 + uint64(c-'0')
		}
		v.UIDs = append(v.UIDs, mailstore.UID(u))
		if !slices.IsSorted(v.UIDs) {
			slices.Sort(v.UIDs)
		}
	} else if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
		return v, err
	}
	var combos []string
	if err := json.Unmarshal(kwJSON, &combos); err != nil {
		return v, fmt.Errorf("sqlite: keywords: %w", err)
	}
	v.Keywords = []string{}
	for _, c := range combos {
		for _, f := range decodeFlags(c) {
			if f != "" && f[0] != '\\' && !slices.Contains(v.Keywords, f) {
				v.Keywords = append(v.Keywords, f)
			}
		}
	}
	slices.Sort(v.Keywords)
	return v, nil
}
