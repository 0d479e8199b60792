package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func smallMix(n int) MixParams {
	return MixParams{Seed: 7, Messages: n, MinSize: 1 << 10, MaxSize: 64 << 10, HugeSize: 300 << 10,
		HugeFrac: 0.02, Users: 3, Domain: "bench.test", MultiRcpt: 0.3}
}

func TestMixDeterministicAndWellFormed(t *testing.T) {
	p := smallMix(200)
	q := p
	q.Seed = 8
	for i := 0; i < p.Messages; i++ {
		a, b := p.Build(i), p.Build(i)
		if !bytes.Equal(a, b) {
			t.Fatalf("message %d differs between two builds", i)
		}
		if bytes.Equal(a, q.Build(i)) {
			t.Fatalf("message %d is the same under another seed", i)
		}
		for k := range a {
			if a[k] == '\n' && (k == 0 || a[k-1] != '\r') {
				t.Fatalf("message %d: bare LF at %d", i, k)
			}
			if a[k] == '\r' && (k+1 == len(a) || a[k+1] != '\n') {
				t.Fatalf("message %d: bare CR at %d", i, k)
			}
		}
		if len(a) < 900 || (len(a) > 70<<10 && len(a) < 250<<10) || len(a) > 320<<10 {
			t.Errorf("message %d: size %d outside the mix", i, len(a))
		}
		hdr, body, ok := bytes.Cut(a, []byte("\r\n\r\n"))
		if !ok {
			t.Fatalf("message %d: no header/body separator", i)
		}
		m := mixHeaderRE.FindSubmatch(hdr)
		if m == nil || string(m[1]) != strconv.Itoa(i) {
			t.Fatalf("message %d: bad %s header in\n%s", i, mixHeader, hdr)
		}
		if want := fmt.Sprintf("%d", len(body)); string(m[2]) != want {
			t.Errorf("message %d: body-len %s, want %s", i, m[2], want)
		}
		if want := fmt.Sprintf("%08x", crc32.Checksum(body, crcTable)); string(m[3]) != want {
			t.Errorf("message %d: body-crc32c %s, want %s", i, m[3], want)
		}
		for _, h := range []string{"\r\nFrom: ", "\r\nTo: ", "\r\nDate: ", "\r\nMessage-ID: ", "\r\nSubject: "} {
			if !bytes.Contains(hdr, []byte(h)) {
				t.Errorf("message %d lacks %q", i, h)
			}
		}
	}
}

func unstuff(wire []byte) []byte {
	if !bytes.HasSuffix(wire, []byte("\r\n.\r\n")) {
		panic("no terminator")
	}
	wire = wire[:len(wire)-3]
	var out []byte
	for _, line := range bytes.SplitAfter(wire, []byte("\r\n")) {
		out = append(out, bytes.TrimPrefix(line, []byte("."))...)
	}
	return out
}

func TestDotStuff(t *testing.T) {
	for _, in := range []string{"a\r\n", ".\r\n", "..\r\n.x\r\nb.\r\n", "no newline", ".\r\n.\r\n"} {
		w := dotStuff([]byte(in))
		want := in
		if !strings.HasSuffix(in, "\r\n") {
			want += "\r\n"
		}
		if got := unstuff(w); string(got) != want {
			t.Errorf("dotStuff(%q) = %q, round trip %q", in, w, got)
		}
		if bytes.Contains(w[:len(w)-3], []byte("\r\n.\r\n")) || bytes.HasPrefix(w, []byte(".\r\n")) {
			t.Errorf("dotStuff(%q) = %q contains an early terminator", in, w)
		}
	}
	p := smallMix(100)
	lone := 0
	for _, m := range p.Generate() {
		raw := p.Build(m.ID)
		if !bytes.Equal(unstuff(m.Wire), raw) {
			t.Fatalf("message %d does not survive dot-stuffing", m.ID)
		}
		lone += bytes.Count(raw, []byte("\r\n.\r\n"))
	}
	if lone == 0 {
		t.Error("the mix has no lone-dot lines; dot-stuffing is not exercised")
	}
}

// fakeServer is a minimal LMTP + POP3 server keeping mail in memory, enough
// to check the client side of mailbench. rejectUser gets 550 at RCPT.
type fakeServer struct {
	mu         sync.Mutex
	boxes      map[string][][]byte
	rejectUser string
}

func (f *fakeServer) serveLMTP(c net.Conn) {
	defer c.Close()
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(s string) { bw.WriteString(s + "\r\n"); bw.Flush() }
	reply("220 fake LMTP")
	var rcpts []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch verb {
		case "LHLO":
			reply("250-fake\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES")
		case "MAIL":
			rcpts = nil
			reply("250 2.1.0 ok")
		case "RCPT":
			addr := strings.TrimSuffix(strings.TrimPrefix(line[len("RCPT TO:"):], "<"), ">")
			if addr == f.rejectUser {
				reply("550 5.1.1 no such user")
				continue
			}
			rcpts = append(rcpts, addr)
			reply("250 2.1.5 ok")
		case "DATA":
			reply("354 go ahead")
			var msg []byte
			for {
				l, err := br.ReadBytes('\n')
				if err != nil {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
				msg = append(msg, bytes.TrimPrefix(l, []byte("."))...)
			}
			f.mu.Lock()
			for _, r := range rcpts {
				f.boxes[r] = append(f.boxes[r], append([]byte("Return-Path: <x@y>\r\n"), msg...))
			}
			f.mu.Unlock()
			for range rcpts {
				reply("250 2.0.0 saved")
			}
		case "RSET":
			rcpts = nil
			reply("250 ok")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("500 what")
		}
	}
}

