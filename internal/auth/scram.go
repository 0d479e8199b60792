package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/xdg-go/scram"
)

// scramMech is SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 7677, RFC 5802),
// an adapter around xdg-go/scram's server conversation, which parses the
// messages and checks the proof and the channel binding. This adapter adds
// what a mail server needs around it: the credential lookup with the
// throttle, fake credentials that make unknown users and accounts without
// a SCRAM secret fail exactly like a wrong password, the choice of the
// channel binding, and the mapping of failures to this package's errors.
//
// Exchange (RFC 5802 §5):
//
//	C: client-first-message   gs2-header n=user,r=cnonce
//	S: server-first-message   r=cnonce+snonce,s=salt,i=iterations
//	C: client-final-message   c=base64(gs2-header [cb-data]),r=...,p=proof
//	S: server-final-message   v=ServerSignature
//	C: (empty response)
//
// IMAP and POP3 have no "additional data with success" (RFC 4422 §3.6):
// the server-final-message is sent as a last challenge, which the client
// answers with an empty response before the tagged OK / +OK.
type scramMech struct {
	a    *Authenticator
	conn Conn
	plus bool // SCRAM-SHA-256-PLUS: channel binding required

	state int // 0: want client-first, 1: want client-final, 2: want the empty response
	conv  *scram.ServerConversation

	// Set by the credential lookup during the first step.
	name      string // canonical account name; "" for fake credentials
	lookupErr error  // a failure of the lookup itself (or of the throttle wait)
}

func (m *scramMech) next(ctx context.Context, resp []byte, ok bool, res *Result) ([]byte, bool, error) {
	switch m.state {
	case 0:
		if !ok {
			// An empty challenge asks for the client-first-message.
			return []byte{}, false, nil
		}
		m.state = 1
		return m.first(ctx, string(resp), res)
	case 1:
		m.state = 2
		return m.final(string(resp), res)
	default:
		if len(resp) != 0 {
			return nil, false, malformed("SCRAM: non-empty response after server-final-message")
		}
		res.Name = m.name
		return nil, true, nil
	}
}

// first handles the client-first-message.
func (m *scramMech) first(ctx context.Context, msg string, res *Result) ([]byte, bool, error) {
	srv, err := scram.SHA256.NewServer(func(user string) (scram.StoredCredentials, error) {
		return m.lookup(ctx, user)
	})
	if err != nil {
		return nil, false, err
	}
	if m.a.scramNonce != nil {
		srv.WithNonceGenerator(m.a.scramNonce)
	}
	// The binding the conversation checks: the type the client names
	// after "p=" when the connection has it. For any other client the
	// conversation still gets a binding whenever the connection has one,
	// because that is what tells it SCRAM-SHA-256-PLUS was offered, so
	// that gs2 flag "y" is refused as a downgrade (RFC 5802 §6) and an
	// unavailable "p=" type gets unsupported-channel-binding-type.
	b := m.conn.Bindings
	var cb scram.ChannelBinding
	cbType := gs2ChannelBindingType(msg)
	switch {
	case cbType != "" && b.data(cbType) != nil:
		cb = scram.ChannelBinding{Type: scram.ChannelBindingType(cbType), Data: b.data(cbType)}
	case b.Exporter != nil:
		cb = scram.ChannelBinding{Type: scram.ChannelBindingTLSExporter, Data: b.Exporter}
	case b.ServerEndPoint != nil:
		cb = scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: b.ServerEndPoint}
	}
	switch {
	case m.plus:
		// The -PLUS mechanism is channel binding: flags "n" and "y" are
		// refused (RFC 5802 §6).
		m.conv = srv.NewConversationWithChannelBindingRequired(cb)
	case cb.IsSupported():
		m.conv = srv.NewConversationWithChannelBinding(cb)
	default:
		m.conv = srv.NewConversation()
	}
	out, err := m.conv.Step(msg)
	if err != nil {
		if m.lookupErr != nil {
			return nil, false, m.lookupErr
		}
		switch out {
		case scram.ErrServerDoesSupportChannelBinding:
			if m.plus {
				return nil, false, fmt.Errorf("%w: %s requires channel binding (gs2 flag \"p\")", ErrChannelBinding, MechSCRAMSHA256Plus)
			}
			return nil, false, fmt.Errorf("%w: client claims the server does not support channel binding (gs2 flag \"y\"), but %s is offered: possible downgrade attack", ErrChannelBinding, MechSCRAMSHA256Plus)
		case scram.ErrChannelBindingNotSupported, scram.ErrUnsupportedChannelBindingType:
			return nil, false, fmt.Errorf("%w: channel binding type %q is not available on this connection", ErrChannelBinding, cbType)
		}
		return nil, false, malformed("SCRAM client-first-message: %v", err)
	}
	res.User, res.Authz = m.conv.Username(), m.conv.AuthzID()
	return []byte(out), false, nil
}

