package config

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary text to the config parser. Whatever the input,
// Parse returns either a validated config or an *Error naming the file;
// it never panics, and an accepted config stays accepted when re-checked.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`hostname = "mail.example.org"
data_dir = "/var/lib/letterbox"
domains  = ["example.org"]

[listen]
smtp  = ":25"
lmtp  = "127.0.0.1:24"
imap  = ":143"
pop3  = ":110"

[tls]
min_version = "1.3"
`))
	f.Add([]byte("data_dir = \"/d\"\ndomains = [\"a.example\"]\n[limits]\nimap_idle_timeout = \"31m\"\nmax_connections = 10\n"))
	f.Add([]byte("data_dir = \"/d\"\ndomains = [\"a.example\"]\n[audit]\nenabled = false\n"))
	f.Add([]byte("hostname = \n"))
	f.Add([]byte("[listen]\nsmtp = 25\n"))
	f.Add([]byte("data_dir = \"/d\"\ndomains = [\"exa mple\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error does not name the file: %q", err)
			}
			return
		}
		if c.DataDir == "" || len(c.Domains) == 0 {
			t.Fatalf("accepted a config without data_dir or domains: %+v", c)
		}
		if err := c.validate(); err != nil {
			t.Fatalf("accepted config fails validation again: %v", err)
		}
	})
}
