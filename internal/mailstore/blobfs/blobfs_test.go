package blobfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// normalise is the reference for the spool's line-ending rule.
func normalise(in []byte) []byte {
	var out []byte
	for i, c := range in {
		if c == '\n' && (i == 0 || in[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

func newFS(t *testing.T) *FS {
	t.Helper()
	b, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, b *FS, chunks ...[]byte) *Spool {
	t.Helper()
	s, err := b.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks {
		if n, err := s.Write(c); err != nil || n != len(c) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	return s
}

func commit(t *testing.T, b *FS, s *Spool) (string, bool) {
	t.Helper()
	id, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	var dirs DirSet
	dedup, err := b.Commit(s, &dirs)
	if err != nil {
		t.Fatal(err)
	}
	if err := dirs.Sync(); err != nil {
		t.Fatal(err)
	}
	return id, dedup
}

func readAll(t *testing.T, b *FS, id string) []byte {
	t.Helper()
	bl, err := b.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer bl.Close()
	data, err := io.ReadAll(bl)
	if err != nil {
		t.Fatal(err)
	}
	if bl.Size() != int64(len(data)) {
		t.Fatalf("Size %d, read %d", bl.Size(), len(data))
	}
	return data
}

func TestNormalisation(t *testing.T) {
	b := newFS(t)
	for _, c := range []struct {
		chunks []string
		want   string
	}{
		{[]string{"a\nb"}, "a\r\nb"},
		{[]string{"a\r\nb"}, "a\r\nb"},
		{[]string{"a\rb\r"}, "a\rb\r"},
		{[]string{"a\r", "\nb"}, "a\r\nb"},
		{[]string{"a\r", "", "\n"}, "a\r\n"},
		{[]string{"\n"}, "\r\n"},
		{[]string{"\r", "\r", "\n", "\n"}, "\r\r\n\r\n"},
		{[]string{"x\x00\xff\n"}, "x\x00\xff\r\n"},
		{nil, ""},
	} {
		var chunks [][]byte
		for _, s := range c.chunks {
			chunks = append(chunks, []byte(s))
		}
		s := write(t, b, chunks...)
		if s.Size() != int64(len(c.want)) {
			t.Fatalf("%q: Size %d, want %d", c.chunks, s.Size(), len(c.want))
		}
		id, _ := commit(t, b, s)
		sum := sha256.Sum256([]byte(c.want))
		if id != hex.EncodeToString(sum[:]) {
			t.Fatalf("%q: id %s is not the SHA-256 of the normalised bytes", c.chunks, id)
		}
		if got := readAll(t, b, id); !bytes.Equal(got, []byte(c.want)) {
			t.Fatalf("%q: stored %q, want %q", c.chunks, got, c.want)
		}
	}
}

// TestNormalisationRandom checks random inputs, split at random points
// (also larger than the internal buffer), against the reference.
func TestNormalisationRandom(t *testing.T) {
	b := newFS(t)
	rng := rand.New(rand.NewPCG(7, 9))
	alphabet := []byte("\r\n\r\nab\x00")
	for iter := 0; iter < 50; iter++ {
		n := rng.IntN(3 * spoolBufSize)
		if iter%5 == 0 {
			n = rng.IntN(20)
		}
		in := make([]byte, n)
		for i := range in {
			in[i] = alphabet[rng.IntN(len(alphabet))]
		}
		var chunks [][]byte
		for rest := in; len(rest) > 0; {
			k := min(len(rest), rng.IntN(2*spoolBufSize)+1)
			if rng.IntN(3) == 0 {
				k = min(len(rest), rng.IntN(3)+1)
			}
			chunks = append(chunks, rest[:k])
			rest = rest[k:]
		}
		s := write(t, b, chunks...)
		id, _ := commit(t, b, s)
		if got, want := readAll(t, b, id), normalise(in); !bytes.Equal(got, want) {
			t.Fatalf("iteration %d: stored bytes differ from reference (%d vs %d octets)", iter, len(got), len(want))
		}
	}
}

func TestCommitDedupAndLayout(t *testing.T) {
	b := newFS(t)
	id, dedup := commit(t, b, write(t, b, []byte("hello\n")))
	if dedup {
		t.Fatal("first commit deduplicated")
	}
	want := filepath.Join(b.Root(), id[:2], id)
	if _, err := os.Stat(want); err != nil {
		t.Fatalf("blob not at %s: %v", want, err)
	}
	s2 := write(t, b, []byte("hello\r\n"))
	tmpName := s2.f.Name()
	id2, dedup := commit(t, b, s2)
	if id2 != id || !dedup {
		t.Fatalf("second commit: id %s dedup %v", id2, dedup)
	}
	if _, err := os.Stat(tmpName); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("deduplicated spool file still exists: %v", err)
	}
	s2.Abort() // no-op after commit
	if _, err := os.Stat(want); err != nil {
		t.Fatal("Abort after commit removed the blob")
	}
	ents, _ := os.ReadDir(filepath.Join(b.Root(), "tmp"))
	if len(ents) != 0 {
		t.Fatalf("tmp not empty: %v", ents)
	}

	// A damaged (wrong size) existing file is replaced.
	if err := os.WriteFile(want, []byte("trunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, dedup := commit(t, b, write(t, b, []byte("hello\n"))); dedup {
		t.Fatal("deduplicated against a file of the wrong size")
	}
	if got := readAll(t, b, id); string(got) != "hello\r\n" {
		t.Fatalf("after repair: %q", got)
	}
}

func TestDirSet(t *testing.T) {
	b := newFS(t)
	var dirs DirSet
	s := write(t, b, []byte("x"))
	id, _ := s.Finish()
	if _, err := b.Commit(s, &dirs); err != nil {
		t.Fatal(err)
	}
	// New fan-out directory: the blob's directory and the root.
	if dirs.Len() != 2 {
		t.Fatalf("DirSet has %d directories, want 2", dirs.Len())
	}
	if err := dirs.Sync(); err != nil {
		t.Fatal(err)
	}
	if dirs.Len() != 0 {
		t.Fatal("Sync did not empty the set")
	}
	// Same directory again: parents are known now.
	s = write(t, b, []byte("x"))
	s.Finish()
	if _, err := b.Commit(s, &dirs); err != nil {
		t.Fatal(err)
	}
	if dirs.Len() != 1 {
		t.Fatalf("DirSet has %d directories, want 1", dirs.Len())
	}
	if _, ok := dirs.dirs[filepath.Join(b.Root(), id[:2])]; !ok {
		t.Fatalf("DirSet lacks the blob directory: %v", dirs.dirs)
	}
	dirs.Reset()
	// A failed batch (Reset instead of Sync) does not mark parents known.
	s = write(t, b, []byte("y"))
	s.Finish()
	b.Commit(s, &dirs)
	n := dirs.Len()
	dirs.Reset()
	s = write(t, b, []byte("y"))
	s.Finish()
	b.Commit(s, &dirs)
	if dirs.Len() != n {
		t.Fatalf("after Reset: %d directories, want %d again", dirs.Len(), n)
	}
}

func TestSpoolLifecycle(t *testing.T) {
	b := newFS(t)
	s := write(t, b, []byte("abc"))
	name := s.f.Name()
	s.Abort()
	s.Abort()
	if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Abort left the spool file")
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("Write after Abort succeeded")
	}
	if _, err := s.Finish(); err == nil {
		t.Fatal("Finish after Abort succeeded")
	}
	s = write(t, b, []byte("abc"))
	id1, err := s.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if id2, _ := s.Finish(); id2 != id1 || s.ID() != id1 {
		t.Fatal("Finish not idempotent")
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("Write after Finish succeeded")
	}
	got, _ := io.ReadAll(s.NewReader())
	if string(got) != "abc" {
		t.Fatalf("NewReader: %q", got)
	}
	var dirs DirSet
	s2 := write(t, b, []byte("unfinished"))
	if _, err := b.Commit(s2, &dirs); err == nil {
		t.Fatal("Commit of an unfinished spool succeeded")
	}
	s2.Abort()
	other := newFS(t)
	if _, err := other.Commit(s, &dirs); err == nil {
		t.Fatal("Commit into another FS succeeded")
	}
	s.Abort()
}

func TestOpenRemoveWalk(t *testing.T) {
	b := newFS(t)
	var ids []string
	for _, body := range []string{"a", "b", "c", "d", "e"} {
		id, _ := commit(t, b, write(t, b, []byte(body)))
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// Strays are ignored by Walk.
	os.WriteFile(filepath.Join(b.Root(), "stray"), nil, 0o600)
	os.MkdirAll(filepath.Join(b.Root(), "zz", "00"), 0o700)
	os.WriteFile(filepath.Join(b.Root(), ids[0][:2], ids[0][2:4], "junk"), nil, 0o600)
	var walked []string
	if err := b.Walk(func(id string) error { walked = append(walked, id); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(walked, ids) {
		t.Fatalf("Walk = %v, want %v", walked, ids)
	}
	stop := errors.New("stop")
	if err := b.Walk(func(string) error { return stop }); err != stop {
		t.Fatalf("Walk error = %v", err)
	}
	removed, err := b.Remove(ids[2])
	if err != nil || !removed {
		t.Fatalf("Remove = %v, %v", removed, err)
	}
	if removed, err := b.Remove(ids[2]); err != nil || removed {
		t.Fatalf("second Remove = %v, %v", removed, err)
	}
	if _, err := b.Remove("../x"); err == nil {
		t.Fatal("Remove of invalid id succeeded")
	}
	for _, id := range []string{ids[2], "nope", "../../etc/passwd", ids[0][:63] + "G"} {
		if _, err := b.Open(id); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Open(%q) = %v", id, err)
		}
	}
}

func TestCleanTmp(t *testing.T) {
	b := newFS(t)
	live := write(t, b, []byte("live"))
	old := filepath.Join(b.Root(), "tmp", "spool-old")
	young := filepath.Join(b.Root(), "tmp", "spool-young")
	for _, p := range []string{old, young} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-48 * time.Hour)
	os.Chtimes(old, past, past)
	os.Chtimes(live.f.Name(), past, past)
	n, err := b.CleanTmp(24 * time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("CleanTmp = %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("old spool file kept")
	}
	for _, p := range []string{young, live.f.Name()} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s removed", p)
		}
	}
	// The live spool still works.
	id, _ := commit(t, b, live)
	if got := readAll(t, b, id); string(got) != "live" {
		t.Fatalf("live spool: %q", got)
	}
}
