package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"mime"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// IMAP benchmark (mailbench imap). All clients log in as the same user and
// work on its INBOX, which holds the whole mix (run.sh delivers it with
// -users 1). Before the steps, a setup connection checks that the INBOX
// holds exactly the mix (every X-Mailbench id once) and learns which UID
// holds which mix id. Each step ("op") then runs with N concurrent clients,
// each logged in and with INBOX selected before the clock starts, for
// -duration (and at least -min-ops operations per client), and verifies
// every answer; see bench/README.md for the exact commands.

var imapOps = []string{"select", "uidfetch", "envelope", "body", "store", "search", "mixed"}

type imapOptions struct {
	Addr string // the setup, warm-up and restore connections go here
	// Addrs are the addresses the step clients use, round-robin (client k
	// connects to Addrs[k mod n]); empty means Addr.
	Addrs     []string
	User      string
	Password  string
	OpTimeout time.Duration
	Duration  time.Duration
	MinOps    int
	Seed      uint64
	CPU       *cpuWatch // when set, CPU time over each step (imapStep.CPU)
}

// clientAddr is the address of step client k.
func (o *imapOptions) clientAddr(k int) string {
	if len(o.Addrs) == 0 {
		return o.Addr
	}
	return addrFor(o.Addrs, k)
}

// imapMailbox is what the setup learned about the INBOX, updated by steps
// that change it (mixed moves messages to Trash).
type imapMailbox struct {
	mu      sync.Mutex
	ids     []int // mix ids in the INBOX, sorted
	uidOf   map[int]uint32
	idOf    map[uint32]int
	uids    []uint32 // sorted
	queries []searchQuery
}

func (mb *imapMailbox) exists() int {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return len(mb.ids)
}

// snapshot returns copies of the id and UID lists.
func (mb *imapMailbox) snapshot() ([]int, []uint32) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return slices.Clone(mb.ids), slices.Clone(mb.uids)
}

func (mb *imapMailbox) remove(id int) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	uid := mb.uidOf[id]
	delete(mb.uidOf, id)
	delete(mb.idOf, uid)
	if i, ok := slices.BinarySearch(mb.ids, id); ok {
		mb.ids = slices.Delete(mb.ids, i, i+1)
	}
	if i, ok := slices.BinarySearch(mb.uids, uid); ok {
		mb.uids = slices.Delete(mb.uids, i, i+1)
	}
	for k := range mb.queries {
		q := &mb.queries[k]
		if i, ok := slices.BinarySearch(q.want, id); ok {
			q.want = slices.Delete(q.want, i, i+1)
		}
	}
}

// searchQuery is one UID SEARCH with the mix ids it must find.
type searchQuery struct {
	name string
	cmd  string   // "{}" marks where a literal goes
	lits [][]byte // literals, sent synchronising
	want []int    // sorted mix ids
	// match decides from a message's raw header whether it must match.
	match func(subject string, hdr []byte) bool
}

// searchQueries are the SEARCH commands of the search step, rotated.
// Matching is case-insensitive substring on the decoded header value
// (RFC 3501 §6.4.4), which the expected sets reproduce.
func searchQueries() []searchQuery {
	has := func(s, sub string) bool { return strings.Contains(strings.ToLower(s), sub) }
	listID := regexp.MustCompile(`(?mi)^List-Id:[^\r\n]*dev\.lists`)
	return []searchQuery{
		{name: `SUBJECT "invoice"`, cmd: `UID SEARCH SUBJECT "invoice"`,
			match: func(s string, _ []byte) bool { return has(s, "invoice") }},
		{name: `SUBJECT "quarterly report"`, cmd: `UID SEARCH SUBJECT "quarterly report"`,
			match: func(s string, _ []byte) bool { return has(s, "quarterly report") }},
		{name: `HEADER List-Id "dev.lists"`, cmd: `UID SEARCH HEADER List-Id "dev.lists"`,
			match: func(_ string, h []byte) bool { return listID.Match(h) }},
		{name: `CHARSET UTF-8 SUBJECT "réunion"`, cmd: `UID SEARCH CHARSET UTF-8 SUBJECT {}`, lits: [][]byte{[]byte("réunion")},
			match: func(s string, _ []byte) bool { return has(s, "réunion") }},
	}
}

var subjectRE = regexp.MustCompile(`(?mi)^Subject:[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)`)

