package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/message"
)

// Reads run on the pool outside any explicit transaction: each statement
// sees the last committed state (one snapshot per statement), and never
// waits for a writer's row locks.

// Messages lists the messages of a mailbox ordered by UID.
func (s *Store) Messages(ctx context.Context, mailboxID int64) ([]mailstore.Message, error) {
	return s.listMessages(ctx, mailboxID, `SELECT `+msgCols+` FROM messages m
		WHERE m.mailbox_id = $1 ORDER BY m.uid`, mailboxID)
}

// MessagesChangedSince lists messages whose MODSEQ is greater than modseq,
// ordered by UID.
func (s *Store) MessagesChangedSince(ctx context.Context, mailboxID int64, modseq uint64) ([]mailstore.Message, error) {
	return s.listMessages(ctx, mailboxID, `SELECT `+msgCols+` FROM messages m
		WHERE m.mailbox_id = $1 AND m.modseq > $2 ORDER BY m.uid`, mailboxID, int64(min(modseq, math.MaxInt64)))
}

func (s *Store) listMessages(ctx context.Context, mailboxID int64, q string, args ...any) ([]mailstore.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	out, err := s.collectMessages(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Store) collectMessages(ctx context.Context, q string, args ...any) ([]mailstore.Message, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []mailstore.Message
	for rows.Next() {
		r, err := scanMsg(rows)
		if err != nil {
			return nil, dbErr(err)
		}
		out = append(out, r.Message)
	}
	return out, dbErr(rows.Err())
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
	slices.SortFunc(out, func(a, b mailstore.UIDRange) int {
		switch {
		case a.Min < b.Min:
			return -1
		case a.Min > b.Min:
			return 1
		}
		return 0
	})
	n := 0
	for _, r := range out {
		if n > 0 && (r.Min <= out[n-1].Max || uint64(r.Min) == uint64(out[n-1].Max)+1) {
			out[n-1].Max = max(out[n-1].Max, r.Max)
			continue
		}
		out[n] = r
		n++
	}
	return out[:n]
}

func sortByUID(ms []mailstore.Message) {
	cmp := func(a, b mailstore.Message) int {
		switch {
		case a.UID < b.UID:
			return -1
		case a.UID > b.UID:
			return 1
		}
		return 0
	}
	if !slices.IsSortedFunc(ms, cmp) {
		slices.SortFunc(ms, cmp)
	}
}

// MessagesInRanges lists the messages whose UID lies in one of ranges,
// ascending by UID, in one statement: the ranges (sorted, merged) are
// passed as two arrays and joined LATERALly, so each range is one index
// range scan of the (mailbox_id, uid) primary key and the cost follows the
// rows returned, not the mailbox's size.
func (s *Store) MessagesInRanges(ctx context.Context, mailboxID int64, ranges []mailstore.UIDRange) ([]mailstore.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rs := normRanges(ranges)
	var out []mailstore.Message
	if len(rs) > 0 {
		var err error
		if len(rs) == 1 {
			out, err = s.collectMessages(ctx, `SELECT `+msgCols+` FROM messages m
				WHERE m.mailbox_id = $1 AND m.uid BETWEEN $2 AND $3 ORDER BY m.uid`, mailboxID, int64(rs[0].Min), int64(rs[0].Max))
		} else {
			lo, hi := rangeArrays(rs)
			// The nested loop yields the ranges in array order, each
			// in index order: ascending UIDs without a sort (checked
			// below, should a plan do otherwise).
			out, err = s.collectMessages(ctx, qRanges, mailboxID, lo, hi)
		}
		if err != nil {
			return nil, err
		}
		sortByUID(out)
	}
	if len(out) == 0 {
		if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return out, nil
}

// Structure returns the MIME structure computed at delivery.
func (s *Store) Structure(ctx context.Context, mailboxID int64, uid mailstore.UID) (*message.Part, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var data []byte
	err := s.pool.QueryRow(ctx, `SELECT (SELECT structure FROM blobs WHERE id = m.blob_id) FROM messages m
		WHERE m.mailbox_id = $1 AND m.uid = $2`, mailboxID, int64(uid)).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, mailstore.ErrNoSuchMessage
	}
	if err != nil {
		return nil, dbErr(err)
	}
	p, err := message.Unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("postgres: stored structure of uid %d: %w", uid, err)
	}
	return p, nil
}

