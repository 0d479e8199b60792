// Package sqlite is Letterbox's embedded mail store backend: metadata in an
// SQLite database (modernc.org/sqlite, pure Go, no cgo) and message bodies in
// content-addressed files (package blobfs).
//
// It exists so that a single-node installation needs nothing but the
// letterbox binary and a data directory: no database server to run. Layout:
//
//	<dir>/letterbox.db (+ -wal, -shm)   accounts, mailboxes, messages, ...
//	<dir>/blobs/                        message bodies (see blobfs)
//
// # Writes: one committer, group commit
//
// Every change goes through one committer goroutine that owns the only
// write connection. Callers queue an operation and wait; the committer takes
// every operation queued so far, runs them in one IMMEDIATE transaction (each
// inside its own SAVEPOINT, so one operation's failure, or one recipient's,
// does not affect the others), fsyncs the blob directories the batch
// touched, COMMITs with synchronous=FULL (fsync of the WAL), then publishes
// the batch's changes to the notification hub and only then answers the
// callers. While one batch is being made durable the next one queues up, so
// under load the fsync cost is shared by many operations; it is never
// skipped. Reads use a separate pool of read-only connections and never wait
// for the committer (WAL mode).
//
// # Several processes
//
// The CLI (`letterbox user add`, `letterbox deliver`) opens the same data
// directory while the server runs. SQLite's file locks serialise their
// write transactions (busy_timeout makes a writer wait instead of failing),
// so UID and MODSEQ allocation stays correct across processes. Changes made
// by another process are not published to this process's Hub (notifications
// are in-process); LockMailbox is in-process too. Cross-process and
// multi-node notification and locking are for the PostgreSQL backend issue.
//
// # Blob garbage collection
//
// A message row may only reference a blob file that exists. This is kept
// under concurrency (also across processes) by doing both sides under the
// database's write lock: the committer moves a spool into the blob tree (or
// decides to reuse an existing identical file) inside the transaction that
// inserts the referencing rows, and CollectGarbage removes a file only
// inside a write transaction that has just verified that no message
// references it. See gc.go.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/blobfs"
)

const (
	// DBName is the database file in the data directory.
	DBName = "letterbox.db"
	// BlobDir is the blob directory in the data directory.
	BlobDir = "blobs"

	// busyTimeout is how long a write transaction waits for another
	// process's write transaction before failing with SQLITE_BUSY.
	busyTimeout = 30 * time.Second
	// maxBatch bounds the operations in one group commit.
	maxBatch = 256
	// tmpGrace is how old an unreferenced spool file in blobs/tmp must be
	// before CollectGarbage removes it (spools of other processes are only
	// protected by their age).
	tmpGrace = 24 * time.Hour
)

// Store is the SQLite mail store. It implements mailstore.Store.
type Store struct {
	dir   string
	log   *slog.Logger
	blobs *blobfs.FS
	hub   *mailstore.Hub
	views viewCache // recently computed mailbox views (View)

	wdb *sql.DB // exactly one connection, owned by the committer
	rdb *sql.DB // read-only pool

	rmu   sync.Mutex
	rstmt map[string]*sql.Stmt // prepared read statements by SQL text

	ops           chan *op
	committerDone chan struct{}

	gate     sync.RWMutex // guards closed against enter
	closed   bool
	inflight sync.WaitGroup

	locksMu sync.Mutex
	locks   map[int64]struct{}
}

var _ mailstore.Store = (*Store)(nil)

// Open opens (creating if needed) the store in directory dir. logger may be
// nil.
func Open(dir string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	blobs, err := blobfs.Open(filepath.Join(abs, BlobDir))
	if err != nil {
		return nil, err
	}
	dbPath := filepath.Join(abs, DBName)
	bt := fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds())

	wdb, err := sql.Open("sqlite", dsn(dbPath, bt, "foreign_keys(1)", "synchronous(FULL)",
		"journal_size_limit(67108864)"))
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)

	ctx := context.Background()
	conn, err := wdb.Conn(ctx)
	if err != nil {
		wdb.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", dbPath, err)
	}
	if err := setWAL(ctx, conn); err != nil {
		conn.Close()
		wdb.Close()
		return nil, err
	}
	if err := migrate(ctx, conn); err != nil {
		conn.Close()
		wdb.Close()
		return nil, err
	}

	rdb, err := sql.Open("sqlite", dsn(dbPath, bt, "foreign_keys(1)", "query_only(1)", "mmap_size(1073741824)"))
	if err != nil {
		conn.Close()
		wdb.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	nr := max(4, 2*runtime.GOMAXPROCS(0))
	rdb.SetMaxOpenConns(nr)
	rdb.SetMaxIdleConns(nr)
	rdb.SetConnMaxLifetime(0)
	rdb.SetConnMaxIdleTime(0)

	s := &Store{
		dir:           abs,
		log:           logger,
		blobs:         blobs,
		hub:           mailstore.NewHub(),
		wdb:           wdb,
		rdb:           rdb,
		rstmt:         make(map[string]*sql.Stmt),
		ops:           make(chan *op, 4*maxBatch),
		committerDone: make(chan struct{}),
		locks:         make(map[int64]struct{}),
	}
	w := &writer{s: s, conn: conn, stmts: make(map[string]*sql.Stmt)}
	go s.commitLoop(w)
	return s, nil
}

