package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/letterbox/letterbox/internal/mailstore"
)

const mailboxCols = `id, account_id, name, special_use, subscribed, uid_validity, uid_next, highest_modseq, messages, unseen, size`

func scanMailbox(row pgx.Row) (mailstore.Mailbox, error) {
	var mb mailstore.Mailbox
	var uidValidity, uidNext, messages, unseen int64
	err := row.Scan(&mb.ID, &mb.AccountID, &mb.Name, &mb.SpecialUse, &mb.Subscribed, &uidValidity,
		&uidNext, &mb.HighestModSeq, &messages, &unseen, &mb.Size)
	mb.UIDValidity = uint32(uidValidity)
	mb.UIDNext = mailstore.UID(min(uidNext, math.MaxUint32))
	mb.Messages = uint32(messages)
	mb.Unseen = uint32(unseen)
	return mb, err
}

// canonicalSpecialUse validates a special-use attribute.
func canonicalSpecialUse(su string) (string, error) {
	if su == "" {
		return "", nil
	}
	for _, v := range []string{mailstore.SpecialSent, mailstore.SpecialDrafts, mailstore.SpecialTrash,
		mailstore.SpecialJunk, mailstore.SpecialArchive} {
		if strings.EqualFold(su, v) {
			return v, nil
		}
	}
	return "", fmt.Errorf("%w: unsupported special-use attribute %q", mailstore.ErrNotAllowed, su)
}

// Mailboxes lists the account's mailboxes ordered by name (byte order).
func (s *Store) Mailboxes(ctx context.Context, accountID int64) ([]mailstore.Mailbox, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.pool.Query(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE account_id = $1 ORDER BY name`, accountID)
	if err != nil {
		return nil, dbErr(err)
	}
	defer rows.Close()
	var out []mailstore.Mailbox
	for rows.Next() {
		mb, err := scanMailbox(rows)
		if err != nil {
			return nil, dbErr(err)
		}
		out = append(out, mb)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(err)
	}
	if len(out) == 0 {
		// Every account has an INBOX, so no mailboxes means no account.
		return nil, mailstore.ErrNoSuchAccount
	}
	return out, nil
}

// Mailbox looks a mailbox up by name; "inbox" in any case is INBOX. A name
// that is not valid yields ErrNoSuchMailbox.
func (s *Store) Mailbox(ctx context.Context, accountID int64, name string) (mailstore.Mailbox, error) {
	name, err := mailstore.CanonicalMailboxName(name)
	if err != nil {
		return mailstore.Mailbox{}, mailstore.ErrNoSuchMailbox
	}
	if err := s.enter(); err != nil {
		return mailstore.Mailbox{}, err
	}
	defer s.leave()
	mb, err := scanMailbox(s.pool.QueryRow(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE account_id = $1 AND name = $2`, accountID, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return mb, mailstore.ErrNoSuchMailbox
	}
	return mb, dbErr(err)
}

