package pop3

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line string
		name string
		args []string
		rest string
		err  error
	}{
		{line: "STAT", name: "STAT"},
		{line: "stat", name: "STAT"},
		{line: "sTaT", name: "STAT"},
		{line: "LIST 1", name: "LIST", args: []string{"1"}, rest: "1"},
		{line: "TOP 1 10", name: "TOP", args: []string{"1", "10"}, rest: "1 10"},
		{line: "TOP  1   10 ", name: "TOP", args: []string{"1", "10"}, rest: " 1   10 "},
		{line: "PASS my secret ", name: "PASS", args: []string{"my", "secret"}, rest: "my secret "},
		{line: "PASS  lead", name: "PASS", args: []string{"lead"}, rest: " lead"},
		{line: "PASS pässwörd", name: "PASS", args: []string{"pässwörd"}, rest: "pässwörd"},
		{line: "QUIT ", name: "QUIT", rest: ""},
		{line: "X", name: "X"},
		{line: "", err: errEmptyCommand},
		{line: "   ", err: errEmptyCommand},
		{line: " STAT", err: errBadKeyword},
		{line: "STATS", err: errBadKeyword},
		{line: "ST4T", err: errBadKeyword},
		{line: "\tSTAT", err: errBadKeyword},
		{line: "ST\x00T", err: errBadChar},
		{line: "USER a\rb", err: errBadChar},
		{line: "USER a\x00", err: errBadChar},
		{line: "LIST 1 2 3 4 5 6 7 8", name: "LIST", args: []string{"1", "2", "3", "4", "5", "6", "7", "8"}, rest: "1 2 3 4 5 6 7 8"},
		{line: "LIST 1 2 3 4 5 6 7 8 9", err: errTooManyArgs},
	}
	for _, tt := range tests {
		cmd, err := parseCommand([]byte(tt.line))
		if !errors.Is(err, tt.err) {
			t.Errorf("parseCommand(%q) error = %v, want %v", tt.line, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		if cmd.name != tt.name || !slices.Equal(cmd.args, tt.args) || cmd.rest != tt.rest {
			t.Errorf("parseCommand(%q) = {%q %q %q}, want {%q %q %q}", tt.line,
				cmd.name, cmd.args, cmd.rest, tt.name, tt.args, tt.rest)
		}
	}
}

func TestParseNumber(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"007", 7, true},
		{"4294967295", 4294967295, true},
		{"4294967296", 1 << 32, true},
		{"99999999999999999999999999", 1 << 32, true},
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"1a", 0, false},
		{" 1", 0, false},
		{"１", 0, false}, // fullwidth digit
	}
	for _, tt := range tests {
		got, ok := parseNumber(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseNumber(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzParseCommand checks that the parser never panics and that what it
// accepts satisfies the invariants the dispatcher relies on.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"STAT", "list 1", "TOP 1 10", "PASS a b  c", "AUTH PLAIN AGEAYg==", "", " ", "\x00", "ÜSER x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		cmd, err := parseCommand(line)
		if err != nil {
			if cmd.name != "" || cmd.args != nil || cmd.rest != "" {
				t.Fatalf("error %v with non-zero command %+v", err, cmd)
			}
			return
		}
		if n := len(cmd.name); n < 1 || n > maxKeyword {
			t.Fatalf("keyword %q has length %d", cmd.name, n)
		}
		for _, c := range []byte(cmd.name) {
			if c < 'A' || c > 'Z' {
				t.Fatalf("keyword %q is not upper-case ASCII letters", cmd.name)
			}
		}
		if !strings.EqualFold(string(line[:len(cmd.name)]), cmd.name) {
			t.Fatalf("keyword %q is not the start of %q", cmd.name, line)
		}
		if len(line) > len(cmd.name) {
			if line[len(cmd.name)] != ' ' || string(line[len(cmd.name)+1:]) != cmd.rest {
				t.Fatalf("rest %q does not follow keyword in %q", cmd.rest, line)
			}
		} else if cmd.rest != "" {
			t.Fatalf("rest %q without a space in %q", cmd.rest, line)
		}
		if len(cmd.args) > maxArgs {
			t.Fatalf("%d args", len(cmd.args))
		}
		var want []string
		for f := range strings.SplitSeq(cmd.rest, " ") {
			if f != "" {
				want = append(want, f)
			}
		}
		if !slices.Equal(cmd.args, want) {
			t.Fatalf("args %q do not match rest %q", cmd.args, cmd.rest)
		}
		for _, a := range cmd.args {
			if a == "" || strings.Contains(a, " ") {
				t.Fatalf("bad argument %q", a)
			}
		}
		for _, c := range line {
			if c == 0 || c == '\r' || c == '\n' {
				t.Fatalf("accepted %q with a NUL, CR or LF", line)
			}
		}
	})
}
