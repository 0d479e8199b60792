// Package blobfs stores message bodies as immutable, content-addressed files.
//
// It exists because message bodies do not belong in the metadata database:
// they are large, written once and never changed, read with random access
// (IMAP partial FETCH) and shared by every copy of a message (a delivery to
// many recipients, COPY, MOVE). Keeping them as plain files named by their
// SHA-256 keeps the database small and its transactions short, lets copies
// share one file, and lets every backend (the embedded SQLite one and the
// PostgreSQL one on a shared file system) use the same durable layout.
//
// Layout under the root directory:
//
//	tmp/<random>            spools being written (see Spool)
//	ab/<sha256hex>          committed blobs; ab is the first byte of the
//	                        hex digest
//
// One level of 256 directories (not two levels of 65,536) keeps the
// directory fsyncs of a group commit few: a batch of deliveries touches at
// most 256 directories, and usually far fewer, and it fsyncs each only
// once. 256 directories hold tens of millions of files comfortably on ext4
// and XFS (hashed directory indexes).
//
// Durability protocol (design.md §4): a Spool's bytes are fsynced (Finish)
// before the file is renamed to its final name (Commit), and the directory
// entries created by Commit are fsynced (DirSet.Sync) before the caller
// commits any metadata that references the blob. A crash at any point
// therefore leaves at worst an orphan file (in tmp/ or in the tree) that no
// metadata references and that garbage collection removes; it never leaves
// metadata pointing at a missing or partial file.
//
// This package does not decide which blobs are garbage: it cannot see the
// references. Backends must serialise "make a blob present and reference it"
// with "find a blob unreferenced and remove it" (the sqlite backend does both
// under the database's write lock).
package blobfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// IDLen is the length of a blob ID: a lower-case hex SHA-256 digest.
const IDLen = 64

// FS is a blob directory. It is safe for concurrent use, also by several
// processes sharing the directory.
type FS struct {
	root string
	tmp  string

	mu   sync.Mutex
	live map[string]struct{} // names in tmp/ of this process's open spools

	// known holds the fan-out directories ("ab") this process has
	// created or found and whose parents it has fsynced since, so Commit
	// does not repeat the mkdir and parent fsync for every blob.
	known sync.Map
}

// Open opens (creating if needed) the blob directory root.
func Open(root string) (*FS, error) {
	root = filepath.Clean(root)
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("blobfs: %w", err)
	}
	return &FS{root: root, tmp: filepath.Join(root, "tmp"), live: make(map[string]struct{})}, nil
}

// Root returns the blob directory.
func (b *FS) Root() string { return b.root }

// ValidID reports whether id has the form of a blob ID.
func ValidID(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isLowerHex(id[i]) {
			return false
		}
	}
	return true
}

// Path returns the file name of blob id. id must be valid.
func (b *FS) Path(id string) string {
	return filepath.Join(b.root, id[0:2], id)
}

// Blob is an open blob: an *os.File that also knows its size. It implements
// mailstore.Blob.
type Blob struct {
	*os.File
	size int64
}

// Size returns the blob's length in octets.
func (bl *Blob) Size() int64 { return bl.size }

// Open opens blob id for reading. A missing blob yields an error matching
// fs.ErrNotExist.
func (b *FS) Open(id string) (*Blob, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("blobfs: invalid blob id %q: %w", id, fs.ErrNotExist)
	}
	f, err := os.Open(b.Path(id))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Blob{File: f, size: fi.Size()}, nil
}

