// Package mailstore is Letterbox's mailbox model: accounts, mailboxes,
// messages with UIDs, flags and MODSEQs, the expunge log, message bodies
// (blobs) and change notifications.
//
// It exists so that the protocol front ends (smtp, pop3, imap) share one
// definition of what a mailbox is, and so that storage engines (the embedded
// SQLite backend, later PostgreSQL) are interchangeable: protocol code talks
// only to the Store interface below, and every backend passes the same
// conformance suite in mailstore/storetest.
//
// Durability contract (design.md §4): every method that changes state
// returns only after the change is durable (blob bytes and directory entry
// fsynced, metadata committed with fsync). A crash at any instant leaves
// either the old or the new state.
package mailstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/letterbox/letterbox/internal/message"
)

// UID is an IMAP unique identifier: strictly ascending within a mailbox and
// never reused for the mailbox's UIDVALIDITY.
type UID uint32

// Errors returned by Store implementations. Callers test with errors.Is.
var (
	ErrNoSuchAccount = errors.New("mailstore: no such account")
	ErrAccountExists = errors.New("mailstore: account already exists")
	ErrNoSuchMailbox = errors.New("mailstore: no such mailbox")
	ErrMailboxExists = errors.New("mailstore: mailbox already exists")
	ErrNoSuchMessage = errors.New("mailstore: no such message")
	// ErrInvalidName is returned for mailbox or account names that cannot
	// be stored (empty, invalid UTF-8, NUL bytes, empty hierarchy levels).
	ErrInvalidName = errors.New("mailstore: invalid name")
	// ErrNotAllowed is returned for operations the model forbids, such as
	// deleting INBOX.
	ErrNotAllowed = errors.New("mailstore: operation not allowed")
	// ErrLocked is returned by LockMailbox when another session holds the
	// exclusive lock (POP3's [IN-USE]).
	ErrLocked = errors.New("mailstore: mailbox is locked by another session")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("mailstore: store is closed")
	// ErrOverQuota is returned when a change would take an account over
	// its quota (see Usage.Allows); nothing was changed.
	ErrOverQuota = errors.New("mailstore: over quota")
)

// System flags (RFC 3501 §2.3.2). Keywords are any other atom.
const (
	FlagSeen     = `\Seen`
	FlagAnswered = `\Answered`
	FlagFlagged  = `\Flagged`
	FlagDeleted  = `\Deleted`
	FlagDraft    = `\Draft`
)

// Special-use attributes (RFC 6154).
const (
	SpecialSent    = `\Sent`
	SpecialDrafts  = `\Drafts`
	SpecialTrash   = `\Trash`
	SpecialJunk    = `\Junk`
	SpecialArchive = `\Archive`
)

// Inbox is the canonical name of the INBOX mailbox. The name is
// case-insensitive (RFC 3501 §5.1); stores canonicalise it.
const Inbox = "INBOX"

// HierarchySeparator separates levels of mailbox names.
const HierarchySeparator = '/'

// DefaultMailboxes are created with every new account, in this order.
var DefaultMailboxes = []struct{ Name, SpecialUse string }{
	{Inbox, ""},
	{"Sent", SpecialSent},
	{"Drafts", SpecialDrafts},
	{"Trash", SpecialTrash},
	{"Junk", SpecialJunk},
	{"Archive", SpecialArchive},
}

// Account is a user of the server. Name is the login name: the full address,
// lower-cased.
type Account struct {
	ID           int64
	Name         string
	PasswordHash string // opaque to the store; see package auth
	// SCRAMSHA256 is the account's SCRAM-SHA-256 secret (salt, iteration
	// count, StoredKey, ServerKey; never the password), opaque to the
	// store, see auth.NewSCRAMSecret; "" when the account has none.
	SCRAMSHA256 string
	Created     time.Time
	// Quota limits of the account: octets and messages, summed over all
	// its mailboxes; 0 means no limit. See Usage.Allows for the rule.
	QuotaBytes    int64
	QuotaMessages int64
}

