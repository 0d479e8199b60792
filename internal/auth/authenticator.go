package auth

import (
	"context"
	"errors"
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

// Authenticator checks username/password pairs for every protocol, applying
// the shared Throttle.
type Authenticator struct {
	Lookup   LookupFunc
	Throttle *Throttle

	dummyOnce sync.Once
	dummy     string
}

// Authenticate checks the credentials of a login attempt from remote. It
// returns the canonical account name, ErrInvalidCredentials, or another
// error when the check itself failed (the protocol should answer with a
// temporary failure then).
func (a *Authenticator) Authenticate(ctx context.Context, user, password string, remote netip.Addr) (string, error) {
	if d := a.Throttle.Delay(remote, user); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		}
	}
	canonical, hash, err := a.Lookup(ctx, user)
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
	ok, err := VerifyPassword(hash, password)
	if err != nil {
		return "", err
	}
	if !ok {
		a.Throttle.Failure(remote, user)
		return "", ErrInvalidCredentials
	}
	a.Throttle.Success(remote, user)
	return canonical, nil
}
