package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
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

// scriptedIMAP runs fn as the server side of a pipe and returns a client.
func scriptedIMAP(t *testing.T, fn func(br *bufio.Reader, w net.Conn)) *imapClient {
	t.Helper()
	cl, sv := net.Pipe()
	t.Cleanup(func() { cl.Close(); sv.Close() })
	go func() {
		defer sv.Close()
		fn(bufio.NewReader(sv), sv)
	}()
	return newIMAPClient(cl, 5*time.Second)
}

func TestIMAPReadRespLiterals(t *testing.T) {
	body := "hello\r\n{3}\r\n)\r\n* 9 EXISTS\r\n" // a literal that looks like protocol
	ic := scriptedIMAP(t, func(_ *bufio.Reader, w net.Conn) {
		fmt.Fprintf(w, "* 1 FETCH (UID 5 BODY[] {%d}\r\n%s FLAGS (\\Seen))\r\n", len(body), body)
		fmt.Fprintf(w, "* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {0}\r\n BINARY[1] ~{3}\r\nabc)\r\n")
		fmt.Fprintf(w, "* OK [UIDNEXT 42] next\r\n")
	})
	r, err := ic.readResp()
	if err != nil {
		t.Fatal(err)
	}
	fd, ok, err := parseFetch(r)
	if !ok || err != nil {
		t.Fatalf("parseFetch: %v %v", ok, err)
	}
	v, _ := fd.get("BODY[]")
	if b, _ := v.str(); string(b) != body {
		t.Fatalf("BODY[] = %q, want %q", b, body)
	}
	if u, ok := fd.uid(); !ok || u != 5 {
		t.Fatalf("uid %d %v", u, ok)
	}
	fl, _ := fd.get("FLAGS")
	if f, ok := flagsOf(fl); !ok || !hasFlag(f, `\seen`) {
		t.Fatalf("flags %v", f)
	}
	r, err = ic.readResp()
	if err != nil {
		t.Fatal(err)
	}
	fd, _, err = parseFetch(r)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := fd.getPrefix("BODY[HEADER.FIELDS")
	if b, _ := h.str(); !ok || len(b) != 0 || fd.items[0].name != "BODY[HEADER.FIELDS (SUBJECT)]" {
		t.Fatalf("header item %+v", fd.items)
	}
	if v, _ := fd.get("BINARY[1]"); string(v.b) != "abc" {
		t.Fatalf("literal8 %q", v.b)
	}
	r, _ = ic.readResp()
	u := parseUntagged(r)
	if v, ok := respCode(u.rest, "UIDNEXT"); u.word != "OK" || !ok || v != "42" {
		t.Fatalf("untagged %+v code %q", u, v)
	}
}

func TestParseFetchStructures(t *testing.T) {
	resp := `* 12 FETCH (UID 7 RFC822.SIZE 4711 ENVELOPE ("Tue, 4 Mar 2025 08:00:00 +0000" "Re: \"quoted\" \\ back" ` +
		`(("Alice" NIL "alice" "example.net")) NIL NIL ((NIL NIL "user1" "bench.test")) NIL NIL NIL "<0123456789abcdef.42@example.net>") ` +
		`BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 605 11 NIL NIL NIL NIL)` +
		`("application" "pdf" ("name" "a.pdf") NIL NIL "base64" 1000 NIL ("attachment" ("filename" "a.pdf")) NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL))`
	fd, ok, err := parseFetch([]byte(resp))
	if !ok || err != nil {
		t.Fatalf("parseFetch: %v %v", ok, err)
	}
	if fd.seq != 12 || len(fd.items) != 4 {
		t.Fatalf("seq %d items %d", fd.seq, len(fd.items))
	}
	env, _ := fd.get("ENVELOPE")
	if subj, _ := env.list[1].str(); string(subj) != `Re: "quoted" \ back` {
		t.Fatalf("subject %q", subj)
	}
	if env.list[3].kind != ivNil {
		t.Fatalf("sender %v", env.list[3])
	}
	bs, _ := fd.get("BODYSTRUCTURE")
	if len(bs.list) != 7 || bs.list[0].kind != ivList || bs.list[1].kind != ivList || string(bs.list[2].b) != "mixed" {
		t.Fatalf("bodystructure %s", bs)
	}
	if err := checkEnvelopes([]*fetchData{fd}, []int{42}); err == nil {
		t.Fatal("sequence 12 in a 1-message mailbox was accepted")
	}
	fd.seq = 1
	if err := checkEnvelopes([]*fetchData{fd}, []int{42}); err != nil {
		t.Fatal(err)
	}
	if err := checkEnvelopes([]*fetchData{fd}, []int{43}); err == nil {
		t.Fatal("wrong Message-ID accepted")
	}
	for _, bad := range []string{
		`* 1 FETCH (UID 7`, `* 1 FETCH (UID)`, `* 1 FETCH (BODY[] {5}` + "\r\nabc)", `* 1 FETCH (FLAGS (\Seen)) x`,
		`* 1 FETCH (UID "unterminated)`, `* 1 FETCH (BODY[1 NIL)`,
	} {
		if _, _, err := parseFetch([]byte(bad)); err == nil {
			t.Errorf("parseFetch(%q) accepted", bad)
		}
	}
	if _, ok, _ := parseFetch([]byte("* 3 EXPUNGE")); ok {
		t.Error("EXPUNGE parsed as FETCH")
	}
	n, err := parseSearch([]byte("2 3 10 (MODSEQ 917162500)"))
	if err != nil || !slices.Equal(n, []uint32{2, 3, 10}) {
		t.Fatalf("parseSearch %v %v", n, err)
	}
}

