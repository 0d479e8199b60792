package pop3

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// requireTool returns the path of an external program, skipping the test
// when it is absent unless LETTERBOX_E2E=1 (design.md §6).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("LETTERBOX_E2E") == "1" {
			t.Fatalf("%s not found and LETTERBOX_E2E=1: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s %q: %v\nstderr:\n%s\nstdout:\n%s", name, args, err, ee.Stderr, out)
		}
		t.Fatalf("%s %q: %v", name, args, err)
	}
	return out
}

func TestPythonPoplib(t *testing.T) {
	python := requireTool(t, "python3")
	e := newEnv(t, envOptions{})
	bodies := []string{msg1, msg2, msg3}
	var uids []mailstore.UID
	total := 0
	for _, b := range bodies {
		uids = append(uids, e.deliver(b))
		total += wantSize(b)
	}
	host, port, _ := net.SplitHostPort(e.addr)
	dir := t.TempDir()
	out := runTool(t, python, filepath.Join("testdata", "poplib_client.py"), host, port, testUser, testPassword, dir)

	var got struct {
		Welcome, User, Pass, Dele, Quit string
		Uidl1                           string `json:"uidl_1"`
		RetrDeleted                     string `json:"retr_deleted"`
		Capa, List, Uidl, Top           []string
		Stat                            []int
		Retr                            map[string]struct {
			Resp                string
			Octets, Len, Listed int
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decoding %s: %v", out, err)
	}

	v := e.inbox.UIDValidity
	check := func(what, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %q, want %q", what, got, want)
		}
	}
	check("welcome", got.Welcome, "+OK pop.test Letterbox POP3 server ready")
	wantCapa := []string{"AUTH-RESP-CODE", "EXPIRE", "IMPLEMENTATION", "PIPELINING", "RESP-CODES", "SASL", "TOP", "UIDL", "USER"}
	if !slices.Equal(got.Capa, wantCapa) {
		t.Errorf("capa = %q, want %q", got.Capa, wantCapa)
	}
	check("user", got.User, "+OK send PASS")
	check("pass", got.Pass, "+OK maildrop locked and ready, 3 messages")
	if !slices.Equal(got.Stat, []int{3, total}) {
		t.Errorf("stat = %v, want [3 %d]", got.Stat, total)
	}
	var wantList, wantUIDL []string
	for i, b := range bodies {
		wantList = append(wantList, fmt.Sprintf("%d %d", i+1, wantSize(b)))
		wantUIDL = append(wantUIDL, fmt.Sprintf("%d %d.%d", i+1, v, uids[i]))
	}
	if !slices.Equal(got.List, wantList) {
		t.Errorf("list = %q, want %q", got.List, wantList)
	}
	if !slices.Equal(got.Uidl, wantUIDL) {
		t.Errorf("uidl = %q, want %q", got.Uidl, wantUIDL)
	}
	check("uidl 1", got.Uidl1, "+OK "+wantUIDL[0])
	for i, b := range bodies {
		n := fmt.Sprint(i + 1)
		r := got.Retr[n]
		size := wantSize(b)
		check("retr "+n, r.Resp, fmt.Sprintf("+OK %d octets", size))
		if r.Octets != size || r.Len != size || r.Listed != size {
			t.Errorf("message %s: poplib counted %d octets, received %d, LIST said %d; want %d",
				n, r.Octets, r.Len, r.Listed, size)
		}
		data, err := os.ReadFile(filepath.Join(dir, n+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		if want := b + lineEndFix([]byte(b[len(b)-2:])); string(data) != want {
			t.Errorf("message %s: poplib received %q, delivered %q", n, data, want)
		}
	}
	if want := []string{"From: bob@example.org", "To: alice@example.org", "Subject: one", ""}; !slices.Equal(got.Top, want) {
		t.Errorf("top = %q, want %q", got.Top, want)
	}
	check("dele", got.Dele, "+OK message 1 deleted")
	check("retr deleted", got.RetrDeleted, "-ERR message 1 already deleted")
	check("quit", got.Quit, "+OK pop.test Letterbox POP3 server signing off (1 message deleted)")

	ms := e.messages()
	if len(ms) != 2 || ms[0].UID != uids[1] || ms[1].UID != uids[2] {
		t.Errorf("messages after poplib QUIT: %+v", ms)
	}
}

func TestCurl(t *testing.T) {
	curl := requireTool(t, "curl")
	e := newEnv(t, envOptions{})
	e.deliver(msg1)
	e.deliver(msg2)
	base := "pop3://" + e.addr + "/"
	args := []string{"-sS", "--max-time", "20", "-u", testUser + ":" + testPassword}

	list := runTool(t, curl, append(args, base)...)
	if want := fmt.Sprintf("1 %d\r\n2 %d\r\n", wantSize(msg1), wantSize(msg2)); string(list) != want {
		t.Errorf("curl LIST = %q, want %q", list, want)
	}
	for i, b := range []string{msg1, msg2} {
		got := runTool(t, curl, append(args, fmt.Sprintf("%s%d", base, i+1))...)
		want := b + lineEndFix([]byte(b[len(b)-2:]))
		if string(got) != want {
			t.Errorf("curl RETR %d = %q, want %q", i+1, got, want)
		}
		if len(got) != wantSize(b) {
			t.Errorf("curl RETR %d: %d octets, LIST says %d", i+1, len(got), wantSize(b))
		}
	}
	if n := len(e.messages()); n != 2 {
		t.Errorf("%d messages after curl, want 2", n)
	}
}
