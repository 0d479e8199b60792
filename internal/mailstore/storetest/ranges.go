package storetest

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// inRanges calls MessagesInRanges and checks the result against Messages
// filtered by the ranges: same messages, field for field, ascending and
// without duplicates. It returns the UIDs.
func inRanges(t *testing.T, st mailstore.Store, mailboxID int64, ranges ...mailstore.UIDRange) []mailstore.UID {
	t.Helper()
	got, err := st.MessagesInRanges(ctx, mailboxID, ranges)
	noErr(t, fmt.Sprintf("MessagesInRanges %v", ranges), err)
	var want []mailstore.Message
	for _, m := range messages(t, st, mailboxID) {
		if slices.ContainsFunc(ranges, func(r mailstore.UIDRange) bool { return r.Min <= m.UID && m.UID <= r.Max }) {
			want = append(want, m)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("MessagesInRanges %v: UIDs %v, want %v", ranges, uidsOf(got), uidsOf(want))
	}
	for i := range got {
		sameMessage(t, fmt.Sprintf("MessagesInRanges %v [%d]", ranges, i), got[i], want[i])
	}
	return uidsOf(got)
}

func uids(us ...mailstore.UID) []mailstore.UID { return us }

func rng(lo, hi mailstore.UID) mailstore.UIDRange { return mailstore.UIDRange{Min: lo, Max: hi} }

func testRanges(t *testing.T, open func(t *testing.T) mailstore.Store) {
	const maxUID = ^mailstore.UID(0)

	sub(t, open, "MessagesInRanges", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "ranges@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		other := createMailbox(t, st, a.ID, "Other")
		// Empty mailbox: nothing, no error.
		equalUIDs(t, "empty mailbox", inRanges(t, st, inbox.ID, rng(1, maxUID)), nil)
		for i := 1; i <= 10; i++ {
			appendMsg(t, st, inbox.ID, fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i))
		}
		appendMsg(t, st, other.ID, "Subject: other\r\n\r\nother\r\n")
		// Flags and MODSEQs differ per message, so that the
		// field-for-field comparison means something.
		_, _, err := st.StoreFlags(ctx, inbox.ID, uids(2, 4), mailstore.FlagsAdd, []string{mailstore.FlagSeen, "$Work"}, 0)
		noErr(t, "StoreFlags", err)

		equalUIDs(t, "no ranges", inRanges(t, st, inbox.ID), nil)
		equalUIDs(t, "nil ranges", inRanges(t, st, inbox.ID, []mailstore.UIDRange(nil)...), nil)
		equalUIDs(t, "one", inRanges(t, st, inbox.ID, rng(3, 3)), uids(3))
		equalUIDs(t, "first", inRanges(t, st, inbox.ID, rng(1, 1)), uids(1))
		equalUIDs(t, "last", inRanges(t, st, inbox.ID, rng(10, 10)), uids(10))
		equalUIDs(t, "all", inRanges(t, st, inbox.ID, rng(1, 10)), uids(1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
		equalUIDs(t, "1:max", inRanges(t, st, inbox.ID, rng(1, maxUID)), uids(1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
		equalUIDs(t, "0:max", inRanges(t, st, inbox.ID, rng(0, maxUID)), uids(1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
		equalUIDs(t, "uid 0", inRanges(t, st, inbox.ID, rng(0, 0)), nil)
		equalUIDs(t, "beyond the end", inRanges(t, st, inbox.ID, rng(11, 20)), nil)
		equalUIDs(t, "max only", inRanges(t, st, inbox.ID, rng(maxUID, maxUID)), nil)
		equalUIDs(t, "across the end", inRanges(t, st, inbox.ID, rng(9, 1000)), uids(9, 10))
		equalUIDs(t, "inverted", inRanges(t, st, inbox.ID, rng(5, 2)), nil)
		equalUIDs(t, "inverted and valid", inRanges(t, st, inbox.ID, rng(5, 2), rng(7, 7)), uids(7))
		equalUIDs(t, "scattered", inRanges(t, st, inbox.ID, rng(2, 2), rng(5, 5), rng(9, 9)), uids(2, 5, 9))
		equalUIDs(t, "unsorted", inRanges(t, st, inbox.ID, rng(9, 10), rng(1, 2), rng(5, 5)), uids(1, 2, 5, 9, 10))
		equalUIDs(t, "overlapping", inRanges(t, st, inbox.ID, rng(2, 6), rng(4, 8), rng(3, 3), rng(1, 10)),
			uids(1, 2, 3, 4, 5, 6, 7, 8, 9, 10))
		equalUIDs(t, "adjacent", inRanges(t, st, inbox.ID, rng(2, 3), rng(4, 5)), uids(2, 3, 4, 5))
		equalUIDs(t, "duplicates", inRanges(t, st, inbox.ID, rng(4, 4), rng(4, 4), rng(4, 4)), uids(4))
		equalUIDs(t, "some missing", inRanges(t, st, inbox.ID, rng(10, 12), rng(40, 50), rng(1, 1)), uids(1, 10))
		var many []mailstore.UIDRange
		for u := mailstore.UID(200); u > 0; u-- {
			many = append(many, rng(u, u))
		}
		equalUIDs(t, "many one-UID ranges", inRanges(t, st, inbox.ID, many...), uids(1, 2, 3, 4, 5, 6, 7, 8, 9, 10))

		// Another mailbox's messages never leak in.
		equalUIDs(t, "other mailbox", inRanges(t, st, other.ID, rng(1, maxUID)), uids(1))
		equalUIDs(t, "other mailbox, scattered", inRanges(t, st, other.ID, rng(1, 1), rng(3, 3)), uids(1))

		// After expunge (also of the first and last), the gaps are skipped.
		noErr(t, "Expunge", expunge(t, st, inbox.ID, 1, 5, 6, 10))
		equalUIDs(t, "after expunge", inRanges(t, st, inbox.ID, rng(1, maxUID)), uids(2, 3, 4, 7, 8, 9))
		equalUIDs(t, "expunged only", inRanges(t, st, inbox.ID, rng(5, 6), rng(10, 10), rng(1, 1)), nil)
		equalUIDs(t, "expunged edges", inRanges(t, st, inbox.ID, rng(1, 2), rng(6, 7), rng(9, 10)), uids(2, 7, 9))
		// UIDs are not reused: a new message gets 11.
		appendMsg(t, st, inbox.ID, "Subject: 11\r\n\r\neleven\r\n")
		equalUIDs(t, "after append", inRanges(t, st, inbox.ID, rng(10, 11)), uids(11))

		// Unknown mailbox, with and without ranges.
		for _, rs := range [][]mailstore.UIDRange{nil, {rng(1, maxUID)}, {rng(1, 1), rng(3, 3)}} {
			_, err := st.MessagesInRanges(ctx, -1, rs)
			wantErr(t, fmt.Sprintf("MessagesInRanges unknown mailbox %v", rs), err, mailstore.ErrNoSuchMailbox)
		}
		noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, a.ID, "Other"))
		_, err = st.MessagesInRanges(ctx, other.ID, []mailstore.UIDRange{rng(1, 1)})
		wantErr(t, "MessagesInRanges deleted mailbox", err, mailstore.ErrNoSuchMailbox)
	})

	sub(t, open, "Structures", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "structures@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		other := createMailbox(t, st, a.ID, "Other")
		for i := 1; i <= 12; i++ {
			appendMsg(t, st, inbox.ID, fmt.Sprintf("Subject: s%d\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nbody %d\r\n", i, i))
		}
		appendMsg(t, st, other.ID, "Subject: other\r\n\r\nother\r\n")
		noErr(t, "Expunge", expunge(t, st, inbox.ID, 4, 12))
		check := func(what string, ask, want []mailstore.UID) {
			t.Helper()
			got, err := st.Structures(ctx, inbox.ID, ask)
			noErr(t, "Structures "+what, err)
			var keys []mailstore.UID
			for u, p := range got {
				keys = append(keys, u)
				single, err := st.Structure(ctx, inbox.ID, u)
				noErr(t, "Structure", err)
				if p.Envelope == nil || single.Envelope == nil || p.Envelope.Subject.S != fmt.Sprintf("s%d", u) ||
					!reflect.DeepEqual(p, single) {
					t.Fatalf("Structures %s: uid %d: %+v, Structure says %+v", what, u, p, single)
				}
			}
			slices.Sort(keys)
			equalUIDs(t, "Structures "+what, keys, want)
		}
		check("none", nil, nil)
		check("one", uids(3), uids(3))
		check("dense", uids(1, 2, 3, 5, 6, 7, 8, 9, 10, 11), uids(1, 2, 3, 5, 6, 7, 8, 9, 10, 11))
		check("sparse", uids(1, 11), uids(1, 11))
		check("expunged and unknown", uids(2, 4, 12, 13, 1000), uids(2))
		check("unsorted", uids(9, 1, 5), uids(1, 5, 9))
		_, err := st.Structures(ctx, -1, uids(1))
		wantErr(t, "Structures unknown mailbox", err, mailstore.ErrNoSuchMailbox)
		_, err = st.Structures(ctx, -1, nil)
		wantErr(t, "Structures unknown mailbox, no UIDs", err, mailstore.ErrNoSuchMailbox)
	})

	sub(t, open, "View", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "view@example.org")
		inbox := getMailbox(t, st, a.ID, mailstore.Inbox)
		check := func(what string, want mailstore.MailboxView) {
			t.Helper()
			v, err := st.View(ctx, inbox.ID)
			noErr(t, "View "+what, err)
			equalUIDs(t, "View "+what, v.UIDs, want.UIDs)
			if v.Keywords == nil {
				t.Fatalf("View %s: Keywords is nil", what)
			}
			equalUIDs(t, "View.UIDs vs Messages "+what, v.UIDs, uidsOf(messages(t, st, inbox.ID)))
			if v.FirstUnseen != want.FirstUnseen || v.Deleted != want.Deleted || !slices.Equal(v.Keywords, want.Keywords) {
				t.Fatalf("View %s: FirstUnseen %d Deleted %d Keywords %q, want %d %d %q", what,
					v.FirstUnseen, v.Deleted, v.Keywords, want.FirstUnseen, want.Deleted, want.Keywords)
			}
		}
		check("empty", mailstore.MailboxView{Keywords: []string{}})
		appendMsg(t, st, inbox.ID, "Subject: 1\r\n\r\n1\r\n", mailstore.FlagSeen, "zeta")
		appendMsg(t, st, inbox.ID, "Subject: 2\r\n\r\n2\r\n", mailstore.FlagSeen, mailstore.FlagDeleted, "Alpha")
		appendMsg(t, st, inbox.ID, "Subject: 3\r\n\r\n3\r\n")
		appendMsg(t, st, inbox.ID, "Subject: 4\r\n\r\n4\r\n", mailstore.FlagDeleted, "zeta", "alpha")
		check("appended", mailstore.MailboxView{UIDs: uids(1, 2, 3, 4), FirstUnseen: 3, Deleted: 2,
			Keywords: []string{"Alpha", "alpha", "zeta"}})
		_, _, err := st.StoreFlags(ctx, inbox.ID, uids(3), mailstore.FlagsAdd, []string{mailstore.FlagSeen}, 0)
		noErr(t, "StoreFlags", err)
		check("3 seen", mailstore.MailboxView{UIDs: uids(1, 2, 3, 4), FirstUnseen: 4, Deleted: 2,
			Keywords: []string{"Alpha", "alpha", "zeta"}})
		_, _, err = st.StoreFlags(ctx, inbox.ID, uids(1), mailstore.FlagsRemove, []string{mailstore.FlagSeen, "zeta"}, 0)
		noErr(t, "StoreFlags", err)
		check("1 unseen", mailstore.MailboxView{UIDs: uids(1, 2, 3, 4), FirstUnseen: 1, Deleted: 2,
			Keywords: []string{"Alpha", "alpha", "zeta"}})
		noErr(t, "Expunge", expunge(t, st, inbox.ID, 1, 4))
		check("expunged", mailstore.MailboxView{UIDs: uids(2, 3), FirstUnseen: 0, Deleted: 1,
			Keywords: []string{"Alpha"}})
		_, _, err = st.StoreFlags(ctx, inbox.ID, uids(3), mailstore.FlagsReplace, []string{"solo"}, 0)
		noErr(t, "StoreFlags", err)
		check("keyword only", mailstore.MailboxView{UIDs: uids(2, 3), FirstUnseen: 3, Deleted: 1,
			Keywords: []string{"Alpha", "solo"}})
		_, err = st.View(ctx, -1)
		wantErr(t, "View unknown mailbox", err, mailstore.ErrNoSuchMailbox)
	})
}