// Usage is an account's storage use and its quota, read from one snapshot
// (Store.Usage). Bytes is the sum of the sizes (Message.Size, as IMAP
// RFC822.SIZE reports) of every message in every mailbox of the account:
// each copy counts, also when copies share a blob. Messages counts every
// message of every mailbox. Both are exact.
type Usage struct {
	Bytes, Messages           int64
	QuotaBytes, QuotaMessages int64 // 0: no limit
}

// Allows reports whether the account may grow by bytes octets and messages
// messages: a change is refused when QuotaBytes > 0 and Bytes+bytes >
// QuotaBytes, or when QuotaMessages > 0 and Messages+messages >
// QuotaMessages. So usage may reach a limit exactly, never pass it; a
// change that does not grow a resource (bytes or messages <= 0, such as a
// move within the account) is never refused for it, even when usage is
// above a limit that was lowered.
func (u Usage) Allows(bytes, messages int64) bool {
	if bytes > 0 && u.QuotaBytes > 0 && u.Bytes+bytes > u.QuotaBytes {
		return false
	}
	if messages > 0 && u.QuotaMessages > 0 && u.Messages+messages > u.QuotaMessages {
		return false
	}
	return true
}

// Limited reports whether the account has any quota limit.
func (u Usage) Limited() bool { return u.QuotaBytes > 0 || u.QuotaMessages > 0 }

// Mailbox is one folder of an account, with counters kept exact by the
// store.
type Mailbox struct {
	ID            int64
	AccountID     int64
	Name          string
	SpecialUse    string // "" or one of the Special* constants
	Subscribed    bool
	UIDValidity   uint32
	UIDNext       UID
	HighestModSeq uint64
	Messages      uint32 // number of messages
	Unseen        uint32 // messages without \Seen
	Size          int64  // sum of message sizes in octets
}

// Message is one message in one mailbox. Copies in other mailboxes are other
// Messages sharing a BlobID.
type Message struct {
	UID          UID
	ModSeq       uint64
	Flags        []string // sorted, deduplicated; system flags with backslash
	InternalDate time.Time
	SaveDate     time.Time
	Size         int64 // octets of the blob, CRLF line endings
	BlobID       string
}

// HasFlag reports whether m carries flag (case-insensitive, RFC 3501 §2.3.2).
func (m *Message) HasFlag(flag string) bool {
	for _, f := range m.Flags {
		if strings.EqualFold(f, flag) {
			return true
		}
	}
	return false
}

// UIDRange is an inclusive range of UIDs, Min <= Max for a non-empty range
// (see Store.MessagesInRanges).
type UIDRange struct{ Min, Max UID }

// UIDRanges compresses ascending UIDs into the fewest ranges that contain
// exactly those UIDs out of all (ascending, deduplicated): each range
// covers a run of uids that are consecutive in all. With all nil, only
// numerically consecutive UIDs are merged. IMAP uses it with all = the
// session's view, so that a run of sequence numbers becomes one range even
// where UIDs were expunged in between.
func UIDRanges(uids, all []UID) []UIDRange {
	var out []UIDRange
	j := 0 // index of uids[i] in all
	for i := 0; i < len(uids); {
		k := i
		if all == nil {
			for k+1 < len(uids) && uids[k+1] == uids[k]+1 {
				k++
			}
		} else {
			for j < len(all) && all[j] < uids[i] {
				j++
			}
			if j < len(all) && all[j] == uids[i] {
				for k+1 < len(uids) && j+1 < len(all) && all[j+1] == uids[k+1] {
					k++
					j++
				}
			}
		}
		out = append(out, UIDRange{uids[i], uids[k]})
		i = k + 1
	}
	return out
}

// MailboxView is the snapshot Store.View returns.
type MailboxView struct {
	UIDs        []UID    // every message's UID, ascending
	FirstUnseen UID      // lowest UID of a message without \Seen; 0 if none
	Keywords    []string // distinct keywords (non-system flags) in use, as stored, sorted; never nil
	Deleted     uint32   // number of messages flagged \Deleted
	DeletedSize int64    // sum of the sizes of those messages (IMAP STATUS DELETED-STORAGE)
}

// FlagOp says how StoreFlags combines the given flags with the current ones.
type FlagOp int

