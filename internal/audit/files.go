package audit

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// File names in the audit directory.
const (
	CurrentName = "audit.jsonl" // the file being appended to
	lockName    = "audit.lock"  // flock(2) target shared by every writer
)

// archiveRE matches rotated files: audit-<UTC time of the rotation>-<seq of
// the file's last record, 20 digits>.jsonl. The seq orders them (clocks can
// go backwards; seqs cannot).
var archiveRE = regexp.MustCompile(`^audit-(\d{8}T\d{6}\.\d{9}Z)-(\d{20})\.jsonl$`)

func archiveName(t time.Time, lastSeq uint64) string {
	return fmt.Sprintf("audit-%s-%020d.jsonl", t.UTC().Format("20060102T150405.000000000Z"), lastSeq)
}

// logFile is one file of the chain.
type logFile struct {
	name    string
	seq     uint64 // archives: the seq of the last record
	current bool
}

// listFiles returns the archives in seq order followed by the current file
// (if it exists), and the names of entries that look like part of the log
// but are not (wrong name pattern, not a regular file, a duplicate seq).
func listFiles(dir string) (files []logFile, odd []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var cur *logFile
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "audit") || name == lockName {
			continue
		}
		if !e.Type().IsRegular() {
			odd = append(odd, name)
			continue
		}
		if name == CurrentName {
			cur = &logFile{name: name, current: true}
			continue
		}
		m := archiveRE.FindStringSubmatch(name)
		if m == nil {
			odd = append(odd, name)
			continue
		}
		seq, err := strconv.ParseUint(m[2], 10, 64)
		if err != nil || seq == 0 {
			odd = append(odd, name)
			continue
		}
		files = append(files, logFile{name: name, seq: seq})
	}
	slices.SortStableFunc(files, func(a, b logFile) int { return cmp.Compare(a.seq, b.seq) })
	for i := 1; i < len(files); i++ {
		if files[i].seq == files[i-1].seq {
			odd = append(odd, files[i].name)
		}
	}
	if cur != nil {
		files = append(files, *cur)
	}
	return files, odd, nil
}

// openNoFollow opens path without following a final symlink and checks that
// it is a regular file.
func openNoFollow(path string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link; the audit log does not follow links", path)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return f, nil
}

// archiveHead returns the last record of the newest archive, or genesis
// when there is none. An archive always ends with a complete record (it is
// renamed only after a complete write and an fsync), so anything else is
// an error.
func archiveHead(dir string) (chainHead, error) {
	files, _, err := listFiles(dir)
	if err != nil {
		return chainHead{}, err
	}
	var last *logFile
	for i := range files {
		if !files[i].current {
			last = &files[i]
		}
	}
	if last == nil {
		return genesis, nil
	}
	path := filepath.Join(dir, last.name)
	f, err := openNoFollow(path, os.O_RDONLY, 0)
	if err != nil {
		return chainHead{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return chainHead{}, err
	}
	size := fi.Size()
	start := max(0, size-smallWindow)
	buf := make([]byte, size-start)
	if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return chainHead{}, err
	}
	if len(buf) == 0 || buf[len(buf)-1] != '\n' {
		return chainHead{}, fmt.Errorf("%s does not end with a complete record; run letterbox audit verify", path)
	}
	body := buf[:len(buf)-1]
	i := bytes.LastIndexByte(body, '\n')
	if i < 0 && start > 0 {
		return chainHead{}, fmt.Errorf("%s: last line too long; run letterbox audit verify", path)
	}
	line := body[i+1:]
	r, err := ParseRecord(line)
	if err != nil {
		return chainHead{}, fmt.Errorf("%s: last line: %v; run letterbox audit verify", path, err)
	}
	if r.Seq != last.seq {
		return chainHead{}, fmt.Errorf("%s: last record has seq %d, the name says %d; run letterbox audit verify", path, r.Seq, last.seq)
	}
	return chainHead{r.Seq, LineHash(line)}, nil
}

// syncDir fsyncs a directory, making the entries created or renamed in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ensureDir creates dir (mode 0700) if needed and checks that it is a real
// directory, not a symlink, and not writable by group or others (who could
// then replace the files).
func ensureDir(dir string) error {
	_, err := os.Lstat(dir)
	created := errors.Is(err, fs.ErrNotExist)
	if created {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%s is a symbolic link; name the real directory", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %04o); it must be 0700", dir, fi.Mode().Perm())
	}
	if created {
		return syncDir(filepath.Dir(dir))
	}
	return nil
}

// flock takes (how = syscall.LOCK_EX or LOCK_SH) or releases (LOCK_UN) the
// lock on f.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}

type fileID struct{ dev, ino uint64 }

func idOf(fi fs.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{uint64(st.Dev), st.Ino}
	}
	return fileID{}
}
