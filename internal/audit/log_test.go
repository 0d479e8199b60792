package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func openT(t testing.TB, dir string, opt Options) *Log {
	t.Helper()
	l, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func appendN(t testing.TB, l *Log, n int, tag string) {
	t.Helper()
	for i := range n {
		if err := l.Append(Event{Event: EventRead, Proto: "imap", User: fmt.Sprintf("%s-%d@example.org", tag, i),
			Remote: "192.0.2.7:40000", Mailbox: "INBOX", UIDs: []uint32{uint32(i + 1)}, Detail: tag + "/" + fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
}

func lines(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(b, []byte("\n"))
}

func intact(t testing.TB, dir string, anchors ...Anchor) Report {
	t.Helper()
	rep, err := Verify(dir, anchors...)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Broken != nil {
		t.Fatalf("verify: %s", rep.Broken)
	}
	return rep
}

// chainFiles returns the log's files in chain order (archives, current).
func chainFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, odd, err := listFiles(dir)
	if err != nil || len(odd) > 0 {
		t.Fatalf("listFiles: %v %v", odd, err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.name)
	}
	return names
}

func TestRecordFormat(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir, Options{})
	if err := l.Append(Event{Event: EventLogin, Proto: "imap", User: "alice@example.org", Remote: "192.0.2.1:5000",
		TLS: false, Mech: "PLAIN"}); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Event{Event: EventMove, Proto: "imap", User: "alice@example.org", Remote: "[2001:db8::1]:993",
		TLS: true, Mailbox: "INBOX", Dest: "Archive", UIDs: []uint32{9, 1, 2, 3, 5, 3}}); err != nil {
		t.Fatal(err)
	}
	if err := l.AppendSync(Event{Event: EventUserAdd, Proto: "cli", User: "bob@example.org", Actor: "uid=0(root)"}); err != nil {
		t.Fatal(err)
	}
	ls := lines(t, filepath.Join(dir, CurrentName))
	if len(ls) != 4 || len(ls[3]) != 0 {
		t.Fatalf("want 3 newline-terminated lines, got %q", ls)
	}
	timeRE := `"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"`
	want := []string{
		`^\{"seq":1,` + timeRE + `,"event":"login","proto":"imap","user":"alice@example.org","remote":"192.0.2.1:5000","tls":false,"mech":"PLAIN","prev":"0{64}"\}\n$`,
		`^\{"seq":2,` + timeRE + `,"event":"move","proto":"imap","user":"alice@example.org","remote":"\[2001:db8::1\]:993","tls":true,"mailbox":"INBOX","dest":"Archive","uids":"1:3,5,9","count":5,"prev":"` + LineHash(bytes.TrimSuffix(ls[0], []byte("\n"))) + `"\}\n$`,
		`^\{"seq":3,` + timeRE + `,"event":"admin.user_add","proto":"cli","user":"bob@example.org","actor":"uid=0\(root\)","prev":"` + LineHash(bytes.TrimSuffix(ls[1], []byte("\n"))) + `"\}\n$`,
	}
	for i, w := range want {
		if !regexp.MustCompile(w).Match(ls[i]) {
			t.Errorf("line %d:\n%s\ndoes not match\n%s", i+1, ls[i], w)
		}
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700 | os.ModeDir}, {filepath.Join(dir, CurrentName), 0o600}, {filepath.Join(dir, lockName), 0o600}} {
		fi, err := os.Stat(c.path)
		if err != nil || fi.Mode() != c.mode {
			t.Errorf("%s: mode %v (%v), want %v", c.path, fi.Mode(), err, c.mode)
		}
	}
	rep := intact(t, dir)
	if rep.Records != 3 || rep.FirstSeq != 1 || rep.LastSeq != 3 || rep.Head != LineHash(bytes.TrimSuffix(ls[2], []byte("\n"))) {
		t.Fatalf("report %+v", rep)
	}
}

func TestFieldLimits(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	many := make([]uint32, 0, 20000)
	for i := range 20000 {
		many = append(many, uint32(2*i+1)) // no runs: the longest set
	}
	huge := strings.Repeat("\x01ä", 40000)
	if err := l.Append(Event{Event: EventRead, User: huge, Remote: huge, Mech: huge, Mailbox: huge, Dest: huge,
		Actor: huge, Detail: huge, Proto: huge, UIDs: many}); err != nil {
		t.Fatal(err)
	}
	ls := lines(t, filepath.Join(dir, CurrentName))
	line := bytes.TrimSuffix(ls[0], []byte("\n"))
	if len(line) > MaxRecordSize {
		t.Fatalf("record of %d bytes", len(line))
	}
	r, err := ParseRecord(line)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count != 20000 || !strings.HasSuffix(r.UIDs, ",…") || !strings.HasSuffix(r.User, "…") {
		t.Fatalf("count %d, uids ...%q, user ...%q", r.Count, r.UIDs[len(r.UIDs)-10:], r.User[len(r.User)-10:])
	}
	intact(t, dir)
}

