package audit

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxFileSize  = 64 << 20
	DefaultSyncInterval = 100 * time.Millisecond
)

// ErrClosed is returned by appends after Close.
var ErrClosed = errors.New("audit: log closed")

// Recorder is what protocol code records events with. A nil Recorder means
// auditing is off; implementations never block on an fsync and report their
// own failures (a failed record does not fail the mail operation).
type Recorder interface {
	Record(Event)
}

// Options configure a Log.
type Options struct {
	// MaxFileSize: after a record makes the current file at least this
	// large, the file is rotated. 0 means DefaultMaxFileSize.
	MaxFileSize int64
	// SyncInterval bounds how long a record written by Append stays
	// without fsync. 0 means DefaultSyncInterval.
	SyncInterval time.Duration
	// Logger receives failures and recoveries; nil discards them.
	Logger *slog.Logger
}

// Log appends records to the audit directory. It is safe for concurrent
// use, and several Logs (in one process or several) may append to the same
// directory: each append holds an flock on the directory's lock file.
type Log struct {
	dir  string
	cur  string // path of the current file
	opt  Options
	log  *slog.Logger
	lock *os.File

	mu     sync.Mutex
	closed bool
	f      *os.File // the current file (O_RDWR|O_APPEND); nil after a rotation
	fid    fileID
	size   int64  // f's size after this Log's last write
	valid  bool   // seq, hash and size describe f as this Log left it
	seq    uint64 // the chain head
	hash   string

	kick       chan struct{} // a write awaits the background fsync
	stop       chan struct{}
	syncerDone chan struct{}
	onSync     func(error) // tests: called after each background fsync
}

// Open opens (creating if needed, mode 0700) the audit directory dir and
// positions the Log at the end of its chain. If the current file ends with
// damage from a crash, Open records it (see the package doc); damage that
// no crash leaves is an error.
func Open(dir string, opt Options) (*Log, error) {
	if opt.MaxFileSize <= 0 {
		opt.MaxFileSize = DefaultMaxFileSize
	}
	if opt.SyncInterval <= 0 {
		opt.SyncInterval = DefaultSyncInterval
	}
	logger := opt.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := ensureDir(dir); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	lock, err := openNoFollow(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{dir: dir, cur: filepath.Join(dir, CurrentName), opt: opt, log: logger, lock: lock,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), syncerDone: make(chan struct{})}
	if err := l.withFlock(l.refresh); err != nil {
		if l.f != nil {
			l.f.Close()
		}
		lock.Close()
		return nil, err
	}
	go l.syncer()
	logger.Info("audit log open", "dir", dir, "seq", l.seq, "head", l.hash)
	return l, nil
}

// Head returns the seq and hash of the last record this Log wrote or found
// (records other processes appended since are not reflected).
func (l *Log) Head() (uint64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq, l.hash
}

// Record appends e and reports a failure to the Logger. admin.* events are
// fsynced before it returns; the others within SyncInterval.
func (l *Log) Record(e Event) {
	var err error
	if strings.HasPrefix(e.Event, "admin.") {
		err = l.AppendSync(e)
	} else {
		err = l.Append(e)
	}
	if err != nil {
		l.log.Error("audit record not written", "event", e.Event, "user", e.User, "err", err)
	}
}

// Append writes e as the next record. It returns once the record is in the
// file (written, visible to readers); the fsync follows within
// SyncInterval, shared with the records written meanwhile.
func (l *Log) Append(e Event) error { return l.append(e, false) }

// AppendSync writes e and fsyncs it before returning.
func (l *Log) AppendSync(e Event) error { return l.append(e, true) }

func (l *Log) append(e Event, durable bool) error {
	if e.Event == "" {
		return errors.New("audit: event without a name")
	}
	r := newRecord(e)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	defer l.mu.Unlock()
	if err := l.withFlock(func() error { return l.appendLocked(r) }); err != nil {
		return err
	}
	if !durable {
		select {
		case l.kick <- struct{}{}:
		default:
		}
		return nil
	}
	// Outside the flock (other processes go on appending), inside l.mu
	// (nothing here closes f meanwhile). f is nil after a rotation,
	// which fsynced the file before renaming it.
	if l.f != nil {
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("audit: fsync %s: %w", l.cur, err)
		}
	}
	return nil
}