// setWAL switches the database to WAL mode (a persistent setting, so
// usually a no-op). Changing the journal mode needs an exclusive lock and
// SQLite may report SQLITE_BUSY without calling the busy handler when
// several processes open a new database at once, so it is retried here for
// up to busyTimeout.
func setWAL(ctx context.Context, conn *sql.Conn) error {
	deadline := time.Now().Add(busyTimeout)
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		var mode string
		err := conn.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		if err == nil && strings.EqualFold(mode, "wal") {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("journal mode is %q", mode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sqlite: enabling WAL mode: %w", err)
		}
		time.Sleep(delay)
	}
}

// dsn builds a driver DSN for path with the given PRAGMAs. The path is
// written as a file: URI so that '?', '#' and '%' in it are not mistaken
// for URI syntax.
func dsn(path string, pragmas ...string) string {
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	var b strings.Builder
	b.WriteString("file:")
	b.WriteString(r.Replace(path))
	for i, p := range pragmas {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString("_pragma=")
		b.WriteString(url.QueryEscape(p))
	}
	return b.String()
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// enter registers an in-flight call; it fails after Close. Every exported
// method that touches the database calls enter and defers leave, so that
// Close can let in-flight calls finish first.
func (s *Store) enter() error {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closed {
		return mailstore.ErrClosed
	}
	s.inflight.Add(1)
	return nil
}

func (s *Store) leave() { s.inflight.Done() }

// Close waits for in-flight calls, stops the committer and closes the
// database. Spools created but not consumed stay in blobs/tmp until a later
// CollectGarbage removes them.
func (s *Store) Close() error {
	s.gate.Lock()
	if s.closed {
		s.gate.Unlock()
		return nil
	}
	s.closed = true
	s.gate.Unlock()

	s.inflight.Wait()
	close(s.ops)
	<-s.committerDone

	var errs []error
	s.rmu.Lock()
	for _, st := range s.rstmt {
		st.Close()
	}
	s.rstmt = nil
	s.rmu.Unlock()
	errs = append(errs, s.rdb.Close(), s.wdb.Close())
	return errors.Join(errs...)
}

// NewSpool starts receiving a message into blobs/tmp.
func (s *Store) NewSpool() (mailstore.Spool, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	return s.blobs.NewSpool()
}

// Subscribe returns a subscription to the account's committed changes.
func (s *Store) Subscribe(accountID int64) *mailstore.Subscription {
	return s.hub.Subscribe(accountID)
}

// LockMailbox takes the in-process exclusive lock of a mailbox (POP3).
//
// The lock lives in this process only: another process opening the same
// data directory does not see it. That is enough today because only the
// server runs POP3 sessions; multi-process and multi-node locking belongs
// to the PostgreSQL backend issue.
func (s *Store) LockMailbox(ctx context.Context, mailboxID int64) (func(), error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
		return nil, err
	}
	s.locksMu.Lock()
	defer s.locksMu.Unlock()
	if _, held := s.locks[mailboxID]; held {
		return nil, mailstore.ErrLocked
	}
	s.locks[mailboxID] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.locksMu.Lock()
			delete(s.locks, mailboxID)
			s.locksMu.Unlock()
		})
	}, nil
}

// readStmt returns the prepared read statement for q, preparing it on first
// use (database/sql re-prepares it per pooled connection as needed).
func (s *Store) readStmt(ctx context.Context, q string) (*sql.Stmt, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if st, ok := s.rstmt[q]; ok {
		return st, nil
	}
	if s.rstmt == nil {
		return nil, mailstore.ErrClosed
	}
	st, err := s.rdb.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("sqlite: prepare: %w", err)
	}
	s.rstmt[q] = st
	return st, nil
}

// query runs a read query on the reader pool.
func (s *Store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.readStmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// queryRow runs a single-row read query on the reader pool.
func (s *Store) queryRow(ctx context.Context, q string, args ...any) scanner {
	st, err := s.readStmt(ctx, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// nanos converts a time to the stored form; fromNanos converts back (UTC).
func nanos(t time.Time) int64     { return t.UnixNano() }
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }
