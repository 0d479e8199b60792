package smtp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// needTool skips the test when an external client is not installed, unless
// LETTERBOX_E2E=1 (design.md §6), where its absence is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("LETTERBOX_E2E") == "1" {
			t.Fatalf("%s not installed (LETTERBOX_E2E=1)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return path
}

type pyResult struct {
	Features map[string]string `json:"features"`
	Refused  map[string][2]any `json:"refused"`
	Replies  [][2]any          `json:"replies"`
	Sent     string            `json:"sent"`
	TLS      string            `json:"tls"`
	Error    map[string]any    `json:"error"`
}

func (r *pyResult) sent(t *testing.T) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(r.Sent)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sendPython runs testdata/send_message.py against e.
func sendPython(t *testing.T, e *testEnv, body string, args ...string) *pyResult {
	t.Helper()
	py := needTool(t, "python3")
	_, port, _ := net.SplitHostPort(e.addr)
	bodyFile := filepath.Join(t.TempDir(), "body.txt")
	if err := os.WriteFile(bodyFile, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, append([]string{"testdata/send_message.py", "--port", port, "--body-file", bodyFile}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("send_message.py: %v\n%s", err, stderr.String())
	}
	var r pyResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("send_message.py output %q: %v", out, err)
	}
	return &r
}

func replyOf(t *testing.T, r [2]any) (int, string) {
	t.Helper()
	code, ok1 := r[0].(float64)
	text, ok2 := r[1].(string)
	if !ok1 || !ok2 {
		t.Fatalf("bad reply %v", r)
	}
	return int(code), text
}

const pyBody = "Hello from smtplib.\n.A line starting with a dot.\n..and two.\n"

func TestPythonSMTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := sendPython(t, e, pyBody, "--from", "sender@client.example",
		"--to", "user+py@example.org", "--to", "nobody@example.org", "--to", "someone@example.net", "--to", "b@example.org")
	if r.Error != nil {
		t.Fatalf("smtplib error %v", r.Error)
	}
	for k, want := range map[string]string{"size": "52428800", "pipelining": "", "8bitmime": "", "smtputf8": "", "chunking": "", "enhancedstatuscodes": ""} {
		if got, ok := r.Features[k]; !ok || got != want {
			t.Errorf("feature %s = %q, %v", k, got, ok)
		}
	}
	if len(r.Features) != 6 {
		t.Errorf("features %v", r.Features)
	}
	if len(r.Refused) != 2 {
		t.Errorf("refused %v", r.Refused)
	}
	if code, text := replyOf(t, r.Refused["nobody@example.org"]); code != 550 || !strings.HasPrefix(text, "5.1.1 ") {
		t.Errorf("nobody@: %d %q", code, text)
	}
	if code, text := replyOf(t, r.Refused["someone@example.net"]); code != 554 || !strings.HasPrefix(text, "5.7.1 Relaying denied") {
		t.Errorf("someone@example.net: %d %q", code, text)
	}
	if len(r.Replies) != 1 {
		t.Fatalf("replies %v", r.Replies)
	}
	code, text := replyOf(t, r.Replies[0])
	if code != 250 || !strings.HasPrefix(text, "2.0.0 Ok: delivered as ") {
		t.Errorf("DATA reply %d %q", code, text)
	}
	id := strings.TrimPrefix(text, "2.0.0 Ok: delivered as ")
	sent := r.sent(t)
	if !bytes.Contains(sent, []byte("\r\n.A line starting with a dot.\r\n..and two.\r\n")) {
		t.Fatalf("the script did not send the dotted lines: %q", sent)
	}
	for _, a := range []string{"user@example.org", "b@example.org"} {
		trace, body := stripTrace(t, e.only(a))
		if !bytes.Equal(body, sent) {
			t.Errorf("%s: stored %q\nsent %q", a, body, sent)
		}
		if !strings.Contains(trace, "with ESMTP id "+id+";") {
			t.Errorf("%s: trace %q", a, trace)
		}
	}
}

func TestPythonSTARTTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withTLS)
	r := sendPython(t, e, pyBody, "--starttls", e.caFile, "--from", "sender@client.example", "--to", "a@example.org")
	if r.Error != nil {
		t.Fatalf("smtplib error %v", r.Error)
	}
	if r.TLS != "TLSv1.3" {
		t.Errorf("TLS version %q", r.TLS)
	}
	if _, ok := r.Features["starttls"]; ok {
		t.Error("STARTTLS advertised after STARTTLS")
	}
	trace, body := stripTrace(t, e.only("a@example.org"))
	if !bytes.Equal(body, r.sent(t)) {
		t.Errorf("stored %q", body)
	}
	if !strings.Contains(trace, "\r\n\t(using TLSv1.3 with cipher TLS_") || !strings.Contains(trace, " with ESMTPS id ") {
		t.Errorf("trace %q", trace)
	}
}

func TestPythonSIZE(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withMaxSize(1000))
	r := sendPython(t, e, strings.Repeat("0123456789\n", 150), "--from", "sender@client.example", "--to", "a@example.org")
	if r.Features["size"] != "1000" {
		t.Errorf("SIZE %q", r.Features["size"])
	}
	if r.Error == nil || r.Error["type"] != "SMTPSenderRefused" || r.Error["code"] != float64(552) ||
		!strings.HasPrefix(r.Error["text"].(string), "5.3.4 ") {
		t.Errorf("error %v, want SMTPSenderRefused 552 5.3.4", r.Error)
	}
	if n := e.count("a@example.org"); n != 0 {
		t.Errorf("%d messages stored", n)
	}
}

func TestPythonSMTPUTF8(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := sendPython(t, e, "Grüße, Jörg!\n", "--from", "josé@client.example", "--to", "jörg@example.org", "--subject", "Übung")
	if r.Error != nil {
		t.Fatalf("smtplib error %v", r.Error)
	}
	trace, body := stripTrace(t, e.only("jörg@example.org"))
	if !bytes.Equal(body, r.sent(t)) {
		t.Errorf("stored %q\nsent %q", body, r.sent(t))
	}
	if !strings.HasPrefix(trace, "Return-Path: <josé@client.example>\r\n") || !strings.Contains(trace, " with UTF8SMTP id ") {
		t.Errorf("trace %q", trace)
	}
}

func TestPythonLMTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withLMTP)
	r := sendPython(t, e, pyBody, "--lmtp", "--from", "sender@client.example",
		"--to", "a@example.org", "--to", "nobody@example.org", "--to", "b+x@example.org")
	if r.Error != nil {
		t.Fatalf("smtplib error %v", r.Error)
	}
	if code, _ := replyOf(t, r.Refused["nobody@example.org"]); code != 550 || len(r.Refused) != 1 {
		t.Errorf("refused %v", r.Refused)
	}
	if len(r.Replies) != 2 {
		t.Fatalf("replies %v, want one per accepted recipient", r.Replies)
	}
	for i, rcpt := range []string{"a@example.org", "b+x@example.org"} {
		code, text := replyOf(t, r.Replies[i])
		if code != 250 || !strings.HasPrefix(text, "2.0.0 <"+rcpt+"> Ok: delivered as ") {
			t.Errorf("reply %d: %d %q", i, code, text)
		}
	}
	for _, a := range []string{"a@example.org", "b@example.org"} {
		trace, body := stripTrace(t, e.only(a))
		if !bytes.Equal(body, r.sent(t)) || !strings.Contains(trace, " with LMTP id ") {
			t.Errorf("%s: %q%q", a, trace, body)
		}
	}
}

func TestCurl(t *testing.T) {
	t.Parallel()
	curl := needTool(t, "curl")
	e := newEnv(t)
	msg := "From: sender@client.example\r\nTo: user@example.org\r\nSubject: curl\r\n\r\nsent by curl\r\n.dot line\r\n"
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(curl, "--silent", "--show-error", "--url", "smtp://"+e.addr+"/client.example",
		"--mail-from", "sender@client.example", "--mail-rcpt", "user@example.org", "--upload-file", file)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	trace, body := stripTrace(t, e.only("user@example.org"))
	if string(body) != msg {
		t.Errorf("stored %q, want %q", body, msg)
	}
	if !strings.HasPrefix(trace, "Return-Path: <sender@client.example>\r\nReceived: from client.example ([127.0.0.1])\r\n") {
		t.Errorf("trace %q", trace)
	}

	// A refused recipient makes curl fail.
	cmd = exec.Command(curl, "--silent", "--show-error", "--url", "smtp://"+e.addr+"/client.example",
		"--mail-from", "sender@client.example", "--mail-rcpt", "nobody@example.org", "--upload-file", file)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "550") {
		t.Errorf("curl to an unknown user: %v\n%s", err, out)
	}
}
