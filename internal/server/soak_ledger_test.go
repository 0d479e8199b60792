package server

// The soak test's bookkeeping (TestSoak, soak_test.go): the messages it
// sends (generated from their number, so nothing but the number needs
// keeping), what the server acknowledged, what POP3 sessions deleted and
// IMAP sessions moved, the error counters, and the final reconciliation.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// Mailboxes the soak clients use, by index: POP3 sees INBOX; IMAP moves
// INBOX → Archive or Kept and Archive → Kept, never back to INBOX (so a
// message that left INBOX can no longer be deleted by POP3, which keeps
// the accounting exact).
var soakMailboxes = []string{"INBOX", "Archive", "Kept"}

const (
	soakInbox = iota
	soakArchive
	soakKept
)

func soakMailboxIndex(name string) int {
	for i, n := range soakMailboxes {
		if strings.EqualFold(n, name) {
			return i
		}
	}
	return -1
}

const soakPassword = "soak password"

func soakAccount(i int) string { return fmt.Sprintf("soak%03d@example.org", i) }

func soakAccountIndex(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "soak")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "@example.org")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

var soakWords = strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod " +
	"tempor incididunt ut labore et dolore magna aliqua letterbox soak mail quota fsync")

var soakEpoch = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

// soakMessage returns message n exactly as sent: its envelope sender and
// its bytes (CRLF line ends, including lines that SMTP and POP3 must
// dot-stuff). Sizes: 60% 0.3–4 KiB, 30% 4–16 KiB, 10% 20–100 KiB.
func soakMessage(n uint32) (from string, msg []byte) {
	r := rand.New(rand.NewPCG(uint64(n), 0x50a4))
	from = fmt.Sprintf("sender-%d@remote.example", n%17)
	size := 300 + r.IntN(3800)
	switch x := r.IntN(100); {
	case x < 10:
		size = 20000 + r.IntN(80000)
	case x < 40:
		size = 4000 + r.IntN(12000)
	}
	var b bytes.Buffer
	b.Grow(size + 200)
	fmt.Fprintf(&b, "Message-ID: <soak-%d@soak.test>\r\nX-Soak-Id: %d\r\nFrom: Sender %d <%s>\r\n"+
		"To: soak@example.org\r\nSubject: soak message %d\r\nDate: %s\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/plain; charset=us-ascii\r\n\r\n",
		n, n, n%17, from, n, soakEpoch.Add(time.Duration(n)*time.Second).Format(time.RFC1123Z))
	for b.Len() < size {
		switch r.IntN(30) {
		case 0:
			b.WriteString(".\r\n")
		case 1:
			b.WriteString("..two dots\r\n")
		case 2:
			b.WriteString(".leading dot\r\n")
		case 3:
			b.WriteString("\r\n")
		case 4:
			b.WriteString("trailing space \r\n")
		default:
			w := 1 + r.IntN(14)
			for i := range w {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(soakWords[r.IntN(len(soakWords))])
			}
			b.WriteString("\r\n")
		}
	}
	return from, b.Bytes()
}

// soakID reads the X-Soak-Id field from a message or its header.
func soakID(b []byte) (uint32, bool) {
	const f = "\r\nX-Soak-Id: "
	i := bytes.Index(b, []byte(f))
	if i < 0 {
		if !bytes.HasPrefix(b, []byte(f[2:])) {
			return 0, false
		}
		i = -2
	}
	rest := b[i+len(f):]
	j := bytes.IndexByte(rest, '\r')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:j]), 10, 32)
	return uint32(n), err == nil && n > 0
}

// soakCheckStored checks a message as the server stores and returns it:
// exactly the Return-Path: and Received: trace fields the delivery agent
// prepends, followed by message n byte for byte.
func soakCheckStored(got []byte) (uint32, error) {
	n, ok := soakID(got)
	if !ok {
		return 0, fmt.Errorf("no X-Soak-Id in %d octets: %.80q", len(got), got)
	}
	from, want := soakMessage(n)
	if !bytes.HasSuffix(got, want) {
		return n, fmt.Errorf("message %d: %d octets do not end with the %d sent", n, len(got), len(want))
	}
	trace := got[:len(got)-len(want)]
	rp := "Return-Path: <" + from + ">\r\n"
	if !bytes.HasPrefix(trace, []byte(rp+"Received:")) || !bytes.HasSuffix(trace, []byte("\r\n")) {
		return n, fmt.Errorf("message %d: unexpected trace fields %q", n, trace)
	}
	lines := strings.Split(strings.TrimSuffix(string(trace[len(rp):]), "\r\n"), "\r\n")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "\t") && !strings.HasPrefix(l, " ") {
			return n, fmt.Errorf("message %d: extra field %q before the message", n, l)
		}
	}
	return n, nil
}

