package delivery

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in        string
		local     string
		domain    string
		canonical string // String() of the result
	}{
		{"user@example.org", "user", "example.org", "user@example.org"},
		{"<user@example.org>", "user", "example.org", "user@example.org"},
		{"User.Name+tag@Example.ORG", "User.Name+tag", "Example.ORG", "User.Name+tag@Example.ORG"},
		{"!#$%&'*+-/=?^_`{|}~@x.example", "!#$%&'*+-/=?^_`{|}~", "x.example", "!#$%&'*+-/=?^_`{|}~@x.example"},
		{`"john doe"@example.org`, "john doe", "example.org", `"john doe"@example.org`},
		{`"a\"b\\c"@example.org`, `a"b\c`, "example.org", `"a\"b\\c"@example.org`},
		{`"a@b"@example.org`, "a@b", "example.org", `"a@b"@example.org`},
		{`"plain"@example.org`, "plain", "example.org", "plain@example.org"},
		{`"a..b"@example.org`, "a..b", "example.org", `"a..b"@example.org`},
		{`"\a"@example.org`, "a", "example.org", "a@example.org"},
		{"用户@例子.广告", "用户", "例子.广告", "用户@例子.广告"},
		{"jörg@bücher.example", "jörg", "bücher.example", "jörg@bücher.example"},
		{"user@[192.0.2.1]", "user", "[192.0.2.1]", "user@[192.0.2.1]"},
		{"user@[IPv6:2001:db8::1]", "user", "[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]"},
		{"u@a_b.example", "u", "a_b.example", "u@a_b.example"},
		{strings.Repeat("a", 255) + "@x.example", strings.Repeat("a", 255), "x.example", strings.Repeat("a", 255) + "@x.example"},
	}
	for _, tt := range tests {
		a, err := ParseAddress(tt.in)
		if err != nil {
			t.Errorf("ParseAddress(%q): %v", tt.in, err)
			continue
		}
		if a.Local != tt.local || a.Domain != tt.domain {
			t.Errorf("ParseAddress(%q) = %q @ %q, want %q @ %q", tt.in, a.Local, a.Domain, tt.local, tt.domain)
		}
		if got := a.String(); got != tt.canonical {
			t.Errorf("ParseAddress(%q).String() = %q, want %q", tt.in, got, tt.canonical)
		}
	}
}

func TestParseAddressErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"user",
		"@example.org",
		"user@",
		"<user@example.org",
		"user@example.org>",
		"a b@example.org",
		".user@example.org",
		"user.@example.org",
		"us..er@example.org",
		`"unterminated@example.org`,
		`"x"y@example.org`,
		`"a` + "\x00" + `"@example.org`,
		"a\x01b@example.org",
		"user@exa mple.org",
		"user@-example.org",
		"user@example-.org",
		"user@example..org",
		"user@example.org.",
		"user@exa<mple.org",
		"user@[300.0.0.1]",
		"user@[IPv6:192.0.2.1]",
		"user@[1.2.3.4",
		"user@[foo:bar]",
		"a@b@example.org",
		strings.Repeat("a", 256) + "@x.example",
		"u@" + strings.Repeat("a.", 128) + "x",
		"\xff@example.org",
		"u@\xffexample.org",
	} {
		if a, err := ParseAddress(in); err == nil {
			t.Errorf("ParseAddress(%q) = %#v, want error", in, a)
		} else if !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddress(%q) error %v does not wrap ErrBadAddress", in, err)
		}
	}
}

func TestSplitAddress(t *testing.T) {
	// The form go-smtp passes: quotes already removed.
	a, err := SplitAddress("john doe@example.org")
	if err != nil || a.Local != "john doe" || a.Domain != "example.org" {
		t.Fatalf("SplitAddress = %#v, %v", a, err)
	}
	if got := a.String(); got != `"john doe"@example.org` {
		t.Errorf("String() = %q", got)
	}
	a, err = SplitAddress("a@b@example.org")
	if err != nil || a.Local != "a@b" || a.Domain != "example.org" {
		t.Fatalf("SplitAddress = %#v, %v", a, err)
	}
	for _, in := range []string{"", "x", "@x.example", "x@", "a\x00b@x.example", "a@x y", "a@x\x00", strings.Repeat("a", 256) + "@x"} {
		if _, err := SplitAddress(in); err == nil {
			t.Errorf("SplitAddress(%q): no error", in)
		}
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"user@example.org", "<user+tag@example.org>", `"john doe"@example.org`, `"a\"b"@x`,
		"用户@例子.广告", "user@[IPv6:::1]", "postmaster@example.org", `"@"@x`, "a@b@c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("ParseAddress(%q): error %v does not wrap ErrBadAddress", s, err)
			}
			return
		}
		if err := checkLocal(a.Local); err != nil {
			t.Fatalf("ParseAddress(%q) accepted local part %q: %v", s, a.Local, err)
		}
		if err := checkDomain(a.Domain); err != nil {
			t.Fatalf("ParseAddress(%q) accepted domain %q: %v", s, a.Domain, err)
		}
		// The canonical form parses back to the same address.
		c := a.String()
		b, err := ParseAddress(c)
		if err != nil || b != a {
			t.Fatalf("ParseAddress(%q) = %#v; its String %q parses as %#v, %v", s, a, c, b, err)
		}
		// The decoded form (what go-smtp hands over) splits to the same.
		d, err := SplitAddress(a.Local + "@" + a.Domain)
		if err != nil || d != a {
			t.Fatalf("SplitAddress(%q) = %#v, %v; want %#v", a.Local+"@"+a.Domain, d, err, a)
		}
		if strings.ContainsAny(c, "\r\n\x00") {
			t.Fatalf("canonical form %q contains a line break or NUL", c)
		}
	})
}