func TestFormatUIDs(t *testing.T) {
	for _, c := range []struct {
		in   []uint32
		want string
		n    int
	}{
		{[]uint32{1}, "1", 1},
		{[]uint32{5, 4, 3, 1, 9, 10, 4}, "1,3:5,9:10", 6},
		{[]uint32{4294967295, 4294967294}, "4294967294:4294967295", 2},
	} {
		if got, n := FormatUIDs(c.in); got != c.want || n != c.n {
			t.Errorf("FormatUIDs(%v) = %q, %d; want %q, %d", c.in, got, n, c.want, c.n)
		}
	}
}

func TestParseRecordRejects(t *testing.T) {
	zero := GenesisPrev
	good := `{"seq":1,"time":"2026-01-02T03:04:05.000000000Z","event":"login","prev":"` + zero + `"}`
	if _, err := ParseRecord([]byte(good)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		``, `null`, `[]`, ` ` + good, good + `x`, good + `{}`,
		strings.Replace(good, `"seq":1`, `"seq":0`, 1),
		strings.Replace(good, `"seq":1`, `"seq":-1`, 1),
		strings.Replace(good, `"seq":1`, `"seq":"1"`, 1),
		strings.Replace(good, `"event":"login"`, `"event":""`, 1),
		strings.Replace(good, zero, strings.ToUpper("a"+zero[1:]), 1),
		strings.Replace(good, zero, zero[1:], 1),
		strings.Replace(good, `2026-01-02T03:04:05.000000000Z`, `yesterday`, 1),
		strings.Replace(good, `"event":"login"`, `"event":"audit.recovered"`, 1),
	} {
		if _, err := ParseRecord([]byte(bad)); err == nil {
			t.Errorf("ParseRecord accepted %q", bad)
		}
	}
}

func TestReopenContinues(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 3, "a")
	seq, head := l.Head()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(Event{Event: EventLogin}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	l2 := openT(t, dir, Options{})
	if s, h := l2.Head(); s != seq || h != head {
		t.Fatalf("reopened at %d %s, want %d %s", s, h, seq, head)
	}
	appendN(t, l2, 2, "b")
	rep := intact(t, dir)
	if rep.Records != 5 || rep.LastSeq != 5 {
		t.Fatalf("report %+v", rep)
	}
}

func TestRotationKeepsChain(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxFileSize: 1500})
	appendN(t, l, 40, "r")
	files := chainFiles(t, dir)
	if len(files) < 4 {
		t.Fatalf("expected several files after rotation, got %v", files)
	}
	// Each archive ends with the record its name says; the next file
	// starts with the next seq and the archive's hash.
	var prevHash string
	var prevSeq uint64
	for i, name := range files {
		ls := lines(t, filepath.Join(dir, name))
		first, _ := ParseRecord(bytes.TrimSuffix(ls[0], []byte("\n")))
		if i > 0 && (first.Seq != prevSeq+1 || first.Prev != prevHash) {
			t.Fatalf("%s starts with seq %d prev %s; previous file ended with seq %d hash %s", name, first.Seq, first.Prev, prevSeq, prevHash)
		}
		lastLine := bytes.TrimSuffix(ls[len(ls)-2], []byte("\n"))
		last, _ := ParseRecord(lastLine)
		if m := archiveRE.FindStringSubmatch(name); m != nil && m[2] != fmt.Sprintf("%020d", last.Seq) {
			t.Fatalf("%s ends with seq %d", name, last.Seq)
		}
		prevSeq, prevHash = last.Seq, LineHash(lastLine)
	}
	rep := intact(t, dir)
	if rep.Records != 40 || len(rep.Files) != len(files) {
		t.Fatalf("report %+v", rep)
	}
	// A reopened log continues after the rotation.
	l.Close()
	l2 := openT(t, dir, Options{MaxFileSize: 1500})
	appendN(t, l2, 5, "s")
	if rep := intact(t, dir); rep.Records != 45 {
		t.Fatalf("report %+v", rep)
	}
}

