package audit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Kind classifies what Verify found wrong.
type Kind string

// The kinds of Problem.
const (
	BadRecord      Kind = "bad record"      // a line that is not a record (and not a recovered crash tail)
	SeqMismatch    Kind = "seq mismatch"    // seq is not the previous seq + 1: records deleted, reordered or inserted
	MissingFile    Kind = "missing file"    // a seq gap where a file begins: a file in the middle was removed
	MissingStart   Kind = "missing start"   // the log does not begin at seq 1 with the genesis prev
	Edited         Kind = "edited record"   // a record's SHA-256 is not the prev of the next one
	BadArchive     Kind = "bad archive"     // an archive whose name and content disagree, or that is empty
	BadFile        Kind = "unexpected file" // a file in the directory that is not part of the log
	AnchorMismatch Kind = "anchor mismatch" // the record at an anchor's seq has another hash
	Truncated      Kind = "truncated"       // an anchor's seq is beyond the last record
)

// Problem is the first broken record.
type Problem struct {
	File   string // base name in the audit directory
	Line   int    // 1-based; 0 when the problem is the file as a whole
	Seq    uint64 // the record's seq, 0 when unknown
	Kind   Kind
	Detail string
}

func (p *Problem) String() string {
	loc := p.File
	if p.Line > 0 {
		loc += ":" + strconv.Itoa(p.Line)
	}
	if p.Seq > 0 {
		loc += " (seq " + strconv.FormatUint(p.Seq, 10) + ")"
	}
	return loc + ": " + string(p.Kind) + ": " + p.Detail
}

// Recovery is an accepted crash tail: damaged bytes followed by the
// audit.recovered record that names them.
type Recovery struct {
	File         string
	DamagedLine  int    // first line of the damaged bytes
	Line         int    // the audit.recovered record
	Seq          uint64 // its seq
	DamagedBytes int64
}

// TornTail is an incomplete last line of the current file not yet recorded
// by a writer: a crash (or a write in progress) cut it. The next writer
// completes it (if the record is whole but for its newline) or records an
// audit.recovered record after it.
type TornTail struct {
	File  string
	Line  int
	Bytes int
}

// Report is the result of Verify.
type Report struct {
	Dir        string
	Files      []string // base names, in chain order
	Records    int      // records found intact (when Broken: before the broken one)
	FirstSeq   uint64
	LastSeq    uint64
	Head       string // hex SHA-256 of the last record's line ("" for an empty log)
	Recoveries []Recovery
	TornTail   *TornTail
	Broken     *Problem // nil when the chain is intact
}

// Anchor is a (seq, hash) pair recorded outside the log (a previous
// Verify's head, the "audit log open" line of the server log): Verify then
// also checks that the record with that seq still has that hash and that
// the log has not been cut before it.
type Anchor struct {
	Seq  uint64
	Hash string
}

// ParseAnchor parses "SEQ:HASH".
func ParseAnchor(s string) (Anchor, error) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil || n == 0 || !isHash(hash) {
		return Anchor{}, fmt.Errorf("anchor %q: want SEQ:SHA256 (64 lowercase hex digits)", s)
	}
	return Anchor{n, hash}, nil
}

