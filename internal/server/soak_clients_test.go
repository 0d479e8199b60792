package server

// The soak test's clients (TestSoak, soak_test.go), each an implementation
// independent of Letterbox's servers: delivery with Go's net/smtp (SMTP)
// and a raw net/textproto LMTP client, IMAP with go-imap v2's imapclient,
// POP3 raw over bufio. Each function is one session: connect, work, log
// out. Every answer is checked; anything unexpected is counted with
// soakStats.fail.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/smtp"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

type soakHarness struct {
	addr     map[string]string // listener name → address
	tls      *tls.Config       // trusts the server's generated certificate
	accounts int
	think    time.Duration // a client's pause between sessions: uniform in [0, think)
	// sessionTimeout is the deadline of one client connection: a session
	// that hangs is an error, not a hung test.
	sessionTimeout time.Duration
	ledger         *soakLedger
	stats          *soakStats
}

// client runs sessions of one kind until ctx ends; a session in progress
// is finished, never cut off. A POP3 client polls its own maildrop (its
// home account, client index modulo the accounts) in 80% of its sessions
// and a random one otherwise, so that two POP3 sessions on one maildrop
// ([IN-USE]) happen, but not in every other session.
func (h *soakHarness) client(ctx context.Context, kind string, index int, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x50a4))
	home := index % h.accounts
	for ctx.Err() == nil {
		switch kind {
		case "delivery":
			h.deliverySession(r)
		case "imap":
			h.imapSession(ctx, r)
		case "pop3":
			acct := home
			if r.IntN(5) == 0 {
				acct = r.IntN(h.accounts)
			}
			h.popSession(r, acct)
		}
		if h.think > 0 {
			t := time.NewTimer(time.Duration(r.Int64N(int64(h.think))))
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

func (h *soakHarness) dial(name string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", h.addr[name], time.Minute)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(h.sessionTimeout))
	return c, nil
}

func (h *soakHarness) dialTLS(name string) (net.Conn, error) {
	c, err := h.dial(name)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, h.tls.Clone())
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// pickRcpts returns 1 (70%), 2 (20%) or 3 (10%) distinct accounts.
func (h *soakHarness) pickRcpts(r *rand.Rand) []int {
	k := 1
	switch x := r.IntN(10); {
	case x == 0:
		k = 3
	case x < 3:
		k = 2
	}
	k = min(k, h.accounts)
	var out []int
	for len(out) < k {
		a := r.IntN(h.accounts)
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// deliverySession delivers 1–5 messages over SMTP (60%, 30% of them after
// STARTTLS) or LMTP (40%).
func (h *soakHarness) deliverySession(r *rand.Rand) {
	n := 1 + r.IntN(5)
	if r.IntN(5) < 2 {
		h.lmtpSession(r, n)
	} else {
		h.smtpSession(r, n)
	}
}

func (h *soakHarness) smtpSession(r *rand.Rand, nmsg int) {
	h.stats.smtpSessions.Add(1)
	conn, err := h.dial("smtp")
	if err != nil {
		h.stats.fail("smtp dial: %v", err)
		return
	}
	defer conn.Close()
	c, err := smtp.NewClient(conn, "mail.example.org")
	if err != nil {
		h.stats.fail("smtp greeting: %v", err)
		return
	}
	if err := c.Hello("soak-client.example"); err != nil {
		h.stats.fail("smtp EHLO: %v", err)
		return
	}
	if r.IntN(10) < 3 {
		if err := c.StartTLS(h.tls.Clone()); err != nil {
			h.stats.fail("smtp STARTTLS: %v", err)
			return
		}
		h.stats.tlsSessions.Add(1)
	}
	for range nmsg {
		rcpts := h.pickRcpts(r)
		n := h.ledger.newMessage(rcpts)
		from, msg := soakMessage(n)
		h.stats.messagesSent.Add(1)
		if err := c.Mail(from); err != nil {
			h.stats.fail("smtp MAIL FROM for message %d: %v", n, err)
			return
		}
		for _, a := range rcpts {
			if err := c.Rcpt(soakAccount(a)); err != nil {
				h.stats.fail("smtp RCPT TO %s for message %d: %v", soakAccount(a), n, err)
				return
			}
		}
		w, err := c.Data()
		if err != nil {
			h.stats.fail("smtp DATA for message %d: %v", n, err)
			return
		}
		if _, err := w.Write(msg); err != nil {
			h.stats.fail("smtp DATA write for message %d: %v", n, err)
			return
		}
		if err := w.Close(); err != nil { // reads the reply to the final dot
			h.stats.fail("smtp end of DATA for message %d: %v", n, err)
			return
		}
		for i := range rcpts {
			h.ledger.acked(n, i)
		}
		h.stats.copiesAcked.Add(int64(len(rcpts)))
	}
	if err := c.Quit(); err != nil {
		h.stats.fail("smtp QUIT: %v", err)
	}
}

func (h *soakHarness) lmtpSession(r *rand.Rand, nmsg int) {
	h.stats.lmtpSessions.Add(1)
	conn, err := h.dial("lmtp")
	if err != nil {
		h.stats.fail("lmtp dial: %v", err)
		return
	}
	defer conn.Close()
	tp := textproto.NewConn(conn)
	cmd := func(code int, format string, args ...any) error {
		if err := tp.PrintfLine(format, args...); err != nil {
			return err
		}
		_, _, err := tp.ReadResponse(code)
		return err
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		h.stats.fail("lmtp greeting: %v", err)
		return
	}
	if err := cmd(250, "LHLO soak-client.example"); err != nil {
		h.stats.fail("lmtp LHLO: %v", err)
		return
	}
	for range nmsg {
		rcpts := h.pickRcpts(r)
		n := h.ledger.newMessage(rcpts)
		from, msg := soakMessage(n)
		h.stats.messagesSent.Add(1)
		if err := cmd(250, "MAIL FROM:<%s>", from); err != nil {
			h.stats.fail("lmtp MAIL FROM for message %d: %v", n, err)
			return
		}
		for _, a := range rcpts {
			if err := cmd(250, "RCPT TO:<%s>", soakAccount(a)); err != nil {
				h.stats.fail("lmtp RCPT TO %s for message %d: %v", soakAccount(a), n, err)
				return
			}
		}
		if err := cmd(354, "DATA"); err != nil {
			h.stats.fail("lmtp DATA for message %d: %v", n, err)
			return
		}
		dw := tp.DotWriter()
		if _, err := dw.Write(msg); err != nil {
			h.stats.fail("lmtp DATA write for message %d: %v", n, err)
			return
		}
		if err := dw.Close(); err != nil {
			h.stats.fail("lmtp end of DATA for message %d: %v", n, err)
			return
		}
		// RFC 2033 §4.2: one reply per accepted recipient, in order.
		for i, a := range rcpts {
			if _, _, err := tp.ReadResponse(250); err != nil {
				h.stats.fail("lmtp reply for %s, message %d: %v", soakAccount(a), n, err)
				return
			}
			h.ledger.acked(n, i)
			h.stats.copiesAcked.Add(1)
		}
	}
	if err := cmd(221, "QUIT"); err != nil {
		h.stats.fail("lmtp QUIT: %v", err)
	}
}

// imapSession: LOGIN (plain, imaps or STARTTLS, a third each), SELECT
// (INBOX 75%, Archive 15%, Kept 10%), UID SEARCH, UID FETCH of headers and
// envelopes for up to 20 hits, full bodies of 1–2 (checked byte-exact),
// sometimes STORE, MOVE, IDLE and LIST, then LOGOUT.
func (h *soakHarness) imapSession(ctx context.Context, r *rand.Rand) {
	h.stats.imapSessions.Add(1)
	acct := r.IntN(h.accounts)
	user := soakAccount(acct)
	var conn net.Conn
	var err error
	mode := r.IntN(3)
	if mode == 1 {
		conn, err = h.dialTLS("imaps")
	} else {
		conn, err = h.dial("imap")
	}
	if err != nil {
		h.stats.fail("imap dial: %v", err)
		return
	}
	defer conn.Close()
	var c *imapclient.Client
	if mode == 2 {
		c, err = imapclient.NewStartTLS(conn, &imapclient.Options{TLSConfig: h.tls.Clone()})
		if err != nil {
			h.stats.fail("imap STARTTLS: %v", err)
			return
		}
	} else {
		c = imapclient.New(conn, nil)
	}
	if mode != 0 {
		h.stats.tlsSessions.Add(1)
	}
	defer c.Close()
	if err := c.WaitGreeting(); err != nil {
		h.stats.fail("imap greeting: %v", err)
		return
	}
	if err := c.Login(user, soakPassword).Wait(); err != nil {
		h.stats.fail("imap LOGIN %s: %v", user, err)
		return
	}
	mb := soakInbox
	switch x := r.IntN(20); {
	case x < 3:
		mb = soakArchive
	case x < 5:
		mb = soakKept
	}
	sel, err := c.Select(soakMailboxes[mb], nil).Wait()
	if err != nil {
		h.stats.fail("imap SELECT %s: %v", soakMailboxes[mb], err)
		return
	}
	fail := func(what string, err error) {
		h.stats.fail("imap %s in %s of %s: %v", what, soakMailboxes[mb], user, err)
	}

	if r.IntN(5) == 0 {
		if _, err := c.List("", "*", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, UIDNext: true}}).Collect(); err != nil {
			fail("LIST", err)
			return
		}
	}
	if sel.NumMessages > 0 {
		if !h.imapWork(c, r, acct, mb, fail) {
			return
		}
	}
	if r.IntN(10) < 3 {
		h.stats.idles.Add(1)
		idle, err := c.Idle()
		if err != nil {
			fail("IDLE", err)
			return
		}
		t := time.NewTimer(200*time.Millisecond + time.Duration(r.Int64N(int64(4*time.Second))))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if err := idle.Close(); err != nil {
			fail("DONE", err)
			return
		}
		if err := idle.Wait(); err != nil {
			fail("IDLE", err)
			return
		}
	}
	if err := c.Logout().Wait(); err != nil {
		fail("LOGOUT", err)
	}
}

var soakHeaderSection = &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"X-Soak-Id"}, Peek: true}

