package config

// Quota configures how deliveries to an account over its storage quota are
// answered. The limits themselves are per account, in the store
// (`letterbox user quota`).
type Quota struct {
	// OverQuota is "reject" (default: 552 5.2.2 to SMTP/LMTP, exit 77
	// EX_NOPERM from `letterbox deliver`, like Dovecot's default
	// quota_full_tempfail = no) or "defer" (452 4.2.2, exit 75
	// EX_TEMPFAIL: the sending MTA retries, like quota_full_tempfail =
	// yes).
	OverQuota string `toml:"over_quota"`
}

// Over-quota policies (Quota.OverQuota).
const (
	OverQuotaReject = "reject"
	OverQuotaDefer  = "defer"
)

// OverQuotaTemporary reports whether over-quota recipients get a temporary
// failure ("defer").
func (q Quota) OverQuotaTemporary() bool { return q.OverQuota == OverQuotaDefer }

func (c *Config) validateQuota() error {
	switch c.Quota.OverQuota {
	case "":
		c.Quota.OverQuota = OverQuotaReject
	case OverQuotaReject, OverQuotaDefer:
	default:
		return c.fail("quota.over_quota", "%q is not one of %q (552 5.2.2, the default) or %q (452 4.2.2)",
			c.Quota.OverQuota, OverQuotaReject, OverQuotaDefer)
	}
	return nil
}
