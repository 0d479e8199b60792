// Package config turns letterbox.toml into a validated Config. Every error
// names the file, the key and what is wrong, because an operator reading a
// failed start has nothing else to go on.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is the server configuration (design.md §5).
type Config struct {
	Hostname       string   `toml:"hostname"`
	DataDir        string   `toml:"data_dir"`
	Domains        []string `toml:"domains"`
	MaxMessageSize int64    `toml:"max_message_size"` // octets; default 50 MiB
	LogLevel       string   `toml:"log_level"`        // debug, info, warn, error
	Listen         Listen   `toml:"listen"`
	TLS            TLS      `toml:"tls"`
	Audit          Audit    `toml:"audit"`
	Quota          Quota    `toml:"quota"`
	Limits         Limits   `toml:"limits"`
	Store          Store    `toml:"store"`

	// File is the path the config was read from; "" in local mode.
	File string `toml:"-"`
	// Local is true in local mode (no config file).
	Local bool `toml:"-"`
}

// Listen holds listener addresses; "" disables a listener.
type Listen struct {
	SMTP       string `toml:"smtp"`
	LMTP       string `toml:"lmtp"`
	Submission string `toml:"submission"`
	IMAP       string `toml:"imap"`
	IMAPS      string `toml:"imaps"`
	POP3       string `toml:"pop3"`
	POP3S      string `toml:"pop3s"`
}

// TLS names the certificate; both empty means a self-signed certificate is
// generated once into DataDir.
type TLS struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// MinVersion is the lowest TLS version accepted: "1.2" (the default
	// when empty) or "1.3".
	MinVersion TLSVersion `toml:"min_version"`
	// RequireTLSForAuth: plaintext passwords (IMAP LOGIN, AUTHENTICATE
	// PLAIN/LOGIN, POP3 USER/PASS, AUTH PLAIN/LOGIN) only over TLS or from
	// loopback. nil (absent) means true; read it with AuthRequiresTLS.
	RequireTLSForAuth *bool `toml:"require_tls_for_auth"`
}

// AuthRequiresTLS is tls.require_tls_for_auth, true unless set to false,
// also for a Config built in code without it.
func (t TLS) AuthRequiresTLS() bool { return t.RequireTLSForAuth == nil || *t.RequireTLSForAuth }

