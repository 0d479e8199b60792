package delivery

import (
	"context"
	"fmt"
)

// Quota. The store decides: mailstore.Store.Deliver refuses a recipient
// whose account has no room for the message (mailstore.Usage.Allows)
// inside the transaction that would add the copy, so concurrent deliveries
// cannot overshoot a limit. The agent only maps that refusal to a reply
// (overQuota) and, at RCPT time, answers early for an account that is
// already full (CheckQuota), as Dovecot's lmtp_rcpt_check_quota does, so
// that an MX does not accept a message it must then refuse for one of its
// recipients.
//
// The reply follows Dovecot's quota_full_tempfail: permanent by default
// (552 5.2.2; a bounce tells the sender at once), temporary when
// OverQuotaTemporary is set (452 4.2.2; the sending MTA retries until the
// user makes room or the message expires from its queue). RFC 3463 X.2.2
// is "mailbox full". A 552 to RCPT is what RFC 5321 §4.3.2 allows for RCPT;
// note that §4.5.3.1.10 tells clients to treat a 552 to RCPT as temporary
// (it was once used for "too many recipients"), so some MTAs retry it.

// overQuota is the error for a recipient refused for quota. The text does
// not repeat the address: a reply to RCPT concerns that RCPT, and go-smtp
// prefixes each LMTP per-recipient reply with "<address> " itself.
func (a *Agent) overQuota(addr string, err error) *Error {
	if a.OverQuotaTemporary {
		return &Error{Kind: KindOverQuotaTemp, Address: addr,
			Msg: "Mailbox is full (quota exceeded), try again later", Err: err}
	}
	return &Error{Kind: KindOverQuota, Address: addr, Msg: "Mailbox is full (quota exceeded)", Err: err}
}

// CheckQuota answers, before the message is received, whether r's account
// has room for a message of size octets (the RFC 1870 SIZE the client
// declared, 0 when unknown; a message is never smaller than one octet, so
// a full account is refused whatever the size). It returns nil when the
// message may fit or when the usage cannot be read: the store's check at
// delivery is the one that counts, this one only answers early.
func (a *Agent) CheckQuota(ctx context.Context, r Recipient, size int64) error {
	u, err := a.Store.Usage(ctx, r.AccountID)
	if err != nil || !u.Limited() {
		return nil
	}
	if u.Allows(max(size, 1), 1) {
		return nil
	}
	return a.overQuota(r.Address.String(), fmt.Errorf("account %s uses %d of %d octets and %d of %d messages",
		r.Account, u.Bytes, u.QuotaBytes, u.Messages, u.QuotaMessages))
}