// mixSubject returns the decoded Subject of a generated message header.
func mixSubject(hdr []byte) string {
	m := subjectRE.FindSubmatch(hdr)
	if m == nil {
		return ""
	}
	s := strings.ReplaceAll(string(m[1]), "\r\n", "")
	if d, err := new(mime.WordDecoder).DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// expectSearch fills the want lists of qs for the messages ids of the mix
// (building each message once, on all cores).
func expectSearch(p *MixParams, ids []int, qs []searchQuery) {
	hits := make([][]bool, len(ids))
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= len(ids) {
					return
				}
				raw := p.Build(ids[k])
				hdr, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
				subj := mixSubject(hdr)
				hits[k] = make([]bool, len(qs))
				for q := range qs {
					hits[k][q] = qs[q].match(subj, hdr)
				}
			}
		}()
	}
	wg.Wait()
	for q := range qs {
		qs[q].want = []int{}
		for k, id := range ids {
			if hits[k][q] {
				qs[q].want = append(qs[q].want, id)
			}
		}
	}
}

// setupIMAP checks the INBOX against the mix and maps UIDs to mix ids.
func setupIMAP(opt *imapOptions, p *MixParams) (*imapMailbox, error) {
	want := p.ExpectedIDs()[opt.User]
	if len(want) == 0 {
		return nil, fmt.Errorf("the mix assigns no message to %s (use the mix flags of the delivery, e.g. -users 1)", opt.User)
	}
	ic, err := dialIMAP(opt.Addr, opt.OpTimeout)
	if err != nil {
		return nil, err
	}
	defer ic.logout()
	if err := ic.login(opt.User, opt.Password); err != nil {
		return nil, err
	}
	si, err := ic.selectMailbox("INBOX")
	if err != nil {
		return nil, err
	}
	if si.Exists != len(want) {
		return nil, fmt.Errorf("SELECT INBOX: %d EXISTS, the mix has %d messages for %s", si.Exists, len(want), opt.User)
	}
	mb := &imapMailbox{uidOf: map[int]uint32{}, idOf: map[uint32]int{}}
	var perr error
	_, err = ic.cmd("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (X-Mailbench)])", func(resp []byte) error {
		fd, ok, err := parseFetch(resp)
		if !ok || err != nil {
			return err
		}
		uid, ok := fd.uid()
		hv, ok2 := fd.getPrefix("BODY[HEADER.FIELDS")
		hdr, ok3 := hv.str()
		if !ok || !ok2 || !ok3 {
			return fmt.Errorf("FETCH %d lacks UID or the header: %s", fd.seq, trunc(resp, 200))
		}
		id, _, _ := parseMixHeader(hdr)
		if id < 0 {
			if perr == nil {
				perr = fmt.Errorf("UID %d has no %s header", uid, mixHeader)
			}
			return nil
		}
		if old, dup := mb.uidOf[id]; dup {
			return fmt.Errorf("mix id %d is in UID %d and UID %d", id, old, uid)
		}
		mb.uidOf[id] = uid
		mb.idOf[uid] = id
		return nil
	})
	if err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, perr
	}
	for id, uid := range mb.uidOf {
		mb.ids = append(mb.ids, id)
		mb.uids = append(mb.uids, uid)
	}
	slices.Sort(mb.ids)
	slices.Sort(mb.uids)
	if !slices.Equal(mb.ids, want) {
		return nil, fmt.Errorf("INBOX does not hold the mix: %s", diffIDs(mb.ids, want))
	}
	mb.queries = searchQueries()
	expectSearch(p, mb.ids, mb.queries)
	return mb, nil
}

// imapWorker is one benchmark client.
type imapWorker struct {
	ic    *imapClient
	opt   *imapOptions
	mb    *imapMailbox
	k, n  int        // worker index, number of workers
	rng   *rand.Rand // picks messages; seeded, so both servers get the same picks
	own   []int      // the mix ids this worker may change or read at random (k-th share)
	flag  map[uint32]bool
	iter  int
	moves *atomic.Int64 // messages moved by all workers of the mixed step
	start int           // INBOX size when the step started
	lats  []time.Duration
	rx    int64
	// unreported counts STOREs the server answered without a FETCH
	// (the flags were already so).
	unreported int
	// parts sums the mixed cycle's command latencies by command.
	parts map[string]time.Duration
}

// part adds d to the named part of a mixed cycle.
func (w *imapWorker) part(name string, d time.Duration) time.Duration {
	if w.parts == nil {
		w.parts = map[string]time.Duration{}
	}
	w.parts[name] += d
	return d
}