// withFlock runs fn holding the directory's lock (l.mu is held by the
// caller, or the Log is not shared yet).
func (l *Log) withFlock(fn func() error) error {
	if err := flock(l.lock, syscall.LOCK_EX); err != nil {
		return fmt.Errorf("audit: lock: %w", err)
	}
	err := fn()
	if uerr := flock(l.lock, syscall.LOCK_UN); err == nil && uerr != nil {
		err = fmt.Errorf("audit: unlock: %w", uerr)
	}
	return err
}

// appendLocked writes r after the chain head, then rotates if the file is
// full. l.mu and the flock are held.
func (l *Log) appendLocked(r *Record) error {
	if err := l.refresh(); err != nil {
		return err
	}
	r.Seq, r.Prev = l.seq+1, l.hash
	r.Time = time.Now().UTC().Format(TimeLayout)
	line, err := marshal(r)
	if err != nil {
		return err
	}
	if err := l.write(nil, line); err != nil {
		return err
	}
	if l.size >= l.opt.MaxFileSize {
		if err := l.rotate(); err != nil {
			l.log.Error("audit log rotation failed; appending to the current file", "file", l.cur, "err", err)
		}
	}
	return nil
}

// write appends prefix, line and a newline in one write(2) and advances
// the head. After a failure the file's end is unknown: the next append
// re-reads it (and records the damage, if any).
func (l *Log) write(prefix, line []byte) error {
	buf := make([]byte, 0, len(prefix)+len(line)+1)
	buf = append(append(append(buf, prefix...), line...), '\n')
	n, err := l.f.Write(buf)
	l.size += int64(n)
	if err != nil {
		l.valid = false
		return fmt.Errorf("audit: writing %s: %w", l.cur, err)
	}
	l.seq++
	l.hash = LineHash(line)
	return nil
}

