package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/blobfs"
	"github.com/letterbox/letterbox/internal/message"
)

// msgRow is a message as the writer sees it.
type msgRow struct {
	mailstore.Message
	seen    bool
	blobRow int64 // blobs.id
}

// msgCols selects a message joined with its blob ("m" and "b").
const msgCols = `m.uid, m.modseq, m.flags, m.internal_date, m.save_date, b.size, b.hash, m.seen, m.blob_id`
const msgFrom = ` FROM messages m JOIN blobs b ON b.id = m.blob_id `

func scanMsg(sc scanner) (msgRow, error) {
	var r msgRow
	var flags string
	var idate, sdate int64
	err := sc.Scan(&r.UID, &r.ModSeq, &flags, &idate, &sdate, &r.Size, &r.BlobID, &r.seen, &r.blobRow)
	r.Flags = decodeFlags(flags)
	r.InternalDate = fromNanos(idate)
	r.SaveDate = fromNanos(sdate)
	return r, err
}

func encodeFlags(flags []string) string { return strings.Join(flags, " ") }

func decodeFlags(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, " ")
}

// spooled is a finished spool with the structure computed from its bytes.
type spooled struct {
	sp        *blobfs.Spool
	id        string
	size      int64
	structure []byte
}

// finishSpool fsyncs the spool, and computes the message structure by
// reading the spool file back: once per message, whatever the number of
// recipients, and never again at FETCH time.
func (s *Store) finishSpool(sp mailstore.Spool) (*spooled, error) {
	bs, ok := sp.(*blobfs.Spool)
	if !ok {
		return nil, fmt.Errorf("sqlite: spool %T was not created by this store", sp)
	}
	id, err := bs.Finish()
	if err != nil {
		return nil, err
	}
	part, err := message.Parse(bs.NewReader())
	if err != nil {
		return nil, fmt.Errorf("sqlite: parse spooled message: %w", err)
	}
	return &spooled{sp: bs, id: id, size: bs.Size(), structure: part.Marshal()}, nil
}

// upsertBlob records the blob's row (keeping the existing one for a blob
// already known) and returns its rowid.
func (w *writer) upsertBlob(sd *spooled) (int64, error) {
	var id int64
	err := w.row(`INSERT INTO blobs (hash, size, structure) VALUES (?, ?, ?)
		ON CONFLICT (hash) DO UPDATE SET size = excluded.size RETURNING id`, sd.id, sd.size, sd.structure).Scan(&id)
	return id, err
}

// Deliver stores the spooled message once and adds it to each recipient's
// mailbox. Each recipient runs in its own savepoint: one recipient's failure
// (no such account or mailbox) leaves the others' copies in place.
func (s *Store) Deliver(ctx context.Context, sp mailstore.Spool, date time.Time, rcpts []mailstore.Recipient) []error {
	errs := make([]error, len(rcpts))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	if sp == nil {
		return fail(errors.New("sqlite: nil spool"))
	}
	defer sp.Abort()
	if err := s.enter(); err != nil {
		return fail(err)
	}
	defer s.leave()
	if len(rcpts) == 0 {
		return errs
	}
	sd, err := s.finishSpool(sp)
	if err != nil {
		return fail(err)
	}
	if date.IsZero() {
		date = time.Now()
	}
	err = s.submit(ctx, &op{spool: sd.sp, run: func(w *writer) error {
		blobRow, err := w.upsertBlob(sd)
		if err != nil {
			return err
		}
		for i, r := range rcpts {
			errs[i] = w.savepoint("rcpt", func() error {
				mb, err := w.recipientMailbox(r)
				if err != nil {
					return err
				}
				if err := w.checkQuota(mb.AccountID, sd.size, 1); err != nil {
					return err
				}
				if _, err := w.appendRow(&mb, nil, date, blobRow, sd.id, sd.size); err != nil {
					return err
				}
				return w.saveMailbox(&mb)
			})
			var be *errBatch
			if errors.As(errs[i], &be) {
				return be
			}
		}
		return nil
	}})
	if err != nil {
		return fail(err)
	}
	return errs
}

