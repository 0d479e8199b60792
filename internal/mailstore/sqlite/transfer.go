package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// mailstore.Transfer: reading the expunge log and importing a store
// (`letterbox store copy`).
//
// Every Import method is one operation of the committer, so one call is
// atomic and durable like any other write: ImportMessages moves its spools
// into the blob tree and inserts its rows inside one savepoint of one
// transaction, exactly as AppendMany does, with the same rule that every
// check that can refuse the call runs before any spool is moved (a refused
// import leaves no orphan file). Imports publish no notifications.
//
// What they keep that normal operation would allocate: UIDVALIDITY
// (meta.last_uidvalidity is raised to at least every imported value, so
// createMailbox hands out only higher ones), UIDNEXT and HIGHESTMODSEQ
// (imported messages and expunge-log entries must lie below them, so
// appendRow continues above everything imported), and each message's UID,
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
	rows, err := s.query(ctx, `SELECT uid, modseq FROM expunged WHERE mailbox_id = ? ORDER BY uid`, mailboxID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	defer rows.Close()
	var out []mailstore.Expunged
	for rows.Next() {
		var e mailstore.Expunged
		if err := rows.Scan(&e.UID, &e.ModSeq); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
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
	var acct mailstore.Account
	err = s.submit(ctx, &op{run: func(w *writer) error {
		var id int64
		err := w.row(`SELECT id FROM accounts WHERE name = ?`, name).Scan(&id)
		if err == nil {
			return mailstore.ErrAccountExists
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		created := a.Created
		if created.IsZero() {
			created = w.now
		}
		acct, err = scanAccount(w.row(`INSERT INTO accounts (name, password_hash, scram_sha256, created, quota_bytes, quota_messages)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING `+accountCols,
			name, a.PasswordHash, a.SCRAMSHA256, nanos(created), a.QuotaBytes, a.QuotaMessages))
		return err
	}})
	if err != nil {
		return mailstore.Account{}, err
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
	var out mailstore.Mailbox
	err = s.submit(ctx, &op{run: func(w *writer) error {
		var one int
		err := w.row(`SELECT 1 FROM accounts WHERE id = ?`, accountID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return mailstore.ErrNoSuchAccount
		} else if err != nil {
			return err
		}
		if _, err := w.mailboxByName(accountID, name); err == nil {
			return mailstore.ErrMailboxExists
		} else if !errors.Is(err, mailstore.ErrNoSuchMailbox) {
			return err
		}
		out, err = scanMailbox(w.row(`INSERT INTO mailboxes (account_id, name, special_use, subscribed, uid_validity, uid_next, highest_modseq)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING `+mailboxCols,
			accountID, name, specialUse, mb.Subscribed, mb.UIDValidity, int64(mb.UIDNext), mb.HighestModSeq))
		if err != nil {
			return err
		}
		// createMailbox hands out max(last+1, now): never this value
		// again, nor one below it.
		_, err = w.exec(`UPDATE meta SET value = max(value, ?) WHERE key = 'last_uidvalidity'`, int64(mb.UIDValidity))
		return err
	}})
	if err != nil {
		return mailstore.Mailbox{}, err
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
			return fmt.Errorf("sqlite: import: UID %d: %w", m.UID, err)
		}
		sds[i] = sd
	}
	err = s.submit(ctx, &op{run: func(w *writer) error {
		mb, err := w.mailboxByID(mailboxID)
		if err != nil {
			return err
		}
		// Every check before the first spool moves into the blob tree.
		if err := w.checkImportPlace(&mb, entries); err != nil {
			return err
		}
		for i, sd := range sds {
			if _, err := w.s.blobs.Commit(sd.sp, &w.dirs); err != nil {
				return err
			}
			blobRow, err := w.upsertBlob(sd)
			if err != nil {
				return err
			}
			m := msgs[i]
			seen := slices.Contains(flags[i], mailstore.FlagSeen)
			if _, err := w.exec(`INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, internal_date, save_date, blob_id)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				mb.ID, m.UID, m.ModSeq, encodeFlags(flags[i]), seen, nanos(m.InternalDate), nanos(m.SaveDate), blobRow); err != nil {
				return err
			}
			mb.Messages++
			if !seen {
				mb.Unseen++
			}
			mb.Size += sd.size
		}
		return w.saveMailbox(&mb)
	}})
	if err != nil {
		return err
	}
	// The view cache is validated by HIGHESTMODSEQ, which an import leaves
	// as it is: drop this process's cached view of the mailbox. (Other
	// processes cannot have one worth keeping: a store is imported while
	// no server uses it.)
	s.views.drop(mailboxID)
	return nil
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
	return s.submit(ctx, &op{run: func(w *writer) error {
		mb, err := w.mailboxByID(mailboxID)
		if err != nil {
			return err
		}
		if err := w.checkImportPlace(&mb, log); err != nil {
			return err
		}
		for _, e := range log {
			if _, err := w.exec(`INSERT INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)`, mb.ID, e.UID, e.ModSeq); err != nil {
				return err
			}
		}
		return nil
	}})
}

// checkImportPlace checks imported UIDs and MODSEQs against the mailbox
// inside the transaction: each UID below UIDNEXT and not present (neither
// a message nor an expunge-log entry), each MODSEQ at most HIGHESTMODSEQ.
func (w *writer) checkImportPlace(mb *mailstore.Mailbox, es []mailstore.Expunged) error {
	if err := mailstore.CheckImportBounds(mb, es); err != nil {
		return err
	}
	for _, e := range es {
		var one int
		err := w.row(`SELECT 1 FROM messages WHERE mailbox_id = ?1 AND uid = ?2
			UNION ALL SELECT 1 FROM expunged WHERE mailbox_id = ?1 AND uid = ?2`, mb.ID, e.UID).Scan(&one)
		if err == nil {
			return fmt.Errorf("%w: import into %q: UID %d is already present", mailstore.ErrNotAllowed, mb.Name, e.UID)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	return nil
}

// drop forgets the cached view of a mailbox.
func (c *viewCache) drop(mailboxID int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, mailboxID)
}
