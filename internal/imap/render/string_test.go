package render

import (
	"bufio"
	"strings"
	"testing"

	"github.com/letterbox/letterbox/internal/message"
)

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"text", `"text"`},
		{"NIL", `"NIL"`},
		{"two words", `"two words"`},
		{"(paren) {brace} [x] %*", `"(paren) {brace} [x] %*"`},
		{`a "quoted" word`, `"a \"quoted\" word"`},
		{`back\slash`, `"back\\slash"`},
		{`four "" \\`, `"four \"\" \\\\"`},         // 4 escapes: still quoted
		{`five """""`, "{10}\r\nfive \"\"\"\"\""},  // 5 escapes: literal
		{"line\r\nbreak", "{11}\r\nline\r\nbreak"}, // CRLF
		{"bare\nLF", "{7}\r\nbare\nLF"},            // LF
		{"bare\rCR", "{7}\r\nbare\rCR"},            // CR
		{"caf\xc3\xa9", "{5}\r\ncaf\xc3\xa9"},      // 8-bit UTF-8
		{"latin1 \xe9", "{8}\r\nlatin1 \xe9"},      // 8-bit, not UTF-8
		{"nul\x00byte", "{8}\r\nnul\x80byte"},      // NUL -> 0x80
		{"tab\there", "\"tab\there\""},             // TAB is a TEXT-CHAR
		{"\x7f", "\"\x7f\""},                       // DEL is 7-bit CHAR
		{strings.Repeat("x", 300), `"` + strings.Repeat("x", 300) + `"`},
	}
	for _, tt := range tests {
		got := string(render(func(w *bufio.Writer) { String(w, tt.in) }))
		if got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
		// the output must parse back to the input (NUL aside)
		n, err := parseOne([]byte(got))
		if err != nil || n.Kind != NodeString || n.Value != strings.ReplaceAll(tt.in, "\x00", "\x80") {
			t.Errorf("String(%q) = %q parses as %v, %v", tt.in, got, n, err)
		}
	}
}

