package delivery

import (
	"errors"
	"fmt"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// Kind classifies a delivery failure. Each kind has one SMTP reply (code
// and RFC 3463 enhanced status code) and one sysexits(3) exit code, so that
// SMTP, LMTP and `letterbox deliver` report the same failure the same way.
type Kind int

const (
	// KindBadAddress: a recipient address is syntactically invalid.
	// 501 5.1.3, EX_DATAERR.
	KindBadAddress Kind = iota + 1
	// KindBadSender: the reverse path is syntactically invalid.
	// 501 5.1.7, EX_DATAERR.
	KindBadSender
	// KindRelayDenied: the recipient's domain is not local.
	// 554 5.7.1, EX_NOUSER.
	KindRelayDenied
	// KindNoSuchUser: the domain is local but there is no such account
	// (also when the account vanished between RCPT and delivery).
	// 550 5.1.1, EX_NOUSER.
	KindNoSuchUser
	// KindTooBig: the message is larger than Agent.MaxMessageSize.
	// 552 5.3.4, EX_DATAERR.
	KindTooBig
	// KindNotConfigured: postmaster@ a local domain was addressed but no
	// postmaster account exists (see Agent.Resolve). 451 4.3.5,
	// EX_TEMPFAIL: retried until an administrator creates the account.
	KindNotConfigured
	// KindTempFail: the store failed or the message could not be read;
	// the sender should retry. 451 4.3.0, EX_TEMPFAIL.
	KindTempFail
	// KindOverQuota: the recipient's account is over its quota and the
	// configuration rejects (over_quota = "reject", the default, as
	// Dovecot's quota_full_tempfail = no). 552 5.2.2 (RFC 3463 X.2.2
	// "mailbox full"), EX_NOPERM: what dovecot-lda -e exits with when it
	// rejects a mail for quota (src/lda/main.c).
	KindOverQuota
	// KindOverQuotaTemp: the same with over_quota = "defer" (Dovecot's
	// quota_full_tempfail = yes): 452 4.2.2, EX_TEMPFAIL.
	KindOverQuotaTemp
	// KindInsufficientStorage: the store's disk is full
	// (mailstore.InsufficientStorage: ENOSPC, EDQUOT, EFBIG, or the
	// database full); the sender should retry. 452 4.3.1 (RFC 5321
	// §4.2.3 "insufficient system storage", RFC 3463 X.3.1 "mail system
	// full", as Postfix answers when its queue file system is full),
	// EX_TEMPFAIL.
	KindInsufficientStorage
)

func (k Kind) String() string {
	switch k {
	case KindBadAddress:
		return "bad-address"
	case KindBadSender:
		return "bad-sender"
	case KindRelayDenied:
		return "relay-denied"
	case KindNoSuchUser:
		return "no-such-user"
	case KindTooBig:
		return "too-big"
	case KindNotConfigured:
		return "not-configured"
	case KindTempFail:
		return "temp-fail"
	case KindOverQuota:
		return "over-quota"
	case KindOverQuotaTemp:
		return "over-quota-temp"
	case KindInsufficientStorage:
		return "insufficient-storage"
	}
	return "unknown"
}

// sysexits(3) codes used by `letterbox deliver` (design.md §5).
const (
	ExitOK       = 0
	ExitDataErr  = 65 // EX_DATAERR
	ExitNoUser   = 67 // EX_NOUSER
	ExitTempFail = 75 // EX_TEMPFAIL
	ExitNoPerm   = 77 // EX_NOPERM: rejected over quota, as dovecot-lda -e
)

// ErrMessageTooLarge may be returned (wrapped) by the body reader given to
// Agent.Deliver, to say that a limit of the transport was exceeded; the
// delivery then fails with KindTooBig instead of KindTempFail.
var ErrMessageTooLarge = errors.New("message too large")

// Error is a delivery failure.
type Error struct {
	Kind    Kind
	Address string // the recipient (or sender) concerned, when there is one
	Msg     string // human-readable text for the SMTP reply, without codes
	Err     error  // underlying cause, if any
}

func (e *Error) Error() string {
	s := e.Kind.String() + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether the sender should retry later.
func (e *Error) Temporary() bool {
	return e.Kind == KindTempFail || e.Kind == KindNotConfigured || e.Kind == KindOverQuotaTemp ||
		e.Kind == KindInsufficientStorage
}

// SMTPStatus returns the SMTP reply code, the RFC 3463 enhanced status code
// and the reply text for the failure.
func (e *Error) SMTPStatus() (code int, enhanced [3]int, text string) {
	switch e.Kind {
	case KindBadAddress:
		code, enhanced = 501, [3]int{5, 1, 3}
	case KindBadSender:
		code, enhanced = 501, [3]int{5, 1, 7}
	case KindRelayDenied:
		code, enhanced = 554, [3]int{5, 7, 1}
	case KindNoSuchUser:
		code, enhanced = 550, [3]int{5, 1, 1}
	case KindTooBig:
		code, enhanced = 552, [3]int{5, 3, 4}
	case KindNotConfigured:
		code, enhanced = 451, [3]int{4, 3, 5}
	case KindOverQuota:
		code, enhanced = 552, [3]int{5, 2, 2}
	case KindOverQuotaTemp:
		code, enhanced = 452, [3]int{4, 2, 2}
	case KindInsufficientStorage:
		code, enhanced = 452, [3]int{4, 3, 1}
	default:
		code, enhanced = 451, [3]int{4, 3, 0}
	}
	return code, enhanced, e.Msg
}

// ExitCode returns the sysexits(3) code for the failure.
func (e *Error) ExitCode() int {
	switch e.Kind {
	case KindRelayDenied, KindNoSuchUser:
		return ExitNoUser
	case KindBadAddress, KindBadSender, KindTooBig:
		return ExitDataErr
	case KindOverQuota:
		return ExitNoPerm
	}
	return ExitTempFail
}

// ExitCode returns the exit code `letterbox deliver` uses for err: 0 for
// nil, the Error's code for an *Error, EX_TEMPFAIL for anything else (an
// unexpected failure is worth a retry, never a bounce).
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.ExitCode()
	}
	return ExitTempFail
}

// ExitCodeAll returns the exit code for a whole delivery: EX_TEMPFAIL if
// any recipient failed temporarily (the MTA retries; the recipients that
// succeeded get a duplicate rather than anyone losing the message),
// otherwise the code of the first failure, otherwise 0.
func ExitCodeAll(errs []error) int {
	code := ExitOK
	for _, err := range errs {
		c := ExitCode(err)
		if c == ExitTempFail {
			return c
		}
		if code == ExitOK {
			code = c
		}
	}
	return code
}

// tempFail is the error for a failure of the store (or of reading the
// message): KindTempFail, or KindInsufficientStorage when err says that the
// store is out of space.
func tempFail(addr string, err error, format string, args ...any) *Error {
	if mailstore.InsufficientStorage(err) {
		return &Error{Kind: KindInsufficientStorage, Address: addr,
			Msg: "Insufficient system storage, try again later", Err: err}
	}
	return &Error{Kind: KindTempFail, Address: addr, Msg: fmt.Sprintf(format, args...), Err: err}
}
