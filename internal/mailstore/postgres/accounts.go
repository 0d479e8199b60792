package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// querier is what a pool and a transaction have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const accountCols = `id, name, password_hash, created, quota_bytes, quota_messages, scram_sha256`

func scanAccount(row pgx.Row) (mailstore.Account, error) {
	var a mailstore.Account
	var created int64
	if err := row.Scan(&a.ID, &a.Name, &a.PasswordHash, &created, &a.QuotaBytes, &a.QuotaMessages, &a.SCRAMSHA256); err != nil {
		return a, err
	}
	a.Created = fromNanos(created)
	return a, nil
}

// CreateAccount creates an account and its DefaultMailboxes, subscribed.
func (s *Store) CreateAccount(ctx context.Context, name, passwordHash string) (mailstore.Account, error) {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return mailstore.Account{}, err
	}
	if err := s.enter(); err != nil {
		return mailstore.Account{}, err
	}
	defer s.leave()
	var acct mailstore.Account
	err = s.txn(ctx, func(tx pgx.Tx) error {
		now := time.Now()
		a, err := scanAccount(tx.QueryRow(ctx, `INSERT INTO accounts (name, password_hash, created) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO NOTHING RETURNING `+accountCols, name, passwordHash, nanos(now)))
		if errors.Is(err, pgx.ErrNoRows) {
			return mailstore.ErrAccountExists
		} else if err != nil {
			return err
		}
		for _, mb := range mailstore.DefaultMailboxes {
			if _, err := createMailbox(ctx, tx, now, a.ID, mb.Name, mb.SpecialUse, true); err != nil {
				return err
			}
		}
		acct = a
		return nil
	})
	if err != nil {
		return mailstore.Account{}, err
	}
	// Nobody can be subscribed to an account that did not exist: no
	// notification.
	return acct, nil
}

// Account looks an account up by name (case-insensitive). A name that is not
// a valid account name yields ErrNoSuchAccount.
func (s *Store) Account(ctx context.Context, name string) (mailstore.Account, error) {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return mailstore.Account{}, mailstore.ErrNoSuchAccount
	}
	if err := s.enter(); err != nil {
		return mailstore.Account{}, err
	}
	defer s.leave()
	a, err := scanAccount(s.pool.QueryRow(ctx, `SELECT `+accountCols+` FROM accounts WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return a, mailstore.ErrNoSuchAccount
	}
	return a, dbErr(err)
}

// SetPasswordHash replaces the account's password hash and removes its
// SCRAM secret (it derives from the old password).
func (s *Store) SetPasswordHash(ctx context.Context, name, passwordHash string) error {
	return s.SetCredentials(ctx, name, passwordHash, "")
}

// SetCredentials replaces the account's password hash and SCRAM secret in
// one statement.
func (s *Store) SetCredentials(ctx context.Context, name, passwordHash, scramSHA256 string) error {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return mailstore.ErrNoSuchAccount
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	tag, err := s.pool.Exec(ctx, `UPDATE accounts SET password_hash = $1, scram_sha256 = $2 WHERE name = $3`,
		passwordHash, scramSHA256, name)
	if err != nil {
		return dbErr(err)
	}
	if tag.RowsAffected() == 0 {
		return mailstore.ErrNoSuchAccount
	}
	return nil
}

// SetSCRAMIfHash sets the account's SCRAM secret if its password hash is
// still passwordHash. The comparison and the update are one UPDATE, which
// PostgreSQL re-checks against the latest row version if a concurrent
// password change commits first (READ COMMITTED), so the account never
// ends up with a new hash and the old password's secret.
func (s *Store) SetSCRAMIfHash(ctx context.Context, name, passwordHash, scramSHA256 string) (bool, error) {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return false, mailstore.ErrNoSuchAccount
	}
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.leave()
	tag, err := s.pool.Exec(ctx, `UPDATE accounts SET scram_sha256 = $1 WHERE name = $2 AND password_hash = $3`,
		scramSHA256, name, passwordHash)
	if err != nil {
		return false, dbErr(err)
	}
	if tag.RowsAffected() == 1 {
		return true, nil
	}
	var id int64
	if err := s.pool.QueryRow(ctx, `SELECT id FROM accounts WHERE name = $1`, name).Scan(&id); errors.Is(err, pgx.ErrNoRows) {
		return false, mailstore.ErrNoSuchAccount
	} else if err != nil {
		return false, dbErr(err)
	}
	return false, nil
}

// DeleteAccount removes the account with its mailboxes and messages (their
// blobs become garbage). Subscribers see a ChangeMailboxDelete per mailbox.
func (s *Store) DeleteAccount(ctx context.Context, name string) error {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return mailstore.ErrNoSuchAccount
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	var id int64
	err = s.txn(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT id FROM accounts WHERE name = $1`, name).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return mailstore.ErrNoSuchAccount
		} else if err != nil {
			return err
		}
		// Mailbox rows first, in ID order, like every writer: the
		// cascade then finds them locked by us.
		if _, err := tx.Exec(ctx, `SELECT id FROM mailboxes WHERE account_id = $1 ORDER BY id FOR UPDATE`, id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM accounts WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return mailstore.ErrNoSuchAccount
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.changed(ctx, id)
	return nil
}

