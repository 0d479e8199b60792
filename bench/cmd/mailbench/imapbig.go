package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"time"
)

// Large mailbox (mailbench imapbig): one client, one INBOX holding the mix
// generated with -messages N -users 1 (bench/run.sh fills it with small
// messages). Each round opens two connections in turn and times:
//
//	A: connect + LOGIN, SELECT INBOX, UID FETCH 1:* (UID FLAGS)
//	B: connect + LOGIN, SELECT INBOX, FETCH 1:* (ENVELOPE BODYSTRUCTURE RFC822.SIZE)
//
// Round 1 is the first access after delivery (for Dovecot the first FETCH
// of envelopes builds its cache); round 2 repeats it. Responses are kept
// and checked after the clock stopped.

func bigRound(addr, user, password string, timeout time.Duration, expect int, envelope bool) (map[string]time.Duration, error) {
	t := map[string]time.Duration{}
	t0 := time.Now()
	ic, err := dialIMAP(addr, timeout)
	if err != nil {
		return nil, err
	}
	defer ic.logout()
	if err := ic.login(user, password); err != nil {
		return nil, err
	}
	t1 := time.Now()
	si, err := ic.selectMailbox("INBOX")
	if err != nil {
		return nil, err
	}
	t2 := time.Now()
	if si.Exists != expect {
		return nil, fmt.Errorf("SELECT: %d EXISTS, want %d", si.Exists, expect)
	}
	var resps [][]byte
	command := "UID FETCH 1:* (UID FLAGS)"
	if envelope {
		command = "FETCH 1:* (ENVELOPE BODYSTRUCTURE RFC822.SIZE)"
	}
	if _, err := ic.cmd(command, func(r []byte) error { resps = append(resps, r); return nil }); err != nil {
		return nil, err
	}
	t3 := time.Now()
	t["login"], t["select"], t["fetch"] = t1.Sub(t0), t2.Sub(t1), t3.Sub(t2)
	fds, err := fetches(resps)
	if err != nil {
		return t, err
	}
	if envelope {
		want := make([]int, expect)
		for i := range want {
			want[i] = i
		}
		return t, checkEnvelopes(fds, want)
	}
	uids := make([]uint32, 0, len(fds))
	for _, fd := range fds {
		u, ok := fd.uid()
		if _, ok2 := fd.get("FLAGS"); !ok || !ok2 {
			return t, fmt.Errorf("FETCH %d without UID or FLAGS", fd.seq)
		}
		uids = append(uids, u)
	}
	slices.Sort(uids)
	if len(slices.Compact(uids)) != expect {
		return t, fmt.Errorf("UID FETCH 1:*: %d distinct UIDs, want %d", len(slices.Compact(uids)), expect)
	}
	return t, nil
}

func cmdIMAPBig(args []string) error {
	fs := flag.NewFlagSet("imapbig", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:1143", "IMAP server address")
	user := fs.String("user", "user1@bench.test", "login")
	password := fs.String("password", "pw", "password")
	expect := fs.Int("expect", 100000, "messages in the INBOX: the mix of -messages N -users 1 (ids 0..N-1)")
	rounds := fs.Int("rounds", 2, "rounds (1: first access after delivery)")
	opTimeout := fs.Duration("op-timeout", 5*time.Minute, "timeout of one command")
	label := fs.String("server", "server", "server label for the result")
	fs.Duration("timeout", 0, "ignored (run.sh passes it to every step)")
	fs.Parse(args)
	lm := startLoad()
	r := &Result{Kind: "imap-big", Server: *label, Concurrency: 1, Time: time.Now().UTC().Format(time.RFC3339),
		MixMessages: *expect, Messages: *expect, Details: map[string]float64{}}
	tStart := time.Now()
	var errs []string
	for round := 1; round <= *rounds; round++ {
		for _, env := range []bool{false, true} {
			t, err := bigRound(*addr, *user, *password, *opTimeout, *expect, env)
			name := "uidfetch"
			if env {
				name = "envelope"
			}
			if t != nil {
				sfx := fmt.Sprintf("_%d", round)
				r.Details[name+"_login_ms"+sfx] = ms(t["login"])
				r.Details[name+"_select_ms"+sfx] = ms(t["select"])
				r.Details[name+"_fetch_ms"+sfx] = ms(t["fetch"])
				r.Details[name+"_select_fetch_ms"+sfx] = ms(t["select"] + t["fetch"])
				r.Details[name+"_login_select_fetch_ms"+sfx] = ms(t["login"] + t["select"] + t["fetch"])
				fmt.Fprintf(os.Stderr, "%s imapbig round %d, %s: login %.0f ms, SELECT %.0f ms, FETCH %.0f ms: SELECT+FETCH %.0f ms\n",
					*label, round, name, ms(t["login"]), ms(t["select"]), ms(t["fetch"]), ms(t["select"]+t["fetch"]))
			}
			if err != nil {
				errs = append(errs, fmt.Sprintf("round %d, %s: %v", round, name, err))
				r.Failures++
			}
		}
	}
	r.Seconds = round3(time.Since(tStart).Seconds())
	r.LoginMs = r.Details["uidfetch_login_ms_1"]
	r.Errors = errs
	r.Machine = lm.stop()
	emit(r)
	printLoad(r.Machine)
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, "  error:", e)
	}
	if r.Failures > 0 {
		return fmt.Errorf("%d failure(s)", r.Failures)
	}
	return nil
}
