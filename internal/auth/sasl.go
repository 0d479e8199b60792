package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// SASL mechanisms (RFC 4422) that Authenticator.Run serves.
const (
	// MechPlain sends the password (RFC 4616).
	MechPlain = "PLAIN"
	// MechLogin sends the password too: the obsolete but widely used
	// LOGIN mechanism (draft-murchison-sasl-login), prompts "Username:"
	// and "Password:".
	MechLogin = "LOGIN"
	// MechSCRAMSHA256 never reveals the password (RFC 7677, RFC 5802).
	MechSCRAMSHA256 = "SCRAM-SHA-256"
	// MechSCRAMSHA256Plus is SCRAM-SHA-256 bound to the TLS channel
	// (RFC 5802 §6) with tls-server-end-point or tls-exporter.
	MechSCRAMSHA256Plus = "SCRAM-SHA-256-PLUS"
)

// Errors of Authenticator.Run besides ErrInvalidCredentials. Protocols
// map them to their responses; any other error is a temporary failure of
// the check itself (or the Transport's own error, returned unchanged).
var (
	// ErrUnsupportedMechanism: the mechanism is unknown or not offered on
	// this connection (SCRAM-SHA-256-PLUS without TLS).
	ErrUnsupportedMechanism = errors.New("auth: unsupported SASL mechanism")
	// ErrPlaintextRefused: a mechanism that sends the password (PLAIN,
	// LOGIN) on a connection that must not carry one (design.md §5).
	ErrPlaintextRefused = errors.New("auth: plaintext authentication disallowed on this connection")
	// ErrCancelled: the client answered a challenge with "*" (RFC 4422
	// §3.5; IMAP answers BAD, RFC 9051 §6.2.2).
	ErrCancelled = errors.New("auth: authentication cancelled by the client")
	// ErrBadBase64: a response is not valid base64 (RFC 9051 §6.2.2: BAD).
	ErrBadBase64 = errors.New("auth: invalid base64 in SASL response")
	// ErrMalformed: a decoded response does not follow the mechanism's
	// syntax. Errors wrapping it say what was wrong, for the log.
	ErrMalformed = errors.New("auth: malformed SASL response")
	// ErrAuthzFailed: the client asked to act as another identity
	// (Result.Authz), which is never permitted.
	ErrAuthzFailed = errors.New("auth: authorization identity not permitted")
	// ErrChannelBinding: SCRAM channel binding failed: the client's
	// binding data does not match this connection (a man in the middle,
	// or a client bound to another TLS session), it asked for a binding
	// type this connection does not have, or it claimed the server does
	// not support channel binding although SCRAM-SHA-256-PLUS was offered
	// (gs2 flag "y", a downgrade, RFC 5802 §6). Errors wrapping it say
	// which.
	ErrChannelBinding = errors.New("auth: SCRAM channel binding failed")
)

// Conn describes the connection a SASL exchange runs on.
type Conn struct {
	// Remote is the client's address, for the throttle.
	Remote netip.Addr
	// PlaintextOK says whether mechanisms that send the password may be
	// used (Authenticator.PlaintextAllowed).
	PlaintextOK bool
	// Bindings are the connection's TLS channel bindings
	// (TLSChannelBindings); the zero value without TLS.
	Bindings ChannelBindings
}

// Transport carries the challenges and responses of one exchange in a
// protocol's framing: IMAP AUTHENTICATE continuations (RFC 9051 §6.2.2),
// POP3 AUTH (RFC 5034 §4). Both are the same: "+ " base64 CRLF from the
// server, a base64 line from the client.
type Transport interface {
	// Challenge sends data as a server challenge and flushes it.
	Challenge(data []byte) error
	// Response reads the client's next response line, without its line
	// end. An error is returned by Run unchanged.
	Response() (string, error)
}

// Result describes an exchange, also a failed one (for logs and audit).
type Result struct {
	Mech  string // the mechanism, upper case
	User  string // the authentication identity as the client gave it; "" if none yet
	Authz string // the authorization identity asked for; "" for none
	Name  string // the canonical account name; set on success only
}

// PlaintextAllowed reports whether a connection may carry a plaintext
// password (PLAIN, LOGIN, IMAP LOGIN, POP3 USER/PASS). secure says
// whether the connection is TLS or from loopback, which always may
// (design.md §5); other connections may when AllowPlaintextWithoutTLS is
// set (config tls.require_tls_for_auth = false).
func (a *Authenticator) PlaintextAllowed(secure bool) bool {
	return secure || a != nil && a.AllowPlaintextWithoutTLS
}

// scramEnabled reports whether SCRAM secrets can be looked up. Without
// them SCRAM could only fail, and a client that prefers SCRAM would never
// fall back to a mechanism that works, so it is not offered.
func (a *Authenticator) scramEnabled() bool { return a != nil && a.Credentials != nil }

// Mechanisms lists the mechanisms offered on c, strongest first: for IMAP
// AUTH= capabilities (RFC 9051 §6.2.2) and POP3's SASL capability (RFC
// 5034 §3). SCRAM is offered on every connection, since it never reveals
// the password; SCRAM-SHA-256-PLUS only where a channel binding exists;
// PLAIN and LOGIN only where plaintext passwords are allowed.
func (a *Authenticator) Mechanisms(c Conn) []string {
	var l []string
	if a.scramEnabled() {
		if c.Bindings.Available() {
			l = append(l, MechSCRAMSHA256Plus)
		}
		l = append(l, MechSCRAMSHA256)
	}
	if c.PlaintextOK {
		l = append(l, MechPlain, MechLogin)
	}
	return l
}

