package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The message mix is a pure function of MixParams: the same parameters give
// byte-identical messages and recipient lists on every run and every machine,
// so Letterbox and Dovecot receive exactly the same mail.

// MixParams describes a deterministic message mix.
type MixParams struct {
	Seed      uint64
	Messages  int     // number of messages
	MinSize   int     // smallest regular message, bytes
	MaxSize   int     // largest regular message, bytes
	HugeSize  int     // size of the rare huge messages, bytes
	HugeFrac  float64 // fraction of messages that are huge (0.002 = 0.2%)
	Users     int     // recipients are user1..userN@Domain
	Domain    string  // recipient domain
	MultiRcpt float64 // fraction of messages with 2 or 3 recipients
}

// Message is one generated message, ready to send.
type Message struct {
	ID    int
	Size  int      // octets of the message (CRLF line ends, not dot-stuffed)
	Rcpts []string // recipient addresses
	Wire  []byte   // dot-stuffed DATA payload including the final ".\r\n"
}

// crcTable is CRC-32C (Castagnoli), hardware accelerated on amd64/arm64.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// mixHeader is the name of the header carrying the integrity check. Its value
// is "id=N; body-len=L; body-crc32c=XXXXXXXX", computed over the body (the
// octets after the first empty line). The POP3 mode verifies it.
const mixHeader = "X-Mailbench"

func (p MixParams) rng(i int, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(p.Seed^0x9e3779b97f4a7c15, uint64(i)<<8|stream))
}

// Recipients returns the recipients of message i (cheap: no body generated).
func (p MixParams) Recipients(i int) []string {
	r := p.rng(i, 1)
	users := max(p.Users, 1)
	first := i % users
	idx := []int{first}
	if users > 1 && r.Float64() < p.MultiRcpt {
		n := 2
		if users > 2 && r.IntN(3) == 0 {
			n = 3
		}
		for len(idx) < n {
			u := r.IntN(users)
			dup := false
			for _, x := range idx {
				dup = dup || x == u
			}
			if !dup {
				idx = append(idx, u)
			}
		}
	}
	out := make([]string, len(idx))
	for k, u := range idx {
		out[k] = fmt.Sprintf("user%d@%s", u+1, p.Domain)
	}
	return out
}

// ExpectedIDs returns, for each user name ("user3@domain"), the message ids
// it should hold after the whole mix was delivered.
func (p MixParams) ExpectedIDs() map[string][]int {
	m := map[string][]int{}
	for i := 0; i < p.Messages; i++ {
		for _, rc := range p.Recipients(i) {
			m[rc] = append(m[rc], i)
		}
	}
	return m
}

// targetSize picks the size of message i: log-uniform between MinSize and
// MaxSize, except a HugeFrac share of HugeSize messages.
func (p MixParams) targetSize(r *rand.Rand) int {
	if r.Float64() < p.HugeFrac {
		return p.HugeSize
	}
	lo, hi := math.Log(float64(p.MinSize)), math.Log(float64(p.MaxSize))
	return int(math.Exp(lo + r.Float64()*(hi-lo)))
}

// Generate builds the whole mix in memory, using all cores.
func (p MixParams) Generate() []Message {
	msgs := make([]Message, p.Messages)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	next := make(chan int, 64)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				raw := p.Build(i)
				msgs[i] = Message{ID: i, Size: len(raw), Rcpts: p.Recipients(i), Wire: dotStuff(raw)}
			}
		}()
	}
	for i := 0; i < p.Messages; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return msgs
}