// Verify checks the chain in dir: every file in order, every record's seq
// and prev, archive names against their content, and the anchors. The
// error is for failures to read; an integrity failure is Report.Broken.
//
// Verify reads while writers append: under the writers' lock (shared, for
// a moment) it lists the files and notes the current file's size, then
// checks that much without holding the lock.
func Verify(dir string, anchors ...Anchor) (Report, error) {
	rep := Report{Dir: dir}
	fi, err := os.Lstat(dir)
	if err != nil {
		return rep, err
	}
	if !fi.IsDir() {
		return rep, fmt.Errorf("%s is not a directory", dir)
	}
	files, odd, cur, curSize, err := snapshot(dir)
	if cur != nil {
		defer cur.Close()
	}
	if err != nil {
		return rep, err
	}
	if len(odd) > 0 {
		slices.Sort(odd)
		rep.Broken = &Problem{File: odd[0], Kind: BadFile,
			Detail: "not part of the log (not a regular file, an unknown name, or a second archive for the same seq)"}
		return rep, nil
	}
	v := newVerifier(&rep, anchors)
	for i, lf := range files {
		var r io.Reader
		if lf.current {
			r = io.LimitReader(cur, curSize)
		} else {
			f, err := openNoFollow(filepath.Join(dir, lf.name), os.O_RDONLY, 0)
			if err != nil {
				return rep, err
			}
			defer f.Close()
			r = f
		}
		p, err := v.file(lf.name, r, lf.seq, !lf.current, i == len(files)-1)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", filepath.Join(dir, lf.name), err)
		}
		if p != nil {
			rep.Broken = p
			return rep, nil
		}
	}
	rep.Broken = v.finish()
	return rep, nil
}

// snapshot lists the files and opens the current one, holding the writers'
// lock shared so that no append or rotation is half done.
func snapshot(dir string) (files []logFile, odd []string, cur *os.File, size int64, err error) {
	lock, lerr := openNoFollow(filepath.Join(dir, lockName), os.O_RDONLY, 0)
	if lerr == nil {
		defer lock.Close()
		if err := flock(lock, syscall.LOCK_SH); err != nil {
			return nil, nil, nil, 0, err
		}
		defer flock(lock, syscall.LOCK_UN)
	} else if !errors.Is(lerr, fs.ErrNotExist) && !errors.Is(lerr, fs.ErrPermission) {
		return nil, nil, nil, 0, lerr
	}
	files, odd, err = listFiles(dir)
	if err != nil || len(files) == 0 || !files[len(files)-1].current {
		return files, odd, nil, 0, err
	}
	cur, err = openNoFollow(filepath.Join(dir, CurrentName), os.O_RDONLY, 0)
	if err != nil {
		return files, odd, nil, 0, err
	}
	fi, err := cur.Stat()
	if err != nil {
		return files, odd, cur, 0, err
	}
	return files, odd, cur, fi.Size(), nil
}

// verifier checks a sequence of files. It keeps the last good record and,
// after a line that is not a record, the damaged bytes since that record,
// which only a matching audit.recovered record may follow.
type verifier struct {
	rep     *Report
	anchors map[uint64]string
	seq     uint64 // last good record
	hash    string
	pFile   string
	pLine   int
	bad     *Problem // first damaged line since the last good record
	badBuf  []byte   // the damaged bytes, newlines included
}

func newVerifier(rep *Report, anchors []Anchor) *verifier {
	v := &verifier{rep: rep, hash: GenesisPrev, anchors: map[uint64]string{}}
	for _, a := range anchors {
		v.anchors[a.Seq] = a.Hash
	}
	return v
}

// maxLine bounds a line Verify reads (newline included); a longer one can
// be neither a record nor recoverable damage.
const maxLine = maxTail + 1