// imapWork is the part of an IMAP session on a non-empty mailbox; false
// ends the session (after an error).
func (h *soakHarness) imapWork(c *imapclient.Client, r *rand.Rand, acct, mb int, fail func(string, error)) bool {
	h.stats.searches.Add(1)
	var crit imap.SearchCriteria
	headerSearch := false
	switch x := r.IntN(20); {
	case x < 8:
		crit.NotFlag = []imap.Flag{imap.FlagSeen}
	case x < 10:
		crit.Flag = []imap.Flag{imap.FlagFlagged}
	case x < 12:
		crit.Header = []imap.SearchCriteriaHeaderField{{Key: "X-Soak-Id", Value: "7"}}
		headerSearch = true
	case x == 12:
		crit.Body = []string{"consectetur"}
	}
	sd, err := c.UIDSearch(&crit, nil).Wait()
	if err != nil {
		fail("UID SEARCH", err)
		return false
	}
	hits := sd.AllUIDs()
	if len(hits) == 0 {
		return true
	}
	// Up to 20 hits: the newest ten and ten at random.
	pick := hits[max(0, len(hits)-10):]
	for range 10 {
		pick = append(pick, hits[r.IntN(len(hits))])
	}
	slices.Sort(pick)
	pick = slices.Compact(pick)
	h.stats.imapHeaders.Add(1)
	msgs, err := c.Fetch(imap.UIDSetNum(pick...), &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true,
		Envelope: true, BodySection: []*imap.FetchItemBodySection{soakHeaderSection}}).Collect()
	if err != nil {
		fail("UID FETCH headers", err)
		return false
	}
	known := map[imap.UID]uint32{} // UID → message number
	for _, m := range msgs {
		hdr := m.FindBodySection(soakHeaderSection)
		n, ok := soakID(append([]byte("\r\n"), hdr...))
		if !ok || m.Envelope == nil || m.Envelope.MessageID != fmt.Sprintf("soak-%d@soak.test", n) {
			fail("UID FETCH headers", fmt.Errorf("UID %d: header %q, envelope %+v", m.UID, hdr, m.Envelope))
			return false
		}
		if headerSearch && !strings.Contains(strconv.Itoa(int(n)), "7") {
			fail("UID SEARCH HEADER", fmt.Errorf("UID %d (X-Soak-Id %d) does not match", m.UID, n))
			return false
		}
		known[m.UID] = n
	}
	uids := make([]imap.UID, 0, len(known))
	for u := range known {
		uids = append(uids, u)
	}
	slices.Sort(uids)
	if len(uids) == 0 {
		return true // all expunged meanwhile (POP3)
	}
	// Full bodies, without PEEK (sets \Seen).
	var body []imap.UID
	for range 1 + r.IntN(2) {
		body = append(body, uids[r.IntN(len(uids))])
	}
	full := &imap.FetchItemBodySection{}
	msgs, err = c.Fetch(imap.UIDSetNum(body...), &imap.FetchOptions{UID: true, RFC822Size: true,
		BodySection: []*imap.FetchItemBodySection{full}}).Collect()
	if err != nil {
		fail("UID FETCH BODY[]", err)
		return false
	}
	for _, m := range msgs {
		b := m.FindBodySection(full)
		n, err := soakCheckStored(b)
		if err == nil && (n != known[m.UID] || int64(len(b)) != m.RFC822Size) {
			err = fmt.Errorf("UID %d: X-Soak-Id %d (header said %d), %d octets (RFC822.SIZE %d)", m.UID, n, known[m.UID], len(b), m.RFC822Size)
		}
		if err != nil {
			fail("UID FETCH BODY[]", err)
			return false
		}
		h.stats.imapBodies.Add(1)
	}
	if r.IntN(10) < 3 {
		h.stats.stores.Add(1)
		op, flags := imap.StoreFlagsAdd, []imap.Flag{imap.FlagFlagged, "$SoakLabel"}
		if r.IntN(3) == 0 {
			op, flags = imap.StoreFlagsDel, []imap.Flag{imap.FlagSeen}
		}
		set := imap.UIDSetNum(uids[r.IntN(len(uids))], uids[r.IntN(len(uids))])
		if err := c.Store(set, &imap.StoreFlags{Op: op, Silent: r.IntN(2) == 0, Flags: flags}, nil).Close(); err != nil {
			fail("UID STORE", err)
			return false
		}
	}
	if mb != soakKept && r.IntN(5) == 0 {
		dst := soakKept
		if mb == soakInbox && r.IntN(2) == 0 {
			dst = soakArchive
		}
		var src []imap.UID
		for range 1 + r.IntN(3) {
			src = append(src, uids[r.IntN(len(uids))])
		}
		md, err := c.Move(imap.UIDSetNum(src...), soakMailboxes[dst]).Wait()
		if err != nil {
			fail("UID MOVE", err)
			return false
		}
		if md.SourceUIDs != nil { // nil: every one was expunged meanwhile
			from, _ := md.SourceUIDs.(imap.UIDSet).Nums()
			to, _ := md.DestUIDs.(imap.UIDSet).Nums()
			if len(from) != len(to) || len(from) > len(src) {
				fail("UID MOVE", fmt.Errorf("COPYUID %v %v for %v", md.SourceUIDs, md.DestUIDs, src))
				return false
			}
			rec := make([]soakMove, len(from))
			for i := range from {
				n, ok := known[from[i]]
				if !ok {
					fail("UID MOVE", fmt.Errorf("COPYUID names UID %d, not asked for (%v)", from[i], src))
					return false
				}
				rec[i] = soakMove{soakCopy{n, uint16(acct)}, soakLoc{uint8(mb), uint32(from[i])}, soakLoc{uint8(dst), uint32(to[i])}}
			}
			h.ledger.moved(rec)
			h.stats.moved.Add(int64(len(rec)))
		}
	}
	return true
}

