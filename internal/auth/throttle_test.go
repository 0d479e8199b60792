package auth

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

type recLog struct {
	mu    sync.Mutex
	lines []string
}

func (h *recLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *recLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recLog) WithGroup(string) slog.Handler            { return h }
func (h *recLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, b.String())
	h.mu.Unlock()
	return nil
}

func (h *recLog) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.lines...)
}

func TestThrottleBlocksAddressNotAccount(t *testing.T) {
	now := time.Unix(1e9, 0)
	log := &recLog{}
	th := &Throttle{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, Forget: time.Minute, MaxEntries: 100,
		BlockAfter: 5, BlockFor: 10 * time.Minute, Logger: slog.New(log), now: func() time.Time { return now }}
	ip := netip.MustParseAddr("192.0.2.7")
	other := netip.MustParseAddr("192.0.2.8")
	want := []time.Duration{100, 200, 400, 800}
	for i, w := range want {
		th.Failure(ip, "a@x")
		if d, blocked := th.Check(ip, "a@x"); d != w*time.Millisecond || blocked {
			t.Fatalf("after %d failures: %v blocked %v; want %v, not blocked", i+1, d, blocked, w*time.Millisecond)
		}
	}
	th.Failure(ip, "a@x") // the fifth
	if d, blocked := th.Check(ip, "anyone@x"); d != time.Second || !blocked {
		t.Fatalf("after 5 failures: %v blocked %v; want 1s, blocked", d, blocked)
	}
	// The account is delayed from everywhere, never blocked.
	if d, blocked := th.Check(other, "a@x"); d != time.Second || blocked {
		t.Fatalf("account from another address: %v blocked %v; want 1s, not blocked", d, blocked)
	}
	// A success (from another address) resets the account, not the block;
	// attempts while blocked neither count nor extend it.
	th.Success(other, "a@x")
	th.Success(ip, "a@x")
	for range 20 {
		th.Failure(ip, "b@x")
	}
	if d, _ := th.Check(other, "b@x"); d != 0 {
		t.Fatalf("failures while blocked counted for the account: delay %v", d)
	}
	now = now.Add(10*time.Minute - time.Second)
	if _, blocked := th.Check(ip, "a@x"); !blocked {
		t.Fatal("block lifted early")
	}
	now = now.Add(time.Second)
	if d, blocked := th.Check(ip, "a@x"); d != 0 || blocked {
		t.Fatalf("after the block: %v blocked %v; want a fresh start", d, blocked)
	}
	th.Blocked(ip, "c@x") // logs only
	logs := log.all()
	wantLogs := []string{
		"WARN login throttle: client address blocked addr=192.0.2.7 failures=5 blocked_for=10m0s user=a@x",
		"WARN login throttle: repeated failures for account (delayed, not blocked) user=a@x failures=5 addr=192.0.2.7",
		"WARN login refused: client address blocked addr=192.0.2.7 user=c@x blocked_until=0001-01-01T00:00:00Z",
	}
	if strings.Join(logs, "\n") != strings.Join(wantLogs, "\n") {
		t.Fatalf("logs:\n%s\nwant:\n%s", strings.Join(logs, "\n"), strings.Join(wantLogs, "\n"))
	}
}

func TestThrottleNoBlockWhenZero(t *testing.T) {
	th := &Throttle{BaseDelay: time.Millisecond, MaxDelay: 4 * time.Millisecond, Forget: time.Minute, MaxEntries: 100}
	ip := netip.MustParseAddr("192.0.2.1")
	for range 100 {
		th.Failure(ip, "a@x")
	}
	if d, blocked := th.Check(ip, "a@x"); d != 4*time.Millisecond || blocked {
		t.Fatalf("BlockAfter 0: %v blocked %v", d, blocked)
	}
}

// Filling the table from other addresses evicts unblocked entries first.
func TestThrottleEvictionSparesBlocks(t *testing.T) {
	th := &Throttle{BaseDelay: time.Millisecond, MaxDelay: time.Second, Forget: time.Hour, MaxEntries: 50,
		BlockAfter: 3, BlockFor: time.Hour}
	attacker := netip.MustParseAddr("198.51.100.1")
	for range 3 {
		th.Failure(attacker, "victim@x")
	}
	for i := range 5000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		th.Failure(ip, fmt.Sprintf("u%d@x", i))
	}
	if n := th.Len(); n > 50 {
		t.Fatalf("table holds %d entries, bound 50", n)
	}
	if _, blocked := th.Check(attacker, "x@x"); !blocked {
		t.Fatal("a flood of other addresses lifted the block")
	}
}

func TestAuthenticatorBlocked(t *testing.T) {
	hash, err := hashWith("pw", fastParams)
	if err != nil {
		t.Fatal(err)
	}
	log := &recLog{}
	a := &Authenticator{
		Throttle: &Throttle{BaseDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, Forget: time.Minute,
			MaxEntries: 100, BlockAfter: 3, BlockFor: time.Hour, Logger: slog.New(log)},
		Lookup: func(ctx context.Context, user string) (string, string, error) {
			if user == "ann@example.org" {
				return user, hash, nil
			}
			return "", "", ErrUnknownUser
		},
	}
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")
	for range 3 {
		if _, err := a.Authenticate(ctx, "ann@example.org", "wrong", ip); err != ErrInvalidCredentials {
			t.Fatalf("wrong password: %v", err)
		}
	}
	// Blocked: the right password gets the same error as a wrong one.
	if _, err := a.Authenticate(ctx, "ann@example.org", "pw", ip); err != ErrInvalidCredentials {
		t.Fatalf("right password while blocked: %v, want ErrInvalidCredentials", err)
	}
	// Another address logs in (the account is only delayed).
	if name, err := a.Authenticate(ctx, "ann@example.org", "pw", netip.MustParseAddr("192.0.2.2")); err != nil || name != "ann@example.org" {
		t.Fatalf("other address: %q %v", name, err)
	}
	if !strings.Contains(strings.Join(log.all(), "\n"), "WARN login refused: client address blocked addr=192.0.2.1 user=ann@example.org") {
		t.Fatalf("blocked attempt not logged:\n%s", strings.Join(log.all(), "\n"))
	}
}
