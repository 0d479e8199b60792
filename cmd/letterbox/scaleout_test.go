package main

// Scale-out tests: two `letterbox serve` processes ("nodes") on different
// ports share one PostgreSQL database and one blob directory, as behind a
// TCP load balancer. They run in .ci/run's postgres pass
// (LETTERBOX_TEST_BACKEND=postgres).

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/config"
	"github.com/letterbox/letterbox/internal/testpg"
)

// postgresOnly skips a test that needs the postgres backend.
func postgresOnly(t *testing.T) {
	t.Helper()
	if testBackend() != config.BackendPostgres {
		t.Skip("needs the postgres backend (LETTERBOX_TEST_BACKEND=postgres with a cluster in " + testpg.EnvURL + "; .ci/run's postgres pass)")
	}
}

// cluster is n nodes on one database.
type cluster struct {
	cfgs  []string
	nodes []*serverProc
}

func startCluster(t *testing.T, n int, users ...string) *cluster {
	t.Helper()
	url := testpg.NewDatabase(t)
	blobs := t.TempDir()
	c := &cluster{}
	for i := 0; i < n; i++ {
		dataDir := t.TempDir()
		c.cfgs = append(c.cfgs, writeConfig(t, dataDir, "", postgresStoreConfig(url, blobs)))
	}
	for _, u := range users {
		if _, stderr, code := letterbox(t, "pw\n", "user", "add", "--config", c.cfgs[0], u); code != 0 {
			t.Fatalf("user add %s: %s", u, stderr)
		}
	}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, startServer(t, "", "--config", c.cfgs[i]))
	}
	return c
}

// idler is an IMAP session in IDLE on INBOX.
type idler struct {
	t *testing.T
	a *auditClient
}

func startIdle(t *testing.T, addr, user string) *idler {
	t.Helper()
	a := auditDial(t, addr, nil)
	a.imap("l", "LOGIN "+user+" pw", "OK")
	a.imap("s", "SELECT INBOX", "OK")
	fmt.Fprintf(a.c, "i IDLE\r\n")
	if l := a.line(); !strings.HasPrefix(l, "+ ") {
		t.Fatalf("IDLE: %q", l)
	}
	return &idler{t: t, a: a}
}

// await reads untagged responses until one matches re, failing after d
// (measured from now) with what arrived meanwhile.
func (i *idler) await(re *regexp.Regexp, d time.Duration, what string) time.Duration {
	i.t.Helper()
	start := time.Now()
	i.a.c.SetReadDeadline(start.Add(d))
	defer i.a.c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	var seen []string
	for {
		l, err := i.a.r.ReadString('\n')
		if err != nil {
			i.t.Fatalf("%s: not seen within %v (%v); got %q", what, d, err, seen)
		}
		l = strings.TrimRight(l, "\r\n")
		seen = append(seen, l)
		if re.MatchString(l) {
			return time.Since(start)
		}
	}
}

func testMessage(id string) []byte {
	return []byte("From: sender@example.org\r\nTo: u@test.example\r\nSubject: " + id + "\r\nMessage-ID: <" + id + "@test>\r\nX-Test-Id: " + id + "\r\n\r\nbody of " + id + "\r\n")
}

func dialLMTP(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	readReply(t, r)
	expect(t, c, r, "LHLO client.test\r\n", "250")
	return c, r
}

