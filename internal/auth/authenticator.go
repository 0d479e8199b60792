package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// ErrInvalidCredentials is the one error for both an unknown user and a
// wrong password, so that a client cannot tell them apart.
var ErrInvalidCredentials = errors.New("auth: invalid credentials")

// ErrUnknownUser is what a LookupFunc returns for a user that does not exist.
var ErrUnknownUser = errors.New("auth: unknown user")

// LookupFunc returns the canonical login name and password hash of user, or
// ErrUnknownUser.
type LookupFunc func(ctx context.Context, user string) (canonical, hash string, err error)

// Credentials are what a login is checked against.
type Credentials struct {
	Name         string // canonical login name
	PasswordHash string // argon2id hash (HashPassword)
	SCRAMSHA256  string // SCRAM-SHA-256 secret (NewSCRAMSecret); "" when the account has none
}

// CredentialsFunc returns the credentials of user, or ErrUnknownUser.
type CredentialsFunc func(ctx context.Context, user string) (Credentials, error)

// Authenticator checks logins for every protocol, applying the shared
// Throttle: username/password pairs (Authenticate) and SASL exchanges
// (Run, sasl.go).
type Authenticator struct {
	// Credentials looks accounts up. It is what SCRAM needs: without it
	// (only Lookup set) SCRAM mechanisms are neither offered nor accepted.
	Credentials CredentialsFunc
	// Lookup is the older, password-only lookup, used when Credentials
	// is nil.
	Lookup   LookupFunc
	Throttle *Throttle

	// SaveSCRAM, if set, gives accounts that have no SCRAM secret one at
	// their next successful password login (Authenticate): the password is
	// in hand then, and only then. It must store secret for the account
	// only if the account's password hash is still passwordHash (the
	// secret derives from that password; a password changed meanwhile
	// must not get the old password's secret), and report whether it did.
	// It runs in the background, never delaying the login; Wait waits for
	// it.
	SaveSCRAM func(ctx context.Context, name, passwordHash, secret string) (bool, error)

	// AllowPlaintextWithoutTLS lets connections that are neither TLS nor
	// from loopback carry plaintext passwords (config
	// tls.require_tls_for_auth = false). See PlaintextAllowed.
	AllowPlaintextWithoutTLS bool

	// Logger receives failures of background work (SaveSCRAM); nil
	// discards them.
	Logger *slog.Logger

	dummyOnce sync.Once
	dummy     string

	fakeOnce sync.Once
	fakeKey  []byte // keys the fake SCRAM salts of unknown users

	// scramNonce replaces the server nonce generator (tests: RFC 7677's
	// example exchange).
	scramNonce func() string

	bgMu      sync.Mutex
	bgRunning map[string]bool // accounts whose SCRAM secret is being saved
	bgIdle    chan struct{}   // closed when bgRunning becomes empty
}

// saveSCRAMTimeout bounds one background SaveSCRAM.
const saveSCRAMTimeout = time.Minute

func (a *Authenticator) lookup(ctx context.Context, user string) (Credentials, error) {
	if a.Credentials != nil {
		return a.Credentials(ctx, user)
	}
	if a.Lookup == nil {
		return Credentials{}, errors.New("auth: no account lookup configured")
	}
	name, hash, err := a.Lookup(ctx, user)
	return Credentials{Name: name, PasswordHash: hash}, err
}

// wait waits out the throttle delay of an attempt for user from remote.
func (a *Authenticator) wait(ctx context.Context, remote netip.Addr, user string) error {
	d := a.Throttle.Delay(remote, user)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Authenticate checks the credentials of a login attempt from remote. It
// returns the canonical account name, ErrInvalidCredentials, or another
// error when the check itself failed (the protocol should answer with a
// temporary failure then).
func (a *Authenticator) Authenticate(ctx context.Context, user, password string, remote netip.Addr) (string, error) {
	if err := a.wait(ctx, remote, user); err != nil {
		return "", err
	}
	if a.Throttle.IsBlocked(remote) {
		// The normal failure after the normal work (the result of the
		// check is ignored): a blocked client learns nothing, not even
		// that it is blocked (throttle.go).
		if cred, err := a.lookup(ctx, user); err == nil {
			VerifyPassword(cred.PasswordHash, password)
		} else {
			a.dummyOnce.Do(func() { a.dummy, _ = HashPassword("letterbox-dummy") })
			VerifyPassword(a.dummy, password)
		}
		a.Throttle.Blocked(remote, user)
		return "", ErrInvalidCredentials
	}
	cred, err := a.lookup(ctx, user)
	if errors.Is(err, ErrUnknownUser) {
		// Spend the same time as a real check so that timing does not
		// reveal which accounts exist.
		a.dummyOnce.Do(func() { a.dummy, _ = HashPassword("letterbox-dummy") })
		VerifyPassword(a.dummy, password)
		a.Throttle.Failure(remote, user)
		return "", ErrInvalidCredentials
	}
	if err != nil {
		return "", err
	}
	ok, err := VerifyPassword(cred.PasswordHash, password)
	if err != nil {
		return "", err
	}
	if !ok {
		a.Throttle.Failure(remote, user)
		return "", ErrInvalidCredentials
	}
	a.Throttle.Success(remote, user)
	if cred.SCRAMSHA256 == "" && a.SaveSCRAM != nil {
		a.saveSCRAM(cred.Name, cred.PasswordHash, password)
	}
	return cred.Name, nil
}

// saveSCRAM derives and stores a SCRAM secret for an account that has
// none, in the background; at most one per account at a time.
func (a *Authenticator) saveSCRAM(name, passwordHash, password string) {
	a.bgMu.Lock()
	if a.bgRunning[name] {
		a.bgMu.Unlock()
		return
	}
	if a.bgRunning == nil {
		a.bgRunning = make(map[string]bool)
	}
	if len(a.bgRunning) == 0 {
		a.bgIdle = make(chan struct{})
	}
	a.bgRunning[name] = true
	a.bgMu.Unlock()
	go func() {
		defer func() {
			a.bgMu.Lock()
			delete(a.bgRunning, name)
			if len(a.bgRunning) == 0 {
				close(a.bgIdle)
			}
			a.bgMu.Unlock()
		}()
		secret, err := NewSCRAMSecret(password)
		saved := false
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), saveSCRAMTimeout)
			saved, err = a.SaveSCRAM(ctx, name, passwordHash, secret)
			cancel()
		}
		switch {
		case err != nil:
			a.log().Warn("storing SCRAM-SHA-256 keys after password login failed", "user", name, "err", err)
		case saved:
			a.log().Info("SCRAM-SHA-256 keys stored after password login", "user", name)
		default:
			a.log().Info("SCRAM-SHA-256 keys not stored: password changed meanwhile", "user", name)
		}
	}()
}

// Wait waits until the background work started by earlier logins (SCRAM
// secrets being saved) has finished, or ctx is done. The server calls it
// before closing the store.
func (a *Authenticator) Wait(ctx context.Context) error {
	a.bgMu.Lock()
	if len(a.bgRunning) == 0 {
		a.bgMu.Unlock()
		return nil
	}
	idle := a.bgIdle
	a.bgMu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *Authenticator) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}
