package delivery

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Length limits in octets. RFC 5321 §4.5.3.1.1 limits a local part to 64
// octets, but senders in the wild exceed that (SRS and VERP bounce
// addresses), and §4.5.3.1 asks implementations to impose no limits where
// they can; local parts are therefore accepted up to 255 octets, the limit
// of a domain (§4.5.3.1.2). Recipients must name an existing account anyway.
const (
	maxLocalPart = 255
	maxDomain    = 255
)

// ErrBadAddress is wrapped by the errors ParseAddress and SplitAddress
// return.
var ErrBadAddress = errors.New("malformed address")

// Address is one mailbox address: a local part in decoded form (the quotes
// and backslash escapes of an RFC 5321 Quoted-string removed) and a domain
// (a host name, possibly with UTF-8 U-labels, or an address literal in
// brackets).
type Address struct {
	Local  string
	Domain string
}

// String returns the address in RFC 5321 form: the local part as a
// Dot-string when it is one, as a Quoted-string otherwise.
func (a Address) String() string {
	if isDotString(a.Local) {
		return a.Local + "@" + a.Domain
	}
	var b strings.Builder
	b.Grow(len(a.Local) + len(a.Domain) + 4)
	b.WriteByte('"')
	for i := 0; i < len(a.Local); i++ {
		if c := a.Local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(a.Local[i])
	}
	b.WriteString(`"@`)
	b.WriteString(a.Domain)
	return b.String()
}

// IsASCII reports whether the address is plain ASCII, i.e. whether it can
// be used without the SMTPUTF8 extension (RFC 6531).
func (a Address) IsASCII() bool { return isASCII(a.Local) && isASCII(a.Domain) }

func badAddress(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadAddress}, args...)...)
}

// ParseAddress parses an address in RFC 5321 Mailbox syntax, optionally in
// angle brackets: a Dot-string or Quoted-string local part, "@", and a
// domain or address literal. UTF-8 is accepted in the local part and domain
// (RFC 6531); whether it is allowed in a given SMTP transaction is the
// caller's business. This is the form users type (`letterbox deliver`).
func ParseAddress(s string) (Address, error) {
	if strings.HasPrefix(s, "<") {
		if !strings.HasSuffix(s, ">") || len(s) < 2 {
			return Address{}, badAddress("unbalanced angle brackets")
		}
		s = s[1 : len(s)-1]
	}
	var local, rest string
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		i := 1
		closed := false
		for i < len(s) {
			c := s[i]
			i++
			if c == '"' {
				closed = true
				break
			}
			if c == '\\' {
				if i >= len(s) {
					return Address{}, badAddress("backslash at end of quoted local part")
				}
				c = s[i]
				i++
				// quoted-pairSMTP = %d92 %d32-126
				if c < 32 || c > 126 {
					return Address{}, badAddress("invalid quoted pair")
				}
			}
			b.WriteByte(c)
		}
		if !closed {
			return Address{}, badAddress("unterminated quoted local part")
		}
		local, rest = b.String(), s[i:]
		if err := checkLocal(local); err != nil {
			return Address{}, err
		}
	} else {
		at := strings.IndexByte(s, '@')
		if at < 0 {
			return Address{}, badAddress("no @ in %q", s)
		}
		local, rest = s[:at], s[at:]
		if !isDotString(local) {
			return Address{}, badAddress("local part %q is not a dot-string", local)
		}
		if err := checkLocal(local); err != nil {
			return Address{}, err
		}
	}
	if !strings.HasPrefix(rest, "@") {
		return Address{}, badAddress("no @ after local part")
	}
	domain := rest[1:]
	if err := checkDomain(domain); err != nil {
		return Address{}, err
	}
	return Address{Local: local, Domain: domain}, nil
}

// SplitAddress splits an address whose local part is already decoded, the
// form go-smtp hands to its Session (it removes the quotes of a
// Quoted-string), at its last "@" and validates both halves.
func SplitAddress(s string) (Address, error) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, badAddress("no @ in %q", s)
	}
	a := Address{Local: s[:at], Domain: s[at+1:]}
	if err := checkLocal(a.Local); err != nil {
		return Address{}, err
	}
	if err := checkDomain(a.Domain); err != nil {
		return Address{}, err
	}
	return a, nil
}

// checkLocal validates a decoded local part: 1 to 255 octets of valid UTF-8
// with no control characters (everything a Quoted-string can carry).
func checkLocal(l string) error {
	switch {
	case l == "":
		return badAddress("empty local part")
	case len(l) > maxLocalPart:
		return badAddress("local part longer than %d octets", maxLocalPart)
	case !utf8.ValidString(l):
		return badAddress("local part is not valid UTF-8")
	}
	for _, r := range l {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return badAddress("control character in local part")
		}
	}
	return nil
}

// checkDomain validates a domain: dot-separated labels of letters, digits,
// hyphens (and, leniently, underscores) or UTF-8 (U-labels, RFC 6531), or
// an IPv4 / IPv6 address literal (RFC 5321 §4.1.3).
func checkDomain(d string) error {
	switch {
	case d == "":
		return badAddress("empty domain")
	case len(d) > maxDomain:
		return badAddress("domain longer than %d octets", maxDomain)
	case !utf8.ValidString(d):
		return badAddress("domain is not valid UTF-8")
	}
	if strings.HasPrefix(d, "[") {
		if !validAddressLiteral(d) {
			return badAddress("invalid address literal %q", d)
		}
		return nil
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return badAddress("invalid domain %q", d)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return badAddress("invalid domain %q", d)
		}
		for _, r := range label {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			case r >= 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)):
			default:
				return badAddress("invalid character %q in domain", r)
			}
		}
	}
	return nil
}

// validAddressLiteral accepts "[1.2.3.4]" and "[IPv6:...]".
func validAddressLiteral(d string) bool {
	if len(d) < 3 || d[0] != '[' || d[len(d)-1] != ']' {
		return false
	}
	in := d[1 : len(d)-1]
	if v6, ok := cutPrefixFold(in, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(in)
	return err == nil && a.Is4()
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// isDotString reports whether s is an RFC 5321 Dot-string (with the UTF-8
// atext of RFC 6531): atoms separated by single dots.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if r == '.' || isAtext(r) {
			continue
		}
		return false
	}
	return true
}

// isAtext is RFC 5322 atext plus RFC 6531's UTF8-non-ascii.
func isAtext(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	case strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", r):
		return true
	case r >= 0x80 && r != utf8.RuneError && !unicode.IsControl(r) && !unicode.IsSpace(r):
		return true
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