const (
	FlagsAdd     FlagOp = iota // +FLAGS
	FlagsRemove                // -FLAGS
	FlagsReplace               // FLAGS
)

// Recipient names one target of a delivery.
type Recipient struct {
	AccountID int64
	Mailbox   string // usually Inbox
}

// Spool receives the bytes of one incoming message before it is committed.
// Writes normalise line endings to CRLF (a bare LF becomes CRLF). A Spool is
// consumed by exactly one of Store.Deliver, Store.Append, Store.AppendMany
// or Abort.
type Spool interface {
	io.Writer
	// Size is the number of octets stored so far (after normalisation).
	Size() int64
	// Abort discards the spooled bytes. Calling it after the spool was
	// consumed is a no-op, so `defer sp.Abort()` is always safe.
	Abort()
}

// AppendMessage is one message of Store.AppendMany: its spooled bytes, the
// flags it is stored with and its internal date (the zero time means now).
type AppendMessage struct {
	Spool Spool
	Flags []string
	Date  time.Time
}

// CheckAppend checks what can be checked of an AppendMany call without the
// store: a spool for every message and valid flags, returned canonical per
// message. Backends call it before they touch anything.
func CheckAppend(msgs []AppendMessage) ([][]string, error) {
	flags := make([][]string, len(msgs))
	for i, m := range msgs {
		if m.Spool == nil {
			return nil, fmt.Errorf("mailstore: message %d: nil spool", i+1)
		}
		f, err := CanonicalFlags(m.Flags)
		if err != nil {
			return nil, err
		}
		flags[i] = f
	}
	return flags, nil
}

// Blob is an open, immutable message body.
type Blob interface {
	io.Reader
	io.ReaderAt
	io.Seeker
	io.Closer
	Size() int64
}

