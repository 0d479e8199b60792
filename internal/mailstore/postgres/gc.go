package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// Blob garbage collection, safe across nodes.
//
// Invariant: a message row references a blob row whose file exists.
//
// The blob row is the lock both sides take:
//
//   - A writer that adds references to a blob (Deliver, Append,
//     AppendMany: blobStage) first inserts the blob's row, or locks the
//     existing one FOR SHARE; only then it makes the file present
//     (blobfs.FS.Commit: it moves the spool into place, or finds an
//     identical file and reuses it) and fsyncs the directory; the message
//     rows follow in the same transaction. Copies reference blobs whose
//     source rows exist and stay locked (with their mailbox) until the
//     copying transaction commits.
//   - collectBlob locks the blob's row FOR UPDATE, which waits for every
//     transaction holding it FOR SHARE (or having inserted it), and only
//     then, in a new statement and so with a new snapshot that sees what
//     those transactions committed, deletes the row if no message
//     references it; it removes the file inside that transaction, before
//     COMMIT. A writer arriving meanwhile waits for the collector's lock
//     and then finds the row gone: it inserts a new one and, the file
//     being gone too, moves its own spool into place.
//   - A file without a row (left by a transaction that rolled back, or
//     crashed, after moving its spool into place) is collected under a
//     placeholder row the collector inserts: a writer inserting the same
//     hash concurrently makes one of the two inserts wait for the other
//     transaction, so the collector either sees the writer's committed row
//     (and its references) or holds the row while it removes the file.
//
// The foreign key messages.blob_id -> blobs.id is a safety net on top: a
// blob row that is still referenced cannot be deleted.
//
// Spool files in blobs/tmp are outside that protocol: the open spools of
// this process are skipped, others (of other nodes too) are removed only
// when older than tmpGrace.
//
// Crashes: a crash after a file was moved into place but before COMMIT
// leaves an orphan file (found by the directory walk below); a crash after
// collectBlob removed a file but before COMMIT leaves an unreferenced blob
// row without a file, which the next collection deletes and which a new
// delivery of the same content repairs (FS.Commit finds no file and moves
// its spool into place). Neither leaves a reference to a missing file.

// gcChunk is the number of blobs examined per transaction: few enough that
// the row locks are held briefly, many enough to share the commits.
const gcChunk = 64

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
		err := s.txn(ctx, func(tx pgx.Tx) error {
			removed = 0
			for _, hash := range chunk {
				ok, err := s.collectBlob(ctx, tx, hash)
				if err != nil {
					return err
				}
				if ok {
					removed++
				}
			}
			return nil
		})
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

// gcCandidates lists blobs that look unreferenced in a snapshot: blob rows
// without messages, and files without a blob row. collectBlob re-checks
// each under the row lock.
func (s *Store) gcCandidates(ctx context.Context) ([]string, error) {
	var cands []string
	rows, err := s.pool.Query(ctx, `SELECT b.hash FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = b.id)`)
	if err != nil {
		return nil, dbErr(err)
	}
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return nil, dbErr(err)
		}
		cands = append(cands, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, dbErr(err)
	}

	// Merge the sorted directory walk with the sorted blob rows (the
	// "C" collation sorts hex digests as Go does).
	known, err := s.pool.Query(ctx, `SELECT hash FROM blobs ORDER BY hash`)
	if err != nil {
		return nil, dbErr(err)
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
		return nil, dbErr(err)
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
		return nil, dbErr(err)
	}
	return cands, nil
}

// collectBlob removes blob hash if no message references it; see the
// protocol above. It reports whether it removed anything (a row or a file).
func (s *Store) collectBlob(ctx context.Context, tx pgx.Tx, hash string) (bool, error) {
	placeholder := false
	var id int64
	for attempt := 0; ; attempt++ {
		err := tx.QueryRow(ctx, `SELECT id FROM blobs WHERE hash = $1 FOR UPDATE`, hash).Scan(&id)
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return false, err
		}
		// A file without a row: hold a placeholder row while removing
		// it. If a writer's row appears first, lock that one instead.
		err = tx.QueryRow(ctx, `INSERT INTO blobs (hash, size) VALUES ($1, -1) ON CONFLICT (hash) DO NOTHING RETURNING id`, hash).Scan(&id)
		if err == nil {
			placeholder = true
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) || attempt >= 5 {
			return false, err
		}
	}
	var gone int64
	err := tx.QueryRow(ctx, `DELETE FROM blobs b WHERE b.id = $1
		AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_id = $1) RETURNING b.id`, id).Scan(&gone)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // referenced (again)
	}
	if err != nil {
		return false, err
	}
	removed, err := s.blobs.Remove(hash)
	if err != nil {
		return false, err
	}
	return removed || !placeholder, nil
}
