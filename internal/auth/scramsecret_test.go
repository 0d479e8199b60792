package auth

import (
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

func TestNewSCRAMSecret(t *testing.T) {
	s1, err := NewSCRAMSecret("pencil")
	if err != nil {
		t.Fatal(err)
	}
	// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>: 16
	// octets of salt and two SHA-256 outputs in padded base64.
	re := regexp.MustCompile(`^SCRAM-SHA-256\$65536:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$`)
	if !re.MatchString(s1) {
		t.Fatalf("secret %q does not have the documented form", s1)
	}
	if strings.Contains(s1, "pencil") {
		t.Fatal("secret contains the password")
	}
	if ok, err := CheckSCRAMSecret(s1, "pencil"); !ok || err != nil {
		t.Fatalf("CheckSCRAMSecret = %v, %v", ok, err)
	}
	// (Cheaper secrets from here on: the derivation is the same.)
	s2, _ := newSCRAMSecretWith("pencil", testSCRAMIters)
	if s1[len("SCRAM-SHA-256$65536:"):][:24] == s2[len("SCRAM-SHA-256$4096:"):][:24] {
		t.Fatal("two secrets of one password share a salt")
	}
	for pw, want := range map[string]bool{"pencil": true, "Pencil": false, "pencil ": false, "": false} {
		if ok, err := CheckSCRAMSecret(s2, pw); ok != want || err != nil {
			t.Errorf("CheckSCRAMSecret(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	// The stored keys are what xdg-go/scram's client derives (RFC 5802
	// §3), so a standard client's proof verifies against them.
	sec, err := parseSCRAMSecret(s1)
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := scram.SHA256.NewClient("u", "pencil", "")
	want, err := cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(sec.salt), Iters: sec.iters})
	if err != nil {
		t.Fatal(err)
	}
	if string(want.StoredKey) != string(sec.storedKey) || string(want.ServerKey) != string(sec.serverKey) {
		t.Fatal("stored keys differ from the client's derivation")
	}
	if sec.String() != s1 {
		t.Fatalf("re-encoding %q != %q", sec.String(), s1)
	}
}

// Passwords are prepared with SASLprep (RFC 4013) as clients do: a
// non-ASCII space maps to SPACE, a soft hyphen maps to nothing.
func TestSCRAMSecretSASLprep(t *testing.T) {
	sec, err := newSCRAMSecretWith("my\u00a0pass\u00adword", testSCRAMIters)
	if err != nil {
		t.Fatal(err)
	}
	for pw, want := range map[string]bool{"my password": true, "my\u00a0pass\u00adword": true, "my\u00a0password": true, "mypassword": false} {
		if ok, _ := CheckSCRAMSecret(sec, pw); ok != want {
			t.Errorf("CheckSCRAMSecret(%q) = %v, want %v", pw, ok, want)
		}
	}
	// A password SASLprep rejects (a control character) is used as is.
	sec, _ = newSCRAMSecretWith("a\u0007b", testSCRAMIters)
	if ok, _ := CheckSCRAMSecret(sec, "a\u0007b"); !ok {
		t.Error("unpreparable password does not match itself")
	}
}

func TestParseSCRAMSecretMalformed(t *testing.T) {
	salt := base64.StdEncoding.EncodeToString(make([]byte, 16))
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	good := "SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + key
	if _, err := parseSCRAMSecret(good); err != nil {
		t.Fatalf("good secret: %v", err)
	}
	for _, s := range []string{
		"", "plain", "SCRAM-SHA-1$4096:" + salt + "$" + key + ":" + key,
		"SCRAM-SHA-256$4095:" + salt + "$" + key + ":" + key,                     // below RFC 7677's minimum
		"SCRAM-SHA-256$10000001:" + salt + "$" + key + ":" + key,                 // absurd
		"SCRAM-SHA-256$04096:" + salt + "$" + key + ":" + key,                    // not canonical
		"SCRAM-SHA-256$+4096:" + salt + "$" + key + ":" + key,                    // not canonical
		"SCRAM-SHA-256$4096:" + salt + "$" + key,                                 // one key
		"SCRAM-SHA-256$4096$" + key + ":" + key,                                  // no salt
		"SCRAM-SHA-256$4096:" + "AAAA" + "$" + key + ":" + key,                   // salt too short
		"SCRAM-SHA-256$4096:" + salt + "$" + salt + ":" + key,                    // key too short
		"SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + key + "$",               // trailing field
		"SCRAM-SHA-256$4096:" + salt[:len(salt)-2] + "$" + key + ":" + key,       // unpadded
		"SCRAM-SHA-256$4096:" + salt + "$" + key + ":" + key[:len(key)-2] + "B=", // non-zero padding bits
	} {
		if _, err := parseSCRAMSecret(s); !errors.Is(err, ErrMalformedSCRAMSecret) {
			t.Errorf("parseSCRAMSecret(%q) = %v, want ErrMalformedSCRAMSecret", s, err)
		}
	}
}
