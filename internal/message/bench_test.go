package message

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// benchMessage builds a multipart/mixed message of about size bytes: text,
// HTML (quoted-printable) and base64 attachments, nested one level.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("Return-Path: <a@example.com>\r\nReceived: from mx.example.com by mail.example.org; Mon, 4 Mar 2024 09:15:02 +0000\r\n" +
		"Date: Mon, 4 Mar 2024 09:15:00 +0000\r\nFrom: \"Alice Example\" <alice@example.com>\r\nTo: Bob <bob@example.org>, carol@example.org\r\n" +
		"Subject: =?utf-8?q?Quarterly_report?=\r\nMessage-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n")
	line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 3)[:76] + "\r\n"
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "--outer\r\nContent-Type: multipart/alternative; boundary=\"alt%d\"\r\n\r\n--alt%d\r\n"+
			"Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n--alt%d\r\nContent-Type: text/html; charset=utf-8\r\n"+
			"Content-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n--alt%d--\r\n",
			i, i, strings.Repeat("Some plain text of the message body.\r\n", 20), i,
			strings.Repeat("<p>Some <b>html</b> text with =3D signs and soft breaks =\r\nhere.</p>\r\n", 20), i)
		fmt.Fprintf(&b, "--outer\r\nContent-Type: application/pdf; name=\"file%d.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"+
			"Content-Disposition: attachment; filename=\"file%d.pdf\"\r\n\r\n%s", i, i, strings.Repeat(line, 200))
		b.WriteString("\r\n")
	}
	b.WriteString("--outer--\r\n")
	return b.Bytes()
}

func BenchmarkParse1MiB(b *testing.B) {
	msg := benchMessage(1 << 20)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	p, err := Parse(bytes.NewReader(benchMessage(1 << 20)))
	if err != nil {
		b.Fatal(err)
	}
	enc := p.Marshal()
	parts := 0
	p.Walk(func(*Part) bool { parts++; return true })
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(enc)), "encoded-bytes")
	b.ReportMetric(float64(parts), "parts")
}

// BenchmarkUnmarshalSimple is the common case: a single-part message.
func BenchmarkUnmarshalSimple(b *testing.B) {
	p, err := Parse(strings.NewReader(nestedMsg))
	if err != nil {
		b.Fatal(err)
	}
	enc := p.Marshal()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	p, err := Parse(bytes.NewReader(benchMessage(1 << 20)))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Marshal()
	}
}
