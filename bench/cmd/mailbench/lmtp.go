package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LMTP load generator (RFC 2033). Each of C connections takes the next
// message of the mix, runs MAIL FROM / RCPT TO (one per recipient) / DATA
// and reads one reply per accepted recipient. Commands are not pipelined:
// this measures the server's per-transaction cost, as Postfix's lmtp client
// without pipelining would see it. Connections are reused across messages.

type lmtpOptions struct {
	// Addr is one server address, or several separated by commas:
	// connection i then goes to the (i mod n)-th, like a TCP load balancer
	// spreading connections over server nodes.
	Addr      string
	Conns     int
	Sender    string
	LHLO      string
	OpTimeout time.Duration
	Progress  time.Duration
	// CPU, when set, accounts the CPU time of the watched processes over
	// the measured interval (lmtpStats.CPU).
	CPU *cpuWatch
}

type lmtpStats struct {
	Messages   int   // transactions completed with every recipient 250
	Deliveries int   // per-recipient 250 replies after DATA
	Failures   int   // recipients not delivered (any non-250, or lost to an I/O error)
	Octets     int64 // message octets x delivered recipients
	SentOctets int64 // message octets sent (once per message)
	Latencies  []time.Duration
	Errors     []string
	Elapsed    time.Duration
	// PerAddr counts the deliveries made through each address (index as
	// in the -addr list); connections take messages from one shared queue,
	// so a faster node gets more.
	PerAddr []int
	CPU     map[string]float64 // cpuWatch.since, when opt.CPU is set
}

// replyError is a well-formed but unwanted server reply.
type replyError struct {
	cmd  string
	code int
	text string
}

func (e *replyError) Error() string { return fmt.Sprintf("%s: %d %s", e.cmd, e.code, e.text) }

// readReply reads one SMTP/LMTP reply, joining continuation lines.
func readReply(br *bufio.Reader) (int, string, error) {
	var text []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err == io.EOF && line == "" {
				return 0, "", io.ErrUnexpectedEOF
			}
			return 0, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, "", fmt.Errorf("malformed reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, "", fmt.Errorf("malformed reply line %q", line)
		}
		if len(line) > 4 {
			text = append(text, line[4:])
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(text, " / "), nil
		}
		if line[3] != '-' {
			return 0, "", fmt.Errorf("malformed reply line %q", line)
		}
	}
}

type lmtpConn struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	opt  *lmtpOptions
}

func (lc *lmtpConn) deadline() { lc.c.SetDeadline(time.Now().Add(lc.opt.OpTimeout)) }

// cmd sends one command line and reads its reply.
func (lc *lmtpConn) cmd(line string) (int, string, error) {
	lc.deadline()
	if _, err := lc.bw.WriteString(line + "\r\n"); err != nil {
		return 0, "", err
	}
	if err := lc.bw.Flush(); err != nil {
		return 0, "", err
	}
	return readReply(lc.br)
}

