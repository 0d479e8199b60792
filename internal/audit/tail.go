package audit

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// maxTail bounds the damaged bytes after the last record that a writer
// recovers from (and that Verify accepts as recovered). A crash leaves at
// most one cut record, a few KiB; anything larger is not a crash.
const maxTail = 1 << 20

// Windows the writer reads from a file's end to find its last record: the
// small one suffices unless there is damage; the large one covers the
// largest recoverable damage plus the record before it.
const (
	smallWindow = MaxRecordSize + 16
	tailWindow  = maxTail + MaxRecordSize + 16
)

// chainHead is the end of the chain: the last record's seq and the hex
// SHA-256 of its line (seq 0 and GenesisPrev for an empty log).
type chainHead struct {
	seq  uint64
	hash string
}

var genesis = chainHead{0, GenesisPrev}

// tailPlan is what a writer found at the end of the current file and must
// do before appending.
type tailPlan struct {
	head chainHead // the record the next one follows
	// damage is the bytes after head's line (nil if none). Unless
	// complete, the writer records an audit.recovered record for them.
	damage []byte
	// complete: damage is exactly one record that follows head and
	// lacks only its newline (a write cut just before its last byte);
	// the writer appends the newline and the record counts as written.
	complete bool
	last     Record // the completed record when complete
}

// errWindow: no complete record in the bytes examined, which do not reach
// the start of the file.
var errWindow = errors.New("no complete record near the end of the file")

// planTail examines buf, the last bytes of the current file from file
// offset start (0: the whole file). before returns the head the file
// continues from (the newest archive's last record, or genesis); it is
// called only when the file holds no complete record.
//
// The last newline-terminated line that parses as a record is the head;
// everything after it is damage. Damage that is one complete record
// following the head is completed; damage that contains a complete record
// that does not follow is refused (that is not a crash but an altered
// log), and so is damage larger than maxTail.
func planTail(buf []byte, start int64, before func() (chainHead, error)) (tailPlan, error) {
	var plan tailPlan
	lastNL := bytes.LastIndexByte(buf, '\n')
	frag := buf[lastNL+1:]
	found := false
	for lineEnd := lastNL; lineEnd >= 0; {
		lineStart := bytes.LastIndexByte(buf[:lineEnd], '\n') + 1
		if lineStart == 0 && start > 0 {
			return plan, errWindow
		}
		line := buf[lineStart:lineEnd]
		if r, err := ParseRecord(line); err == nil {
			plan.head = chainHead{r.Seq, LineHash(line)}
			plan.damage = buf[lineEnd+1:]
			found = true
			break
		}
		lineEnd = lineStart - 1
	}
	if !found {
		if start > 0 {
			return plan, errWindow
		}
		head, err := before()
		if err != nil {
			return plan, err
		}
		plan.head, plan.damage = head, buf
	}
	if len(plan.damage) == 0 {
		plan.damage = nil
		return plan, nil
	}
	if len(plan.damage) > maxTail {
		return plan, fmt.Errorf("%d bytes after the last record (seq %d) are not records: more than a crash leaves", len(plan.damage), plan.head.seq)
	}
	if len(frag) > 0 {
		if r, err := ParseRecord(frag); err == nil {
			if len(frag) == len(plan.damage) && r.Seq == plan.head.seq+1 && r.Prev == plan.head.hash {
				plan.complete, plan.last = true, r
				return plan, nil
			}
			return plan, fmt.Errorf("the last line is a complete record (seq %d) that does not follow seq %d: the log was altered", r.Seq, plan.head.seq)
		}
	}
	return plan, nil
}

// recoveryBytes returns what the writer appends for plan's damage (a
// newline first unless the damage ends with one, then the audit.recovered
// line and its newline) and the line itself.
func recoveryBytes(plan tailPlan, now time.Time) (out, line []byte, err error) {
	n := len(plan.damage)
	r := &Record{
		Seq:   plan.head.seq + 1,
		Time:  now.UTC().Format(TimeLayout),
		Event: EventRecovered,
		Detail: fmt.Sprintf("%d bytes after seq %d are not a complete record (a write cut short by a crash or a full disk); "+
			"they are kept as they are, and verification skips exactly them", n, plan.head.seq),
		TailBytes:  int64(n),
		TailSHA256: LineHash(plan.damage),
		Prev:       plan.head.hash,
	}
	line, err = marshal(r)
	if err != nil {
		return nil, nil, err
	}
	if plan.damage[n-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, line...)
	out = append(out, '\n')
	return out, line, nil
}
