// Package storetest is the conformance suite for mailstore.Store
// implementations. Every backend (sqlite now, postgres later) runs Run
// unchanged from its own tests, so that the protocol front ends can rely on
// one behaviour, whatever stores the mail.
//
// The suite asserts the contract of package mailstore and design.md §3–4:
// naming rules, UIDVALIDITY/UID/MODSEQ rules, exact counters, flag
// semantics, the expunge log, UIDPLUS results, body fidelity, one blob per
// delivery, notifications exactly once and only after commit, blob garbage
// collection safety, the POP3 lock, and quotas (exact usage, enforcement
// in the committing transaction). Durability across a crash or a
// reopen cannot be tested without knowing the backend; backends add such
// tests next to their call of Run.
//
// Conventions the suite relies on beyond the interface comments:
//   - lookups (Account, Mailbox, DeleteMailbox, ...) of a name that is not
//     valid report "no such ..."; creating or renaming to an invalid name
//     reports ErrInvalidName;
//   - a mutating call returns only after its changes were published to the
//     Hub (so a session that issued it sees them at its next Drain);
//   - lists are ordered bytewise (Go string order) by name;
//   - account and mailbox IDs are never reused;
//   - Message.Flags of a message without flags is empty (nil or empty);
//   - storing a spool that was already aborted fails (AppendMany uses that
//     to inject the failure of one message).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/message"
)

// Run runs the conformance suite. open must return a new, empty store for
// each call and arrange for it to be closed (t.Cleanup); calling Close again
// must be harmless.
func Run(t *testing.T, open func(t *testing.T) mailstore.Store) {
	groups := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) mailstore.Store)
	}{
		{"Accounts", testAccounts},
		{"Mailboxes", testMailboxes},
		{"Rename", testRename},
		{"UIDValidity", testUIDValidity},
		{"Messages", testMessages},
		{"AppendMany", testAppendMany},
		{"Bodies", testBodies},
		{"Deliver", testDeliver},
		{"Flags", testFlags},
		{"Expunge", testExpunge},
		{"CopyMove", testCopyMove},
		{"Ranges", testRanges},
		{"Concurrency", testConcurrency},
		{"Notifications", testNotifications},
		{"GC", testGC},
		{"Lock", testLock},
		{"Quota", testQuota},
		{"Credentials", testCredentials},
		{"Transfer", testTransfer},
		{"Close", testClose},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) { g.fn(t, open) })
	}
}

// sub runs fn as a subtest on a fresh store.
func sub(t *testing.T, open func(t *testing.T) mailstore.Store, name string, fn func(t *testing.T, st mailstore.Store)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		fn(t, open(t))
	})
}

var ctx = context.Background()

// date is a fixed internal date with whole seconds (backends may store
// dates with less than nanosecond precision).
var date = time.Date(2024, 3, 9, 14, 30, 5, 0, time.UTC)

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err = %v, want %v", what, err, want)
	}
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func newAccount(t *testing.T, st mailstore.Store, name string) mailstore.Account {
	t.Helper()
	a, err := st.CreateAccount(ctx, name, "hash-of-"+name)
	noErr(t, "CreateAccount "+name, err)
	return a
}

func getMailbox(t *testing.T, st mailstore.Store, acct int64, name string) mailstore.Mailbox {
	t.Helper()
	mb, err := st.Mailbox(ctx, acct, name)
	noErr(t, "Mailbox "+name, err)
	return mb
}

func createMailbox(t *testing.T, st mailstore.Store, acct int64, name string) mailstore.Mailbox {
	t.Helper()
	mb, err := st.CreateMailbox(ctx, acct, name, "")
	noErr(t, "CreateMailbox "+name, err)
	return mb
}

// spool returns a spool holding body, written in one Write.
func spool(t *testing.T, st mailstore.Store, body []byte) mailstore.Spool {
	t.Helper()
	sp, err := st.NewSpool()
	noErr(t, "NewSpool", err)
	if _, err := sp.Write(body); err != nil {
		sp.Abort()
		t.Fatalf("spool Write: %v", err)
	}
	return sp
}

func appendMsg(t *testing.T, st mailstore.Store, mailboxID int64, body string, flags ...string) mailstore.Message {
	t.Helper()
	m, err := st.Append(ctx, mailboxID, spool(t, st, []byte(body)), flags, date)
	noErr(t, "Append", err)
	return m
}

// deliver delivers body to rcpts and fails the test if any recipient fails.
func deliver(t *testing.T, st mailstore.Store, body string, rcpts ...mailstore.Recipient) {
	t.Helper()
	errs := st.Deliver(ctx, spool(t, st, []byte(body)), date, rcpts)
	if len(errs) != len(rcpts) {
		t.Fatalf("Deliver returned %d results for %d recipients", len(errs), len(rcpts))
	}
	for i, err := range errs {
		noErr(t, fmt.Sprintf("Deliver recipient %d", i), err)
	}
}

