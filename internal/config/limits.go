package config

import (
	"errors"
	"time"

	"github.com/BurntSushi/toml"
)

// Limits is the [limits] table: what clients can make the server hold,
// and the login throttle (docs/configuration.md). Every field has a
// default; Parse fills in the absent ones.
type Limits struct {
	// Connections, across all listeners of the process.
	MaxConnections      int `toml:"max_connections"`
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"` // IPv6 per /64; loopback exempt
	// MaxSessionsPerAccount bounds the logged-in IMAP and POP3 sessions
	// of one account, from all addresses together.
	MaxSessionsPerAccount int `toml:"max_sessions_per_account"`

	// IMAPMaxLineLength bounds an IMAP command line segment and a literal
	// that is an argument (not an APPEND message), in octets.
	IMAPMaxLineLength int `toml:"imap_max_line_length"`
	// MaxRecipients bounds the recipients of one SMTP/LMTP transaction.
	MaxRecipients int `toml:"max_recipients"`
	// MaxMailboxesPerAccount bounds IMAP CREATE (INBOX included).
	MaxMailboxesPerAccount int `toml:"max_mailboxes_per_account"`
	// IMAPMaxSearchText bounds the decoded text of one message that SEARCH
	// BODY/TEXT examines, and so the memory a SEARCH holds for it.
	IMAPMaxSearchText int64 `toml:"imap_max_search_text"`

	IMAPIdleTimeout    Duration `toml:"imap_idle_timeout"`
	POP3IdleTimeout    Duration `toml:"pop3_idle_timeout"`
	SMTPCommandTimeout Duration `toml:"smtp_command_timeout"`
	// WriteTimeout bounds every write to a client (all protocols): a
	// client that takes nothing for this long is disconnected.
	WriteTimeout Duration `toml:"write_timeout"`

	// The login throttle (package auth).
	LoginFailureDelay  Duration `toml:"login_failure_delay"`
	LoginMaxDelay      Duration `toml:"login_max_delay"`
	LoginForgetAfter   Duration `toml:"login_forget_after"`
	LoginBlockAfter    int      `toml:"login_block_after"` // 0: never block
	LoginBlockDuration Duration `toml:"login_block_duration"`
	LoginMaxTracked    int      `toml:"login_max_tracked"`

	// defined holds the keys present in the file ("max_connections"), to
	// tell an explicit 0 from an absent key.
	defined map[string]bool
}

// Duration is a TOML string such as "30s", "5m" or "1h30m".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// durationMsg is the message of a value that is not a duration; Parse
// turns it into an Error naming the key.
const durationMsg = `not a duration: want a string such as "30s", "5m" or "1h"`

// UnmarshalText implements encoding.TextUnmarshaler for TOML strings.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return errors.New(durationMsg)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Defaults of [limits]; docs/configuration.md gives the reasons.
const (
	DefaultMaxConnections         = 5000
	DefaultMaxConnectionsPerIP    = 100
	DefaultMaxSessionsPerAccount  = 50
	DefaultIMAPMaxLineLength      = 64 << 10
	DefaultMaxRecipients          = 100
	DefaultMaxMailboxesPerAccount = 1000
	DefaultIMAPMaxSearchText      = 4 << 20
	DefaultIMAPIdleTimeout        = 30 * time.Minute
	DefaultPOP3IdleTimeout        = 10 * time.Minute
	DefaultSMTPCommandTimeout     = 5 * time.Minute
	DefaultWriteTimeout           = 5 * time.Minute
	DefaultLoginFailureDelay      = 250 * time.Millisecond
	DefaultLoginMaxDelay          = 15 * time.Second
	DefaultLoginForgetAfter       = 15 * time.Minute
	DefaultLoginBlockAfter        = 10
	DefaultLoginBlockDuration     = 15 * time.Minute
	DefaultLoginMaxTracked        = 100000
)

// DefaultLimits returns [limits] with every default.
func DefaultLimits() Limits {
	var l Limits
	l.setDefaults()
	return l
}