// timed runs one command and returns its latency (command written to
// tagged completion read) and the untagged responses, to be checked after
// the clock has stopped.
func (w *imapWorker) timed(command string, lits ...[]byte) ([][]byte, time.Duration, error) {
	var resps [][]byte
	t0 := time.Now()
	_, err := w.ic.cmd(command, func(r []byte) error {
		resps = append(resps, r)
		w.rx += int64(len(r))
		return nil
	}, lits...)
	return resps, time.Since(t0), err
}

func (w *imapWorker) pick() int { return w.own[w.rng.IntN(len(w.own))] }

func (w *imapWorker) uid(id int) uint32 {
	w.mb.mu.Lock()
	defer w.mb.mu.Unlock()
	return w.mb.uidOf[id]
}

// fetches parses the FETCH responses among resps.
func fetches(resps [][]byte) ([]*fetchData, error) {
	var out []*fetchData
	for _, r := range resps {
		fd, ok, err := parseFetch(r)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, fd)
		}
	}
	return out, nil
}

var envMsgIDRE = regexp.MustCompile(`^<[0-9a-f]{16}\.(\d+)@`)

func (w *imapWorker) opSelect() (time.Duration, error) {
	t0 := time.Now()
	si, err := w.ic.selectMailbox("INBOX")
	d := time.Since(t0)
	if err == nil && si.Exists != w.mb.exists() {
		err = fmt.Errorf("SELECT: %d EXISTS, want %d", si.Exists, w.mb.exists())
	}
	return d, err
}

func (w *imapWorker) opUIDFetch() (time.Duration, error) {
	resps, d, err := w.timed("UID FETCH 1:* (UID FLAGS)")
	if err != nil {
		return d, err
	}
	fds, err := fetches(resps)
	if err != nil {
		return d, err
	}
	_, want := w.mb.snapshot()
	got := make([]uint32, 0, len(fds))
	for _, fd := range fds {
		uid, ok := fd.uid()
		_, ok2 := fd.get("FLAGS")
		if !ok || !ok2 {
			return d, fmt.Errorf("UID FETCH: response without UID or FLAGS: seq %d", fd.seq)
		}
		got = append(got, uid)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return d, fmt.Errorf("UID FETCH 1:* (UID FLAGS): %d responses, want one for each of %d messages", len(got), len(want))
	}
	return d, nil
}

// checkEnvelopes verifies FETCH (ENVELOPE BODYSTRUCTURE RFC822.SIZE)
// responses: one per message, sequence numbers 1..n, every item well
// formed, and the Message-IDs naming exactly the mix ids wantIDs.
func checkEnvelopes(fds []*fetchData, wantIDs []int) error {
	seen := make([]bool, len(wantIDs)+1)
	ids := make([]int, 0, len(fds))
	for _, fd := range fds {
		if fd.seq < 1 || int(fd.seq) > len(wantIDs) || seen[fd.seq] {
			return fmt.Errorf("FETCH: unexpected or repeated sequence number %d", fd.seq)
		}
		seen[fd.seq] = true
		env, ok1 := fd.get("ENVELOPE")
		bs, ok2 := fd.get("BODYSTRUCTURE")
		sz, ok3 := fd.get("RFC822.SIZE")
		n, ok4 := sz.num()
		if !ok1 || !ok2 || !ok3 || !ok4 || n == 0 {
			return fmt.Errorf("FETCH %d lacks ENVELOPE, BODYSTRUCTURE or RFC822.SIZE", fd.seq)
		}
		if env.kind != ivList || len(env.list) != 10 {
			return fmt.Errorf("FETCH %d: ENVELOPE is not a 10-element list: %s", fd.seq, env)
		}
		if bs.kind != ivList || len(bs.list) < 2 {
			return fmt.Errorf("FETCH %d: BODYSTRUCTURE is not a list: %s", fd.seq, bs)
		}
		mid, _ := env.list[9].str()
		m := envMsgIDRE.FindSubmatch(mid)
		if m == nil {
			return fmt.Errorf("FETCH %d: ENVELOPE Message-ID %q is not the mix's", fd.seq, mid)
		}
		id, _ := strconv.Atoi(string(m[1]))
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, wantIDs) {
		return fmt.Errorf("FETCH 1:* (ENVELOPE ...): %d responses; Message-IDs vs the mailbox: %s", len(fds), diffIDs(ids, wantIDs))
	}
	return nil
}

func (w *imapWorker) opEnvelope() (time.Duration, error) {
	resps, d, err := w.timed("FETCH 1:* (ENVELOPE BODYSTRUCTURE RFC822.SIZE)")
	if err != nil {
		return d, err
	}
	fds, err := fetches(resps)
	if err != nil {
		return d, err
	}
	ids, _ := w.mb.snapshot()
	return d, checkEnvelopes(fds, ids)
}

