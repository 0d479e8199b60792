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
		k := fmt.Sprint(r.Server, r.Kind, r.Concurrency)
		runs[k]++
		maxRuns = max(maxRuns, runs[k])
	}
	if maxRuns > 1 {
		fmt.Printf("(each column shows the fastest of up to %d runs; all runs are in the raw results)\n", maxRuns)
	}
	for _, r := range results {
		if r.Failures > 0 {
			fmt.Printf("WARNING: %s %s c=%d had %d failure(s): %v\n", r.Server, r.Kind, r.Concurrency, r.Failures, r.Errors)
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

func buildRows(results []Result, a, b string) []Row {
	type key struct {
		kind string
		conc int
	}
	// With repeated runs, the row shows the fastest run of each (server,
	// kind, concurrency): on a shared machine, background load only ever
	// slows a run down. Failed runs only count when every run failed.
	all := map[string]map[key][]Result{a: {}, b: {}}
	var keys []key
	for _, r := range results {
		if all[r.Server] == nil {
			continue
		}
		k := key{r.Kind, r.Concurrency}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
		all[r.Server][k] = append(all[r.Server][k], r)
	}
	last := map[string]map[key]Result{a: {}, b: {}}
	for srv, m := range all {
		for k, rs := range m {
			last[srv][k] = bestResult(rs)
		}
	}
	slices.SortStableFunc(keys, func(x, y key) int {
		if x.kind != y.kind {
			return strings.Compare(x.kind, y.kind)
		}
		return x.conc - y.conc
	})
	var rows []Row
	add := func(metric, better string, get func(Result) (float64, bool), k key) {
		row := Row{Metric: metric, Better: better}
		if r, ok := last[a][k]; ok {
			if v, ok := get(r); ok {
				row.A = &v
			}
		}
		if r, ok := last[b][k]; ok {
			if v, ok := get(r); ok {
				row.B = &v
			}
		}
		if row.A != nil && row.B != nil && *row.A != 0 {
			ratio := round3(*row.B / *row.A)
			row.Ratio = &ratio
		}
		rows = append(rows, row)
	}
	lat := func(f func(*Percentiles) float64) func(Result) (float64, bool) {
		return func(r Result) (float64, bool) {
			if r.LatencyMs == nil {
				return 0, false
			}
			return f(r.LatencyMs), true
		}
	}
	for _, k := range keys {
		switch k.kind {
		case "lmtp":
			p := fmt.Sprintf("LMTP %2d conn", k.conc)
			add(p+" deliveries/s", "higher", func(r Result) (float64, bool) { return r.PerSec, true }, k)
			add(p+" MiB/s", "higher", func(r Result) (float64, bool) { return r.MiBPerSec, true }, k)
			add(p+" latency p50 ms", "lower", lat(func(p *Percentiles) float64 { return p.P50 }), k)
			add(p+" latency p99 ms", "lower", lat(func(p *Percentiles) float64 { return p.P99 }), k)
		case "pop3":
			p := fmt.Sprintf("POP3 %2d session", k.conc)
			add(p+" MiB/s", "higher", func(r Result) (float64, bool) { return r.MiBPerSec, true }, k)
			add(p+" messages/s", "higher", func(r Result) (float64, bool) { return r.PerSec, true }, k)
			add(p+" RETR p99 ms", "lower", lat(func(p *Percentiles) float64 { return p.P99 }), k)
		}
	}
	return rows
}

func rate(r Result) float64 {
	if r.Kind == "pop3" {
		return r.MiBPerSec
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
		case rate(x) < rate(y):
			return -1
		case rate(x) > rate(y):
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
