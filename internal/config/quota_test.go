package config

import (
	"errors"
	"testing"
)

func TestQuotaOverQuota(t *testing.T) {
	cases := []struct {
		name, text string
		want       string
		temporary  bool
	}{
		{"default", good, OverQuotaReject, false},
		{"reject", good + "\n[quota]\nover_quota = \"reject\"\n", OverQuotaReject, false},
		{"defer", good + "\n[quota]\nover_quota = \"defer\"\n", OverQuotaDefer, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("f.toml", []byte(tc.text))
			if err != nil {
				t.Fatal(err)
			}
			if c.Quota.OverQuota != tc.want || c.Quota.OverQuotaTemporary() != tc.temporary {
				t.Fatalf("over_quota = %q (temporary %v), want %q (%v)", c.Quota.OverQuota, c.Quota.OverQuotaTemporary(), tc.want, tc.temporary)
			}
		})
	}
	if Local().Quota.OverQuotaTemporary() {
		t.Fatal("local mode defers over-quota mail; want reject")
	}
	_, err := Parse("f.toml", []byte(good+"\n[quota]\nover_quota = \"bounce\"\n"))
	var ce *Error
	want := `f.toml: quota.over_quota: "bounce" is not one of "reject" (552 5.2.2, the default) or "defer" (452 4.2.2)`
	if !errors.As(err, &ce) || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	_, err = Parse("f.toml", []byte(good+"\n[quota]\nfull = \"defer\"\n"))
	if want := "f.toml: quota.full: unknown key (see docs/configuration.md)"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}
