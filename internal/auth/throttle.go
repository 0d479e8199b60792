package auth

import (
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Throttle slows down password guessing. It counts recent failures per
// client address (IPv6 aggregated to its /64, since one host owns a whole
// prefix) and per account; every login attempt then waits for a delay that
// doubles with each failure of either key, up to MaxDelay. The wait happens
// in the attempting connection's goroutine, so it never blocks other
// clients. A success resets both counters.
//
// After BlockAfter failures a client address is blocked for BlockFor:
// its attempts wait MaxDelay and fail like a wrong password, whatever the
// password, so that the guesses one address can make are bounded (about
// BlockAfter per BlockFor, however many connections it opens). Attempts
// while blocked neither count nor extend the block. An account is never
// blocked, only delayed: a block per account would let anyone lock a user
// out from everywhere by guessing wrong on purpose, the lever a per-address
// block does not give (an attacker blocks only its own address).
//
// The table is bounded: when it is full, the stalest of a small random
// sample is evicted, so an attacker cycling through addresses cannot grow
// it.
type Throttle struct {
	BaseDelay  time.Duration // delay after the first failure
	MaxDelay   time.Duration // cap of the delay
	Forget     time.Duration // a key with no failure for this long is reset
	MaxEntries int           // bound of the table
	// BlockAfter is the number of failures from one client address that
	// blocks it; 0 never blocks.
	BlockAfter int
	// BlockFor is how long a block lasts, from the failure that reached
	// BlockAfter.
	BlockFor time.Duration
	// Logger gets the warnings: an address blocked, an attempt refused
	// because of a block, an account with BlockAfter failures. nil logs
	// nothing.
	Logger *slog.Logger

	mu      sync.Mutex
	entries map[string]*throttleEntry
	now     func() time.Time
}

type throttleEntry struct {
	failures int
	last     time.Time
	// blockedUntil is set when an address reaches BlockAfter failures.
	blockedUntil time.Time
}

// Production defaults (docs/configuration.md, [limits] login_*).
const (
	DefaultBaseDelay  = 250 * time.Millisecond
	DefaultMaxDelay   = 15 * time.Second
	DefaultForget     = 15 * time.Minute
	DefaultMaxEntries = 100000
	DefaultBlockAfter = 10
	DefaultBlockFor   = 15 * time.Minute
)

// NewThrottle returns a throttle with the production defaults: 250ms
// doubling to 15s, forgotten after 15 minutes, an address blocked for 15
// minutes after 10 failures, 100,000 entries.
func NewThrottle() *Throttle {
	return &Throttle{BaseDelay: DefaultBaseDelay, MaxDelay: DefaultMaxDelay,
		Forget: DefaultForget, MaxEntries: DefaultMaxEntries,
		BlockAfter: DefaultBlockAfter, BlockFor: DefaultBlockFor}
}

func addrKey(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return "ip:" + p.String()
	}
	return "ip:" + ip.String()
}

func accountKey(user string) string { return "user:" + strings.ToLower(user) }

func (t *Throttle) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return time.Now()
}

// Delay returns how long an attempt from ip for user must wait before it is
// checked.
func (t *Throttle) Delay(ip netip.Addr, user string) time.Duration {
	d, _ := t.Check(ip, user)
	return d
}

// Check returns how long an attempt from ip for user must wait before it
// is checked, and whether ip is blocked (the attempt must then fail as if
// the password were wrong, after the delay, which is MaxDelay).
func (t *Throttle) Check(ip netip.Addr, user string) (delay time.Duration, blocked bool) {
	if t == nil {
		return 0, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.blockedLocked(addrKey(ip)) {
		return t.MaxDelay, true
	}
	n := max(t.failures(addrKey(ip)), t.failures(accountKey(user)))
	if n == 0 {
		return 0, false
	}
	d := t.BaseDelay
	for i := 1; i < n && d < t.MaxDelay; i++ {
		d *= 2
	}
	return min(d, t.MaxDelay), false
}

// IsBlocked reports whether ip is blocked: an attempt from it must fail
// exactly like a wrong password (same response, same work), whatever the
// credentials, and be reported with Blocked instead of Failure.
func (t *Throttle) IsBlocked(ip netip.Addr) bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.blockedLocked(addrKey(ip))
}