// soakMsg is one sent message: its recipients (account indexes) and which
// of them the server acknowledged (bit i for rcpt[i]).
type soakMsg struct {
	rcpt  [3]uint16
	nrcpt uint8
	acked uint8
}

type soakLoc struct {
	mb  uint8
	uid uint32
}

func (l soakLoc) String() string { return fmt.Sprintf("%s UID %d", soakMailboxes[l.mb], l.uid) }

// soakCopy is one recipient's copy of message n.
type soakCopy struct {
	n    uint32
	acct uint16
}

func (c soakCopy) String() string {
	return fmt.Sprintf("message %d for %s", c.n, soakAccount(int(c.acct)))
}

type soakPop struct {
	soakCopy
	uid uint32 // INBOX UID (from UIDL) that QUIT's +OK removed
}

type soakMove struct {
	soakCopy
	src, dst soakLoc
}

// soakLedger records, compactly (it is on the heap that the test
// measures; bytes() says how much), what the clients were told.
type soakLedger struct {
	mu    sync.Mutex
	msgs  []soakMsg // index: message number; 0 unused
	pops  []soakPop
	moves []soakMove
}

func newSoakLedger() *soakLedger { return &soakLedger{msgs: make([]soakMsg, 1, 1024)} }

// newMessage allocates the next message number for rcpts.
func (l *soakLedger) newMessage(rcpts []int) uint32 {
	var m soakMsg
	for i, a := range rcpts {
		m.rcpt[i] = uint16(a)
	}
	m.nrcpt = uint8(len(rcpts))
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, m)
	return uint32(len(l.msgs) - 1)
}

// acked records the 250 for recipient i of message n.
func (l *soakLedger) acked(n uint32, i int) {
	l.mu.Lock()
	l.msgs[n].acked |= 1 << i
	l.mu.Unlock()
}

func (l *soakLedger) popDeleted(p []soakPop) {
	l.mu.Lock()
	l.pops = append(l.pops, p...)
	l.mu.Unlock()
}

func (l *soakLedger) moved(m []soakMove) {
	l.mu.Lock()
	l.moves = append(l.moves, m...)
	l.mu.Unlock()
}

// bytes is the ledger's heap footprint.
func (l *soakLedger) bytes() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(cap(l.msgs))*uint64(unsafe.Sizeof(soakMsg{})) +
		uint64(cap(l.pops))*uint64(unsafe.Sizeof(soakPop{})) +
		uint64(cap(l.moves))*uint64(unsafe.Sizeof(soakMove{}))
}

// soakStats counts what the clients did. Every unexpected answer or I/O
// failure is an error; a POP3 [IN-USE] (two POP3 sessions on one maildrop)
// is correct behaviour and counted apart.
type soakStats struct {
	errors    atomic.Int64
	mu        sync.Mutex
	firstErrs []string

	popInUse atomic.Int64

	smtpSessions, lmtpSessions, imapSessions, popSessions atomic.Int64
	tlsSessions                                           atomic.Int64
	messagesSent, copiesAcked                             atomic.Int64
	retrieved, popDeleted, imapBodies, imapHeaders        atomic.Int64
	moved, stores, searches, idles                        atomic.Int64
}

func (s *soakStats) fail(format string, args ...any) {
	s.errors.Add(1)
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	if len(s.firstErrs) < 30 {
		s.firstErrs = append(s.firstErrs, time.Now().Format("15:04:05.000")+" "+msg)
	}
	s.mu.Unlock()
}

func (s *soakStats) errorList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.firstErrs...)
}

func (s *soakStats) summary() string {
	return fmt.Sprintf("sessions: smtp %d, lmtp %d, imap %d, pop3 %d (%d over TLS); messages sent %d, copies acknowledged %d; "+
		"pop3 RETR %d, DELE committed %d, [IN-USE] %d; imap bodies %d, header fetches %d, moved %d, stores %d, searches %d, idles %d; errors %d",
		s.smtpSessions.Load(), s.lmtpSessions.Load(), s.imapSessions.Load(), s.popSessions.Load(), s.tlsSessions.Load(),
		s.messagesSent.Load(), s.copiesAcked.Load(), s.retrieved.Load(), s.popDeleted.Load(), s.popInUse.Load(),
		s.imapBodies.Load(), s.imapHeaders.Load(), s.moved.Load(), s.stores.Load(), s.searches.Load(), s.idles.Load(),
		s.errors.Load())
}

func (s *soakStats) sessions() int64 {
	return s.smtpSessions.Load() + s.lmtpSessions.Load() + s.imapSessions.Load() + s.popSessions.Load()
}

