package auth

import (
	"context"
	"errors"
	"testing"
)

// FuzzSASL runs arbitrary client input through the server side of every
// mechanism: the initial response and up to three response lines, as sent
// (base64 or not). The exchange must end without panicking, and succeed
// only for the one real account; a success names it and only a success
// does. Seeds: testdata/fuzz/FuzzSASL (valid, truncated and corrupted
// messages of each mechanism).
func FuzzSASL(f *testing.F) {
	f.Add(uint8(0), true, b64("\x00alice@example.org\x00pencil"), "", "", "")
	f.Add(uint8(1), false, "", b64("alice@example.org"), b64("pencil"), "")
	f.Add(uint8(2), true, b64("n,,n=alice@example.org,r=abcdefgh"), b64("c=biws,r=abcdefgh,p=AAAA"), "", "")
	f.Add(uint8(3), true, b64("p=tls-exporter,,n=alice@example.org,r=abcdefgh"), b64("c=cD10bHMtZXhwb3J0ZXIsLA==,r=x,p=AAAA"), "", "")
	a, _ := newTestAuth(f)
	a.Throttle = nil
	// Unknown users cost a dummy argon2 check; keep it cheap here.
	a.dummyOnce.Do(func() { a.dummy, _ = hashWith("letterbox-dummy", fastParams) })
	mechs := []string{MechPlain, MechLogin, MechSCRAMSHA256, MechSCRAMSHA256Plus, "X"}
	f.Fuzz(func(t *testing.T, mech uint8, haveIR bool, ir, l1, l2, l3 string) {
		lines := []string{l1, l2, l3}
		tr := &clientTransport{respond: func([]byte) (string, error) {
			if len(lines) == 0 {
				return "", errExhausted
			}
			l := lines[0]
			lines = lines[1:]
			return l, nil
		}}
		var initial *string
		if haveIR {
			initial = &ir
		}
		c := Conn{Remote: remoteIP, PlaintextOK: mech&0x80 == 0, Bindings: testBindings}
		res, err := a.Run(context.Background(), c, mechs[int(mech&0x7f)%len(mechs)], initial, tr)
		if (err == nil) != (res.Name != "") {
			t.Fatalf("result %+v with error %v", res, err)
		}
		if err == nil && res.Name != "alice@example.org" && res.Name != "old@example.org" {
			t.Fatalf("success for %q", res.Name)
		}
		if err == nil && res.Name == "old@example.org" && (res.Mech == MechSCRAMSHA256 || res.Mech == MechSCRAMSHA256Plus) {
			t.Fatal("SCRAM success for an account without SCRAM keys")
		}
	})
}

var errExhausted = errors.New("script exhausted")
