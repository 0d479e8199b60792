// Command mailbench is Letterbox's load generator: it delivers a
// deterministic message mix over LMTP and downloads mailboxes over POP3,
// printing one JSON line per measurement on stdout and a human summary on
// stderr. bench/run.sh drives it against Letterbox and Dovecot side by side.
//
//	mailbench lmtp   -addr 127.0.0.1:2424 -c 8 [-messages 10000 -seed 1 -users 4]
//	mailbench pop3   -addr 127.0.0.1:1110 -sessions 4 -password pw [-verify-mix]
//	mailbench imap   -addr 127.0.0.1:1143 -clients 1,8 -users 1 -password pw
//	mailbench imapidle -addr 127.0.0.1:1143 -lmtp 127.0.0.1:2424 -conns 5000 -pid P
//	mailbench imapbig -addr 127.0.0.1:1143 -expect 100000
//	mailbench gen    -dir DIR            write the mix as .eml files (inspection)
//	mailbench mixinfo                    sizes and recipients of the mix
//	mailbench freeport -n 4              print N free loopback TCP ports
//	mailbench wait   -addr A,B -timeout 30s   wait until every address greets
//	mailbench report -in results.jsonl -out summary.json   comparison table
//	mailbench scalereport -in results.jsonl -configs embedded,pg-1-node,...
//
// lmtp and imap take several comma-separated -addr values (server nodes):
// connection/client i uses the (i mod n)-th, like a TCP load balancer.
//
// It uses only the Go standard library and talks only to the addresses it is
// given (bench/run.sh gives it loopback addresses).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func usage() {
	fmt.Fprintln(os.Stderr, `usage: mailbench COMMAND [flags]

commands:
  lmtp      deliver the message mix over LMTP with C connections
  pop3      download mailboxes over POP3 (USER/PASS, STAT, LIST, RETR all, QUIT)
  imap      IMAP steps (SELECT, UID FETCH flags, FETCH envelopes, BODY[], STORE,
            SEARCH, a mixed client profile) with N clients on one INBOX
  imapidle  open many connections in IDLE, measure the server's memory,
            deliver one message and time the EXISTS to every connection
  imapbig   login, SELECT and full FETCHes on one (large) INBOX, timed
  gen       write the message mix to a directory as .eml files
  mixinfo   print statistics about the message mix
  freeport  print free loopback TCP ports
  wait      wait until servers accept connections and send a greeting
  report    turn JSON result lines into the Letterbox/Dovecot comparison
  scalereport  the scale-out table (bench/scaleout.sh): one column per
            configuration, ratios against the first, CPU split per step

run "mailbench COMMAND -h" for the flags of a command`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "lmtp":
		err = cmdLMTP(args)
	case "pop3":
		err = cmdPOP3(args)
	case "imap":
		err = cmdIMAP(args)
	case "imapidle":
		err = cmdIMAPIdle(args)
	case "imapbig":
		err = cmdIMAPBig(args)
	case "gen":
		err = cmdGen(args)
	case "mixinfo":
		err = cmdMixInfo(args)
	case "freeport":
		err = cmdFreePort(args)
	case "wait":
		err = cmdWait(args)
	case "report":
		err = cmdReport(args)
	case "scalereport":
		err = cmdScaleReport(args)
	case "-h", "-help", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "mailbench: unknown command %q\n", cmd)
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "mailbench %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

// mixFlags registers the flags that define the message mix.
func mixFlags(fs *flag.FlagSet) *MixParams {
	p := &MixParams{}
	fs.Uint64Var(&p.Seed, "seed", 1, "PRNG seed of the message mix")
	fs.IntVar(&p.Messages, "messages", 10000, "number of messages in the mix")
	fs.IntVar(&p.MinSize, "min-size", 1<<10, "smallest regular message, octets")
	fs.IntVar(&p.MaxSize, "max-size", 200<<10, "largest regular message, octets (sizes are log-uniform)")
	fs.IntVar(&p.HugeSize, "huge-size", 5<<20, "size of the rare huge messages, octets")
	fs.Float64Var(&p.HugeFrac, "huge-frac", 0.002, "fraction of huge messages")
	fs.IntVar(&p.Users, "users", 4, "recipients are user1..userN@DOMAIN")
	fs.StringVar(&p.Domain, "domain", "bench.test", "recipient domain")
	fs.Float64Var(&p.MultiRcpt, "multi-rcpt", 0.1, "fraction of messages with 2 or 3 recipients")
	return p
}

func checkMix(p *MixParams) error {
	switch {
	case p.Messages < 1:
		return fmt.Errorf("-messages must be at least 1")
	case p.MinSize < 512 || p.MaxSize < p.MinSize:
		return fmt.Errorf("need 512 <= -min-size <= -max-size")
	case p.Users < 1:
		return fmt.Errorf("-users must be at least 1")
	}
	return nil
}

// signalContext is cancelled by SIGINT/SIGTERM or after limit.
func signalContext(limit time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if limit > 0 {
		ctx2, cancel2 := context.WithTimeout(ctx, limit)
		return ctx2, func() { cancel2(); cancel() }
	}
	return ctx, cancel
}

// Result is one measurement, printed as one JSON line.
type Result struct {
	Kind        string       `json:"kind"`         // "lmtp", "pop3", "imap", "imap-idle", "imap-big", "lmtp-fill"
	Op          string       `json:"op,omitempty"` // imap: the step (select, uidfetch, ...); imap-idle: the server variant
	Server      string       `json:"server"`
	Concurrency int          `json:"concurrency"` // LMTP connections, POP3 sessions, IMAP clients or idle connections
	Time        string       `json:"time"`
	Seed        uint64       `json:"seed"`
	MixMessages int          `json:"mix_messages"`
	Messages    int          `json:"messages"`             // messages fully delivered / retrieved; imap: messages in the INBOX
	Ops         int          `json:"ops,omitempty"`        // imap: operations completed
	Deliveries  int          `json:"deliveries,omitempty"` // LMTP per-recipient 250s
	Failures    int          `json:"failures"`
	Octets      int64        `json:"octets"` // message octets delivered (x recipients) / retrieved
	Seconds     float64      `json:"seconds"`
	PerSec      float64      `json:"per_sec"` // deliveries/s (lmtp), messages/s (pop3), operations/s (imap)
	MiBPerSec   float64      `json:"mib_per_sec"`
	LatencyMs   *Percentiles `json:"latency_ms,omitempty"` // per transaction (lmtp) / per RETR (pop3) / per operation (imap)
	LoginMs     float64      `json:"login_ms,omitempty"`   // pop3, imap: mean time from connect to logged in
	// Details holds step-specific numbers (imap: first_op_ms; imap-idle:
	// memory and EXISTS timings; imap-big: the timings of each phase).
	Details map[string]float64 `json:"details,omitempty"`
	Machine *machineLoad       `json:"machine,omitempty"`
	Errors  []string           `json:"errors,omitempty"`
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func percentiles(d []time.Duration) *Percentiles {
	if len(d) == 0 {
		return nil
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.5) - 1
		i = min(max(i, 0), len(s)-1)
		return ms(s[i])
	}
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return &Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999), Max: ms(s[len(s)-1]),
		Mean: ms(sum / time.Duration(len(s)))}
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(f float64) float64 {
	return float64(int64(f*1000+0.5)) / 1000
}

func emit(r *Result) {
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

func cmdLMTP(args []string) error {
	fs := flag.NewFlagSet("lmtp", flag.ExitOnError)
	p := mixFlags(fs)
	opt := lmtpOptions{}
	fs.StringVar(&opt.Addr, "addr", "127.0.0.1:2424", "LMTP server address; several, comma-separated, spread the connections round-robin (connection i uses the (i mod n)-th)")
	fs.IntVar(&opt.Conns, "c", 1, "concurrent connections")
	fs.StringVar(&opt.Sender, "sender", "bench-sender@example.net", "envelope sender")
	fs.StringVar(&opt.LHLO, "lhlo", "mailbench.localhost", "LHLO name")
	fs.DurationVar(&opt.OpTimeout, "op-timeout", 60*time.Second, "timeout of one command/reply")
	fs.DurationVar(&opt.Progress, "progress", 10*time.Second, "progress line interval on stderr (0: none)")
	label := fs.String("server", "server", "server label for the result")
	kind := fs.String("kind", "lmtp", `result kind: "lmtp" for the table, "lmtp-fill" for a delivery that only fills a mailbox`)
	limit := fs.Duration("timeout", 15*time.Minute, "stop the run after this long (counts as failure)")
	watch := fs.String("cpu-watch", "", "LABEL=PID,...: record the CPU seconds of these process trees over the measurement (details cpu_s_LABEL)")
	fs.Parse(args)
	if err := checkMix(p); err != nil {
		return err
	}
	if opt.Conns < 1 {
		return fmt.Errorf("-c must be at least 1")
	}
	addrs, err := splitAddrs(opt.Addr)
	if err != nil {
		return err
	}
	if opt.CPU, err = parseCPUWatch(*watch); err != nil {
		return err
	}
	t0 := time.Now()
	msgs := p.Generate()
	var total int64
	for _, m := range msgs {
		total += int64(m.Size)
	}
	fmt.Fprintf(os.Stderr, "%s: generated %d messages (%.1f MiB) in %.1fs; delivering over LMTP to %s with %d connection(s)\n",
		*label, len(msgs), float64(total)/(1<<20), time.Since(t0).Seconds(), opt.Addr, opt.Conns)
	ctx, cancel := signalContext(*limit)
	defer cancel()
	lm := startLoad()
	st, err := runLMTP(ctx, opt, msgs)
	if st == nil {
		return err
	}
	sec := st.Elapsed.Seconds()
	r := &Result{Kind: *kind, Server: *label, Concurrency: opt.Conns, Time: time.Now().UTC().Format(time.RFC3339),
		Seed: p.Seed, MixMessages: p.Messages, Messages: st.Messages, Deliveries: st.Deliveries,
		Failures: st.Failures, Octets: st.Octets, Seconds: round3(sec),
		PerSec: round3(float64(st.Deliveries) / sec), MiBPerSec: round3(float64(st.Octets) / (1 << 20) / sec),
		LatencyMs: percentiles(st.Latencies), Machine: lm.stop(), Errors: st.Errors}
	if len(addrs) > 1 || st.CPU != nil {
		r.Details = map[string]float64{}
		for k, v := range st.CPU {
			r.Details[k] = v
		}
	}
	if len(addrs) > 1 {
		r.Details["addrs"] = float64(len(addrs))
		for i, n := range st.PerAddr {
			r.Details[fmt.Sprintf("deliveries_addr%d", i+1)] = float64(n)
		}
	}
	emit(r)
	fmt.Fprintf(os.Stderr, "%s lmtp c=%d: %d deliveries of %d messages in %.2fs = %.1f deliveries/s, %.1f msg/s, %.2f MiB/s",
		*label, opt.Conns, st.Deliveries, st.Messages, sec, r.PerSec, float64(st.Messages)/sec, r.MiBPerSec)
	if r.LatencyMs != nil {
		fmt.Fprintf(os.Stderr, "; latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f", r.LatencyMs.P50, r.LatencyMs.P90, r.LatencyMs.P99, r.LatencyMs.Max)
	}
	printLoad(r.Machine)
	if len(addrs) > 1 {
		fmt.Fprintf(os.Stderr, "  deliveries per address: %v\n", st.PerAddr)
	}
	printCPU(r.Details)
	if st.Failures > 0 || len(st.Errors) > 0 {
		for _, e := range st.Errors {
			fmt.Fprintln(os.Stderr, "  error:", e)
		}
		return fmt.Errorf("%d of %d recipient deliveries failed", st.Failures, st.Failures+st.Deliveries)
	}
	return err
}

func cmdPOP3(args []string) error {
	fs := flag.NewFlagSet("pop3", flag.ExitOnError)
	p := mixFlags(fs)
	opt := pop3Options{}
	fs.StringVar(&opt.Addr, "addr", "127.0.0.1:1110", "POP3 server address")
	sessions := fs.Int("sessions", 1, "parallel sessions, as users user1..userN@DOMAIN")
	userList := fs.String("user", "", "comma-separated logins (instead of -sessions)")
	fs.StringVar(&opt.Password, "password", "pw", "password of every user")
	fs.DurationVar(&opt.OpTimeout, "op-timeout", 60*time.Second, "timeout of one command/response line")
	verify := fs.Bool("verify-mix", false, "check that each mailbox holds exactly its share of the mix (same mix flags as the lmtp run)")
	label := fs.String("server", "server", "server label for the result")
	limit := fs.Duration("timeout", 10*time.Minute, "stop the run after this long (counts as failure)")
	fs.Parse(args)
	if *userList != "" {
		opt.Users = strings.Split(*userList, ",")
	} else {
		for i := 1; i <= *sessions; i++ {
			opt.Users = append(opt.Users, fmt.Sprintf("user%d@%s", i, p.Domain))
		}
	}
	if len(opt.Users) == 0 {
		return fmt.Errorf("no users")
	}
	if *verify {
		if err := checkMix(p); err != nil {
			return err
		}
		opt.Expect = p.ExpectedIDs()
		for _, u := range opt.Users {
			if opt.Expect[u] == nil {
				opt.Expect[u] = []int{}
			}
		}
	}
	ctx, cancel := signalContext(*limit)
	defer cancel()
	lm := startLoad()
	st := runPOP3(ctx, opt)
	load := lm.stop()
	sec := st.Elapsed.Seconds()
	r := &Result{Kind: "pop3", Server: *label, Concurrency: len(opt.Users), Time: time.Now().UTC().Format(time.RFC3339),
		Seed: p.Seed, MixMessages: p.Messages, Messages: st.Messages, Failures: len(st.Errors), Octets: st.Octets,
		Seconds: round3(sec), PerSec: round3(float64(st.Messages) / sec),
		MiBPerSec: round3(float64(st.Octets) / (1 << 20) / sec), LatencyMs: percentiles(st.Latencies), Machine: load,
		Errors: st.Errors}
	var login time.Duration
	for _, s := range st.Sessions {
		login += s.Login
	}
	r.LoginMs = ms(login / time.Duration(len(st.Sessions)))
	emit(r)
	fmt.Fprintf(os.Stderr, "%s pop3 sessions=%d: %d messages, %.1f MiB in %.2fs = %.2f MiB/s, %.1f msg/s",
		*label, len(opt.Users), st.Messages, float64(st.Octets)/(1<<20), sec, r.MiBPerSec, r.PerSec)
	if r.LatencyMs != nil {
		fmt.Fprintf(os.Stderr, "; RETR ms p50 %.2f p99 %.2f", r.LatencyMs.P50, r.LatencyMs.P99)
	}
	printLoad(r.Machine)
	for _, s := range st.Sessions {
		fmt.Fprintf(os.Stderr, "  %s: %d messages, %.1f MiB in %.2fs (login %.0f ms)\n", s.User, s.Messages, float64(s.Octets)/(1<<20), s.Elapsed.Seconds(), ms(s.Login))
	}
	if len(st.Errors) > 0 {
		for _, e := range st.Errors {
			fmt.Fprintln(os.Stderr, "  error:", e)
		}
		return fmt.Errorf("%d problem(s)", len(st.Errors))
	}
	if st.Messages == 0 {
		return fmt.Errorf("no messages retrieved")
	}
	return nil
}

func cmdGen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	p := mixFlags(fs)
	dir := fs.String("dir", "", "output directory (created)")
	fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("-dir is required")
	}
	if err := checkMix(p); err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	for i := 0; i < p.Messages; i++ {
		name := filepath.Join(*dir, fmt.Sprintf("%06d.eml", i))
		if err := os.WriteFile(name, p.Build(i), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "wrote %d messages to %s\n", p.Messages, *dir)
	return nil
}

func cmdMixInfo(args []string) error {
	fs := flag.NewFlagSet("mixinfo", flag.ExitOnError)
	p := mixFlags(fs)
	fs.Parse(args)
	if err := checkMix(p); err != nil {
		return err
	}
	msgs := p.Generate()
	sizes := make([]int, len(msgs))
	var total, deliv int64
	var rcpts, multipart, huge int
	for i, m := range msgs {
		sizes[i] = m.Size
		total += int64(m.Size)
		rcpts += len(m.Rcpts)
		deliv += int64(m.Size) * int64(len(m.Rcpts))
		if strings.Contains(string(m.Wire[:min(len(m.Wire), 4096)]), "Content-Type: multipart/") {
			multipart++
		}
		if m.Size >= p.HugeSize/2 {
			huge++
		}
	}
	slices.Sort(sizes)
	q := func(f float64) int { return sizes[min(int(f*float64(len(sizes))), len(sizes)-1)] }
	fmt.Printf("messages %d, total %.1f MiB, delivered (x recipients) %.1f MiB, recipients %d (%.2f/msg)\n",
		len(msgs), float64(total)/(1<<20), float64(deliv)/(1<<20), rcpts, float64(rcpts)/float64(len(msgs)))
	fmt.Printf("sizes: min %d p10 %d p50 %d p90 %d p99 %d max %d; mean %d\n",
		sizes[0], q(0.1), q(0.5), q(0.9), q(0.99), sizes[len(sizes)-1], total/int64(len(msgs)))
	fmt.Printf("multipart %d (%.0f%%), huge %d\n", multipart, 100*float64(multipart)/float64(len(msgs)), huge)
	exp := p.ExpectedIDs()
	for u := 1; u <= p.Users; u++ {
		name := fmt.Sprintf("user%d@%s", u, p.Domain)
		fmt.Printf("  %s: %d messages\n", name, len(exp[name]))
	}
	return nil
}

// printCPU prints the cpu_s_* details of a result, if any.
func printCPU(d map[string]float64) {
	var parts []string
	for k, v := range d {
		if l, ok := strings.CutPrefix(k, "cpu_s_"); ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", l, v))
		}
	}
	if len(parts) > 0 {
		slices.Sort(parts)
		fmt.Fprintf(os.Stderr, "  CPU seconds: %s\n", strings.Join(parts, ", "))
	}
}

func printLoad(m *machineLoad) {
	if m != nil {
		fmt.Fprintf(os.Stderr, " [machine: CPU busy %.0f%%, iowait %.0f%%, load before %.1f]", 100*m.CPUBusy, 100*m.IOWait, m.Load1)
	}
	fmt.Fprintln(os.Stderr)
}
