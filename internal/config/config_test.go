package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `
hostname = "mail.example.org"
data_dir = "/var/lib/letterbox"
domains  = ["Example.org", "example.net."]

[listen]
smtp = ":25"
lmtp = "unix:/run/letterbox/lmtp.sock"
pop3 = "127.0.0.1:110"
pop3s = "[::1]:995"

[tls]
cert_file = ""
key_file  = ""
`

func TestParseGood(t *testing.T) {
	c, err := Parse("letterbox.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mail.example.org" || c.DataDir != "/var/lib/letterbox" ||
		strings.Join(c.Domains, ",") != "example.org,example.net" || c.MaxMessageSize != DefaultMaxMessageSize ||
		c.Listen.SMTP != ":25" || c.Listen.IMAP != "" || c.Listen.POP3S != "[::1]:995" || c.LogLevel != "info" {
		t.Fatalf("unexpected config %+v", c)
	}
}

func TestParseErrorsNameFileAndKey(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, text, want string
	}{
		{"unknown key", good + "\n[listen2]\nfoo = 1\n", "f.toml: listen2"},
		{"unknown nested key", strings.Replace(good, "[tls]", "[tls]\ncert = \"x\"", 1), "f.toml: tls.cert: unknown key"},
		{"bad address", strings.Replace(good, `":25"`, `"nonsense"`, 1), `f.toml: listen.smtp: invalid address "nonsense"`},
		{"bad port", strings.Replace(good, `":25"`, `":99999"`, 1), `f.toml: listen.smtp: invalid address`},
		{"syntax", "hostname = \n", "f.toml: line 1"},
		{"type", strings.Replace(good, `domains  = ["Example.org", "example.net."]`, `domains = "example.org"`, 1), "f.toml"},
		{"no domains", strings.Replace(good, `domains  = ["Example.org", "example.net."]`, ``, 1), "f.toml: domains: must list"},
		{"bad domain", strings.Replace(good, `"Example.org"`, `"exa mple.org"`, 1), "f.toml: domains: entry 1"},
		{"missing cert", strings.Replace(strings.Replace(good, `cert_file = ""`, `cert_file = "`+dir+`/nope.pem"`, 1), `key_file  = ""`, `key_file = "`+dir+`/nope.key"`, 1), "f.toml: tls.cert_file: cannot read"},
		{"half tls", strings.Replace(good, `cert_file = ""`, `cert_file = "/x"`, 1), "f.toml: tls: cert_file and key_file"},
		{"no data_dir", strings.Replace(good, `data_dir = "/var/lib/letterbox"`, "", 1), "f.toml: data_dir: must be set"},
		{"log level", good[:strings.Index(good, "[listen]")] + "log_level = \"loud\"\n" + good[strings.Index(good, "[listen]"):], "f.toml: log_level"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(tc.text))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %q, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestRelativeDataDirAndLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "letterbox.toml")
	os.WriteFile(p, []byte("data_dir = \"data\"\ndomains = [\"example.org\"]\nhostname = \"h.example.org\"\n"), 0o644)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != filepath.Join(dir, "data") || c.Local {
		t.Fatalf("data_dir %q local %v", c.DataDir, c.Local)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml: cannot read") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestLocalMode(t *testing.T) {
	t.Chdir(t.TempDir())
	c, err := Load("")
	if err != nil || !c.Local || c.Listen.SMTP != "127.0.0.1:2525" || c.Listen.POP3 != "127.0.0.1:1110" || c.DataDir != "letterbox-data" {
		t.Fatalf("local mode: %+v %v", c, err)
	}
}

func TestAudit(t *testing.T) {
	c, err := Parse("/etc/letterbox/letterbox.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Audit.Enabled || c.Audit.Dir != "/var/lib/letterbox/audit" || c.Audit.MaxFileSize != DefaultAuditMaxFileSize {
		t.Fatalf("audit defaults: %+v", c.Audit)
	}
	c, err = Parse("/etc/letterbox/letterbox.toml", []byte(good+"\n[audit]\nenabled = false\ndir = \"log/audit\"\nmax_file_size = 1048576\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Audit.Enabled || c.Audit.Dir != "/etc/letterbox/log/audit" || c.Audit.MaxFileSize != 1<<20 {
		t.Fatalf("audit: %+v", c.Audit)
	}
	if l := Local(); !l.Audit.Enabled || l.Audit.Dir != filepath.Join(l.DataDir, "audit") || l.Audit.MaxFileSize != DefaultAuditMaxFileSize {
		t.Fatalf("local mode audit: %+v", l.Audit)
	}
	for text, want := range map[string]string{
		"[audit]\nmax_file_size = 100\n": "f.toml: audit.max_file_size: 100 is too small",
		"[audit]\nmax_file_size = -1\n":  "f.toml: audit.max_file_size: -1 is too small",
		"[audit]\nenable = true\n":       "f.toml: audit.enable: unknown key",
		"[audit]\nenabled = \"yes\"\n":   "f.toml",
	} {
		_, err := Parse("f.toml", []byte(good+"\n"+text))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: err = %v, want prefix %q", text, err, want)
		}
	}
}

func TestStore(t *testing.T) {
	c, err := Parse("/etc/letterbox/letterbox.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Backend != BackendSQLite || c.Store.PostgresURL != "" || c.Store.BlobDir != "" {
		t.Fatalf("default store = %+v, want sqlite", c.Store)
	}
	c, err = Parse("/etc/letterbox/letterbox.toml", []byte(good+`
[store]
backend = "postgres"
postgres_url = "postgres://letterbox@db/letterbox"
blob_dir = "blobs"
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Store.Backend != BackendPostgres || c.Store.PostgresURL != "postgres://letterbox@db/letterbox" || c.Store.BlobDir != "/etc/letterbox/blobs" {
		t.Fatalf("store = %+v", c.Store)
	}
	for _, tc := range []struct{ text, key string }{
		{"[store]\nbackend = \"mysql\"\n", "store.backend"},
		{"[store]\nbackend = \"postgres\"\nblob_dir = \"/srv/b\"\n", "store.postgres_url"},
		{"[store]\nbackend = \"postgres\"\npostgres_url = \"postgres://db/x\"\n", "store.blob_dir"},
		{"[store]\npostgres_url = \"postgres://db/x\"\n", "store"},
	} {
		_, err := Parse("x.toml", []byte(good+tc.text))
		var ce *Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%q: err = %v, want an error naming %s", tc.text, err, tc.key)
		}
	}
}