// MinTLSVersion is tls.min_version as a crypto/tls version number.
func (t TLS) MinTLSVersion() uint16 {
	if t.MinVersion == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// TLSVersion is a TLS version as written in the config. It accepts a
// string ("1.3") and, because that is an easy slip, a bare number (1.3);
// validation then checks the value, naming the key.
type TLSVersion string

// UnmarshalTOML implements toml.Unmarshaler.
func (v *TLSVersion) UnmarshalTOML(data any) error {
	switch x := data.(type) {
	case string:
		*v = TLSVersion(x)
	case float64:
		*v = TLSVersion(strconv.FormatFloat(x, 'f', -1, 64))
	default:
		*v = TLSVersion(fmt.Sprint(x))
	}
	return nil
}

// Store selects the mail store backend.
type Store struct {
	// Backend is "sqlite" (the default: the embedded store in data_dir)
	// or "postgres" (several nodes sharing one PostgreSQL database).
	Backend string `toml:"backend"`
	// PostgresURL is the database of the postgres backend, as a libpq URL
	// or key=value string (postgres://user:pass@host/db?sslmode=...).
	PostgresURL string `toml:"postgres_url"`
	// BlobDir holds message bodies for the postgres backend: a directory
	// every node shares (a network filesystem for several machines).
	// Required with postgres, so that nodes never silently keep bodies
	// in separate local directories; relative to the config file.
	BlobDir string `toml:"blob_dir"`
}

// Backends of [store].
const (
	BackendSQLite   = "sqlite"
	BackendPostgres = "postgres"
)

// Audit configures the audit log of security events (package audit).
type Audit struct {
	Enabled     bool   `toml:"enabled"`       // default true
	Dir         string `toml:"dir"`           // default data_dir/audit; relative to the config file
	MaxFileSize int64  `toml:"max_file_size"` // octets before rotation; default 64 MiB
}

// DefaultAuditMaxFileSize is audit.max_file_size when unset.
const DefaultAuditMaxFileSize = 64 << 20

// minAuditMaxFileSize keeps rotation sensible: a file holds at least one
// of the largest records (64 KiB).
const minAuditMaxFileSize = 64 << 10

// DefaultMaxMessageSize is max_message_size when unset.
const DefaultMaxMessageSize = 50 << 20

// DefaultFile is the config read when --config is not given.
const DefaultFile = "letterbox.toml"

// Error is a configuration error. Its message names the file and key.
type Error struct {
	File string
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
}

// Local returns the local-mode configuration: loopback only, unprivileged
// ports, data in ./letterbox-data, domain localhost.
func Local() *Config {
	return &Config{
		Hostname:       "localhost",
		DataDir:        "letterbox-data",
		Domains:        []string{"localhost"},
		MaxMessageSize: DefaultMaxMessageSize,
		LogLevel:       "info",
		Listen: Listen{
			SMTP:       "127.0.0.1:2525",
			LMTP:       "127.0.0.1:2424",
			Submission: "127.0.0.1:2587",
			IMAP:       "127.0.0.1:1143",
			IMAPS:      "127.0.0.1:1993",
			POP3:       "127.0.0.1:1110",
			POP3S:      "127.0.0.1:1995",
		},
		Audit:  Audit{Enabled: true, Dir: filepath.Join("letterbox-data", "audit"), MaxFileSize: DefaultAuditMaxFileSize},
		Limits: DefaultLimits(),
		Store:  Store{Backend: BackendSQLite},
		Local:  true,
	}
}

// Load reads the config: path if non-empty, else ./letterbox.toml if it
// exists, else local mode.
func Load(path string) (*Config, error) {
	if path == "" {
		if _, err := os.Stat(DefaultFile); err == nil {
			path = DefaultFile
		} else {
			return Local(), nil
		}
	}
	return LoadFile(path)
}

// LoadFile reads and validates one config file.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot read: " + errors.Unwrap(err).Error()}
	}
	return Parse(path, data)
}

// Parse decodes and validates config text; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	c := &Config{Audit: Audit{Enabled: true}}
	md, err := toml.Decode(string(data), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) && pe.Message == durationMsg && pe.LastKey != "" {
			return nil, &Error{File: name, Key: pe.LastKey, Msg: pe.Message}
		}
		if errors.As(err, &pe) {
			return nil, &Error{File: name, Msg: fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)}
		}
		// Type errors name the key in their text.
		return nil, &Error{File: name, Msg: err.Error()}
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, &Error{File: name, Key: und[0].String(), Msg: "unknown key (see docs/configuration.md)"}
	}
	c.File = name
	c.Limits.defined = definedIn(md, "limits")
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) fail(key, format string, args ...any) error {
	return &Error{File: c.File, Key: key, Msg: fmt.Sprintf(format, args...)}
}

