package pop3

import (
	"errors"
	"strings"
)

const (
	// maxCommandLine is the longest command line accepted, CRLF included.
	// RFC 2449 §4 limits clients to 255 octets; we allow more because some
	// clients send long user names or passwords.
	maxCommandLine = 512
	// maxSASLLine is the longest SASL response line accepted (RFC 5034 does
	// not apply the 255-octet limit to them), CRLF included.
	maxSASLLine = 2048
	// maxKeyword is the longest command keyword; RFC 2449 §3 keywords are
	// three or four characters.
	maxKeyword = 4
	// maxArgs bounds the number of arguments parseCommand splits out.
	maxArgs = 8
)

var (
	errEmptyCommand = errors.New("empty command")
	errBadKeyword   = errors.New("malformed command keyword")
	errBadChar      = errors.New("invalid character in command")
	errTooManyArgs  = errors.New("too many arguments")
)

// command is one parsed command line.
type command struct {
	// name is the keyword in upper case (commands are case-insensitive,
	// RFC 1939 §3).
	name string
	// args are the space-separated arguments; runs of spaces count as one
	// separator, leading and trailing spaces are ignored.
	args []string
	// rest is everything after the keyword and the one space that follows
	// it, exactly as sent. PASS uses it: RFC 1939 §7 lets the password
	// contain spaces.
	rest string
}

// parseCommand parses a command line without its line end. It accepts any
// octet in arguments except NUL, CR and LF (passwords may be UTF-8); the
// keyword must be 1-4 ASCII letters.
func parseCommand(line []byte) (command, error) {
	for _, c := range line {
		if c == 0 || c == '\r' || c == '\n' {
			return command{}, errBadChar
		}
	}
	if len(strings.TrimLeft(string(line), " ")) == 0 {
		return command{}, errEmptyCommand
	}
	kw, rest, _ := strings.Cut(string(line), " ")
	if len(kw) == 0 || len(kw) > maxKeyword {
		return command{}, errBadKeyword
	}
	for i := 0; i < len(kw); i++ {
		c := kw[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return command{}, errBadKeyword
		}
	}
	cmd := command{name: strings.ToUpper(kw), rest: rest}
	for f := range strings.SplitSeq(rest, " ") {
		if f == "" {
			continue
		}
		if len(cmd.args) == maxArgs {
			return command{}, errTooManyArgs
		}
		cmd.args = append(cmd.args, f)
	}
	return cmd, nil
}

// parseNumber parses a POP3 number argument: one or more ASCII digits, no
// sign. Values beyond the uint32 range saturate to 1<<32, which is larger
// than any message number or line count that matters.
func parseNumber(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n <= 1<<32 {
			n = n*10 + uint64(c-'0')
		}
	}
	return min(n, 1<<32), true
}
