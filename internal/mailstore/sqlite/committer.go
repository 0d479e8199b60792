package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	sqlitedrv "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/blobfs"
)

// op is one write operation queued for the committer.
type op struct {
	ctx context.Context
	// spool, if set, is moved into the blob tree inside the transaction,
	// before run (see blobfs.FS.Commit).
	spool *blobfs.Spool
	// run performs the operation's statements through w. It runs inside
	// a SAVEPOINT: if it returns an error, its statements are rolled back
	// and its published changes dropped, and the other operations of the
	// batch are unaffected.
	run func(w *writer) error

	err     error
	changes []accountChange // published after COMMIT when err == nil
	done    chan struct{}
}

type accountChange struct {
	account int64
	change  mailstore.Change
}

// errBatch marks an error after which the transaction cannot continue (a
// failed ROLLBACK TO, typically because SQLite already rolled the whole
// transaction back after an I/O error): the whole batch fails.
type errBatch struct{ err error }

func (e *errBatch) Error() string { return e.err.Error() }
func (e *errBatch) Unwrap() error { return e.err }

// submit queues o and waits until the committer has answered it. Once the
// committer has started an operation, the caller waits for the outcome
// whatever ctx says: the operation may already be durable, and reporting a
// failure for a durable change (or the reverse) is what the durability rules
// forbid. A context cancelled before the committer reaches the operation
// makes it fail without effect.
func (s *Store) submit(ctx context.Context, o *op) error {
	o.ctx = ctx
	o.done = make(chan struct{})
	select {
	case s.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	}
	<-o.done
	return o.err
}

// writer is the committer's connection and per-batch state. It is used by
// the committer goroutine only.
type writer struct {
	s     *Store
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
	dirs  blobfs.DirSet
	cur   *op       // operation being run
	now   time.Time // batch time (SaveDate, account creation)
}

func (s *Store) commitLoop(w *writer) {
	defer close(s.committerDone)
	defer func() {
		for _, st := range w.stmts {
			st.Close()
		}
		w.conn.Close()
	}()
	batch := make([]*op, 0, maxBatch)
	for first := range s.ops {
		batch = append(batch[:0], first)
	collect:
		for len(batch) < maxBatch {
			select {
			case o, ok := <-s.ops:
				if !ok {
					break collect
				}
				batch = append(batch, o)
			default:
				break collect
			}
		}
		w.runBatch(batch)
		clear(batch)
	}
}

// runBatch runs ops in one transaction and answers them.
func (w *writer) runBatch(batch []*op) {
	live := make([]*op, 0, len(batch))
	for _, o := range batch {
		if err := o.ctx.Err(); err != nil {
			o.err = err
			close(o.done)
			continue
		}
		live = append(live, o)
	}
	if len(live) == 0 {
		return
	}
	defer func() {
		for _, o := range live {
			close(o.done)
		}
	}()
	failAll := func(err error) {
		err = w.storageError(err)
		w.s.log.Error("mailstore: write batch failed, rolled back", "ops", len(live), "err", err)
		w.rollback()
		for _, o := range live {
			o.err = err
			o.changes = nil
		}
	}

	w.now = time.Now()
	if err := w.execRaw("BEGIN IMMEDIATE"); err != nil {
		failAll(fmt.Errorf("sqlite: begin: %w", err))
		return
	}
	for _, o := range live {
		w.cur = o
		o.err = w.savepoint("op", func() error {
			if o.spool != nil {
				if _, err := w.s.blobs.Commit(o.spool, &w.dirs); err != nil {
					return err
				}
			}
			return o.run(w)
		})
		var be *errBatch
		if errors.As(o.err, &be) {
			failAll(be.err)
			return
		}
	}
	w.cur = nil
	// Directory entries of new blobs must be durable before any row
	// referencing them is.
	if err := w.dirs.Sync(); err != nil {
		failAll(err)
		return
	}
	if err := w.execRaw("COMMIT"); err != nil {
		failAll(fmt.Errorf("sqlite: commit: %w", err))
		return
	}
	// Durable: publish, then answer (deferred above), so a caller that
	// returns has its changes already queued to every subscriber.
	for _, o := range live {
		if o.err == nil {
			w.s.publish(o.changes)
		}
		o.changes = nil
	}
}

// publish hands committed changes to the hub, grouped by account, in order.
func (s *Store) publish(cs []accountChange) {
	for i := 0; i < len(cs); {
		j := i + 1
		for j < len(cs) && cs[j].account == cs[i].account {
			j++
		}
		group := make([]mailstore.Change, 0, j-i)
		for _, c := range cs[i:j] {
			group = append(group, c.change)
		}
		s.hub.Publish(cs[i].account, group...)
		i = j
	}
}

