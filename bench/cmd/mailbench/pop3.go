package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// POP3 download benchmark (RFC 1939). Each session logs in as its own user
// (USER/PASS), runs STAT and LIST, RETRs every message in order, checks every
// message against LIST (octet count after un-dot-stuffing) and against the
// X-Mailbench header written by the generator (body length and CRC-32C), and
// QUITs without DELE, so the mailbox is left as it was.

type pop3Options struct {
	Addr      string
	Users     []string
	Password  string
	OpTimeout time.Duration
	Expect    map[string][]int // user -> message ids it must hold; nil: no check
}

type pop3Session struct {
	User      string
	Messages  int
	Octets    int64
	Elapsed   time.Duration
	Login     time.Duration   // connect to the +OK after PASS
	Latencies []time.Duration // per RETR
	Errors    []string
}

type pop3Stats struct {
	Sessions  []pop3Session
	Messages  int
	Octets    int64
	Elapsed   time.Duration
	Latencies []time.Duration
	Errors    []string
}

type pop3Conn struct {
	c   net.Conn
	br  *bufio.Reader
	opt *pop3Options
}

func (pc *pop3Conn) cmd(line string) (string, error) {
	pc.c.SetDeadline(time.Now().Add(pc.opt.OpTimeout))
	if _, err := pc.c.Write([]byte(line + "\r\n")); err != nil {
		return "", err
	}
	return pc.status(strings.Fields(line)[0])
}

func (pc *pop3Conn) status(what string) (string, error) {
	line, err := pc.br.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "+OK") {
		return "", fmt.Errorf("%s: %s", what, line)
	}
	return strings.TrimSpace(strings.TrimPrefix(line, "+OK")), nil
}

// multiline reads a dot-terminated response body and returns it un-stuffed.
func (pc *pop3Conn) multiline() ([]string, error) {
	var out []string
	for {
		line, err := pc.br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "." {
			return out, nil
		}
		out = append(out, strings.TrimPrefix(line, "."))
	}
}

var mixHeaderRE = regexp.MustCompile(`(?im)^` + mixHeader + `:\s*id=(\d+);\s*body-len=(\d+);\s*body-crc32c=([0-9a-f]{8})`)

type retrieved struct {
	octets  int64
	id      int // -1 when there is no X-Mailbench header
	bodyLen int64
	bodyCRC uint32
	wantLen int64
	wantCRC uint32
}

// retr reads one RETR response: un-dot-stuffs it line by line, counts octets,
// and checksums the body, without keeping the message in memory.
func (pc *pop3Conn) retr(n int) (*retrieved, error) {
	if _, err := pc.cmd("RETR " + strconv.Itoa(n)); err != nil {
		return nil, err
	}
	res := &retrieved{id: -1}
	var hdr []byte
	inHeader, bol := true, true
	var crc uint32
	for {
		chunk, err := pc.br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return nil, fmt.Errorf("RETR %d: %w", n, err)
		}
		if bol {
			if len(chunk) > 0 && chunk[0] == '.' {
				if bytes.Equal(chunk, []byte(".\r\n")) || bytes.Equal(chunk, []byte(".\n")) {
					break
				}
				chunk = chunk[1:]
			}
		}
		res.octets += int64(len(chunk))
		if inHeader {
			if bol && (bytes.Equal(chunk, []byte("\r\n")) || bytes.Equal(chunk, []byte("\n"))) {
				inHeader = false
			} else if len(hdr) < 1<<20 {
				hdr = append(hdr, chunk...)
			}
		} else {
			crc = crc32.Update(crc, crcTable, chunk)
			res.bodyLen += int64(len(chunk))
		}
		bol = err == nil // a full line ended with '\n'
		if err == nil {
			pc.c.SetReadDeadline(time.Now().Add(pc.opt.OpTimeout))
		}
	}
	res.bodyCRC = crc
	res.id, res.wantLen, res.wantCRC = parseMixHeader(hdr)
	return res, nil
}

// parseMixHeader returns the id, body length and body CRC-32C that the
// X-Mailbench header in hdr (a message's header) announces; id is -1 when
// there is no such header.
func parseMixHeader(hdr []byte) (id int, bodyLen int64, bodyCRC uint32) {
	m := mixHeaderRE.FindSubmatch(hdr)
	if m == nil {
		return -1, 0, 0
	}
	id, _ = strconv.Atoi(string(m[1]))
	bodyLen, _ = strconv.ParseInt(string(m[2]), 10, 64)
	c, _ := strconv.ParseUint(string(m[3]), 16, 32)
	return id, bodyLen, uint32(c)
}

// checkMixMessage verifies a whole message (as fetched over IMAP) against
// its X-Mailbench header: the body (the octets after the first empty line)
// must have the announced length and CRC-32C. It returns the mix id.
func checkMixMessage(msg []byte) (int, error) {
	var hdr, body []byte
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		body = msg[2:]
	} else {
		i := bytes.Index(msg, []byte("\r\n\r\n"))
		if i < 0 {
			return -1, fmt.Errorf("no empty line after the header (%d octets)", len(msg))
		}
		hdr, body = msg[:i+2], msg[i+4:]
	}
	id, wantLen, wantCRC := parseMixHeader(hdr)
	if id < 0 {
		return -1, fmt.Errorf("no %s header", mixHeader)
	}
	if int64(len(body)) != wantLen || crc32.Checksum(body, crcTable) != wantCRC {
		return id, fmt.Errorf("mix id %d: body %d octets crc %08x, want %d octets crc %08x",
			id, len(body), crc32.Checksum(body, crcTable), wantLen, wantCRC)
	}
	return id, nil
}

