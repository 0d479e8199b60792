package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Row is one line of the comparison table.
type Row struct {
	Metric string   `json:"metric"`
	A      *float64 `json:"a"` // baseline (Dovecot)
	B      *float64 `json:"b"` // candidate (Letterbox)
	Ratio  *float64 `json:"ratio"`
	Better string   `json:"better"` // "higher" or "lower"
}

type kvFlag map[string]string

func (k kvFlag) String() string { return "" }
func (k kvFlag) Set(s string) error {
	key, val, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	k[key] = val
	return nil
}

func cmdReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "", "JSON result lines (from mailbench lmtp/pop3)")
	out := fs.String("out", "", "write the summary JSON here")
	md := fs.String("markdown", "", "also write the table as Markdown here")
	a := fs.String("a", "dovecot", "baseline server label")
	b := fs.String("b", "letterbox", "candidate server label")
	info := kvFlag{}
	fs.Var(info, "info", "KEY=VALUE recorded in the summary (repeatable)")
	fs.Parse(args)
	if *in == "" {
		return fmt.Errorf("-in is required")
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	results, err := readResults(f)
	if err != nil {
		return err
	}
	rows := buildRows(results, *a, *b)
	var sb strings.Builder
	printTable(&sb, rows, *a, *b)
	fmt.Print(sb.String())
	runs := map[string]int{}
	maxRuns := 0
	for _, r := range results {
		if !slices.Contains(kindOrder, r.Kind) {
			continue // lmtp-fill: not in the table
		}
		k := fmt.Sprint(r.Server, r.Kind, r.Op, r.Concurrency)
		runs[k]++
		maxRuns = max(maxRuns, runs[k])
	}
	if maxRuns > 1 {
		fmt.Printf("(each column shows the best of up to %d runs; all runs are in the raw results)\n", maxRuns)
	}
	for _, r := range results {
		if r.Failures > 0 {
			fmt.Printf("WARNING: %s %s %s c=%d had %d failure(s): %v\n", r.Server, r.Kind, r.Op, r.Concurrency, r.Failures, r.Errors)
		}
	}
	if *md != "" {
		var m strings.Builder
		printMarkdown(&m, rows, *a, *b)
		if err := os.WriteFile(*md, []byte(m.String()), 0o644); err != nil {
			return err
		}
	}
	if *out != "" {
		summary := map[string]any{
			"date":    time.Now().UTC().Format(time.RFC3339),
			"info":    info,
			"machine": machineInfo(),
			"a":       *a,
			"b":       *b,
			"table":   rows,
			"results": results,
		}
		data, err := json.MarshalIndent(summary, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func readResults(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var res Result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, fmt.Errorf("bad result line %q: %v", line, err)
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// kindOrder is the order of the table's sections.
var kindOrder = []string{"lmtp", "pop3", "imap", "imap-idle", "imap-big"}

// imapOpLabel names the IMAP steps in the table.
var imapOpLabel = map[string]string{
	"select":   "SELECT",
	"uidfetch": "UID FETCH 1:* (UID FLAGS)",
	"envelope": "FETCH 1:* (ENVELOPE BODYSTRUCTURE RFC822.SIZE)",
	"body":     "UID FETCH BODY.PEEK[] random",
	"store":    "UID STORE +/-FLAGS random",
	"search":   "UID SEARCH header text",
	"mixed":    "mixed client profile (cycles)",
}

type rowKey struct {
	kind string
	op   string
	conc int
}

func orderOf(list []string, s string) int {
	if i := slices.Index(list, s); i >= 0 {
		return i
	}
	return len(list)
}

func detail(name string) func(Result) (float64, bool) {
	return func(r Result) (float64, bool) {
		v, ok := r.Details[name]
		return v, ok
	}
}

func buildRows(results []Result, a, b string) []Row {
	// With repeated runs, the row shows the best run of each (server, kind,
	// op, concurrency): on a shared machine, background load only ever
	// slows a run down. Failed runs only count when every run failed.
	all := map[string]map[rowKey][]Result{a: {}, b: {}}
	var keys []rowKey
	for _, r := range results {
		if all[r.Server] == nil || !slices.Contains(kindOrder, r.Kind) {
			continue
		}
		k := rowKey{r.Kind, r.Op, r.Concurrency}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
		all[r.Server][k] = append(all[r.Server][k], r)
	}
	best := map[string]map[rowKey]Result{a: {}, b: {}}
	for srv, m := range all {
		for k, rs := range m {
			best[srv][k] = bestResult(rs)
		}
	}
	slices.SortStableFunc(keys, func(x, y rowKey) int {
		if x.kind != y.kind {
			return orderOf(kindOrder, x.kind) - orderOf(kindOrder, y.kind)
		}
		if x.op != y.op {
			if d := orderOf(imapOps, x.op) - orderOf(imapOps, y.op); d != 0 {
				return d
			}
			return strings.Compare(x.op, y.op)
		}
		return x.conc - y.conc
	})
	var rows []Row
	// addAB compares a's result under ka with b's under kb.
	addAB := func(metric, better string, get func(Result) (float64, bool), ka, kb rowKey) {
		row := Row{Metric: metric, Better: better}
		if r, ok := best[a][ka]; ok {
			if v, ok := get(r); ok {
				row.A = &v
			}
		}
		if r, ok := best[b][kb]; ok {
			if v, ok := get(r); ok {
				row.B = &v
			}
		}
		if row.A == nil && row.B == nil {
			return
		}
		if row.A != nil && row.B != nil && *row.A != 0 {
			ratio := round3(*row.B / *row.A)
			row.Ratio = &ratio
		}
		rows = append(rows, row)
	}
	add := func(metric, better string, get func(Result) (float64, bool), k rowKey) {
		addAB(metric, better, get, k, k)
	}
	lat := func(f func(*Percentiles) float64) func(Result) (float64, bool) {
		return func(r Result) (float64, bool) {
			if r.LatencyMs == nil {
				return 0, false
			}
			return f(r.LatencyMs), true
		}
	}
	perSec := func(r Result) (float64, bool) { return r.PerSec, true }
	loginDone := false
	for _, k := range keys {
		switch k.kind {
		case "lmtp":
			p := fmt.Sprintf("LMTP %2d conn", k.conc)
			add(p+" deliveries/s", "higher", perSec, k)
			add(p+" MiB/s", "higher", func(r Result) (float64, bool) { return r.MiBPerSec, true }, k)
			add(p+" latency p50 ms", "lower", lat(func(p *Percentiles) float64 { return p.P50 }), k)
			add(p+" latency p99 ms", "lower", lat(func(p *Percentiles) float64 { return p.P99 }), k)
		case "pop3":
			p := fmt.Sprintf("POP3 %2d session", k.conc)
			add(p+" MiB/s", "higher", func(r Result) (float64, bool) { return r.MiBPerSec, true }, k)
			add(p+" messages/s", "higher", perSec, k)
			add(p+" RETR p99 ms", "lower", lat(func(p *Percentiles) float64 { return p.P99 }), k)
		case "imap":
			if !loginDone {
				loginDone = true
				add("IMAP login ms (mean; argon2id vs {PLAIN})", "lower", func(r Result) (float64, bool) { return r.LoginMs, r.LoginMs > 0 }, k)
			}
			label := imapOpLabel[k.op]
			if label == "" {
				label = k.op
			}
			p := fmt.Sprintf("IMAP %s, %d client", label, k.conc)
			if k.conc > 1 {
				p += "s"
			}
			add(p+": ops/s", "higher", perSec, k)
			add(p+": p50 ms", "lower", lat(func(p *Percentiles) float64 { return p.P50 }), k)
			add(p+": p99 ms", "lower", lat(func(p *Percentiles) float64 { return p.P99 }), k)
			if k.conc == 1 && (k.op == "envelope" || k.op == "search") {
				add(p+": first op ms", "lower", detail("first_op_ms"), k)
			}
		case "imap-idle":
			p := fmt.Sprintf("IMAP %d idle", k.conc)
			kb := k
			if k.op != "" {
				kb.op = ""
				p += " (" + a + " " + k.op + ")"
			}
			addAB(p+": KiB per connection (PSS)", "lower", detail("pss_kib_per_conn"), k, kb)
			addAB(p+": MiB total (PSS)", "lower", func(r Result) (float64, bool) {
				v, ok := r.Details["pss_idle_kib"]
				return round3(v / 1024), ok
			}, k, kb)
			addAB(p+": EXISTS p50 ms", "lower", lat(func(p *Percentiles) float64 { return p.P50 }), k, kb)
			addAB(p+": EXISTS to the last ms", "lower", lat(func(p *Percentiles) float64 { return p.Max }), k, kb)
			addAB(p+": s to open all (login+SELECT+IDLE)", "lower", func(r Result) (float64, bool) { return r.Seconds, true }, k, kb)
		case "imap-big":
			n := 0
			if r, ok := best[a][k]; ok {
				n = r.Messages
			} else if r, ok := best[b][k]; ok {
				n = r.Messages
			}
			p := fmt.Sprintf("IMAP %dk msgs", n/1000)
			for _, round := range []string{"1", "2"} {
				nth := map[string]string{"1": "1st", "2": "2nd"}[round]
				add(fmt.Sprintf("%s: login+SELECT+UID FETCH flags ms, %s", p, nth), "lower", detail("uidfetch_login_select_fetch_ms_"+round), k)
				add(fmt.Sprintf("%s: SELECT+UID FETCH flags ms, %s", p, nth), "lower", detail("uidfetch_select_fetch_ms_"+round), k)
				add(fmt.Sprintf("%s: SELECT+FETCH envelope/bodystructure ms, %s", p, nth), "lower", detail("envelope_select_fetch_ms_"+round), k)
			}
		}
	}
	return rows
}

// goodness orders repeated runs of one cell: higher is better.
func goodness(r Result) float64 {
	switch r.Kind {
	case "pop3":
		return r.MiBPerSec
	case "imap-idle":
		return -r.Details["pss_kib_per_conn"]
	case "imap-big":
		return -(r.Details["uidfetch_select_fetch_ms_1"] + r.Details["envelope_select_fetch_ms_1"])
	}
	return r.PerSec
}

func bestResult(rs []Result) Result {
	ok := slices.DeleteFunc(slices.Clone(rs), func(r Result) bool { return r.Failures > 0 })
	if len(ok) == 0 {
		ok = rs
	}
	return slices.MaxFunc(ok, func(x, y Result) int {
		switch {
		case goodness(x) < goodness(y):
			return -1
		case goodness(x) > goodness(y):
			return 1
		}
		return 0
	})
}

func fmtNum(v *float64) string {
	if v == nil {
		return "-"
	}
	switch {
	case *v >= 100:
		return fmt.Sprintf("%.0f", *v)
	case *v >= 10:
		return fmt.Sprintf("%.1f", *v)
	default:
		return fmt.Sprintf("%.2f", *v)
	}
}

func fmtRatio(r Row) string {
	if r.Ratio == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *r.Ratio)
}

func printTable(w io.Writer, rows []Row, a, b string) {
	mw := len("metric")
	for _, r := range rows {
		mw = max(mw, len(r.Metric))
	}
	ratio := fmt.Sprintf("ratio %s/%s", b, a)
	cw := max(len(a), len(b), 9)
	fmt.Fprintf(w, "%-*s  %*s  %*s  %*s  %s\n", mw, "metric", cw, a, cw, b, len(ratio), ratio, "better")
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s  %*s  %*s  %*s  %s\n", mw, r.Metric, cw, fmtNum(r.A), cw, fmtNum(r.B), len(ratio), fmtRatio(r), r.Better)
	}
}

func printMarkdown(w io.Writer, rows []Row, a, b string) {
	fmt.Fprintf(w, "| metric | %s | %s | ratio %s/%s | better |\n|---|--:|--:|--:|---|\n", a, b, b, a)
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", strings.Join(strings.Fields(r.Metric), " "), fmtNum(r.A), fmtNum(r.B), fmtRatio(r), r.Better)
	}
}

func machineInfo() map[string]any {
	m := map[string]any{"goos": runtime.GOOS, "goarch": runtime.GOARCH, "ncpu": runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "MemTotal:") {
				m["mem"] = strings.TrimSpace(strings.TrimPrefix(l, "MemTotal:"))
			}
		}
	}
	return m
}