// popConn is a raw POP3 client connection.
type popConn struct {
	c net.Conn
	r *bufio.Reader
}

func (p *popConn) cmd(line string) (string, error) {
	if _, err := io.WriteString(p.c, line+"\r\n"); err != nil {
		return "", err
	}
	return p.status()
}

func (p *popConn) status() (string, error) {
	l, err := p.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(l, "\r\n") {
		return "", fmt.Errorf("line without CRLF: %q", l)
	}
	return strings.TrimSuffix(l, "\r\n"), nil
}

// ok sends a command and wants +OK.
func (p *popConn) ok(line string) (string, error) {
	l, err := p.cmd(line)
	if err == nil && !strings.HasPrefix(l, "+OK") {
		err = fmt.Errorf("%s: %q", strings.Fields(line)[0], l)
	}
	return l, err
}

// multi reads a multi-line response body, exactly: every line must end in
// CRLF, dot-stuffing is removed, the terminating ".\r\n" is not included.
func (p *popConn) multi() ([]byte, error) {
	var b bytes.Buffer
	lineStart := true
	for {
		l, err := p.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if lineStart && l[0] == '.' {
				l = l[1:]
			}
			b.Write(l)
			lineStart = false
			continue
		}
		if err != nil {
			return nil, err
		}
		if !bytes.HasSuffix(l, []byte("\r\n")) {
			return nil, fmt.Errorf("line without CRLF: %q", l)
		}
		if lineStart && string(l) == ".\r\n" {
			return b.Bytes(), nil
		}
		if lineStart && l[0] == '.' {
			l = l[1:]
		}
		b.Write(l)
		lineStart = true
	}
}

