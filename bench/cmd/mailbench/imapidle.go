package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Idle connections (mailbench imapidle): measure the server's memory (PSS
// and RSS summed over its process tree) before any connection; open -conns
// connections, spread round-robin over the mix's users user1..userN (or all
// as -user), each LOGIN, SELECT INBOX, IDLE; watch the memory for
// -idle-wait (long enough for Go's forced GC every 2 minutes to collect
// what the logins left: argon2id allocates 46 MiB per login) and take the
// last sample; then deliver one message over LMTP to every user (one
// transaction) and time the "* n EXISTS" arriving on every connection.

// memSample is the memory of a process tree.
type memSample struct {
	PSSKiB int64
	RSSKiB int64
	Procs  int
	ByComm map[string][2]int64 // comm -> {processes, PSS KiB}
}

// procTree returns root and all its descendants.
func procTree(root int) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// readMem returns the PSS and RSS (KiB) of one process from
// /proc/PID/smaps_rollup (VmRSS from status when that is missing).
func readMem(pid int) (pss, rss int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 {
				continue
			}
			n, _ := strconv.ParseInt(f[1], 10, 64)
			switch f[0] {
			case "Pss:":
				pss = n
			case "Rss:":
				rss = n
			}
		}
		return pss, rss, true
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				rss, _ = strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return rss, rss, true
}

func procTreeMem(root int) (memSample, error) {
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", root)); err != nil {
		return memSample{}, fmt.Errorf("server process %d is gone", root)
	}
	m := memSample{ByComm: map[string][2]int64{}}
	for _, pid := range procTree(root) {
		pss, rss, ok := readMem(pid)
		if !ok {
			continue
		}
		m.PSSKiB += pss
		m.RSSKiB += rss
		m.Procs++
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		c := strings.TrimSpace(string(comm))
		x := m.ByComm[c]
		m.ByComm[c] = [2]int64{x[0] + 1, x[1] + pss}
	}
	return m, nil
}

// settledMem samples the tree's memory every interval until three samples
// in a row are within 1% of each other, or max has passed.
func settledMem(ctx context.Context, root int, interval, maxWait time.Duration) (memSample, time.Duration, bool, error) {
	t0 := time.Now()
	var last []int64
	for {
		m, err := procTreeMem(root)
		if err != nil {
			return m, time.Since(t0), false, err
		}
		last = append(last, m.PSSKiB)
		if len(last) >= 3 {
			w := last[len(last)-3:]
			lo, hi := slices.Min(w), slices.Max(w)
			if float64(hi-lo) <= 0.01*float64(hi) {
				return m, time.Since(t0), true, nil
			}
		}
		if time.Since(t0) >= maxWait {
			return m, time.Since(t0), false, nil
		}
		select {
		case <-ctx.Done():
			return m, time.Since(t0), false, ctx.Err()
		case <-time.After(interval):
		}
	}
}

func (m memSample) breakdown() string {
	type kv struct {
		comm string
		n    [2]int64
	}
	var s []kv
	for c, n := range m.ByComm {
		s = append(s, kv{c, n})
	}
	sort.Slice(s, func(i, j int) bool { return s[i].n[1] > s[j].n[1] })
	var parts []string
	for _, x := range s {
		parts = append(parts, fmt.Sprintf("%s x%d %.1f MiB", x.comm, x.n[0], float64(x.n[1])/1024))
	}
	return strings.Join(parts, ", ")
}

// idleConn is one connection in IDLE.
type idleConn struct {
	ic     *imapClient
	exists int
	got    atomic.Int64 // UnixNano when the new EXISTS arrived; 0 before
	err    atomic.Value // error string when the connection failed
}

func (c *idleConn) fail(s string) {
	if c.err.Load() == nil {
		c.err.Store(s)
	}
}

// startIdle sends IDLE and waits for the continuation.
func (c *idleConn) startIdle() error {
	c.ic.tagN++
	c.ic.c.SetDeadline(time.Now().Add(c.ic.timeout))
	if _, err := c.ic.c.Write([]byte("I" + strconv.Itoa(c.ic.tagN) + " IDLE\r\n")); err != nil {
		return err
	}
	for {
		resp, err := c.ic.readResp()
		if err != nil {
			return fmt.Errorf("IDLE: %w", err)
		}
		if bytes.HasPrefix(resp, []byte("+")) {
			return nil
		}
		if !bytes.HasPrefix(resp, []byte("* ")) {
			return fmt.Errorf("IDLE refused: %s", trunc(resp, 200))
		}
	}
}

