package server

// TestSoak is the soak test the security review asked for: many concurrent
// clients mixing delivery, IMAP and POP3 against one in-process server
// over real TCP and a real data directory, then three checks: no errors,
// no goroutine, file descriptor or heap growth once the load has stopped,
// and every acknowledged message present exactly once (or deleted by
// exactly one POP3 session that retrieved it), byte for byte.
//
// By default it is a short run that `go test ./internal/server` does in CI
// (15 s, 20 clients). The full run, whose results are in
// docs/benchmarks.md ("Soak test"):
//
//	go test ./internal/server -run TestSoak -soak.duration 10m -soak.clients 200 -timeout 30m -v
//
// The clients (soak_clients_test.go) are independent implementations:
// net/smtp and a raw LMTP client (25% of the clients), go-imap v2's
// imapclient (45%), a raw POP3 client (30%). Each client loops: one
// session (connect, work, log out), a pause of up to -soak.think, again.
// The bookkeeping and the final reconciliation are in soak_ledger_test.go.
//
// The load runs in two phases: the first fifth of the duration, then the
// rest. After each, all clients are gone and the test waits (polling) for
// the server's goroutines to return to the baseline taken after one
// warm-up session of every kind; then it takes the heap after GC. Growth
// that is proportional to work done (a leak per session or per message)
// shows as heap growth between the two measurements, when the second
// phase did four times the work of the first; caches that fill once (the
// store's view cache of 64 mailboxes, SQLite's page cache, which is not
// on the Go heap anyway, pooled connections, TLS and crypto tables) are
// full after the first phase. The test's own ledger grows with the work,
// so its exact size is subtracted.

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/letterbox/letterbox/internal/config"
)

var (
	soakDuration = flag.Duration("soak.duration", 15*time.Second, "TestSoak: how long the load runs")
	soakClients  = flag.Int("soak.clients", 20, "TestSoak: concurrent clients (25% delivery, 45% IMAP, 30% POP3)")
	soakAccounts = flag.Int("soak.accounts", 0, "TestSoak: accounts the clients use (0: clients/4, at least 5)")
	soakThink    = flag.Duration("soak.think", 500*time.Millisecond, "TestSoak: a client's pause between sessions, uniform in [0, think)")
	soakConfig   = flag.String("soak.config", "", "TestSoak: TOML appended to the server's config (for example a [store] table)")
)

const (
	// soakGoroutineSlack is how many goroutines above the baseline still
	// count as "back to baseline" (background work that comes and goes:
	// the SQLite committer's timers, a SCRAM key being saved).
	soakGoroutineSlack = 5
	// soakFDSlack: file descriptors above the previous measurement (the
	// read pool of the store may open one more connection).
	soakFDSlack = 4
	// soakHeapGrowthBound is the most the live heap (after GC, minus the
	// test's ledger) may grow from the end of the first phase to the end
	// of the second, which did four times the work. A leak of 100 bytes
	// per session shows as ~10 MiB over the full run's ~100,000 sessions
	// in the second phase; the expected growth is the view cache filling
	// as mailboxes grow (64 views of ~4 bytes per message).
	soakHeapGrowthBound = 8 << 20
)