// popSession: plain, pop3s or STLS (a third each); USER/PASS (70%) or
// AUTH PLAIN; on [IN-USE], QUIT. Then STAT, LIST, UIDL (checked against
// each other), RETR of 1–5 messages (checked byte-exact and against LIST),
// DELE of about 60% of them, sometimes TOP, NOOP or RSET, and QUIT: only
// after QUIT's +OK are the deletions recorded as committed.
func (h *soakHarness) popSession(r *rand.Rand, acct int) {
	h.stats.popSessions.Add(1)
	user := soakAccount(acct)
	mode := r.IntN(3)
	var conn net.Conn
	var err error
	if mode == 1 {
		conn, err = h.dialTLS("pop3s")
	} else {
		conn, err = h.dial("pop3")
	}
	if err != nil {
		h.stats.fail("pop3 dial: %v", err)
		return
	}
	defer func() { conn.Close() }()
	p := &popConn{c: conn, r: bufio.NewReader(conn)}
	fail := func(err error) { h.stats.fail("pop3 %s: %v", user, err) }
	if g, err := p.status(); err != nil || !strings.HasPrefix(g, "+OK ") {
		fail(fmt.Errorf("greeting %q %v", g, err))
		return
	}
	if mode == 2 {
		if _, err := p.ok("STLS"); err != nil {
			fail(err)
			return
		}
		if p.r.Buffered() != 0 {
			fail(errors.New("data after STLS +OK"))
			return
		}
		tc := tls.Client(conn, h.tls.Clone())
		if err := tc.Handshake(); err != nil {
			fail(fmt.Errorf("STLS handshake: %v", err))
			return
		}
		conn = tc
		p = &popConn{c: tc, r: bufio.NewReader(tc)}
	}
	if mode != 0 {
		h.stats.tlsSessions.Add(1)
	}
	var l string
	if r.IntN(10) < 7 {
		if _, err := p.ok("USER " + user); err != nil {
			fail(err)
			return
		}
		l, err = p.cmd("PASS " + soakPassword)
	} else {
		l, err = p.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+soakPassword)))
	}
	if err != nil {
		fail(fmt.Errorf("login: %v", err))
		return
	}
	if strings.HasPrefix(l, "-ERR [IN-USE]") {
		h.stats.popInUse.Add(1)
		if _, err := p.ok("QUIT"); err != nil {
			fail(err)
		}
		return
	}
	if !strings.HasPrefix(l, "+OK") {
		fail(fmt.Errorf("login: %q", l))
		return
	}
	st, err := p.ok("STAT")
	if err != nil {
		fail(err)
		return
	}
	var count int
	var total int64
	if _, err := fmt.Sscanf(st, "+OK %d %d", &count, &total); err != nil {
		fail(fmt.Errorf("STAT %q", st))
		return
	}
	listing := func(c string) ([]string, error) {
		if _, err := p.ok(c); err != nil {
			return nil, err
		}
		b, err := p.multi()
		if err != nil {
			return nil, err
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\r\n"), "\r\n")
		if len(b) == 0 {
			lines = nil
		}
		if len(lines) != count {
			return nil, fmt.Errorf("%s: %d lines, STAT said %d", c, len(lines), count)
		}
		return lines, nil
	}
	list, err := listing("LIST")
	if err != nil {
		fail(err)
		return
	}
	uidl, err := listing("UIDL")
	if err != nil {
		fail(err)
		return
	}
	sizes := make([]int64, count)
	uids := make([]uint32, count)
	var sum int64
	for i := range count {
		var k, k2 int
		var v uint32
		if _, err := fmt.Sscanf(list[i], "%d %d", &k, &sizes[i]); err != nil || k != i+1 {
			fail(fmt.Errorf("LIST line %q", list[i]))
			return
		}
		if _, err := fmt.Sscanf(uidl[i], "%d %d.%d", &k2, &v, &uids[i]); err != nil || k2 != i+1 {
			fail(fmt.Errorf("UIDL line %q", uidl[i]))
			return
		}
		sum += sizes[i]
	}
	if sum != total {
		fail(fmt.Errorf("LIST sizes add up to %d, STAT said %d", sum, total))
		return
	}
	var dele []soakPop
	if count > 0 {
		for range 1 + r.IntN(5) {
			i := r.IntN(count)
			if slices.ContainsFunc(dele, func(d soakPop) bool { return d.uid == uids[i] }) {
				continue // deleted in this session: RETR and TOP would be -ERR
			}
			if r.IntN(10) == 0 {
				if _, err := p.ok(fmt.Sprintf("TOP %d 0", i+1)); err != nil {
					fail(err)
					return
				}
				if b, err := p.multi(); err != nil || !bytes.HasSuffix(b, []byte("\r\n\r\n")) {
					fail(fmt.Errorf("TOP %d: %v (%d octets)", i+1, err, len(b)))
					return
				}
			}
			if _, err := p.ok(fmt.Sprintf("RETR %d", i+1)); err != nil {
				fail(err)
				return
			}
			b, err := p.multi()
			if err != nil {
				fail(fmt.Errorf("RETR %d: %v", i+1, err))
				return
			}
			n, err := soakCheckStored(b)
			if err == nil && int64(len(b)) != sizes[i] {
				err = fmt.Errorf("%d octets, LIST said %d", len(b), sizes[i])
			}
			if err != nil {
				fail(fmt.Errorf("RETR %d (UID %d): %v", i+1, uids[i], err))
				return
			}
			h.stats.retrieved.Add(1)
			if r.IntN(10) < 6 {
				if _, err := p.ok(fmt.Sprintf("DELE %d", i+1)); err != nil {
					fail(err)
					return
				}
				dele = append(dele, soakPop{soakCopy{n, uint16(acct)}, uids[i]})
			}
		}
		switch r.IntN(10) {
		case 0:
			if _, err := p.ok("RSET"); err != nil {
				fail(err)
				return
			}
			dele = nil
		case 1:
			if _, err := p.ok("NOOP"); err != nil {
				fail(err)
				return
			}
		}
	}
	if _, err := p.ok("QUIT"); err != nil {
		fail(err)
		return
	}
	if len(dele) > 0 {
		h.ledger.popDeleted(dele)
		h.stats.popDeleted.Add(int64(len(dele)))
	}
}