func runPOP3Session(ctx context.Context, opt *pop3Options, user string, start <-chan struct{}) (s pop3Session) {
	s.User = user
	fail := func(f string, a ...any) {
		if len(s.Errors) < 20 {
			s.Errors = append(s.Errors, user+": "+fmt.Sprintf(f, a...))
		}
	}
	<-start
	t0 := time.Now()
	defer func() { s.Elapsed = time.Since(t0) }()
	c, err := net.DialTimeout("tcp", opt.Addr, opt.OpTimeout)
	if err != nil {
		fail("%v", err)
		return s
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	pc := &pop3Conn{c: c, br: bufio.NewReaderSize(c, 256<<10), opt: opt}
	pc.c.SetDeadline(time.Now().Add(opt.OpTimeout))
	if _, err := pc.status("greeting"); err != nil {
		fail("%v", err)
		return s
	}
	if _, err := pc.cmd("USER " + user); err != nil {
		fail("%v", err)
		return s
	}
	if _, err := pc.cmd("PASS " + opt.Password); err != nil {
		fail("%v", err)
		return s
	}
	s.Login = time.Since(t0)
	stat, err := pc.cmd("STAT")
	if err != nil {
		fail("%v", err)
		return s
	}
	var count int
	var total int64
	if _, err := fmt.Sscanf(stat, "%d %d", &count, &total); err != nil {
		fail("STAT: cannot parse %q", stat)
		return s
	}
	if _, err := pc.cmd("LIST"); err != nil {
		fail("%v", err)
		return s
	}
	lines, err := pc.multiline()
	if err != nil {
		fail("LIST: %v", err)
		return s
	}
	sizes := make(map[int]int64, len(lines))
	var order []int
	var listTotal int64
	for _, l := range lines {
		var n int
		var sz int64
		if _, err := fmt.Sscanf(l, "%d %d", &n, &sz); err != nil {
			fail("LIST: cannot parse %q", l)
			return s
		}
		sizes[n] = sz
		order = append(order, n)
		listTotal += sz
	}
	if len(order) != count || listTotal != total {
		fail("LIST has %d messages / %d octets, STAT said %d / %d", len(order), listTotal, count, total)
	}
	var ids []int
	for _, n := range order {
		if ctx.Err() != nil {
			fail("stopped: %v", ctx.Err())
			return s
		}
		r0 := time.Now()
		res, err := pc.retr(n)
		if err != nil {
			fail("%v", err)
			return s
		}
		s.Latencies = append(s.Latencies, time.Since(r0))
		s.Messages++
		s.Octets += res.octets
		if res.octets != sizes[n] {
			fail("message %d: RETR gave %d octets, LIST said %d", n, res.octets, sizes[n])
		}
		if res.id < 0 {
			fail("message %d: no %s header", n, mixHeader)
			continue
		}
		ids = append(ids, res.id)
		if res.bodyLen != res.wantLen || res.bodyCRC != res.wantCRC {
			fail("message %d (mix id %d): body %d octets crc %08x, want %d octets crc %08x",
				n, res.id, res.bodyLen, res.bodyCRC, res.wantLen, res.wantCRC)
		}
	}
	if _, err := pc.cmd("QUIT"); err != nil {
		fail("%v", err)
	}
	if opt.Expect != nil {
		want := opt.Expect[user]
		slices.Sort(ids)
		if !slices.Equal(ids, want) {
			fail("mailbox holds %d mix messages, expected %d (%s)", len(ids), len(want), diffIDs(ids, want))
		}
	}
	return s
}

func diffIDs(got, want []int) string {
	g := map[int]int{}
	for _, x := range got {
		g[x]++
	}
	var missing, extra, dup []string
	for _, x := range want {
		if g[x] == 0 {
			missing = append(missing, strconv.Itoa(x))
		}
		g[x]--
	}
	for x, n := range g {
		if n > 0 {
			extra = append(extra, strconv.Itoa(x))
		}
		if n > 1 {
			dup = append(dup, strconv.Itoa(x))
		}
	}
	short := func(s []string) string {
		if len(s) > 5 {
			return strings.Join(s[:5], ",") + fmt.Sprintf(",... (%d)", len(s))
		}
		return strings.Join(s, ",")
	}
	return fmt.Sprintf("missing [%s] extra [%s] duplicated [%s]", short(missing), short(extra), short(dup))
}

func runPOP3(ctx context.Context, opt pop3Options) *pop3Stats {
	st := &pop3Stats{}
	start := make(chan struct{})
	out := make([]pop3Session, len(opt.Users))
	var wg sync.WaitGroup
	for i, u := range opt.Users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = runPOP3Session(ctx, &opt, u, start)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	st.Elapsed = time.Since(t0)
	st.Sessions = out
	for _, s := range out {
		st.Messages += s.Messages
		st.Octets += s.Octets
		st.Latencies = append(st.Latencies, s.Latencies...)
		st.Errors = append(st.Errors, s.Errors...)
	}
	return st
}
