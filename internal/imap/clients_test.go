package imap

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPythonImaplib runs testdata/imaplib_client.py, an independent IMAP
// client, against the server.
func TestPythonImaplib(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	e := newEnv(t, envOptions{})
	body := "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: imaplib test\r\n\r\n" +
		"Line one\r\n.dot line\r\n\r\nNon-ASCII: caf\xc3\xa9\r\n"
	e.deliver(body)
	expected := filepath.Join(t.TempDir(), "expected.eml")
	if err := os.WriteFile(expected, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(e.addr, ":")
	out, err := exec.Command(py, "testdata/imaplib_client.py", host, port, testUser, testPassword, expected).CombinedOutput()
	want := strings.Join([]string{"ok capabilities", "ok login", "ok list", "ok select", "ok fetch RFC822 byte-exact",
		"ok fetch set \\Seen", "ok uid fetch header fields", "ok store", "ok expunge", "ok status", "ok append", "ok logout", ""}, "\n")
	if err != nil || string(out) != want {
		t.Fatalf("imaplib_client.py: %v\n%s", err, out)
	}
	ms := e.messages()
	if len(ms) != 1 || ms[0].UID != 2 || !ms[0].HasFlag(`\Flagged`) {
		t.Fatalf("INBOX after the script: %+v", ms)
	}
}

// TestCurl lists mailboxes and fetches a message byte-exact with curl's
// IMAP client.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("LETTERBOX_E2E") == "1" {
			t.Fatal("curl not installed")
		}
		t.Skip("curl not installed")
	}
	e := newEnv(t, envOptions{})
	body := "From: Bob <bob@example.org>\r\nSubject: curl test\r\n\r\nHello curl\r\n.\r\nend\r\n"
	e.deliver(body)
	run := func(url string) string {
		t.Helper()
		out, err := exec.Command(curl, "-sS", "--max-time", "60", "--user", testUser+":"+testPassword, url).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", url, err, out)
		}
		return string(out)
	}
	base := "imap://" + e.addr + "/"
	if got, want := run(base), strings.Join([]string{
		`* LIST (\HasNoChildren \Archive) "/" "Archive"`, `* LIST (\HasNoChildren \Drafts) "/" "Drafts"`,
		`* LIST (\HasNoChildren) "/" "INBOX"`, `* LIST (\HasNoChildren \Junk) "/" "Junk"`,
		`* LIST (\HasNoChildren \Sent) "/" "Sent"`, `* LIST (\HasNoChildren \Trash) "/" "Trash"`, ""}, "\r\n"); got != want {
		t.Fatalf("curl list:\n%q\nwant\n%q", got, want)
	}
	if got := run(base + "INBOX;UID=1"); got != body {
		t.Fatalf("curl fetch:\n%q\nwant\n%q", got, body)
	}
	if got := run(base + "INBOX;UID=1;SECTION=HEADER.FIELDS%20(SUBJECT)"); got != "Subject: curl test\r\n\r\n" {
		t.Fatalf("curl fetch section: %q", got)
	}
}

