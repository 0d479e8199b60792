package mailstore

import (
	"context"
	"time"
)

// Transfer is implemented by backends that can take part in `letterbox
// store copy`, which moves a whole store to another backend (embedded to
// PostgreSQL and back) without IMAP clients having to resynchronise and
// without POP3 UIDLs changing: UIDVALIDITY, UIDs, UIDNEXT, MODSEQs,
// HIGHESTMODSEQ, flags, dates, subscriptions, credentials, quotas and the
// expunge log (QRESYNC VANISHED) are preserved exactly.
//
// Reading the source uses the ordinary Store methods (Accounts, Mailboxes,
// Messages, OpenBlob) plus ExpungeLog; writing the destination uses the
// Import methods, which bypass the allocation rules of normal operation (a
// normal Append always allocates the next UID and MODSEQ) and therefore
// refuse to touch anything that already exists. They publish no
// notifications: a store is copied while no server uses the destination.
type Transfer interface {
	// ExpungeLog returns the expunge log of a mailbox (UID and the MODSEQ
	// of its removal), ascending by UID.
	ExpungeLog(ctx context.Context, mailboxID int64) ([]Expunged, error)

	// ImportAccount creates an account with the name, password hash,
	// SCRAM secret, creation time and quotas of a; the ID is the
	// destination's. Unlike CreateAccount it creates no mailboxes.
	// ErrAccountExists if the name is taken.
	ImportAccount(ctx context.Context, a Account) (Account, error)
	// ImportMailbox creates an empty mailbox of the account with the
	// name, special use, subscription, UIDVALIDITY, UIDNEXT and
	// HIGHESTMODSEQ of mb (its ID and counters are ignored), and makes
	// sure that no mailbox created later in the destination gets a
	// UIDVALIDITY at or below mb.UIDValidity. ErrMailboxExists if the
	// name is taken.
	ImportMailbox(ctx context.Context, accountID int64, mb Mailbox) (Mailbox, error)
	// ImportMessages adds messages with exactly the given UID, MODSEQ,
	// flags, internal date and save date (the spool holds the body) to a
	// mailbox made by ImportMailbox, keeping the mailbox's counters
	// (messages, unseen, size) exact; UIDNEXT and HIGHESTMODSEQ are not
	// changed, so every UID must be below UIDNEXT and every MODSEQ at
	// most HIGHESTMODSEQ (ErrNotAllowed otherwise, and for a UID that is
	// already present). Quotas are not enforced (the source already held
	// the messages). It consumes every spool, also on failure; on failure
	// nothing of the call was added.
	ImportMessages(ctx context.Context, mailboxID int64, msgs []ImportMessage) error
	// ImportExpunged adds entries to a mailbox's expunge log, with the
	// same rules on UIDs and MODSEQs as ImportMessages.
	ImportExpunged(ctx context.Context, mailboxID int64, log []Expunged) error
}

// Expunged is one entry of a mailbox's expunge log.
type Expunged struct {
	UID    UID
	ModSeq uint64
}

// ImportMessage is one message of Transfer.ImportMessages.
type ImportMessage struct {
	Spool        Spool
	UID          UID
	ModSeq       uint64
	Flags        []string
	InternalDate time.Time
	SaveDate     time.Time
}
