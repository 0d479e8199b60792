package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/config"
	"github.com/letterbox/letterbox/internal/mailstore"
)

// storeTestClient is a raw IMAP/POP3 client for the store tests that keeps
// the literals (message bodies) of the responses it reads.
type storeTestClient struct {
	t   *testing.T
	c   net.Conn
	r   *bufio.Reader
	tag int
}

func storeTestDial(t *testing.T, addr string) *storeTestClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	sc := &storeTestClient{t: t, c: c, r: bufio.NewReader(c)}
	sc.line() // greeting
	return sc
}

func (s *storeTestClient) line() string {
	s.t.Helper()
	l, err := s.r.ReadString('\n')
	if err != nil {
		s.t.Fatalf("read: %v (%q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

var storeLiteralRE = regexp.MustCompile(`\{(\d+)\}$`)

// imap sends an IMAP command and returns every response line up to and
// including the tagged one, which must be OK; a literal is returned as
// one more element, whole, after the line that announces it.
func (s *storeTestClient) imap(cmd string) []string {
	s.t.Helper()
	s.tag++
	tag := fmt.Sprintf("s%d", s.tag)
	fmt.Fprintf(s.c, "%s %s\r\n", tag, cmd)
	var out []string
	for {
		l := s.line()
		out = append(out, l)
		if m := storeLiteralRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			lit := make([]byte, n)
			if _, err := io.ReadFull(s.r, lit); err != nil {
				s.t.Fatal(err)
			}
			out = append(out, string(lit))
			continue
		}
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				s.t.Fatalf("%s: %q", cmd, l)
			}
			return out
		}
	}
}

// appendMsg APPENDs body (a non-synchronising literal, LITERAL+) and
// returns the tagged response.
func (s *storeTestClient) appendMsg(box, flags string, body []byte) string {
	s.t.Helper()
	s.tag++
	tag := fmt.Sprintf("s%d", s.tag)
	fmt.Fprintf(s.c, "%s APPEND %s (%s) {%d+}\r\n", tag, box, flags, len(body))
	s.c.Write(body)
	fmt.Fprint(s.c, "\r\n")
	for {
		if l := s.line(); strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				s.t.Fatalf("APPEND to %s: %q", box, l)
			}
			return l
		}
	}
}

// pop3 sends a POP3 command; the reply must be +OK. With multi, the lines
// of the multi-line reply are returned.
func (s *storeTestClient) pop3(cmd string, multi bool) []string {
	s.t.Helper()
	fmt.Fprintf(s.c, "%s\r\n", cmd)
	l := s.line()
	if !strings.HasPrefix(l, "+OK") {
		s.t.Fatalf("%s: %q", cmd, l)
	}
	var out []string
	for multi {
		l := s.line()
		if l == "." {
			break
		}
		out = append(out, l)
	}
	return out
}

var storeListRE = regexp.MustCompile(`^\* LIST \(([^)]*)\) "/" (.+)$`)

