package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// mailbench scalereport: the table of bench/scaleout.sh. Columns are
// configurations (result labels: the embedded store, then PostgreSQL with
// 1, 2, 3 nodes), rows the LMTP and IMAP steps with their CPU split, and
// every column's throughput and latency rows carry the ratio against the
// baseline column.

// ScaleRow is one line of the scale-out table; Values and Ratios follow the
// summary's "configs" order.
type ScaleRow struct {
	Metric string     `json:"metric"`
	Better string     `json:"better,omitempty"` // "higher", "lower", or empty: no ratio
	Values []*float64 `json:"values"`
	Ratios []*float64 `json:"ratios,omitempty"` // value / baseline value
}

func cmdScaleReport(args []string) error {
	fs := flag.NewFlagSet("scalereport", flag.ExitOnError)
	in := fs.String("in", "", "JSON result lines (mailbench lmtp/imap with -cpu-watch)")
	extra := fs.String("extra", "", "JSON lines kept verbatim in the summary's \"extra\" (pg_stat_statements tops, profiles)")
	out := fs.String("out", "", "write the summary JSON here")
	md := fs.String("markdown", "", "also write the table as Markdown here")
	configList := fs.String("configs", "", "comma-separated result labels, in column order (default: order of appearance)")
	baseline := fs.String("baseline", "", "the label the ratios are against (default: the first column)")
	info := kvFlag{}
	fs.Var(info, "info", "KEY=VALUE recorded in the summary (repeatable)")
	attach := kvFlag{}
	fs.Var(attach, "attach", "NAME=FILE: a text file (a profile report) kept in the summary's \"attachments\" as a list of lines (repeatable)")
	fs.Parse(args)
	if *in == "" {
		return fmt.Errorf("-in is required")
	}
	attachments := map[string][]string{}
	for name, file := range attach {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		for i, l := range lines {
			lines[i] = strings.TrimRight(l, " \t")
		}
		attachments[name] = lines
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	results, err := readResults(f)
	f.Close()
	if err != nil {
		return err
	}
	var configs []string
	if *configList != "" {
		configs = strings.Split(*configList, ",")
	} else {
		for _, r := range results {
			if !slices.Contains(configs, r.Server) {
				configs = append(configs, r.Server)
			}
		}
	}
	if len(configs) == 0 {
		return fmt.Errorf("no results in %s", *in)
	}
	base := *baseline
	if base == "" {
		base = configs[0]
	}
	rows := buildScaleRows(results, configs, base)
	var sb strings.Builder
	printScaleTable(&sb, rows, configs)
	fmt.Print(sb.String())
	for _, r := range results {
		if r.Failures > 0 {
			fmt.Printf("WARNING: %s %s %s c=%d had %d failure(s): %v\n", r.Server, r.Kind, r.Op, r.Concurrency, r.Failures, r.Errors)
		}
	}
	if *md != "" {
		var m strings.Builder
		printScaleMarkdown(&m, rows, configs)
		if err := os.WriteFile(*md, []byte(m.String()), 0o644); err != nil {
			return err
		}
	}
	if *out != "" {
		var extras []json.RawMessage
		if *extra != "" {
			b, err := os.ReadFile(*extra)
			if err != nil && !os.IsNotExist(err) {
				return err
			}
			for _, l := range strings.Split(string(b), "\n") {
				l = strings.TrimSpace(l)
				if l == "" {
					continue
				}
				if !json.Valid([]byte(l)) {
					return fmt.Errorf("%s: not a JSON line: %.200s", *extra, l)
				}
				extras = append(extras, json.RawMessage(l))
			}
		}
		summary := map[string]any{
			"date":        time.Now().UTC().Format(time.RFC3339),
			"info":        info,
			"machine":     machineInfo(),
			"configs":     configs,
			"baseline":    base,
			"table":       rows,
			"extra":       extras,
			"attachments": attachments,
			"results":     results,
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

// scaleKinds are the result kinds in the table (lmtp-fill is not).
var scaleKinds = []string{"lmtp", "imap"}

func buildScaleRows(results []Result, configs []string, base string) []ScaleRow {
	all := map[rowKey]map[string][]Result{}
	var keys []rowKey
	for _, r := range results {
		if !slices.Contains(scaleKinds, r.Kind) || !slices.Contains(configs, r.Server) {
			continue
		}
		k := rowKey{r.Kind, r.Op, r.Concurrency}
		if all[k] == nil {
			all[k] = map[string][]Result{}
			keys = append(keys, k)
		}
		all[k][r.Server] = append(all[k][r.Server], r)
	}
	slices.SortStableFunc(keys, func(x, y rowKey) int {
		if x.kind != y.kind {
			return orderOf(scaleKinds, x.kind) - orderOf(scaleKinds, y.kind)
		}
		if x.op != y.op {
			return orderOf(imapOps, x.op) - orderOf(imapOps, y.op)
		}
		return x.conc - y.conc
	})
	bi := slices.Index(configs, base)
	var rows []ScaleRow
	for _, k := range keys {
		best := make([]*Result, len(configs))
		for i, c := range configs {
			if rs := all[k][c]; len(rs) > 0 {
				b := bestResult(rs)
				best[i] = &b
			}
		}
		add := func(metric, better string, get func(r *Result) (float64, bool)) {
			row := ScaleRow{Metric: metric, Better: better, Values: make([]*float64, len(configs))}
			found := false
			for i, r := range best {
				if r == nil {
					continue
				}
				if v, ok := get(r); ok {
					v = round3(v)
					row.Values[i] = &v
					found = true
				}
			}
			if !found {
				return
			}
			if better != "" && bi >= 0 && row.Values[bi] != nil && *row.Values[bi] != 0 {
				row.Ratios = make([]*float64, len(configs))
				for i, v := range row.Values {
					if v != nil {
						q := round3(*v / *row.Values[bi])
						row.Ratios[i] = &q
					}
				}
			}
			rows = append(rows, row)
		}
		var p, unit string
		switch k.kind {
		case "lmtp":
			p, unit = fmt.Sprintf("LMTP %d conn", k.conc), "delivery"
			add(p+" deliveries/s", "higher", func(r *Result) (float64, bool) { return r.PerSec, true })
			add(p+" latency p50 ms", "lower", func(r *Result) (float64, bool) { return pct(r, func(p *Percentiles) float64 { return p.P50 }) })
			add(p+" latency p99 ms", "lower", func(r *Result) (float64, bool) { return pct(r, func(p *Percentiles) float64 { return p.P99 }) })
		case "imap":
			label := imapOpLabel[k.op]
			if label == "" {
				label = k.op
			}
			p, unit = fmt.Sprintf("IMAP %s, %d client", label, k.conc), "op"
			if k.conc > 1 {
				p += "s"
			}
			if k.op == "mixed" {
				unit = "cycle"
			}
			add(p+": ops/s", "higher", func(r *Result) (float64, bool) { return r.PerSec, true })
			add(p+": p50 ms", "lower", func(r *Result) (float64, bool) { return pct(r, func(p *Percentiles) float64 { return p.P50 }) })
			add(p+": p99 ms", "lower", func(r *Result) (float64, bool) { return pct(r, func(p *Percentiles) float64 { return p.P99 }) })
		}
		// The CPU split: CPU milliseconds per delivery (per IMAP op) of
		// each process group, and each group's share of all CPUs.
		count := func(r *Result) float64 {
			if r.Kind == "lmtp" {
				return float64(r.Deliveries)
			}
			return float64(r.Ops)
		}
		for _, g := range []string{"nodes", "postgres", "mailbench", "other"} {
			add(fmt.Sprintf("%s: CPU ms per %s, %s", p, unit, g), "", func(r *Result) (float64, bool) {
				v, ok := r.Details["cpu_s_"+g]
				if !ok || count(r) == 0 {
					return 0, false
				}
				return 1000 * v / count(r), true
			})
		}
		for _, g := range []string{"nodes", "postgres", "mailbench", "other", "machine"} {
			name := g
			if g == "machine" {
				name = "all (machine busy)"
			}
			add(fmt.Sprintf("%s: %% of all CPUs, %s", p, name), "", func(r *Result) (float64, bool) {
				v, ok := r.Details["cpu_s_"+g]
				n := r.Details["cpus"]
				if !ok || n == 0 || r.Seconds == 0 {
					return 0, false
				}
				return 100 * v / (n * r.Seconds), true
			})
		}
		add(p+": load average before", "", func(r *Result) (float64, bool) {
			if r.Machine == nil {
				return 0, false
			}
			return r.Machine.Load1, true
		})
	}
	return rows
}

func pct(r *Result, f func(*Percentiles) float64) (float64, bool) {
	if r.LatencyMs == nil {
		return 0, false
	}
	return f(r.LatencyMs), true
}

func scaleCell(r ScaleRow, i int) string {
	s := fmtNum(r.Values[i])
	if r.Ratios != nil && r.Ratios[i] != nil && r.Values[i] != nil {
		s += fmt.Sprintf(" (%.2f)", *r.Ratios[i])
	}
	return s
}

func printScaleTable(w io.Writer, rows []ScaleRow, configs []string) {
	mw := len("metric")
	for _, r := range rows {
		mw = max(mw, len(r.Metric))
	}
	cw := 14
	for _, c := range configs {
		cw = max(cw, len(c))
	}
	fmt.Fprintf(w, "%-*s", mw, "metric")
	for _, c := range configs {
		fmt.Fprintf(w, "  %*s", cw, c)
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s", mw, r.Metric)
		for i := range configs {
			fmt.Fprintf(w, "  %*s", cw, scaleCell(r, i))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "(in parentheses: the ratio against the first column's configuration)")
}

func printScaleMarkdown(w io.Writer, rows []ScaleRow, configs []string) {
	fmt.Fprintf(w, "| metric | %s |\n|---|%s\n", strings.Join(configs, " | "), strings.Repeat("--:|", len(configs)))
	for _, r := range rows {
		cells := make([]string, len(configs))
		for i := range configs {
			cells[i] = scaleCell(r, i)
		}
		fmt.Fprintf(w, "| %s | %s |\n", r.Metric, strings.Join(cells, " | "))
	}
}
