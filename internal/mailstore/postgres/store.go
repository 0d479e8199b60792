package postgres

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/blobfs"
)

// Options configure Open.
type Options struct {
	// URL is the PostgreSQL connection string (postgres://... or
	// key=value form). pgxpool settings such as pool_max_conns may be
	// given in it.
	URL string
	// BlobDir holds the message bodies (package blobfs). Every node of a
	// cluster must see the same directory (a shared file system).
	BlobDir string
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger
}

const (
	// migrateLockKey is the pg_advisory_xact_lock key that serialises
	// migrations. Mailbox locks (LockMailbox) use the mailbox ID, which is
	// positive, as key, so a negative key cannot collide with them.
	migrateLockKey int64 = -0x4c6574746572 // "Letter"

	// notifyChannel is the LISTEN/NOTIFY channel of change notifications.
	notifyChannel = "letterbox_changes"
	// appName is the application_name of the pool's connections;
	// listenAppName prefixes that of the LISTEN connection (followed by
	// "/" and the node ID).
	appName       = "letterbox"
	listenAppName = "letterbox-listen"

	// tmpGrace is how old an unreferenced spool file in blobs/tmp must be
	// before CollectGarbage removes it: spools of other nodes are only
	// protected by their age.
	tmpGrace = 24 * time.Hour

	// maxAttempts bounds the runs of one transaction that keeps failing
	// with a serialization failure or a deadlock.
	maxAttempts = 10
	// commitTimeout bounds a COMMIT once sent. The COMMIT does not use
	// the caller's context: a change that may already be durable must
	// not be abandoned (and reported as failed) because the caller gave
	// up a moment too early; it is still bounded, so a database that
	// stops answering yields an error, not a hang.
	commitTimeout = 30 * time.Second
	// defaultConnectTimeout applies when the URL sets no connect_timeout.
	defaultConnectTimeout = 10 * time.Second
)

// Store is the PostgreSQL mail store. It implements mailstore.Store.
type Store struct {
	log   *slog.Logger
	pool  *pgxpool.Pool
	blobs *blobfs.FS
	hub   *mailstore.Hub
	views viewCache
	node  string // this node's random ID, in notification payloads

	// listenCfg configures the dedicated LISTEN connection.
	listenCfg *pgx.ConnConfig

	gate     sync.RWMutex // guards closed against enter
	closed   bool
	inflight sync.WaitGroup

	locks mailboxLocks
	notes notifications

	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	// skipNotify makes the node send no NOTIFY (tests of the sweep).
	skipNotify atomic.Bool
}

var _ mailstore.Store = (*Store)(nil)

// Open connects to the database, brings its schema up to date (Migrate)
// and starts the notification machinery (see the package documentation).
func Open(ctx context.Context, opts Options) (*Store, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.BlobDir == "" {
		return nil, errors.New("postgres: Options.BlobDir is empty")
	}
	cfg, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if !strings.Contains(opts.URL, "pool_max_conns") {
		// pgxpool's default (max(4, NumCPU)) is too small for a mail
		// server, whose sessions mostly wait on the network.
		cfg.MaxConns = int32(max(16, 4*runtime.GOMAXPROCS(0)))
	}
	prepareConnConfig(cfg.ConnConfig, appName)
	warned := false
	var warnMu sync.Mutex
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		// Durability (design.md §4) needs synchronous_commit: a server
		// configured with it off gets it switched on for our sessions
		// (on, local, remote_write and remote_apply are kept as they
		// are: each waits at least for the local WAL flush).
		var sc string
		if err := c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil {
			return err
		}
		if sc == "off" {
			if _, err := c.Exec(ctx, "SET synchronous_commit = on"); err != nil {
				return err
			}
			warnMu.Lock()
			if !warned {
				warned = true
				logger.Warn("postgres: the server has synchronous_commit=off; letterbox turns it on for its sessions")
			}
			warnMu.Unlock()
		}
		return nil
	}

	if _, err := migrate(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	blobs, err := blobfs.Open(opts.BlobDir)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}

	var id [8]byte
	if _, err := cryptoRead(id[:]); err != nil {
		pool.Close()
		return nil, err
	}
	node := hex.EncodeToString(id[:])
	lc := cfg.ConnConfig.Copy()
	lc.RuntimeParams["application_name"] = listenAppName + "/" + node

	bgCtx, bgCancel := context.WithCancel(context.Background())
	s := &Store{
		log:       logger,
		pool:      pool,
		blobs:     blobs,
		hub:       mailstore.NewHub(),
		node:      node,
		listenCfg: lc,
		bgCtx:     bgCtx,
		bgCancel:  bgCancel,
	}
	s.locks.init()
	s.startNotifications()
	return s, nil
}