func TestNString(t *testing.T) {
	for _, tt := range []struct {
		in   message.NString
		want string
	}{
		{message.NString{}, "NIL"},
		{message.NString{S: "ignored"}, "NIL"},
		{message.NS(""), `""`},
		{message.NS("NIL"), `"NIL"`},
		{message.NS("x\r\n y"), "{5}\r\nx\r\n y"},
	} {
		if got := string(render(func(w *bufio.Writer) { NString(w, tt.in) })); got != tt.want {
			t.Errorf("NString(%+v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAString(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"INBOX", "INBOX"},
		{"Sent/2024", "Sent/2024"},
		{"a]b", "a]b"}, // resp-specials are ASTRING-CHARs
		{"NIL", `"NIL"`},
		{"nil", `"nil"`},
		{"", `""`},
		{"two words", `"two words"`},
		{"a%b", `"a%b"`},
		{"a*b", `"a*b"`},
		{"a{b", `"a{b"`},
		{"a(b", `"a(b"`},
		{`a"b`, `"a\"b"`},
		{"Entwürfe", "{9}\r\nEntwürfe"},
	} {
		if got := string(render(func(w *bufio.Writer) { AString(w, tt.in) })); got != tt.want {
			t.Errorf("AString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLiteralPrefixes(t *testing.T) {
	if got := string(render(func(w *bufio.Writer) { Literal(w, 42) })); got != "{42}\r\n" {
		t.Errorf("Literal = %q", got)
	}
	if got := string(render(func(w *bufio.Writer) { Literal8(w, 0) })); got != "~{0}\r\n" {
		t.Errorf("Literal8 = %q", got)
	}
}

// TestHeaderStrings covers the ENVELOPE serving rules: Subject and display
// names squeezed (for humans), Date/Message-ID/In-Reply-To without line
// breaks, absent Sender/Reply-To repeating From, groups.
func TestHeaderStrings(t *testing.T) {
	from := []message.Address{{Name: "  Alice \t\r\n Example ", Mailbox: "alice", Host: "example.com"}}
	env := &message.Envelope{
		Date:      message.NS("Mon, 4 Mar 2024\r\n 09:15:00 +0000"),
		Subject:   message.NS("  Hello\r\n\tfolded   world  "),
		From:      from,
		To:        []message.Address{{Kind: message.AddrGroupStart, Mailbox: "team"}, {Mailbox: "bob", Host: "example.org", Route: "@relay.example"}, {Kind: message.AddrGroupEnd}},
		InReplyTo: message.NS("<a@x>\r\n<b@x>"),
		MessageID: message.NS("<id@x>"),
	}
	got := string(render(func(w *bufio.Writer) { Envelope(w, env) }))
	want := `("Mon, 4 Mar 2024 09:15:00 +0000" "Hello folded world" (("Alice Example" NIL "alice" "example.com")) ` +
		`(("Alice Example" NIL "alice" "example.com")) (("Alice Example" NIL "alice" "example.com")) ` +
		`((NIL NIL "team" NIL)(NIL "@relay.example" "bob" "example.org")(NIL NIL NIL NIL)) NIL NIL "<a@x> <b@x>" "<id@x>")`
	if got != want {
		t.Errorf("Envelope:\n got %s\nwant %s", got, want)
	}
	if got := string(render(func(w *bufio.Writer) { Envelope(w, nil) })); got != "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)" {
		t.Errorf("nil Envelope = %s", got)
	}
	// an all-white-space subject is "", an 8-bit one a literal
	env = &message.Envelope{Subject: message.NS(" \r\n\t ")}
	if got := string(render(func(w *bufio.Writer) { Envelope(w, env) })); !strings.HasPrefix(got, `(NIL "" NIL`) {
		t.Errorf("blank subject: %s", got)
	}
	env = &message.Envelope{Subject: message.NS("Gr\xfc\xdfe  aus\r\n K\xf6ln")}
	if got := string(render(func(w *bufio.Writer) { Envelope(w, env) })); !strings.HasPrefix(got, "(NIL {14}\r\nGr\xfc\xdfe aus K\xf6ln NIL") {
		t.Errorf("8-bit subject: %q", got)
	}
	// transformed strings are quoted, escaped or sent as literals like any
	for in, want := range map[string]string{
		"  a \"b\"\r\n c\\ ": `"a \"b\" c\\"`,
		" \"\"\"\"\"\t":      "{5}\r\n\"\"\"\"\"",
		"nul\x00\r\n\tbyte ": "{9}\r\nnul\x80 byte",
	} {
		if got := string(render(func(w *bufio.Writer) { human(w, in) })); got != want {
			t.Errorf("human(%q) = %q, want %q", in, got, want)
		}
	}
	// no-LF rule: a line break not followed by white space becomes a space
	if got := string(render(func(w *bufio.Writer) { nstringNoLF(w, message.NS("a\r\nb\nc\r\n d")) })); got != `"a b c d"` {
		t.Errorf("nstringNoLF = %s", got)
	}
}

func TestSectionSpecString(t *testing.T) {
	for _, tt := range []struct {
		spec SectionSpec
		want string
	}{
		{SectionSpec{}, ""},
		{SectionSpec{Binary: true}, ""},
		{SectionSpec{Part: []int{1}}, "1"},
		{SectionSpec{Part: []int{1, 2, 3}}, "1.2.3"},
		{SectionSpec{Specifier: "header"}, "HEADER"},
		{SectionSpec{Specifier: "TEXT"}, "TEXT"},
		{SectionSpec{Part: []int{2}, Specifier: "MIME"}, "2.MIME"},
		{SectionSpec{Part: []int{4, 1}, Specifier: "TEXT"}, "4.1.TEXT"},
		{SectionSpec{Specifier: "HEADER.FIELDS", Fields: []string{"From", "to"}}, "HEADER.FIELDS (FROM TO)"},
		{SectionSpec{Part: []int{1, 2}, Specifier: "header.fields.not", Fields: []string{"X-Spam"}}, "1.2.HEADER.FIELDS.NOT (X-SPAM)"},
		{SectionSpec{Specifier: "HEADER.FIELDS", Fields: []string{"a b", `q"x`, "nil", "\xe9"}}, "HEADER.FIELDS (\"A B\" \"Q\\\"X\" \"NIL\" {1}\r\n\xe9)"},
	} {
		if got := tt.spec.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.spec, got, tt.want)
		}
	}
}

func TestParseData(t *testing.T) {
	items, err := ParseData([]byte("* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM)]<0> {3}\r\nabc FLAGS (\\Seen) X ~{2}\r\n\x00\x01 \"q\\\"\")\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := `* 1 FETCH (UID 1 BODY[HEADER.FIELDS (FROM)]<0> "abc" FLAGS (\Seen) X "\x00\x01" "q\"")`
	got := make([]string, len(items))
	for i, n := range items {
		got[i] = n.String()
	}
	if strings.Join(got, " ") != want {
		t.Errorf("ParseData = %s\nwant %s", strings.Join(got, " "), want)
	}
	for _, bad := range []string{"(", ")", "(a\r\nb)", `"unterminated`, "{5}\r\nabc", "{x}\r\n", `"a\b"`, "\"nul\x00\""} {
		if _, err := ParseData([]byte(bad)); err == nil {
			t.Errorf("ParseData(%q) succeeded", bad)
		}
	}
	if !(Node{Kind: NodeAtom, Value: "nil"}).Equal(Node{Kind: NodeAtom, Value: "NIL"}) ||
		(Node{Kind: NodeString, Value: "a"}).Equal(Node{Kind: NodeString, Value: "A"}) ||
		(Node{Kind: NodeString, Value: "NIL"}).Equal(Node{Kind: NodeAtom, Value: "NIL"}) {
		t.Error("Node.Equal")
	}
	resp, rest, err := SplitResponse([]byte("* 1 FETCH (BODY[] {4}\r\na\r\nb)\r\nA1 OK\r\n"))
	if err != nil || string(resp) != "* 1 FETCH (BODY[] {4}\r\na\r\nb)\r\n" || string(rest) != "A1 OK\r\n" {
		t.Errorf("SplitResponse = %q, %q, %v", resp, rest, err)
	}
	if _, _, err := SplitResponse([]byte("* {10}\r\nshort")); err == nil {
		t.Error("SplitResponse accepted a short literal")
	}
}

func TestBodyStructureEdges(t *testing.T) {
	leaf := &message.Part{
		Type: "application", Subtype: "octet-stream",
		Params:      []message.Param{{Name: "name", Value: "r\xe9sum\xe9.pdf"}},
		Description: message.NS("folded\r\n description"),
		Encoding:    message.NS("base64"),
		BodySize:    10,
		Disposition: message.NS("attachment"),
		Language:    []string{}, // present but empty: NIL, "()" is not valid
	}
	got := string(render(func(w *bufio.Writer) { BodyStructure(w, leaf, true) }))
	want := "(\"application\" \"octet-stream\" (\"name\" {10}\r\nr\xe9sum\xe9.pdf) NIL \"folded description\" \"base64\" 10 NIL (\"attachment\" NIL) NIL NIL)"
	if got != want {
		t.Errorf("BODYSTRUCTURE = %q\nwant %q", got, want)
	}
	text := &message.Part{Type: "TEXT", Subtype: "html", Params: []message.Param{{Name: "format", Value: "flowed"}}, BodySize: 3, BodyLines: 1}
	got = string(render(func(w *bufio.Writer) { BodyStructure(w, text, false) }))
	if want := `("TEXT" "html" ("format" "flowed" "charset" "us-ascii") NIL NIL "7bit" 3 1)`; got != want {
		t.Errorf("BODY = %s\nwant %s", got, want)
	}
	empty := &message.Part{Kind: message.KindMultipart, Type: "multipart", Subtype: "mixed"}
	for extended, want := range map[bool]string{
		false: `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")`,
		true:  `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" NIL NIL NIL NIL)`,
	} {
		if got := string(render(func(w *bufio.Writer) { BodyStructure(w, empty, extended) })); got != want {
			t.Errorf("empty multipart (extended %v) = %s\nwant %s", extended, got, want)
		}
	}
}