func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: not with -short")
	}
	clients, duration := *soakClients, *soakDuration
	accounts := *soakAccounts
	if accounts <= 0 {
		accounts = max(5, clients/4)
	}
	preServer := runtime.NumGoroutine()

	// The server, as `letterbox serve` builds it, on loopback ports. The
	// [limits] are raised so that they are not what the test measures:
	// all clients come from 127.0.0.1 (exempt from max_connections_per_ip
	// anyway, set high to say so), up to 200 sessions may share 50
	// accounts, and the login throttle never blocks (no login fails in a
	// correct run; if one does, it is an error, and blocking 127.0.0.1
	// would bury it under a cascade of failures).
	dir := t.TempDir()
	text := fmt.Sprintf(`hostname = "mail.example.org"
data_dir = %q
domains = ["example.org"]
[listen]
smtp = "127.0.0.1:0"
lmtp = "127.0.0.1:0"
imap = "127.0.0.1:0"
imaps = "127.0.0.1:0"
pop3 = "127.0.0.1:0"
pop3s = "127.0.0.1:0"
[limits]
max_connections = 20000
max_connections_per_ip = 20000
max_sessions_per_account = 10000
login_block_after = 0
%s
`, filepath.Join(dir, "data"), *soakConfig)
	cfg, err := config.Parse(filepath.Join(dir, "letterbox.toml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	logs := &soakLog{}
	srv, err := New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		srv.Close()
		t.Fatal(err)
	}
	shutDown := false
	shutdown := func() error {
		shutDown = true
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return srv.Shutdown(ctx)
	}
	t.Cleanup(func() {
		if !shutDown {
			shutdown()
		}
	})

	ctx := context.Background()
	for i := range accounts {
		a, err := srv.Store.CreateAccount(ctx, soakAccount(i), cheapHash(soakPassword))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Store.CreateMailbox(ctx, a.ID, soakMailboxes[soakKept], ""); err != nil {
			t.Fatal(err)
		}
	}
	h := &soakHarness{
		addr:           map[string]string{},
		tls:            clientConfig(t, srv, 0),
		accounts:       accounts,
		think:          *soakThink,
		sessionTimeout: 5 * time.Minute,
		ledger:         newSoakLedger(),
		stats:          &soakStats{},
	}
	for _, l := range []string{"smtp", "lmtp", "imap", "imaps", "pop3", "pop3s"} {
		h.addr[l] = srv.Addr(l).String()
	}
	t.Logf("soak: %d clients, %d accounts, %s, think time < %s, store %s, data in %s, GOMAXPROCS %d, %s, load average %s",
		clients, accounts, duration, h.think, cfg.Store.Backend, cfg.DataDir, runtime.GOMAXPROCS(0), runtime.Version(), soakLoadAvg())

	// Warm-up: every kind of session once, so that what is created on
	// first use is in the baseline.
	wr := rand.New(rand.NewPCG(0, 0x50a4))
	h.smtpSession(wr, 2)
	h.lmtpSession(wr, 2)
	for range 3 {
		h.imapSession(ctx, wr)
		h.popSession(wr, wr.IntN(accounts))
	}
	if n := h.stats.errors.Load(); n > 0 {
		t.Fatalf("warm-up: %d errors: %s", n, strings.Join(h.stats.errorList(), "\n"))
	}
	base := soakBaseline()
	t.Logf("soak: baseline after warm-up: %s", base)

	start := time.Now()
	phase1 := duration / 5
	h.runPhase(t, "phase 1", phase1, clients, 1, start)
	s1, ok1 := soakSettle(base.goroutines, h.ledger.bytes())
	sess1 := h.stats.sessions()
	t.Logf("soak: after phase 1 (%s, %d sessions), load stopped: %s", phase1, sess1, s1)
	h.runPhase(t, "phase 2", duration-phase1, clients, 2, start)
	s2, ok2 := soakSettle(base.goroutines, h.ledger.bytes())
	sess2 := h.stats.sessions() - sess1
	t.Logf("soak: after phase 2 (%s, %d sessions), load stopped: %s", duration-phase1, sess2, s2)
	t.Logf("soak: totals: %s", h.stats.summary())
	t.Logf("soak: load average at the end %s", soakLoadAvg())

	failed := false
	if n := h.stats.errors.Load(); n > 0 {
		t.Errorf("%d protocol or I/O errors; the first:\n%s", n, strings.Join(h.stats.errorList(), "\n"))
		failed = true
	}
	if w, e, lines := logs.counts(); w+e > 0 {
		t.Errorf("server logged %d warnings and %d errors; the first:\n%s", w, e, strings.Join(lines, "\n"))
		failed = true
	}
	if !ok1 || !ok2 {
		var b bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Errorf("goroutines did not return to the baseline %d (+%d) within 10 s after the load: %d after phase 1, %d after phase 2; goroutines now:\n%s",
			base.goroutines, soakGoroutineSlack, s1.goroutines, s2.goroutines, soakTruncate(b.String(), 30000))
		failed = true
	}
	if s1.fds >= 0 && s2.fds > s1.fds+soakFDSlack {
		t.Errorf("open file descriptors grew from %d after phase 1 to %d after phase 2 (baseline %d)", s1.fds, s2.fds, base.fds)
		failed = true
	}
	growth := int64(s2.netHeap()) - int64(s1.netHeap())
	t.Logf("soak: live heap without the ledger: baseline %s, after phase 1 %s, after phase 2 %s; phase 2 growth %s over %d sessions (%.1f bytes per session), bound %s",
		soakMiB(base.netHeap()), soakMiB(s1.netHeap()), soakMiB(s2.netHeap()), soakMiBSigned(growth), sess2,
		float64(growth)/float64(max(sess2, 1)), soakMiB(soakHeapGrowthBound))
	if growth > soakHeapGrowthBound {
		t.Errorf("live heap grew by %s between the end of phase 1 and the end of phase 2 (bound %s): a leak proportional to work",
			soakMiBSigned(growth), soakMiB(soakHeapGrowthBound))
		failed = true
	}

	// Every acknowledged message exactly once, via IMAP.
	found, stored, problems := h.finalPass()
	counts, more := soakReconcile(h.ledger, found)
	problems = append(problems, more...)
	t.Logf("soak: final IMAP pass over %d accounts: %d messages, %s, all byte-exact unless listed below; %s",
		accounts, len(found), soakMiB(uint64(stored)), soakFormatCounts(counts))
	if len(problems) > 0 {
		t.Errorf("%d reconciliation problems; the first:\n%s", counts["problems"]+len(problems)-len(more), strings.Join(problems, "\n"))
		failed = true
	}

	if err := shutdown(); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	post, okPost := soakSettle(preServer, 0)
	t.Logf("soak: after Shutdown: %d goroutines (before the server started: %d)", post.goroutines, preServer)
	if !okPost {
		var b bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Errorf("goroutines after Shutdown: %d, before the server started: %d:\n%s", post.goroutines, preServer, soakTruncate(b.String(), 30000))
	}
	if !failed {
		t.Logf("soak: PASS: 0 errors, no growth, every acknowledged message accounted for exactly once")
	}
}

