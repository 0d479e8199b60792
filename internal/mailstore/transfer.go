package mailstore

import (
	"context"
	"fmt"
	"math"
	"slices"
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

// CheckImport checks what can be checked of an ImportMessages call without
// the store: a spool for every message, valid flags (returned canonical,
// per message), dates that are set and storable (StorableTime), and the
// UIDs and MODSEQs (CheckImportEntries, with the entries returned for
// CheckImportBounds). Backends call it before they touch anything.
func CheckImport(msgs []ImportMessage) (flags [][]string, entries []Expunged, err error) {
	flags = make([][]string, len(msgs))
	entries = make([]Expunged, len(msgs))
	for i, m := range msgs {
		if m.Spool == nil {
			return nil, nil, fmt.Errorf("%w: import: message %d: nil spool", ErrNotAllowed, i+1)
		}
		f, err := CanonicalFlags(m.Flags)
		if err != nil {
			return nil, nil, fmt.Errorf("import: UID %d: %w", m.UID, err)
		}
		flags[i] = f
		for _, d := range []struct {
			what string
			t    time.Time
		}{{"internal date", m.InternalDate}, {"save date", m.SaveDate}} {
			if d.t.IsZero() || !StorableTime(d.t) {
				return nil, nil, fmt.Errorf("%w: import: UID %d: %s %v cannot be stored", ErrNotAllowed, m.UID, d.what, d.t)
			}
		}
		entries[i] = Expunged{UID: m.UID, ModSeq: m.ModSeq}
	}
	if err := CheckImportEntries(entries); err != nil {
		return nil, nil, err
	}
	return flags, entries, nil
}

// CheckImportEntries checks imported UIDs and MODSEQs without the
// mailbox: no zero UID or MODSEQ, MODSEQs that fit a signed 64-bit column,
// no UID twice in one call.
func CheckImportEntries(es []Expunged) error {
	uids := make([]UID, len(es))
	for i, e := range es {
		switch {
		case e.UID == 0:
			return fmt.Errorf("%w: import: UID 0", ErrNotAllowed)
		case e.ModSeq == 0:
			return fmt.Errorf("%w: import: UID %d: MODSEQ 0", ErrNotAllowed, e.UID)
		case e.ModSeq > math.MaxInt64:
			return fmt.Errorf("%w: import: UID %d: MODSEQ %d too large", ErrNotAllowed, e.UID, e.ModSeq)
		}
		uids[i] = e.UID
	}
	slices.Sort(uids)
	for i := 1; i < len(uids); i++ {
		if uids[i] == uids[i-1] {
			return fmt.Errorf("%w: import: UID %d given twice", ErrNotAllowed, uids[i])
		}
	}
	return nil
}

// CheckImportBounds checks imported UIDs and MODSEQs against the mailbox
// they go into (read in the importing transaction): each UID below
// UIDNEXT, each MODSEQ at most HIGHESTMODSEQ. That a UID is not already
// present is the backend's check.
func CheckImportBounds(mb *Mailbox, es []Expunged) error {
	for _, e := range es {
		if e.UID >= mb.UIDNext {
			return fmt.Errorf("%w: import into %q: UID %d is not below UIDNEXT %d", ErrNotAllowed, mb.Name, e.UID, mb.UIDNext)
		}
		if e.ModSeq > mb.HighestModSeq {
			return fmt.Errorf("%w: import into %q: UID %d: MODSEQ %d is above HIGHESTMODSEQ %d",
				ErrNotAllowed, mb.Name, e.UID, e.ModSeq, mb.HighestModSeq)
		}
	}
	return nil
}

// StorableTime reports whether t survives the backends' stored form of
// times (Unix nanoseconds in a signed 64-bit column: the years 1678 to
// 2262).
func StorableTime(t time.Time) bool {
	return !t.Before(time.Unix(0, math.MinInt64)) && !t.After(time.Unix(0, math.MaxInt64))
}
