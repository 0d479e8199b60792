package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o644)
		return p
	}
	cases := []struct {
		name, file, want string
	}{
		{"unknown key", write("a.toml", "data_dir=\"d\"\ndomains=[\"x.example\"]\nbogus = 1\n"), "a.toml: bogus: unknown key"},
		{"bad address", write("b.toml", "data_dir=\"d\"\ndomains=[\"x.example\"]\n[listen]\nsmtp = \"localhost\"\n"), "b.toml: listen.smtp: invalid address"},
		{"missing cert", write("c.toml", "data_dir=\"d\"\ndomains=[\"x.example\"]\n[tls]\ncert_file=\"/nonexistent/c.pem\"\nkey_file=\"/nonexistent/k.pem\"\n"), "c.toml: tls.cert_file: cannot read"},
		{"missing file", filepath.Join(dir, "none.toml"), "none.toml: cannot read"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{{"serve", "--config", tc.file}, {"user", "list", "--config", tc.file}} {
				_, stderr, code := letterbox(t, "", args...)
				if code != 2 || !strings.Contains(stderr, tc.want) {
					t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", args, code, stderr, tc.want)
				}
			}
		})
	}
}

func TestUserCommands(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "")
	if _, stderr, code := letterbox(t, "s3cret\n", "user", "add", "--config", cfg, "Alice@Test.Example"); code != 0 {
		t.Fatalf("user add: exit %d: %s", code, stderr)
	}
	// Flags after the positional argument work too.
	if _, stderr, code := letterbox(t, "pw2\n", "user", "add", "bob@test.example", "--config", cfg); code != 0 {
		t.Fatalf("user add: exit %d: %s", code, stderr)
	}
	if _, _, code := letterbox(t, "x\n", "user", "add", "--config", cfg, "alice@test.example"); code != 65 {
		t.Fatalf("duplicate user add: exit %d, want 65", code)
	}
	if _, stderr, code := letterbox(t, "", "user", "add", "--config", cfg, "carol@test.example"); code != 65 || !strings.Contains(stderr, "no password") {
		t.Fatalf("user add without password: exit %d %q", code, stderr)
	}
	if _, stderr, code := letterbox(t, "x\n", "user", "add", "--config", cfg, "dave@elsewhere.example"); code != 0 || !strings.Contains(stderr, "not one of the local domains") {
		t.Fatalf("foreign-domain user add: exit %d %q", code, stderr)
	}
	stdout, _, code := letterbox(t, "", "user", "list", "--config", cfg)
	if code != 0 || stdout != "alice@test.example\nbob@test.example\ndave@elsewhere.example\n" {
		t.Fatalf("user list: exit %d %q", code, stdout)
	}
	if _, _, code := letterbox(t, "new\n", "user", "passwd", "--config", cfg, "alice@test.example"); code != 0 {
		t.Fatalf("passwd: exit %d", code)
	}
	if _, _, code := letterbox(t, "new\n", "user", "passwd", "--config", cfg, "nobody@test.example"); code != 67 {
		t.Fatalf("passwd of unknown user: exit %d, want 67", code)
	}
	if _, _, code := letterbox(t, "", "user", "del", "--config", cfg, "dave@elsewhere.example"); code != 0 {
		t.Fatalf("del: exit %d", code)
	}
	if _, _, code := letterbox(t, "", "user", "del", "--config", cfg, "dave@elsewhere.example"); code != 67 {
		t.Fatalf("del again: exit %d, want 67", code)
	}
	stdout, _, _ = letterbox(t, "", "user", "list", "--config", cfg)
	if stdout != "alice@test.example\nbob@test.example\n" {
		t.Fatalf("user list after del: %q", stdout)
	}
	if _, _, code := letterbox(t, "", "user", "frobnicate", "--config", cfg); code != 64 {
		t.Fatalf("unknown subcommand: exit %d, want 64", code)
	}
}

func TestUserAddRejectsNonAddresses(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "")
	for _, bad := range []string{"no-at-sign", "a b@test.example", "@test.example", "x@"} {
		if _, stderr, code := letterbox(t, "pw\n", "user", "add", "--config", cfg, bad); code != 65 || !strings.Contains(stderr, "is not an address") {
			t.Errorf("user add %q: exit %d %q, want 65", bad, code, stderr)
		}
	}
}
