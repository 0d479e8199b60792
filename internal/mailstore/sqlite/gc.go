package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Blob garbage collection.
//
// Invariant: a message row references a blob row whose file exists.
//
// Rows referencing a blob are only inserted by the committer, inside the
// write transaction that also made the file present: blobfs.FS.Commit moves
// the spool into place, or finds an identical file already there and reuses
// it, after BEGIN IMMEDIATE and before COMMIT; copies reference blobs whose
// source row still exists in the same transaction. Files are only removed by
// collectBlob, inside a write transaction that has just checked that no
// message references the blob. Both hold SQLite's write lock, which also
// excludes other processes, so "find the file present and reference it"
// and "find the blob unreferenced and remove it" can never interleave: if
// the collection runs first, the later delivery finds no file and moves its
// own spool into place; if the delivery runs first, the collection sees its
// row and keeps the file. No grace period is needed for blobs.
//
// Spool files in blobs/tmp are outside that protocol: the open spools of
// this process are skipped, others are removed only when older than
// tmpGrace.
//
// Crashes: a crash after a file was moved into place but before COMMIT
// leaves an orphan file (found by the directory walk below); a crash after
// collectBlob removed a file but before COMMIT leaves an unreferenced blob
// row without a file, which the next collection deletes and which a new
// delivery of the same content repairs (FS.Commit finds no file and moves
// its spool into place). Neither leaves a reference to a missing file.

// gcChunk is the number of blobs examined per write transaction, to keep
// the committer's transactions short.
const gcChunk = 256

// CollectGarbage removes blobs that no message references, and stale spool
// files. It returns the number of blobs removed.
func (s *Store) CollectGarbage(ctx context.Context) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.leave()
	if n, err := s.blobs.CleanTmp(tmpGrace); err != nil {
		s.log.Warn("mailstore gc: cleaning spool directory", "err", err)
	} else if n > 0 {
		s.log.Info("mailstore gc: removed stale spool files", "count", n)
	}
	cands, err := s.gcCandidates(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for len(cands) > 0 {
		chunk := cands[:min(gcChunk, len(cands))]
		cands = cands[len(chunk):]
		removed := 0
		err := s.submit(ctx, &op{run: func(w *writer) error {
			removed = 0
			for _, hash := range chunk {
				ok, err := w.collectBlob(hash)
				if err != nil {
					return err
				}
				if ok {
					removed++
				}
			}
			return nil
		}})
		if err != nil {
			return total, err
		}
		total += removed
	}
	if total > 0 {
		s.log.Info("mailstore gc: removed unreferenced blobs", "count", total)
	}
	return total, nil
}

// gcCandidates lists blobs that look unreferenced in a read snapshot: blob
// rows without messages, and files without a blob row (left by a crash
// between moving a spool into place and COMMIT). collectBlob re-checks each
// under the write lock.
func (s *Store) gcCandidates(ctx context.Context) ([]string, error) {
	var cands []string
	rows, err := s.query(ctx, `SELECT b.hash FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = b.id)`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: gc: %w", err)
	}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlite: gc: %w", err)
		}
		cands = append(cands, h)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: gc: %w", err)
	}

	// Merge the sorted directory walk with the sorted blob rows.
	known, err := s.query(ctx, `SELECT hash FROM blobs ORDER BY hash`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: gc: %w", err)
	}
	defer known.Close()
	cur, more := "", true
	advance := func() error {
		if more = known.Next(); more {
			return known.Scan(&cur)
		}
		return known.Err()
	}
	if err := advance(); err != nil {
		return nil, fmt.Errorf("sqlite: gc: %w", err)
	}
	err = s.blobs.Walk(func(id string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for more && cur < id {
			if err := advance(); err != nil {
				return err
			}
		}
		if !more || cur != id {
			cands = append(cands, id)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: gc: %w", err)
	}
	return cands, nil
}

// collectBlob removes blob hash if no message references it. It runs in
// the committer's transaction; see the invariant above.
func (w *writer) collectBlob(hash string) (bool, error) {
	rowGone := false
	var id int64
	err := w.row(`SELECT id FROM blobs WHERE hash = ?`, hash).Scan(&id)
	switch {
	case err == nil:
		var one int
		err := w.row(`SELECT 1 FROM messages WHERE blob_id = ? LIMIT 1`, id).Scan(&one)
		if err == nil {
			return false, nil // referenced (again)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, err
		}
		if _, err := w.exec(`DELETE FROM blobs WHERE id = ?`, id); err != nil {
			return false, err
		}
		rowGone = true
	case errors.Is(err, sql.ErrNoRows):
		// A file without a row.
	default:
		return false, err
	}
	removed, err := w.s.blobs.Remove(hash)
	if err != nil {
		return false, err
	}
	return removed || rowGone, nil
}