// TestTwoNodes: an IMAP session IDLE on node 1 sees, each within one
// second, a delivery made through node 2's LMTP, a flag change made by an
// IMAP session on node 2, and an expunge made by a POP3 session on node 2.
func TestTwoNodes(t *testing.T) {
	postgresOnly(t)
	c := startCluster(t, 2, "u@test.example")
	idle := startIdle(t, c.nodes[0].Addr("imap"), "u@test.example")

	lc, lr := dialLMTP(t, c.nodes[1].Addr("lmtp"))
	if got := lmtpSend(t, lc, lr, testMessage("m1"), "u@test.example"); !strings.HasPrefix(got[0], "250") {
		t.Fatalf("LMTP via node 2: %q", got)
	}
	d := idle.await(regexp.MustCompile(`^\* 1 EXISTS$`), time.Second, "EXISTS for a delivery via node 2")
	t.Logf("delivery on node 2 -> EXISTS on node 1: %v", d)

	b := auditDial(t, c.nodes[1].Addr("imap"), nil)
	b.imap("l", "LOGIN u@test.example pw", "OK")
	b.imap("s", "SELECT INBOX", "OK")
	b.imap("f", `UID STORE 1 +FLAGS.SILENT (\Flagged)`, "OK")
	d = idle.await(regexp.MustCompile(`^\* 1 FETCH \(.*FLAGS \([^)]*\\Flagged`), time.Second, "FETCH FLAGS for a STORE on node 2")
	t.Logf("flag change on node 2 -> FETCH on node 1: %v", d)
	b.imap("o", "LOGOUT", "OK")

	if got := lmtpSend(t, lc, lr, testMessage("m2"), "u@test.example"); !strings.HasPrefix(got[0], "250") {
		t.Fatalf("LMTP via node 2: %q", got)
	}
	idle.await(regexp.MustCompile(`^\* 2 EXISTS$`), time.Second, "EXISTS for the second delivery")

	p := auditDial(t, c.nodes[1].Addr("pop3"), nil)
	p.pop3("USER u@test.example", "+OK", false)
	p.pop3("PASS pw", "+OK", false)
	p.pop3("DELE 1", "+OK", false)
	p.pop3("QUIT", "+OK", false)
	d = idle.await(regexp.MustCompile(`^\* 1 EXPUNGE$`), time.Second, "EXPUNGE for a POP3 deletion on node 2")
	t.Logf("POP3 DELE+QUIT on node 2 -> EXPUNGE on node 1: %v", d)

	// The session on node 1 ends IDLE and sees the state node 2 made.
	fmt.Fprintf(idle.a.c, "DONE\r\n")
	for !strings.HasPrefix(idle.a.line(), "i OK") {
	}
	out := idle.a.imap("f", "UID FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (X-Test-Id)])", "OK")
	joined := strings.Join(out, "\n")
	if strings.Count(joined, "* 1 FETCH") != 1 || !strings.Contains(joined, "UID 2") || strings.Contains(joined, "UID 1 ") {
		t.Fatalf("node 1 INBOX after node 2's changes: %q", out)
	}
}

// TestTwoNodesDatabaseRestart: the database restarts while both nodes
// run and deliver. In-flight deliveries get a temporary failure (4xx),
// never a permanent one; every acknowledged message is stored exactly
// once, none twice; both nodes deliver again afterwards without being
// restarted; and an IDLE session on node 1 that lived through the restart
// is told about every message, including those committed while node 1's
// notification connection was down.
func TestTwoNodesDatabaseRestart(t *testing.T) {
	postgresOnly(t)
	pgDir := os.Getenv("LETTERBOX_TEST_PG_CTL")
	if pgDir == "" {
		t.Skip("needs LETTERBOX_TEST_PG_CTL, the cluster directory scripts/testpg prints, to restart the database")
	}
	c := startCluster(t, 2, "u@test.example")
	idle := startIdle(t, c.nodes[0].Addr("imap"), "u@test.example")

	type result struct {
		id    string
		reply string
	}
	var (
		mu       sync.Mutex
		results  []result
		progress = make(chan struct{}, 1) // signalled after each result
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for n := 0; n < 2; n++ {
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func(n, w int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("n%dw%di%d", n, w, i)
					reply, err := lmtpOnce(c.nodes[n].Addr("lmtp"), testMessage(id), "u@test.example")
					if err != nil {
						// The connection itself failed: no reply, not acknowledged.
						reply = "conn: " + err.Error()
					}
					mu.Lock()
					results = append(results, result{id, reply})
					mu.Unlock()
					select {
					case progress <- struct{}{}:
					default:
					}
				}
			}(n, w)
		}
	}
	acked := func() int {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for _, r := range results {
			if strings.HasPrefix(r.reply, "250") {
				k++
			}
		}
		return k
	}
	waitFor(t, progress, 30*time.Second, "20 deliveries before the restart", func() bool { return acked() >= 20 })
	before := acked()
	out, err := exec.Command(filepath.Join("..", "..", "scripts", "testpg"), "restart", pgDir).CombinedOutput()
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("restarting the database: %v\n%s", err, out)
	}
	waitFor(t, progress, 60*time.Second, "20 more deliveries after the restart", func() bool { return acked() >= before+20 })
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	ackedIDs := map[string]bool{}
	var temp, perm int
	for _, r := range results {
		switch {
		case strings.HasPrefix(r.reply, "250"):
			ackedIDs[r.id] = true
		case strings.HasPrefix(r.reply, "4"), strings.HasPrefix(r.reply, "conn: "):
			temp++
		default:
			perm++
			t.Errorf("%s: permanent failure %q", r.id, r.reply)
		}
	}
	t.Logf("%d deliveries: %d acknowledged, %d temporary failures during the restart", len(results), len(ackedIDs), temp)

	// Every acknowledged message exactly once. A delivery that got a 4xx
	// may still have committed (the reply was lost with the connection);
	// a real MTA would retry it, so it may appear, but at most once.
	stored := map[string]int{}
	b := auditDial(t, c.nodes[1].Addr("imap"), nil)
	b.imap("l", "LOGIN u@test.example pw", "OK")
	sel := b.imap("s", "SELECT INBOX", "OK")
	idRE := regexp.MustCompile(`X-Test-Id: (\S+)`)
	for _, body := range fetchLiterals(b, "f", "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (X-Test-Id)])") {
		if m := idRE.FindSubmatch(body); m != nil {
			stored[string(m[1])]++
		}
	}
	for id := range ackedIDs {
		if stored[id] != 1 {
			t.Errorf("acknowledged %s stored %d times", id, stored[id])
		}
	}
	total := 0
	for id, n := range stored {
		total += n
		if n > 1 {
			t.Errorf("%s stored %d times", id, n)
		}
	}
	exists := -1
	for _, l := range sel {
		if m := regexp.MustCompile(`^\* (\d+) EXISTS$`).FindStringSubmatch(l); m != nil {
			exists, _ = strconv.Atoi(m[1])
		}
	}
	if exists != total {
		t.Errorf("SELECT says %d EXISTS, the FETCH found %d messages", exists, total)
	}

	// The IDLE session on node 1 lived through the restart and hears
	// of every message: its last EXISTS is the mailbox's count.
	d := idle.await(regexp.MustCompile(fmt.Sprintf(`^\* %d EXISTS$`, total)), 10*time.Second, "EXISTS covering every stored message on the IDLE session")
	t.Logf("IDLE session on node 1 caught up %v after the load stopped", d)
}

