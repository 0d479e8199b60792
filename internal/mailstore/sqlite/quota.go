package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// Quota (mailstore.Usage): the limits are accounts.quota_bytes and
// accounts.quota_messages (0 = none); usage is the sum of the per-mailbox
// counters mailboxes.size and mailboxes.messages, which every write keeps
// exact (appendRow, expunge, and the row deletions of DeleteMailbox and
// DeleteAccount, which take their counters with them). Summing a handful of
// mailbox rows of one account (the (account_id, name) index) is cheaper
// than keeping a second per-account counter in step.
//
// Enforcement runs inside the committer's write transaction, in the
// savepoint of the operation that grows the account, before any of its
// rows is written: checkQuota reads the limits and the usage as committed
// by every earlier operation (of this batch, of earlier batches, and of
// other processes, whose write transactions SQLite serialises with ours),
// so two concurrent appends can never both pass a check that only one of
// them fits.

const qUsage = `SELECT a.quota_bytes, a.quota_messages,
	coalesce((SELECT sum(size) FROM mailboxes WHERE account_id = a.id), 0),
	coalesce((SELECT sum(messages) FROM mailboxes WHERE account_id = a.id), 0)
	FROM accounts a WHERE a.id = ?`

func scanUsage(sc scanner) (mailstore.Usage, error) {
	var u mailstore.Usage
	err := sc.Scan(&u.QuotaBytes, &u.QuotaMessages, &u.Bytes, &u.Messages)
	if errors.Is(err, sql.ErrNoRows) {
		return u, mailstore.ErrNoSuchAccount
	}
	return u, err
}

// SetQuota sets the account's quota limits.
func (s *Store) SetQuota(ctx context.Context, name string, bytes, messages int64) error {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return mailstore.ErrNoSuchAccount
	}
	if bytes < 0 || messages < 0 {
		return fmt.Errorf("%w: negative quota", mailstore.ErrNotAllowed)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	return s.submit(ctx, &op{run: func(w *writer) error {
		res, err := w.exec(`UPDATE accounts SET quota_bytes = ?, quota_messages = ? WHERE name = ?`, bytes, messages, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mailstore.ErrNoSuchAccount
		}
		return nil
	}})
}

// Usage returns the account's usage and limits from one read snapshot
// (one statement).
func (s *Store) Usage(ctx context.Context, accountID int64) (mailstore.Usage, error) {
	if err := s.enter(); err != nil {
		return mailstore.Usage{}, err
	}
	defer s.leave()
	u, err := scanUsage(s.queryRow(ctx, qUsage, accountID))
	if err != nil && !errors.Is(err, mailstore.ErrNoSuchAccount) {
		return u, fmt.Errorf("sqlite: %w", err)
	}
	return u, err
}

// checkQuota fails with ErrOverQuota when the account may not grow by
// bytes octets and messages messages (mailstore.Usage.Allows). It must
// run before the operation writes any of the rows it checks for: it reads
// the counters as stored, not the caller's in-memory Mailbox.
func (w *writer) checkQuota(accountID, bytes, messages int64) error {
	var qb, qm int64
	err := w.row(`SELECT quota_bytes, quota_messages FROM accounts WHERE id = ?`, accountID).Scan(&qb, &qm)
	if errors.Is(err, sql.ErrNoRows) {
		return mailstore.ErrNoSuchAccount
	}
	if err != nil {
		return err
	}
	if qb == 0 && qm == 0 {
		return nil // the common case costs one primary-key lookup
	}
	u, err := scanUsage(w.row(qUsage, accountID))
	if err != nil {
		return err
	}
	if !u.Allows(bytes, messages) {
		return fmt.Errorf("%w: account uses %d of %d octets and %d of %d messages, adding %d octets in %d messages",
			mailstore.ErrOverQuota, u.Bytes, u.QuotaBytes, u.Messages, u.QuotaMessages, bytes, messages)
	}
	return nil
}
