package render

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/letterbox/letterbox/internal/message"
)

// typicalMessage is a typical multipart message: mixed > (alternative >
// (text/plain, text/html quoted-printable), application/pdf base64), with
// the usual delivery and envelope headers; about 40 KB.
func typicalMessage() []byte {
	var b bytes.Buffer
	b.WriteString("Return-Path: <alice@example.com>\r\n" +
		"Received: from mx.example.com (mx.example.com [192.0.2.1])\r\n\tby mail.example.org with ESMTPS; Mon, 4 Mar 2024 09:15:02 +0000\r\n" +
		"Date: Mon, 4 Mar 2024 09:15:00 +0000\r\n" +
		"From: \"Alice Example\" <alice@example.com>\r\n" +
		"To: Bob <bob@example.org>, carol@example.org\r\n" +
		"Cc: =?utf-8?q?Dani=C3=A9l?= <daniel@example.net>\r\n" +
		"Subject: =?utf-8?q?Quarterly_report?= and\r\n the numbers\r\n" +
		"Message-ID: <20240304091500.1234@example.com>\r\n" +
		"In-Reply-To: <prev@example.org>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n" +
		"--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n" +
		"--alt\r\nContent-Type: text/plain; charset=utf-8; format=flowed\r\n\r\n")
	b.WriteString(strings.Repeat("Some plain text of the message body.\r\n", 40))
	b.WriteString("\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	b.WriteString(strings.Repeat("<p>Some <b>html</b> text with =3D signs and soft breaks =\r\nhere.</p>\r\n", 40))
	b.WriteString("\r\n--alt--\r\n\r\n--outer\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"report.pdf\"; size=24000\r\n\r\n")
	b.WriteString(strings.Repeat(strings.Repeat("QUJD", 19)+"\r\n", 400))
	b.WriteString("\r\n--outer--\r\n")
	return b.Bytes()
}

// BenchmarkFetchStructure is FETCH (ENVELOPE BODYSTRUCTURE) of one message
// as the server does it: decode the stored structure, render both items.
func BenchmarkFetchStructure(b *testing.B) {
	root, err := message.Parse(bytes.NewReader(typicalMessage()))
	if err != nil {
		b.Fatal(err)
	}
	enc := root.Marshal()
	w := bufio.NewWriterSize(io.Discard, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		p, err := message.Unmarshal(enc)
		if err != nil {
			b.Fatal(err)
		}
		w.WriteString("* 1 FETCH (ENVELOPE ")
		Envelope(w, p.Envelope)
		w.WriteString(" BODYSTRUCTURE ")
		BodyStructure(w, p, true)
		w.WriteString(")\r\n")
	}
	w.Flush()
}

// BenchmarkRenderStructure is the rendering alone (structure already
// decoded).
func BenchmarkRenderStructure(b *testing.B) {
	root, err := message.Parse(bytes.NewReader(typicalMessage()))
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(io.Discard, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		Envelope(w, root.Envelope)
		BodyStructure(w, root, true)
	}
	w.Flush()
}

// BenchmarkHeaderFields is BODY.PEEK[HEADER.FIELDS (...)] as mail clients
// send it for message lists.
func BenchmarkHeaderFields(b *testing.B) {
	msg := typicalMessage()
	root, err := message.Parse(bytes.NewReader(msg))
	if err != nil {
		b.Fatal(err)
	}
	blob := bytes.NewReader(msg)
	spec := SectionSpec{Specifier: SpecHeaderFields, Fields: []string{"FROM", "TO", "CC", "SUBJECT", "DATE", "MESSAGE-ID"}}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		r, n, err := Section(root, blob, int64(len(msg)), spec)
		if err != nil {
			b.Fatal(err)
		}
		r.ReadAt(buf[:n], 0)
	}
}
