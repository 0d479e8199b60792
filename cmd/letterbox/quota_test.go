package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"none", 0}, {"Unlimited", 0}, {"1", 1}, {"1000", 1000},
		{"10K", 10 << 10}, {"10k", 10 << 10}, {"10KB", 10 << 10}, {"10KiB", 10 << 10},
		{"500M", 500 << 20}, {"500MB", 500 << 20}, {"2G", 2 << 30}, {"2gib", 2 << 30}, {"1T", 1 << 40},
		{"7B", 7},
	} {
		got, err := parseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "-1", "+5", "1.5G", "G", "5X", "5 M", "10MM", "9999999999999T", "MB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
	for _, n := range []int64{1, 1000, 1024, 1536, 500 << 20, 2 << 30, 3 << 40, 1<<40 + 1} {
		if got, err := parseSize(formatSize(n)); err != nil || got != n {
			t.Errorf("parseSize(formatSize(%d) = %q) = %d, %v", n, formatSize(n), got, err)
		}
	}
	if formatSize(500<<20) != "500M" || formatSize(1536) != "1536" || formatSize(3<<10) != "3K" {
		t.Errorf("formatSize: %q %q %q", formatSize(500<<20), formatSize(1536), formatSize(3<<10))
	}
	for _, in := range []string{"-1", "+1", "x", ""} {
		if _, err := parseCount(in); err == nil {
			t.Errorf("parseCount(%q): no error", in)
		}
	}
}

