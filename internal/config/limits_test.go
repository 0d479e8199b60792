package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLimitsDefaults(t *testing.T) {
	c, err := Parse("letterbox.toml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Limits
	got.defined = nil
	if !reflect.DeepEqual(got, DefaultLimits()) {
		t.Fatalf("limits %+v, want the defaults %+v", got, DefaultLimits())
	}
	if !reflect.DeepEqual(Local().Limits, DefaultLimits()) {
		t.Fatal("local mode does not use the default limits")
	}
	l := DefaultLimits()
	if l.MaxConnections != 5000 || l.MaxConnectionsPerIP != 100 || l.MaxSessionsPerAccount != 50 ||
		l.IMAPMaxLineLength != 65536 || l.MaxRecipients != 100 || l.MaxMailboxesPerAccount != 1000 ||
		l.IMAPMaxSearchText != 4<<20 || l.IMAPIdleTimeout.D() != 30*time.Minute ||
		l.POP3IdleTimeout.D() != 10*time.Minute || l.SMTPCommandTimeout.D() != 5*time.Minute ||
		l.WriteTimeout.D() != 5*time.Minute || l.LoginFailureDelay.D() != 250*time.Millisecond ||
		l.LoginMaxDelay.D() != 15*time.Second || l.LoginForgetAfter.D() != 15*time.Minute ||
		l.LoginBlockAfter != 10 || l.LoginBlockDuration.D() != 15*time.Minute || l.LoginMaxTracked != 100000 {
		t.Fatalf("defaults changed (update docs/configuration.md): %+v", l)
	}
}

func TestLimitsSet(t *testing.T) {
	c, err := Parse("f.toml", []byte(good+`
[limits]
max_connections = 20
max_connections_per_ip = 3
max_sessions_per_account = 4
imap_max_line_length = 8192
max_recipients = 500
max_mailboxes_per_account = 10
imap_max_search_text = 1048576
imap_idle_timeout = "45m"
pop3_idle_timeout = "90s"
smtp_command_timeout = "10m"
write_timeout = "1m30s"
login_failure_delay = "0s"
login_max_delay = "2s"
login_forget_after = "1h"
login_block_after = 0
login_block_duration = "1h"
login_max_tracked = 1000
`))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.MaxConnections != 20 || l.MaxConnectionsPerIP != 3 || l.MaxSessionsPerAccount != 4 ||
		l.IMAPMaxLineLength != 8192 || l.MaxRecipients != 500 || l.MaxMailboxesPerAccount != 10 ||
		l.IMAPMaxSearchText != 1<<20 || l.IMAPIdleTimeout.D() != 45*time.Minute ||
		l.POP3IdleTimeout.D() != 90*time.Second || l.SMTPCommandTimeout.D() != 10*time.Minute ||
		l.WriteTimeout.D() != 90*time.Second || l.LoginFailureDelay.D() != 0 ||
		l.LoginMaxDelay.D() != 2*time.Second || l.LoginForgetAfter.D() != time.Hour ||
		l.LoginBlockAfter != 0 || l.LoginBlockDuration.D() != time.Hour || l.LoginMaxTracked != 1000 {
		t.Fatalf("limits not as set: %+v", l)
	}
}

func TestLimitsErrorsNameFileAndKey(t *testing.T) {
	cases := []struct{ text, want string }{
		{"max_connections = 0", "f.toml: limits.max_connections: 0 is too small (at least 1)"},
		{"max_connections_per_ip = -1", "f.toml: limits.max_connections_per_ip: -1 is too small (at least 1)"},
		{"imap_max_line_length = 1000", "f.toml: limits.imap_max_line_length: 1000 is too small (at least 8192)"},
		{"imap_max_line_length = 1000000000", "f.toml: limits.imap_max_line_length: 1000000000 is too large (at most 16777216)"},
		{"login_block_after = -2", "f.toml: limits.login_block_after: -2 is too small (at least 0)"},
		{`imap_idle_timeout = "soon"`, `f.toml: limits.imap_idle_timeout: not a duration: want a string such as "30s", "5m" or "1h"`},
		{`write_timeout = 300`, `f.toml: limits.write_timeout: not a duration: want a string such as "30s", "5m" or "1h"`},
		{`pop3_idle_timeout = "100ms"`, "f.toml: limits.pop3_idle_timeout: 100ms is too short (at least 1s)"},
		{`login_block_duration = "-5m"`, "f.toml: limits.login_block_duration: -5m0s is too short (at least 1s)"},
		{`login_max_delay = "100ms"`, "f.toml: limits.login_max_delay: 100ms is shorter than login_failure_delay (250ms)"},
		{"max_connection = 5", "f.toml: limits.max_connection: unknown key (see docs/configuration.md)"},
	}
	for _, tc := range cases {
		t.Run(tc.text, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(good+"\n[limits]\n"+tc.text+"\n"))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *config.Error", err)
			}
			if err.Error() != tc.want {
				t.Fatalf("err = %q\nwant  %q", err, tc.want)
			}
		})
	}
}

func TestLimitsDocumented(t *testing.T) {
	// Every [limits] key is in docs/configuration.md.
	doc := readDoc(t)
	for _, key := range []string{"max_connections", "max_connections_per_ip", "max_sessions_per_account",
		"imap_max_line_length", "max_recipients", "max_mailboxes_per_account", "imap_max_search_text",
		"imap_idle_timeout", "pop3_idle_timeout", "smtp_command_timeout", "write_timeout",
		"login_failure_delay", "login_max_delay", "login_forget_after", "login_block_after",
		"login_block_duration", "login_max_tracked"} {
		if !strings.Contains(doc, "\n"+key+" ") {
			t.Errorf("docs/configuration.md does not document limits.%s", key)
		}
	}
}

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
