package auth

import (
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
// clients. A success resets both counters. The table is bounded: when it is
// full, the stalest of a small random sample is evicted, so an attacker
// cycling through addresses cannot grow it.
type Throttle struct {
	BaseDelay  time.Duration // delay after the first failure
	MaxDelay   time.Duration // cap of the delay
	Forget     time.Duration // a key with no failure for this long is reset
	MaxEntries int           // bound of the table

	mu      sync.Mutex
	entries map[string]*throttleEntry
	now     func() time.Time
}

type throttleEntry struct {
	failures int
	last     time.Time
}

// NewThrottle returns a throttle with the production defaults: 250ms
// doubling to 15s, forgotten after 15 minutes, 100,000 entries.
func NewThrottle() *Throttle {
	return &Throttle{BaseDelay: 250 * time.Millisecond, MaxDelay: 15 * time.Second,
		Forget: 15 * time.Minute, MaxEntries: 100000}
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
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := max(t.failures(addrKey(ip)), t.failures(accountKey(user)))
	if n == 0 {
		return 0
	}
	d := t.BaseDelay
	for i := 1; i < n && d < t.MaxDelay; i++ {
		d *= 2
	}
	return min(d, t.MaxDelay)
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

func (t *Throttle) failures(key string) int {
	e := t.entries[key]
	if e == nil {
		return 0
	}
	if t.clock().Sub(e.last) > t.Forget {
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
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock()
	for _, k := range []string{addrKey(ip), accountKey(user)} {
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
	}
}

// Success resets the counters of ip and user.
func (t *Throttle) Success(ip netip.Addr, user string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.entries, addrKey(ip))
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
	// one with the oldest failure.
	var victim string
	var oldest time.Time
	n := 0
	for k, e := range t.entries {
		if victim == "" || e.last.Before(oldest) {
			victim, oldest = k, e.last
		}
		if n++; n == 8 {
			break
		}
	}
	delete(t.entries, victim)
}