// Store is the mail store. All methods are safe for concurrent use, also by
// several processes sharing one data directory (the CLI's `user` and
// `deliver` commands run next to `serve`).
type Store interface {
	// --- accounts ---

	// CreateAccount creates an account and its DefaultMailboxes.
	CreateAccount(ctx context.Context, name, passwordHash string) (Account, error)
	// Account looks an account up by name (case-insensitive).
	Account(ctx context.Context, name string) (Account, error)
	// SetPasswordHash replaces the account's password hash and removes
	// its SCRAM secret, which derives from the old password.
	SetPasswordHash(ctx context.Context, name, passwordHash string) error
	// SetCredentials replaces the account's password hash and SCRAM
	// secret together, atomically ("" removes the secret).
	SetCredentials(ctx context.Context, name, passwordHash, scramSHA256 string) error
	// SetSCRAMIfHash sets the account's SCRAM secret only if its password
	// hash is still passwordHash, the hash of the password the secret was
	// derived from, in one atomic step; it reports whether it did. A
	// password changed meanwhile (also by another process) leaves the
	// account unchanged and returns false.
	SetSCRAMIfHash(ctx context.Context, name, passwordHash, scramSHA256 string) (bool, error)
	// DeleteAccount removes the account, its mailboxes and messages.
	DeleteAccount(ctx context.Context, name string) error
	// Accounts lists all accounts ordered by name.
	Accounts(ctx context.Context) ([]Account, error)
	// SetQuota sets the account's quota limits (octets, messages; 0 = no
	// limit; negative values are ErrNotAllowed). It takes effect for every
	// change committed after it, in every process sharing the store.
	// Lowering a limit below the current usage removes nothing.
	SetQuota(ctx context.Context, name string, bytes, messages int64) error
	// Usage returns the account's usage and quota from one snapshot.
	Usage(ctx context.Context, accountID int64) (Usage, error)

	// --- mailboxes ---

	// Mailboxes lists the account's mailboxes ordered by name.
	Mailboxes(ctx context.Context, accountID int64) ([]Mailbox, error)
	// Mailbox looks a mailbox up by name; "inbox" in any case is INBOX.
	Mailbox(ctx context.Context, accountID int64, name string) (Mailbox, error)
	// CreateMailbox creates a mailbox with a fresh UIDVALIDITY that was
	// never used for this name in this account.
	CreateMailbox(ctx context.Context, accountID int64, name, specialUse string) (Mailbox, error)
	// RenameMailbox renames a mailbox and its children (RFC 3501 §6.3.5).
	// Renaming INBOX moves its messages to the new mailbox and leaves INBOX
	// empty.
	RenameMailbox(ctx context.Context, accountID int64, oldName, newName string) error
	// DeleteMailbox deletes a mailbox and its messages. INBOX cannot be
	// deleted (ErrNotAllowed).
	DeleteMailbox(ctx context.Context, accountID int64, name string) error
	// SetSubscribed sets the subscription flag of a mailbox.
	SetSubscribed(ctx context.Context, accountID int64, name string, subscribed bool) error

	// --- messages ---

	// NewSpool starts receiving a message.
	NewSpool() (Spool, error)
	// Deliver stores the spooled message once and adds it to each
	// recipient's mailbox, as an unseen message with InternalDate date.
	// The result has one entry per recipient: nil when that recipient's
	// copy is durable, or the reason it failed. Deliveries that arrive
	// concurrently are group-committed. Deliver consumes sp.
	//
	// Quota: each recipient's account must allow one more message of the
	// spool's size (Usage.Allows), checked in the transaction that adds
	// the copy, so concurrent deliveries (also from other processes) never
	// take an account over its quota; a recipient that does not fit gets
	// ErrOverQuota and the others are still delivered.
	Deliver(ctx context.Context, sp Spool, date time.Time, rcpts []Recipient) []error
	// Append stores the spooled message in one mailbox with the given flags
	// (IMAP APPEND). Deliver consumes sp. ErrOverQuota when the account
	// does not allow one more message of the spool's size.
	Append(ctx context.Context, mailboxID int64, sp Spool, flags []string, date time.Time) (Message, error)
	// AppendMany stores several spooled messages in one mailbox atomically
	// (IMAP MULTIAPPEND, RFC 3502 §6.3.11: "no partial appending is
	// permitted"). Either every message is added, with consecutive UIDs in
	// the order of msgs, each with its own MODSEQ (ascending, as if
	// appended one by one with Append), and all are published as
	// ChangeAppend after one commit; or none is, nothing is published and
	// the error says why (ErrInvalidFlag, ErrNoSuchMailbox, ...). The
	// result has one Message per element of msgs, in order. AppendMany
	// consumes every spool of msgs, also on failure. With no messages it
	// only checks that the mailbox exists. ErrOverQuota (nothing added)
	// when the account does not allow all of msgs together.
	AppendMany(ctx context.Context, mailboxID int64, msgs []AppendMessage) ([]Message, error)
	// Messages lists the messages of a mailbox ordered by UID. It reads
	// the whole mailbox; protocol code that needs some messages uses
	// MessagesInRanges, and building a session view uses View.
	Messages(ctx context.Context, mailboxID int64) ([]Message, error)
	// MessagesInRanges lists the messages of a mailbox whose UID lies in
	// one of ranges (bounds inclusive), ascending by UID and without
	// duplicates. Ranges may be given in any order and may overlap or
	// touch; a range with Min > Max selects nothing, and UIDs that do not
	// exist (never assigned or expunged) are simply absent from the
	// result. No ranges select nothing. An unknown mailbox is
	// ErrNoSuchMailbox, also for empty ranges.
	//
	// It takes ranges rather than a list of UIDs because that is what IMAP
	// sends: a sequence set resolved against a session's view is a handful
	// of runs of consecutive view entries (UIDRanges), and a run can be
	// asked for as the range from its first to its last UID, because
	// UIDs are never reused and new messages get UIDs above all existing
	// ones, so the store holds no other message in between. So "1:*" over 100,000 messages is one range, read by
	// one index range scan, instead of a 100,000-element list the backend
	// would have to ship and match; a scattered set such as 3,17,42 is
	// three one-UID ranges, each an index point lookup. The cost is
	// proportional to the messages returned plus the number of ranges, not
	// to the size of the mailbox.
	MessagesInRanges(ctx context.Context, mailboxID int64, ranges []UIDRange) ([]Message, error)
	// View returns, from one consistent snapshot, what an IMAP SELECT needs
	// to build its session view: the UIDs of the mailbox ascending, the
	// lowest UID without \Seen, the keywords in use and the number of
	// messages flagged \Deleted (see MailboxView). It does not materialise
	// Messages (no dates, blob references or flag slices per message), so
	// it costs a few bytes per message where Messages costs a few hundred.
	// It is more than a list of UIDs because SELECT's FLAGS and UNSEEN
	// responses must describe the same snapshot as its EXISTS. An unknown
	// mailbox is ErrNoSuchMailbox.
	View(ctx context.Context, mailboxID int64) (MailboxView, error)
	// MessagesChangedSince lists messages whose MODSEQ is greater than
	// modseq, ordered by UID (CONDSTORE CHANGEDSINCE).
	MessagesChangedSince(ctx context.Context, mailboxID int64, modseq uint64) ([]Message, error)
	// Structure returns the MIME structure computed at delivery.
	Structure(ctx context.Context, mailboxID int64, uid UID) (*message.Part, error)
	// Structures returns the MIME structures of the messages with the
	// given UIDs (ascending, deduplicated), in one read: FETCH of
	// ENVELOPE/BODYSTRUCTURE/sections for a batch of messages. UIDs that do
	// not exist (never assigned or expunged) are absent from the map. An
	// unknown mailbox is ErrNoSuchMailbox.
	Structures(ctx context.Context, mailboxID int64, uids []UID) (map[UID]*message.Part, error)
	// OpenBlob opens a message body for reading.
	OpenBlob(ctx context.Context, blobID string) (Blob, error)
	// StoreFlags changes the flags of the given messages. Messages whose
	// MODSEQ is greater than unchangedSince (when non-zero) are not changed
	// and are returned in failed (CONDSTORE UNCHANGEDSINCE). Only messages
	// whose flags actually change get a new MODSEQ; they are returned in
	// changed. UIDs that do not exist are ignored.
	StoreFlags(ctx context.Context, mailboxID int64, uids []UID, op FlagOp, flags []string, unchangedSince uint64) (changed []Message, failed []UID, err error)
	// Expunge removes the given messages, records them in the expunge log
	// and returns the UIDs actually removed, ascending.
	Expunge(ctx context.Context, mailboxID int64, uids []UID) ([]UID, error)
	// Copy copies messages to another mailbox of the same account and
	// returns the new UIDs in the order of the source UIDs (UIDPLUS).
	// Copies count against the quota like any message (the store shares
	// their blobs, but usage is defined on message sizes, see Usage):
	// ErrOverQuota, and nothing copied, when the account does not allow
	// all of them together.
	Copy(ctx context.Context, srcMailboxID int64, uids []UID, dstMailboxID int64) (srcUIDs, dstUIDs []UID, err error)
	// Move is Copy followed by Expunge of the sources, atomically. It
	// does not change the account's usage, so it is never refused for
	// quota (RFC 9208 §4.3.1: OVERQUOTA is for additions that put the
	// account over a limit; a move adds nothing).
	Move(ctx context.Context, srcMailboxID int64, uids []UID, dstMailboxID int64) (srcUIDs, dstUIDs []UID, err error)
	// Vanished returns UIDs expunged from the mailbox with a MODSEQ greater
	// than modseq, ascending (QRESYNC VANISHED (EARLIER)).
	Vanished(ctx context.Context, mailboxID int64, modseq uint64) ([]UID, error)

	// --- sessions and housekeeping ---

	// LockMailbox takes the exclusive lock POP3 needs for its session
	// (RFC 1939 §8: "the POP3 server then acquires an exclusive-access
	// lock on the maildrop"). It returns ErrLocked if it is held.
	LockMailbox(ctx context.Context, mailboxID int64) (unlock func(), err error)
	// Subscribe returns a subscription to the account's committed changes.
	Subscribe(accountID int64) *Subscription
	// CollectGarbage removes blobs no message references any more and that
	// are not part of a delivery in progress. It returns how many it removed.
	CollectGarbage(ctx context.Context) (int, error)
	// Close releases the store. In-flight calls finish first.
	Close() error
}
