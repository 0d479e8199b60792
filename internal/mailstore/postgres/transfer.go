package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/blobfs"
)

// mailstore.Transfer: reading the expunge log and importing a store
// (`letterbox store copy`).
//
// Every Import method is one transaction, so one call is atomic and
// durable like any other write. ImportMessages makes its blobs present
// exactly as AppendMany does (blobStage: blob row first, then the file,
// fsynced); every check that can refuse the call runs before the first
// spool is moved into the blob tree (a refused import leaves no orphan
// file), and again under the mailbox's row lock. Imports publish no
// notifications: a store is copied while no server uses the destination.
// (ImportMailbox adds the mailbox to this node's watermarks, so that later
// scans do not announce the imported state either; other nodes would.)
//
// What they keep that normal operation would allocate: UIDVALIDITY
// (meta.last_uidvalidity is raised to at least every imported value, so
// createMailbox hands out only higher ones), UIDNEXT and HIGHESTMODSEQ
// (imported messages and expunge-log entries must lie below them, so
// appends continue above everything imported), and each message's UID,
// MODSEQ and dates.
//
// A UID is "present" in a mailbox when it is a message or an expunge-log
// entry: a UID is never both in a store (UIDs are not reused), so
// ImportMessages refuses a UID of the log and ImportExpunged a UID of a
// message, whichever of the two is imported first.

var _ mailstore.Transfer = (*Store)(nil)