// soakReconcile compares the ledger with the final contents of every
// mailbox (found: where each copy is) and returns the problems. The rules:
// an acknowledged copy is in at most one place; if it is nowhere, exactly
// one POP3 session deleted it (after a byte-exact RETR) and IMAP never
// moved it; if it is somewhere, that place is the end of its chain of
// acknowledged moves (INBOX when none), and a POP3 deletion of it can only
// have been of the INBOX UID that a move had already taken away. Every
// message found was sent and acknowledged for that account.
func soakReconcile(l *soakLedger, found map[soakCopy][]soakLoc) (counts map[string]int, problems []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	counts = map[string]int{}
	problem := func(format string, args ...any) {
		counts["problems"]++
		if len(problems) < 50 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	pops := map[soakCopy][]uint32{}
	for _, p := range l.pops {
		pops[p.soakCopy] = append(pops[p.soakCopy], p.uid)
	}
	moves := map[soakCopy][]soakMove{}
	for _, m := range l.moves {
		moves[m.soakCopy] = append(moves[m.soakCopy], m)
	}
	acked := func(c soakCopy) (isRcpt, ok bool) {
		if c.n == 0 || int(c.n) >= len(l.msgs) {
			return false, false
		}
		m := l.msgs[c.n]
		for i := range int(m.nrcpt) {
			if m.rcpt[i] == c.acct {
				return true, m.acked&(1<<i) != 0
			}
		}
		return false, false
	}
	for c, locs := range found {
		if isRcpt, ok := acked(c); !ok {
			problem("%s found at %v but %s", c, locs, map[bool]string{false: "never sent to that account", true: "its delivery was not acknowledged"}[isRcpt])
		}
	}
	for n := 1; n < len(l.msgs); n++ {
		m := l.msgs[n]
		for i := range int(m.nrcpt) {
			if m.acked&(1<<i) == 0 {
				counts["unacknowledged copies"]++
				continue
			}
			c := soakCopy{uint32(n), m.rcpt[i]}
			counts["acknowledged copies"]++
			locs, p, mv := found[c], pops[c], moves[c]
			// Follow the move chain from INBOX.
			end, chainOK := soakLoc{mb: soakInbox}, true
			if len(mv) > 0 {
				bySrc := map[soakLoc]soakMove{}
				var start *soakMove
				for j := range mv {
					if _, dup := bySrc[mv[j].src]; dup {
						problem("%s: moved twice from %s: %v", c, mv[j].src, mv)
						chainOK = false
					}
					bySrc[mv[j].src] = mv[j]
					if mv[j].src.mb == soakInbox {
						if start != nil {
							problem("%s: moved out of INBOX twice: %v", c, mv)
							chainOK = false
						}
						start = &mv[j]
					}
				}
				switch {
				case !chainOK:
				case start == nil:
					problem("%s: moves %v do not start in INBOX", c, mv)
					chainOK = false
				default:
					end = start.dst
					for steps := 1; ; steps++ {
						next, ok := bySrc[end]
						if !ok {
							if steps != len(mv) {
								problem("%s: moves %v are not one chain", c, mv)
								chainOK = false
							}
							break
						}
						end = next.dst
					}
				}
			}
			switch {
			case len(p) > 1:
				problem("%s: deleted by %d POP3 sessions (INBOX UIDs %v)", c, len(p), p)
			case len(locs) > 1:
				problem("%s: DUPLICATE, present %d times: %v", c, len(locs), locs)
			case len(locs) == 0 && len(p) == 0:
				problem("%s: LOST: in no mailbox and never deleted (moves %v)", c, mv)
			case len(locs) == 0 && len(mv) > 0:
				problem("%s: LOST after being moved (%v) (POP3 deleted INBOX UID %v)", c, mv, p)
			case len(locs) == 0:
				counts["deleted by POP3"]++
			case !chainOK:
				// reported above
			case len(mv) == 0 && locs[0].mb != soakInbox:
				problem("%s: present at %s but never moved out of INBOX", c, locs[0])
			case len(mv) > 0 && locs[0] != end:
				problem("%s: present at %s, but its last acknowledged move put it at %s (moves %v)", c, locs[0], end, mv)
			case len(p) == 1 && (len(mv) == 0 || soakStartUID(mv) != p[0]):
				problem("%s: POP3 QUIT +OK removed INBOX UID %d, yet it is present at %s (moves %v)", c, p[0], locs[0], mv)
			default:
				counts["present in "+soakMailboxes[locs[0].mb]]++
				if len(p) == 1 {
					counts["moved away before a POP3 deletion took effect"]++
				}
			}
		}
	}
	return counts, problems
}

func (m soakMove) String() string { return fmt.Sprintf("%s → %s", m.src, m.dst) }

func soakStartUID(mv []soakMove) uint32 {
	for _, m := range mv {
		if m.src.mb == soakInbox {
			return m.src.uid
		}
	}
	return 0
}

func soakFormatCounts(c map[string]int) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, c[k])
	}
	return b.String()
}