func (c *Config) validate() error {
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return c.fail("hostname", "not set and the system hostname is unknown")
		}
		c.Hostname = h
	}
	if !validDomain(c.Hostname) {
		return c.fail("hostname", "%q is not a valid host name", c.Hostname)
	}
	if c.DataDir == "" {
		return c.fail("data_dir", "must be set (for example \"/var/lib/letterbox\")")
	}
	if !filepath.IsAbs(c.DataDir) {
		c.DataDir = filepath.Join(filepath.Dir(c.File), c.DataDir)
	}
	if len(c.Domains) == 0 {
		return c.fail("domains", "must list at least one local domain")
	}
	for i, d := range c.Domains {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if !validDomain(d) {
			return c.fail("domains", "entry %d: %q is not a valid domain", i+1, c.Domains[i])
		}
		c.Domains[i] = d
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxMessageSize < 1024 {
		return c.fail("max_message_size", "%d is too small (at least 1024 octets)", c.MaxMessageSize)
	}
	switch c.LogLevel {
	case "":
		c.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		return c.fail("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	for _, l := range []struct{ key, addr string }{
		{"listen.smtp", c.Listen.SMTP}, {"listen.lmtp", c.Listen.LMTP},
		{"listen.submission", c.Listen.Submission}, {"listen.imap", c.Listen.IMAP},
		{"listen.imaps", c.Listen.IMAPS}, {"listen.pop3", c.Listen.POP3}, {"listen.pop3s", c.Listen.POP3S},
	} {
		if err := checkAddr(l.addr); err != nil {
			return c.fail(l.key, "invalid address %q: %v", l.addr, err)
		}
	}
	if c.Audit.Dir == "" {
		c.Audit.Dir = filepath.Join(c.DataDir, "audit")
	} else if !filepath.IsAbs(c.Audit.Dir) {
		c.Audit.Dir = filepath.Join(filepath.Dir(c.File), c.Audit.Dir)
	}
	if c.Audit.MaxFileSize == 0 {
		c.Audit.MaxFileSize = DefaultAuditMaxFileSize
	}
	if c.Audit.MaxFileSize < minAuditMaxFileSize {
		return c.fail("audit.max_file_size", "%d is too small (at least %d octets)", c.Audit.MaxFileSize, minAuditMaxFileSize)
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	if err := c.validateQuota(); err != nil {
		return err
	}
	if err := c.validateStore(); err != nil {
		return err
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return c.fail("tls", "cert_file and key_file must both be set, or both be empty for a generated self-signed certificate")
	}
	switch c.TLS.MinVersion {
	case "":
		c.TLS.MinVersion = "1.2"
	case "1.2", "1.3":
	default:
		return c.fail("tls.min_version", "%q is not a supported TLS version (\"1.2\" or \"1.3\")", string(c.TLS.MinVersion))
	}
	for _, f := range []struct{ key, path string }{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return c.fail(f.key, "cannot read %q: %v", f.path, errors.Unwrap(err))
		}
	}
	return nil
}

func (c *Config) validateStore() error {
	st := &c.Store
	switch st.Backend {
	case "":
		st.Backend = BackendSQLite
	case BackendSQLite, BackendPostgres:
	default:
		return c.fail("store.backend", "%q is not one of \"sqlite\", \"postgres\"", st.Backend)
	}
	if st.Backend == BackendSQLite {
		if st.PostgresURL != "" || st.BlobDir != "" {
			return c.fail("store", "postgres_url and blob_dir are for backend = \"postgres\" (the sqlite store keeps everything in data_dir)")
		}
		return nil
	}
	if st.PostgresURL == "" {
		return c.fail("store.postgres_url", "must be set for backend = \"postgres\" (for example \"postgres://letterbox@db.example.org/letterbox\")")
	}
	if st.BlobDir == "" {
		return c.fail("store.blob_dir", "must be set for backend = \"postgres\": a directory every node shares")
	}
	if !filepath.IsAbs(st.BlobDir) {
		st.BlobDir = filepath.Join(filepath.Dir(c.File), st.BlobDir)
	}
	return nil
}

// checkAddr accepts "", "host:port", ":port" and "unix:/path" (for lmtp).
func checkAddr(a string) error {
	if a == "" || strings.HasPrefix(a, "unix:") && len(a) > len("unix:") {
		return nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("want host:port, :port or unix:/path")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	if host != "" && net.ParseIP(host) == nil && !validDomain(host) {
		return fmt.Errorf("bad host %q", host)
	}
	return nil
}

func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r >= 0x80) {
				return false
			}
		}
	}
	return true
}