// TestFetchmailIMAP: fetchmail retrieves every message byte-exact over
// IMAP and, without keep, deletes them (STORE \Deleted, EXPUNGE).
func TestFetchmailIMAP(t *testing.T) {
	fetchmail, err := exec.LookPath("fetchmail")
	if err != nil {
		if os.Getenv("LETTERBOX_E2E") == "1" {
			t.Fatal("fetchmail not installed")
		}
		t.Skip("fetchmail not installed")
	}
	e := newEnv(t, envOptions{})
	bodies := e.deliverN(3)
	work := t.TempDir()
	out := filepath.Join(work, "out")
	os.MkdirAll(out, 0o755)
	mda := filepath.Join(work, "mda.sh")
	os.WriteFile(mda, []byte("#!/bin/sh\nexec cat > \"$1/$(date +%s%N).$$\"\n"), 0o755)
	_, port, _ := strings.Cut(e.addr, ":")
	rc := "set no bouncemail\nset invisible\npoll 127.0.0.1 with proto IMAP service " + port + "\n" +
		"  user \"" + testUser + "\" there with password \"" + testPassword + "\" is root here\n" +
		"  nokeep fetchall no stripcr sslproto '' mda \"" + mda + " " + out + "\"\n"
	rcPath := filepath.Join(work, "fetchmailrc")
	os.WriteFile(rcPath, []byte(rc), 0o600)
	cmd := exec.Command(fetchmail, "-f", rcPath, "--nodetach", "--nosyslog", "-v")
	cmd.Env = append(os.Environ(), "HOME="+work, "FETCHMAILHOME="+work)
	if outb, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fetchmail: %v\n%s", err, outb)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, de := range ents {
		b, err := os.ReadFile(filepath.Join(out, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[string(b)] = true
	}
	for _, b := range bodies {
		if !got[b] {
			t.Errorf("message not fetched byte-exact: %q (got %d files)", b, len(ents))
		}
	}
	if len(ents) != len(bodies) {
		t.Errorf("fetched %d messages, want %d", len(ents), len(bodies))
	}
	if left := e.messages(); len(left) != 0 {
		t.Fatalf("%d messages left after fetchmail nokeep", len(left))
	}
}

// TestGetmailIMAP: getmail's SimpleIMAPRetriever fetches every message
// into a Maildir and, with delete, removes them from the server.
func TestGetmailIMAP(t *testing.T) {
	getmail, err := exec.LookPath("getmail")
	if err != nil {
		if os.Getenv("LETTERBOX_E2E") == "1" {
			t.Fatal("getmail not installed")
		}
		t.Skip("getmail not installed")
	}
	e := newEnv(t, envOptions{})
	bodies := e.deliverN(3)
	// getmail refuses to deliver as root: run it as nobody in a
	// directory nobody may write.
	work, err := os.MkdirTemp("", "letterbox-imap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	maildir := filepath.Join(work, "Maildir")
	for _, d := range []string{work, maildir, filepath.Join(maildir, "tmp"), filepath.Join(maildir, "new"), filepath.Join(maildir, "cur")} {
		os.MkdirAll(d, 0o700)
		if os.Geteuid() == 0 {
			os.Chown(d, 65534, 65534)
		}
	}
	host, port, _ := strings.Cut(e.addr, ":")
	rc := "[retriever]\ntype = SimpleIMAPRetriever\nserver = " + host + "\nport = " + port + "\nusername = " + testUser +
		"\npassword = " + testPassword + "\nmailboxes = (\"INBOX\",)\ntimeout = 30\n\n[destination]\ntype = Maildir\npath = " + maildir +
		"/\n\n[options]\nverbose = 1\nread_all = true\ndelete = true\nreceived = false\ndelivered_to = false\n"
	rcPath := filepath.Join(work, "getmailrc")
	os.WriteFile(rcPath, []byte(rc), 0o644)
	args := []string{"--getmaildir", work, "--rcfile", rcPath}
	for attempt := 1; ; attempt++ {
		cmd := exec.Command(getmail, args...)
		if os.Geteuid() == 0 {
			cmd = exec.Command("setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", getmail}, args...)...)
		}
		out, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		// getmail6 sometimes loses the SIGCHLD of its own delivery child
		// and gives up after its timeout (getmail6 issue #226, a race in
		// the client; seen here about once in 15 runs under load). The
		// delivery itself happened; a rerun fetches again (read_all), and
		// the check below compares the set of distinct messages.
		if attempt < 3 && strings.Contains(string(out), "waiting child pid") {
			t.Logf("getmail lost its delivery child (client race), retrying:\n%s", out)
			continue
		}
		t.Fatalf("getmail: %v\n%s", err, out)
	}
	ents, err := os.ReadDir(filepath.Join(maildir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, de := range ents {
		b, _ := os.ReadFile(filepath.Join(maildir, "new", de.Name()))
		// getmail adds a Return-Path of its own (there is no envelope
		// sender in IMAP).
		var kept []string
		for _, l := range strings.SplitAfter(string(b), "\n") {
			if !strings.HasPrefix(l, "Return-Path: <unknown>") && !strings.HasPrefix(l, "X-getmail-retrieved-from-mailbox:") {
				kept = append(kept, l)
			}
		}
		got[strings.Join(kept, "")] = true
	}
	// Maildir stores LF line endings.
	for _, b := range bodies {
		if lf := strings.ReplaceAll(b, "\r\n", "\n"); !got[lf] {
			t.Errorf("message not fetched: %q (%d files: %v)", lf, len(ents), got)
		}
	}
	if left := e.messages(); len(left) != 0 {
		t.Fatalf("%d messages left after getmail delete", len(left))
	}
}
