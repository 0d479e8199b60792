package mailstore

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file holds the naming rules every backend applies in the same way, so
// that the same name is accepted or refused whatever the storage engine.

// CanonicalAccountName validates an account (login) name and returns its
// canonical form: lower case. It returns ErrInvalidName for an empty name,
// invalid UTF-8, or a name containing white space or control characters.
func CanonicalAccountName(name string) (string, error) {
	if name == "" || !utf8.ValidString(name) {
		return "", ErrInvalidName
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return "", ErrInvalidName
		}
	}
	return strings.ToLower(name), nil
}

// CanonicalMailboxName validates a mailbox name and returns its canonical
// form. Names are UTF-8 with HierarchySeparator between levels. A first level
// that equals "INBOX" in any case is written "INBOX" (so "inbox" and
// "Inbox/Sub" become "INBOX" and "INBOX/Sub"); everything else is kept as
// given and compared case-sensitively.
//
// It returns ErrInvalidName for an empty name, invalid UTF-8, control
// characters (NUL, CR, LF, any other C0 control or DEL), a leading or
// trailing separator, or an empty level ("a//b").
func CanonicalMailboxName(name string) (string, error) {
	if name == "" || !utf8.ValidString(name) {
		return "", ErrInvalidName
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c == 0x7f {
			return "", ErrInvalidName
		}
	}
	sep := string(HierarchySeparator)
	if strings.HasPrefix(name, sep) || strings.HasSuffix(name, sep) || strings.Contains(name, sep+sep) {
		return "", ErrInvalidName
	}
	first, rest, hasRest := strings.Cut(name, sep)
	if strings.EqualFold(first, Inbox) {
		if !hasRest {
			return Inbox, nil
		}
		return Inbox + sep + rest, nil
	}
	return name, nil
}

// IsChildOf reports whether mailbox name is an inferior of parent in the
// hierarchy ("a/b" and "a/b/c" are children of "a"; "ab" is not).
func IsChildOf(name, parent string) bool {
	return len(name) > len(parent)+1 && strings.HasPrefix(name, parent) && name[len(parent)] == HierarchySeparator
}