var (
	firstNames = []string{"Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
		"Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoë", "José", "Søren", "Łukasz"}
	lastNames = []string{"Smith", "Jones", "Müller", "García", "Rossi", "Dubois", "Novak", "Kowalski", "Tanaka",
		"Nguyen", "O'Brien", "Andersson", "Silva", "Ivanova", "Kim", "Okafor"}
	senderDomains = []string{"example.net", "example.com", "example.org", "mail.example.net", "lists.example.org"}
	words         = strings.Fields(`the of and to in is that it for on was with as be at by this have from or
one had not but what all were when we there can an your which their said if do will each about how up out them
then she many some so these would other into has more her two like him see time could no make than first been
its who now people my made over did down only way find use may water long little very after words called just
where most know get through back much before go good new write our used me man too any day same right look think
also around another came come work three word must because does part even place well such here take why things
help put years different away again off went old number great tell men say small every found still between name
should home big give air line set own under read last never us left end along while might next sound below saw
something thought both few those always looked show large often together asked house world going want school
important until form food keep children feet land side without boy once animals life enough took sometimes four
head above kind began almost live page got earth need far hand high year mother light parts country father let
night following picture being study second eyes soon times story boys since white days ever paper hard near
sentence better best across during today others however sure means knew try told young miles sun ways thing
whole hear example heard several change answer room sea against top turned learn point city play toward five
using himself usually meeting invoice quarterly report budget deadline review project release schedule
café naïve résumé über straße façade smörgåsbord 日本語 中文 русский ελληνικά`)
	subjects = []string{"Re: quarterly report", "Meeting notes", "Invoice %d", "Fwd: photos from the trip",
		"[dev] build failure on main", "Your order #%d has shipped", "Re: Re: lunch on Friday?",
		"Weekly digest", "Project status %d", "Schedule change", "Question about the budget",
		"Re: [list] release candidate %d", "Café réunion à 10h", "Welcome!", "Security advisory %d"}
	attachTypes = []struct{ ctype, ext string }{
		{"application/pdf", "pdf"}, {"image/jpeg", "jpg"}, {"image/png", "png"},
		{"application/zip", "zip"}, {"application/octet-stream", "bin"},
		{"application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"},
	}
)

