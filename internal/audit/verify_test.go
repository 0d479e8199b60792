package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildLog writes 40 records over several files and returns the directory
// and its files in chain order.
func buildLog(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxFileSize: 1500})
	appendN(t, l, 40, "b")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files := chainFiles(t, dir)
	if len(files) < 5 {
		t.Fatalf("want at least 5 files, got %v", files)
	}
	intact(t, dir)
	return dir, files
}

// editLines rewrites a file's lines (without newlines).
func editLines(t *testing.T, path string, fn func([][]byte) [][]byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	ls = fn(ls)
	out := append(bytes.Join(ls, []byte("\n")), '\n')
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func countLines(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// TestVerifyDetects: each kind of tampering is reported at the record it
// broke.
func TestVerifyDetects(t *testing.T) {
	type where struct {
		file string
		line int
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, dir string, files []string) where
		kind   Kind
	}{
		{"edited field", func(t *testing.T, dir string, f []string) where {
			editLines(t, filepath.Join(dir, f[1]), func(ls [][]byte) [][]byte {
				ls[1] = bytes.Replace(ls[1], []byte(`"user":"b-`), []byte(`"user":"c-`), 1)
				return ls
			})
			return where{f[1], 2}
		}, Edited},
		{"edited last record of an archive", func(t *testing.T, dir string, f []string) where {
			p := filepath.Join(dir, f[2])
			n := countLines(t, p)
			editLines(t, p, func(ls [][]byte) [][]byte {
				ls[n-1] = bytes.Replace(ls[n-1], []byte(`"mailbox":"INBOX"`), []byte(`"mailbox":"INBOY"`), 1)
				return ls
			})
			return where{f[2], n}
		}, Edited},
		{"edited prev", func(t *testing.T, dir string, f []string) where {
			editLines(t, filepath.Join(dir, f[1]), func(ls [][]byte) [][]byte {
				ls[2] = bytes.Replace(ls[2], []byte(`"prev":"`), []byte(`"prev":"0`), 1)
				ls[2] = append(ls[2][:len(ls[2])-3], `"}`...)
				return ls
			})
			return where{f[1], 2} // the chain breaks between lines 2 and 3
		}, Edited},
		{"edited seq", func(t *testing.T, dir string, f []string) where {
			editLines(t, filepath.Join(dir, f[1]), func(ls [][]byte) [][]byte {
				r, _ := ParseRecord(ls[2])
				ls[2] = bytes.Replace(ls[2], fmt.Appendf(nil, `"seq":%d,`, r.Seq), fmt.Appendf(nil, `"seq":%d,`, r.Seq+100), 1)
				return ls
			})
			return where{f[1], 3}
		}, SeqMismatch},
		{"deleted line", func(t *testing.T, dir string, f []string) where {
			editLines(t, filepath.Join(dir, f[1]), func(ls [][]byte) [][]byte {
				return append(ls[:2:2], ls[3:]...)
			})
			return where{f[1], 3}
		}, SeqMismatch},
		{"swapped pair", func(t *testing.T, dir string, f []string) where {
			editLines(t, filepath.Join(dir, f[1]), func(ls [][]byte) [][]byte {
				ls[1], ls[2] = ls[2], ls[1]
				return ls
			})
			return where{f[1], 2}
		}, SeqMismatch},
		{"duplicated line", func(t *testing.T, dir string, f []string) where {
			editLines(t, filepath.Join(dir, f[1]), func(ls [][]byte) [][]byte {
				return append(ls[:2:2], append([][]byte{ls[1]}, ls[2:]...)...)
			})
			return where{f[1], 3}
		}, SeqMismatch},
		{"deleted middle file", func(t *testing.T, dir string, f []string) where {
			os.Remove(filepath.Join(dir, f[2]))
			return where{f[3], 1}
		}, MissingFile},
		{"deleted first file", func(t *testing.T, dir string, f []string) where {
			os.Remove(filepath.Join(dir, f[0]))
			return where{f[1], 1}
		}, MissingStart},
		{"archive renamed", func(t *testing.T, dir string, f []string) where {
			m := archiveRE.FindStringSubmatch(f[1])
			var seq uint64
			fmt.Sscan(strings.TrimLeft(m[2], "0"), &seq)
			renamed := fmt.Sprintf("audit-%s-%020d.jsonl", m[1], seq+1) // still before f[2]
			os.Rename(filepath.Join(dir, f[1]), filepath.Join(dir, renamed))
			return where{renamed, countLines(t, filepath.Join(dir, renamed))}
		}, BadArchive},
		{"archive renamed out of order", func(t *testing.T, dir string, f []string) where {
			m := archiveRE.FindStringSubmatch(f[1])
			os.Rename(filepath.Join(dir, f[1]), filepath.Join(dir, "audit-"+m[1]+"-00000000000000000999.jsonl"))
			return where{f[2], 1}
		}, MissingFile},
		{"archive truncated", func(t *testing.T, dir string, f []string) where {
			p := filepath.Join(dir, f[1])
			n := countLines(t, p)
			editLines(t, p, func(ls [][]byte) [][]byte { return ls[:n-1] })
			return where{f[1], n - 1}
		}, BadArchive},
		{"garbage line", func(t *testing.T, dir string, f []string) where {
			editLines(t, filepath.Join(dir, f[1]), func(ls [][]byte) [][]byte {
				return append(ls[:2:2], append([][]byte{[]byte("I was never here")}, ls[2:]...)...)
			})
			return where{f[1], 3}
		}, BadRecord},
		{"archive ends without newline", func(t *testing.T, dir string, f []string) where {
			p := filepath.Join(dir, f[1])
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-1], 0o600)
			return where{f[1], countLines(t, p) + 1}
		}, BadRecord},
		{"forged recovery", func(t *testing.T, dir string, f []string) where {
			p := filepath.Join(dir, f[1])
			editLines(t, p, func(ls [][]byte) [][]byte {
				prev, _ := ParseRecord(ls[2])
				rec := &Record{Seq: prev.Seq, Time: time.Now().UTC().Format(TimeLayout), Event: EventRecovered,
					TailBytes: 999, TailSHA256: LineHash(ls[2]), Prev: prev.Prev}
				line, _ := marshal(rec)
				// Hide record 3 behind "damage" and a recovery that
				// does not describe it.
				return append(ls[:2:2], append([][]byte{[]byte("xx" + string(ls[2])), line}, ls[3:]...)...)
			})
			return where{f[1], 3}
		}, BadRecord},
		{"unknown file", func(t *testing.T, dir string, f []string) where {
			os.WriteFile(filepath.Join(dir, "audit-old.jsonl"), nil, 0o600)
			return where{"audit-old.jsonl", 0}
		}, BadFile},
		{"symlinked archive", func(t *testing.T, dir string, f []string) where {
			p := filepath.Join(dir, f[1])
			b, _ := os.ReadFile(p)
			other := filepath.Join(t.TempDir(), "copy")
			os.WriteFile(other, b, 0o600)
			os.Remove(p)
			os.Symlink(other, p)
			return where{f[1], 0}
		}, BadFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, files := buildLog(t)
			w := tc.tamper(t, dir, files)
			rep, err := Verify(dir)
			if err != nil {
				t.Fatal(err)
			}
			p := rep.Broken
			if p == nil {
				t.Fatalf("not detected: %s", rep.Summary())
			}
			t.Log(p)
			if p.Kind != tc.kind || p.File != w.file || p.Line != w.line {
				t.Fatalf("got %s\nwant %s at %s:%d", p, tc.kind, w.file, w.line)
			}
		})
	}
}