// TestSoakReconcile checks the soak test's oracle: each way of losing,
// duplicating or misplacing a message is reported, the legitimate races
// are not.
func TestSoakReconcile(t *testing.T) {
	in, ar, kept := uint8(soakInbox), uint8(soakArchive), uint8(soakKept)
	for _, tc := range []struct {
		name  string
		found []soakLoc
		pops  []uint32
		moves []soakMove // n and acct are filled in
		want  string     // "" or a substring of the one problem
	}{
		{"in INBOX", []soakLoc{{in, 4}}, nil, nil, ""},
		{"deleted by POP3", nil, []uint32{4}, nil, ""},
		{"moved twice", []soakLoc{{kept, 9}}, nil, []soakMove{{src: soakLoc{ar, 7}, dst: soakLoc{kept, 9}}, {src: soakLoc{in, 4}, dst: soakLoc{ar, 7}}}, ""},
		{"moved before POP3 deletion", []soakLoc{{ar, 7}}, []uint32{4}, []soakMove{{src: soakLoc{in, 4}, dst: soakLoc{ar, 7}}}, ""},
		{"lost", nil, nil, nil, "LOST"},
		{"lost after move", nil, nil, []soakMove{{src: soakLoc{in, 4}, dst: soakLoc{ar, 7}}}, "LOST"},
		{"deleted by POP3, yet moved", nil, []uint32{4}, []soakMove{{src: soakLoc{in, 4}, dst: soakLoc{ar, 7}}}, "LOST after"},
		{"duplicate", []soakLoc{{in, 4}, {ar, 7}}, nil, nil, "DUPLICATE"},
		{"deleted twice", nil, []uint32{4, 5}, nil, "deleted by 2"},
		{"POP3 deletion ineffective", []soakLoc{{in, 4}}, []uint32{4}, nil, "QUIT +OK"},
		{"POP3 deleted another UID", []soakLoc{{ar, 7}}, []uint32{5}, []soakMove{{src: soakLoc{in, 4}, dst: soakLoc{ar, 7}}}, "QUIT +OK"},
		{"wrong place after move", []soakLoc{{kept, 9}}, nil, []soakMove{{src: soakLoc{in, 4}, dst: soakLoc{ar, 7}}}, "last acknowledged move"},
		{"never moved yet elsewhere", []soakLoc{{ar, 7}}, nil, nil, "never moved"},
		{"moved out of INBOX twice", []soakLoc{{ar, 7}}, nil, []soakMove{{src: soakLoc{in, 4}, dst: soakLoc{ar, 7}}, {src: soakLoc{in, 5}, dst: soakLoc{ar, 8}}}, "out of INBOX twice"},
	} {
		l := newSoakLedger()
		n := l.newMessage([]int{3, 1})
		l.acked(n, 0)
		l.acked(n, 1)
		c := soakCopy{n, 3}
		other := soakCopy{n, 1}
		found := map[soakCopy][]soakLoc{other: {{in, 1}}}
		if tc.found != nil {
			found[c] = tc.found
		}
		for _, u := range tc.pops {
			l.popDeleted([]soakPop{{c, u}})
		}
		for _, m := range tc.moves {
			m.soakCopy = c
			l.moved([]soakMove{m})
		}
		_, problems := soakReconcile(l, found)
		switch {
		case tc.want == "" && len(problems) > 0:
			t.Errorf("%s: unexpected problems %q", tc.name, problems)
		case tc.want != "" && (len(problems) != 1 || !strings.Contains(problems[0], tc.want)):
			t.Errorf("%s: problems %q, want one with %q", tc.name, problems, tc.want)
		}
	}
	// Found but not acknowledged, or never sent to that account.
	l := newSoakLedger()
	n := l.newMessage([]int{0})
	_, problems := soakReconcile(l, map[soakCopy][]soakLoc{{n, 0}: {{in, 1}}, {n, 2}: {{in, 2}}, {n + 1, 0}: {{in, 3}}})
	if len(problems) != 3 {
		t.Errorf("unacknowledged/unsent messages: %q", problems)
	}
	// Stored bytes: trace fields plus the message, nothing else.
	from, msg := soakMessage(42)
	good := append([]byte("Return-Path: <"+from+">\r\nReceived: from x\r\n\tby y; date\r\n"), msg...)
	if n, err := soakCheckStored(good); n != 42 || err != nil {
		t.Errorf("good message: %d %v", n, err)
	}
	for _, bad := range [][]byte{
		append([]byte("Return-Path: <"+from+">\r\nReceived: from x\r\nX-Extra: 1\r\n"), msg...),
		append(append([]byte("Return-Path: <"+from+">\r\nReceived: x\r\n"), msg[:len(msg)-3]...), "x\r\n"...),
		msg,
	} {
		if _, err := soakCheckStored(bad); err == nil {
			t.Errorf("accepted %.120q", bad)
		}
	}
}