// clientView is everything IMAP and POP3 clients see of an account, as
// text: LIST and LSUB (names, special use, subscriptions), the quota, and
// for every mailbox SELECT (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, counts,
// flags), UID FETCH of flags, MODSEQs, dates, sizes and bodies, and
// VANISHED (EARLIER) since MODSEQ 1 (QRESYNC); then POP3 UIDL.
func clientView(t *testing.T, srv *serverProc, user, pass string) string {
	t.Helper()
	var b strings.Builder
	add := func(lines []string) {
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	c := storeTestDial(t, srv.Addr("imap"))
	c.imap(fmt.Sprintf("LOGIN %q %q", user, pass))
	c.imap("ENABLE QRESYNC")
	list := c.imap(`LIST "" "*"`)
	add(list)
	add(c.imap(`LSUB "" "*"`))
	add(c.imap("GETQUOTAROOT INBOX"))
	for _, l := range list {
		m := storeListRE.FindStringSubmatch(l)
		if m == nil || strings.Contains(m[1], `\Noselect`) {
			continue
		}
		b.WriteString("== " + strings.Trim(m[2], `"`) + "\n")
		add(c.imap("SELECT " + m[2]))
		add(c.imap("UID FETCH 1:* (FLAGS MODSEQ INTERNALDATE SAVEDATE RFC822.SIZE BODY.PEEK[])"))
		// Not 1:*, which ends at the highest UID in use (RFC 9051
		// §6.4.4): expunged UIDs above it must be reported too.
		add(c.imap("UID FETCH 1:4294967295 (FLAGS) (CHANGEDSINCE 1 VANISHED)"))
	}
	c.imap("LOGOUT")

	p := storeTestDial(t, srv.Addr("pop3"))
	p.pop3("USER "+user, false)
	p.pop3("PASS "+pass, false)
	b.WriteString("UIDL\n")
	add(p.pop3("UIDL", true))
	p.pop3("QUIT", false)
	return b.String()
}

// selectState returns UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ as the SELECT
// of box in a clientView reports them.
func selectState(t *testing.T, view, box string) (validity, uidNext, highest uint64) {
	t.Helper()
	_, sec, ok := strings.Cut(view, "== "+box+"\n")
	if !ok {
		t.Fatalf("no mailbox %s in the view:\n%s", box, view)
	}
	sec, _, _ = strings.Cut(sec, "\n== ")
	num := func(item string) uint64 {
		t.Helper()
		m := regexp.MustCompile(`\* OK \[` + item + ` (\d+)\]`).FindStringSubmatch(sec)
		if m == nil {
			t.Fatalf("no %s in the SELECT of %s:\n%s", item, box, sec)
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		return n
	}
	return num("UIDVALIDITY"), num("UIDNEXT"), num("HIGHESTMODSEQ")
}

// firstDiff describes where two views differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got  %.300q\n want %.300q", i+1, gl, wl)
		}
	}
	return "no difference"
}