func TestIMAPCommands(t *testing.T) {
	ic := scriptedIMAP(t, func(br *bufio.Reader, w net.Conn) {
		line := func() string { l, _ := br.ReadString('\n'); return strings.TrimRight(l, "\r\n") }
		if l := line(); l != `A1 LOGIN "u@x" "p\"w"` {
			fmt.Fprintf(w, "A1 BAD got %q\r\n", l)
			return
		}
		fmt.Fprint(w, "A1 OK logged in\r\n")
		line()
		fmt.Fprint(w, "* FLAGS (\\Seen)\r\n* 3 EXISTS\r\n* OK [UIDVALIDITY 99] v\r\n* OK [UIDNEXT 4] n\r\nA2 OK [READ-WRITE] done\r\n")
		if l := line(); l != "A3 UID SEARCH CHARSET UTF-8 SUBJECT {8}" {
			fmt.Fprintf(w, "A3 BAD got %q\r\n", l)
			return
		}
		fmt.Fprint(w, "+ go\r\n")
		lit := make([]byte, 8)
		io.ReadFull(br, lit)
		if string(lit) != "réunion" || line() != "" {
			fmt.Fprint(w, "A3 BAD literal\r\n")
			return
		}
		fmt.Fprint(w, "* SEARCH 1 3\r\nA3 OK done\r\n")
		line()
		fmt.Fprint(w, "A4 NO [CANNOT] no\r\n")
		line()
		fmt.Fprint(w, "* BYE going\r\n")
	})
	if err := ic.login("u@x", `p"w`); err != nil {
		t.Fatal(err)
	}
	si, err := ic.selectMailbox("INBOX")
	if err != nil || si.Exists != 3 || si.UIDValidity != 99 || si.UIDNext != 4 {
		t.Fatalf("select %+v %v", si, err)
	}
	var got []uint32
	_, err = ic.cmd("UID SEARCH CHARSET UTF-8 SUBJECT {}", func(r []byte) error {
		u := parseUntagged(r)
		got, _ = parseSearch(u.rest)
		return nil
	}, []byte("réunion"))
	if err != nil || !slices.Equal(got, []uint32{1, 3}) {
		t.Fatalf("search %v %v", got, err)
	}
	_, err = ic.cmd("CREATE x", nil)
	var se *imapStatusError
	if !errors.As(err, &se) || se.status != "NO" {
		t.Fatalf("NO: %v", err)
	}
	if _, err = ic.cmd("NOOP", nil); !errors.As(err, &se) || se.status != "BYE" {
		t.Fatalf("BYE: %v", err)
	}
}

func TestLiteralAtEnd(t *testing.T) {
	for in, want := range map[string]int{"x {5}\r\n": 5, "{0}\r\n": 0, "a {12+}\n": 12, "a {}\r\n": -1, "a {x}\r\n": -1, "a\r\n": -1, "a }\r\n": -1} {
		n, ok := literalAtEnd([]byte(in))
		if (want < 0) == ok || (ok && n != want) {
			t.Errorf("literalAtEnd(%q) = %d %v", in, n, ok)
		}
	}
}