var mixEpoch = time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// Build returns message i as raw RFC 5322 octets with CRLF line ends. Its
// size is close to (not exactly) the target size drawn for it.
func (p MixParams) Build(i int) []byte {
	r := p.rng(i, 2)
	target := p.targetSize(r)
	rcpts := p.Recipients(i)

	boundary := fmt.Sprintf("=_mb_%016x_%d", r.Uint64(), i)
	kind := r.Float64()
	large := target > 48<<10
	var ctype, cte string
	const (
		mixed = iota
		alternative
		plain
	)
	var shape int
	switch {
	case target >= 1<<20 || (large && kind < 0.8) || (!large && target > 3<<10 && kind < 0.25):
		shape = mixed // a text part and 1-3 base64 attachments
		ctype = fmt.Sprintf("multipart/mixed;\r\n boundary=\"%s\"", boundary)
	case target > 3<<10 && kind < 0.45:
		shape = alternative // plain + html
		ctype = fmt.Sprintf("multipart/alternative; boundary=\"%s\"", boundary)
	default:
		shape = plain
		ctype = "text/plain; charset=utf-8; format=flowed"
		cte = "8bit"
	}

	var h bytes.Buffer
	date := mixEpoch.Add(time.Duration(i) * 37 * time.Second)
	from := fmt.Sprintf("%s %s", pick(r, firstNames), pick(r, lastNames))
	fromAddr := fmt.Sprintf("%s.%d@%s", strings.ToLower(asciiOnly(from[:strings.IndexByte(from, ' ')])), r.IntN(100), pick(r, senderDomains))
	relay := r.IntN(20)
	fmt.Fprintf(&h, "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\r\n\tby relay.%s (Postfix) with ESMTPS id %X\r\n\tfor <%s>; %s\r\n",
		relay, senderDomains[0], relay, senderDomains[0], 1+relay, p.Domain, r.Uint32(), rcpts[0], date.Add(2*time.Second).Format(time.RFC1123Z))
	if target > 3<<10 {
		fmt.Fprintf(&h, "Received: from [198.51.100.%d] (unknown [198.51.100.%d])\r\n\tby mx%d.%s with ESMTPSA id %X;\r\n\t%s\r\n",
			r.IntN(250)+1, r.IntN(250)+1, relay, senderDomains[0], r.Uint32(), date.Add(time.Second).Format(time.RFC1123Z))
		fmt.Fprintf(&h, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=mail;\r\n\tt=%d; h=from:to:subject:date:message-id;\r\n\tbh=%s;\r\n\tb=%s\r\n",
			senderDomains[0], date.Unix(), randB64(r, 32), foldB64(randB64(r, 256), "\t "))
	}
	fmt.Fprintf(&h, "From: %s <%s>\r\n", encodeWord(from), fromAddr)
	to := make([]string, len(rcpts))
	for k, rc := range rcpts {
		to[k] = fmt.Sprintf("User %s <%s>", rc[4:strings.IndexByte(rc, '@')], rc)
	}
	fmt.Fprintf(&h, "To: %s\r\n", strings.Join(to, ",\r\n "))
	if r.IntN(4) == 0 {
		fmt.Fprintf(&h, "Cc: %s <%s@%s>\r\n", pick(r, firstNames[:10]), strings.ToLower(pick(r, lastNames[:6])), pick(r, senderDomains))
	}
	subj := pick(r, subjects)
	if strings.Contains(subj, "%d") {
		subj = fmt.Sprintf(subj, 1000+r.IntN(9000))
	}
	fmt.Fprintf(&h, "Subject: %s\r\n", encodeWord(subj))
	fmt.Fprintf(&h, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&h, "Message-ID: <%016x.%d@%s>\r\n", r.Uint64(), i, senderDomains[0])
	if strings.HasPrefix(subj, "Re:") {
		fmt.Fprintf(&h, "In-Reply-To: <%016x@%s>\r\nReferences: <%016x@%s>\r\n <%016x@%s>\r\n",
			r.Uint64(), senderDomains[1], r.Uint64(), senderDomains[1], r.Uint64(), senderDomains[1])
	}
	if strings.HasPrefix(subj, "[") || strings.Contains(subj, "[list]") {
		fmt.Fprintf(&h, "List-Id: Developers <dev.lists.%s>\r\nList-Unsubscribe: <mailto:dev-leave@lists.%s>\r\nPrecedence: list\r\n",
			senderDomains[2], senderDomains[2])
	}
	h.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&h, "Content-Type: %s\r\n", ctype)
	if cte != "" {
		fmt.Fprintf(&h, "Content-Transfer-Encoding: %s\r\n", cte)
	}

	// The body fills the rest of the target (the X-Mailbench line and the
	// empty line take about 70 octets, the text signature about 40).
	bodyTarget := max(target-h.Len()-110, 64)
	var body bytes.Buffer
	switch shape {
	case mixed:
		body.WriteString("This is a multi-part message in MIME format.\r\n\r\n")
		writePart(&body, boundary, "text/plain; charset=utf-8; format=flowed", "quoted-printable", "")
		writeText(&body, r, min(bodyTarget/6, 4000)+r.IntN(800), true)
		n := 1 + r.IntN(3)
		remaining := max(bodyTarget-body.Len()-180*n-40, 64*n)
		weights, sum := make([]int, n), 0
		for k := range weights {
			weights[k] = 1 + r.IntN(4)
			sum += weights[k]
		}
		for k := 0; k < n; k++ {
			share := remaining * weights[k] / sum // encoded octets
			at := pick(r, attachTypes)
			name := fmt.Sprintf("%s-%d.%s", asciiOnly(pick(r, words[:200])), k+1, at.ext)
			writePart(&body, boundary, fmt.Sprintf("%s; name=\"%s\"", at.ctype, name), "base64",
				fmt.Sprintf("Content-Disposition: attachment; filename=\"%s\"\r\n", name))
			writeBase64(&body, r, share*57/78) // 57 raw octets per 78-octet line
		}
		fmt.Fprintf(&body, "--%s--\r\n", boundary)
	case alternative:
		half := max(bodyTarget/2-200, 50)
		writePart(&body, boundary, "text/plain; charset=utf-8", "quoted-printable", "")
		writeText(&body, r, half*2/5, true)
		writePart(&body, boundary, "text/html; charset=utf-8", "quoted-printable", "")
		writeHTML(&body, r, half*8/5)
		fmt.Fprintf(&body, "--%s--\r\n", boundary)
	default:
		writeText(&body, r, bodyTarget, false)
	}
	fmt.Fprintf(&h, "%s: id=%d; body-len=%d; body-crc32c=%08x\r\n\r\n", mixHeader, i, body.Len(), crc32.Checksum(body.Bytes(), crcTable))
	h.Write(body.Bytes())
	return h.Bytes()
}

func asciiOnly(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c < 128 {
			b.WriteRune(c)
		} else {
			b.WriteByte('x')
		}
	}
	return b.String()
}

// encodeWord returns s, or an RFC 2047 encoded-word when s is not ASCII.
func encodeWord(s string) string {
	for _, c := range s {
		if c >= 128 {
			return "=?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
		}
	}
	return s
}

func randB64(r *rand.Rand, n int) string {
	b := make([]byte, n)
	fillRandom(r, b)
	return base64.StdEncoding.EncodeToString(b)
}

func foldB64(s, indent string) string {
	var b strings.Builder
	for len(s) > 70 {
		b.WriteString(s[:70])
		b.WriteString("\r\n")
		b.WriteString(indent)
		s = s[70:]
	}
	b.WriteString(s)
	return b.String()
}

