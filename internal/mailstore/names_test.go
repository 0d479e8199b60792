package mailstore

import (
	"errors"
	"slices"
	"testing"
)

func TestCanonicalMailboxName(t *testing.T) {
	for in, want := range map[string]string{
		"INBOX": "INBOX", "inbox": "INBOX", "InBoX": "INBOX", "inbox/a": "INBOX/a", "INBOXES": "INBOXES",
		"inboxx/a": "inboxx/a", "a/inbox": "a/inbox", "Work": "Work", "a b/c": "a b/c", "日本": "日本",
	} {
		got, err := CanonicalMailboxName(in)
		if err != nil || got != want {
			t.Errorf("CanonicalMailboxName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "/", "/a", "a/", "a//b", "a\x00", "a\rb", "a\nb", "a\tb", "a\x7f", "\xff", "a/\xc3"} {
		if got, err := CanonicalMailboxName(in); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CanonicalMailboxName(%q) = %q, %v; want ErrInvalidName", in, got, err)
		}
	}
}

func TestCanonicalAccountName(t *testing.T) {
	if got, err := CanonicalAccountName("Alice@Example.ORG"); err != nil || got != "alice@example.org" {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, in := range []string{"", "a b", "a\x00", "\xff", "a\u00a0b", "a\u2028b"} {
		if _, err := CanonicalAccountName(in); !errors.Is(err, ErrInvalidName) {
			t.Errorf("CanonicalAccountName(%q): %v", in, err)
		}
	}
}

func TestIsChildOf(t *testing.T) {
	for _, c := range []struct {
		name, parent string
		want         bool
	}{
		{"a/b", "a", true}, {"a/b/c", "a", true}, {"a/b/c", "a/b", true},
		{"a", "a", false}, {"ab", "a", false}, {"a/", "a", false}, {"b/a", "a", false},
	} {
		if got := IsChildOf(c.name, c.parent); got != c.want {
			t.Errorf("IsChildOf(%q, %q) = %v", c.name, c.parent, got)
		}
	}
}

func TestCanonicalFlags(t *testing.T) {
	got, err := CanonicalFlags([]string{`\seen`, "$Label", `\FLAGGED`, `\Seen`, "$label", "Junk", `\answered`, `\draft`, `\DELETED`})
	want := []string{"$Label", "Junk", `\Answered`, `\Deleted`, `\Draft`, `\Flagged`, `\Seen`}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("CanonicalFlags = %q, %v; want %q", got, err, want)
	}
	if got, err := CanonicalFlags(nil); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("CanonicalFlags(nil) = %#v, %v", got, err)
	}
	for _, f := range []string{"", `\Recent`, `\recent`, `\X`, `\`, "a b", "a(", "a)", "a{", "a%", "a*", `a"`, `a\b`, "a]", "\x00", "ü", "a\x7f"} {
		if _, err := CanonicalFlags([]string{f}); !errors.Is(err, ErrInvalidFlag) {
			t.Errorf("CanonicalFlags(%q): %v", f, err)
		}
	}
}

func TestApplyFlags(t *testing.T) {
	cur := []string{"Foo", `\Seen`}
	for _, c := range []struct {
		op      FlagOp
		flags   []string
		want    []string
		changed bool
	}{
		{FlagsAdd, []string{`\Flagged`}, []string{"Foo", `\Flagged`, `\Seen`}, true},
		{FlagsAdd, []string{"foo", `\Seen`}, []string{"Foo", `\Seen`}, false},
		{FlagsAdd, nil, []string{"Foo", `\Seen`}, false},
		{FlagsRemove, []string{"FOO"}, []string{`\Seen`}, true},
		{FlagsRemove, []string{`\Draft`}, []string{"Foo", `\Seen`}, false},
		{FlagsRemove, []string{"Foo", `\Seen`}, []string{}, true},
		{FlagsReplace, []string{"Foo", `\Seen`}, []string{"Foo", `\Seen`}, false},
		{FlagsReplace, nil, []string{}, true},
		{FlagsReplace, []string{`\Draft`}, []string{`\Draft`}, true},
	} {
		got, changed := ApplyFlags(cur, c.op, c.flags)
		if !slices.Equal(got, c.want) || changed != c.changed || got == nil {
			t.Errorf("ApplyFlags(%q, %d, %q) = %q, %v; want %q, %v", cur, c.op, c.flags, got, changed, c.want, c.changed)
		}
	}
	if !slices.Equal(cur, []string{"Foo", `\Seen`}) {
		t.Fatalf("ApplyFlags modified its input: %q", cur)
	}
}