// fetchBody fetches one message with BODY.PEEK[] and checks it.
func (w *imapWorker) fetchBody(id int) (time.Duration, error) {
	uid := w.uid(id)
	resps, d, err := w.timed(fmt.Sprintf("UID FETCH %d BODY.PEEK[]", uid))
	if err != nil {
		return d, err
	}
	fds, err := fetches(resps)
	if err != nil {
		return d, err
	}
	for _, fd := range fds {
		if u, _ := fd.uid(); u != uid {
			continue
		}
		v, ok := fd.get("BODY[]")
		msg, ok2 := v.str()
		if !ok || !ok2 || msg == nil {
			continue
		}
		got, err := checkMixMessage(msg)
		if err != nil {
			return d, fmt.Errorf("UID %d: %w", uid, err)
		}
		if got != id {
			return d, fmt.Errorf("UID %d holds mix id %d, setup saw %d", uid, got, id)
		}
		return d, nil
	}
	return d, fmt.Errorf("UID FETCH %d BODY.PEEK[]: no BODY[] in the response", uid)
}

func (w *imapWorker) opBody() (time.Duration, error) { return w.fetchBody(w.pick()) }

// storeFlags runs UID STORE uids +/-FLAGS (flag) and checks that each
// message's FETCH response shows the flag set (or cleared).
func (w *imapWorker) storeFlags(uids []uint32, add bool, flag string) (time.Duration, error) {
	set := make([]string, len(uids))
	for i, u := range uids {
		set[i] = strconv.FormatUint(uint64(u), 10)
	}
	sign := "-"
	if add {
		sign = "+"
	}
	resps, d, err := w.timed(fmt.Sprintf("UID STORE %s %sFLAGS (%s)", strings.Join(set, ","), sign, flag))
	if err != nil {
		return d, err
	}
	fds, err := fetches(resps)
	if err != nil {
		return d, err
	}
	ok := map[uint32]bool{}
	check := func(fds []*fetchData, what string) error {
		for _, fd := range fds {
			u, hasUID := fd.uid()
			fv, hasFlags := fd.get("FLAGS")
			if !hasUID || !hasFlags || !slices.Contains(uids, u) {
				continue // another client's change, reported unsolicited
			}
			flags, _ := flagsOf(fv)
			if hasFlag(flags, flag) != add {
				return fmt.Errorf("%s: UID %d has FLAGS %v after UID STORE %sFLAGS (%s)", what, u, flags, sign, flag)
			}
			ok[u] = true
		}
		return nil
	}
	if err := check(fds, "UID STORE"); err != nil {
		return d, err
	}
	if len(ok) != len(uids) {
		// A server need not report a message whose flags did not change
		// (Dovecot does not): ask, outside the timing.
		var missing []string
		for _, u := range uids {
			if !ok[u] {
				missing = append(missing, strconv.FormatUint(uint64(u), 10))
			}
		}
		resps, _, err := w.timed(fmt.Sprintf("UID FETCH %s (UID FLAGS)", strings.Join(missing, ",")))
		if err != nil {
			return d, err
		}
		if fds, err = fetches(resps); err != nil {
			return d, err
		}
		if err := check(fds, "UID FETCH after UID STORE"); err != nil {
			return d, err
		}
		w.unreported += len(missing)
	}
	if len(ok) != len(uids) {
		return d, fmt.Errorf("UID STORE %s: FLAGS came back for %d of %d messages", strings.Join(set, ","), len(ok), len(uids))
	}
	return d, nil
}

func (w *imapWorker) opStore() (time.Duration, error) {
	uid := w.uid(w.pick())
	add := !w.flag[uid]
	d, err := w.storeFlags([]uint32{uid}, add, `\Flagged`)
	if err == nil {
		w.flag[uid] = add
	}
	return d, err
}

