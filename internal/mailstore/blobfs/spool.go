package blobfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
)

// Spool states.
const (
	stateWriting  = iota // accepting Write
	stateFinished        // bytes fsynced and hashed; awaiting Commit or Abort
	stateDone            // consumed: committed, deduplicated or aborted
)

const spoolBufSize = 64 << 10

// Spool is a temporary file in tmp/ receiving one message. It implements
// mailstore.Spool: writes normalise line endings to CRLF (a bare LF becomes
// CRLF; a CR not followed by LF is kept as is, also when the CR ends one
// Write and the LF starts the next), and the SHA-256 of the normalised bytes
// is computed as they are written.
//
// Lifecycle: Write* → Finish → FS.Commit, or Abort at any time. A Spool is
// not safe for concurrent use; hand it between goroutines with the usual
// happens-before (a channel send), as the store's committer does.
type Spool struct {
	fs    *FS
	f     *os.File
	name  string // base name in tmp/
	h     hash.Hash
	buf   []byte
	size  int64
	cr    bool // the last byte accepted was CR
	err   error
	state int
	sum   string
}

// NewSpool creates an empty spool.
func (b *FS) NewSpool() (*Spool, error) {
	f, err := os.CreateTemp(b.tmp, "spool-*")
	if err != nil {
		return nil, fmt.Errorf("blobfs: %w", err)
	}
	s := &Spool{fs: b, f: f, name: filepath.Base(f.Name()), h: sha256.New(), buf: make([]byte, 0, spoolBufSize)}
	b.mu.Lock()
	b.live[s.name] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

var errNotWritable = errors.New("blobfs: write to a finished or aborted spool")

// Write appends p, normalising bare LF to CRLF. It reports len(p) on
// success. Errors are sticky.
func (s *Spool) Write(p []byte) (int, error) {
	if s.state != stateWriting {
		return 0, errNotWritable
	}
	if s.err != nil {
		return 0, s.err
	}
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.emit(p)
			s.cr = p[len(p)-1] == '\r'
			break
		}
		if i > 0 {
			s.emit(p[:i])
			s.cr = p[i-1] == '\r'
		}
		if s.cr {
			s.emit([]byte{'\n'})
		} else {
			s.emit([]byte{'\r', '\n'})
		}
		s.cr = false
		p = p[i+1:]
	}
	if s.err != nil {
		return 0, s.err
	}
	return n, nil
}

// emit buffers normalised bytes.
func (s *Spool) emit(p []byte) {
	s.size += int64(len(p))
	for len(p) > 0 && s.err == nil {
		if len(s.buf) == cap(s.buf) {
			s.flush()
		}
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf = s.buf[:len(s.buf)+k]
		p = p[k:]
	}
}

func (s *Spool) flush() {
	if len(s.buf) == 0 || s.err != nil {
		return
	}
	s.h.Write(s.buf)
	if _, err := s.f.Write(s.buf); err != nil {
		s.err = fmt.Errorf("blobfs: spool: %w", err)
	}
	s.buf = s.buf[:0]
}

// Size returns the number of octets stored so far, after normalisation.
func (s *Spool) Size() int64 { return s.size }

// Finish ends writing: it flushes and fsyncs the file and returns the blob
// ID (the hex SHA-256 of the contents). Calling it again returns the same
// ID.
func (s *Spool) Finish() (string, error) {
	switch s.state {
	case stateFinished:
		return s.sum, nil
	case stateDone:
		return "", errNotWritable
	}
	s.flush()
	if s.err != nil {
		return "", s.err
	}
	if err := s.f.Sync(); err != nil {
		s.err = fmt.Errorf("blobfs: spool fsync: %w", err)
		return "", s.err
	}
	s.sum = hex.EncodeToString(s.h.Sum(nil))
	s.state = stateFinished
	s.buf = nil
	return s.sum, nil
}

// ID returns the blob ID after Finish, "" before.
func (s *Spool) ID() string { return s.sum }

// NewReader returns a reader of the finished spool's bytes (to compute the
// message structure before commit). It reads through its own offset, so
// several readers may be used; none may be used after Commit or Abort.
func (s *Spool) NewReader() io.Reader {
	return io.NewSectionReader(s.f, 0, s.size)
}

// Abort discards the spool. It is a no-op once the spool was consumed.
func (s *Spool) Abort() {
	if s.state == stateDone {
		return
	}
	s.discard()
}

// discard closes and removes the temporary file.
func (s *Spool) discard() {
	name := s.f.Name()
	s.f.Close()
	os.Remove(name)
	s.release()
}

// release marks the spool consumed (its file renamed away or removed).
func (s *Spool) release() {
	if s.state != stateDone {
		s.f.Close() // harmless if already closed
	}
	s.state = stateDone
	s.buf = nil
	s.fs.mu.Lock()
	delete(s.fs.live, s.name)
	s.fs.mu.Unlock()
}