// runPhase runs the clients for d and returns when all are gone, sampling
// goroutines, heap, RSS and file descriptors meanwhile.
func (h *soakHarness) runPhase(t *testing.T, name string, d time.Duration, clients int, phase uint64, start time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	nd, ni := clients*25/100, clients*45/100
	var wg sync.WaitGroup
	for i := range clients {
		kind := "pop3"
		switch {
		case i < nd:
			kind = "delivery"
		case i < nd+ni:
			kind = "imap"
		}
		wg.Go(func() { h.client(ctx, kind, i, phase<<32|uint64(i)) })
	}
	every := min(max(d/60, time.Second), 10*time.Second)
	done := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				t.Logf("soak sample %s t=%4.0fs goroutines=%d heap_live=%s heap_inuse=%s rss=%s fds=%d sessions=%d copies_acked=%d errors=%d load=%s",
					name, time.Since(start).Seconds(), runtime.NumGoroutine(), soakMiB(soakLiveHeap()), soakMiB(soakHeapInuse()),
					soakMiB(soakRSS()), soakFDs(), h.stats.sessions(), h.stats.copiesAcked.Load(), h.stats.errors.Load(), soakLoadAvg())
			}
		}
	})
	wg.Wait()
	close(done)
	sampler.Wait()
}

// soakSnapshot is the process's state with no load.
type soakSnapshot struct {
	goroutines           int
	heapAlloc, heapInuse uint64 // after GC
	ledger               uint64
	rss                  uint64
	fds                  int
}

func (s soakSnapshot) netHeap() uint64 { return s.heapAlloc - s.ledger }

func (s soakSnapshot) String() string {
	return fmt.Sprintf("goroutines %d, heap after GC %s (in use %s; ledger %s), RSS %s, open fds %d",
		s.goroutines, soakMiB(s.heapAlloc), soakMiB(s.heapInuse), soakMiB(s.ledger), soakMiB(s.rss), s.fds)
}