// file checks one file. archiveSeq is the seq an archive's name gives its
// last record; last says whether it is the last file of the chain.
func (v *verifier) file(name string, r io.Reader, archiveSeq uint64, archive, last bool) (*Problem, error) {
	v.rep.Files = append(v.rep.Files, name)
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	lineNo, records := 0, 0
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > maxLine {
			if v.bad != nil {
				return v.bad, nil
			}
			return &Problem{File: name, Line: lineNo + 1, Kind: BadRecord, Detail: "line longer than 1 MiB"}, nil
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				break
			}
			lineNo++
			if v.bad != nil {
				return v.bad, nil
			}
			if archive || !last {
				return &Problem{File: name, Line: lineNo, Kind: BadRecord,
					Detail: "incomplete line at the end of a file that is not the current one"}, nil
			}
			if len(line) > maxTail {
				return &Problem{File: name, Line: lineNo, Kind: BadRecord,
					Detail: "incomplete last line longer than a crash leaves"}, nil
			}
			// A record whole but for its newline must continue the
			// chain (the next writer completes it); anything else is
			// a write cut short (the next writer records it).
			if rec, err := ParseRecord(line); err == nil {
				if p := v.accept(name, lineNo, line, rec, records == 0); p != nil {
					return p, nil
				}
			}
			v.rep.TornTail = &TornTail{File: name, Line: lineNo, Bytes: len(line)}
			break
		}
		if err != nil {
			return nil, err
		}
		lineNo++
		ok, p := v.line(name, lineNo, line[:len(line)-1], records == 0)
		if p != nil {
			return p, nil
		}
		if ok {
			records++
		}
		line = line[:0]
	}
	if v.bad != nil {
		v.bad.Detail += "; no audit.recovered record follows it"
		return v.bad, nil
	}
	if archive {
		if records == 0 {
			return &Problem{File: name, Kind: BadArchive, Detail: "archive holds no record"}, nil
		}
		if v.seq != archiveSeq {
			return &Problem{File: name, Line: v.pLine, Seq: v.seq, Kind: BadArchive,
				Detail: fmt.Sprintf("the name says the last record is seq %d, but it is seq %d (renamed or truncated)", archiveSeq, v.seq)}, nil
		}
	}
	return nil, nil
}

// line checks one line (without its newline); ok is true when it is an
// accepted record.
func (v *verifier) line(file string, no int, body []byte, firstInFile bool) (ok bool, p *Problem) {
	rec, err := ParseRecord(body)
	if v.bad == nil {
		if err != nil {
			v.bad = &Problem{File: file, Line: no, Kind: BadRecord, Detail: err.Error()}
			v.badBuf = append(append(v.badBuf[:0], body...), '\n')
			return false, nil
		}
		if p := v.accept(file, no, body, rec, firstInFile); p != nil {
			return false, p
		}
		return true, nil
	}
	// After damage: more damage, or the audit.recovered record that
	// names exactly these bytes.
	if err != nil {
		if len(v.badBuf)+len(body)+1 > maxTail+1 {
			v.bad.Detail += "; followed by more damaged bytes than a crash leaves"
			return false, v.bad
		}
		v.badBuf = append(append(v.badBuf, body...), '\n')
		return false, nil
	}
	if rec.Event != EventRecovered {
		v.bad.Detail += fmt.Sprintf("; the record after it (line %d) is not an audit.recovered record", no)
		return false, v.bad
	}
	if msg := recoveryMismatch(rec, v.badBuf); msg != "" {
		v.bad.Detail += fmt.Sprintf("; the audit.recovered record at line %d does not match: %s", no, msg)
		return false, v.bad
	}
	if p := v.accept(file, no, body, rec, firstInFile); p != nil {
		v.bad.Detail += fmt.Sprintf("; the audit.recovered record at line %d does not continue the chain: %s", no, p.Detail)
		return false, v.bad
	}
	v.rep.Recoveries = append(v.rep.Recoveries, Recovery{File: file, DamagedLine: v.bad.Line, Line: no,
		Seq: rec.Seq, DamagedBytes: rec.TailBytes})
	v.bad, v.badBuf = nil, v.badBuf[:0]
	return true, nil
}

// recoveryMismatch checks that rec names exactly the damaged bytes g (each
// line with its newline): the writer wrote a newline after them unless
// they ended with one.
func recoveryMismatch(rec Record, g []byte) string {
	t := rec.TailBytes
	var damage []byte
	switch {
	case int64(len(g)) == t:
		damage = g
	case int64(len(g)) == t+1 && t > 0 && g[t-1] != '\n':
		damage = g[:t]
	default:
		return fmt.Sprintf("tail_bytes is %d, but %d bytes precede it", t, len(g))
	}
	if LineHash(damage) != rec.TailSHA256 {
		return "tail_sha256 is not the SHA-256 of the damaged bytes"
	}
	return ""
}