// mailboxByID reads a mailbox by ID.
func (s *Store) mailboxByID(ctx context.Context, id int64) (mailstore.Mailbox, error) {
	mb, err := scanMailbox(s.pool.QueryRow(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return mb, mailstore.ErrNoSuchMailbox
	}
	return mb, dbErr(err)
}

// lockMailbox reads a mailbox and locks its row until the end of tx: the
// lock that orders every allocation of UIDs and MODSEQs in the mailbox.
func lockMailbox(ctx context.Context, tx pgx.Tx, id int64) (mailstore.Mailbox, error) {
	mb, err := scanMailbox(tx.QueryRow(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE id = $1 FOR NO KEY UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return mb, mailstore.ErrNoSuchMailbox
	}
	return mb, err
}

// lockMailboxes locks several mailbox rows in ascending ID order (the order
// every writer uses, so that writers never deadlock on each other) and
// returns them by ID; IDs that do not exist are absent.
func lockMailboxes(ctx context.Context, tx pgx.Tx, ids []int64) (map[int64]*mailstore.Mailbox, error) {
	rows, err := tx.Query(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[int64]*mailstore.Mailbox, len(ids))
	for rows.Next() {
		mb, err := scanMailbox(rows)
		if err != nil {
			return nil, err
		}
		out[mb.ID] = &mb
	}
	return out, rows.Err()
}

// CreateMailbox creates a mailbox with a fresh UIDVALIDITY.
func (s *Store) CreateMailbox(ctx context.Context, accountID int64, name, specialUse string) (mailstore.Mailbox, error) {
	name, err := mailstore.CanonicalMailboxName(name)
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	specialUse, err = canonicalSpecialUse(specialUse)
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	if err := s.enter(); err != nil {
		return mailstore.Mailbox{}, err
	}
	defer s.leave()
	var mb mailstore.Mailbox
	err = s.txn(ctx, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM accounts WHERE id = $1 FOR KEY SHARE`, accountID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return mailstore.ErrNoSuchAccount
		} else if err != nil {
			return err
		}
		mb, err = createMailbox(ctx, tx, time.Now(), accountID, name, specialUse, false)
		return err
	})
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	s.changed(ctx, accountID)
	return mb, nil
}

// createMailbox inserts a mailbox (name canonical).
//
// UIDVALIDITY scheme (as in the sqlite backend): meta.last_uidvalidity
// holds the highest value ever handed out in this database; a new mailbox
// gets max(last+1, now in Unix seconds). The UPDATE locks the meta row
// until the transaction ends, so values strictly increase across the
// whole database, on every node, and a value is never given twice.
func createMailbox(ctx context.Context, tx pgx.Tx, now time.Time, accountID int64, name, specialUse string, subscribed bool) (mailstore.Mailbox, error) {
	var exists int
	err := tx.QueryRow(ctx, `SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2`, accountID, name).Scan(&exists)
	if err == nil {
		return mailstore.Mailbox{}, mailstore.ErrMailboxExists
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return mailstore.Mailbox{}, err
	}
	uv, err := nextUIDValidity(ctx, tx, now)
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	mb, err := scanMailbox(tx.QueryRow(ctx, `INSERT INTO mailboxes (account_id, name, special_use, subscribed, uid_validity, uid_next, highest_modseq)
		VALUES ($1, $2, $3, $4, $5, 1, 1) ON CONFLICT (account_id, name) DO NOTHING RETURNING `+mailboxCols,
		accountID, name, specialUse, subscribed, uv))
	if errors.Is(err, pgx.ErrNoRows) {
		return mailstore.Mailbox{}, mailstore.ErrMailboxExists // created meanwhile by another node
	}
	return mb, err
}

func nextUIDValidity(ctx context.Context, tx pgx.Tx, now time.Time) (uint32, error) {
	return reserveUIDValidity(ctx, tx, now.Unix())
}

// reserveUIDValidity raises meta.last_uidvalidity to at least floor (and
// by one at least) and returns the new value.
func reserveUIDValidity(ctx context.Context, tx pgx.Tx, floor int64) (uint32, error) {
	var next int64
	if err := tx.QueryRow(ctx, `UPDATE meta SET value = greatest(value + 1, $1) WHERE key = 'last_uidvalidity' RETURNING value`,
		floor).Scan(&next); err != nil {
		return 0, err
	}
	if next > math.MaxUint32 {
		return 0, errors.New("postgres: UIDVALIDITY space exhausted")
	}
	return uint32(next), nil
}

// RenameMailbox renames a mailbox and its children; renaming INBOX moves its
// messages to a new mailbox and leaves INBOX (and its children) in place.
func (s *Store) RenameMailbox(ctx context.Context, accountID int64, oldName, newName string) error {
	oldName, err := mailstore.CanonicalMailboxName(oldName)
	if err != nil {
		return mailstore.ErrNoSuchMailbox
	}
	newName, err = mailstore.CanonicalMailboxName(newName)
	if err != nil {
		return err
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	err = s.txn(ctx, func(tx pgx.Tx) error {
		var srcID int64
		err := tx.QueryRow(ctx, `SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2`, accountID, oldName).Scan(&srcID)
		if errors.Is(err, pgx.ErrNoRows) {
			return mailstore.ErrNoSuchMailbox
		} else if err != nil {
			return err
		}
		var exists int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2`, accountID, newName).Scan(&exists); err == nil {
			return mailstore.ErrMailboxExists
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if oldName == mailstore.Inbox {
			return renameInbox(ctx, tx, srcID, newName)
		}
		if mailstore.IsChildOf(newName, oldName) {
			return fmt.Errorf("%w: cannot rename a mailbox into its own hierarchy", mailstore.ErrNotAllowed)
		}
		return renameTree(ctx, tx, accountID, srcID, oldName, newName)
	})
	if err != nil {
		return err
	}
	s.changed(ctx, accountID)
	return nil
}

// renameTree renames the mailbox oldName and its children to newName
// (which does not exist).
func renameTree(ctx context.Context, tx pgx.Tx, accountID, srcID int64, oldName, newName string) error {
	// Children are the names in [old+"/", old+"0"): '0' follows '/' in
	// byte order, and names compare bytewise (collation "C"). The rows
	// are locked in ID order, like every writer locks mailboxes.
	sep := string(mailstore.HierarchySeparator)
	rows, err := tx.Query(ctx, `SELECT id, name FROM mailboxes WHERE account_id = $1 AND (id = $2 OR (name >= $3 AND name < $4))
		ORDER BY id FOR NO KEY UPDATE`, accountID, srcID, oldName+sep, oldName+string(rune(mailstore.HierarchySeparator+1)))
	if err != nil {
		return err
	}
	var ids []int64
	var olds, news []string
	renamed := map[string]bool{}
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
		olds = append(olds, name)
		news = append(news, newName+strings.TrimPrefix(name, oldName))
		renamed[name] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if !renamed[oldName] {
		return mailstore.ErrNoSuchMailbox // renamed or deleted meanwhile
	}
	var check []string
	for _, n := range news {
		if !renamed[n] { // a name freed by this rename is no collision
			check = append(check, n)
		}
	}
	var clash int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM mailboxes WHERE account_id = $1 AND name = ANY($2)`, accountID, check).Scan(&clash); err != nil {
		return err
	}
	if clash > 0 {
		return mailstore.ErrMailboxExists
	}
	// Two passes, so that a new name equal to an old name of the same tree
	// never collides transiently with the unique index: first to unique
	// impossible names (control characters are never valid in a name),
	// then to the final ones.
	if _, err := tx.Exec(ctx, `UPDATE mailboxes SET name = chr(1) || 'rename-' || id WHERE id = ANY($1)`, ids); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE mailboxes m SET name = v.name FROM unnest($1::bigint[], $2::text[]) AS v(id, name) WHERE m.id = v.id`, ids, news)
	return err
}