func (w *imapWorker) opSearch() (time.Duration, error) {
	w.mb.mu.Lock()
	q := w.mb.queries[(w.iter+w.k)%len(w.mb.queries)]
	q.want = slices.Clone(q.want)
	w.mb.mu.Unlock()
	resps, d, err := w.timed(q.cmd, q.lits...)
	if err != nil {
		return d, err
	}
	var got []int
	n := 0
	for _, r := range resps {
		u := parseUntagged(r)
		if u.hasNum || u.word != "SEARCH" {
			continue
		}
		n++
		uids, err := parseSearch(u.rest)
		if err != nil {
			return d, err
		}
		for _, uid := range uids {
			id, ok := w.idOf(uid)
			if !ok {
				return d, fmt.Errorf("%s: UID %d is not in the mailbox", q.name, uid)
			}
			got = append(got, id)
		}
	}
	if n != 1 {
		return d, fmt.Errorf("%s: %d SEARCH responses", q.name, n)
	}
	slices.Sort(got)
	if !slices.Equal(got, q.want) {
		return d, fmt.Errorf("%s: %d matches, want %d (%s)", q.name, len(got), len(q.want), diffIDs(got, q.want))
	}
	return d, nil
}

func (w *imapWorker) idOf(uid uint32) (int, bool) {
	w.mb.mu.Lock()
	defer w.mb.mu.Unlock()
	id, ok := w.mb.idOf[uid]
	return id, ok
}

// thunderbirdHeaders is the header list Thunderbird fetches for new mail.
const thunderbirdHeaders = "From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To"

// opMixed runs one cycle of the Thunderbird-like profile (bench/README.md).
// The latency is the sum of the commands' latencies.
func (w *imapWorker) opMixed() (time.Duration, error) {
	var total time.Duration
	// 1. NOOP: anything new?
	_, d, err := w.timed("NOOP")
	total += w.part("noop", d)
	if err != nil {
		return total, err
	}
	// 2. New messages above the highest UID known at SELECT.
	_, uids := w.mb.snapshot()
	top := uint32(0)
	if len(uids) > 0 {
		top = uids[len(uids)-1]
	}
	resps, d, err := w.timed(fmt.Sprintf("UID FETCH %d:* (UID FLAGS)", top+1))
	total += w.part("newmail", d)
	if err != nil {
		return total, err
	}
	fds, err := fetches(resps)
	if err != nil {
		return total, err
	}
	for _, fd := range fds {
		if u, ok := fd.uid(); ok && u > top {
			return total, fmt.Errorf("UID FETCH %d:*: UID %d is new, but nothing was delivered", top+1, u)
		}
	}
	// 3. Flag resynchronisation of the whole mailbox (no CONDSTORE).
	resps, d, err = w.timed("UID FETCH 1:* (FLAGS)")
	total += w.part("flagsync", d)
	if err != nil {
		return total, err
	}
	fds, err = fetches(resps)
	if err != nil {
		return total, err
	}
	distinct := map[uint32]bool{}
	for _, fd := range fds {
		u, ok := fd.uid()
		if !ok {
			continue // another client's flag change, reported unsolicited (Dovecot omits the UID)
		}
		if _, ok := fd.get("FLAGS"); !ok {
			return total, fmt.Errorf("UID FETCH 1:* (FLAGS): response without FLAGS (UID %d)", u)
		}
		distinct[u] = true
	}
	moved := int(w.moves.Load())
	if len(distinct) > w.start || len(distinct) < w.start-moved {
		return total, fmt.Errorf("UID FETCH 1:* (FLAGS): %d messages, want %d..%d", len(distinct), w.start-moved, w.start)
	}
	// 4. Headers of 10 "new" messages (a window moving over this worker's share).
	var win []uint32
	for i := 0; i < 10 && i < len(w.own); i++ {
		win = append(win, w.uid(w.own[(w.iter*10+i)%len(w.own)]))
	}
	set := make([]string, len(win))
	for i, u := range win {
		set[i] = strconv.FormatUint(uint64(u), 10)
	}
	resps, d, err = w.timed(fmt.Sprintf("UID FETCH %s (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (%s)])", strings.Join(set, ","), thunderbirdHeaders))
	total += w.part("headers", d)
	if err != nil {
		return total, err
	}
	fds, err = fetches(resps)
	if err != nil {
		return total, err
	}
	got := map[uint32]bool{}
	for _, fd := range fds {
		u, _ := fd.uid()
		h, ok := fd.getPrefix("BODY[HEADER.FIELDS")
		hb, _ := h.str()
		_, ok2 := fd.get("RFC822.SIZE")
		if !ok || !ok2 {
			continue
		}
		if !bytes.Contains(bytes.ToLower(hb), []byte("message-id:")) {
			return total, fmt.Errorf("UID %d: header fields without Message-ID: %q", u, trunc(hb, 200))
		}
		got[u] = true
	}
	if len(got) != len(win) {
		return total, fmt.Errorf("header fetch of %d messages returned %d", len(win), len(got))
	}
	// 5. Read three messages, 6. mark them \Seen.
	read := make([]int, 0, 3)
	for len(read) < 3 && len(read) < len(w.own) {
		id := w.pick()
		if !slices.Contains(read, id) {
			read = append(read, id)
		}
	}
	var readUIDs []uint32
	for _, id := range read {
		d, err := w.fetchBody(id)
		total += w.part("bodies", d)
		if err != nil {
			return total, err
		}
		readUIDs = append(readUIDs, w.uid(id))
	}
	d, err = w.storeFlags(readUIDs, true, `\Seen`)
	total += w.part("seen", d)
	if err != nil {
		return total, err
	}
	// 7. Delete the first one: move it to Trash.
	if len(w.own) <= 3 {
		return total, nil
	}
	w.moves.Add(1)
	resps, d, err = w.timed(fmt.Sprintf("UID MOVE %d Trash", readUIDs[0]))
	total += w.part("move", d)
	if err != nil {
		return total, err
	}
	copyuid, expunged := false, false
	for _, r := range resps {
		u := parseUntagged(r)
		switch {
		case u.word == "OK" && bytes.HasPrefix(bytes.ToUpper(u.rest), []byte("[COPYUID ")):
			copyuid = true
		case u.hasNum && u.word == "EXPUNGE", u.word == "VANISHED":
			expunged = true
		}
	}
	if !copyuid || !expunged {
		return total, fmt.Errorf("UID MOVE %d Trash: COPYUID %v, EXPUNGE %v", readUIDs[0], copyuid, expunged)
	}
	w.own = slices.DeleteFunc(w.own, func(x int) bool { return x == read[0] })
	w.mb.remove(read[0])
	return total, nil
}

