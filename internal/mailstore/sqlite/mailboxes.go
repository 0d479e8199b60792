package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/letterbox/letterbox/internal/mailstore"
)

const mailboxCols = `id, account_id, name, special_use, subscribed, uid_validity, uid_next, highest_modseq, messages, unseen, size`

func scanMailbox(sc scanner) (mailstore.Mailbox, error) {
	var mb mailstore.Mailbox
	var uidNext int64
	err := sc.Scan(&mb.ID, &mb.AccountID, &mb.Name, &mb.SpecialUse, &mb.Subscribed, &mb.UIDValidity,
		&uidNext, &mb.HighestModSeq, &mb.Messages, &mb.Unseen, &mb.Size)
	mb.UIDNext = mailstore.UID(min(uidNext, math.MaxUint32))
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
	rows, err := s.query(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE account_id = ? ORDER BY name`, accountID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	defer rows.Close()
	var out []mailstore.Mailbox
	for rows.Next() {
		mb, err := scanMailbox(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		out = append(out, mb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
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
	mb, err := scanMailbox(s.queryRow(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return mb, mailstore.ErrNoSuchMailbox
	}
	if err != nil {
		return mb, fmt.Errorf("sqlite: %w", err)
	}
	return mb, nil
}

// mailboxByID reads a mailbox by ID from the reader pool.
func (s *Store) mailboxByID(ctx context.Context, id int64) (mailstore.Mailbox, error) {
	mb, err := scanMailbox(s.queryRow(ctx, `SELECT `+mailboxCols+` FROM mailboxes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return mb, mailstore.ErrNoSuchMailbox
	}
	if err != nil {
		return mb, fmt.Errorf("sqlite: %w", err)
	}
	return mb, nil
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
	err = s.submit(ctx, &op{run: func(w *writer) error {
		var one int
		err := w.row(`SELECT 1 FROM accounts WHERE id = ?`, accountID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return mailstore.ErrNoSuchAccount
		} else if err != nil {
			return err
		}
		mb, err = w.createMailbox(accountID, name, specialUse, false)
		return err
	}})
	return mb, err
}

// createMailbox inserts a mailbox (name canonical) and publishes its
// creation.
//
// UIDVALIDITY scheme: meta.last_uidvalidity holds the highest value ever
// handed out in this database; a new mailbox gets max(last+1, now in Unix
// seconds). Values therefore strictly increase across the whole database
// and a value is never given twice, so no name ever sees an earlier
// UIDVALIDITY again, also after delete and re-create, or after deleting and
// re-creating the account. The time component keeps values increasing even
// against a database restored from an older backup.
func (w *writer) createMailbox(accountID int64, name, specialUse string, subscribed bool) (mailstore.Mailbox, error) {
	var one int
	err := w.row(`SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, name).Scan(&one)
	if err == nil {
		return mailstore.Mailbox{}, mailstore.ErrMailboxExists
	} else if !errors.Is(err, sql.ErrNoRows) {
		return mailstore.Mailbox{}, err
	}
	uv, err := w.nextUIDValidity()
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	mb, err := scanMailbox(w.row(`INSERT INTO mailboxes (account_id, name, special_use, subscribed, uid_validity, uid_next, highest_modseq)
		VALUES (?, ?, ?, ?, ?, 1, 1) RETURNING `+mailboxCols, accountID, name, specialUse, subscribed, uv))
	if err != nil {
		return mailstore.Mailbox{}, err
	}
	w.publishLater(accountID, mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: mb.ID, MailboxName: mb.Name})
	return mb, nil
}

func (w *writer) nextUIDValidity() (uint32, error) {
	var last int64
	if err := w.row(`SELECT value FROM meta WHERE key = 'last_uidvalidity'`).Scan(&last); err != nil {
		return 0, err
	}
	next := max(last+1, w.now.Unix())
	if next > math.MaxUint32 {
		return 0, errors.New("sqlite: UIDVALIDITY space exhausted")
	}
	if _, err := w.exec(`UPDATE meta SET value = ? WHERE key = 'last_uidvalidity'`, next); err != nil {
		return 0, err
	}
	return uint32(next), nil
}

// mailboxByID reads a mailbox inside the write transaction.
func (w *writer) mailboxByID(id int64) (mailstore.Mailbox, error) {
	mb, err := scanMailbox(w.row(`SELECT `+mailboxCols+` FROM mailboxes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return mb, mailstore.ErrNoSuchMailbox
	}
	return mb, err
}