// mechanism is the server side of one SASL mechanism's exchange.
type mechanism interface {
	// next takes the client's response (ok false: the client sent no
	// initial response; only the first call can have that) and returns
	// the next challenge, or done when the exchange has succeeded. It
	// fills in res as it learns.
	next(ctx context.Context, resp []byte, ok bool, res *Result) (challenge []byte, done bool, err error)
}

// Run performs the server side of one SASL exchange of mechanism mech on
// connection c: the conversation logic shared by IMAP AUTHENTICATE and
// POP3 AUTH. initial is the initial response as sent (base64, "=" for an
// empty one; RFC 4959 §3, RFC 5034 §4), nil when the client sent none.
// On success the error is nil and res.Name is the account.
//
// Checks happen in this order: ErrUnsupportedMechanism, then
// ErrPlaintextRefused (before any response is decoded), then the
// exchange. Failed password checks go through the throttle like
// Authenticate, for every mechanism.
func (a *Authenticator) Run(ctx context.Context, c Conn, mech string, initial *string, t Transport) (res Result, err error) {
	res.Mech = strings.ToUpper(mech)
	var m mechanism
	switch res.Mech {
	case MechPlain, MechLogin:
		if !c.PlaintextOK {
			return res, ErrPlaintextRefused
		}
		if res.Mech == MechPlain {
			m = &plainMech{a: a, remote: c.Remote}
		} else {
			m = &loginMech{a: a, remote: c.Remote}
		}
	case MechSCRAMSHA256, MechSCRAMSHA256Plus:
		plus := res.Mech == MechSCRAMSHA256Plus
		if !a.scramEnabled() || plus && !c.Bindings.Available() {
			return res, ErrUnsupportedMechanism
		}
		m = &scramMech{a: a, conn: c, plus: plus}
	default:
		return res, ErrUnsupportedMechanism
	}
	var resp []byte
	have := false
	if initial != nil {
		if resp, err = decodeResponse(*initial); err != nil {
			return res, err
		}
		have = true
	}
	for {
		challenge, done, err := m.next(ctx, resp, have, &res)
		if err != nil || done {
			return res, err
		}
		if err := t.Challenge(challenge); err != nil {
			return res, err
		}
		line, err := t.Response()
		if err != nil {
			return res, err
		}
		if resp, err = decodeResponse(line); err != nil {
			return res, err
		}
		have = true
	}
}

// decodeResponse decodes a client response line: "*" cancels (RFC 4422
// §3.5), "=" is an empty response (RFC 4959 §3 for the initial response;
// accepted on later lines too), anything else must be base64 with padding
// (RFC 4648 §4).
func decodeResponse(line string) ([]byte, error) {
	switch line {
	case "*":
		return nil, ErrCancelled
	case "=":
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.Strict().DecodeString(line)
	if err != nil || strings.ContainsAny(line, "\r\n") {
		return nil, ErrBadBase64
	}
	return b, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// plainMech is PLAIN (RFC 4616): one response,
// [authzid] NUL authcid NUL passwd.
type plainMech struct {
	a      *Authenticator
	remote netip.Addr
}

func (m *plainMech) next(ctx context.Context, resp []byte, ok bool, res *Result) ([]byte, bool, error) {
	if !ok {
		// An empty challenge asks for the message (RFC 4616 §2).
		return []byte{}, false, nil
	}
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 {
		return nil, false, malformed("PLAIN message is not [authzid] NUL authcid NUL passwd")
	}
	res.Authz, res.User = string(parts[0]), string(parts[1])
	if !authzPermitted(res.Authz, res.User) {
		return nil, false, ErrAuthzFailed
	}
	name, err := m.a.Authenticate(ctx, res.User, string(parts[2]), m.remote)
	if err != nil {
		return nil, false, err
	}
	res.Name = name
	return nil, true, nil
}

// authzPermitted reports whether a client authenticated as user may act
// as authz: only as itself (an empty authz means itself, RFC 4422 §3.4.1).
func authzPermitted(authz, user string) bool {
	return authz == "" || strings.EqualFold(authz, user)
}

// loginMech is the LOGIN mechanism: the server prompts "Username:" and
// "Password:", the client answers each with the bare string. A client
// may send the user name as initial response and skip the first prompt.
type loginMech struct {
	a      *Authenticator
	remote netip.Addr
	state  int // 0: start, 1: "Username:" sent, 2: "Password:" sent
}

var (
	loginUserPrompt = []byte("Username:")
	loginPassPrompt = []byte("Password:")
)

func (m *loginMech) next(ctx context.Context, resp []byte, ok bool, res *Result) ([]byte, bool, error) {
	switch m.state {
	case 0:
		if !ok || len(resp) == 0 {
			// No initial response (an empty one is taken as none).
			m.state = 1
			return loginUserPrompt, false, nil
		}
		fallthrough
	case 1:
		if len(resp) == 0 || bytes.IndexByte(resp, 0) >= 0 {
			return nil, false, malformed("LOGIN user name is empty or contains NUL")
		}
		res.User = string(resp)
		m.state = 2
		return loginPassPrompt, false, nil
	}
	if bytes.IndexByte(resp, 0) >= 0 {
		return nil, false, malformed("LOGIN password contains NUL")
	}
	name, err := m.a.Authenticate(ctx, res.User, string(resp), m.remote)
	if err != nil {
		return nil, false, err
	}
	res.Name = name
	return nil, true, nil
}