// recipientMailbox resolves a delivery target inside the transaction.
func (w *writer) recipientMailbox(r mailstore.Recipient) (mailstore.Mailbox, error) {
	name := r.Mailbox
	if name == "" {
		name = mailstore.Inbox
	}
	name, err := mailstore.CanonicalMailboxName(name)
	if err != nil {
		return mailstore.Mailbox{}, mailstore.ErrNoSuchMailbox
	}
	mb, err := w.mailboxByName(r.AccountID, name)
	if errors.Is(err, mailstore.ErrNoSuchMailbox) {
		var one int
		if aerr := w.row(`SELECT 1 FROM accounts WHERE id = ?`, r.AccountID).Scan(&one); errors.Is(aerr, sql.ErrNoRows) {
			return mb, mailstore.ErrNoSuchAccount
		}
	}
	return mb, err
}

// Append stores the spooled message in one mailbox (IMAP APPEND).
func (s *Store) Append(ctx context.Context, mailboxID int64, sp mailstore.Spool, flags []string, date time.Time) (mailstore.Message, error) {
	if sp == nil {
		return mailstore.Message{}, errors.New("sqlite: nil spool")
	}
	defer sp.Abort()
	flags, err := mailstore.CanonicalFlags(flags)
	if err != nil {
		return mailstore.Message{}, err
	}
	if err := s.enter(); err != nil {
		return mailstore.Message{}, err
	}
	defer s.leave()
	sd, err := s.finishSpool(sp)
	if err != nil {
		return mailstore.Message{}, err
	}
	if date.IsZero() {
		date = time.Now()
	}
	var msg mailstore.Message
	err = s.submit(ctx, &op{run: func(w *writer) error {
		// As in AppendMany, the checks come before the spool moves into
		// the blob tree: a refused append leaves no orphan file.
		mb, err := w.mailboxByID(mailboxID)
		if err != nil {
			return err
		}
		if err := w.checkQuota(mb.AccountID, sd.size, 1); err != nil {
			return err
		}
		if _, err := w.s.blobs.Commit(sd.sp, &w.dirs); err != nil {
			return err
		}
		blobRow, err := w.upsertBlob(sd)
		if err != nil {
			return err
		}
		m, err := w.appendRow(&mb, flags, date, blobRow, sd.id, sd.size)
		if err != nil {
			return err
		}
		msg = m
		return w.saveMailbox(&mb)
	}})
	return msg, err
}