func (w *imapWorker) run(op string) (time.Duration, error) {
	switch op {
	case "select":
		return w.opSelect()
	case "uidfetch":
		return w.opUIDFetch()
	case "envelope":
		return w.opEnvelope()
	case "body":
		return w.opBody()
	case "store":
		return w.opStore()
	case "search":
		return w.opSearch()
	case "mixed":
		return w.opMixed()
	}
	return 0, fmt.Errorf("unknown op %q", op)
}

// imapStep is the outcome of one op at one concurrency.
type imapStep struct {
	Ops        int
	Failures   int
	Elapsed    time.Duration
	Latencies  []time.Duration
	First      time.Duration // worker 0's first operation
	Logins     []time.Duration
	Rx         int64
	Errors     []string
	Parts      map[string]time.Duration // mixed: latency by command
	Unreported int
	CPU        map[string]float64 // cpuWatch.since over the timed part
}

func runIMAPStep(ctx context.Context, opt *imapOptions, mb *imapMailbox, op string, n int) *imapStep {
	st := &imapStep{}
	fail := func(s string) {
		st.Failures++
		if len(st.Errors) < 20 {
			st.Errors = append(st.Errors, s)
		}
	}
	ids, _ := mb.snapshot()
	workers := make([]*imapWorker, n)
	var moves atomic.Int64
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.ic.logout()
			}
		}
	}()
	// Log in and select before the clock starts (at most 16 at a time).
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			t0 := time.Now()
			ic, err := dialIMAP(opt.clientAddr(k), opt.OpTimeout)
			if err == nil {
				if err = ic.login(opt.User, opt.Password); err != nil {
					ic.c.Close()
				}
			}
			login := time.Since(t0)
			if err == nil {
				if _, err = ic.selectMailbox("INBOX"); err != nil {
					ic.c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fail(fmt.Sprintf("client %d (%s): %v", k, opt.clientAddr(k), err))
				return
			}
			st.Logins = append(st.Logins, login)
			w := &imapWorker{ic: ic, opt: opt, mb: mb, k: k, n: n, flag: map[uint32]bool{}, moves: &moves, start: len(ids),
				rng: rand.New(rand.NewPCG(opt.Seed, uint64(k)<<16|uint64(slices.Index(imapOps, op))))}
			for i, id := range ids {
				if i%n == k {
					w.own = append(w.own, id)
				}
			}
			workers[k] = w
		}()
	}
	wg.Wait()
	if st.Failures > 0 {
		return st
	}
	start := make(chan struct{})
	t0 := time.Now()
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stop := context.AfterFunc(ctx, func() { w.ic.c.SetDeadline(time.Now()) })
			defer stop()
			for ctx.Err() == nil && (time.Since(t0) < opt.Duration || w.iter < opt.MinOps) {
				d, err := w.run(op)
				if err != nil {
					mu.Lock()
					fail(fmt.Sprintf("client %d, %s #%d: %v", w.k, op, w.iter+1, err))
					mu.Unlock()
					var se *imapStatusError
					if !errors.As(err, &se) || se.status == "BYE" {
						w.ic.c.Close() // the connection's state is unknown
						return
					}
					w.iter++
					continue
				}
				if w.iter == 0 && w.k == 0 {
					st.First = d
				}
				w.lats = append(w.lats, d)
				w.iter++
			}
		}()
	}
	cpu0 := opt.CPU.snap()
	t0 = time.Now()
	close(start)
	wg.Wait()
	st.Elapsed = time.Since(t0)
	if opt.CPU != nil {
		st.CPU = map[string]float64{}
		opt.CPU.since(cpu0, st.CPU)
	}
	if ctx.Err() != nil {
		fail("stopped: " + ctx.Err().Error())
	}
	st.Parts = map[string]time.Duration{}
	for _, w := range workers {
		st.Ops += len(w.lats)
		st.Latencies = append(st.Latencies, w.lats...)
		st.Rx += w.rx
		st.Unreported += w.unreported
		for k, v := range w.parts {
			st.Parts[k] += v
		}
	}
	return st
}