// TestAnchors: without an anchor, the last record can be edited and the
// last records removed unnoticed (the documented limit); an anchor catches
// both.
func TestAnchors(t *testing.T) {
	dir, files := buildLog(t)
	rep := intact(t, dir)
	anchor := Anchor{rep.LastSeq, rep.Head}
	if a, err := ParseAnchor(fmt.Sprintf("%d:%s", rep.LastSeq, rep.Head)); err != nil || a != anchor {
		t.Fatalf("ParseAnchor: %v %v", a, err)
	}
	for _, bad := range []string{"", "1", "x:" + rep.Head, "0:" + rep.Head, "1:" + strings.ToUpper(rep.Head), "1:abc"} {
		if _, err := ParseAnchor(bad); err == nil {
			t.Errorf("ParseAnchor(%q) accepted", bad)
		}
	}
	intact(t, dir, anchor)

	cur := filepath.Join(dir, files[len(files)-1])
	orig, _ := os.ReadFile(cur)
	n := countLines(t, cur)
	editLines(t, cur, func(ls [][]byte) [][]byte {
		ls[n-1] = bytes.Replace(ls[n-1], []byte(`"mailbox":"INBOX"`), []byte(`"mailbox":"Other"`), 1)
		return ls
	})
	intact(t, dir) // undetectable without the anchor
	rep, _ = Verify(dir, anchor)
	if rep.Broken == nil || rep.Broken.Kind != AnchorMismatch || rep.Broken.Line != n {
		t.Fatalf("edited last record with anchor: %+v", rep.Broken)
	}

	os.WriteFile(cur, orig, 0o600)
	editLines(t, cur, func(ls [][]byte) [][]byte { return ls[:n-2] })
	intact(t, dir)
	rep, _ = Verify(dir, anchor)
	if rep.Broken == nil || rep.Broken.Kind != Truncated {
		t.Fatalf("truncated log with anchor: %+v", rep.Broken)
	}
}

