package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// cmdFreePort prints n distinct free TCP ports on the loopback address.
// They are free when printed; a later bind can still race with another
// program, which on a bench machine is unlikely.
func cmdFreePort(args []string) error {
	fs := flag.NewFlagSet("freeport", flag.ExitOnError)
	n := fs.Int("n", 1, "number of ports")
	host := fs.String("host", "127.0.0.1", "address to probe")
	fs.Parse(args)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []string
	for i := 0; i < *n; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(*host, "0"))
		if err != nil {
			return err
		}
		ls = append(ls, l)
		_, p, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, p)
	}
	fmt.Println(strings.Join(ports, " "))
	return nil
}

// cmdWait waits until every address accepts a connection and sends a
// greeting line, then closes the connections (a server must tolerate a
// client that leaves without QUIT). It fails after -timeout.
func cmdWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	addrs := fs.String("addr", "", "comma-separated host:port list")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	pid := fs.Int("pid", 0, "fail early when this process id is gone (the server died)")
	fs.Parse(args)
	if *addrs == "" {
		return fmt.Errorf("-addr is required")
	}
	deadline := time.Now().Add(*timeout)
	for _, a := range strings.Split(*addrs, ",") {
		var last error
		for {
			if *pid > 0 {
				if _, err := os.Stat(fmt.Sprintf("/proc/%d", *pid)); err != nil {
					return fmt.Errorf("process %d exited while waiting for %s", *pid, a)
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not ready after %v: %v", a, *timeout, last)
			}
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				var line string
				line, err = bufio.NewReader(c).ReadString('\n')
				c.Close()
				if err == nil && (strings.HasPrefix(line, "220") || strings.HasPrefix(line, "+OK") || strings.HasPrefix(line, "* OK")) {
					break
				}
				if err == nil {
					err = fmt.Errorf("unexpected greeting %q", strings.TrimSpace(line))
				}
			}
			last = err
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// cpuSample is a snapshot of the machine-wide CPU counters in /proc/stat.
type cpuSample struct{ total, idle, iowait uint64 }

func readCPU() (cpuSample, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuSample{}, false
	}
	var s cpuSample
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i >= 8 { // guest time is already counted in user
			break
		}
		s.total += n
		switch i {
		case 3:
			s.idle = n
		case 4:
			s.iowait = n
		}
	}
	return s, true
}

// machineLoad describes how busy the whole machine was during a measurement:
// the benchmark client, the server and anything else running.
type machineLoad struct {
	Load1   float64 `json:"load1_before"` // 1-minute load average at the start
	CPUBusy float64 `json:"cpu_busy"`     // share of all CPUs busy (not idle, not iowait)
	IOWait  float64 `json:"cpu_iowait"`   // share of all CPUs idle waiting for I/O
}

type loadMeter struct {
	start cpuSample
	ok    bool
	load1 float64
}

func startLoad() *loadMeter {
	m := &loadMeter{}
	m.start, m.ok = readCPU()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return m
}

func (m *loadMeter) stop() *machineLoad {
	end, ok := readCPU()
	if !m.ok || !ok || end.total <= m.start.total {
		return nil
	}
	t := float64(end.total - m.start.total)
	idle := float64(end.idle - m.start.idle)
	iow := float64(end.iowait - m.start.iowait)
	return &machineLoad{Load1: m.load1, CPUBusy: round3((t - idle - iow) / t), IOWait: round3(iow / t)}
}

// splitAddrs parses an -addr value: one host:port, or several separated by
// commas (several server nodes behind one imaginary load balancer).
func splitAddrs(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("bad address %q in %q: %v", a, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// addrFor is the address client (connection) i uses: round-robin over
// addrs, as a TCP load balancer spreads new connections over its backends.
func addrFor(addrs []string, i int) string { return addrs[i%len(addrs)] }
