// Package auth verifies credentials: argon2id password hashes, the login
// throttle that slows brute-force attempts, and the Authenticator that ties
// them to an account lookup. It knows nothing about storage or protocols:
// the server wires a lookup function in, and protocol packages call
// Authenticator.Authenticate.
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id cost parameters. They are stored inside every hash, so
// changing the defaults affects only hashes made afterwards.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
	KeyLen  uint32
	SaltLen uint32
}

// DefaultParams are OWASP's first recommended argon2id configuration
// (46 MiB, 1 pass, 1 lane): about 35 ms of one core per login here. A mail
// server verifies a password at every POP3/IMAP login, often every few
// minutes per device, on machines with few cores; RFC 9106's 64 MiB / 3
// passes / 4 lanes cost 200 ms of both cores on the reference machine,
// which made logins a cheap way to exhaust the CPU. Memory, not passes,
// is what resists GPU guessing, so the memory stays high.
var DefaultParams = Params{Memory: 46 * 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

// ErrMalformedHash is returned for a stored hash that cannot be parsed.
var ErrMalformedHash = errors.New("auth: malformed password hash")

// hashSlots bounds concurrent argon2 computations: each costs Params.Memory
// of RAM, so an attacker opening many connections must not be able to make
// the server allocate without bound.
var hashSlots = make(chan struct{}, max(2, runtime.NumCPU()))

// HashPassword returns an argon2id hash in the PHC string format
// ($argon2id$v=19$m=...,t=...,p=...$salt$key).
func HashPassword(password string) (string, error) {
	return hashWith(password, DefaultParams)
}

func hashWith(password string, p Params) (string, error) {
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := derive(password, salt, p)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

func derive(password string, salt []byte, p Params) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	return argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
}

// VerifyPassword reports whether password matches the PHC-format hash.
func VerifyPassword(hash, password string) (bool, error) {
	p, salt, key, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	got := derive(password, salt, p)
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

func parseHash(hash string) (Params, []byte, []byte, error) {
	var p Params
	f := strings.Split(hash, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return p, nil, nil, ErrMalformedHash
	}
	var v int
	if _, err := fmt.Sscanf(f[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, ErrMalformedHash
	}
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, ErrMalformedHash
	}
	// Refuse absurd parameters from a corrupted store rather than
	// allocating gigabytes or spinning for minutes.
	if p.Memory < 8 || p.Memory > 4<<20 || p.Time < 1 || p.Time > 100 || p.Threads < 1 {
		return p, nil, nil, ErrMalformedHash
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(f[4])
	key, err2 := enc.DecodeString(f[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 || len(key) > 128 {
		return p, nil, nil, ErrMalformedHash
	}
	p.KeyLen = uint32(len(key))
	p.SaltLen = uint32(len(salt))
	return p, salt, key, nil
}