func fillRandom(r *rand.Rand, b []byte) {
	for len(b) >= 8 {
		v := r.Uint64()
		for k := 0; k < 8; k++ {
			b[k] = byte(v >> (8 * k))
		}
		b = b[8:]
	}
	for k := range b {
		b[k] = byte(r.Uint32())
	}
}

func writePart(b *bytes.Buffer, boundary, ctype, cte, extra string) {
	fmt.Fprintf(b, "--%s\r\nContent-Type: %s\r\nContent-Transfer-Encoding: %s\r\n%s\r\n", boundary, ctype, cte, extra)
}

// writeText writes about n octets of wrapped prose. It deliberately produces
// lines that start with "." (and lines that are exactly "."), which exercise
// dot-stuffing on the wire. With qp, non-ASCII is quoted-printable encoded.
func writeText(b *bytes.Buffer, r *rand.Rand, n int, qp bool) {
	start := b.Len()
	line := make([]byte, 0, 100)
	para := 0
	for b.Len()-start < n {
		switch x := r.IntN(60); {
		case x == 0:
			b.WriteString(".\r\n") // a lone dot: must be sent as ".."
			continue
		case x == 1:
			line = append(line, "..."...)
		case x == 2:
			line = append(line, ". "...)
		case x == 3:
			line = append(line, "> "...)
		}
		for len(line) < 60+r.IntN(12) {
			w := pick(r, words)
			if qp {
				w = qpEncode(w)
			}
			line = append(line, w...)
			line = append(line, ' ')
		}
		line = line[:len(line)-1]
		if r.IntN(8) == 0 {
			line = append(line, '.')
		}
		b.Write(line)
		b.WriteString("\r\n")
		line = line[:0]
		para++
		if para > 3+r.IntN(6) {
			b.WriteString("\r\n")
			para = 0
		}
	}
	b.WriteString("\r\n-- \r\nSent from a benchmark\r\n")
}

func writeHTML(b *bytes.Buffer, r *rand.Rand, n int) {
	start := b.Len()
	b.WriteString("<!DOCTYPE html>\r\n<html><head><meta charset=3D\"utf-8\"><title>Message</title></head>\r\n<body style=3D\"font-family: sans-serif\">\r\n")
	for b.Len()-start < n {
		b.WriteString("<p>")
		col := 3
		for k := 0; k < 20+r.IntN(40); k++ {
			w := qpEncode(pick(r, words))
			if r.IntN(15) == 0 {
				w = "<b>" + w + "</b>"
			}
			if col+len(w)+1 > 74 {
				b.WriteString("=\r\n") // soft line break
				col = 0
			}
			b.WriteString(w)
			b.WriteByte(' ')
			col += len(w) + 1
		}
		b.WriteString("</p>\r\n")
	}
	b.WriteString("</body></html>\r\n")
}

func qpEncode(w string) string {
	ascii := true
	for i := 0; i < len(w); i++ {
		if w[i] >= 128 || w[i] == '=' {
			ascii = false
			break
		}
	}
	if ascii {
		return w
	}
	var s strings.Builder
	for i := 0; i < len(w); i++ {
		c := w[i]
		if c >= 128 || c == '=' {
			s.WriteString("=" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
		} else {
			s.WriteByte(c)
		}
	}
	return s.String()
}

// writeBase64 writes n random octets base64-encoded in 76-column lines.
func writeBase64(b *bytes.Buffer, r *rand.Rand, n int) {
	raw := make([]byte, 57) // 57 octets -> one 76-character line
	enc := make([]byte, 76)
	for n > 0 {
		k := min(n, 57)
		fillRandom(r, raw[:k])
		base64.StdEncoding.Encode(enc, raw[:k])
		b.Write(enc[:base64.StdEncoding.EncodedLen(k)])
		b.WriteString("\r\n")
		n -= k
	}
	b.WriteString("\r\n")
}

// dotStuff returns the SMTP/LMTP DATA payload for msg (which must use CRLF
// line ends): every line starting with "." gets an extra ".", and the
// terminating ".\r\n" is appended (with a CRLF first if msg lacks one).
func dotStuff(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+len(msg)/500+8)
	bol := true
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if bol && c == '.' {
			out = append(out, '.')
		}
		out = append(out, c)
		bol = c == '\n'
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return append(out, '.', '\r', '\n')
}