func (f *fakeServer) servePOP3(c net.Conn) {
	defer c.Close()
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(s string) { bw.WriteString(s + "\r\n"); bw.Flush() }
	reply("+OK fake POP3")
	var user string
	var box [][]byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		args := strings.Fields(strings.TrimRight(line, "\r\n"))
		switch strings.ToUpper(args[0]) {
		case "USER":
			user = args[1]
			reply("+OK")
		case "PASS":
			f.mu.Lock()
			box = f.boxes[user]
			f.mu.Unlock()
			reply("+OK logged in")
		case "STAT":
			total := 0
			for _, m := range box {
				total += len(m)
			}
			reply(fmt.Sprintf("+OK %d %d", len(box), total))
		case "LIST":
			var b strings.Builder
			b.WriteString("+OK\r\n")
			for i, m := range box {
				fmt.Fprintf(&b, "%d %d\r\n", i+1, len(m))
			}
			b.WriteString(".")
			reply(b.String())
		case "RETR":
			n, _ := strconv.Atoi(args[1])
			bw.WriteString("+OK\r\n")
			bw.Write(dotStuff(box[n-1]))
			bw.Flush()
		case "QUIT":
			reply("+OK bye")
			return
		}
	}
}

func listen(t *testing.T, serve func(net.Conn)) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return l.Addr().String()
}

func TestLMTPThenPOP3AgainstFake(t *testing.T) {
	fs := &fakeServer{boxes: map[string][][]byte{}}
	lmtpAddr := listen(t, fs.serveLMTP)
	popAddr := listen(t, fs.servePOP3)
	p := smallMix(120)
	msgs := p.Generate()
	wantDeliveries := 0
	for _, m := range msgs {
		wantDeliveries += len(m.Rcpts)
	}
	ctx := context.Background()
	st, err := runLMTP(ctx, lmtpOptions{Addr: lmtpAddr, Conns: 4, Sender: "s@example.net", LHLO: "t", OpTimeout: 10 * time.Second}, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if st.Deliveries != wantDeliveries || st.Failures != 0 || st.Messages != len(msgs) || len(st.Latencies) != len(msgs) {
		t.Fatalf("lmtp: %d deliveries (want %d), %d failures, %d messages, errors %v",
			st.Deliveries, wantDeliveries, st.Failures, st.Messages, st.Errors)
	}
	users := []string{"user1@bench.test", "user2@bench.test", "user3@bench.test"}
	ps := runPOP3(ctx, pop3Options{Addr: popAddr, Users: users, Password: "pw", OpTimeout: 10 * time.Second, Expect: p.ExpectedIDs()})
	if len(ps.Errors) > 0 || ps.Messages != wantDeliveries {
		t.Fatalf("pop3: %d messages (want %d), errors %v", ps.Messages, wantDeliveries, ps.Errors)
	}

	// A corrupted message and a missing one are reported.
	fs.mu.Lock()
	box := fs.boxes["user2@bench.test"]
	box[0] = bytes.Replace(box[0], []byte("\r\n\r\n"), []byte("\r\n\r\nX"), 1)
	fs.boxes["user2@bench.test"] = box[1:]
	fs.boxes["user3@bench.test"][0] = bytes.Replace(fs.boxes["user3@bench.test"][0], []byte("\r\n\r\n"), []byte("\r\n\r\nX"), 1)
	fs.mu.Unlock()
	ps = runPOP3(ctx, pop3Options{Addr: popAddr, Users: users[1:], Password: "pw", OpTimeout: 10 * time.Second, Expect: p.ExpectedIDs()})
	joined := strings.Join(ps.Errors, "\n")
	if !strings.Contains(joined, "user2@bench.test: mailbox holds") || !strings.Contains(joined, "user3@bench.test: message 1 (mix id") {
		t.Fatalf("corruption not reported; errors:\n%s", joined)
	}

	// A rejected recipient is a failure, the others still count.
	fs = &fakeServer{boxes: map[string][][]byte{}, rejectUser: "user2@bench.test"}
	lmtpAddr = listen(t, fs.serveLMTP)
	st, err = runLMTP(ctx, lmtpOptions{Addr: lmtpAddr, Conns: 2, Sender: "s@example.net", LHLO: "t", OpTimeout: 10 * time.Second}, msgs)
	if err != nil {
		t.Fatal(err)
	}
	rejected := len(p.ExpectedIDs()["user2@bench.test"])
	if st.Failures != rejected || st.Deliveries != wantDeliveries-rejected || len(st.Errors) == 0 {
		t.Fatalf("with rejects: %d deliveries, %d failures (want %d / %d)", st.Deliveries, st.Failures, wantDeliveries-rejected, rejected)
	}
}

func TestPercentilesAndReport(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(d)
	if p.P50 != 500 || p.P99 != 990 || p.Max != 1000 {
		t.Fatalf("percentiles = %+v", p)
	}
	results := []Result{
		{Kind: "lmtp", Server: "dovecot", Concurrency: 1, PerSec: 200, LatencyMs: p},
		{Kind: "lmtp", Server: "letterbox", Concurrency: 1, PerSec: 300, LatencyMs: p},
		{Kind: "pop3", Server: "dovecot", Concurrency: 4, MiBPerSec: 80},
	}
	rows := buildRows(results, "dovecot", "letterbox")
	if rows[0].Ratio == nil || *rows[0].Ratio != 1.5 {
		t.Fatalf("first row %+v", rows[0])
	}
	var b strings.Builder
	printTable(&b, rows, "dovecot", "letterbox")
	if !strings.Contains(b.String(), "POP3  4 session MiB/s") {
		t.Fatalf("table:\n%s", b.String())
	}
}
