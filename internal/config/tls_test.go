package config

import (
	"crypto/tls"
	"errors"
	"os"
	"strings"
	"testing"
)

// tlsConfig is the good config with lines added to its [tls] section.
func tlsConfig(lines string) string {
	return strings.Replace(good, "[tls]\n", "[tls]\n"+lines+"\n", 1)
}

func TestTLSDefaults(t *testing.T) {
	c, err := Parse("f.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.MinVersion != "1.2" || c.TLS.MinTLSVersion() != tls.VersionTLS12 || c.TLS.RequireTLSForAuth != nil || !c.TLS.AuthRequiresTLS() {
		t.Fatalf("defaults: min_version %q (%x), require_tls_for_auth %v", c.TLS.MinVersion, c.TLS.MinTLSVersion(), c.TLS.AuthRequiresTLS())
	}
	// A Config built in code, and local mode, get the same.
	for _, c := range []*Config{{}, Local()} {
		if c.TLS.MinTLSVersion() != tls.VersionTLS12 || !c.TLS.AuthRequiresTLS() {
			t.Fatalf("zero-value TLS: %x %v", c.TLS.MinTLSVersion(), c.TLS.AuthRequiresTLS())
		}
	}
}

func TestTLSSettings(t *testing.T) {
	for _, tc := range []struct {
		lines       string
		wantVersion uint16
		wantRequire bool
	}{
		{`min_version = "1.3"`, tls.VersionTLS13, true},
		{`min_version = "1.2"`, tls.VersionTLS12, true},
		{`min_version = 1.3`, tls.VersionTLS13, true}, // a bare number is read as the version
		{"require_tls_for_auth = false", tls.VersionTLS12, false},
		{"require_tls_for_auth = true\nmin_version = \"1.3\"", tls.VersionTLS13, true},
	} {
		c, err := Parse("f.toml", []byte(tlsConfig(tc.lines)))
		if err != nil {
			t.Fatalf("%s: %v", tc.lines, err)
		}
		if c.TLS.MinTLSVersion() != tc.wantVersion || c.TLS.AuthRequiresTLS() != tc.wantRequire {
			t.Errorf("%s: version %x, require %v", tc.lines, c.TLS.MinTLSVersion(), c.TLS.AuthRequiresTLS())
		}
	}
}

func TestTLSErrorsNameFileAndKey(t *testing.T) {
	for _, tc := range []struct{ lines, want string }{
		{`min_version = "1.1"`, `f.toml: tls.min_version: "1.1" is not a supported TLS version ("1.2" or "1.3")`},
		{`min_version = "1.0"`, `f.toml: tls.min_version: "1.0" is not a supported TLS version`},
		{`min_version = "TLS1.2"`, `f.toml: tls.min_version: "TLS1.2" is not a supported TLS version`},
		{`min_version = 1.1`, `f.toml: tls.min_version: "1.1" is not a supported TLS version`},
		{`min_version = 1`, `f.toml: tls.min_version: "1" is not a supported TLS version`},
		{`min_version = "1.4"`, `f.toml: tls.min_version: "1.4" is not a supported TLS version`},
		{`require_tls_for_auth = "no"`, `f.toml: `},
		{`requires_tls_for_auth = false`, `f.toml: tls.requires_tls_for_auth: unknown key`},
	} {
		_, err := Parse("f.toml", []byte(tlsConfig(tc.lines)))
		var ce *Error
		if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want prefix %q", tc.lines, err, tc.want)
		}
	}
}

func TestTLSKeysDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"\nmin_version = ", "\nrequire_tls_for_auth = ", "**`min_version`**", "**`require_tls_for_auth`**"} {
		if !strings.Contains(string(doc), key) {
			t.Errorf("docs/configuration.md does not document %q", strings.TrimSpace(key))
		}
	}
}
