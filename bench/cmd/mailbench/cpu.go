package main

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// CPU accounting for the scale-out benchmark (bench/scaleout.sh): which
// process trees (PostgreSQL, the Letterbox nodes) used how much CPU during
// exactly the measured interval, next to the load generator itself and the
// whole machine. Times come from /proc/PID/stat (utime, stime, and cutime,
// cstime of children that exited and were reaped), in clock ticks of
// USER_HZ, which Linux fixes at 100 for user space.

const userHZ = 100

// cpuWatch names the process trees to account for: -cpu-watch
// "postgres=1234,nodes=2345,nodes=3456" (a label may repeat; its trees are
// summed).
type cpuWatch struct {
	labels []string // in first-seen order
	roots  map[string][]int
}

func parseCPUWatch(s string) (*cpuWatch, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	w := &cpuWatch{roots: map[string][]int{}}
	for _, f := range strings.Split(s, ",") {
		label, p, ok := strings.Cut(strings.TrimSpace(f), "=")
		pid, err := strconv.Atoi(p)
		if !ok || err != nil || pid < 1 || label == "" || strings.ContainsAny(label, " \t") {
			return nil, fmt.Errorf("-cpu-watch: want LABEL=PID[,LABEL=PID...], got %q", f)
		}
		if _, seen := w.roots[label]; !seen {
			w.labels = append(w.labels, label)
		}
		w.roots[label] = append(w.roots[label], pid)
	}
	return w, nil
}

// procCPU returns utime+stime+cutime+cstime of one process, in ticks.
func procCPU(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime, stime, cutime and cstime (fields 14-17) of a
// /proc/PID/stat line; comm (field 2) may contain spaces and parentheses.
func parseStatCPU(b []byte) (uint64, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, false
	}
	var sum uint64
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64) // cutime, cstime are signed
		if err != nil {
			return 0, false
		}
		if n > 0 {
			sum += uint64(n)
		}
	}
	return sum, true
}

// cpuSnap is one reading of every watched tree, the load generator and the
// machine.
type cpuSnap struct {
	trees   map[string]uint64 // label -> ticks
	self    uint64
	machine cpuSample
	ok      bool
}

// treeCPU sums procCPU over root and its descendants. A process that exits
// between two snapshots moves its time into its parent's cutime/cstime
// once reaped, so the sum stays continuous (PostgreSQL's postmaster reaps
// its backends; a Letterbox node has no children).
func treeCPU(root int) uint64 {
	var sum uint64
	for _, pid := range procTree(root) {
		if t, ok := procCPU(pid); ok {
			sum += t
		}
	}
	return sum
}

func (w *cpuWatch) snap() cpuSnap {
	s := cpuSnap{trees: map[string]uint64{}}
	if w == nil {
		return s
	}
	for _, l := range w.labels {
		for _, pid := range w.roots[l] {
			s.trees[l] += treeCPU(pid)
		}
	}
	s.self, _ = procCPU(os.Getpid())
	s.machine, s.ok = readCPU()
	return s
}

// since returns the CPU seconds used since start, as result details:
// cpu_s_LABEL for each watched label, cpu_s_mailbench for this process,
// cpu_s_machine for all busy CPU time of the machine (not idle, not iowait)
// and cpu_s_other for the rest of it (other programs, the kernel's work not
// charged to a process).
func (w *cpuWatch) since(start cpuSnap, into map[string]float64) {
	if w == nil || !start.ok {
		return
	}
	end := w.snap()
	if !end.ok || end.machine.total <= start.machine.total {
		return
	}
	sec := func(ticks uint64) float64 { return round3(float64(ticks) / userHZ) }
	delta := func(a, b uint64) uint64 {
		if b > a {
			return b - a
		}
		return 0
	}
	busyStart := start.machine.total - start.machine.idle - start.machine.iowait
	busyEnd := end.machine.total - end.machine.idle - end.machine.iowait
	machine := delta(busyStart, busyEnd)
	accounted := delta(start.self, end.self)
	into["cpu_s_mailbench"] = sec(accounted)
	labels := append([]string(nil), w.labels...)
	sort.Strings(labels)
	for _, l := range labels {
		d := delta(start.trees[l], end.trees[l])
		into["cpu_s_"+l] = sec(d)
		accounted += d
	}
	into["cpu_s_machine"] = sec(machine)
	into["cpu_s_other"] = sec(delta(accounted, machine))
	into["cpus"] = float64(len(readCPUs()))
}

// readCPUs lists the per-CPU lines of /proc/stat (cpu0, cpu1, ...).
func readCPUs() []string {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			out = append(out, l)
		}
	}
	return out
}