// AppendMany stores several spooled messages in one mailbox, all or none
// (IMAP MULTIAPPEND, RFC 3502 §6.3.11). Every spool is finished (fsynced,
// parsed) before the operation is queued; then one operation, and so one
// savepoint of one transaction, moves every spool into the blob tree and
// inserts every row. If any step fails, the savepoint rolls all rows back
// and drops all their changes; blob files already moved into place are
// orphans that CollectGarbage removes, as for a failed Append.
func (s *Store) AppendMany(ctx context.Context, mailboxID int64, msgs []mailstore.AppendMessage) ([]mailstore.Message, error) {
	defer func() {
		for _, m := range msgs {
			if m.Spool != nil {
				m.Spool.Abort()
			}
		}
	}()
	flags, err := mailstore.CheckAppend(msgs)
	if err != nil {
		return nil, err
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if len(msgs) == 0 {
		_, err := s.mailboxByID(ctx, mailboxID)
		return nil, err
	}
	sds := make([]*spooled, len(msgs))
	for i, m := range msgs {
		sd, err := s.finishSpool(m.Spool)
		if err != nil {
			return nil, fmt.Errorf("sqlite: message %d: %w", i+1, err)
		}
		sds[i] = sd
	}
	now := time.Now()
	out := make([]mailstore.Message, len(msgs))
	err = s.submit(ctx, &op{run: func(w *writer) error {
		// The mailbox and the quota are checked before any spool is
		// moved into the blob tree, so that appending to a deleted
		// mailbox, or over quota, leaves no orphan files.
		mb, err := w.mailboxByID(mailboxID)
		if err != nil {
			return err
		}
		var total int64
		for _, sd := range sds {
			total += sd.size
		}
		if err := w.checkQuota(mb.AccountID, total, int64(len(sds))); err != nil {
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
			date := msgs[i].Date
			if date.IsZero() {
				date = now
			}
			if out[i], err = w.appendRow(&mb, flags[i], date, blobRow, sd.id, sd.size); err != nil {
				return err
			}
		}
		return w.saveMailbox(&mb)
	}})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// appendRow inserts a message at the end of mb and updates mb in memory
// (UIDNEXT, HIGHESTMODSEQ, counters); the caller writes mb back with
// saveMailbox once per operation. flags must be canonical.
func (w *writer) appendRow(mb *mailstore.Mailbox, flags []string, date time.Time, blobRow int64, blobID string, size int64) (mailstore.Message, error) {
	if flags == nil {
		flags = []string{}
	}
	uid := mb.UIDNext
	if uid == 0 || uid == ^mailstore.UID(0) {
		return mailstore.Message{}, fmt.Errorf("sqlite: mailbox %q: UID space exhausted", mb.Name)
	}
	m := mailstore.Message{
		UID:          uid,
		ModSeq:       mb.HighestModSeq + 1,
		Flags:        flags,
		InternalDate: date.UTC(),
		SaveDate:     w.now.UTC(),
		Size:         size,
		BlobID:       blobID,
	}
	seen := slices.Contains(flags, mailstore.FlagSeen)
	if _, err := w.exec(`INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, internal_date, save_date, blob_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		mb.ID, m.UID, m.ModSeq, encodeFlags(flags), seen, nanos(date), nanos(w.now), blobRow); err != nil {
		return mailstore.Message{}, err
	}
	mb.UIDNext++
	mb.HighestModSeq = m.ModSeq
	mb.Messages++
	if !seen {
		mb.Unseen++
	}
	mb.Size += size
	// Round-trip the times through the stored form, so that the returned
	// Message equals what a later read returns.
	m.InternalDate = fromNanos(nanos(date))
	m.SaveDate = fromNanos(nanos(w.now))
	w.publishLater(mb.AccountID, mailstore.Change{
		Kind: mailstore.ChangeAppend, MailboxID: mb.ID, MailboxName: mb.Name,
		UID: m.UID, ModSeq: m.ModSeq, Flags: slices.Clone(flags), Size: size,
	})
	return m, nil
}

// saveMailbox writes mb's UIDNEXT, HIGHESTMODSEQ and counters back.
func (w *writer) saveMailbox(mb *mailstore.Mailbox) error {
	_, err := w.exec(`UPDATE mailboxes SET uid_next = ?, highest_modseq = ?, messages = ?, unseen = ?, size = ? WHERE id = ?`,
		int64(mb.UIDNext), mb.HighestModSeq, mb.Messages, mb.Unseen, mb.Size, mb.ID)
	return err
}

// smallSet is the number of UIDs up to which messages() looks UIDs up one
// by one instead of scanning the UID range.
const smallSet = 32

// allMessages returns every message of a mailbox, ascending by UID.
func (w *writer) allMessages(mailboxID int64) ([]msgRow, error) {
	return w.selectMessages(mailboxID, nil)
}

// messages returns the messages of a mailbox with the given UIDs, ascending
// by UID. Missing UIDs are skipped; no UIDs select nothing.
func (w *writer) messages(mailboxID int64, uids []mailstore.UID) ([]msgRow, error) {
	return w.selectMessages(mailboxID, sortedUIDs(uids))
}

// selectMessages implements messages (uids sorted, unique and non-nil) and
// allMessages (uids nil).
func (w *writer) selectMessages(mailboxID int64, uids []mailstore.UID) ([]msgRow, error) {
	var out []msgRow
	if uids != nil {
		if len(uids) == 0 {
			return nil, nil
		}
		if len(uids) <= smallSet {
			for _, u := range uids {
				r, err := scanMsg(w.row(`SELECT `+msgCols+msgFrom+`WHERE m.mailbox_id = ? AND m.uid = ?`, mailboxID, u))
				if errors.Is(err, sql.ErrNoRows) {
					continue
				}
				if err != nil {
					return nil, err
				}
				out = append(out, r)
			}
			return out, nil
		}
	}
	lo, hi := mailstore.UID(0), ^mailstore.UID(0)
	if uids != nil {
		lo, hi = uids[0], uids[len(uids)-1]
	}
	rows, err := w.query(`SELECT `+msgCols+msgFrom+`WHERE m.mailbox_id = ? AND m.uid BETWEEN ? AND ? ORDER BY m.uid`, mailboxID, lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		r, err := scanMsg(rows)
		if err != nil {
			return nil, err
		}
		if uids != nil {
			// Merge with the sorted selection.
			for i < len(uids) && uids[i] < r.UID {
				i++
			}
			if i == len(uids) || uids[i] != r.UID {
				continue
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// sortedUIDs returns a sorted, deduplicated copy of uids (never nil).
func sortedUIDs(uids []mailstore.UID) []mailstore.UID {
	out := slices.Clone(uids)
	if out == nil {
		out = []mailstore.UID{}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