// Structures returns the structures of the messages with the given UIDs in
// one statement: the UIDs as runs of consecutive UIDs, one primary-key
// range scan each (like MessagesInRanges); a dense set is read as one range
// and the few rows not asked for are skipped.
func (s *Store) Structures(ctx context.Context, mailboxID int64, uids []mailstore.UID) (map[mailstore.UID]*message.Part, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	out := make(map[mailstore.UID]*message.Part, len(uids))
	if len(uids) == 0 {
		if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
			return nil, err
		}
		return out, nil
	}
	if !slices.IsSorted(uids) {
		uids = slices.Clone(uids)
		slices.Sort(uids)
	}
	rs := []mailstore.UIDRange{{Min: uids[0], Max: uids[len(uids)-1]}}
	if uint64(rs[0].Max-rs[0].Min) >= 4*uint64(len(uids)) {
		rs = mailstore.UIDRanges(slices.Compact(slices.Clone(uids)), nil)
	}
	lo, hi := rangeArrays(rs)
	rows, err := s.pool.Query(ctx, `SELECT m.uid, (SELECT structure FROM blobs WHERE id = m.blob_id) FROM unnest($2::bigint[], $3::bigint[]) AS r(lo, hi)
		CROSS JOIN LATERAL (SELECT uid, blob_id FROM messages m WHERE m.mailbox_id = $1 AND m.uid BETWEEN r.lo AND r.hi OFFSET 0) m`, mailboxID, lo, hi)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	for rows.Next() {
		var uid int64
		var data []byte
		if err := rows.Scan(&uid, &data); err != nil {
			return nil, dbErr(err)
		}
		if _, want := slices.BinarySearch(uids, mailstore.UID(uid)); !want {
			continue
		}
		p, err := message.Unmarshal(data)
		if err != nil {
			return nil, fmt.Errorf("postgres: stored structure of uid %d: %w", uid, err)
		}
		out[mailstore.UID(uid)] = p
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(err)
	}
	if len(out) == 0 {
		if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// OpenBlob opens a message body. An unknown or collected blob yields
// ErrNoSuchMessage.
func (s *Store) OpenBlob(ctx context.Context, blobID string) (mailstore.Blob, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	b, err := s.blobs.Open(blobID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, mailstore.ErrNoSuchMessage
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return b, nil
}

// Vanished returns UIDs expunged with a MODSEQ greater than modseq,
// ascending.
func (s *Store) Vanished(ctx context.Context, mailboxID int64, modseq uint64) ([]mailstore.UID, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.pool.Query(ctx, `SELECT uid FROM expunged WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid`,
		mailboxID, int64(min(modseq, math.MaxInt64)))
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []mailstore.UID
	for rows.Next() {
		var u int64
		if err := rows.Scan(&u); err != nil {
			return nil, dbErr(err)
		}
		out = append(out, mailstore.UID(u))
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(err)
	}
	if len(out) == 0 {
		if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// --- View ---

// qView computes a mailbox's view in one aggregate statement (one
// snapshot, one scan of the mailbox's message rows): the UIDs as one
// array (binary int8 on the wire, a few bytes per message), the first
// unseen UID, the \Deleted count and size, and the distinct flag strings
// (few; View picks the keywords out of them). The mailbox's HIGHESTMODSEQ
// comes from the same snapshot and tags the result for the cache.
const qView = `SELECT (SELECT highest_modseq FROM mailboxes WHERE id = $1),
	coalesce(array_agg(uid ORDER BY uid), '{}'),
	coalesce(min(uid) FILTER (WHERE NOT seen), 0),
	count(*) FILTER (WHERE deleted),
	coalesce(sum(size) FILTER (WHERE deleted), 0)::bigint,
	coalesce(array_agg(DISTINCT flags) FILTER (WHERE flags <> ''), '{}')
	FROM messages WHERE mailbox_id = $1`

// viewCache keeps the last computed view of recently selected mailboxes,
// tagged with the mailbox's HIGHESTMODSEQ at that moment. Every change to
// a mailbox's messages raises HIGHESTMODSEQ in the same transaction, on
// whatever node it runs, and mailbox IDs are never reused, so a cached view
// whose tag equals the current HIGHESTMODSEQ is exactly what qView would
// compute: a SELECT of an unchanged mailbox costs one primary-key lookup.
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
func (s *Store) View(ctx context.Context, mailboxID int64) (mailstore.MailboxView, error) {
	var v mailstore.MailboxView
	if err := s.enter(); err != nil {
		return v, err
	}
	defer s.leave()
	var modseq uint64
	err := s.pool.QueryRow(ctx, `SELECT highest_modseq FROM mailboxes WHERE id = $1`, mailboxID).Scan(&modseq)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, mailstore.ErrNoSuchMailbox
	}
	if err != nil {
		return v, dbErr(err)
	}
	if cached, ok := s.views.get(mailboxID, modseq); ok {
		return cached, nil
	}
	var tag *int64
	var uids []int64
	var first int64
	var deleted int64
	var combos []string
	if err := s.pool.QueryRow(ctx, qView, mailboxID).Scan(&tag, &uids, &first, &deleted, &v.DeletedSize, &combos); err != nil {
		return v, dbErr(err)
	}
	if tag == nil {
		return v, mailstore.ErrNoSuchMailbox // deleted meanwhile
	}
	if len(uids) > 0 {
		v.UIDs = make([]mailstore.UID, len(uids))
		for i, u := range uids {
			v.UIDs[i] = mailstore.UID(u)
		}
	}
	v.FirstUnseen = mailstore.UID(first)
	v.Deleted = uint32(deleted)
	v.Keywords = []string{}
	for _, c := range combos {
		for _, f := range decodeFlags(c) {
			if f != "" && f[0] != '\\' && !slices.Contains(v.Keywords, f) {
				v.Keywords = append(v.Keywords, f)
			}
		}
	}
	slices.Sort(v.Keywords)
	s.views.put(mailboxID, uint64(*tag), v)
	return v, nil
}
