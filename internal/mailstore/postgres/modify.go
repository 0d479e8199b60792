package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// MODSEQ scheme (as in the sqlite backend): every changed message (flag
// change, append, copy target, expunge) gets its own MODSEQ, the mailbox's
// HIGHESTMODSEQ plus one, and HIGHESTMODSEQ becomes that value. The
// allocation happens under the mailbox row's lock, held until COMMIT, so
// MODSEQs in a mailbox are unique and the transactions of one mailbox
// commit in MODSEQ order, on every node: the property the notification
// scans rely on (notify.go).

// StoreFlags changes the flags of the given messages (CONDSTORE aware).
func (s *Store) StoreFlags(ctx context.Context, mailboxID int64, uids []mailstore.UID, fop mailstore.FlagOp, flags []string, unchangedSince uint64) (changed []mailstore.Message, failed []mailstore.UID, err error) {
	flags, err = mailstore.CanonicalFlags(flags)
	if err != nil {
		return nil, nil, err
	}
	switch fop {
	case mailstore.FlagsAdd, mailstore.FlagsRemove, mailstore.FlagsReplace:
	default:
		return nil, nil, fmt.Errorf("postgres: invalid flag operation %d", fop)
	}
	if err := s.enter(); err != nil {
		return nil, nil, err
	}
	defer s.leave()
	var acct int64
	err = s.txn(ctx, func(tx pgx.Tx) error {
		changed, failed = nil, nil
		mb, err := lockMailbox(ctx, tx, mailboxID)
		if err != nil {
			return err
		}
		acct = mb.AccountID
		msgs, err := selectMessages(ctx, tx, mailboxID, nonNil(uids))
		if err != nil {
			return err
		}
		var (
			cuids, cmodseqs []int64
			cflags          []string
			cseen, cdeleted []bool
		)
		for _, m := range msgs {
			if unchangedSince != 0 && m.ModSeq > unchangedSince {
				failed = append(failed, m.UID)
				continue
			}
			nf, diff := mailstore.ApplyFlags(m.Flags, fop, flags)
			if !diff {
				continue
			}
			seen := slices.Contains(nf, mailstore.FlagSeen)
			mb.HighestModSeq++
			switch {
			case seen && !m.seen:
				mb.Unseen--
			case !seen && m.seen:
				mb.Unseen++
			}
			m.Flags, m.ModSeq = nf, mb.HighestModSeq
			changed = append(changed, m.Message)
			cuids = append(cuids, int64(m.UID))
			cmodseqs = append(cmodseqs, int64(m.ModSeq))
			cflags = append(cflags, encodeFlags(nf))
			cseen = append(cseen, seen)
			cdeleted = append(cdeleted, slices.Contains(nf, mailstore.FlagDeleted))
		}
		if len(changed) == 0 {
			return nil
		}
		b := &pgx.Batch{}
		b.Queue(`UPDATE messages m SET flags = v.flags, seen = v.seen, deleted = v.deleted, modseq = v.modseq
			FROM unnest($2::bigint[], $3::text[], $4::boolean[], $5::boolean[], $6::bigint[]) AS v(uid, flags, seen, deleted, modseq)
			WHERE m.mailbox_id = $1 AND m.uid = v.uid`, mailboxID, cuids, cflags, cseen, cdeleted, cmodseqs)
		queueSaveMailbox(b, &mb)
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return nil, nil, err
	}
	if len(changed) > 0 {
		s.changed(ctx, acct)
	}
	return changed, failed, nil
}

// nonNil returns uids, or an empty slice for nil (selectMessages reads nil
// as "every message").
func nonNil(uids []mailstore.UID) []mailstore.UID {
	if uids == nil {
		return []mailstore.UID{}
	}
	return uids
}

// Expunge removes the given messages and logs them for Vanished.
func (s *Store) Expunge(ctx context.Context, mailboxID int64, uids []mailstore.UID) ([]mailstore.UID, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var removed []mailstore.UID
	var acct int64
	err := s.txn(ctx, func(tx pgx.Tx) error {
		mb, err := lockMailbox(ctx, tx, mailboxID)
		if err != nil {
			return err
		}
		acct = mb.AccountID
		removed, err = expunge(ctx, tx, &mb, nonNil(uids))
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(removed) > 0 {
		s.changed(ctx, acct)
	}
	return removed, nil
}

// expunge deletes the messages of mb (locked by the caller) with the given
// UIDs, records them in the expunge log, each with its own MODSEQ in UID
// order, and writes mb back. It returns the UIDs removed, ascending.
func expunge(ctx context.Context, tx pgx.Tx, mb *mailstore.Mailbox, uids []mailstore.UID) ([]mailstore.UID, error) {
	sorted := slices.Clone(uids)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	if len(sorted) == 0 {
		return nil, nil
	}
	arr := make([]int64, len(sorted))
	for i, u := range sorted {
		arr[i] = int64(u)
	}
	// uid = ANY(array): primary-key lookups (a join with the array may
	// be planned as a filter over the whole mailbox).
	rows, err := tx.Query(ctx, `DELETE FROM messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])
		RETURNING uid, seen, size`, mb.ID, arr)
	if err != nil {
		return nil, err
	}
	type gone struct {
		uid  int64
		seen bool
		size int64
	}
	var del []gone
	for rows.Next() {
		var g gone
		if err := rows.Scan(&g.uid, &g.seen, &g.size); err != nil {
			rows.Close()
			return nil, err
		}
		del = append(del, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(del) == 0 {
		return nil, nil
	}
	slices.SortFunc(del, func(a, b gone) int { return int(a.uid - b.uid) })
	removed := make([]mailstore.UID, len(del))
	euids, emodseqs := make([]int64, len(del)), make([]int64, len(del))
	for i, g := range del {
		mb.HighestModSeq++
		mb.Messages--
		if !g.seen {
			mb.Unseen--
		}
		mb.Size -= g.size
		removed[i] = mailstore.UID(g.uid)
		euids[i], emodseqs[i] = g.uid, int64(mb.HighestModSeq)
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, * FROM unnest($2::bigint[], $3::bigint[])
		ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq`, mb.ID, euids, emodseqs)
	queueSaveMailbox(b, mb)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return removed, nil
}

// Copy copies messages to another mailbox of the same account (UIDPLUS).
func (s *Store) Copy(ctx context.Context, srcMailboxID int64, uids []mailstore.UID, dstMailboxID int64) (srcUIDs, dstUIDs []mailstore.UID, err error) {
	return s.copyOrMove(ctx, srcMailboxID, uids, dstMailboxID, false)
}

// Move copies messages and expunges the sources, atomically.
func (s *Store) Move(ctx context.Context, srcMailboxID int64, uids []mailstore.UID, dstMailboxID int64) (srcUIDs, dstUIDs []mailstore.UID, err error) {
	return s.copyOrMove(ctx, srcMailboxID, uids, dstMailboxID, true)
}

func (s *Store) copyOrMove(ctx context.Context, srcID int64, uids []mailstore.UID, dstID int64, move bool) (srcUIDs, dstUIDs []mailstore.UID, err error) {
	if err := s.enter(); err != nil {
		return nil, nil, err
	}
	defer s.leave()
	var acct int64
	err = s.txn(ctx, func(tx pgx.Tx) error {
		srcUIDs, dstUIDs = nil, nil
		boxes, err := lockMailboxes(ctx, tx, []int64{srcID, dstID})
		if err != nil {
			return err
		}
		src, dst := boxes[srcID], boxes[dstID]
		if src == nil || dst == nil {
			return mailstore.ErrNoSuchMailbox
		}
		if dst.AccountID != src.AccountID {
			return fmt.Errorf("%w: copy between accounts", mailstore.ErrNotAllowed)
		}
		acct = src.AccountID
		msgs, err := selectMessages(ctx, tx, srcID, nonNil(uids))
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return nil
		}
		if !move {
			// A move leaves the account's usage unchanged: only a
			// copy is checked against the quota.
			var total int64
			for _, m := range msgs {
				total += m.Size
			}
			if err := checkQuota(ctx, tx, src.AccountID, total, int64(len(msgs))); err != nil {
				return err
			}
		}
		// The source rows reference the blobs, are locked with their
		// mailbox and commit after the copies: no collection can remove
		// a blob the copies reference.
		added, err := appendRows(ctx, tx, dst, time.Now(), copiesOf(msgs))
		if err != nil {
			return err
		}
		dstUIDs = make([]mailstore.UID, len(added))
		for i, m := range added {
			dstUIDs[i] = m.UID
		}
		srcUIDs = uidsOfRows(msgs)
		if move {
			// When src and dst are the same mailbox, boxes holds one
			// pointer: the expunge continues from the copy's UIDNEXT
			// and MODSEQ.
			if _, err := expunge(ctx, tx, src, srcUIDs); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(dstUIDs) > 0 {
		s.changed(ctx, acct)
	}
	return srcUIDs, dstUIDs, nil
}
