package main

// End-to-end test of getmail's IMAP retrievers (SimpleIMAPRetriever on the
// plaintext loopback listener, SimpleIMAPSSLRetriever on imaps verifying
// the generated certificate) against the real binary. Like the other e2e
// tests it skips when getmail is not installed, unless LETTERBOX_E2E=1.
// The server side is checked through go-imap's client, an independent IMAP
// implementation.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func TestGetmailIMAP(t *testing.T) {
	getmail := needProgram(t, "getmail")
	t.Run("plain", func(t *testing.T) { testGetmailIMAP(t, getmail, false) })
	t.Run("imaps", func(t *testing.T) { testGetmailIMAP(t, getmail, true) })
}

// getmailIMAPMessages are e2eMessages plus an 8-bit message that is not
// UTF-8 (Latin-1 text and control characters), and a larger one.
func getmailIMAPMessages(prefix string) [][]byte {
	msgs := e2eMessages(prefix)
	latin1 := []byte("From: d@example.org\r\nTo: e2e@test.example\r\nSubject: " + prefix + " five\r\nMessage-ID: <" + prefix + "5@x>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Gr\xfc\xdfe aus K\xf6ln \xa9 \xff\xfe\x01\x7f\x1b[0m\r\n\ttab line\r\n \r\nlast line without much\r\n")
	var big bytes.Buffer
	big.WriteString("From: e@example.org\r\nTo: e2e@test.example\r\nSubject: " + prefix + " six\r\nMessage-ID: <" + prefix + "6@x>\r\n\r\n")
	for i := 0; big.Len() < 3<<20; i++ {
		fmt.Fprintf(&big, "%08d %s\r\n", i, strings.Repeat("xyz\xe2\x82\xac", 15))
	}
	return append(msgs, latin1, big.Bytes())
}

// getmailSummaryRE is getmail's per-retriever summary line.
var getmailSummaryRE = regexp.MustCompile(`(?m)^\s*(\d+) messages \((\d+) bytes\) retrieved, (\d+) skipped$`)

