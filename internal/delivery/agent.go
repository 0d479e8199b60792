// Package delivery is Letterbox's local delivery agent: it turns "this
// message, from this sender, for these addresses" into durable copies in the
// recipients' INBOXes.
//
// It exists so that the three ways mail arrives — the SMTP MX listener, the
// LMTP listener behind another MTA, and the `letterbox deliver` command an
// MTA runs — share one definition of which addresses are local, how
// user+tag@domain and postmaster@ resolve, which trace header fields are
// prepended, how large a message may be, and which failures are permanent
// or temporary. Protocol packages map its typed errors (Error, Kind) to
// their replies; the CLI maps them to sysexits(3) codes.
//
// The agent talks only to mailstore.Store: the message body is streamed
// into one Spool and stored once for all recipients with one Store.Deliver,
// which returns only when the copies are durable (design.md §4).
package delivery

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// DefaultMaxMessageSize is used when Agent.MaxMessageSize is zero.
const DefaultMaxMessageSize = 50 << 20

// Agent delivers messages to local accounts. Its fields are set once before
// use; its methods are safe for concurrent use.
type Agent struct {
	Store    mailstore.Store
	Hostname string   // this host, for the Received: field
	Domains  []string // local domains, matched case-insensitively
	// MaxMessageSize is the largest message accepted, in octets as
	// received (before the trace fields are prepended). Zero means
	// DefaultMaxMessageSize.
	MaxMessageSize int64
	// OverQuotaTemporary selects the reply for a recipient over its
	// quota: false (the default) rejects permanently (KindOverQuota,
	// 552 5.2.2), true defers (KindOverQuotaTemp, 452 4.2.2). See
	// quota.go.
	OverQuotaTemporary bool
	Logger             *slog.Logger // nil: discard

	now func() time.Time // for tests
}

// MaxSize returns the effective maximum message size.
func (a *Agent) MaxSize() int64 {
	if a.MaxMessageSize > 0 {
		return a.MaxMessageSize
	}
	return DefaultMaxMessageSize
}