// lmtpOnce delivers msg in one LMTP session and returns the reply to DATA
// (or the first reply that was not positive).
func lmtpOnce(addr string, msg []byte, rcpt string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(90 * time.Second))
	r := bufio.NewReader(c)
	read := func() (string, error) {
		var all string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return all, err
			}
			all += l
			if len(l) < 4 || l[3] != '-' {
				return strings.TrimRight(all, "\r\n"), nil
			}
		}
	}
	if l, err := read(); err != nil || !strings.HasPrefix(l, "220") {
		return l, err
	}
	for _, cmd := range []string{"LHLO client.test", "MAIL FROM:<sender@example.org>", "RCPT TO:<" + rcpt + ">", "DATA"} {
		fmt.Fprintf(c, "%s\r\n", cmd)
		l, err := read()
		if err != nil {
			return l, err
		}
		if !strings.HasPrefix(l, "250") && !strings.HasPrefix(l, "354") {
			return l, nil
		}
	}
	c.Write(append(msg, ".\r\n"...))
	l, err := read()
	fmt.Fprintf(c, "QUIT\r\n")
	return l, err
}

// waitFor waits until cond holds, checking it whenever progress is
// signalled, failing after d.
func waitFor(t *testing.T, progress <-chan struct{}, d time.Duration, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(d)
	for !cond() {
		select {
		case <-progress:
		case <-timeout:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

// fetchLiterals sends an IMAP command and returns the literals of its
// response (the fetched sections), failing unless it ends in OK.
func fetchLiterals(a *auditClient, tag, cmd string) [][]byte {
	a.t.Helper()
	fmt.Fprintf(a.c, "%s %s\r\n", tag, cmd)
	var out [][]byte
	for {
		l := a.line()
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				a.t.Fatalf("%s: %q", cmd, l)
			}
			return out
		}
		if m := literalRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			buf := make([]byte, n)
			if _, err := io.ReadFull(a.r, buf); err != nil {
				a.t.Fatal(err)
			}
			out = append(out, buf)
		}
	}
}

// TestDeliverCommandReachesIdle: with the postgres backend, a message
// stored by `letterbox deliver` (another process, as an MTA's local
// delivery would run it) reaches a running server's IDLE session, which
// the embedded store's in-process notifications cannot do
// (docs/architecture.md, known limits).
func TestDeliverCommandReachesIdle(t *testing.T) {
	postgresOnly(t)
	c := startCluster(t, 1, "u@test.example")
	idle := startIdle(t, c.nodes[0].Addr("imap"), "u@test.example")
	if _, stderr, code := letterbox(t, string(testMessage("d1")), "deliver", "--config", c.cfgs[0], "-f", "cron@test.example", "u@test.example"); code != 0 {
		t.Fatalf("deliver: exit %d: %s", code, stderr)
	}
	d := idle.await(regexp.MustCompile(`^\* 1 EXISTS$`), time.Second, "EXISTS for `letterbox deliver`")
	t.Logf("letterbox deliver -> EXISTS on the server's IDLE session: %v after the command exited", d)
}