// accept checks a record against the last good one and makes it the last
// good one.
func (v *verifier) accept(file string, no int, body []byte, rec Record, firstInFile bool) *Problem {
	want := v.seq + 1
	if rec.Seq != want {
		p := &Problem{File: file, Line: no, Seq: rec.Seq, Kind: SeqMismatch}
		switch {
		case v.rep.Records == 0 && v.seq == 0:
			p.Kind = MissingStart
			p.Detail = fmt.Sprintf("the log begins at seq %d, not 1: its oldest records or files were removed", rec.Seq)
		case firstInFile && rec.Seq > want:
			p.Kind = MissingFile
			p.Detail = fmt.Sprintf("records %d to %d are missing: the file after %s, which held them, was removed", want, rec.Seq-1, v.pFile)
		case rec.Seq > want:
			p.Detail = fmt.Sprintf("expected seq %d after seq %d (line %d), found %d: records were deleted or reordered", want, v.seq, v.pLine, rec.Seq)
		default:
			p.Detail = fmt.Sprintf("expected seq %d after seq %d (line %d), found %d: records were duplicated, reordered or inserted", want, v.seq, v.pLine, rec.Seq)
		}
		return p
	}
	if rec.Prev != v.hash {
		if v.seq == 0 {
			return &Problem{File: file, Line: no, Seq: rec.Seq, Kind: MissingStart,
				Detail: "the first record's prev is not the genesis value (64 zeros)"}
		}
		v.rep.Records-- // the previous record is the broken one
		return &Problem{File: v.pFile, Line: v.pLine, Seq: v.seq, Kind: Edited,
			Detail: fmt.Sprintf("altered after it was written (or the next record's prev was): its SHA-256 is %s, but the next record (%s:%d) has prev %s",
				v.hash, file, no, rec.Prev)}
	}
	h := LineHash(body)
	if a, ok := v.anchors[rec.Seq]; ok && a != h {
		return &Problem{File: file, Line: no, Seq: rec.Seq, Kind: AnchorMismatch,
			Detail: fmt.Sprintf("its SHA-256 is %s, the anchor says %s: this record (or the chain up to it) was rewritten", h, a)}
	}
	v.seq, v.hash, v.pFile, v.pLine = rec.Seq, h, file, no
	if v.rep.Records == 0 {
		v.rep.FirstSeq = rec.Seq
	}
	v.rep.Records++
	v.rep.LastSeq, v.rep.Head = rec.Seq, h
	return nil
}

// finish checks the anchors beyond the end.
func (v *verifier) finish() *Problem {
	var beyond []uint64
	for seq := range v.anchors {
		if seq > v.seq {
			beyond = append(beyond, seq)
		}
	}
	if len(beyond) == 0 {
		return nil
	}
	file := CurrentName
	if n := len(v.rep.Files); n > 0 {
		file = v.rep.Files[n-1]
	}
	return &Problem{File: file, Kind: Truncated,
		Detail: fmt.Sprintf("the anchor's seq %d is beyond the last record (seq %d): records were removed from the end", slices.Min(beyond), v.seq)}
}

// Summary is a one-line description of an intact report.
func (r Report) Summary() string {
	var b strings.Builder
	if r.Records == 0 {
		fmt.Fprintf(&b, "audit log intact: no records (%s)", plural(len(r.Files), "file"))
	} else {
		fmt.Fprintf(&b, "audit log intact: %s (seq %d-%d) in %s; head %d:%s",
			plural(r.Records, "record"), r.FirstSeq, r.LastSeq, plural(len(r.Files), "file"), r.LastSeq, r.Head)
	}
	for _, rc := range r.Recoveries {
		fmt.Fprintf(&b, "; crash recovery: %d damaged bytes at %s:%d recorded by seq %d", rc.DamagedBytes, rc.File, rc.DamagedLine, rc.Seq)
	}
	if t := r.TornTail; t != nil {
		fmt.Fprintf(&b, "; incomplete last line (%d bytes) at %s:%d, from a crash or a write in progress: the next writer completes or records it", t.Bytes, t.File, t.Line)
	}
	return b.String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