// Remove deletes blob id. It reports whether a file was removed; a missing
// blob is not an error. The removal is not fsynced: if a crash undoes it,
// the blob is an orphan again and the next collection removes it.
func (b *FS) Remove(id string) (bool, error) {
	if !ValidID(id) {
		return false, fmt.Errorf("blobfs: invalid blob id %q", id)
	}
	err := os.Remove(b.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Walk calls fn for every committed blob, in ascending ID order (so a caller
// can merge the walk with a sorted list of referenced IDs). Files that do not
// look like blobs are skipped. If fn returns an error, Walk stops and returns
// it. Blobs committed or removed during the walk may or may not be seen.
func (b *FS) Walk(fn func(id string) error) error {
	tops, err := readDirNames(b.root)
	if err != nil {
		return err
	}
	for _, ab := range tops {
		if !isHexPair(ab) {
			continue // tmp/ and strays
		}
		names, err := readDirNames(filepath.Join(b.root, ab))
		if err != nil {
			return err
		}
		for _, id := range names {
			if !ValidID(id) || id[0:2] != ab {
				continue
			}
			if err := fn(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// readDirNames returns the sorted entry names of dir; a directory removed
// meanwhile reads as empty.
func readDirNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

func isHexPair(s string) bool {
	return len(s) == 2 && isLowerHex(s[0]) && isLowerHex(s[1])
}

func isLowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// CleanTmp removes spool files in tmp/ that were last modified more than
// olderThan ago and that do not belong to an open spool of this process.
// Spools of other processes are protected only by their age, so olderThan
// must exceed the longest time a message can take to arrive (hours, not
// seconds). It returns how many files it removed.
func (b *FS) CleanTmp(olderThan time.Duration) (int, error) {
	ents, err := os.ReadDir(b.tmp)
	if err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-olderThan)
	n := 0
	for _, e := range ents {
		name := e.Name()
		b.mu.Lock()
		_, live := b.live[name]
		b.mu.Unlock()
		if live {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(b.tmp, name)); err == nil {
			n++
		}
	}
	return n, nil
}

// DirSet collects the directories whose entries a batch of Commits changed,
// so that the committer can fsync each distinct directory once per batch
// instead of once per blob. The zero value is ready to use; it is not safe
// for concurrent use.
type DirSet struct {
	dirs  map[string]struct{}
	known []knownDir // fan-out directories to remember once synced
}

type knownDir struct {
	fs  *FS
	rel string
}

// Add records dir as needing an fsync.
func (d *DirSet) Add(dir string) {
	if d.dirs == nil {
		d.dirs = make(map[string]struct{})
	}
	d.dirs[dir] = struct{}{}
}

// Reset empties the set without syncing (after a failed batch whose
// metadata was rolled back).
func (d *DirSet) Reset() {
	clear(d.dirs)
	d.known = d.known[:0]
}

// Len returns the number of distinct directories recorded.
func (d *DirSet) Len() int { return len(d.dirs) }

// Sync fsyncs every recorded directory and empties the set. After it
// returns nil, every rename recorded by Commit into the set is durable.
//
// The fsyncs run in parallel: the file system can then satisfy them with
// one journal commit instead of one per directory.
func (d *DirSet) Sync() error {
	var first error
	switch n := len(d.dirs); {
	case n == 1:
		for dir := range d.dirs {
			first = syncDir(dir)
		}
	case n > 1:
		work := make(chan string)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for range min(n, maxParallelSyncs) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for dir := range work {
					errs <- syncDir(dir)
				}
			}()
		}
		for dir := range d.dirs {
			work <- dir
		}
		close(work)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil && first == nil {
				first = err
			}
		}
	}
	if first == nil {
		for _, k := range d.known {
			k.fs.known.Store(k.rel, struct{}{})
		}
	}
	clear(d.dirs)
	d.known = d.known[:0]
	return first
}

// maxParallelSyncs bounds the goroutines of one DirSet.Sync.
const maxParallelSyncs = 32

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blobfs: fsync %s: %w", dir, err)
	}
	return nil
}

// Commit moves a finished spool to its content address and records in dirs
// the directories that must be fsynced before the blob may be referenced. If
// a blob with the same ID and size already exists, the spool is discarded
// instead and the existing file is used (deduplicated reports this). Either
// way the spool is consumed: Abort becomes a no-op.
//
// Commit does not protect the existing file against a concurrent removal;
// the caller must exclude garbage collection between Commit and the commit
// of the metadata that references the blob.
func (b *FS) Commit(s *Spool, dirs *DirSet) (deduplicated bool, err error) {
	if s.fs != b {
		return false, errors.New("blobfs: spool belongs to another blob directory")
	}
	if s.state != stateFinished {
		return false, errors.New("blobfs: commit of a spool that is not finished")
	}
	rel := s.sum[0:2]
	dir := filepath.Join(b.root, rel)
	if err := b.ensureDir(rel, dirs); err != nil {
		return false, err
	}
	final := filepath.Join(dir, s.sum)
	// The directory is fsynced in both cases: an existing entry may have
	// been renamed in by a process that crashed before its own fsync.
	dirs.Add(dir)
	if fi, err := os.Lstat(final); err == nil && fi.Mode().IsRegular() && fi.Size() == s.size {
		s.discard()
		return true, nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("blobfs: %w", err)
	}
	// Missing, or (after a disk fault) of the wrong size: rename over it.
	// The spool's bytes were fsynced by Finish.
	if err := os.Rename(s.f.Name(), final); err != nil {
		return false, fmt.Errorf("blobfs: %w", err)
	}
	s.release()
	return false, nil
}

// ensureDir creates the fan-out directory rel ("ab") if needed. The first
// time this process uses a directory, the root's entry is added to dirs
// whether or not this process created them: another process may have
// created them and crashed before fsyncing.
func (b *FS) ensureDir(rel string, dirs *DirSet) error {
	if _, ok := b.known.Load(rel); ok {
		return nil
	}
	if err := os.Mkdir(filepath.Join(b.root, rel), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("blobfs: %w", err)
	}
	dirs.Add(b.root)
	// Remembered only once the parents' fsync succeeded (DirSet.Sync).
	dirs.known = append(dirs.known, knownDir{b, rel})
	return nil
}