// prepareConnConfig sets letterbox's defaults on a connection config:
// application_name (unless the URL sets one) and a connect timeout.
func prepareConnConfig(cc *pgx.ConnConfig, name string) {
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = name
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = defaultConnectTimeout
	}
}

func cryptoRead(b []byte) (int, error) {
	n, err := crand.Read(b)
	if err != nil {
		return n, fmt.Errorf("postgres: node id: %w", err)
	}
	return n, nil
}

// enter registers an in-flight call; it fails after Close.
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

// Close waits for in-flight calls, stops the notification goroutines
// (sending the notifications still queued), releases the mailbox locks
// still held and closes the connection pool.
func (s *Store) Close() error {
	s.gate.Lock()
	if s.closed {
		s.gate.Unlock()
		return nil
	}
	s.closed = true
	s.gate.Unlock()

	s.inflight.Wait()
	s.stopNotifications()
	s.locks.closeAll()
	s.pool.Close()
	return nil
}

// NewSpool starts receiving a message into the blob directory's tmp/.
func (s *Store) NewSpool() (mailstore.Spool, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	return s.blobs.NewSpool()
}

// errRollback makes txn roll the transaction back and return nil: the
// function's results (set before it returned errRollback) say what
// happened.
var errRollback = errors.New("postgres: rollback")

// txn runs fn in a READ COMMITTED transaction and commits it. A
// serialization failure or a deadlock (SQLSTATE 40001, 40P01) reruns fn in
// a new transaction, so fn must reset whatever it records for its caller at
// its start. Errors fn returns (the mailstore sentinels, typically) are
// returned as they are, database errors through dbErr.
func (s *Store) txn(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.txnOnce(ctx, fn)
		if errors.Is(err, errRollback) {
			return nil
		}
		if err == nil || !retryable(err) || attempt >= maxAttempts || ctx.Err() != nil {
			return dbErr(err)
		}
		s.log.Debug("postgres: transaction retried", "attempt", attempt, "err", err)
		// A short random pause lets the other party of a deadlock finish.
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Store) txnOnce(ctx context.Context, fn func(tx pgx.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			tx.Rollback(rctx)
			cancel()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	return tx.Commit(cctx)
}

// retryable reports whether err is a serialization failure or a deadlock.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	return false
}

// pgCode returns the SQLSTATE of err, "" if it is not a server error.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// dbErr turns an error of the database layer into the store's form:
// mailstore sentinels and context errors pass unchanged, a full disk
// (SQLSTATE 53100) wraps mailstore.ErrInsufficientStorage, anything else is
// prefixed with "postgres:".
func dbErr(err error) error {
	if err == nil {
		return nil
	}
	if isSentinel(err) {
		return err
	}
	switch pgCode(err) {
	case "53100": // disk_full
		return fmt.Errorf("%w: postgres: %w", mailstore.ErrInsufficientStorage, err)
	}
	if strings.HasPrefix(err.Error(), "postgres: ") {
		return err
	}
	return fmt.Errorf("postgres: %w", err)
}