// Accounts lists all accounts ordered by name.
func (s *Store) Accounts(ctx context.Context) ([]mailstore.Account, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.pool.Query(ctx, `SELECT `+accountCols+` FROM accounts ORDER BY name`)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []mailstore.Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, dbErr(err)
		}
		out = append(out, a)
	}
	return out, dbErr(rows.Err())
}

// --- quotas ---

// Quota (mailstore.Usage): the limits are accounts.quota_bytes and
// accounts.quota_messages (0 = none); usage is the sum of the per-mailbox
// counters mailboxes.size and mailboxes.messages, which every write keeps
// exact.
//
// Enforcement: every operation that grows an account locks the account's
// row (FOR NO KEY UPDATE, after the mailbox rows it changes) in the
// transaction that adds the messages, and only then reads the limits and
// the usage. Two operations that grow one account, on any node, therefore
// serialise on that row, and each sees the other's committed counters:
// they can never both pass a check that only one of them fits. SetQuota's
// UPDATE takes the same row lock, so a new limit applies to every change
// that commits after it.

const qUsage = `SELECT a.quota_bytes, a.quota_messages,
	coalesce((SELECT sum(size) FROM mailboxes WHERE account_id = a.id), 0)::bigint,
	coalesce((SELECT sum(messages) FROM mailboxes WHERE account_id = a.id), 0)::bigint
	FROM accounts a WHERE a.id = $1`

func scanUsage(row pgx.Row) (mailstore.Usage, error) {
	var u mailstore.Usage
	err := row.Scan(&u.QuotaBytes, &u.QuotaMessages, &u.Bytes, &u.Messages)
	if errors.Is(err, pgx.ErrNoRows) {
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
	tag, err := s.pool.Exec(ctx, `UPDATE accounts SET quota_bytes = $1, quota_messages = $2 WHERE name = $3`, bytes, messages, name)
	if err != nil {
		return dbErr(err)
	}
	if tag.RowsAffected() == 0 {
		return mailstore.ErrNoSuchAccount
	}
	return nil
}

// Usage returns the account's usage and limits from one snapshot (one
// statement).
func (s *Store) Usage(ctx context.Context, accountID int64) (mailstore.Usage, error) {
	if err := s.enter(); err != nil {
		return mailstore.Usage{}, err
	}
	defer s.leave()
	u, err := scanUsage(s.pool.QueryRow(ctx, qUsage, accountID))
	return u, dbErr(err)
}

// lockAccounts locks the rows of the given accounts (ascending) for an
// operation that may grow them, and returns their limits. Accounts that
// do not exist are absent from the result.
func lockAccounts(ctx context.Context, tx pgx.Tx, ids []int64) (map[int64][2]int64, error) {
	rows, err := tx.Query(ctx, `SELECT id, quota_bytes, quota_messages FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[int64][2]int64, len(ids))
	for rows.Next() {
		var id, qb, qm int64
		if err := rows.Scan(&id, &qb, &qm); err != nil {
			return nil, err
		}
		out[id] = [2]int64{qb, qm}
	}
	return out, rows.Err()
}

// checkQuota fails with ErrOverQuota when the account may not grow by
// bytes octets and messages messages (mailstore.Usage.Allows). It locks
// the account row (see above) and must run after the caller locked the
// mailbox rows it changes and before it writes any of them.
func checkQuota(ctx context.Context, tx pgx.Tx, accountID, bytes, messages int64) error {
	limits, err := lockAccounts(ctx, tx, []int64{accountID})
	if err != nil {
		return err
	}
	l, ok := limits[accountID]
	if !ok {
		return mailstore.ErrNoSuchAccount
	}
	return checkUsage(ctx, tx, accountID, l, bytes, messages)
}

// checkUsage checks the growth against the limits l of a locked account.
func checkUsage(ctx context.Context, tx pgx.Tx, accountID int64, l [2]int64, bytes, messages int64) error {
	if l[0] == 0 && l[1] == 0 {
		return nil // the common case costs no usage query
	}
	u, err := scanUsage(tx.QueryRow(ctx, qUsage, accountID))
	if err != nil {
		return err
	}
	if !u.Allows(bytes, messages) {
		return overQuota(u, bytes, messages)
	}
	return nil
}

func overQuota(u mailstore.Usage, bytes, messages int64) error {
	return fmt.Errorf("%w: account uses %d of %d octets and %d of %d messages, adding %d octets in %d messages",
		mailstore.ErrOverQuota, u.Bytes, u.QuotaBytes, u.Messages, u.QuotaMessages, bytes, messages)
}