// TestUserQuotaWhileServing: `letterbox user quota` changes a running
// server's behaviour at once: a delivery over the new limit is refused
// (552 5.2.2 at RCPT over SMTP, exit 77 from `letterbox deliver`, 75 with
// over_quota = "defer") while another recipient of the same message gets
// it; after the limit is raised the same delivery is accepted. The change
// is in the audit log, and `user list --quota` shows limits and usage.
func TestUserQuotaWhileServing(t *testing.T) {
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir, "")
	for _, u := range []string{"alice@test.example", "bob@test.example"} {
		if _, stderr, code := letterbox(t, "pw\n", "user", "add", "--config", cfg, u); code != 0 {
			t.Fatalf("user add %s: exit %d: %s", u, code, stderr)
		}
	}
	p := startServer(t, dataDir, "--config", cfg)

	quota := func(args ...string) string {
		t.Helper()
		stdout, stderr, code := letterbox(t, "", append([]string{"user", "quota", "--config", cfg}, args...)...)
		if code != 0 {
			t.Fatalf("user quota %v: exit %d: %s", args, code, stderr)
		}
		return stdout
	}
	if got := quota("alice@test.example"); got != "alice@test.example: storage 0 octets (no limit), messages 0 (no limit)\n" {
		t.Fatalf("user quota (show): %q", got)
	}
	if got := quota("Alice@Test.Example", "1K"); got != "alice@test.example: storage 0 of 1024 octets (1K), messages 0 (no limit)\n" {
		t.Fatalf("user quota 1K: %q", got)
	}

	msg := "From: s@client.example\r\nSubject: quota\r\n\r\n" + strings.Repeat(strings.Repeat("0123456789", 10)+"\r\n", 20)
	send := func(wantAlice string) {
		t.Helper()
		c, r := dialText(t, p.Addr("smtp"))
		defer c.Close()
		expect(t, c, r, "", "220 ")
		expect(t, c, r, "EHLO client.example\r\n", "250")
		// SIZE (RFC 1870) lets RCPT answer for the quota.
		expect(t, c, r, "MAIL FROM:<s@client.example> SIZE="+strconv.Itoa(len(msg))+"\r\n", "250 ")
		if got := expect(t, c, r, "RCPT TO:<alice@test.example>\r\n", ""); !strings.HasPrefix(got, wantAlice) {
			t.Fatalf("RCPT alice: %q, want %q...", got, wantAlice)
		}
		expect(t, c, r, "RCPT TO:<bob@test.example>\r\n", "250 ")
		expect(t, c, r, "DATA\r\n", "354 ")
		expect(t, c, r, msg+".\r\n", "250 2.0.0 Ok: delivered as ")
		expect(t, c, r, "QUIT\r\n", "221 ")
	}
	// Full: alice refused, bob still gets the message.
	send("552 5.2.2 Mailbox is full (quota exceeded)\r\n")
	if got := quota("alice@test.example"); got != "alice@test.example: storage 0 of 1024 octets (1K), messages 0 (no limit)\n" {
		t.Fatalf("alice after the refused delivery: %q", got)
	}
	if got := quota("bob@test.example"); !strings.HasPrefix(got, "bob@test.example: storage 2") || !strings.HasSuffix(got, " octets (no limit), messages 1 (no limit)\n") {
		t.Fatalf("bob after the delivery: %q", got)
	}

	// `letterbox deliver` (the MDA) next to the server: 77 EX_NOPERM as
	// dovecot-lda -e, or 75 EX_TEMPFAIL with over_quota = "defer".
	_, stderr, code := letterbox(t, msg, "deliver", "--config", cfg, "alice@test.example")
	if code != 77 || !strings.Contains(stderr, "alice@test.example: over-quota: Mailbox is full (quota exceeded)") {
		t.Fatalf("deliver over quota: exit %d, stderr %q; want 77", code, stderr)
	}
	deferCfg := filepath.Join(t.TempDir(), "defer.toml")
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(deferCfg, append(text, "\n[quota]\nover_quota = \"defer\"\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = letterbox(t, msg, "deliver", "--config", deferCfg, "alice@test.example")
	if code != 75 || !strings.Contains(stderr, "over-quota-temp: Mailbox is full (quota exceeded), try again later") {
		t.Fatalf("deliver over quota (defer): exit %d, stderr %q; want 75", code, stderr)
	}

	// Raised (with a message limit): accepted at once.
	if got := quota("alice@test.example", "1M", "10"); got != "alice@test.example: storage 0 of 1048576 octets (1M), messages 0 of 10\n" {
		t.Fatalf("user quota 1M 10: %q", got)
	}
	send("250 ")
	if _, stderr, code := letterbox(t, msg, "deliver", "--config", cfg, "alice@test.example"); code != 0 {
		t.Fatalf("deliver: exit %d: %s", code, stderr)
	}
	got := quota("alice@test.example")
	if !strings.HasPrefix(got, "alice@test.example: storage ") || !strings.HasSuffix(got, " of 1048576 octets (1M), messages 2 of 10\n") {
		t.Fatalf("alice after two deliveries: %q", got)
	}
	// SIZE alone keeps the message limit.
	if got := quota("alice@test.example", "2M"); !strings.HasSuffix(got, " of 2097152 octets (2M), messages 2 of 10\n") {
		t.Fatalf("user quota 2M: %q", got)
	}

	stdout, _, code := letterbox(t, "", "user", "list", "--config", cfg, "--quota")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasSuffix(lines[0], " of 2097152 octets (2M), messages 2 of 10") ||
		!strings.HasPrefix(lines[1], "bob@test.example: storage ") {
		t.Fatalf("user list --quota: exit %d %q", code, stdout)
	}
	if stdout, _, _ := letterbox(t, "", "user", "list", "--config", cfg); stdout != "alice@test.example\nbob@test.example\n" {
		t.Fatalf("user list: %q", stdout)
	}

	// Errors.
	if _, stderr, code := letterbox(t, "", "user", "quota", "--config", cfg, "nobody@test.example", "1M"); code != 67 || !strings.Contains(stderr, "no such account") {
		t.Fatalf("quota of an unknown account: exit %d %q", code, stderr)
	}
	if _, stderr, code := letterbox(t, "", "user", "quota", "--config", cfg, "alice@test.example", "lots"); code != 65 || !strings.Contains(stderr, `SIZE "lots"`) {
		t.Fatalf("bad SIZE: exit %d %q", code, stderr)
	}
	if _, _, code := letterbox(t, "", "user", "quota", "--config", cfg); code != 64 {
		t.Fatalf("quota without ADDRESS: exit %d", code)
	}
	if _, _, code := letterbox(t, "", "user", "del", "--config", cfg, "--quota", "bob@test.example"); code != 64 {
		t.Fatalf("user del --quota: exit %d", code)
	}

	audit, err := os.ReadFile(filepath.Join(dataDir, "audit", "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"event":"admin.user_quota","proto":"cli","user":"alice@test.example","actor":"uid=`,
		`"detail":"storage=1024 messages=0"`, `"detail":"storage=1048576 messages=10"`, `"detail":"storage=2097152 messages=10"`,
	} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("audit log lacks %s:\n%s", want, audit)
		}
	}
	if stdout, stderr, code := letterbox(t, "", "audit", "verify", "--config", cfg); code != 0 {
		t.Errorf("audit verify: exit %d %s %s", code, stdout, stderr)
	}
}