func testGetmailIMAP(t *testing.T, getmail string, useTLS bool) {
	f := newMailFixture(t)
	prefix := "gi"
	if useTLS {
		prefix = "gs"
	}
	sent := getmailIMAPMessages(prefix)
	f.deliver(sent)
	want := f.stored()
	if len(want) != len(sent) {
		t.Fatalf("stored %d messages, want %d", len(want), len(sent))
	}
	// The store holds each message as sent, after the trace fields
	// delivery prepends; what getmail gets is compared with these bytes.
	for i, m := range want {
		if !bytes.HasSuffix(m, sent[i]) || !bytes.HasPrefix(m, []byte("Return-Path: <sender@example.org>\r\nReceived: ")) {
			t.Fatalf("stored message %d is not the sent one after Return-Path and Received: %.300q", i, m)
		}
	}

	work := unprivilegedDir(t)
	maildir := filepath.Join(work, "Maildir")
	for _, sub := range []string{"tmp", "new", "cur"} {
		mkdirUnprivileged(t, filepath.Join(maildir, sub))
	}
	retriever, listener, proto, tlsConf := "SimpleIMAPRetriever", "imap", "IMAP4", ""
	if useTLS {
		// The generated self-signed certificate is the trust anchor
		// (ca_certs); getmail checks the name itself (ssl_cert_hostname)
		// against the configured hostname, since we connect to
		// 127.0.0.1. getmail runs as nobody, who cannot read data_dir:
		// it gets a copy in the work directory.
		pem, err := os.ReadFile(filepath.Join(f.dataDir, "tls", "cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		ca := filepath.Join(work, "ca.pem")
		if err := os.WriteFile(ca, pem, 0o644); err != nil {
			t.Fatal(err)
		}
		retriever, listener, proto = "SimpleIMAPSSLRetriever", "imaps", "IMAP4-SSL"
		tlsConf = fmt.Sprintf("ca_certs = %s\nssl_cert_hostname = mx.test.example\n", ca)
	}
	_, port, _ := strings.Cut(f.srv.Addr(listener), "127.0.0.1:")
	if port == "" {
		t.Fatalf("no %s listener: %v", listener, f.srv.addrs)
	}
	// getmail's defaults otherwise: delivered_to, received and
	// record_mailbox are on, so the headers getmail adds are checked too.
	rcText := func(del bool, tlsConf string) string {
		return fmt.Sprintf("[retriever]\ntype = %s\nserver = 127.0.0.1\nport = %s\nusername = %s\npassword = %s\n"+
			"timeout = 60\nmailboxes = (\"INBOX\",)\n%s\n[destination]\ntype = Maildir\npath = %s/\n\n"+
			"[options]\nverbose = 2\nread_all = false\ndelete = %v\n",
			retriever, port, f.user, f.pass, tlsConf, maildir, del)
	}
	// run returns the counts of getmail's summary line; the byte count
	// (the sum of RFC822.SIZE of what it retrieved) is checked against
	// wantBytes.
	run := func(del bool, wantBytes int) (retrieved, skipped int) {
		t.Helper()
		out := runGetmailRC(t, f, getmail, work, rcText(del, tlsConf))
		m := getmailSummaryRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no summary line in getmail's output:\n%s", out)
		}
		retrieved, _ = strconv.Atoi(m[1])
		skipped, _ = strconv.Atoi(m[3])
		if n, _ := strconv.Atoi(m[2]); n != wantBytes {
			t.Fatalf("getmail retrieved %d bytes, want %d:\n%s", n, wantBytes, out)
		}
		return retrieved, skipped
	}
	size := func(msgs [][]byte) (n int) {
		for _, m := range msgs {
			n += len(m)
		}
		return n
	}

	if useTLS {
		// The certificate check is real: another expected name fails
		// before anything is retrieved.
		rcPath := filepath.Join(work, "getmailrc-badname")
		bad := strings.Replace(tlsConf, "mx.test.example", "other.example", 1)
		if err := os.WriteFile(rcPath, []byte(rcText(false, bad)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := asUnprivileged(getmail, "--getmaildir", work, "--rcfile", rcPath).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "doesn't match") {
			t.Fatalf("getmail with ssl_cert_hostname = other.example: %v\n%s", err, out)
		}
		if n := len(readDir(t, filepath.Join(maildir, "new"))); n != 0 {
			t.Fatalf("%d messages retrieved despite the certificate name mismatch", n)
		}
	}

	// delete = false: everything arrives, byte-exact but for getmail's
	// headers, and stays on the server unseen (getmail fetches with
	// BODY.PEEK[]).
	if r, s := run(false, size(want)); r != 6 || s != 0 {
		t.Fatalf("first getmail run: %d retrieved, %d skipped; want 6, 0", r, s)
	}
	got, ids := stripGetmailHeaders(t, readDir(t, filepath.Join(maildir, "new")), port, proto)
	sameMessages(t, "getmail over "+listener, distinctMessages(got), getmailMaildirForm(want))
	validity, srv := getmailServerInbox(t, f, useTLS)
	checkGetmailIDs(t, ids, validity, len(want))
	if len(srv) != 6 {
		t.Fatalf("server after getmail with delete = false: %d messages, want 6", len(srv))
	}
	for _, m := range srv {
		if len(m.Flags) != 0 {
			t.Fatalf("server after getmail with delete = false: UID %d has flags %v, want none (BODY.PEEK)", m.UID, m.Flags)
		}
	}
	sameMessages(t, "server after getmail keep", f.stored(), want)

	// Second run: getmail's oldmail state (UIDVALIDITY/UID) says it has
	// them all; nothing is retrieved again.
	if r, s := run(false, 0); r != 0 || s != 6 {
		t.Fatalf("second getmail run: %d retrieved, %d skipped; want 0, 6 (UIDVALIDITY/UID not stable?)", r, s)
	}
	got, _ = stripGetmailHeaders(t, readDir(t, filepath.Join(maildir, "new")), port, proto)
	sameMessages(t, "Maildir after the second run", distinctMessages(got), getmailMaildirForm(want))

	// New mail, then delete = true: getmail retrieves the new messages and
	// deletes those and the ones it had already (STORE \Deleted, then
	// EXPUNGE and CLOSE).
	more := e2eMessages(prefix + "2")[:2]
	f.deliver(more)
	all := f.stored()
	if r, s := run(true, size(all[len(want):])); r != 2 || s != 6 {
		t.Fatalf("getmail run with delete: %d retrieved, %d skipped; want 2, 6", r, s)
	}
	got, ids = stripGetmailHeaders(t, readDir(t, filepath.Join(maildir, "new")), port, proto)
	sameMessages(t, "getmail after new mail", distinctMessages(got), getmailMaildirForm(all))
	checkGetmailIDs(t, ids, validity, len(all))
	if _, left := getmailServerInbox(t, f, useTLS); len(left) != 0 {
		t.Fatalf("server INBOX after getmail with delete = true: %+v", left)
	}
	if left := f.stored(); len(left) != 0 {
		t.Fatalf("%d messages left in the store after getmail with delete = true", len(left))
	}
	// A run on the empty mailbox is clean.
	if r, s := run(true, 0); r != 0 || s != 0 {
		t.Fatalf("getmail on an empty INBOX: %d retrieved, %d skipped", r, s)
	}
	if useTLS && !regexp.MustCompile(`msg=connect listener=imaps proto=imap remote=\S+ tls=true`).MatchString(f.srv.Log()) {
		t.Fatalf("no TLS IMAP connection in the server log:\n%s", f.srv.Log())
	}
}

// runGetmailRC runs getmail with the rc file text as an unprivileged user
// and returns its output. Like TestGetmail it retries only on getmail6's
// lost-SIGCHLD race; a rerun may deliver a message twice (with a different
// Received time), which is why the callers compare the distinct messages
// left after stripGetmailHeaders.
func runGetmailRC(t *testing.T, f *mailFixture, getmail, work, rc string) string {
	t.Helper()
	rcPath := filepath.Join(work, "getmailrc")
	if err := os.WriteFile(rcPath, []byte(rc), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		out, err := asUnprivileged(getmail, "--getmaildir", work, "--rcfile", rcPath).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if attempt < 3 && strings.Contains(string(out), "waiting child pid") {
			t.Logf("getmail lost its delivery child (client race), retrying:\n%s", out)
			continue
		}
		t.Fatalf("getmail: %v\n%s\nserver log:\n%s", err, out, f.srv.Log())
	}
}

// getmailMaildirForm is a stored message as getmail's Maildir destination writes
// it, before getmail's own headers: LF line ends (the Maildir convention)
// and nothing else changed.
func getmailMaildirForm(msgs [][]byte) [][]byte {
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		out[i] = bytes.ReplaceAll(m, []byte("\r\n"), []byte("\n"))
	}
	return out
}

// getmailReceivedRE is the Received field getmail6 prepends (flatten in
// getmailcore/message.py), unfolded: the server's address, the local host
// name, the protocol, getmail's msgid (UIDVALIDITY/UID) and the UTC time.
var getmailReceivedRE = regexp.MustCompile(`^Received: from 127\.0\.0\.1 \(127\.0\.0\.1:(\d+)\) by \S+ with (IMAP4(?:-SSL)?) ` +
	`getmail6 msgid:(\d+/\d+); \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} -0000$`)

// stripGetmailHeaders checks and removes exactly the header fields getmail
// adds to a retrieved message and returns what must equal the stored
// message in Maildir form, and getmail's msgid of each message:
//
//   - a new Return-Path first (the stored message's own Return-Path,
//     which delivery put first, is removed and its address reused);
//   - Delivered-To (the IMAP retriever knows no envelope recipient:
//     "unknown");
//   - Received, naming the server's port and the protocol (IMAP4 or
//     IMAP4-SSL);
//   - X-getmail-retrieved-from-mailbox: INBOX appended to the header.
func stripGetmailHeaders(t *testing.T, msgs [][]byte, port, proto string) ([][]byte, []string) {
	t.Helper()
	out := make([][]byte, len(msgs))
	var ids []string
	for i, m := range msgs {
		s := string(m)
		rp, rest, ok := strings.Cut(s, "\n")
		if !ok || rp != "Return-Path: <sender@example.org>" {
			t.Fatalf("getmail message %d does not start with the Return-Path: %.300q", i, s)
		}
		const dt = "Delivered-To: unknown\n"
		if !strings.HasPrefix(rest, dt) {
			t.Fatalf("getmail message %d: no %q after Return-Path: %.300q", i, dt, s)
		}
		rest = rest[len(dt):]
		// The Received field: its first line and the continuation lines
		// getmail folds with two spaces.
		n := strings.Index(rest, "\n")
		for n >= 0 && strings.HasPrefix(rest[n+1:], "  ") {
			next := strings.Index(rest[n+1:], "\n")
			if next < 0 {
				n = -1
				break
			}
			n += 1 + next
		}
		if n < 0 {
			t.Fatalf("getmail message %d: no header after Received: %.400q", i, rest)
		}
		rcvd := strings.ReplaceAll(rest[:n], "\n  ", " ")
		rest = rest[n+1:]
		sm := getmailReceivedRE.FindStringSubmatch(rcvd)
		if sm == nil || sm[1] != port || sm[2] != proto {
			t.Fatalf("getmail message %d: Received field %q, want getmail's from 127.0.0.1:%s with %s", i, rcvd, port, proto)
		}
		ids = append(ids, sm[3])
		hdr, body, ok := strings.Cut(rest, "\n\n")
		const xm = "\nX-getmail-retrieved-from-mailbox: INBOX"
		if !ok || !strings.HasSuffix(hdr, xm) {
			t.Fatalf("getmail message %d: header does not end with %q: %.2000q", i, xm, hdr)
		}
		// The stored message began with its own Return-Path, which getmail
		// dropped and re-created above.
		out[i] = []byte(rp + "\n" + strings.TrimSuffix(hdr, xm) + "\n\n" + body)
	}
	return out, ids
}

// getmailSrvMsg is a message of the server's INBOX as go-imap sees it.
type getmailSrvMsg struct {
	UID   imap.UID
	Flags []imap.Flag
}

// getmailServerInbox lists INBOX over IMAP with go-imap's client (over imaps when
// useTLS, trusting the generated certificate).
func getmailServerInbox(t *testing.T, f *mailFixture, useTLS bool) (uint32, []getmailSrvMsg) {
	t.Helper()
	var c *imapclient.Client
	var err error
	if useTLS {
		pem, rerr := os.ReadFile(filepath.Join(f.dataDir, "tls", "cert.pem"))
		if rerr != nil {
			t.Fatal(rerr)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			t.Fatal("no certificate in cert.pem")
		}
		c, err = imapclient.DialTLS(f.srv.Addr("imaps"), &imapclient.Options{TLSConfig: &tls.Config{RootCAs: pool, ServerName: "mx.test.example"}})
	} else {
		c, err = imapclient.DialInsecure(f.srv.Addr("imap"), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(f.user, f.pass).Wait(); err != nil {
		t.Fatalf("IMAP LOGIN: %v", err)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		t.Fatalf("IMAP EXAMINE INBOX: %v", err)
	}
	var out []getmailSrvMsg
	if sel.NumMessages > 0 {
		msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true}).Collect()
		if err != nil {
			t.Fatalf("IMAP FETCH: %v", err)
		}
		for _, m := range msgs {
			out = append(out, getmailSrvMsg{UID: m.UID, Flags: m.Flags})
		}
	}
	if uint32(len(out)) != sel.NumMessages {
		t.Fatalf("EXAMINE says %d messages, FETCH 1:* returned %d", sel.NumMessages, len(out))
	}
	st, err := c.Status("Trash", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 0 {
		t.Fatalf("STATUS Trash: %+v %v (getmail should delete, not move)", st, err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatalf("IMAP LOGOUT: %v", err)
	}
	slices.SortFunc(out, func(a, b getmailSrvMsg) int { return int(a.UID) - int(b.UID) })
	return sel.UIDValidity, out
}

// checkGetmailIDs checks getmail's msgids (UIDVALIDITY/UID, also the keys
// of its oldmail state): one per message, UIDs 1..n of this UIDVALIDITY.
func checkGetmailIDs(t *testing.T, ids []string, validity uint32, n int) {
	t.Helper()
	var want []string
	for uid := 1; uid <= n; uid++ {
		want = append(want, fmt.Sprintf("%d/%d", validity, uid))
	}
	got := slices.Clone(ids)
	slices.Sort(got)
	got = slices.Compact(got) // a retried run may deliver a message twice
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("getmail msgids %q, want %q", got, want)
	}
}