func (w *writer) mailboxByName(accountID int64, name string) (mailstore.Mailbox, error) {
	mb, err := scanMailbox(w.row(`SELECT `+mailboxCols+` FROM mailboxes WHERE account_id = ? AND name = ?`, accountID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return mb, mailstore.ErrNoSuchMailbox
	}
	return mb, err
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
	return s.submit(ctx, &op{run: func(w *writer) error {
		src, err := w.mailboxByName(accountID, oldName)
		if err != nil {
			return err
		}
		if _, err := w.mailboxByName(accountID, newName); err == nil {
			return mailstore.ErrMailboxExists
		} else if !errors.Is(err, mailstore.ErrNoSuchMailbox) {
			return err
		}
		if oldName == mailstore.Inbox {
			return w.renameInbox(src, newName)
		}
		if mailstore.IsChildOf(newName, oldName) {
			return fmt.Errorf("%w: cannot rename a mailbox into its own hierarchy", mailstore.ErrNotAllowed)
		}
		return w.renameTree(src, newName)
	}})
}

// renameTree renames src and its children to newName (which does not
// exist).
func (w *writer) renameTree(src mailstore.Mailbox, newName string) error {
	// Children are the names in [old+"/", old+"0"): '0' follows '/' in
	// byte order, and names compare bytewise (BINARY collation).
	sep := string(mailstore.HierarchySeparator)
	rows, err := w.query(`SELECT id, name FROM mailboxes WHERE account_id = ? AND name >= ? AND name < ? ORDER BY name`,
		src.AccountID, src.Name+sep, src.Name+string(rune(mailstore.HierarchySeparator+1)))
	if err != nil {
		return err
	}
	type ren struct {
		id       int64
		old, new string
	}
	list := []ren{{src.ID, src.Name, newName}}
	for rows.Next() {
		var r ren
		if err := rows.Scan(&r.id, &r.old); err != nil {
			rows.Close()
			return err
		}
		r.new = newName + strings.TrimPrefix(r.old, src.Name)
		list = append(list, r)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	renamed := make(map[string]bool, len(list))
	for _, r := range list {
		renamed[r.old] = true
	}
	for _, r := range list[1:] {
		if renamed[r.new] {
			continue // freed by this rename
		}
		if _, err := w.mailboxByName(src.AccountID, r.new); err == nil {
			return mailstore.ErrMailboxExists
		} else if !errors.Is(err, mailstore.ErrNoSuchMailbox) {
			return err
		}
	}
	// Two passes, so that a new name equal to an old name of the same tree
	// never collides transiently: first to unique impossible names (NUL
	// is never valid in a name), then to the final ones.
	for _, r := range list {
		if _, err := w.exec(`UPDATE mailboxes SET name = ? WHERE id = ?`, fmt.Sprintf("\x00rename-%d", r.id), r.id); err != nil {
			return err
		}
	}
	for _, r := range list {
		if _, err := w.exec(`UPDATE mailboxes SET name = ? WHERE id = ?`, r.new, r.id); err != nil {
			return err
		}
		w.publishLater(src.AccountID, mailstore.Change{Kind: mailstore.ChangeMailboxRename, MailboxID: r.id, MailboxName: r.new, OldName: r.old})
	}
	return nil
}

// renameInbox implements RENAME INBOX (RFC 3501 §6.3.5): a new mailbox is
// created and all of INBOX's messages move to it, with new UIDs; INBOX stays
// with its UIDVALIDITY, now empty, and sessions see the moved messages
// expunged. Children of INBOX are not renamed.
func (w *writer) renameInbox(inbox mailstore.Mailbox, newName string) error {
	dst, err := w.createMailbox(inbox.AccountID, newName, "", true)
	if err != nil {
		return err
	}
	msgs, err := w.allMessages(inbox.ID)
	if err != nil {
		return err
	}
	if _, err := w.copyMessages(msgs, &dst); err != nil {
		return err
	}
	_, err = w.expunge(&inbox, msgs)
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
	return s.submit(ctx, &op{run: func(w *writer) error {
		mb, err := w.mailboxByName(accountID, name)
		if err != nil {
			return err
		}
		if _, err := w.exec(`DELETE FROM mailboxes WHERE id = ?`, mb.ID); err != nil {
			return err
		}
		w.publishLater(accountID, mailstore.Change{Kind: mailstore.ChangeMailboxDelete, MailboxID: mb.ID, MailboxName: mb.Name})
		return nil
	}})
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
	return s.submit(ctx, &op{run: func(w *writer) error {
		res, err := w.exec(`UPDATE mailboxes SET subscribed = ? WHERE account_id = ? AND name = ?`, subscribed, accountID, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return mailstore.ErrNoSuchMailbox
		}
		return nil
	}})
}