func (l *Limits) setDefaults() {
	def := func(key string) bool { return !l.defined[key] }
	setInt := func(key string, p *int, v int) {
		if def(key) {
			*p = v
		}
	}
	setDur := func(key string, p *Duration, v time.Duration) {
		if def(key) {
			*p = Duration(v)
		}
	}
	setInt("max_connections", &l.MaxConnections, DefaultMaxConnections)
	setInt("max_connections_per_ip", &l.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	setInt("max_sessions_per_account", &l.MaxSessionsPerAccount, DefaultMaxSessionsPerAccount)
	setInt("imap_max_line_length", &l.IMAPMaxLineLength, DefaultIMAPMaxLineLength)
	setInt("max_recipients", &l.MaxRecipients, DefaultMaxRecipients)
	setInt("max_mailboxes_per_account", &l.MaxMailboxesPerAccount, DefaultMaxMailboxesPerAccount)
	if def("imap_max_search_text") {
		l.IMAPMaxSearchText = DefaultIMAPMaxSearchText
	}
	setDur("imap_idle_timeout", &l.IMAPIdleTimeout, DefaultIMAPIdleTimeout)
	setDur("pop3_idle_timeout", &l.POP3IdleTimeout, DefaultPOP3IdleTimeout)
	setDur("smtp_command_timeout", &l.SMTPCommandTimeout, DefaultSMTPCommandTimeout)
	setDur("write_timeout", &l.WriteTimeout, DefaultWriteTimeout)
	setDur("login_failure_delay", &l.LoginFailureDelay, DefaultLoginFailureDelay)
	setDur("login_max_delay", &l.LoginMaxDelay, DefaultLoginMaxDelay)
	setDur("login_forget_after", &l.LoginForgetAfter, DefaultLoginForgetAfter)
	setInt("login_block_after", &l.LoginBlockAfter, DefaultLoginBlockAfter)
	setDur("login_block_duration", &l.LoginBlockDuration, DefaultLoginBlockDuration)
	setInt("login_max_tracked", &l.LoginMaxTracked, DefaultLoginMaxTracked)
}

// validateLimits fills in the defaults of c.Limits and checks the values.
func (c *Config) validateLimits() error {
	l := &c.Limits
	l.setDefaults()
	ints := []struct {
		key string
		v   int64
		min int64
	}{
		{"max_connections", int64(l.MaxConnections), 1},
		{"max_connections_per_ip", int64(l.MaxConnectionsPerIP), 1},
		{"max_sessions_per_account", int64(l.MaxSessionsPerAccount), 1},
		// RFC 7162 §4: servers should accept command lines of at least
		// 8192 octets.
		{"imap_max_line_length", int64(l.IMAPMaxLineLength), 8192},
		{"max_recipients", int64(l.MaxRecipients), 1},
		{"max_mailboxes_per_account", int64(l.MaxMailboxesPerAccount), 1},
		{"imap_max_search_text", l.IMAPMaxSearchText, 1024},
		{"login_block_after", int64(l.LoginBlockAfter), 0},
		{"login_max_tracked", int64(l.LoginMaxTracked), 100},
	}
	for _, i := range ints {
		if i.v < i.min {
			return c.fail("limits."+i.key, "%d is too small (at least %d)", i.v, i.min)
		}
	}
	if l.IMAPMaxLineLength > 16<<20 {
		return c.fail("limits.imap_max_line_length", "%d is too large (at most %d)", l.IMAPMaxLineLength, 16<<20)
	}
	durs := []struct {
		key string
		v   Duration
		min time.Duration
	}{
		{"imap_idle_timeout", l.IMAPIdleTimeout, time.Second},
		{"pop3_idle_timeout", l.POP3IdleTimeout, time.Second},
		{"smtp_command_timeout", l.SMTPCommandTimeout, time.Second},
		{"write_timeout", l.WriteTimeout, time.Second},
		{"login_failure_delay", l.LoginFailureDelay, 0},
		{"login_max_delay", l.LoginMaxDelay, 0},
		{"login_forget_after", l.LoginForgetAfter, time.Second},
		{"login_block_duration", l.LoginBlockDuration, time.Second},
	}
	for _, d := range durs {
		if d.v.D() < d.min {
			return c.fail("limits."+d.key, "%s is too short (at least %s)", d.v.D(), d.min)
		}
	}
	if l.LoginMaxDelay < l.LoginFailureDelay {
		return c.fail("limits.login_max_delay", "%s is shorter than login_failure_delay (%s)",
			l.LoginMaxDelay.D(), l.LoginFailureDelay.D())
	}
	return nil
}

// definedIn returns the keys of table that the file sets.
func definedIn(md toml.MetaData, table string) map[string]bool {
	keys := map[string]bool{}
	for _, k := range md.Keys() {
		if len(k) == 2 && k[0] == table {
			keys[k[1]] = true
		}
	}
	return keys
}