// renameInbox implements RENAME INBOX (RFC 3501 §6.3.5): a new mailbox is
// created and all of INBOX's messages move to it, with new UIDs; INBOX stays
// with its UIDVALIDITY, now empty, and sessions see the moved messages
// expunged. Children of INBOX are not renamed.
func renameInbox(ctx context.Context, tx pgx.Tx, inboxID int64, newName string) error {
	inbox, err := lockMailbox(ctx, tx, inboxID)
	if err != nil {
		return err
	}
	now := time.Now()
	dst, err := createMailbox(ctx, tx, now, inbox.AccountID, newName, "", true)
	if err != nil {
		return err
	}
	msgs, err := selectMessages(ctx, tx, inbox.ID, nil)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	if _, err := appendRows(ctx, tx, &dst, now, copiesOf(msgs)); err != nil {
		return err
	}
	_, err = expunge(ctx, tx, &inbox, uidsOfRows(msgs))
	return err
}

// DeleteMailbox deletes a mailbox and its messages (their blobs become
// garbage). Children are not deleted. INBOX cannot be deleted.
func (s *Store) DeleteMailbox(ctx context.Context, accountID int64, name string) error {
	name, err := mailstore.CanonicalMailboxName(name)
	if err != nil {
		return mailstore.ErrNoSuchMailbox
	}
	if name == mailstore.Inbox {
		return fmt.Errorf("%w: INBOX cannot be deleted", mailstore.ErrNotAllowed)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	err = s.txn(ctx, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, `DELETE FROM mailboxes WHERE account_id = $1 AND name = $2 RETURNING id`, accountID, name).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return mailstore.ErrNoSuchMailbox
		}
		return err
	})
	if err != nil {
		return err
	}
	s.changed(ctx, accountID)
	return nil
}

// SetSubscribed sets the subscription flag of a mailbox.
func (s *Store) SetSubscribed(ctx context.Context, accountID int64, name string, subscribed bool) error {
	name, err := mailstore.CanonicalMailboxName(name)
	if err != nil {
		return mailstore.ErrNoSuchMailbox
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	tag, err := s.pool.Exec(ctx, `UPDATE mailboxes SET subscribed = $1 WHERE account_id = $2 AND name = $3`, subscribed, accountID, name)
	if err != nil {
		return dbErr(err)
	}
	if tag.RowsAffected() == 0 {
		return mailstore.ErrNoSuchMailbox
	}
	return nil
}
