package sqlite

import (
	"context"
	"fmt"
	"slices"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// MODSEQ scheme: every changed message (flag change, append, copy target,
// expunge) gets its own MODSEQ, the mailbox's HIGHESTMODSEQ plus one, and
// HIGHESTMODSEQ becomes that value. MODSEQs in a mailbox are thus unique and
// strictly increasing in commit order; the expunge log records the MODSEQ
// of each removal.

// StoreFlags changes the flags of the given messages (CONDSTORE aware).
func (s *Store) StoreFlags(ctx context.Context, mailboxID int64, uids []mailstore.UID, fop mailstore.FlagOp, flags []string, unchangedSince uint64) (changed []mailstore.Message, failed []mailstore.UID, err error) {
	flags, err = mailstore.CanonicalFlags(flags)
	if err != nil {
		return nil, nil, err
	}
	switch fop {
	case mailstore.FlagsAdd, mailstore.FlagsRemove, mailstore.FlagsReplace:
	default:
		return nil, nil, fmt.Errorf("sqlite: invalid flag operation %d", fop)
	}
	if err := s.enter(); err != nil {
		return nil, nil, err
	}
	defer s.leave()
	err = s.submit(ctx, &op{run: func(w *writer) error {
		changed, failed = nil, nil
		mb, err := w.mailboxByID(mailboxID)
		if err != nil {
			return err
		}
		msgs, err := w.messages(mailboxID, uids)
		if err != nil {
			return err
		}
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
			if _, err := w.exec(`UPDATE messages SET flags = ?, seen = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?`,
				encodeFlags(nf), seen, mb.HighestModSeq, mailboxID, m.UID); err != nil {
				return err
			}
			switch {
			case seen && !m.seen:
				mb.Unseen--
			case !seen && m.seen:
				mb.Unseen++
			}
			m.Flags, m.ModSeq = nf, mb.HighestModSeq
			changed = append(changed, m.Message)
			w.publishLater(mb.AccountID, mailstore.Change{
				Kind: mailstore.ChangeFlags, MailboxID: mb.ID, MailboxName: mb.Name,
				UID: m.UID, ModSeq: m.ModSeq, Flags: slices.Clone(nf),
			})
		}
		if len(changed) == 0 {
			return nil
		}
		return w.saveMailbox(&mb)
	}})
	if err != nil {
		return nil, nil, err
	}
	return changed, failed, nil
}

// Expunge removes the given messages and logs them for Vanished.
func (s *Store) Expunge(ctx context.Context, mailboxID int64, uids []mailstore.UID) ([]mailstore.UID, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var removed []mailstore.UID
	err := s.submit(ctx, &op{run: func(w *writer) error {
		mb, err := w.mailboxByID(mailboxID)
		if err != nil {
			return err
		}
		msgs, err := w.messages(mailboxID, uids)
		if err != nil {
			return err
		}
		removed, err = w.expunge(&mb, msgs)
		return err
	}})
	if err != nil {
		return nil, err
	}
	return removed, nil
}

// expunge deletes msgs (rows of mb, ascending) and records them in the
// expunge log; it writes mb back.
func (w *writer) expunge(mb *mailstore.Mailbox, msgs []msgRow) ([]mailstore.UID, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	removed := make([]mailstore.UID, 0, len(msgs))
	for _, m := range msgs {
		mb.HighestModSeq++
		if _, err := w.exec(`DELETE FROM messages WHERE mailbox_id = ? AND uid = ?`, mb.ID, m.UID); err != nil {
			return nil, err
		}
		if _, err := w.exec(`INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)`, mb.ID, m.UID, mb.HighestModSeq); err != nil {
			return nil, err
		}
		mb.Messages--
		if !m.seen {
			mb.Unseen--
		}
		mb.Size -= m.Size
		removed = append(removed, m.UID)
		w.publishLater(mb.AccountID, mailstore.Change{
			Kind: mailstore.ChangeExpunge, MailboxID: mb.ID, MailboxName: mb.Name,
			UID: m.UID, ModSeq: mb.HighestModSeq,
		})
	}
	return removed, w.saveMailbox(mb)
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
	err = s.submit(ctx, &op{run: func(w *writer) error {
		srcUIDs, dstUIDs = nil, nil
		src, err := w.mailboxByID(srcID)
		if err != nil {
			return err
		}
		dst := &src
		if dstID != srcID {
			d, err := w.mailboxByID(dstID)
			if err != nil {
				return err
			}
			if d.AccountID != src.AccountID {
				return fmt.Errorf("%w: copy between accounts", mailstore.ErrNotAllowed)
			}
			dst = &d
		}
		msgs, err := w.messages(srcID, uids)
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
			if err := w.checkQuota(src.AccountID, total, int64(len(msgs))); err != nil {
				return err
			}
		}
		dstUIDs, err = w.copyMessages(msgs, dst)
		if err != nil {
			return err
		}
		srcUIDs = make([]mailstore.UID, len(msgs))
		for i, m := range msgs {
			srcUIDs[i] = m.UID
		}
		if move {
			// When src and dst are the same mailbox, dst == &src: the
			// expunge continues from the copy's UIDNEXT and MODSEQ.
			if _, err := w.expunge(&src, msgs); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		return nil, nil, err
	}
	return srcUIDs, dstUIDs, nil
}

// copyMessages appends copies of msgs to dst, sharing their
// blobs, and writes dst back. It returns the new UIDs in the
// order of msgs.
func (w *writer) copyMessages(msgs []msgRow, dst *mailstore.Mailbox) ([]mailstore.UID, error) {
	out := make([]mailstore.UID, 0, len(msgs))
	for _, m := range msgs {
		// The source row references the blob, so its file exists, and
		// no collection can run before this transaction commits.
		c, err := w.appendRow(dst, m.Flags, m.InternalDate, m.blobRow, m.BlobID, m.Size)
		if err != nil {
			return nil, err
		}
		out = append(out, c.UID)
	}
	return out, w.saveMailbox(dst)
}