func TestCheckMixMessageAndSearchExpectations(t *testing.T) {
	p := smallMix(300)
	p.Users = 1
	raw := p.Build(17)
	if id, err := checkMixMessage(raw); err != nil || id != 17 {
		t.Fatalf("checkMixMessage = %d, %v", id, err)
	}
	bad := bytes.Replace(raw, []byte("\r\n\r\n"), []byte("\r\n\r\nX"), 1)
	if _, err := checkMixMessage(bad); err == nil {
		t.Fatal("corrupted body accepted")
	}
	if _, err := checkMixMessage([]byte("Subject: x\r\n\r\nbody")); err == nil {
		t.Fatal("message without X-Mailbench accepted")
	}
	ids := p.ExpectedIDs()["user1@bench.test"]
	if len(ids) != 300 {
		t.Fatalf("users=1 gives user1 %d messages", len(ids))
	}
	qs := searchQueries()
	expectSearch(&p, ids, qs)
	for _, q := range qs {
		if len(q.want) == 0 || len(q.want) > 150 {
			t.Errorf("%s: %d of 300 messages match; the query does not discriminate", q.name, len(q.want))
		}
	}
	// The UTF-8 subject is sent as an RFC 2047 encoded word; mixSubject decodes it.
	id := qs[3].want[0]
	hdr, _, _ := bytes.Cut(p.Build(id), []byte("\r\n\r\n"))
	if !bytes.Contains(hdr, []byte("Subject: =?UTF-8?B?")) || mixSubject(hdr) != "Café réunion à 10h" {
		t.Fatalf("subject of %d: %q", id, mixSubject(hdr))
	}
}

func TestReportIMAPRows(t *testing.T) {
	lat := &Percentiles{P50: 1, P99: 2, Max: 3}
	results := []Result{
		{Kind: "imap", Op: "select", Server: "dovecot", Concurrency: 1, PerSec: 100, LatencyMs: lat, LoginMs: 5},
		{Kind: "imap", Op: "select", Server: "letterbox", Concurrency: 1, PerSec: 150, LatencyMs: lat, LoginMs: 50},
		{Kind: "imap", Op: "envelope", Server: "letterbox", Concurrency: 1, PerSec: 3, LatencyMs: lat, Details: map[string]float64{"first_op_ms": 9}},
		{Kind: "imap-idle", Server: "dovecot", Concurrency: 5000, Seconds: 60, LatencyMs: lat, Details: map[string]float64{"pss_kib_per_conn": 500, "pss_idle_kib": 2 << 20}},
		{Kind: "imap-idle", Op: "hibernate", Server: "dovecot", Concurrency: 5000, Seconds: 60, LatencyMs: lat, Details: map[string]float64{"pss_kib_per_conn": 20, "pss_idle_kib": 100 << 10}},
		{Kind: "imap-idle", Server: "letterbox", Concurrency: 5000, Seconds: 90, LatencyMs: lat, Details: map[string]float64{"pss_kib_per_conn": 100, "pss_idle_kib": 500 << 10}},
		{Kind: "imap-big", Server: "letterbox", Concurrency: 1, Messages: 100000, Details: map[string]float64{"envelope_select_fetch_ms_1": 800}},
		{Kind: "lmtp-fill", Server: "letterbox", Concurrency: 8, PerSec: 1},
	}
	rows := buildRows(results, "dovecot", "letterbox")
	find := func(m string) Row {
		for _, r := range rows {
			if r.Metric == m {
				return r
			}
		}
		var names []string
		for _, r := range rows {
			names = append(names, r.Metric)
		}
		t.Fatalf("no row %q in\n%s", m, strings.Join(names, "\n"))
		return Row{}
	}
	if r := find("IMAP SELECT, 1 client: ops/s"); r.Ratio == nil || *r.Ratio != 1.5 {
		t.Fatalf("select row %+v", r)
	}
	if r := find("IMAP login ms (mean; argon2id vs {PLAIN})"); *r.B != 50 {
		t.Fatalf("login row %+v", r)
	}
	if r := find("IMAP FETCH 1:* (ENVELOPE BODYSTRUCTURE RFC822.SIZE), 1 client: first op ms"); r.A != nil || *r.B != 9 {
		t.Fatalf("first op row %+v", r)
	}
	if r := find("IMAP 5000 idle: KiB per connection (PSS)"); *r.Ratio != 0.2 {
		t.Fatalf("idle row %+v", r)
	}
	if r := find("IMAP 5000 idle (dovecot hibernate): KiB per connection (PSS)"); *r.A != 20 || *r.B != 100 || *r.Ratio != 5 {
		t.Fatalf("hibernate row %+v", r)
	}
	if r := find("IMAP 100k msgs: SELECT+FETCH envelope/bodystructure ms, 1st"); *r.B != 800 {
		t.Fatalf("big row %+v", r)
	}
	for _, r := range rows {
		if strings.Contains(r.Metric, "LMTP") {
			t.Fatalf("lmtp-fill made a row: %+v", r)
		}
	}
}

