package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/message"
)

// Reads run on the reader pool and see the last committed state (WAL
// snapshot per statement); they never wait for the committer.

// Messages lists the messages of a mailbox ordered by UID.
func (s *Store) Messages(ctx context.Context, mailboxID int64) ([]mailstore.Message, error) {
	return s.listMessages(ctx, mailboxID, `SELECT `+msgCols+msgFrom+`WHERE m.mailbox_id = ? ORDER BY m.uid`, mailboxID)
}

// MessagesChangedSince lists messages whose MODSEQ is greater than modseq,
// ordered by UID.
func (s *Store) MessagesChangedSince(ctx context.Context, mailboxID int64, modseq uint64) ([]mailstore.Message, error) {
	return s.listMessages(ctx, mailboxID, `SELECT `+msgCols+msgFrom+`WHERE m.mailbox_id = ? AND m.modseq > ? ORDER BY m.uid`, mailboxID, modseq)
}

func (s *Store) listMessages(ctx context.Context, mailboxID int64, q string, args ...any) ([]mailstore.Message, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	defer rows.Close()
	var out []mailstore.Message
	for rows.Next() {
		r, err := scanMsg(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		out = append(out, r.Message)
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

// Structure returns the MIME structure computed at delivery.
func (s *Store) Structure(ctx context.Context, mailboxID int64, uid mailstore.UID) (*message.Part, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	var data []byte
	err := s.queryRow(ctx, `SELECT b.structure`+msgFrom+`WHERE m.mailbox_id = ? AND m.uid = ?`, mailboxID, uid).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mailstore.ErrNoSuchMessage
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	p, err := message.Unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("sqlite: stored structure of uid %d: %w", uid, err)
	}
	return p, nil
}

// OpenBlob opens a message body. An unknown or collected blob yields
// ErrNoSuchMessage.
func (s *Store) OpenBlob(ctx context.Context, blobID string) (mailstore.Blob, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	b, err := s.blobs.Open(blobID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, mailstore.ErrNoSuchMessage
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return b, nil
}

// Vanished returns UIDs expunged with a MODSEQ greater than modseq,
// ascending.
func (s *Store) Vanished(ctx context.Context, mailboxID int64, modseq uint64) ([]mailstore.UID, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	rows, err := s.query(ctx, `SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid`, mailboxID, modseq)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	defer rows.Close()
	var out []mailstore.UID
	for rows.Next() {
		var u mailstore.UID
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		out = append(out, u)
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

// Structures returns the structures of the messages with the given UIDs,
// read as runs of consecutive UIDs (one primary-key range scan each, like
// MessagesInRanges); rows inside a run that were not asked for are skipped.
func (s *Store) Structures(ctx context.Context, mailboxID int64, uids []mailstore.UID) (map[mailstore.UID]*message.Part, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	out := make(map[mailstore.UID]*message.Part, len(uids))
	if len(uids) == 0 {
		if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
			return nil, err
		}
		return out, nil
	}
	if !slices.IsSorted(uids) {
		uids = slices.Clone(uids)
		slices.Sort(uids)
	}
	// A dense set is read as one range (skipping the few rows not asked
	// for); a sparse one as its runs of consecutive UIDs.
	rs := []mailstore.UIDRange{{Min: uids[0], Max: uids[len(uids)-1]}}
	if uint64(rs[0].Max-rs[0].Min) >= 4*uint64(len(uids)) {
		rs = mailstore.UIDRanges(uids, nil)
	}
	rows, err := s.query(ctx, qStructRanges, rangesJSON(rs), mailboxID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var uid mailstore.UID
		var data sql.RawBytes // Unmarshal copies what it keeps
		if err := rows.Scan(&uid, &data); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
		if _, want := slices.BinarySearch(uids, uid); !want {
			continue
		}
		p, err := message.Unmarshal(data)
		if err != nil {
			return nil, fmt.Errorf("sqlite: stored structure of uid %d: %w", uid, err)
		}
		out[uid] = p
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
