package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// verifyCurrent verifies data as the only file of a log.
func verifyCurrent(data []byte) Report {
	var rep Report
	v := newVerifier(&rep, nil)
	p, err := v.file(CurrentName, bytes.NewReader(data), 0, false, true)
	if err != nil {
		panic(err) // a bytes.Reader does not fail
	}
	if p == nil {
		p = v.finish()
	}
	rep.Broken = p
	return rep
}

// writerContinues returns data as the writer leaves it after its next
// append: the damaged tail completed or recorded, then one new record.
func writerContinues(data []byte) (out []byte, recovered bool, err error) {
	plan, err := planTail(data, 0, func() (chainHead, error) { return genesis, nil })
	if err != nil {
		return nil, false, err
	}
	out = bytes.Clone(data)
	head := plan.head
	switch {
	case plan.complete:
		out = append(out, '\n')
		head = chainHead{plan.last.Seq, LineHash(plan.damage)}
	case plan.damage != nil:
		rb, line, err := recoveryBytes(plan, time.Unix(0, 0))
		if err != nil {
			return nil, false, err
		}
		out = append(out, rb...)
		head = chainHead{head.seq + 1, LineHash(line)}
		recovered = true
	}
	r := newRecord(Event{Event: EventLogin, User: "next"})
	r.Seq, r.Prev, r.Time = head.seq+1, head.hash, time.Unix(0, 0).UTC().Format(TimeLayout)
	line, err := marshal(r)
	if err != nil {
		return nil, false, err
	}
	return append(append(out, line...), '\n'), recovered, nil
}

// FuzzVerify feeds arbitrary bytes to the record parser and the chain
// check Verify uses. Beyond not crashing: whenever Verify accepts a file,
// the writer's reading of its end agrees (same head, the same torn tail),
// and what the writer then appends verifies again, with no torn tail.
func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		l.Append(Event{Event: EventRead, User: "u@example.org", Remote: "127.0.0.1:1", Mailbox: "INBOX", UIDs: []uint32{uint32(i + 1), 7}})
	}
	l.Close()
	good, err := os.ReadFile(filepath.Join(dir, CurrentName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(good[:len(good)-20])
	f.Add(append(bytes.Clone(good), "\x00\x00\n\x00"...))
	f.Add([]byte(`{"seq":1,"ti`))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		ParseRecord(data)
		rep := verifyCurrent(data)
		if rep.Broken != nil {
			return
		}
		plan, err := planTail(data, 0, func() (chainHead, error) { return genesis, nil })
		if err != nil {
			t.Fatalf("Verify accepts the file (%s) but the writer refuses it: %v", rep.Summary(), err)
		}
		switch {
		case rep.TornTail == nil && plan.damage != nil:
			t.Fatalf("writer sees %d damaged bytes, Verify none", len(plan.damage))
		case rep.TornTail != nil && len(plan.damage) != rep.TornTail.Bytes:
			t.Fatalf("writer sees %d damaged bytes, Verify a torn tail of %d", len(plan.damage), rep.TornTail.Bytes)
		case rep.TornTail == nil && rep.Records > 0 && (plan.head.seq != rep.LastSeq || plan.head.hash != rep.Head):
			t.Fatalf("writer continues from seq %d, Verify ends at %d", plan.head.seq, rep.LastSeq)
		}
		out, recovered, err := writerContinues(data)
		if err != nil {
			t.Fatal(err)
		}
		rep2 := verifyCurrent(out)
		if rep2.Broken != nil || rep2.TornTail != nil {
			t.Fatalf("after the writer's append: %v %+v\n%q", rep2.Broken, rep2.TornTail, out)
		}
		want := rep.Records + 1
		if recovered {
			want++
		}
		if rep2.Records != want || len(rep2.Recoveries) != len(rep.Recoveries)+btoi(recovered) {
			t.Fatalf("after the writer's append: %d records, %d recoveries; before: %d, %d (recovered %v)",
				rep2.Records, len(rep2.Recoveries), rep.Records, len(rep.Recoveries), recovered)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