// watch reads untagged responses during IDLE until the connection closes;
// the first EXISTS above the selected count is recorded and reported.
func (c *idleConn) watch(arrived func(), closing *atomic.Bool) {
	c.ic.c.SetDeadline(time.Time{})
	for {
		resp, err := c.ic.readResp()
		if err != nil {
			if !closing.Load() && c.got.Load() == 0 {
				c.fail("connection lost while idle: " + err.Error())
				arrived()
			}
			return
		}
		u := parseUntagged(resp)
		if u.hasNum && u.word == "EXISTS" && int(u.num) > c.exists && c.got.Load() == 0 {
			c.got.Store(time.Now().UnixNano())
			arrived()
		}
		if u.word == "BYE" {
			c.fail("server sent BYE while idle: " + string(resp))
		}
	}
}

func cmdIMAPIdle(args []string) error {
	fs := flag.NewFlagSet("imapidle", flag.ExitOnError)
	p := mixFlags(fs)
	addr := fs.String("addr", "127.0.0.1:1143", "IMAP server address")
	lmtpAddr := fs.String("lmtp", "", "LMTP address for the one delivery (required)")
	user := fs.String("user", "", "login of every connection (default: round-robin over user1..userN@DOMAIN of the mix flags)")
	password := fs.String("password", "pw", "password")
	conns := fs.Int("conns", 5000, "connections to put in IDLE")
	loginConc := fs.Int("login-conc", 8, "connections logging in at the same time")
	pid := fs.Int("pid", 0, "server process; its memory (with all descendants) is measured")
	settle := fs.Duration("settle", 30*time.Second, "longest wait for the server's memory to settle before the baseline")
	idleWait := fs.Duration("idle-wait", 180*time.Second, "how long to watch the memory once all connections are idle (the last sample counts)")
	existsTimeout := fs.Duration("exists-timeout", 120*time.Second, "longest wait for every connection's EXISTS")
	opTimeout := fs.Duration("op-timeout", 120*time.Second, "timeout of one command")
	label := fs.String("server", "server", "server label for the result")
	variant := fs.String("variant", "", "server configuration variant, recorded as the result's op (e.g. hibernate)")
	limit := fs.Duration("timeout", 30*time.Minute, "stop after this long (counts as failure)")
	fs.Parse(args)
	if *lmtpAddr == "" || *pid <= 0 || *conns < 1 {
		return fmt.Errorf("-lmtp, -pid and -conns are required")
	}
	var users []string
	if *user != "" {
		users = []string{*user}
	} else {
		for i := 1; i <= p.Users; i++ {
			users = append(users, fmt.Sprintf("user%d@%s", i, p.Domain))
		}
	}
	ctx, cancel := signalContext(*limit)
	defer cancel()
	lm := startLoad()

	// The baseline: the server as started, before any connection (what
	// the first login starts lazily, e.g. Dovecot's auth process, is then
	// counted with the connections: a few MiB over thousands of them).
	mem0, wait0, stable0, err := settledMem(ctx, *pid, 2*time.Second, *settle)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s imapidle: baseline %.1f MiB PSS, %.1f MiB RSS in %d processes (settled %v after %.0fs): %s\n",
		*label, float64(mem0.PSSKiB)/1024, float64(mem0.RSSKiB)/1024, mem0.Procs, stable0, wait0.Seconds(), mem0.breakdown())
	// The first connection of each user records its SELECT's EXISTS; the
	// user's other connections must agree.
	existsOf := map[string]int{}

	// Open the connections.
	var (
		closing  atomic.Bool
		arrivals sync.WaitGroup
		opened   atomic.Int64
		mu       sync.Mutex
		errs     []string
		logins   []time.Duration
		wg       sync.WaitGroup
	)
	addErr := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 20 {
			errs = append(errs, s)
		}
	}
	all := make([]*idleConn, *conns)
	defer func() {
		closing.Store(true)
		for _, c := range all {
			if c != nil {
				c.ic.c.Close()
			}
		}
	}()
	sem := make(chan struct{}, *loginConc)
	tOpen := time.Now()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "  ... %d/%d connections idle after %.0fs\n", opened.Load(), *conns, time.Since(tOpen).Seconds())
			}
		}
	}()
	failures := 0
	open1 := func(k int) {
		u := users[k%len(users)]
		t0 := time.Now()
		ic, err := dialIMAP(*addr, *opTimeout)
		if err != nil {
			addErr(fmt.Sprintf("connection %d: %v", k, err))
			return
		}
		c := &idleConn{ic: ic}
		all[k] = c
		if err := ic.login(u, *password); err != nil {
			addErr(fmt.Sprintf("connection %d: %v", k, err))
			return
		}
		login := time.Since(t0)
		si, err := ic.selectMailbox("INBOX")
		if err == nil {
			mu.Lock()
			want, ok := existsOf[u]
			if !ok && k < len(users) {
				existsOf[u], want, ok = si.Exists, si.Exists, true
			}
			mu.Unlock()
			if !ok || si.Exists != want {
				err = fmt.Errorf("SELECT as %s: %d EXISTS, the user's first connection saw %d", u, si.Exists, want)
			}
		}
		if err == nil {
			c.exists = si.Exists
			err = c.startIdle()
		}
		if err != nil {
			addErr(fmt.Sprintf("connection %d: %v", k, err))
			return
		}
		mu.Lock()
		logins = append(logins, login)
		mu.Unlock()
		arrivals.Add(1)
		go c.watch(arrivals.Done, &closing)
		opened.Add(1)
	}
	// First one connection per user, then the rest.
	for i, part := range [][2]int{{0, min(len(users), *conns)}, {min(len(users), *conns), *conns}} {
		if i == 1 && int(opened.Load()) < part[0] {
			// A user could not log in or select: a setup problem, not
			// something to repeat thousands of times.
			return fmt.Errorf("%d of the first %d connections (one per user) failed: %v", part[0]-int(opened.Load()), part[0], errs)
		}
		for k := part[0]; k < part[1]; k++ {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				open1(k)
			}()
		}
		wg.Wait()
	}
	close(done)
	openTime := time.Since(tOpen)
	n := int(opened.Load())
	failures += *conns - n
	fmt.Fprintf(os.Stderr, "%s imapidle: %d/%d connections in IDLE after %.1fs\n", *label, n, *conns, openTime.Seconds())

	// Watch the memory for -idle-wait; the last sample counts.
	var mem1, memFirst memSample
	minPSS := int64(-1)
	tWatch := time.Now()
	for {
		m, err := procTreeMem(*pid)
		if err != nil {
			return err
		}
		if minPSS < 0 {
			memFirst = m
		}
		if minPSS < 0 || m.PSSKiB < minPSS {
			minPSS = m.PSSKiB
		}
		mem1 = m
		if time.Since(tWatch) >= *idleWait || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
	fmt.Fprintf(os.Stderr, "%s imapidle: with %d idle: %.1f MiB PSS, %.1f MiB RSS in %d processes after %.0fs (%.1f MiB PSS at once, min %.1f): %s\n",
		*label, n, float64(mem1.PSSKiB)/1024, float64(mem1.RSSKiB)/1024, mem1.Procs, time.Since(tWatch).Seconds(),
		float64(memFirst.PSSKiB)/1024, float64(minPSS)/1024, mem1.breakdown())
	lost := 0
	for _, c := range all {
		if c != nil && c.err.Load() != nil {
			lost++
		}
	}

	// Deliver one message; every idle connection must get its EXISTS.
	msgID := p.Messages // one id past the mix
	raw := p.Build(msgID)
	msg := Message{ID: msgID, Size: len(raw), Rcpts: users, Wire: dotStuff(raw)}
	lopt := lmtpOptions{Addr: *lmtpAddr, Sender: "bench-sender@example.net", LHLO: "mailbench.localhost", OpTimeout: *opTimeout}
	lc, err := dialLMTP(&lopt, lopt.Addr)
	if err != nil {
		return fmt.Errorf("LMTP: %w", err)
	}
	t0 := time.Now()
	ok, rej, err := lc.deliver(&msg)
	t250 := time.Since(t0)
	lc.quit()
	if err != nil || ok != len(users) {
		return fmt.Errorf("LMTP delivery to %d users: %d delivered, %v %v", len(users), ok, err, rej)
	}
	arrived := make(chan struct{})
	go func() { arrivals.Wait(); close(arrived) }()
	timedOut := false
	select {
	case <-arrived:
	case <-time.After(*existsTimeout):
		timedOut = true
	case <-ctx.Done():
		timedOut = true
	}
	var lats []time.Duration
	for k, c := range all {
		if c == nil || c.got.Load() == 0 {
			if c != nil && c.err.Load() != nil {
				addErr(fmt.Sprintf("connection %d: %v", k, c.err.Load()))
			}
			continue
		}
		lats = append(lats, time.Duration(c.got.Load()-t0.UnixNano()))
	}
	missing := n - len(lats)
	if missing > 0 {
		failures += missing
		addErr(fmt.Sprintf("%d of %d idle connections got no EXISTS within %v (timed out: %v)", missing, n, *existsTimeout, timedOut))
	}
	load := lm.stop()

	r := &Result{Kind: "imap-idle", Op: *variant, Server: *label, Concurrency: *conns, Time: time.Now().UTC().Format(time.RFC3339),
		Seed: p.Seed, MixMessages: p.Messages, Messages: sumExists(existsOf), Ops: n, Failures: failures, Seconds: round3(openTime.Seconds()),
		PerSec: round3(float64(n) / openTime.Seconds()), LatencyMs: percentiles(lats), Machine: load, Errors: errs,
		Details: map[string]float64{
			"pss_before_kib": float64(mem0.PSSKiB), "rss_before_kib": float64(mem0.RSSKiB), "procs_before": float64(mem0.Procs),
			"pss_idle_kib": float64(mem1.PSSKiB), "rss_idle_kib": float64(mem1.RSSKiB), "procs_idle": float64(mem1.Procs),
			"settle_before_s": round3(wait0.Seconds()), "idle_wait_s": round3(time.Since(tWatch).Seconds()),
			"pss_idle_at_once_kib": float64(memFirst.PSSKiB), "pss_idle_min_kib": float64(minPSS),
			"delivery_ms": ms(t250), "users": float64(len(users)), "exists_received": float64(len(lats)), "lost_while_idle": float64(lost),
		}}
	if !stable0 {
		r.Details["unsettled_before"] = 1
	}
	if n > 0 {
		r.Details["pss_kib_per_conn"] = round3(float64(mem1.PSSKiB-mem0.PSSKiB) / float64(n))
		r.Details["rss_kib_per_conn"] = round3(float64(mem1.RSSKiB-mem0.RSSKiB) / float64(n))
	}
	if len(logins) > 0 {
		var sum time.Duration
		for _, l := range logins {
			sum += l
		}
		r.LoginMs = ms(sum / time.Duration(len(logins)))
	}
	if len(lats) > 0 {
		r.Details["exists_last_ms"] = ms(slices.Max(lats))
	}
	emit(r)
	fmt.Fprintf(os.Stderr, "%s imapidle %s: %d idle connections: %.1f KiB PSS (%.1f KiB RSS) per connection; opened in %.1fs (login %.0f ms mean)",
		*label, *variant, n, r.Details["pss_kib_per_conn"], r.Details["rss_kib_per_conn"], openTime.Seconds(), r.LoginMs)
	if r.LatencyMs != nil {
		fmt.Fprintf(os.Stderr, "; EXISTS on %d/%d connections, ms after the delivery started: p50 %.1f p99 %.1f last %.1f (LMTP 250 after %.1f)",
			len(lats), n, r.LatencyMs.P50, r.LatencyMs.P99, r.LatencyMs.Max, ms(t250))
	}
	printLoad(load)
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, "  error:", e)
	}
	if failures > 0 || n == 0 {
		return fmt.Errorf("%d connection(s) failed", failures)
	}
	return nil
}

func sumExists(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