func messages(t *testing.T, st mailstore.Store, mailboxID int64) []mailstore.Message {
	t.Helper()
	ms, err := st.Messages(ctx, mailboxID)
	noErr(t, "Messages", err)
	return ms
}

func uidsOf(ms []mailstore.Message) []mailstore.UID {
	out := make([]mailstore.UID, len(ms))
	for i, m := range ms {
		out[i] = m.UID
	}
	return out
}

func equalUIDs(t *testing.T, what string, got, want []mailstore.UID) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: UIDs = %v, want %v", what, got, want)
	}
}

func equalFlags(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: flags = %q, want %q", what, got, want)
	}
}

// sameMessage compares every field of two messages.
func sameMessage(t *testing.T, what string, got, want mailstore.Message) {
	t.Helper()
	if got.UID != want.UID || got.ModSeq != want.ModSeq || !slices.Equal(got.Flags, want.Flags) ||
		!got.InternalDate.Equal(want.InternalDate) || !got.SaveDate.Equal(want.SaveDate) ||
		got.Size != want.Size || got.BlobID != want.BlobID {
		t.Fatalf("%s:\n got  %+v\n want %+v", what, got, want)
	}
}

// readBlob returns the whole body of blob id.
func readBlob(t *testing.T, st mailstore.Store, id string) []byte {
	t.Helper()
	b, err := st.OpenBlob(ctx, id)
	noErr(t, "OpenBlob", err)
	defer b.Close()
	data, err := io.ReadAll(b)
	noErr(t, "read blob", err)
	if int64(len(data)) != b.Size() {
		t.Fatalf("blob Size() = %d, read %d octets", b.Size(), len(data))
	}
	return data
}

// checkMailbox verifies that the mailbox's counters, UIDNEXT and
// HIGHESTMODSEQ agree with its messages, and returns the mailbox and its
// messages.
func checkMailbox(t *testing.T, st mailstore.Store, acct int64, name string) (mailstore.Mailbox, []mailstore.Message) {
	t.Helper()
	mb := getMailbox(t, st, acct, name)
	ms := messages(t, st, mb.ID)
	var unseen uint32
	var size int64
	var maxModSeq uint64
	for i, m := range ms {
		if i > 0 && m.UID <= ms[i-1].UID {
			t.Fatalf("%s: UIDs not strictly ascending: %v", name, uidsOf(ms))
		}
		if !m.HasFlag(mailstore.FlagSeen) {
			unseen++
		}
		size += m.Size
		maxModSeq = max(maxModSeq, m.ModSeq)
		if !slices.IsSorted(m.Flags) || len(slices.Compact(slices.Clone(m.Flags))) != len(m.Flags) {
			t.Fatalf("%s uid %d: flags not sorted and unique: %q", name, m.UID, m.Flags)
		}
	}
	if mb.Messages != uint32(len(ms)) || mb.Unseen != unseen || mb.Size != size {
		t.Fatalf("%s: counters messages=%d unseen=%d size=%d, want %d %d %d",
			name, mb.Messages, mb.Unseen, mb.Size, len(ms), unseen, size)
	}
	if len(ms) > 0 && mb.UIDNext <= ms[len(ms)-1].UID {
		t.Fatalf("%s: UIDNEXT %d <= last UID %d", name, mb.UIDNext, ms[len(ms)-1].UID)
	}
	if mb.HighestModSeq < maxModSeq {
		t.Fatalf("%s: HIGHESTMODSEQ %d < a message's MODSEQ %d", name, mb.HighestModSeq, maxModSeq)
	}
	return mb, ms
}

// bodyOf returns a small distinct message.
func bodyOf(tag string) string {
	return "From: a@example.org\r\nTo: b@example.org\r\nSubject: " + tag + "\r\n\r\nbody of " + tag + "\r\n"
}

func equalBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		if len(got) < 200 && len(want) < 200 {
			t.Fatalf("%s: got %q, want %q", what, got, want)
		}
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d octets, want %d; first difference at offset %d", what, len(got), len(want), i)
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }

// checkStructure verifies that the stored structure of a message is what
// message.Parse makes of its body.
func checkStructure(t *testing.T, st mailstore.Store, mailboxID int64, uid mailstore.UID, body []byte) {
	t.Helper()
	p, err := st.Structure(ctx, mailboxID, uid)
	noErr(t, "Structure", err)
	if p == nil {
		t.Fatal("Structure returned nil")
	}
	want, err := message.Parse(bytes.NewReader(body))
	noErr(t, "message.Parse", err)
	if !bytes.Equal(p.Marshal(), want.Marshal()) {
		t.Fatalf("stored structure of UID %d differs from parsing its body", uid)
	}
}