func TestProcTreeMem(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	m, err := procTreeMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.Procs < 1 || m.RSSKiB <= 0 || m.PSSKiB <= 0 || m.PSSKiB > m.RSSKiB+1024 {
		t.Fatalf("memory of this process: %+v", m)
	}
	if !slices.Contains(procTree(1), os.Getpid()) {
		t.Fatal("this process is not a descendant of pid 1")
	}
	if _, err := procTreeMem(1 << 30); err == nil {
		t.Fatal("a missing process was measured")
	}
}

func TestSplitAddrsRoundRobin(t *testing.T) {
	got, err := splitAddrs("127.0.0.1:1, 127.0.0.1:2,[::1]:3")
	if err != nil || !slices.Equal(got, []string{"127.0.0.1:1", "127.0.0.1:2", "[::1]:3"}) {
		t.Fatalf("splitAddrs = %q, %v", got, err)
	}
	if got, err := splitAddrs("127.0.0.1:2424"); err != nil || len(got) != 1 {
		t.Fatalf("one address: %q, %v", got, err)
	}
	for _, bad := range []string{"", "127.0.0.1:1,", "127.0.0.1:1,,127.0.0.1:2", "localhost"} {
		if _, err := splitAddrs(bad); err == nil {
			t.Errorf("splitAddrs(%q) accepted", bad)
		}
	}
	addrs := []string{"a", "b", "c"}
	var seq []string
	for i := 0; i < 7; i++ {
		seq = append(seq, addrFor(addrs, i))
	}
	if strings.Join(seq, "") != "abcabca" {
		t.Fatalf("round-robin order %v", seq)
	}
}

// counting wraps a connection handler and counts the connections it got.
func counting(n *int64, mu *sync.Mutex, serve func(net.Conn)) func(net.Conn) {
	return func(c net.Conn) {
		mu.Lock()
		*n++
		mu.Unlock()
		serve(c)
	}
}

func TestLMTPSpreadsConnectionsOverAddresses(t *testing.T) {
	var mu sync.Mutex
	counts := make([]int64, 3)
	servers := make([]*fakeServer, 3)
	var addrs []string
	for i := range servers {
		servers[i] = &fakeServer{boxes: map[string][][]byte{}}
		addrs = append(addrs, listen(t, counting(&counts[i], &mu, servers[i].serveLMTP)))
	}
	p := smallMix(60)
	msgs := p.Generate()
	want := 0
	for _, m := range msgs {
		want += len(m.Rcpts)
	}
	st, err := runLMTP(context.Background(), lmtpOptions{Addr: strings.Join(addrs, ","), Conns: 5, Sender: "s@example.net",
		LHLO: "t", OpTimeout: 10 * time.Second}, msgs)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := slices.Clone(counts)
	mu.Unlock()
	if !slices.Equal(got, []int64{2, 2, 1}) { // connections 0,3 / 1,4 / 2
		t.Fatalf("connections per address %v, want [2 2 1]", got)
	}
	sum, stored := 0, 0
	for i, n := range st.PerAddr {
		sum += n
		servers[i].mu.Lock()
		for _, box := range servers[i].boxes {
			stored += len(box)
		}
		if n == 0 {
			t.Errorf("address %d delivered nothing", i)
		}
		servers[i].mu.Unlock()
	}
	if st.Deliveries != want || st.Failures != 0 || sum != want || stored != want || len(st.PerAddr) != 3 {
		t.Fatalf("%d deliveries (want %d), per address %v, %d stored, %d failures", st.Deliveries, want, st.PerAddr, stored, st.Failures)
	}
	if st.CPU != nil {
		t.Fatal("CPU accounted without -cpu-watch")
	}
}

