package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/letterbox/letterbox/internal/mailstore"
)

const accountCols = `id, name, password_hash, created, quota_bytes, quota_messages, scram_sha256`

func scanAccount(sc scanner) (mailstore.Account, error) {
	var a mailstore.Account
	var created int64
	if err := sc.Scan(&a.ID, &a.Name, &a.PasswordHash, &created, &a.QuotaBytes, &a.QuotaMessages, &a.SCRAMSHA256); err != nil {
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
	err = s.submit(ctx, &op{run: func(w *writer) error {
		var id int64
		err := w.row(`SELECT id FROM accounts WHERE name = ?`, name).Scan(&id)
		if err == nil {
			return mailstore.ErrAccountExists
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		a, err := scanAccount(w.row(`INSERT INTO accounts (name, password_hash, created) VALUES (?, ?, ?) RETURNING `+accountCols,
			name, passwordHash, nanos(w.now)))
		if err != nil {
			return err
		}
		for _, mb := range mailstore.DefaultMailboxes {
			if _, err := w.createMailbox(a.ID, mb.Name, mb.SpecialUse, true); err != nil {
				return err
			}
		}
		acct = a
		return nil
	}})
	if err != nil {
		return mailstore.Account{}, err
	}
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
	a, err := scanAccount(s.queryRow(ctx, `SELECT `+accountCols+` FROM accounts WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return a, mailstore.ErrNoSuchAccount
	}
	if err != nil {
		return a, fmt.Errorf("sqlite: %w", err)
	}
	return a, nil
}

// SetPasswordHash replaces the account's password hash and removes its
// SCRAM secret (it derives from the old password).
func (s *Store) SetPasswordHash(ctx context.Context, name, passwordHash string) error {
	return s.SetCredentials(ctx, name, passwordHash, "")
}

// SetCredentials replaces the account's password hash and SCRAM secret in
// one transaction.
func (s *Store) SetCredentials(ctx context.Context, name, passwordHash, scramSHA256 string) error {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return mailstore.ErrNoSuchAccount
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	return s.submit(ctx, &op{run: func(w *writer) error {
		res, err := w.exec(`UPDATE accounts SET password_hash = ?, scram_sha256 = ? WHERE name = ?`,
			passwordHash, scramSHA256, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mailstore.ErrNoSuchAccount
		}
		return nil
	}})
}

// SetSCRAMIfHash sets the account's SCRAM secret if its password hash is
// still passwordHash. The comparison and the update are one UPDATE in one
// write transaction, so a password change committed by any process
// before it makes it a no-op, and one committed after it replaces both.
func (s *Store) SetSCRAMIfHash(ctx context.Context, name, passwordHash, scramSHA256 string) (bool, error) {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return false, mailstore.ErrNoSuchAccount
	}
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.leave()
	set := false
	err = s.submit(ctx, &op{run: func(w *writer) error {
		set = false
		res, err := w.exec(`UPDATE accounts SET scram_sha256 = ? WHERE name = ? AND password_hash = ?`,
			scramSHA256, name, passwordHash)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			set = true
			return nil
		}
		var id int64
		if err := w.row(`SELECT id FROM accounts WHERE name = ?`, name).Scan(&id); errors.Is(err, sql.ErrNoRows) {
			return mailstore.ErrNoSuchAccount
		} else if err != nil {
			return err
		}
		return nil
	}})
	return set && err == nil, err
}

// DeleteAccount removes the account with its mailboxes and messages (their
// blobs become garbage). A ChangeMailboxDelete is published per mailbox.
func (s *Store) DeleteAccount(ctx context.Context, name string) error {
	name, err := mailstore.CanonicalAccountName(name)
	if err != nil {
		return mailstore.ErrNoSuchAccount
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	return s.submit(ctx, &op{run: func(w *writer) error {
		var id int64
		err := w.row(`SELECT id FROM accounts WHERE name = ?`, name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return mailstore.ErrNoSuchAccount
		} else if err != nil {
			return err
		}
		rows, err := w.query(`SELECT id, name FROM mailboxes WHERE account_id = ? ORDER BY name`, id)
		if err != nil {
			return err
		}
		var gone []mailstore.Change
		for rows.Next() {
			c := mailstore.Change{Kind: mailstore.ChangeMailboxDelete}
			if err := rows.Scan(&c.MailboxID, &c.MailboxName); err != nil {
				rows.Close()
				return err
			}
			gone = append(gone, c)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if _, err := w.exec(`DELETE FROM accounts WHERE id = ?`, id); err != nil {
			return err
		}
		for _, c := range gone {
			w.publishLater(id, c)
		}
		return nil
	}})
}

// Accounts lists all accounts ordered by name.
func (s *Store) Accounts(ctx context.Context) ([]mailstore.Account, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.query(ctx, `SELECT `+accountCols+` FROM accounts ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	defer rows.Close()
	var out []mailstore.Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}
