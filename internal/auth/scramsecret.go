package auth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xdg-go/stringprep"
)

// SCRAMIterations is the PBKDF2 iteration count ("i", RFC 5802 §5.1) of
// new SCRAM-SHA-256 secrets. RFC 7677 §4 asks for at least 4096, which is
// what Dovecot (AUTH_SCRAM_DEFAULT_ITERATE_COUNT), mox and PostgreSQL
// (scram_iterations) use; MongoDB uses 15000 for SCRAM-SHA-256.
//
// Letterbox uses more because of what the secret sits next to: an
// attacker with a copy of the database attacks whichever stored verifier
// is cheaper, and PBKDF2 has no memory cost, so the SCRAM secret, not the
// argon2id hash, sets the price of offline guessing; every factor in the
// count divides that guessing rate by the same factor. The cost is paid by
// the client, once per login (the server never runs PBKDF2 at a login, it
// stores StoredKey and ServerKey): about 13 ms of one core in Go's
// crypto/pbkdf2 on the reference machine.
//
// It is not higher because clients cap it: Cyrus SASL's SCRAM plugin
// (used by mbsync, mutt and others) refuses a count above
// MAX_ITERATION_COUNTER = 0x10000 with "iteration-count is too big,
// refusing to compute" (found by the mbsync end-to-end test with 100,000).
// 65536 is the highest count those clients accept: 16 times RFC 7677's
// minimum. The count is stored in every secret, so changing it affects
// only secrets made afterwards.
const SCRAMIterations = 65536

// Bounds accepted when a stored secret is parsed. The lower bound is RFC
// 7677's minimum; the upper bound keeps a corrupted value from making
// clients spin for minutes.
const (
	minSCRAMIterations = 4096
	maxSCRAMIterations = 10_000_000
)

// scramSaltLen is the salt length of new secrets: 16 random octets, as
// PostgreSQL uses (RFC 5802 leaves the length to the server).
const scramSaltLen = 16

// scramSecretPrefix starts the encoding of a SCRAM-SHA-256 secret.
const scramSecretPrefix = "SCRAM-SHA-256$"

// ErrMalformedSCRAMSecret is returned for a stored SCRAM secret that cannot
// be parsed.
var ErrMalformedSCRAMSecret = errors.New("auth: malformed SCRAM-SHA-256 secret")

// scramSecret is a parsed SCRAM-SHA-256 secret: what RFC 5802 §3 says a
// server stores, never the password or the salted password (either of
// which would let its holder log in without knowing the password).
type scramSecret struct {
	iters     int
	salt      []byte
	storedKey []byte // H(ClientKey)
	serverKey []byte // HMAC(SaltedPassword, "Server Key")
}

// NewSCRAMSecret derives the SCRAM-SHA-256 secret of password with a fresh
// random salt and SCRAMIterations, and returns its encoding:
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// (base64 with padding, RFC 4648 §4), the format PostgreSQL keeps in
// pg_authid.rolpassword. It holds the salt, the iteration count, StoredKey
// and ServerKey of RFC 5802 §3; a password cannot be read back from it.
func NewSCRAMSecret(password string) (string, error) {
	return newSCRAMSecretWith(password, SCRAMIterations)
}

func newSCRAMSecretWith(password string, iters int) (string, error) {
	salt := make([]byte, scramSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	sec, err := deriveSCRAM(password, salt, iters)
	if err != nil {
		return "", err
	}
	return sec.String(), nil
}

// scramPrepare is RFC 5802 §2.2 Normalize(): SASLprep (RFC 4013) with the
// password treated as a stored string, which is what clients apply before
// hashing (xdg-go/scram and Cyrus SASL do; mox uses the PRECIS successor,
// RFC 8265, and falls back the same way). A password SASLprep rejects (a
// code point unassigned in Unicode 3.2, a control character) is used
// unchanged: a client that prepares cannot use SCRAM with it against any
// server, a client that does not prepare still can.
func scramPrepare(password string) string {
	if p, err := stringprep.SASLprep.Prepare(password); err == nil {
		return p
	}
	return password
}

// deriveSCRAM computes the keys of RFC 5802 §3 with H = SHA-256:
//
//	SaltedPassword = Hi(Normalize(password), salt, i)   (PBKDF2-HMAC-SHA-256)
//	ClientKey      = HMAC(SaltedPassword, "Client Key")
//	StoredKey      = H(ClientKey)
//	ServerKey      = HMAC(SaltedPassword, "Server Key")
func deriveSCRAM(password string, salt []byte, iters int) (scramSecret, error) {
	salted, err := pbkdf2.Key(sha256.New, scramPrepare(password), salt, iters, sha256.Size)
	if err != nil {
		return scramSecret{}, err
	}
	clientKey := hmacSHA256(salted, "Client Key")
	stored := sha256.Sum256(clientKey)
	return scramSecret{iters: iters, salt: salt, storedKey: stored[:], serverKey: hmacSHA256(salted, "Server Key")}, nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// String is the stored encoding (NewSCRAMSecret).
func (s scramSecret) String() string {
	enc := base64.StdEncoding
	return fmt.Sprintf("%s%d:%s$%s:%s", scramSecretPrefix, s.iters, enc.EncodeToString(s.salt),
		enc.EncodeToString(s.storedKey), enc.EncodeToString(s.serverKey))
}

// parseSCRAMSecret parses the encoding of NewSCRAMSecret.
func parseSCRAMSecret(s string) (scramSecret, error) {
	var sec scramSecret
	rest, ok := strings.CutPrefix(s, scramSecretPrefix)
	if !ok {
		return sec, ErrMalformedSCRAMSecret
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return sec, ErrMalformedSCRAMSecret
	}
	iters, salt, ok1 := strings.Cut(params, ":")
	stored, server, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return sec, ErrMalformedSCRAMSecret
	}
	n, err := strconv.Atoi(iters)
	if err != nil || n < minSCRAMIterations || n > maxSCRAMIterations || iters != strconv.Itoa(n) {
		return sec, ErrMalformedSCRAMSecret
	}
	enc := base64.StdEncoding.Strict()
	sec.iters = n
	var err1, err2, err3 error
	sec.salt, err1 = enc.DecodeString(salt)
	sec.storedKey, err2 = enc.DecodeString(stored)
	sec.serverKey, err3 = enc.DecodeString(server)
	if err1 != nil || err2 != nil || err3 != nil || len(sec.salt) < 8 || len(sec.salt) > 64 ||
		len(sec.storedKey) != sha256.Size || len(sec.serverKey) != sha256.Size {
		return scramSecret{}, ErrMalformedSCRAMSecret
	}
	return sec, nil
}

// CheckSCRAMSecret reports whether secret is a well-formed SCRAM-SHA-256
// secret and, if so, whether it was derived from password. It is for
// tests and operators' checks; logins never need it.
func CheckSCRAMSecret(secret, password string) (bool, error) {
	sec, err := parseSCRAMSecret(secret)
	if err != nil {
		return false, err
	}
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	got, err := deriveSCRAM(password, sec.salt, sec.iters)
	if err != nil {
		return false, err
	}
	return hmac.Equal(got.storedKey, sec.storedKey) && hmac.Equal(got.serverKey, sec.serverKey), nil
}