// fakeIMAP is just enough IMAP server for the select step: LOGIN, SELECT
// (always exists messages), LOGOUT.
func fakeIMAP(exists int) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "* OK fake IMAP\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
			verb, _, _ := strings.Cut(rest, " ")
			switch strings.ToUpper(verb) {
			case "LOGIN":
				fmt.Fprintf(c, "%s OK logged in\r\n", tag)
			case "SELECT":
				fmt.Fprintf(c, "* %d EXISTS\r\n* OK [UIDVALIDITY 1] x\r\n%s OK [READ-WRITE] selected\r\n", exists, tag)
			case "LOGOUT":
				fmt.Fprintf(c, "* BYE bye\r\n%s OK done\r\n", tag)
				return
			default:
				fmt.Fprintf(c, "%s BAD unknown\r\n", tag)
			}
		}
	}
}

func TestIMAPSpreadsClientsOverAddresses(t *testing.T) {
	var mu sync.Mutex
	counts := make([]int64, 2)
	var addrs []string
	for i := range counts {
		addrs = append(addrs, listen(t, counting(&counts[i], &mu, fakeIMAP(3))))
	}
	mb := &imapMailbox{ids: []int{0, 1, 2}, uids: []uint32{1, 2, 3}, uidOf: map[int]uint32{0: 1, 1: 2, 2: 3},
		idOf: map[uint32]int{1: 0, 2: 1, 3: 2}}
	watch, err := parseCPUWatch(fmt.Sprintf("self=%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	opt := &imapOptions{Addr: addrs[0], Addrs: addrs, User: "u", Password: "p", OpTimeout: 5 * time.Second,
		Duration: 20 * time.Millisecond, MinOps: 2, CPU: watch}
	st := runIMAPStep(context.Background(), opt, mb, "select", 5)
	if st.Failures > 0 || st.Ops < 10 {
		t.Fatalf("select step: %d ops, errors %v", st.Ops, st.Errors)
	}
	mu.Lock()
	got := slices.Clone(counts)
	mu.Unlock()
	if !slices.Equal(got, []int64{3, 2}) { // clients 0,2,4 / 1,3
		t.Fatalf("connections per address %v, want [3 2]", got)
	}
	for _, k := range []string{"cpu_s_self", "cpu_s_mailbench", "cpu_s_machine", "cpu_s_other", "cpus"} {
		if _, ok := st.CPU[k]; !ok && runtime.GOOS == "linux" {
			t.Errorf("CPU details lack %s: %v", k, st.CPU)
		}
	}
	// One address: every client there, as before.
	mu.Lock()
	counts[0], counts[1] = 0, 0
	mu.Unlock()
	opt = &imapOptions{Addr: addrs[1], User: "u", Password: "p", OpTimeout: 5 * time.Second, Duration: time.Millisecond, MinOps: 1}
	if st := runIMAPStep(context.Background(), opt, mb, "select", 3); st.Failures > 0 || st.CPU != nil {
		t.Fatalf("one address: %v, CPU %v", st.Errors, st.CPU)
	}
	mu.Lock()
	defer mu.Unlock()
	if counts[0] != 0 || counts[1] != 3 {
		t.Fatalf("one address: connections %v", counts)
	}
}

func TestParseStatCPUAndWatch(t *testing.T) {
	line := []byte("4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 7 3 20 0 1 0 100 0 0")
	if n, ok := parseStatCPU(line); !ok || n != 150+25+7+3 {
		t.Fatalf("parseStatCPU = %d, %v", n, ok)
	}
	if _, ok := parseStatCPU([]byte("4242 (short) S 1 2")); ok {
		t.Fatal("a short line parsed")
	}
	for _, bad := range []string{"x", "a=", "=1", "a=0", "a b=1", "a=1,b"} {
		if _, err := parseCPUWatch(bad); err == nil {
			t.Errorf("parseCPUWatch(%q) accepted", bad)
		}
	}
	w, err := parseCPUWatch("pg=1,nodes=2,nodes=3")
	if err != nil || !slices.Equal(w.labels, []string{"pg", "nodes"}) || !slices.Equal(w.roots["nodes"], []int{2, 3}) {
		t.Fatalf("parseCPUWatch: %+v, %v", w, err)
	}
	if w, err := parseCPUWatch(""); w != nil || err != nil {
		t.Fatalf("empty -cpu-watch: %v, %v", w, err)
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	w, _ = parseCPUWatch(fmt.Sprintf("me=%d", os.Getpid()))
	s0 := w.snap()
	x := 0
	for t0 := time.Now(); time.Since(t0) < 300*time.Millisecond; {
		x += len(strconv.Itoa(x))
	}
	d := map[string]float64{}
	w.since(s0, d)
	if d["cpu_s_me"] < 0.05 || d["cpu_s_mailbench"] < 0.05 || d["cpu_s_machine"] < d["cpu_s_mailbench"]-0.02 || d["cpus"] < 1 {
		t.Fatalf("300 ms of spinning accounted as %v (x %d)", d, x)
	}
}

func TestScaleReportRows(t *testing.T) {
	lat := &Percentiles{P50: 10, P99: 40}
	cpu := func(nodes, pg float64) map[string]float64 {
		return map[string]float64{"cpu_s_nodes": nodes, "cpu_s_postgres": pg, "cpu_s_mailbench": 1, "cpu_s_other": 0.5, "cpu_s_machine": nodes + pg + 1.5, "cpus": 2}
	}
	results := []Result{
		{Kind: "lmtp", Server: "embedded", Concurrency: 8, PerSec: 800, Deliveries: 8000, Seconds: 10, LatencyMs: lat, Details: cpu(15, 0)},
		{Kind: "lmtp", Server: "pg-1-node", Concurrency: 8, PerSec: 400, Deliveries: 8000, Seconds: 20, LatencyMs: lat, Details: cpu(20, 16)},
		{Kind: "lmtp-fill", Server: "pg-1-node", Concurrency: 8, PerSec: 1},
		{Kind: "imap", Op: "mixed", Server: "embedded", Concurrency: 8, PerSec: 20, Ops: 200, Seconds: 10, LatencyMs: lat},
		{Kind: "imap", Op: "mixed", Server: "pg-2-nodes", Concurrency: 8, PerSec: 10, Ops: 100, Seconds: 10, LatencyMs: lat},
	}
	configs := []string{"embedded", "pg-1-node", "pg-2-nodes"}
	rows := buildScaleRows(results, configs, "embedded")
	find := func(m string) ScaleRow {
		for _, r := range rows {
			if r.Metric == m {
				return r
			}
		}
		var names []string
		for _, r := range rows {
			names = append(names, r.Metric)
		}
		t.Fatalf("no row %q in\n%s", m, strings.Join(names, "\n"))
		return ScaleRow{}
	}
	r := find("LMTP 8 conn deliveries/s")
	if *r.Values[1] != 400 || *r.Ratios[1] != 0.5 || r.Values[2] != nil {
		t.Fatalf("lmtp row %+v", r)
	}
	if r := find("LMTP 8 conn: CPU ms per delivery, postgres"); *r.Values[1] != 2 || r.Ratios != nil {
		t.Fatalf("pg cpu row %+v", r)
	}
	if r := find("LMTP 8 conn: % of all CPUs, nodes"); *r.Values[0] != 75 || *r.Values[1] != 50 {
		t.Fatalf("share row %+v", r)
	}
	if r := find("IMAP mixed client profile (cycles), 8 clients: ops/s"); *r.Ratios[2] != 0.5 || r.Values[1] != nil {
		t.Fatalf("imap row %+v", r)
	}
	if rows[0].Metric != "LMTP 8 conn deliveries/s" {
		t.Fatalf("first row %q", rows[0].Metric)
	}
	var b strings.Builder
	printScaleMarkdown(&b, rows, configs)
	if !strings.Contains(b.String(), "| LMTP 8 conn deliveries/s | 800 (1.00) | 400 (0.50) | - |") {
		t.Fatalf("markdown:\n%s", b.String())
	}
}