// ExpungeLog returns the expunge log of a mailbox, ascending by UID.
func (s *Store) ExpungeLog(ctx context.Context, mailboxID int64) ([]mailstore.Expunged, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.pool.Query(ctx, `SELECT uid, modseq FROM expunged WHERE mailbox_id = $1 ORDER BY uid`, mailboxID)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []mailstore.Expunged
	for rows.Next() {
		var uid, modseq int64
		if err := rows.Scan(&uid, &modseq); err != nil {
			return nil, dbErr(err)
		}
		out = append(out, mailstore.Expunged{UID: mailstore.UID(uid), ModSeq: uint64(modseq)})
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

// ImportAccount creates an account with a's name, credentials, creation
// time and quotas, and no mailboxes. A zero creation time means now.
func (s *Store) ImportAccount(ctx context.Context, a mailstore.Account) (mailstore.Account, error) {
	name, err := mailstore.CanonicalAccountName(a.Name)
	if err != nil {
		return mailstore.Account{}, err
	}
	if a.QuotaBytes < 0 || a.QuotaMessages < 0 {
		return mailstore.Account{}, fmt.Errorf("%w: negative quota", mailstore.ErrNotAllowed)
	}
	if !a.Created.IsZero() && !mailstore.StorableTime(a.Created) {
		return mailstore.Account{}, fmt.Errorf("%w: account %s: creation time %v cannot be stored", mailstore.ErrNotAllowed, name, a.Created)
	}
	if err := s.enter(); err != nil {
		return mailstore.Account{}, err
	}
	defer s.leave()
	created := a.Created
	if created.IsZero() {
		created = time.Now()
	}
	acct, err := scanAccount(s.pool.QueryRow(ctx, `INSERT INTO accounts (name, password_hash, scram_sha256, created, quota_bytes, quota_messages)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING `+accountCols,
		name, a.PasswordHash, a.SCRAMSHA256, nanos(created), a.QuotaBytes, a.QuotaMessages))
	if errors.Is(err, pgx.ErrNoRows) {
		return mailstore.Account{}, mailstore.ErrAccountExists
	}
	if err != nil {
		return mailstore.Account{}, dbErr(err)
	}
	return acct, nil
}

// ImportMailbox creates an empty mailbox with mb's name, special use,
// subscription, UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, and raises
// meta.last_uidvalidity to at least mb.UIDValidity.
func (s *Store) ImportMailbox(ctx context.Context, accountID int64, mb mailstore.Mailbox) (mailstore.Mailbox, error) {
	name, err := mailstore.CanonicalMailboxName(mb.Name)
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	specialUse, err := canonicalSpecialUse(mb.SpecialUse)
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	switch {
	case mb.UIDValidity == 0:
		return mailstore.Mailbox{}, fmt.Errorf("%w: mailbox %q: UIDVALIDITY 0", mailstore.ErrNotAllowed, name)
	case mb.UIDNext == 0:
		return mailstore.Mailbox{}, fmt.Errorf("%w: mailbox %q: UIDNEXT 0", mailstore.ErrNotAllowed, name)
	case mb.HighestModSeq > math.MaxInt64:
		return mailstore.Mailbox{}, fmt.Errorf("%w: mailbox %q: HIGHESTMODSEQ %d too large", mailstore.ErrNotAllowed, name, mb.HighestModSeq)
	}
	if err := s.enter(); err != nil {
		return mailstore.Mailbox{}, err
	}
	defer s.leave()
	// Imports publish nothing, but this node's scans would find the new
	// mailbox (and then the messages imported into it) and announce them.
	// So the account's watermarks, if this node has any, take the new
	// mailbox in as already published, with no scan in between.
	w := s.watchOf(accountID, false)
	if w != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
	}
	var out mailstore.Mailbox
	err = s.txn(ctx, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE`, accountID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return mailstore.ErrNoSuchAccount
		} else if err != nil {
			return err
		}
		out, err = scanMailbox(tx.QueryRow(ctx, `INSERT INTO mailboxes (account_id, name, special_use, subscribed, uid_validity, uid_next, highest_modseq)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id, name) DO NOTHING RETURNING `+mailboxCols,
			accountID, name, specialUse, mb.Subscribed, int64(mb.UIDValidity), int64(mb.UIDNext), int64(mb.HighestModSeq)))
		if errors.Is(err, pgx.ErrNoRows) {
			return mailstore.ErrMailboxExists
		} else if err != nil {
			return err
		}
		// createMailbox hands out max(last+1, now): never this value
		// again, nor one below it.
		_, err = tx.Exec(ctx, `UPDATE meta SET value = greatest(value, $1) WHERE key = 'last_uidvalidity'`, int64(mb.UIDValidity))
		return err
	})
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	if w != nil && w.ready {
		// Messages and expunge-log entries imported later lie at or
		// below these watermarks: scans never report them.
		w.boxes[out.ID] = boxMark{name: out.Name, uidNext: out.UIDNext, modseq: out.HighestModSeq}
	}
	return out, nil
}

// ImportMessages adds messages with their own UIDs, MODSEQs, flags and
// dates to a mailbox, all or none; UIDNEXT and HIGHESTMODSEQ stay as they
// are, the other counters are kept exact. Quotas are not checked.
func (s *Store) ImportMessages(ctx context.Context, mailboxID int64, msgs []mailstore.ImportMessage) error {
	defer func() {
		for _, m := range msgs {
			if m.Spool != nil {
				m.Spool.Abort()
			}
		}
	}()
	flags, entries, err := mailstore.CheckImport(msgs)
	if err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if len(msgs) == 0 {
		_, err := s.mailboxByID(ctx, mailboxID)
		return err
	}
	sds := make([]*spooled, len(msgs))
	for i, m := range msgs {
		sd, err := s.finishSpool(m.Spool)
		if err != nil {
			return fmt.Errorf("postgres: import: UID %d: %w", m.UID, err)
		}
		sds[i] = sd
	}
	order := make([]int, len(sds))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(sds[a].id, sds[b].id) })
	err = s.txn(ctx, func(tx pgx.Tx) error {
		// Every check before the first spool moves into the blob tree
		// (without the lock: blob rows come first in the lock order),
		// and again under the lock.
		mb, err := scanMailbox(tx.QueryRow(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE id = $1`, mailboxID))
		if errors.Is(err, pgx.ErrNoRows) {
			return mailstore.ErrNoSuchMailbox
		} else if err != nil {
			return err
		}
		if err := checkImportPlace(ctx, tx, &mb, entries); err != nil {
			return err
		}
		blobRows := make([]int64, len(sds))
		byHash := map[string]int64{}
		for _, i := range order {
			sd := sds[i]
			if id, ok := byHash[sd.id]; ok {
				if !sd.committed {
					var dirs blobfs.DirSet
					if _, err := s.blobs.Commit(sd.sp, &dirs); err != nil {
						return err
					}
					sd.committed = true
				}
				blobRows[i] = id
				continue
			}
			id, err := s.blobStage(ctx, tx, sd)
			if err != nil {
				return err
			}
			byHash[sd.id] = id
			blobRows[i] = id
		}
		mb, err = lockMailbox(ctx, tx, mailboxID)
		if err != nil {
			return err
		}
		if err := checkImportPlace(ctx, tx, &mb, entries); err != nil {
			return err
		}
		n := len(msgs)
		var (
			uids, modseqs, idates, sdates, sizes = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
			fl                                   = make([]string, n)
			seen, deleted                        = make([]bool, n), make([]bool, n)
			addMsgs, addUnseen, addSize          int64
		)
		for i, m := range msgs {
			uids[i], modseqs[i] = int64(m.UID), int64(m.ModSeq)
			idates[i], sdates[i], sizes[i] = nanos(m.InternalDate), nanos(m.SaveDate), sds[i].size
			fl[i] = encodeFlags(flags[i])
			seen[i] = slices.Contains(flags[i], mailstore.FlagSeen)
			deleted[i] = slices.Contains(flags[i], mailstore.FlagDeleted)
			addMsgs++
			if !seen[i] {
				addUnseen++
			}
			addSize += sds[i].size
		}
		b := &pgx.Batch{}
		hashes := make([]string, n)
		for i := range msgs {
			hashes[i] = sds[i].id
		}
		b.Queue(`INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, deleted, internal_date, save_date, size, blob_id, blob_hash)
			SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::boolean[], $6::boolean[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[])`,
			mb.ID, uids, modseqs, fl, seen, deleted, idates, sdates, sizes, blobRows, hashes)
		b.Queue(`UPDATE mailboxes SET messages = messages + $2, unseen = unseen + $3, size = size + $4 WHERE id = $1`,
			mb.ID, addMsgs, addUnseen, addSize)
		return tx.SendBatch(ctx, b).Close()
	})
	// The view cache is validated by HIGHESTMODSEQ, which an import leaves
	// as it is: drop this node's cached view of the mailbox. (Other nodes
	// cannot have one worth keeping: a store is imported while no server
	// uses it.)
	s.views.drop(mailboxID)
	return err
}