// warmupSession logs in at addr, selects INBOX and logs out.
func warmupSession(opt *imapOptions, addr string) error {
	ic, err := dialIMAP(addr, opt.OpTimeout)
	if err != nil {
		return err
	}
	defer ic.logout()
	if err := ic.login(opt.User, opt.Password); err != nil {
		return err
	}
	_, err = ic.selectMailbox("INBOX")
	return err
}

// restoreTrash moves every message of Trash back to the INBOX (the mixed
// step moved them there).
func restoreTrash(opt *imapOptions) error {
	ic, err := dialIMAP(opt.Addr, opt.OpTimeout)
	if err != nil {
		return err
	}
	defer ic.logout()
	if err := ic.login(opt.User, opt.Password); err != nil {
		return err
	}
	si, err := ic.selectMailbox("Trash")
	if err != nil || si.Exists == 0 {
		return err
	}
	_, err = ic.cmd("UID MOVE 1:* INBOX", nil)
	return err
}

func parseIntList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q in %q", f, s)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list %q", s)
	}
	return out, nil
}

func cmdIMAP(args []string) error {
	fs := flag.NewFlagSet("imap", flag.ExitOnError)
	p := mixFlags(fs)
	opt := imapOptions{}
	addrList := fs.String("addr", "127.0.0.1:1143", "IMAP server address; several, comma-separated, spread the step clients round-robin (client k uses the (k mod n)-th; setup uses the first)")
	fs.StringVar(&opt.User, "user", "", "login (default user1@DOMAIN); its INBOX must hold the whole mix of that user")
	fs.StringVar(&opt.Password, "password", "pw", "password")
	fs.DurationVar(&opt.OpTimeout, "op-timeout", 120*time.Second, "timeout of one command")
	fs.DurationVar(&opt.Duration, "duration", 10*time.Second, "how long each step runs")
	fs.IntVar(&opt.MinOps, "min-ops", 3, "operations each client runs at least, however long they take")
	clients := fs.String("clients", "1,8", "client counts; each step runs once per count")
	ops := fs.String("ops", strings.Join(imapOps, ","), "steps to run, in this order")
	warmups := fs.Int("warmup-sessions", 2, "sessions (LOGIN, SELECT, LOGOUT) after the setup check, before the first step (see bench/README.md)")
	label := fs.String("server", "server", "server label for the results")
	limit := fs.Duration("timeout", 15*time.Minute, "stop after this long (counts as failure)")
	watch := fs.String("cpu-watch", "", "LABEL=PID,...: record the CPU seconds of these process trees over each step (details cpu_s_LABEL)")
	fs.Parse(args)
	if err := checkMix(p); err != nil {
		return err
	}
	addrs, err := splitAddrs(*addrList)
	if err != nil {
		return err
	}
	opt.Addr = addrs[0]
	if len(addrs) > 1 {
		opt.Addrs = addrs
	}
	if opt.CPU, err = parseCPUWatch(*watch); err != nil {
		return err
	}
	opt.Seed = p.Seed
	if opt.User == "" {
		opt.User = "user1@" + p.Domain
	}
	ns, err := parseIntList(*clients)
	if err != nil {
		return err
	}
	opList := strings.Split(*ops, ",")
	for _, op := range opList {
		if !slices.Contains(imapOps, op) {
			return fmt.Errorf("unknown op %q (have %s)", op, strings.Join(imapOps, ","))
		}
	}
	ctx, cancel := signalContext(*limit)
	defer cancel()
	t0 := time.Now()
	mb, err := setupIMAP(&opt, p)
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	var qs []string
	for _, q := range mb.queries {
		qs = append(qs, fmt.Sprintf("%s: %d", q.name, len(q.want)))
	}
	fmt.Fprintf(os.Stderr, "%s imap: INBOX of %s holds the %d messages of the mix (checked in %.1fs); search matches %s\n",
		*label, opt.User, mb.exists(), time.Since(t0).Seconds(), strings.Join(qs, ", "))
	// Right after delivery, the first Dovecot session after the setup's
	// stays slow for its whole life (3.4 ms per SELECT against 0.15 ms in
	// every later session, measured on 10,000 messages): a mailbox that
	// has seen a few sessions is the steady state to measure.
	// With several addresses (nodes), each gets its warm-up sessions.
	for _, a := range addrs {
		for i := 0; i < *warmups; i++ {
			if err := warmupSession(&opt, a); err != nil {
				return fmt.Errorf("warm-up session at %s: %w", a, err)
			}
		}
	}
	failed := 0
	for _, op := range opList {
		for _, n := range ns {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			before := mb.exists()
			lm := startLoad()
			st := runIMAPStep(ctx, &opt, mb, op, n)
			sec := st.Elapsed.Seconds()
			r := &Result{Kind: "imap", Op: op, Server: *label, Concurrency: n, Time: time.Now().UTC().Format(time.RFC3339),
				Seed: p.Seed, MixMessages: p.Messages, Messages: before, Ops: st.Ops, Failures: st.Failures, Octets: st.Rx,
				Seconds: round3(sec), LatencyMs: percentiles(st.Latencies), Machine: lm.stop(), Errors: st.Errors,
				Details: map[string]float64{"first_op_ms": ms(st.First)}}
			if sec > 0 {
				r.PerSec = round3(float64(st.Ops) / sec)
				r.MiBPerSec = round3(float64(st.Rx) / (1 << 20) / sec)
			}
			if len(st.Logins) > 0 {
				var sum time.Duration
				for _, l := range st.Logins {
					sum += l
				}
				r.LoginMs = ms(sum / time.Duration(len(st.Logins)))
			}
			if st.Unreported > 0 {
				r.Details["store_without_fetch"] = float64(st.Unreported)
			}
			if len(addrs) > 1 {
				r.Details["addrs"] = float64(len(addrs))
			}
			for k, v := range st.CPU {
				r.Details[k] = v
			}
			var parts []string
			for _, k := range []string{"noop", "newmail", "flagsync", "headers", "bodies", "seen", "move"} {
				if v, ok := st.Parts[k]; ok && st.Ops > 0 {
					r.Details["mixed_"+k+"_ms"] = ms(v / time.Duration(st.Ops))
					parts = append(parts, fmt.Sprintf("%s %.1f", k, ms(v/time.Duration(st.Ops))))
				}
			}
			if op == "mixed" {
				r.Details["moved"] = float64(before - mb.exists())
				// Put the moved messages back and check the whole INBOX
				// again, so that the next step starts from the mix.
				if err := restoreTrash(&opt); err != nil {
					r.Failures++
					r.Errors = append(r.Errors, "restoring INBOX: "+err.Error())
				} else if mb2, err := setupIMAP(&opt, p); err != nil {
					r.Failures++
					r.Errors = append(r.Errors, "after restoring INBOX: "+err.Error())
				} else {
					mb = mb2
				}
			}
			emit(r)
			fmt.Fprintf(os.Stderr, "%s imap %-8s c=%d: %d ops in %.2fs = %.1f ops/s, %.2f MiB/s", *label, op, n, st.Ops, sec, r.PerSec, r.MiBPerSec)
			if r.LatencyMs != nil {
				fmt.Fprintf(os.Stderr, "; ms p50 %.2f p99 %.2f first %.1f; login %.0f ms", r.LatencyMs.P50, r.LatencyMs.P99, ms(st.First), r.LoginMs)
			}
			printLoad(r.Machine)
			printCPU(st.CPU)
			if len(parts) > 0 {
				fmt.Fprintf(os.Stderr, "  ms per cycle: %s\n", strings.Join(parts, ", "))
			}
			for _, e := range r.Errors {
				fmt.Fprintln(os.Stderr, "  error:", e)
			}
			if r.Failures > 0 || st.Ops == 0 {
				failed++
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d step(s) had failures", failed)
	}
	return nil
}
