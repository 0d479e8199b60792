package message

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// addrString renders an address list compactly: groups as "G[name" and "]",
// addresses as "name|route|mailbox|host", invalid ones with a "!" prefix.
func addrString(l []Address) string {
	var out []string
	for _, a := range l {
		s := ""
		switch a.Kind {
		case AddrGroupStart:
			s = "G[" + a.Mailbox
		case AddrGroupEnd:
			s = "]"
		default:
			s = fmt.Sprintf("%s|%s|%s|%s", a.Name, a.Route, a.Mailbox, a.Host)
		}
		if a.Invalid {
			s = "!" + s
		}
		out = append(out, s)
	}
	return strings.Join(out, " ; ")
}

func TestParseAddressList(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{" \r\n ", ""},
		{"a@b", "||a|b"},
		{"<a@b>", "||a|b"},
		{"Name <a@b>", "Name||a|b"},
		{`"Doe, John (Sales)" <john.doe@example.com> (work account)`, "Doe, John (Sales)||john.doe|example.com"},
		{"(only a comment) sender@example.com", "||sender|example.com"},
		{`"Smith \"Smithy\" J." <"smith j"@example.org>`, `Smith "Smithy" J.||smith j|example.org`},
		{"jane@example.com (Jane)", "Jane||jane|example.com"},
		{"Pete(A wonderful \\) chap) <pete(his account)@silly.test(his host)>", "Pete||pete|silly.test"},
		{`"" <empty-name@example.com>`, "||empty-name|example.com"},
		{"mary@[192.0.2.1]", "||mary|[192.0.2.1]"},
		{"<@route1.example,@route2.example:user@example.net>", "|@route1.example,@route2.example|user|example.net"},
		{"<@r1 u@h>", "!|INVALID_ROUTE|u|h"},
		{"undisclosed-recipients:;", "G[undisclosed-recipients ; ]"},
		{"Project Team: ann@example.com, \"Ben B.\" <ben@example.com>;, carl@example.net",
			"G[Project Team ; ||ann|example.com ; Ben B.||ben|example.com ; ] ; ||carl|example.net"},
		{"G: a@b, c@d", "G[G ; ||a|b ; ||c|d ; !]"},
		{": a@b;", "G[ ; ||a|b ; ]"},
		{"user", "!||user|MISSING_DOMAIN"},
		{"user name", "!user name||MISSING_MAILBOX|MISSING_DOMAIN"},
		{"@host", "!||MISSING_MAILBOX|host"},
		{"a@", "!||a|MISSING_DOMAIN"},
		{"Name <>", "!Name||MISSING_MAILBOX|MISSING_DOMAIN"},
		{"Name <a@b", "!Name||a|SYNTAX_ERROR"},
		{"a@b,,c@d", "||a|b ; !||MISSING_MAILBOX|MISSING_DOMAIN ; ||c|d"},
		{"a@b c@d", "||a|b"}, // garbage after an address ends the list, as in Dovecot
		{".a..b@c", "||.a..b|c"},
		{`""@host`, "|||host"}, // an empty quoted local part is valid
		{"=?utf-8?q?x?= <a@b>", "=?utf-8?q?x?=||a|b"},
		{"\"x\x00y\" <a@b>", "x\uFFFDy||a|b"},
		{"Jörg Müller <jörg@bücher.example>", "Jörg Müller||jörg|bücher.example"},
		{"first@example.com,\r\n    second@example.com,\r\n\t\"Third,\r\n Person\" <third@example.com>",
			"||first|example.com ; ||second|example.com ; Third, Person||third|example.com"},
	} {
		got, err := ParseAddressList(tc.in)
		if s := addrString(got); s != tc.want {
			t.Errorf("ParseAddressList(%q) = %s, want %s", tc.in, s, tc.want)
		}
		if invalid := strings.Contains(tc.want, "!"); invalid != (err != nil) || (err != nil && !errors.Is(err, ErrAddressSyntax)) {
			t.Errorf("ParseAddressList(%q) error = %v", tc.in, err)
		}
	}
}