func isSentinel(err error) bool {
	for _, e := range []error{mailstore.ErrNoSuchAccount, mailstore.ErrAccountExists, mailstore.ErrNoSuchMailbox,
		mailstore.ErrMailboxExists, mailstore.ErrNoSuchMessage, mailstore.ErrInvalidName, mailstore.ErrNotAllowed,
		mailstore.ErrLocked, mailstore.ErrClosed, mailstore.ErrOverQuota, mailstore.ErrInvalidFlag,
		mailstore.ErrInsufficientStorage, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// nanos converts a time to the stored form (Unix nanoseconds, exact like
// the sqlite backend, so `letterbox store copy` keeps dates exactly);
// fromNanos converts back (UTC).
func nanos(t time.Time) int64     { return t.UnixNano() }
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// --- mailbox locks (POP3) ---

// mailboxLocks implements LockMailbox with session-level advisory locks
// (pg_try_advisory_lock, key = mailbox ID) held on one connection taken
// from the pool while this node holds at least one lock. One connection
// for all of a node's POP3 locks keeps long POP3 sessions from tying up
// one pool connection each; the local map gives exclusivity between the
// sessions of this node (advisory locks are re-entrant within one database
// session), the advisory lock between nodes.
type mailboxLocks struct {
	sem  chan struct{} // a mutex that can be waited for with a context
	conn *pgxpool.Conn // held while len(held) > 0
	held map[int64]*lockToken
}

type lockToken struct{ id int64 }

func (l *mailboxLocks) init() {
	l.sem = make(chan struct{}, 1)
	l.held = make(map[int64]*lockToken)
}

func (l *mailboxLocks) lock(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *mailboxLocks) unlock() { <-l.sem }

// dropConn closes the lock connection (which releases every advisory lock
// it holds) after an error that leaves its state unknown. Called with sem
// held.
func (l *mailboxLocks) dropConn() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	l.conn.Conn().Close(ctx)
	cancel()
	l.conn.Release()
	l.conn = nil
	clear(l.held)
}

// releaseConnIfIdle gives the connection back to the pool once no lock is
// held. Called with sem held.
func (l *mailboxLocks) releaseConnIfIdle() {
	if l.conn != nil && len(l.held) == 0 {
		l.conn.Release()
		l.conn = nil
	}
}

func (l *mailboxLocks) closeAll() {
	l.sem <- struct{}{}
	defer l.unlock()
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := l.conn.Exec(ctx, "SELECT pg_advisory_unlock_all()")
		cancel()
		if err != nil {
			l.dropConn()
			return
		}
		clear(l.held)
		l.releaseConnIfIdle()
	}
}

// LockMailbox takes the exclusive lock of a mailbox (POP3), for this node
// and against every other node sharing the database. ErrLocked if it is
// held.
func (s *Store) LockMailbox(ctx context.Context, mailboxID int64) (func(), error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if _, err := s.mailboxByID(ctx, mailboxID); err != nil {
		return nil, err
	}
	l := &s.locks
	if err := l.lock(ctx); err != nil {
		return nil, err
	}
	defer l.unlock()
	if _, ok := l.held[mailboxID]; ok {
		return nil, mailstore.ErrLocked
	}
	if l.conn == nil {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			return nil, dbErr(err)
		}
		l.conn = c
	}
	var ok bool
	if err := l.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", mailboxID).Scan(&ok); err != nil {
		// The connection's state is unknown (a cancelled query may
		// have taken the lock): drop it, which frees its locks.
		s.log.Warn("postgres: mailbox lock connection failed; locks of this node released", "err", err)
		l.dropConn()
		return nil, dbErr(err)
	}
	if !ok {
		l.releaseConnIfIdle()
		return nil, mailstore.ErrLocked
	}
	tok := &lockToken{mailboxID}
	l.held[mailboxID] = tok
	var once sync.Once
	return func() {
		once.Do(func() {
			l.sem <- struct{}{}
			defer l.unlock()
			if l.held[mailboxID] != tok {
				return // released with its connection
			}
			delete(l.held, mailboxID)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var released bool
			if err := l.conn.QueryRow(ctx, "SELECT pg_advisory_unlock($1)", mailboxID).Scan(&released); err != nil || !released {
				s.log.Warn("postgres: mailbox unlock failed; lock connection dropped", "mailbox", mailboxID, "err", err)
				l.dropConn()
				return
			}
			l.releaseConnIfIdle()
		})
	}, nil
}
