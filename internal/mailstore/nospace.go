package mailstore

import (
	"errors"
	"syscall"
)

// ErrInsufficientStorage is wrapped by the errors of a Store whose own
// storage is full: its database engine reports that the database or the
// disk is full. Nothing was changed, and the same call can succeed once
// space is freed. It is not ErrOverQuota: the account's quota is not what
// failed, the server's storage is.
var ErrInsufficientStorage = errors.New("mailstore: insufficient storage")

// InsufficientStorage reports whether err means that the store ran out of
// space: it wraps ErrInsufficientStorage, or the file system's ENOSPC (no
// space left on the device), EDQUOT (the server's disk quota) or EFBIG (a
// file would exceed the size the file system or the process's RLIMIT_FSIZE
// allows), as a Spool reports a failed write of its file. Such a failure is
// temporary: SMTP answers 452 4.3.1 (RFC 5321 §4.2.3 "insufficient system
// storage", RFC 3463 X.3.1 "Mail system full"), IMAP NO [UNAVAILABLE].
func InsufficientStorage(err error) bool {
	return errors.Is(err, ErrInsufficientStorage) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}