// TestStoreCopy: a store filled through the real protocols (LMTP,
// `letterbox deliver`, IMAP CREATE/SUBSCRIBE/APPEND/STORE/COPY/EXPUNGE,
// POP3 RETR/DELE) and copied with `letterbox store copy` into a second
// data directory, once the server is stopped, is the same store for real
// clients of a server started on the copy: LIST/LSUB, quotas, SELECT
// (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ), UID FETCH of flags, MODSEQs,
// dates and bodies byte for byte, QRESYNC VANISHED, POP3 UIDL, and logins
// with the same passwords (hash and SCRAM keys copied). New mail continues
// at the copied UIDNEXT with a MODSEQ above the copied HIGHESTMODSEQ. A
// second copy into the now non-empty destination fails, saying so, and
// changes nothing; a copy onto the source itself is refused. In the
// postgres pass the copy goes from the embedded store to PostgreSQL and
// then back to a new embedded store, which must show the same again.
func TestStoreCopy(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	cfgA, cfgB := testConfig(t, dirA, ""), testConfig(t, dirB, "")
	// sqlite pass: sqlite to sqlite. postgres pass: the embedded store
	// to PostgreSQL, and below back into a new embedded store.
	crossBackend := testBackend() == config.BackendPostgres
	if crossBackend {
		cfgA = writeConfig(t, dirA, "", "")
	}
	st := openStore(t, cfgA)
	_, ok := st.(mailstore.Transfer)
	st.Close()
	if !ok {
		t.Skipf("the %s store does not implement mailstore.Transfer", testBackend())
	}
	users := []struct{ name, pass string }{{"alice@test.example", "alice-Passw0rd"}, {"bob@test.example", "bob-Passw0rd"}}
	for _, u := range users {
		if _, stderr, code := letterbox(t, u.pass+"\n", "user", "add", "--config", cfgA, u.name); code != 0 {
			t.Fatalf("user add %s: exit %d: %s", u.name, code, stderr)
		}
	}
	if _, stderr, code := letterbox(t, "", "user", "quota", "--config", cfgA, "alice@test.example", "10M", "500"); code != 0 {
		t.Fatalf("user quota: exit %d: %s", code, stderr)
	}

	srvA := startServer(t, dirA, "--config", cfgA)
	msg := func(i int, extra string) []byte {
		return []byte(fmt.Sprintf("From: s@example.org\r\nTo: alice@test.example\r\nSubject: message %d\r\nMessage-ID: <m%d@x>\r\n\r\n"+
			"Hello %d.\r\n.leading dot\r\nGrüße, 東京\r\n%s", i, i, i, extra))
	}
	big := strings.Repeat("a long line of the big message body, padded to make it longer still\r\n", 4000)
	for i := 1; i <= 5; i++ {
		extra := ""
		if i == 4 {
			extra = big
		}
		lmtpDeliver(t, srvA.Addr("lmtp"), "alice@test.example", msg(i, extra))
	}
	lmtpDeliver(t, srvA.Addr("lmtp"), "bob@test.example", msg(1, ""))
	lmtpDeliver(t, srvA.Addr("lmtp"), "bob@test.example", msg(6, ""))
	if _, stderr, code := letterbox(t, string(msg(7, "")), "deliver", "--config", cfgA, "bob@test.example"); code != 0 {
		t.Fatalf("deliver: exit %d: %s", code, stderr)
	}

	c := storeTestDial(t, srvA.Addr("imap"))
	c.imap(`LOGIN "alice@test.example" "alice-Passw0rd"`)
	c.imap(`CREATE "Work/Projects"`)
	c.imap(`CREATE Lists`)
	c.imap(`SUBSCRIBE "Work/Projects"`)
	c.imap(`UNSUBSCRIBE Junk`)
	c.appendMsg(`"Work/Projects"`, `\Seen $Label1`, msg(8, ""))
	c.appendMsg("Lists", `\Draft`, msg(9, big))
	c.imap("SELECT INBOX")
	c.imap(`UID STORE 1 +FLAGS (\Seen $Important)`)
	c.imap(`UID STORE 2 +FLAGS (\Flagged \Answered)`)
	c.imap(`UID COPY 1:2 "Work/Projects"`)
	c.imap(`UID STORE 3 +FLAGS (\Deleted)`)
	c.imap(`UID EXPUNGE 3`)
	c.imap(`UID STORE 1 -FLAGS ($Important)`)
	// The last UID, last: UIDNEXT and HIGHESTMODSEQ stay above every
	// message's.
	c.imap(`UID STORE 5 +FLAGS (\Deleted)`)
	c.imap(`UID EXPUNGE 5`)
	c.imap("LOGOUT")
	p := storeTestDial(t, srvA.Addr("pop3"))
	p.pop3("USER bob@test.example", false)
	p.pop3("PASS bob-Passw0rd", false)
	p.pop3("RETR 1", true)
	p.pop3("DELE 2", false)
	p.pop3("QUIT", false)

	want := map[string]string{}
	for _, u := range users {
		want[u.name] = clientView(t, srvA, u.name, u.pass)
	}
	for _, s := range []string{"VANISHED (EARLIER) 3,5", `"Work/Projects"`, "UIDL\n1 ", "$Label1", "QUOTA"} {
		if !strings.Contains(want["alice@test.example"], s) {
			t.Fatalf("alice's view lacks %q; the test does not test what it says:\n%s", s, want["alice@test.example"])
		}
	}
	if !strings.Contains(want["bob@test.example"], "VANISHED (EARLIER) 2") {
		t.Fatalf("bob's view lacks the POP3 deletion:\n%s", want["bob@test.example"])
	}
	type creds struct{ hash, secret string }
	wantCreds := map[string]creds{}
	for _, u := range users {
		h, s := storedCredentials(t, cfgA, u.name)
		wantCreds[u.name] = creds{h, s}
	}
	if code := srvA.Stop(t); code != 0 {
		t.Fatalf("server A exit %d", code)
	}

	stdout, stderr, code := letterbox(t, "", "store", "copy", "--from", cfgA, "--to", cfgB)
	if code != 0 {
		t.Fatalf("store copy: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	// 2 accounts with 6 default mailboxes each, 2 created; INBOX 3 + 2
	// copies + 1 + 1 appended for alice, 2 for bob.
	if !strings.HasPrefix(stdout, "copied 2 accounts, 14 mailboxes, 9 messages (") || !strings.Contains(stdout, "3 expunge-log entries") {
		t.Fatalf("store copy summary: %q", stdout)
	}

	srvB := startServer(t, dirB, "--config", cfgB)
	for _, u := range users {
		if got := clientView(t, srvB, u.name, u.pass); got != want[u.name] {
			t.Fatalf("%s on the copy differs: %s", u.name, firstDiff(got, want[u.name]))
		}
		if h, s := storedCredentials(t, cfgB, u.name); (creds{h, s}) != wantCreds[u.name] || s == "" {
			t.Fatalf("%s: credentials on the copy %q %q, want %+v", u.name, h, s, wantCreds[u.name])
		}
	}

	// New mail on the copy continues where the source left off.
	validity, uidNext, highest := selectState(t, want["alice@test.example"], "INBOX")
	c = storeTestDial(t, srvB.Addr("imap"))
	c.imap(`LOGIN "alice@test.example" "alice-Passw0rd"`)
	resp := c.appendMsg("INBOX", "", msg(10, ""))
	if wantUID := fmt.Sprintf("[APPENDUID %d %d]", validity, uidNext); !strings.Contains(resp, wantUID) {
		t.Fatalf("APPEND on the copy: %q, want %s", resp, wantUID)
	}
	c.imap("SELECT INBOX")
	f := strings.Join(c.imap(fmt.Sprintf("UID FETCH %d (MODSEQ)", uidNext)), "\n")
	m := regexp.MustCompile(`MODSEQ \((\d+)\)`).FindStringSubmatch(f)
	if m == nil {
		t.Fatalf("UID FETCH MODSEQ: %q", f)
	}
	if ms, _ := strconv.ParseUint(m[1], 10, 64); ms <= highest {
		t.Fatalf("MODSEQ of new mail on the copy %d, copied HIGHESTMODSEQ %d", ms, highest)
	}
	c.imap("LOGOUT")

	// A second copy into the destination, now not empty, is refused and
	// changes nothing.
	before := map[string]string{}
	for _, u := range users {
		before[u.name] = clientView(t, srvB, u.name, u.pass)
	}
	if code := srvB.Stop(t); code != 0 {
		t.Fatalf("server B exit %d", code)
	}
	if crossBackend {
		// And back: PostgreSQL to a new embedded store.
		dirC := t.TempDir()
		cfgC := writeConfig(t, dirC, "", "")
		if stdout, stderr, code := letterbox(t, "", "store", "copy", "--from", cfgB, "--to", cfgC); code != 0 {
			t.Fatalf("store copy postgres -> sqlite: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		srvC := startServer(t, dirC, "--config", cfgC)
		for _, u := range users {
			if got := clientView(t, srvC, u.name, u.pass); got != before[u.name] {
				t.Fatalf("%s on the copy back to sqlite: %s", u.name, firstDiff(got, before[u.name]))
			}
		}
		if code := srvC.Stop(t); code != 0 {
			t.Fatalf("server C exit %d", code)
		}
	}
	stdout, stderr, code = letterbox(t, "", "store", "copy", "--from", cfgA, "--to", cfgB)
	if code == 0 || !strings.Contains(stderr, "destination store is not empty") || !strings.Contains(stderr, "unchanged") || stdout != "" {
		t.Fatalf("store copy into a non-empty store: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	srvB = startServer(t, dirB, "--config", cfgB)
	for _, u := range users {
		if got := clientView(t, srvB, u.name, u.pass); got != before[u.name] {
			t.Fatalf("%s after a refused copy: %s", u.name, firstDiff(got, before[u.name]))
		}
	}

	// The same store on both sides.
	if _, stderr, code := letterbox(t, "", "store", "copy", "--from", cfgA, "--to", cfgA); code != exitUsage || !strings.Contains(stderr, "the same store") {
		t.Fatalf("store copy onto itself: exit %d: %s", code, stderr)
	}
	if _, stderr, code := letterbox(t, "", "store", "copy", "--from", cfgA); code != exitUsage || !strings.Contains(stderr, "server") {
		t.Fatalf("store copy without --to: exit %d: %s", code, stderr)
	}
	if stdout, stderr, code := letterbox(t, "", "store", "migrate", "--config", cfgB); code != 0 || stdout != "schema up to date\n" {
		t.Fatalf("store migrate: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}
