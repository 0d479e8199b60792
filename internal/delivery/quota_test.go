package delivery

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// TestDeliverOverQuota: a recipient over quota is refused with the
// configured reply while the other recipients of the same message get it,
// and the refusal leaves the full account unchanged.
func TestDeliverOverQuota(t *testing.T) {
	for _, temporary := range []bool{false, true} {
		name := "reject"
		if temporary {
			name = "defer"
		}
		t.Run(name, func(t *testing.T) {
			a, store, _ := newTestAgent(t, "full@example.org", "free@example.org")
			a.OverQuotaTemporary = temporary
			ctx := context.Background()
			body := "Subject: hi\r\n\r\nhello\r\n"
			// The first message fits exactly: its stored size (with
			// the trace fields) becomes the limit.
			env := &Envelope{From: "s@example.net", Recipients: resolveAll(t, a, "full@example.org")}
			if errs := a.Deliver(ctx, env, strings.NewReader(body)); errs[0] != nil {
				t.Fatal(errs[0])
			}
			msgs, _ := inbox(t, store, "full@example.org")
			if err := store.SetQuota(ctx, "full@example.org", msgs[0].Size, 0); err != nil {
				t.Fatal(err)
			}
			env = &Envelope{From: "s@example.net", Recipients: resolveAll(t, a, "free@example.org", "Full@example.org")}
			errs := a.Deliver(ctx, env, strings.NewReader(body))
			if errs[0] != nil {
				t.Fatalf("free@: %v", errs[0])
			}
			var e *Error
			if !errors.As(errs[1], &e) || !errors.Is(errs[1], mailstore.ErrOverQuota) || e.Address != "Full@example.org" {
				t.Fatalf("full@: %v, want an over-quota *Error", errs[1])
			}
			code, enh, text := e.SMTPStatus()
			wantCode, wantEnh, wantKind, wantExit := 552, [3]int{5, 2, 2}, KindOverQuota, ExitNoPerm
			wantText := "Mailbox is full (quota exceeded)"
			if temporary {
				wantCode, wantEnh, wantKind, wantExit = 452, [3]int{4, 2, 2}, KindOverQuotaTemp, ExitTempFail
				wantText += ", try again later"
			}
			if e.Kind != wantKind || code != wantCode || enh != wantEnh || text != wantText ||
				e.Temporary() != temporary || ExitCode(e) != wantExit || ExitCodeAll(errs) != wantExit {
				t.Fatalf("full@: kind %v %d %v %q temporary %v exit %d (all %d); want %v %d %v %q %v %d",
					e.Kind, code, enh, text, e.Temporary(), ExitCode(e), ExitCodeAll(errs),
					wantKind, wantCode, wantEnh, wantText, temporary, wantExit)
			}
			if m, _ := inbox(t, store, "full@example.org"); len(m) != 1 {
				t.Fatalf("full@ has %d messages, want 1", len(m))
			}
			if m, _ := inbox(t, store, "free@example.org"); len(m) != 1 {
				t.Fatalf("free@ has %d messages, want 1", len(m))
			}
		})
	}
}

func TestCheckQuota(t *testing.T) {
	a, store, _ := newTestAgent(t, "user@example.org")
	ctx := context.Background()
	r := resolveAll(t, a, "user@example.org")[0]
	if err := a.CheckQuota(ctx, r, 1<<40); err != nil {
		t.Fatalf("no quota: %v", err)
	}
	env := &Envelope{From: "", Recipients: []Recipient{r}}
	if errs := a.Deliver(ctx, env, strings.NewReader("Subject: x\r\n\r\nx\r\n")); errs[0] != nil {
		t.Fatal(errs[0])
	}
	u, err := store.Usage(ctx, r.AccountID)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetQuota(ctx, "user@example.org", u.Bytes+100, 0); err != nil {
		t.Fatal(err)
	}
	// SIZE=100 fits exactly; SIZE=101 does not; no SIZE counts as 1.
	for _, tc := range []struct {
		size int64
		kind Kind
	}{{0, 0}, {100, 0}, {101, KindOverQuota}} {
		if err := a.CheckQuota(ctx, r, tc.size); kindOf(err) != tc.kind {
			t.Errorf("CheckQuota(size %d) = %v, want kind %v", tc.size, err, tc.kind)
		}
	}
	if err := store.SetQuota(ctx, "user@example.org", u.Bytes, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.CheckQuota(ctx, r, 0); kindOf(err) != KindOverQuota {
		t.Errorf("CheckQuota of a full account without SIZE = %v, want KindOverQuota", err)
	}
	if err := store.SetQuota(ctx, "user@example.org", 0, 1); err != nil {
		t.Fatal(err)
	}
	a.OverQuotaTemporary = true
	if err := a.CheckQuota(ctx, r, 0); kindOf(err) != KindOverQuotaTemp {
		t.Errorf("CheckQuota at the message limit = %v, want KindOverQuotaTemp", err)
	}
}