// soakBaseline waits (polling every 100 ms, for at most 10 s) until the
// number of goroutines has not changed for a second: the server's
// sessions of the warm-up have ended. Then it measures.
func soakBaseline() soakSnapshot {
	deadline := time.Now().Add(10 * time.Second)
	last, same := runtime.NumGoroutine(), 0
	for same < 10 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if n := runtime.NumGoroutine(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	s, _ := soakSettle(last, 0)
	return s
}

// soakSettle waits (polling every 100 ms, for at most 10 s) until the
// goroutines are at most want + soakGoroutineSlack, then measures. ok is
// false if they never got there.
func soakSettle(want int, ledger uint64) (soakSnapshot, bool) {
	deadline := time.Now().Add(10 * time.Second)
	ok := true
	for runtime.NumGoroutine() > want+soakGoroutineSlack {
		if time.Now().After(deadline) {
			ok = false
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	runtime.GC()
	runtime.GC() // the second also empties sync.Pools' victim caches
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return soakSnapshot{goroutines: runtime.NumGoroutine(), heapAlloc: ms.HeapAlloc, heapInuse: ms.HeapInuse,
		ledger: ledger, rss: soakRSS(), fds: soakFDs()}, ok
}

// finalPass reads every message of every mailbox of every account over
// IMAP (EXAMINE, UID FETCH 1:* BODY.PEEK[]) and checks each byte-exact.
func (h *soakHarness) finalPass() (found map[soakCopy][]soakLoc, octets int64, problems []string) {
	found = map[soakCopy][]soakLoc{}
	problem := func(format string, args ...any) {
		if len(problems) < 50 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for acct := range h.accounts {
		user := soakAccount(acct)
		conn, err := h.dial("imap")
		if err != nil {
			problem("final pass: dial: %v", err)
			return
		}
		c := imapclient.New(conn, nil)
		func() {
			defer conn.Close()
			defer c.Close()
			if err := c.Login(user, soakPassword).Wait(); err != nil {
				problem("final pass: LOGIN %s: %v", user, err)
				return
			}
			list, err := c.List("", "*", nil).Collect()
			if err != nil {
				problem("final pass: LIST %s: %v", user, err)
				return
			}
			for _, l := range list {
				sel, err := c.Select(l.Mailbox, &imap.SelectOptions{ReadOnly: true}).Wait()
				if err != nil {
					problem("final pass: EXAMINE %s of %s: %v", l.Mailbox, user, err)
					return
				}
				if sel.NumMessages == 0 {
					continue
				}
				mb := soakMailboxIndex(l.Mailbox)
				if mb < 0 {
					problem("final pass: %d messages in %s of %s, which no client uses", sel.NumMessages, l.Mailbox, user)
					continue
				}
				all := &imap.FetchItemBodySection{Peek: true}
				cmd := c.Fetch(imap.UIDSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, RFC822Size: true,
					BodySection: []*imap.FetchItemBodySection{all}})
				var seen uint32
				for m := cmd.Next(); m != nil; m = cmd.Next() {
					var uid imap.UID
					var size int64
					var body []byte
					for it := m.Next(); it != nil; it = m.Next() {
						switch it := it.(type) {
						case imapclient.FetchItemDataUID:
							uid = it.UID
						case imapclient.FetchItemDataRFC822Size:
							size = it.Size
						case imapclient.FetchItemDataBodySection:
							body, err = io.ReadAll(it.Literal)
							if err != nil {
								problem("final pass: %s UID %d of %s: %v", l.Mailbox, uid, user, err)
							}
						}
					}
					seen++
					octets += int64(len(body))
					n, err := soakCheckStored(body)
					if err == nil && int64(len(body)) != size {
						err = fmt.Errorf("%d octets, RFC822.SIZE %d", len(body), size)
					}
					if err != nil {
						problem("final pass: %s UID %d of %s: %v", l.Mailbox, uid, user, err)
						continue
					}
					c := soakCopy{n, uint16(acct)}
					found[c] = append(found[c], soakLoc{uint8(mb), uint32(uid)})
				}
				if err := cmd.Close(); err != nil {
					problem("final pass: UID FETCH in %s of %s: %v", l.Mailbox, user, err)
				}
				if seen != sel.NumMessages {
					problem("final pass: %s of %s: EXAMINE said %d messages, FETCH returned %d", l.Mailbox, user, sel.NumMessages, seen)
				}
			}
			if err := c.Logout().Wait(); err != nil {
				problem("final pass: LOGOUT %s: %v", user, err)
			}
		}()
	}
	return found, octets, problems
}

// soakLog is the server's log destination: it counts lines by level and
// keeps the first warnings and errors; info lines are formatted (as in
// production) and dropped, so the log holds no memory that grows.
type soakLog struct {
	mu         sync.Mutex
	info       int
	warn, errs int
	lines      []string
}

func (l *soakLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case bytes.Contains(p, []byte(" level=INFO ")), bytes.Contains(p, []byte(" level=DEBUG ")):
		l.info++
		return len(p), nil
	case bytes.Contains(p, []byte(" level=WARN ")):
		l.warn++
	default:
		l.errs++
	}
	if len(l.lines) < 30 {
		l.lines = append(l.lines, strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (l *soakLog) counts() (warn, errs int, lines []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.warn, l.errs, append([]string(nil), l.lines...)
}

func soakLiveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

func soakHeapInuse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// soakRSS is the process's resident set (Linux; 0 elsewhere): Go heap
// and stacks, and SQLite's memory, which modernc.org/sqlite allocates
// outside the Go heap.
func soakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// soakFDs is the number of open file descriptors (Linux; -1 elsewhere).
func soakFDs() int {
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(e)
}

func soakLoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func soakMiB(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func soakMiBSigned(b int64) string { return fmt.Sprintf("%+.2f MiB", float64(b)/(1<<20)) }

func soakTruncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "\n[truncated]"
}