// TestRotationWhenCurrentMissing: a crash between rotation and the next
// record leaves no current file; the next writer continues from the
// newest archive.
func TestRotationWhenCurrentMissing(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxFileSize: 1})
	appendN(t, l, 3, "x") // every record rotates
	l.Close()
	if _, err := os.Lstat(filepath.Join(dir, CurrentName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("current file after rotation: %v", err)
	}
	intact(t, dir)
	l2 := openT(t, dir, Options{})
	appendN(t, l2, 2, "y")
	if rep := intact(t, dir); rep.Records != 5 || len(rep.Files) != 4 {
		t.Fatalf("report %+v", rep)
	}
}

func TestBackgroundSync(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SyncInterval: time.Millisecond})
	synced := make(chan error, 10)
	l.onSync = func(err error) { synced <- err }
	appendN(t, l, 1, "s")
	select {
	case err := <-synced:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no background fsync after an append")
	}
}

func TestRefusesSymlinksAndOpenDirs(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o700)
	link := filepath.Join(base, "link")
	os.Symlink(real, link)
	if _, err := Open(link, Options{}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("Open of a symlinked dir: %v", err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	if _, err := Open(open, Options{}); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Fatalf("Open of a world-writable dir: %v", err)
	}

	dir := filepath.Join(base, "audit")
	l := openT(t, dir, Options{})
	appendN(t, l, 1, "a")
	// The current file replaced by a symlink to somewhere else.
	elsewhere := filepath.Join(base, "elsewhere")
	os.WriteFile(elsewhere, nil, 0o600)
	os.Remove(filepath.Join(dir, CurrentName))
	os.Symlink(elsewhere, filepath.Join(dir, CurrentName))
	if err := l.Append(Event{Event: EventLogin}); err == nil {
		t.Fatal("append through a symlink succeeded")
	}
	if b, _ := os.ReadFile(elsewhere); len(b) != 0 {
		t.Fatalf("wrote through the symlink: %q", b)
	}
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("Open with a symlinked current file succeeded")
	}
	rep, err := Verify(dir)
	if err != nil || rep.Broken == nil || rep.Broken.Kind != BadFile || rep.Broken.File != CurrentName {
		t.Fatalf("verify: %v %+v", err, rep.Broken)
	}
}

// TestConcurrentWriters: goroutines sharing a Log and a second Log on the
// same directory (as a second process would) append concurrently across
// rotations; the chain stays intact and holds every record once.
func TestConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	opt := Options{MaxFileSize: 4096}
	logs := []*Log{openT(t, dir, opt), openT(t, dir, opt)}
	const goroutines, each = 8, 60
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			appendN(t, logs[g%2], each, fmt.Sprintf("g%d", g))
		}()
	}
	wg.Wait()
	rep := intact(t, dir)
	if rep.Records != goroutines*each || len(rep.Files) < 3 {
		t.Fatalf("report: %d records in %d files", rep.Records, len(rep.Files))
	}
	checkAllPresent(t, dir, goroutines, each, "g")
}

// checkAllPresent checks that records with details prefix<g>/<i> are each
// present once.
func checkAllPresent(t *testing.T, dir string, writers, each int, prefix string) {
	t.Helper()
	seen := map[string]int{}
	for _, name := range chainFiles(t, dir) {
		for _, ln := range lines(t, filepath.Join(dir, name)) {
			if len(ln) == 0 {
				continue
			}
			var r Record
			if err := json.Unmarshal(ln, &r); err != nil {
				t.Fatal(err)
			}
			seen[r.Detail]++
		}
	}
	for g := range writers {
		for i := range each {
			if k := fmt.Sprintf("%s%d/%d", prefix, g, i); seen[k] != 1 {
				t.Fatalf("record %s present %d times", k, seen[k])
			}
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	l := openT(b, b.TempDir(), Options{})
	e := Event{Event: EventRead, Proto: "imap", User: "alice@example.org", Remote: "192.0.2.1:40000", Mailbox: "INBOX",
		UIDs: []uint32{1, 2, 3}, Detail: "BODY[]"}
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Append(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendParallel(b *testing.B) {
	l := openT(b, b.TempDir(), Options{})
	e := Event{Event: EventLogin, Proto: "pop3", User: "alice@example.org", Remote: "192.0.2.1:40000", Mech: "PLAIN"}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Append(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkFlock is the cost the cross-process lock adds to each record.
func BenchmarkFlock(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "lock"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for b.Loop() {
		flock(f, syscall.LOCK_EX)
		flock(f, syscall.LOCK_UN)
	}
}