// refresh makes seq, hash and f describe the end of the chain as it is on
// disk, which another writer may have moved since this Log's last write.
// The check is one lstat(2): the current file is still the one this Log
// has open and has the size this Log left it at. l.mu and the flock are
// held.
func (l *Log) refresh() error {
	fi, err := os.Lstat(l.cur)
	switch {
	case err == nil && !fi.Mode().IsRegular():
		l.valid = false
		return fmt.Errorf("audit: %s is not a regular file (a symbolic link?); not writing to it", l.cur)
	case err == nil:
		if l.valid && l.f != nil && idOf(fi) == l.fid && fi.Size() == l.size {
			return nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("audit: %w", err)
	}
	return l.reload()
}

// reload opens (or creates) the current file and reads the chain head from
// its end, or from the newest archive when it holds no record. Damage after
// the last record is recorded with an audit.recovered record.
func (l *Log) reload() error {
	l.valid = false
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	f, err := openNoFollow(l.cur, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	created := err == nil
	if errors.Is(err, fs.ErrExist) {
		f, err = openNoFollow(l.cur, os.O_RDWR|os.O_APPEND, 0)
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if created {
		if err := syncDir(l.dir); err != nil {
			f.Close()
			return fmt.Errorf("audit: %w", err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	plan, err := readPlan(f, fi.Size(), func() (chainHead, error) { return archiveHead(l.dir) })
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %s: %w", l.cur, err)
	}
	l.f, l.fid, l.size = f, idOf(fi), fi.Size()
	l.seq, l.hash = plan.head.seq, plan.head.hash
	switch {
	case plan.complete:
		// The record was written whole but for its newline.
		n, err := l.f.Write([]byte{'\n'})
		l.size += int64(n)
		if err != nil {
			return fmt.Errorf("audit: writing %s: %w", l.cur, err)
		}
		l.seq, l.hash = plan.last.Seq, LineHash(plan.damage)
		l.log.Warn("audit log: completed a record cut before its newline", "file", l.cur, "seq", l.seq)
	case plan.damage != nil:
		out, line, err := recoveryBytes(plan, time.Now())
		if err != nil {
			return err
		}
		if err := l.write(out[:len(out)-len(line)-1], line); err != nil {
			return err
		}
		if err := l.f.Sync(); err != nil {
			l.valid = false
			return fmt.Errorf("audit: fsync %s: %w", l.cur, err)
		}
		l.log.Warn("audit log: damaged tail recorded (a write cut short by a crash or a full disk)", "file", l.cur,
			"bytes", len(plan.damage), "after_seq", plan.head.seq, "recovery_seq", l.seq)
	}
	l.valid = true
	return nil
}

// readPlan reads the end of f (size bytes) and plans the continuation.
func readPlan(f *os.File, size int64, before func() (chainHead, error)) (tailPlan, error) {
	if size == 0 {
		head, err := before()
		return tailPlan{head: head}, err
	}
	for _, w := range []int64{smallWindow, tailWindow} {
		start := max(0, size-w)
		buf := make([]byte, size-start)
		if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return tailPlan{}, err
		}
		plan, err := planTail(buf, start, before)
		if errors.Is(err, errWindow) && w == smallWindow && start > 0 {
			continue
		}
		if errors.Is(err, errWindow) {
			return plan, fmt.Errorf("no complete record in the last %d bytes: more damage than a crash leaves; run letterbox audit verify", len(buf))
		}
		return plan, err
	}
	panic("unreachable")
}

// rotate renames the full current file to its archive name. The file is
// fsynced first and the directory after, so an archive is always complete
// and durable; the next append creates a new current file whose first
// record follows this file's last. l.mu and the flock are held.
func (l *Log) rotate() error {
	if err := l.f.Sync(); err != nil {
		return err
	}
	target := filepath.Join(l.dir, archiveName(time.Now(), l.seq))
	if _, err := os.Lstat(target); err == nil {
		return fmt.Errorf("%s already exists", target)
	}
	if err := os.Rename(l.cur, target); err != nil {
		return err
	}
	l.f.Close()
	l.f, l.valid = nil, false
	if err := syncDir(l.dir); err != nil {
		return err
	}
	l.log.Info("audit log rotated", "file", target, "seq", l.seq, "head", l.hash)
	return nil
}

// syncer fsyncs the current file at most SyncInterval after a write that
// Append did not fsync; every record written meanwhile shares that fsync.
func (l *Log) syncer() {
	defer close(l.syncerDone)
	for {
		select {
		case <-l.kick:
		case <-l.stop:
			return
		}
		t := time.NewTimer(l.opt.SyncInterval)
		select {
		case <-t.C:
		case <-l.stop:
			t.Stop()
			return // Close fsyncs
		}
		err := l.syncCurrent()
		if err != nil {
			l.log.Error("audit log fsync failed", "file", l.cur, "err", err)
		}
		if l.onSync != nil {
			l.onSync(err)
		}
	}
}

// syncCurrent fsyncs the current file without holding l.mu, so that
// appends go on meanwhile. If a reload closes the file under it (another
// process appended), the reopened file is the same one and is synced
// instead; a rotation fsyncs the file itself and leaves l.f nil.
func (l *Log) syncCurrent() error {
	var err error
	for range 3 {
		l.mu.Lock()
		f := l.f
		l.mu.Unlock()
		if f == nil {
			return nil
		}
		if err = f.Sync(); !errors.Is(err, os.ErrClosed) {
			return err
		}
	}
	return err
}

// Close fsyncs and closes the log. Appends after Close fail with ErrClosed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.syncerDone
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if l.f != nil {
		if err := l.f.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("audit: fsync %s: %w", l.cur, err))
		}
		errs = append(errs, l.f.Close())
		l.f = nil
	}
	errs = append(errs, l.lock.Close())
	return errors.Join(errs...)
}