func (a *Agent) logger() *slog.Logger {
	if a.Logger != nil {
		return a.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (a *Agent) clock() time.Time {
	if a.now != nil {
		return a.now()
	}
	return time.Now()
}

// Recipient is a resolved recipient.
type Recipient struct {
	Address   Address // as the sender gave it
	Account   string  // name of the account that receives the copy
	AccountID int64
	Mailbox   string // mailbox of that account, mailstore.Inbox
}

// localDomain returns the configured spelling (lower-cased) of d when d is
// a local domain.
func (a *Agent) localDomain(d string) (string, bool) {
	d = strings.TrimSuffix(d, ".")
	for _, ld := range a.Domains {
		ld = strings.TrimSuffix(ld, ".")
		if ld != "" && strings.EqualFold(ld, d) {
			return strings.ToLower(ld), true
		}
	}
	return "", false
}

// Resolve parses addr (RFC 5321 syntax, optionally in angle brackets) and
// resolves it as ResolveAddress does. It is what `letterbox deliver` uses
// for its arguments.
func (a *Agent) Resolve(ctx context.Context, addr string) (Recipient, error) {
	ad, err := ParseAddress(addr)
	if err != nil {
		return Recipient{}, &Error{Kind: KindBadAddress, Address: addr,
			Msg: "Bad destination mailbox address syntax", Err: err}
	}
	return a.ResolveAddress(ctx, ad)
}

// ResolveAddress maps a recipient address to a local account:
//
//   - The domain must be one of Domains (case-insensitive); otherwise
//     KindRelayDenied: this server never relays.
//   - The address is lower-cased. An account named exactly like it wins;
//     otherwise a "+tag" suffix of the local part is dropped
//     (user+tag@domain → user@domain).
//   - postmaster (any case, any tag) at any local domain is always a valid
//     recipient (RFC 5321 §4.5.1): it goes to the account postmaster@domain,
//     else to postmaster@ the first configured domain that has one. If no
//     postmaster account exists at all, the recipient fails with
//     KindNotConfigured, a temporary 451 4.3.5, rather than the permanent
//     550 RFC 5321 forbids: the sender retries while the administrator is
//     told (an error log line) to create the account.
//   - Otherwise KindNoSuchUser. Store failures are KindTempFail.
func (a *Agent) ResolveAddress(ctx context.Context, ad Address) (Recipient, error) {
	domain, ok := a.localDomain(ad.Domain)
	if !ok {
		return Recipient{}, &Error{Kind: KindRelayDenied, Address: ad.String(),
			Msg: fmt.Sprintf("Relaying denied: %s is not a local domain", ad.Domain)}
	}
	local := strings.ToLower(ad.Local)
	candidates := []string{local + "@" + domain}
	base := local
	if i := strings.IndexByte(local, '+'); i > 0 {
		base = local[:i]
		candidates = append(candidates, base+"@"+domain)
	}
	postmaster := base == "postmaster"
	if postmaster {
		candidates = append(candidates, "postmaster@"+domain)
		for _, d := range a.Domains {
			if d, ok := a.localDomain(d); ok {
				candidates = append(candidates, "postmaster@"+d)
			}
		}
	}
	tried := map[string]bool{}
	for _, name := range candidates {
		if tried[name] {
			continue
		}
		tried[name] = true
		acct, err := a.Store.Account(ctx, name)
		switch {
		case err == nil:
			return Recipient{Address: ad, Account: acct.Name, AccountID: acct.ID, Mailbox: mailstore.Inbox}, nil
		case errors.Is(err, mailstore.ErrNoSuchAccount), errors.Is(err, mailstore.ErrInvalidName):
			continue
		default:
			return Recipient{}, tempFail(ad.String(), err, "Temporary failure looking up the recipient, try again later")
		}
	}
	if postmaster {
		a.logger().Error("mail for postmaster refused temporarily: no postmaster account; create one",
			"rcpt", ad.String(), "create", "postmaster@"+domain)
		return Recipient{}, &Error{Kind: KindNotConfigured, Address: ad.String(),
			Msg: "Postmaster mailbox not configured yet, try again later"}
	}
	return Recipient{}, &Error{Kind: KindNoSuchUser, Address: ad.String(),
		Msg: fmt.Sprintf("<%s>: no such user here", ad.String())}
}

// Envelope is the SMTP envelope of one message plus the trace information
// the Received: field records.
type Envelope struct {
	// From is the reverse path in RFC 5321 form without angle brackets
	// (Address.String()); "" is the null sender of bounces.
	From       string
	Recipients []Recipient

	// Trace information. Protocol is the RFC 3848 / RFC 6531 "with" keyword
	// (ESMTP, ESMTPS, LMTP, LMTPS, UTF8SMTPS, ...); "" means local
	// submission (`letterbox deliver`), which has no "from" clause.
	Protocol   string
	Helo       string   // the client's HELO/EHLO/LHLO argument
	RemoteAddr net.Addr // the client's address, if any
	TLS        *tls.ConnectionState

	// ID is the delivery's identifier in the Received: field, the logs
	// and the reply; Deliver sets it when empty.
	ID string
	// Logger, if set, replaces Agent.Logger for this delivery (so the log
	// line carries the connection's attributes).
	Logger *slog.Logger
}

// NewID returns a fresh delivery identifier: 16 characters of base32.
func NewID() string {
	var b [10]byte
	rand.Read(b[:])
	return base32.StdEncoding.EncodeToString(b[:])
}

// Deliver reads the message from body and stores it once for all of
// env.Recipients, prefixed by a Return-Path: and a Received: field. It
// returns one error per recipient, in order: nil means that recipient's
// copy is durable. Recipients that resolve to the same mailbox get one copy.
//
// The body is read until EOF or until it exceeds MaxSize (KindTooBig; the
// rest is left unread). A read error fails every recipient with
// KindTempFail wrapping it (or KindTooBig when it wraps
// ErrMessageTooLarge); a store failure is KindTempFail for the recipients
// it concerns, except that a recipient whose account or INBOX vanished
// since it was resolved is KindNoSuchUser, and one whose account has no
// room for the message (mailstore.ErrOverQuota) is KindOverQuota or
// KindOverQuotaTemp (OverQuotaTemporary). When the store is out of space
// (a full disk fails the spool's writes or the metadata commit), a store
// or spool failure is KindInsufficientStorage instead of KindTempFail.
func (a *Agent) Deliver(ctx context.Context, env *Envelope, body io.Reader) []error {
	errs := make([]error, len(env.Recipients))
	if len(errs) == 0 {
		return errs
	}
	if env.ID == "" {
		env.ID = NewID()
	}
	log := env.Logger
	if log == nil {
		log = a.logger()
	}
	start := a.clock()
	rcptNames := make([]string, len(env.Recipients))
	for i, r := range env.Recipients {
		rcptNames[i] = r.Address.String()
	}
	var (
		size  int64
		msgID string
	)
	fail := func(e *Error) []error {
		for i := range errs {
			errs[i] = e
		}
		log.Warn("delivery failed", "id", env.ID, "from", env.From, "rcpts", rcptNames,
			"message_id", msgID, "size", size, "kind", e.Kind.String(), "err", e.Error())
		return errs
	}
	if !validPath(env.From) {
		return fail(&Error{Kind: KindBadSender, Address: env.From, Msg: "Bad sender address syntax"})
	}

	sp, err := a.Store.NewSpool()
	if err != nil {
		return fail(tempFail("", err, "Temporary failure storing the message, try again later"))
	}
	defer sp.Abort()
	if _, err := io.WriteString(sp, a.traceFields(env, start)); err != nil {
		return fail(tempFail("", err, "Temporary failure storing the message, try again later"))
	}

	maxSize := a.MaxSize()
	src := &readTracker{r: io.LimitReader(body, maxSize+1)}
	sniff := &headerSniffer{}
	size, err = io.Copy(io.MultiWriter(sp, sniff), src)
	msgID = sniff.messageID()
	switch {
	case size > maxSize || errors.Is(src.err, ErrMessageTooLarge):
		return fail(&Error{Kind: KindTooBig, Msg: fmt.Sprintf("Message exceeds the maximum size of %d octets", maxSize), Err: src.err})
	case src.err != nil:
		return fail(tempFail("", src.err, "Error reading the message, try again later"))
	case err != nil:
		return fail(tempFail("", err, "Temporary failure storing the message, try again later"))
	}

	// One copy per distinct mailbox.
	type key struct {
		id  int64
		box string
	}
	index := map[key]int{}
	var targets []mailstore.Recipient
	slot := make([]int, len(env.Recipients))
	for i, r := range env.Recipients {
		k := key{r.AccountID, r.Mailbox}
		j, ok := index[k]
		if !ok {
			j = len(targets)
			index[k] = j
			targets = append(targets, mailstore.Recipient{AccountID: r.AccountID, Mailbox: r.Mailbox})
		}
		slot[i] = j
	}
	serrs := a.Store.Deliver(ctx, sp, start, targets)
	if len(serrs) != len(targets) {
		return fail(tempFail("", fmt.Errorf("store returned %d results for %d recipients", len(serrs), len(targets)),
			"Temporary failure storing the message, try again later"))
	}
	failed := 0
	for i, r := range env.Recipients {
		serr := serrs[slot[i]]
		switch {
		case serr == nil:
			continue
		case errors.Is(serr, mailstore.ErrNoSuchAccount), errors.Is(serr, mailstore.ErrNoSuchMailbox):
			errs[i] = &Error{Kind: KindNoSuchUser, Address: rcptNames[i],
				Msg: fmt.Sprintf("<%s>: no such user here", rcptNames[i]), Err: serr}
		case errors.Is(serr, mailstore.ErrOverQuota):
			errs[i] = a.overQuota(rcptNames[i], serr)
		default:
			errs[i] = tempFail(rcptNames[i], serr, "Temporary failure storing the message, try again later")
		}
		failed++
		log.Warn("delivery to recipient failed", "id", env.ID, "rcpt", rcptNames[i], "account", r.Account, "err", errs[i].Error())
	}
	lvl := slog.LevelInfo
	result := "delivered"
	if failed == len(errs) {
		lvl, result = slog.LevelWarn, "failed"
	} else if failed > 0 {
		lvl, result = slog.LevelWarn, "partial"
	}
	log.Log(ctx, lvl, "delivery", "id", env.ID, "from", env.From, "rcpts", rcptNames,
		"message_id", msgID, "size", size, "result", result, "failed", failed,
		"duration", a.clock().Sub(start).Round(time.Microsecond))
	return errs
}

// readTracker remembers the error of the reader, to tell read errors from
// write errors after io.Copy.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// validPath accepts a reverse path that can be written into Return-Path:
// without breaking the header: no controls, spaces or angle brackets.
// Senders without a domain (`deliver -f MAILER-DAEMON`) are allowed.
func validPath(p string) bool {
	if len(p) > 512 {
		return false
	}
	for _, r := range p {
		if r < 0x21 || r == 0x7f || r == '<' || r == '>' || (r >= 0x80 && r <= 0x9f) {
			return false
		}
	}
	return true
}

// traceFields returns the Return-Path: and Received: fields (RFC 5321
// §4.4) for env, folded, CRLF-terminated.
func (a *Agent) traceFields(env *Envelope, date time.Time) string {
	var b strings.Builder
	b.WriteString("Return-Path: <" + env.From + ">\r\n")
	b.WriteString("Received:")
	if env.Protocol != "" && env.Protocol != "local" {
		ip, hasIP := remoteIP(env.RemoteAddr)
		helo := env.Helo
		if !validHelo(helo) {
			helo = ""
		}
		switch {
		case helo != "" && hasIP:
			b.WriteString(" from " + helo + " (" + addressLiteral(ip) + ")")
		case helo != "":
			b.WriteString(" from " + helo)
		case hasIP:
			b.WriteString(" from " + addressLiteral(ip) + " (" + addressLiteral(ip) + ")")
		default:
			b.WriteString(" from unknown")
		}
		if env.TLS != nil {
			fmt.Fprintf(&b, "\r\n\t(using %s with cipher %s)", tlsVersionName(env.TLS.Version), tls.CipherSuiteName(env.TLS.CipherSuite))
		}
		b.WriteString("\r\n\tby " + a.hostname() + " with " + env.Protocol + " id " + env.ID)
	} else {
		b.WriteString(" by " + a.hostname() + " (letterbox deliver) id " + env.ID)
	}
	if len(env.Recipients) == 1 {
		b.WriteString("\r\n\tfor <" + env.Recipients[0].Address.String() + ">")
	}
	b.WriteString("; " + date.Format("Mon, 02 Jan 2006 15:04:05 -0700") + "\r\n")
	return b.String()
}

func (a *Agent) hostname() string {
	if a.Hostname != "" && validHelo(a.Hostname) {
		return a.Hostname
	}
	return "localhost"
}

func remoteIP(addr net.Addr) (netip.Addr, bool) {
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case nil:
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// addressLiteral formats ip as an RFC 5321 §4.1.3 address literal.
func addressLiteral(ip netip.Addr) string {
	if ip.Is4() {
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + ip.WithZone("").String() + "]"
}

// validHelo accepts what may appear verbatim in a Received: from clause: a
// domain (ASCII letters, digits, hyphens, underscores, dots, or UTF-8
// letters) or an address literal. Anything else is replaced by the client's
// address literal.
func validHelo(h string) bool {
	if h == "" || len(h) > maxDomain {
		return false
	}
	if strings.HasPrefix(h, "[") {
		return validAddressLiteral(h)
	}
	return checkDomain(h) == nil
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("TLS(0x%04x)", v)
}

// headerSniffer keeps the header section (up to maxSniff octets) as it
// streams past, to find the Message-ID for the log.
type headerSniffer struct {
	buf  []byte
	done bool
}

const maxSniff = 64 << 10

func (h *headerSniffer) Write(p []byte) (int, error) {
	if h.done {
		return len(p), nil
	}
	room := maxSniff - len(h.buf)
	q := p
	if len(q) > room {
		q = q[:room]
	}
	h.buf = append(h.buf, q...)
	if len(h.buf) >= maxSniff || bytes.Contains(h.buf, []byte("\n\r\n")) || bytes.Contains(h.buf, []byte("\n\n")) ||
		bytes.HasPrefix(h.buf, []byte("\r\n")) || bytes.HasPrefix(h.buf, []byte("\n")) {
		h.done = true
	}
	return len(p), nil
}

// messageID returns the unfolded value of the first Message-ID field,
// truncated to 256 octets, or "".
func (h *headerSniffer) messageID() string {
	lines := strings.Split(string(h.buf), "\n")
	for i, l := range lines {
		l = strings.TrimSuffix(l, "\r")
		if l == "" {
			break
		}
		name, val, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(strings.TrimRight(name, " \t"), "Message-ID") {
			continue
		}
		for _, c := range lines[i+1:] {
			c = strings.TrimSuffix(c, "\r")
			if c == "" || (c[0] != ' ' && c[0] != '\t') {
				break
			}
			val += c
		}
		val = strings.TrimSpace(val)
		if len(val) > 256 {
			val = val[:256]
		}
		return val
	}
	return ""
}