func (w *writer) rollback() {
	// Errors are ignored: after a failed COMMIT or an automatic rollback
	// there may be no transaction left to roll back.
	w.execRaw("ROLLBACK")
	w.dirs.Reset()
}

// savepoint runs fn inside SAVEPOINT name. If fn fails, its statements are
// rolled back and the changes it published are dropped; the error is
// returned. If the rollback itself fails, an *errBatch is returned.
func (w *writer) savepoint(name string, fn func() error) error {
	if err := w.execRaw("SAVEPOINT " + name); err != nil {
		return &errBatch{fmt.Errorf("sqlite: savepoint: %w", err)}
	}
	mark := len(w.cur.changes)
	err := w.storageError(fn())
	var be *errBatch
	if errors.As(err, &be) {
		return err
	}
	if err != nil {
		w.cur.changes = w.cur.changes[:mark]
		if rerr := w.execRaw("ROLLBACK TO " + name); rerr != nil {
			return &errBatch{fmt.Errorf("sqlite: rollback to savepoint after %v: %w", err, rerr)}
		}
	}
	if rerr := w.execRaw("RELEASE " + name); rerr != nil {
		return &errBatch{fmt.Errorf("sqlite: release savepoint: %w", rerr)}
	}
	return err
}

// storageError marks the error of a write as
// mailstore.ErrInsufficientStorage when what failed is the disk's room:
//
//   - SQLITE_FULL ("database or disk is full") is SQLite's report of ENOSPC
//     while writing the WAL or the database file.
//   - Any other failed write(2), EDQUOT and EFBIG (RLIMIT_FSIZE) included,
//     SQLite reports as an SQLITE_IOERR without the errno. For those the
//     store asks the file system itself (probeSpace).
func (w *writer) storageError(err error) error {
	var se *sqlitedrv.Error
	if err == nil || errors.Is(err, mailstore.ErrInsufficientStorage) || !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
	case sqlite3.SQLITE_IOERR:
		perr := w.s.probeSpace()
		if !mailstore.InsufficientStorage(perr) {
			return err
		}
		err = fmt.Errorf("%w; %w", err, perr)
	default:
		return err
	}
	return fmt.Errorf("%w: %w", mailstore.ErrInsufficientStorage, err)
}

// probeSpace tells whether a failed write of the database files was for
// lack of room. It returns an error wrapping EFBIG when the database or
// its WAL has reached the process's file size limit (a write cut short by
// RLIMIT_FSIZE leaves the file exactly at the limit), else the error of
// writing one page to a scratch file next to them (removed at once): nil
// when the disk has room, ENOSPC or EDQUOT when it has not.
func (s *Store) probeSpace() error {
	limit := fileSizeLimit()
	for _, name := range []string{DBName + "-wal", DBName} {
		if fi, err := os.Stat(filepath.Join(s.dir, name)); err == nil && uint64(fi.Size()) >= limit {
			return fmt.Errorf("%s has reached the file size limit (RLIMIT_FSIZE %d octets): %w", name, limit, syscall.EFBIG)
		}
	}
	f, err := os.CreateTemp(s.dir, ".space-probe-*")
	if err != nil {
		return fmt.Errorf("a file next to the database cannot be created either: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		return fmt.Errorf("a write next to the database fails too: %w", err)
	}
	return nil
}

// publishLater records a change of the current operation, published after
// COMMIT if the operation succeeds.
func (w *writer) publishLater(account int64, c mailstore.Change) {
	w.cur.changes = append(w.cur.changes, accountChange{account, c})
}

func (w *writer) execRaw(q string) error {
	_, err := w.conn.ExecContext(context.Background(), q)
	return err
}

// stmt returns the writer's prepared statement for q.
func (w *writer) stmt(q string) (*sql.Stmt, error) {
	if st, ok := w.stmts[q]; ok {
		return st, nil
	}
	st, err := w.conn.PrepareContext(context.Background(), q)
	if err != nil {
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	w.stmts[q] = st
	return st, nil
}

// exec runs a prepared write statement. Statements run with a background
// context: interrupting one would abort the whole batch's transaction.
func (w *writer) exec(q string, args ...any) (sql.Result, error) {
	st, err := w.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(context.Background(), args...)
}

func (w *writer) query(q string, args ...any) (*sql.Rows, error) {
	st, err := w.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(context.Background(), args...)
}

// scanner is what *sql.Row and *sql.Rows have in common.
type scanner interface{ Scan(dest ...any) error }

// errRow is a scanner that fails with err (a statement that did not
// prepare).
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// row runs a single-row query; Scan reports sql.ErrNoRows as usual.
func (w *writer) row(q string, args ...any) scanner {
	st, err := w.stmt(q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(context.Background(), args...)
}