// Blocked records an attempt refused because ip is blocked (it is logged,
// not counted).
func (t *Throttle) Blocked(ip netip.Addr, user string) {
	if t == nil || t.Logger == nil {
		return
	}
	t.mu.Lock()
	var until time.Time
	if e := t.entries[addrKey(ip)]; e != nil {
		until = e.blockedUntil
	}
	t.mu.Unlock()
	t.Logger.Warn("login refused: client address blocked", "addr", ip.String(), "user", user,
		"blocked_until", until.UTC().Format(time.RFC3339))
}

// Failures returns the current failure count for ip (for logging).
func (t *Throttle) Failures(ip netip.Addr) int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failures(addrKey(ip))
}

// blockedLocked reports whether key is blocked now; an expired block is
// forgotten with its failures.
func (t *Throttle) blockedLocked(key string) bool {
	e := t.entries[key]
	if e == nil || e.blockedUntil.IsZero() {
		return false
	}
	if t.clock().Before(e.blockedUntil) {
		return true
	}
	delete(t.entries, key)
	return false
}

func (t *Throttle) failures(key string) int {
	e := t.entries[key]
	if e == nil {
		return 0
	}
	if e.blockedUntil.IsZero() && t.clock().Sub(e.last) > t.Forget {
		delete(t.entries, key)
		return 0
	}
	return e.failures
}

// Failure records a failed attempt.
func (t *Throttle) Failure(ip netip.Addr, user string) {
	if t == nil {
		return
	}
	type warning struct {
		msg  string
		args []any
	}
	var warn []warning
	t.mu.Lock()
	now := t.clock()
	if t.blockedLocked(addrKey(ip)) {
		t.mu.Unlock()
		return // attempts while blocked do not count
	}
	for i, k := range []string{addrKey(ip), accountKey(user)} {
		isAddr := i == 0
		e := t.entries[k]
		if e == nil {
			if t.entries == nil {
				t.entries = make(map[string]*throttleEntry)
			}
			if len(t.entries) >= t.MaxEntries {
				t.evictLocked()
			}
			e = &throttleEntry{}
			t.entries[k] = e
		} else if now.Sub(e.last) > t.Forget {
			e.failures = 0
		}
		e.failures++
		e.last = now
		if t.BlockAfter <= 0 || e.failures != t.BlockAfter {
			continue
		}
		if isAddr {
			e.blockedUntil = now.Add(t.BlockFor)
			warn = append(warn, warning{"login throttle: client address blocked", []any{"addr", ip.String(),
				"failures", e.failures, "blocked_for", t.BlockFor.String(), "user", user}})
		} else {
			warn = append(warn, warning{"login throttle: repeated failures for account (delayed, not blocked)",
				[]any{"user", strings.ToLower(user), "failures", e.failures, "addr", ip.String()}})
		}
	}
	t.mu.Unlock()
	if t.Logger != nil {
		for _, w := range warn {
			t.Logger.Warn(w.msg, w.args...)
		}
	}
}

// Success resets the counters of ip and user. It does not lift a block:
// while blocked, no attempt succeeds.
func (t *Throttle) Success(ip netip.Addr, user string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.blockedLocked(addrKey(ip)) {
		delete(t.entries, addrKey(ip))
	}
	delete(t.entries, accountKey(user))
}

// Len returns the number of tracked keys.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

func (t *Throttle) evictLocked() {
	// Map iteration order is randomised: sample a few entries and drop the
	// one with the oldest failure, sparing blocks when the sample has
	// another entry (so that filling the table from other addresses does
	// not easily lift a block).
	var victim string
	var oldest time.Time
	victimBlocked := false
	n := 0
	for k, e := range t.entries {
		blocked := !e.blockedUntil.IsZero()
		if victim == "" || victimBlocked && !blocked || blocked == victimBlocked && e.last.Before(oldest) {
			victim, oldest, victimBlocked = k, e.last, blocked
		}
		if n++; n == 8 {
			break
		}
	}
	delete(t.entries, victim)
}