// TestTornTail: a write cut short by a crash is reported, kept as it is,
// and recorded by the next writer; the chain then verifies with the
// recovery reported.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 5, "t")
	l.Close()
	cur := filepath.Join(dir, CurrentName)
	before, _ := os.ReadFile(cur)
	torn := []byte(`{"seq":6,"time":"2026-01-02T03:04:05.0`)
	appendFile(t, cur, torn)

	rep := intact(t, dir)
	if rep.TornTail == nil || rep.TornTail.Line != 6 || rep.TornTail.Bytes != len(torn) || rep.Records != 5 {
		t.Fatalf("torn tail report: %+v %+v", rep, rep.TornTail)
	}

	l2 := openT(t, dir, Options{})
	appendN(t, l2, 1, "after")
	l2.Close()
	after, _ := os.ReadFile(cur)
	if !bytes.HasPrefix(after, append(before, torn...)) {
		t.Fatal("the damaged bytes were not kept as they were")
	}
	ls := lines(t, cur)
	if string(ls[5]) != string(torn)+"\n" {
		t.Fatalf("line 6 is %q", ls[5])
	}
	var rec Record
	json.Unmarshal(ls[6], &rec)
	if rec.Event != EventRecovered || rec.Seq != 6 || rec.TailBytes != int64(len(torn)) ||
		rec.TailSHA256 != LineHash(torn) || rec.Prev != LineHash(bytes.TrimSuffix(ls[4], []byte("\n"))) {
		t.Fatalf("recovery record %s", ls[6])
	}
	rep = intact(t, dir)
	if rep.Records != 7 || rep.TornTail != nil || len(rep.Recoveries) != 1 ||
		rep.Recoveries[0] != (Recovery{File: CurrentName, DamagedLine: 6, Line: 7, Seq: 6, DamagedBytes: int64(len(torn))}) {
		t.Fatalf("report after recovery: %+v", rep)
	}
	if !strings.Contains(rep.Summary(), "crash recovery") {
		t.Fatalf("summary: %s", rep.Summary())
	}
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestRecoveryCases: the other shapes a crash leaves.
func TestRecoveryCases(t *testing.T) {
	t.Run("record without its newline is completed", func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, Options{})
		appendN(t, l, 3, "c")
		l.Close()
		cur := filepath.Join(dir, CurrentName)
		b, _ := os.ReadFile(cur)
		os.WriteFile(cur, b[:len(b)-1], 0o600)
		if rep := intact(t, dir); rep.TornTail == nil || rep.Records != 3 {
			t.Fatalf("%+v", rep)
		}
		l2 := openT(t, dir, Options{})
		appendN(t, l2, 1, "d")
		if rep := intact(t, dir); rep.Records != 4 || len(rep.Recoveries) != 0 {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("zeros ending in a newline", func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, Options{})
		appendN(t, l, 3, "z")
		l.Close()
		appendFile(t, filepath.Join(dir, CurrentName), []byte("\x00\x00\x00\x00\n\x00\x00"))
		rep, _ := Verify(dir)
		if rep.Broken == nil || rep.Broken.Kind != BadRecord || rep.Broken.Line != 4 {
			t.Fatalf("before recovery: %+v", rep.Broken)
		}
		openT(t, dir, Options{}).Close()
		if rep := intact(t, dir); rep.Records != 4 || len(rep.Recoveries) != 1 || rep.Recoveries[0].DamagedBytes != 7 {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("first record of a log", func(t *testing.T) {
		dir := t.TempDir()
		appendFile(t, filepath.Join(dir, CurrentName), []byte(`{"seq":1,"ti`))
		l := openT(t, dir, Options{})
		appendN(t, l, 1, "g")
		rep := intact(t, dir)
		if rep.Records != 2 || len(rep.Recoveries) != 1 || rep.Recoveries[0].Seq != 1 {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("first record after a rotation", func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, Options{MaxFileSize: 1})
		appendN(t, l, 2, "r")
		l.Close()
		appendFile(t, filepath.Join(dir, CurrentName), []byte(`{"seq":3,"time":"2`))
		if rep := intact(t, dir); rep.TornTail == nil {
			t.Fatalf("%+v", rep)
		}
		l2 := openT(t, dir, Options{})
		appendN(t, l2, 1, "s")
		rep := intact(t, dir)
		if rep.Records != 4 || len(rep.Recoveries) != 1 || rep.Recoveries[0].Seq != 3 {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("crash during the recovery", func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, Options{})
		appendN(t, l, 2, "a")
		l.Close()
		appendFile(t, filepath.Join(dir, CurrentName), []byte(`{"seq":3,"ti`+"\n"+`{"seq":3,"time":"2026-`))
		openT(t, dir, Options{}).Close()
		rep := intact(t, dir)
		if rep.Records != 3 || len(rep.Recoveries) != 1 || rep.Recoveries[0].DamagedLine != 3 || rep.Recoveries[0].Line != 5 {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("another writer crashed while this one was open", func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, Options{})
		appendN(t, l, 2, "a")
		appendFile(t, filepath.Join(dir, CurrentName), []byte(`{"seq":3,"time":"2026`))
		appendN(t, l, 2, "b")
		rep := intact(t, dir)
		if rep.Records != 5 || len(rep.Recoveries) != 1 {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("too much damage is refused", func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, Options{})
		appendN(t, l, 2, "a")
		l.Close()
		appendFile(t, filepath.Join(dir, CurrentName), bytes.Repeat([]byte("garbage\n"), maxTail/8+1))
		if _, err := Open(dir, Options{}); err == nil {
			t.Fatal("Open accepted more than 1 MiB of damage")
		}
	})
	t.Run("a complete record that does not follow is refused", func(t *testing.T) {
		dir := t.TempDir()
		l := openT(t, dir, Options{})
		appendN(t, l, 2, "a")
		l.Close()
		cur := filepath.Join(dir, CurrentName)
		ls := lines(t, cur)
		appendFile(t, cur, bytes.TrimSuffix(ls[0], []byte("\n"))) // seq 1 again, no newline
		if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "altered") {
			t.Fatalf("Open: %v", err)
		}
	})
}

// TestEveryEditDetected: changing, deleting or inserting any one byte
// anywhere before the last record of a log is reported, whatever the byte.
// (The last record is the documented limit: see TestAnchors.)
func TestEveryEditDetected(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 4, "e")
	l.Close()
	orig, err := os.ReadFile(filepath.Join(dir, CurrentName))
	if err != nil {
		t.Fatal(err)
	}
	lastStart := bytes.LastIndexByte(orig[:len(orig)-1], '\n') + 1
	check := func(what string, data []byte) {
		t.Helper()
		if rep := verifyCurrent(data); rep.Broken == nil {
			t.Fatalf("%s not detected: %s", what, rep.Summary())
		}
	}
	for i := range lastStart {
		for _, b := range []byte{orig[i] ^ 0x01, orig[i] ^ 0x20, '\n', '0', '}'} {
			if b == orig[i] {
				continue
			}
			edited := bytes.Clone(orig)
			edited[i] = b
			check(fmt.Sprintf("byte %d changed to %q", i, b), edited)
		}
		check(fmt.Sprintf("byte %d deleted", i), append(bytes.Clone(orig[:i]), orig[i+1:]...))
		check(fmt.Sprintf("byte inserted at %d", i), append(append(bytes.Clone(orig[:i]), ' '), orig[i:]...))
	}
}
