package mailstore

import (
	"errors"
	"slices"
	"strings"
)

// ErrInvalidFlag is returned for a flag that cannot be stored: empty, not an
// IMAP atom, \Recent (which only the server sets) or an unknown system flag.
var ErrInvalidFlag = errors.New("mailstore: invalid flag")

var systemFlags = []string{FlagSeen, FlagAnswered, FlagFlagged, FlagDeleted, FlagDraft}

// CanonicalFlag validates one flag and returns its canonical spelling:
// system flags are case-canonicalised (`\seen` becomes `\Seen`), keywords are
// kept as given. Keywords must be IMAP atoms (RFC 3501 §9: printable ASCII
// without SP, "(", ")", "{", "%", "*", '"', "\" or "]").
func CanonicalFlag(flag string) (string, error) {
	if flag == "" {
		return "", ErrInvalidFlag
	}
	if flag[0] == '\\' {
		for _, f := range systemFlags {
			if strings.EqualFold(flag, f) {
				return f, nil
			}
		}
		return "", ErrInvalidFlag
	}
	for i := 0; i < len(flag); i++ {
		c := flag[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return "", ErrInvalidFlag
		}
	}
	return flag, nil
}

// CanonicalFlags validates flags and returns them canonicalised, deduplicated
// case-insensitively (the first spelling of a keyword wins) and sorted. The
// result is never nil.
func CanonicalFlags(flags []string) ([]string, error) {
	out := make([]string, 0, len(flags))
	for _, f := range flags {
		c, err := CanonicalFlag(f)
		if err != nil {
			return nil, err
		}
		if !containsFold(out, c) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ApplyFlags computes the flags of a message after a StoreFlags operation.
// cur and flags must be canonical (see CanonicalFlags). The result is
// canonical; changed reports whether it differs from cur. Keywords are
// matched case-insensitively, so adding "foo" to a message carrying "Foo"
// changes nothing.
func ApplyFlags(cur []string, op FlagOp, flags []string) (result []string, changed bool) {
	switch op {
	case FlagsAdd:
		result = slices.Clone(cur)
		for _, f := range flags {
			if !containsFold(result, f) {
				result = append(result, f)
			}
		}
	case FlagsRemove:
		result = make([]string, 0, len(cur))
		for _, f := range cur {
			if !containsFold(flags, f) {
				result = append(result, f)
			}
		}
	case FlagsReplace:
		result = slices.Clone(flags)
	}
	if result == nil {
		result = []string{}
	}
	slices.Sort(result)
	return result, !slices.Equal(result, cur)
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