// ImportExpunged adds entries to a mailbox's expunge log, all or none,
// with the rules of ImportMessages.
func (s *Store) ImportExpunged(ctx context.Context, mailboxID int64, log []mailstore.Expunged) error {
	if err := mailstore.CheckImportEntries(log); err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if len(log) == 0 {
		_, err := s.mailboxByID(ctx, mailboxID)
		return err
	}
	return s.txn(ctx, func(tx pgx.Tx) error {
		mb, err := lockMailbox(ctx, tx, mailboxID)
		if err != nil {
			return err
		}
		if err := checkImportPlace(ctx, tx, &mb, log); err != nil {
			return err
		}
		uids, modseqs := make([]int64, len(log)), make([]int64, len(log))
		for i, e := range log {
			uids[i], modseqs[i] = int64(e.UID), int64(e.ModSeq)
		}
		_, err = tx.Exec(ctx, `INSERT INTO expunged (mailbox_id, uid, modseq) SELECT $1, * FROM unnest($2::bigint[], $3::bigint[])`,
			mb.ID, uids, modseqs)
		return err
	})
}

// checkImportPlace checks imported UIDs and MODSEQs against the mailbox:
// each UID below UIDNEXT and not present (neither a message nor an
// expunge-log entry), each MODSEQ at most HIGHESTMODSEQ.
func checkImportPlace(ctx context.Context, tx pgx.Tx, mb *mailstore.Mailbox, es []mailstore.Expunged) error {
	if err := mailstore.CheckImportBounds(mb, es); err != nil {
		return err
	}
	uids := make([]int64, len(es))
	for i, e := range es {
		uids[i] = int64(e.UID)
	}
	var present int64
	err := tx.QueryRow(ctx, `SELECT uid FROM messages WHERE mailbox_id = $1 AND uid = ANY($2)
		UNION ALL SELECT uid FROM expunged WHERE mailbox_id = $1 AND uid = ANY($2) LIMIT 1`, mb.ID, uids).Scan(&present)
	if err == nil {
		return fmt.Errorf("%w: import into %q: UID %d is already present", mailstore.ErrNotAllowed, mb.Name, present)
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	return nil
}

// drop forgets the cached view of a mailbox.
func (c *viewCache) drop(mailboxID int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, mailboxID)
}
