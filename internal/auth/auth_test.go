package auth

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

var fastParams = Params{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

func TestHashVerify(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=47104,t=1,p=1$") {
		t.Fatalf("hash %q does not carry the default parameters", h)
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horse ": false, "": false, "Correct horse": false} {
		ok, err := VerifyPassword(h, pw)
		if err != nil || ok != want {
			t.Errorf("VerifyPassword(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	h2, _ := HashPassword("correct horse")
	if h2 == h {
		t.Error("two hashes of one password are equal: salt not random")
	}
}

func TestVerifyMalformed(t *testing.T) {
	good, _ := hashWith("x", fastParams)
	for _, h := range []string{
		"", "plain", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=18$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=64,t=1,p=1$!!$a2V5a2V5a2V5a2V5a2V5a2V5",
		good + "$",
		strings.Replace(good, "p=1", "p=0", 1),
	} {
		if ok, err := VerifyPassword(h, "x"); ok || !errors.Is(err, ErrMalformedHash) {
			t.Errorf("VerifyPassword(%q) = %v, %v; want ErrMalformedHash", h, ok, err)
		}
	}
	if ok, err := VerifyPassword(good, "x"); !ok || err != nil {
		t.Errorf("fast-param hash does not verify: %v %v", ok, err)
	}
}

func TestThrottleGrowsAndResets(t *testing.T) {
	now := time.Unix(1e9, 0)
	th := &Throttle{BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second, Forget: time.Minute, MaxEntries: 100,
		now: func() time.Time { return now }}
	ip := netip.MustParseAddr("192.0.2.7")
	other := netip.MustParseAddr("192.0.2.8")
	if d := th.Delay(ip, "a@x"); d != 0 {
		t.Fatalf("fresh delay %v", d)
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		th.Failure(ip, "a@x")
		if d := th.Delay(ip, "b@x"); d != w*time.Millisecond {
			t.Fatalf("after %d failures: ip delay %v, want %v", i+1, d, w*time.Millisecond)
		}
	}
	// The account is throttled from every address, and another client
	// for another account is not.
	if d := th.Delay(other, "a@x"); d != time.Second {
		t.Errorf("account delay from other ip = %v", d)
	}
	if d := th.Delay(other, "c@x"); d != 0 {
		t.Errorf("unrelated client delayed %v", d)
	}
	// IPv6 addresses of one /64 share a key.
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:1")
	th.Failure(v6a, "z@x")
	if d := th.Delay(v6b, "y@x"); d != 100*time.Millisecond {
		t.Errorf("same /64 delay %v", d)
	}
	th.Success(ip, "a@x")
	if d := th.Delay(ip, "a@x"); d != 0 {
		t.Errorf("delay after success %v", d)
	}
	th.Failure(other, "q@x")
	now = now.Add(2 * time.Minute)
	if d := th.Delay(other, "q@x"); d != 0 {
		t.Errorf("delay not forgotten: %v", d)
	}
}

func TestThrottleBounded(t *testing.T) {
	th := &Throttle{BaseDelay: time.Millisecond, MaxDelay: time.Second, Forget: time.Hour, MaxEntries: 50}
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		th.Failure(ip, "victim@x")
	}
	if n := th.Len(); n > 50 {
		t.Fatalf("throttle holds %d entries, bound 50", n)
	}
}

func TestAuthenticator(t *testing.T) {
	hash, err := hashWith("pw", fastParams)
	if err != nil {
		t.Fatal(err)
	}
	a := &Authenticator{
		Throttle: &Throttle{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, Forget: time.Minute, MaxEntries: 100},
		Lookup: func(ctx context.Context, user string) (string, string, error) {
			if strings.EqualFold(user, "Ann@Example.org") {
				return "ann@example.org", hash, nil
			}
			if user == "broken@example.org" {
				return "", "", errors.New("database down")
			}
			return "", "", ErrUnknownUser
		},
	}
	ip := netip.MustParseAddr("127.0.0.1")
	ctx := context.Background()
	name, err := a.Authenticate(ctx, "ANN@example.org", "pw", ip)
	if err != nil || name != "ann@example.org" {
		t.Fatalf("good login: %q %v", name, err)
	}
	_, errBad := a.Authenticate(ctx, "ann@example.org", "nope", ip)
	_, errUnknown := a.Authenticate(ctx, "bob@example.org", "pw", ip)
	if errBad != ErrInvalidCredentials || errUnknown != ErrInvalidCredentials {
		t.Fatalf("bad password %v, unknown user %v: want the same ErrInvalidCredentials", errBad, errUnknown)
	}
	if _, err := a.Authenticate(ctx, "broken@example.org", "pw", ip); err == nil || err == ErrInvalidCredentials {
		t.Fatalf("backend failure reported as %v", err)
	}
	if a.Throttle.Failures(ip) != 2 {
		t.Fatalf("failures recorded %d, want 2", a.Throttle.Failures(ip))
	}
	// A cancelled context ends the throttle wait.
	a.Throttle.MaxDelay, a.Throttle.BaseDelay = time.Hour, time.Hour
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Authenticate(cctx, "ann@example.org", "pw", ip); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
}

// Concurrent hashing is bounded by hashSlots and stays race-free.
func TestConcurrentVerify(t *testing.T) {
	h, _ := hashWith("pw", fastParams)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := VerifyPassword(h, "pw"); !ok || err != nil {
				t.Error("verify failed", err)
			}
		}()
	}
	wg.Wait()
}