// final handles the client-final-message.
func (m *scramMech) final(msg string, res *Result) ([]byte, bool, error) {
	out, err := m.conv.Step(msg)
	if err != nil {
		switch out {
		case scram.ErrInvalidProof:
			m.a.Throttle.Failure(m.conn.Remote, res.User)
			return nil, false, ErrInvalidCredentials
		case scram.ErrChannelBindingsDontMatch:
			// Also when the client sent "c=" for another gs2 header:
			// either way it is not bound to this connection.
			m.a.Throttle.Failure(m.conn.Remote, res.User)
			return nil, false, fmt.Errorf("%w: channel binding data does not match this connection", ErrChannelBinding)
		}
		return nil, false, malformed("SCRAM client-final-message: %v", err)
	}
	if !m.conv.Valid() || m.name == "" {
		// Unreachable: fake credentials cannot produce a valid proof.
		m.a.Throttle.Failure(m.conn.Remote, res.User)
		return nil, false, ErrInvalidCredentials
	}
	if !authzPermitted(res.Authz, res.User) {
		return nil, false, ErrAuthzFailed
	}
	m.a.Throttle.Success(m.conn.Remote, res.User)
	return []byte(out), false, nil
}

// lookup is the conversation's CredentialLookup: it waits out the
// throttle, then returns the account's stored SCRAM credentials, or fake
// ones for an unknown user or an account without a SCRAM secret. The
// conversation then proceeds identically (same messages, same iteration
// count, a salt that is stable per name) and fails only at the proof, as
// for a wrong password: no step reveals whether the account exists (RFC
// 5802 §9 warns that the server-first-message can otherwise tell).
func (m *scramMech) lookup(ctx context.Context, user string) (scram.StoredCredentials, error) {
	if err := m.a.wait(ctx, m.conn.Remote, user); err != nil {
		m.lookupErr = err
		return scram.StoredCredentials{}, err
	}
	// A blocked client gets the account's real salt and iteration count
	// (so nothing in the exchange differs from an open one) with keys no
	// proof can match: it fails at the proof like a wrong password
	// (throttle.go).
	blocked := m.a.Throttle.IsBlocked(m.conn.Remote)
	if blocked {
		m.a.Throttle.Blocked(m.conn.Remote, user)
	}
	cred, err := m.a.lookup(ctx, user)
	if errors.Is(err, ErrUnknownUser) || err == nil && cred.SCRAMSHA256 == "" {
		return m.a.fakeSCRAM(user), nil
	}
	if err != nil {
		m.lookupErr = err
		return scram.StoredCredentials{}, err
	}
	sec, err := parseSCRAMSecret(cred.SCRAMSHA256)
	if err != nil {
		m.lookupErr = fmt.Errorf("account %s: %w", cred.Name, err)
		return scram.StoredCredentials{}, m.lookupErr
	}
	if blocked {
		fake := m.a.fakeSCRAM(user)
		fake.KeyFactors = scram.KeyFactors{Salt: string(sec.salt), Iters: sec.iters}
		return fake, nil
	}
	m.name = cred.Name
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(sec.salt), Iters: sec.iters},
		StoredKey:  sec.storedKey,
		ServerKey:  sec.serverKey,
	}, nil
}

// fakeSCRAM returns credentials no proof can match: a salt derived from
// the name with a per-process random key (so repeated attempts for one
// name see one salt, as for a real account), the current iteration
// count, and random keys.
func (a *Authenticator) fakeSCRAM(user string) scram.StoredCredentials {
	a.fakeOnce.Do(func() {
		a.fakeKey = make([]byte, 32)
		rand.Read(a.fakeKey)
	})
	mac := hmac.New(sha256.New, a.fakeKey)
	mac.Write([]byte(strings.ToLower(user)))
	salt := mac.Sum(nil)[:scramSaltLen]
	keys := make([]byte, 2*sha256.Size)
	rand.Read(keys)
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(salt), Iters: SCRAMIterations},
		StoredKey:  keys[:sha256.Size],
		ServerKey:  keys[sha256.Size:],
	}
}

// gs2ChannelBindingType returns the channel binding type a
// client-first-message names ("p=<type>," at its start, RFC 5802 §7
// gs2-cbind-flag), or "" when it names none. The message is validated by
// the conversation afterwards; this only picks the binding data to give
// it.
func gs2ChannelBindingType(msg string) string {
	rest, ok := strings.CutPrefix(msg, "p=")
	if !ok {
		return ""
	}
	t, _, ok := strings.Cut(rest, ",")
	if !ok {
		return ""
	}
	return t
}