func dialLMTP(opt *lmtpOptions, addr string) (*lmtpConn, error) {
	c, err := net.DialTimeout("tcp", addr, opt.OpTimeout)
	if err != nil {
		return nil, err
	}
	lc := &lmtpConn{addr: addr, c: c, br: bufio.NewReaderSize(c, 16<<10), bw: bufio.NewWriterSize(c, 16<<10), opt: opt}
	lc.deadline()
	code, text, err := readReply(lc.br)
	if err == nil && code != 220 {
		err = &replyError{"greeting", code, text}
	}
	if err == nil {
		code, text, err = lc.cmd("LHLO " + opt.LHLO)
		if err == nil && code != 250 {
			err = &replyError{"LHLO", code, text}
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return lc, nil
}

func (lc *lmtpConn) quit() {
	lc.cmd("QUIT")
	lc.c.Close()
}

// deliver runs one transaction. It returns the recipients accepted with 250
// after DATA, the failed ones (with reasons), and an I/O error that makes the
// connection unusable.
func (lc *lmtpConn) deliver(m *Message) (ok int, failed []string, err error) {
	code, text, err := lc.cmd("MAIL FROM:<" + lc.opt.Sender + ">")
	if err != nil {
		return 0, nil, err
	}
	if code != 250 {
		failed = append(failed, (&replyError{"MAIL FROM", code, text}).Error())
		_, _, err = lc.cmd("RSET")
		return 0, failed, err
	}
	accepted := 0
	for _, rc := range m.Rcpts {
		code, text, err := lc.cmd("RCPT TO:<" + rc + ">")
		if err != nil {
			return 0, failed, err
		}
		if code != 250 {
			failed = append(failed, (&replyError{"RCPT TO:<" + rc + ">", code, text}).Error())
			continue
		}
		accepted++
	}
	if accepted == 0 {
		_, _, err = lc.cmd("RSET")
		return 0, failed, err
	}
	code, text, err = lc.cmd("DATA")
	if err != nil {
		return 0, failed, err
	}
	if code != 354 {
		failed = append(failed, (&replyError{"DATA", code, text}).Error())
		_, _, err = lc.cmd("RSET")
		return 0, failed, err
	}
	// Large messages take a while on a busy machine: scale the deadline.
	lc.c.SetDeadline(time.Now().Add(lc.opt.OpTimeout + time.Duration(len(m.Wire)>>20)*time.Second))
	if _, err := lc.c.Write(m.Wire); err != nil {
		return 0, failed, err
	}
	for k := 0; k < accepted; k++ {
		code, text, err := readReply(lc.br)
		if err != nil {
			return ok, failed, err
		}
		if code == 250 {
			ok++
		} else {
			failed = append(failed, (&replyError{fmt.Sprintf("DATA reply %d/%d", k+1, accepted), code, text}).Error())
		}
	}
	return ok, failed, nil
}

func runLMTP(ctx context.Context, opt lmtpOptions, msgs []Message) (*lmtpStats, error) {
	// Open every connection before the clock starts, so connection setup
	// (Dovecot forks a process per connection) is not part of the rate.
	addrs, err := splitAddrs(opt.Addr)
	if err != nil {
		return nil, err
	}
	conns := make([]*lmtpConn, opt.Conns)
	for i := range conns {
		lc, err := dialLMTP(&opt, addrFor(addrs, i))
		if err != nil {
			for _, c := range conns[:i] {
				c.quit()
			}
			return nil, fmt.Errorf("connection %d (%s): %w", i+1, addrFor(addrs, i), err)
		}
		conns[i] = lc
	}
	var (
		next       atomic.Int64
		deliveries atomic.Int64
		mu         sync.Mutex
		st         = &lmtpStats{PerAddr: make([]int, len(addrs))}
		wg         sync.WaitGroup
	)
	addErr := func(s string) {
		if len(st.Errors) < 20 {
			st.Errors = append(st.Errors, s)
		}
	}
	cpu0 := opt.CPU.snap()
	start := time.Now()
	done := make(chan struct{})
	if opt.Progress > 0 {
		go func() {
			t := time.NewTicker(opt.Progress)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					n := min(int(next.Load()), len(msgs))
					el := time.Since(start).Seconds()
					fmt.Fprintf(os.Stderr, "  ... %d/%d messages, %d deliveries, %.0f deliveries/s\n",
						n, len(msgs), deliveries.Load(), float64(deliveries.Load())/el)
				}
			}
		}()
	}
	for w := range conns {
		wg.Add(1)
		go func(ai int, lc *lmtpConn) {
			defer wg.Done()
			var lat []time.Duration
			var nmsg, ndel, nfail int
			var octets, sent int64
			var errs []string
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(msgs) {
					break
				}
				m := &msgs[i]
				t0 := time.Now()
				ok, failed, err := lc.deliver(m)
				if err == nil && len(failed) == 0 {
					lat = append(lat, time.Since(t0))
					nmsg++
				}
				ndel += ok
				deliveries.Add(int64(ok))
				octets += int64(ok) * int64(m.Size)
				sent += int64(m.Size)
				nfail += len(m.Rcpts) - ok
				for _, f := range failed {
					errs = append(errs, fmt.Sprintf("message %d: %s", m.ID, f))
				}
				if err != nil {
					errs = append(errs, fmt.Sprintf("message %d: connection lost: %v", m.ID, err))
					lc.c.Close()
					// One reconnect attempt, so a single dropped connection
					// shows up as failures instead of ending the run.
					if lc, err = dialLMTP(&opt, addrs[ai]); err != nil {
						errs = append(errs, fmt.Sprintf("reconnect: %v", err))
						lc = nil
						break
					}
				}
			}
			if lc != nil {
				lc.quit()
			}
			mu.Lock()
			st.Latencies = append(st.Latencies, lat...)
			st.Messages += nmsg
			st.Deliveries += ndel
			st.PerAddr[ai] += ndel
			st.Failures += nfail
			st.Octets += octets
			st.SentOctets += sent
			for _, e := range errs {
				addErr(e)
			}
			mu.Unlock()
		}(w%len(addrs), conns[w])
	}
	wg.Wait()
	st.Elapsed = time.Since(start)
	if opt.CPU != nil {
		st.CPU = map[string]float64{}
		opt.CPU.since(cpu0, st.CPU)
	}
	close(done)
	// Messages never attempted (a worker gave up, or ctx ended) are failures.
	if n := int(next.Load()); n < len(msgs) || ctx.Err() != nil {
		for i := min(n, len(msgs)); i < len(msgs); i++ {
			st.Failures += len(msgs[i].Rcpts)
		}
		if ctx.Err() != nil {
			addErr("stopped: " + ctx.Err().Error())
		}
	}
	if st.Deliveries == 0 && len(st.Errors) > 0 {
		return st, errors.New(st.Errors[0])
	}
	return st, nil
}
