package storetest

import (
	"slices"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// storeFlags runs StoreFlags and checks that the changed messages carry new
// MODSEQs above the mailbox's previous HIGHESTMODSEQ, strictly ascending,
// that the mailbox's HIGHESTMODSEQ is the last of them, and that Messages
// agrees with the returned state.
func storeFlags(t *testing.T, st mailstore.Store, acct int64, name string, uids []mailstore.UID, op mailstore.FlagOp, flags []string, unchangedSince uint64) ([]mailstore.Message, []mailstore.UID) {
	t.Helper()
	before := getMailbox(t, st, acct, name)
	changed, failed, err := st.StoreFlags(ctx, before.ID, uids, op, flags, unchangedSince)
	noErr(t, "StoreFlags", err)
	after, ms := checkMailbox(t, st, acct, name)
	prev := before.HighestModSeq
	for _, c := range changed {
		if c.ModSeq <= prev {
			t.Fatalf("StoreFlags: MODSEQ %d not above %d", c.ModSeq, prev)
		}
		prev = c.ModSeq
		i := slices.IndexFunc(ms, func(m mailstore.Message) bool { return m.UID == c.UID })
		if i < 0 {
			t.Fatalf("changed UID %d not in mailbox", c.UID)
		}
		sameMessage(t, "changed message", c, ms[i])
	}
	if len(changed) > 0 && after.HighestModSeq != prev {
		t.Fatalf("HIGHESTMODSEQ %d, last change %d", after.HighestModSeq, prev)
	}
	if len(changed) == 0 && after.HighestModSeq != before.HighestModSeq {
		t.Fatalf("HIGHESTMODSEQ changed from %d to %d without a change", before.HighestModSeq, after.HighestModSeq)
	}
	return changed, failed
}

func flagsOf(t *testing.T, st mailstore.Store, mailboxID int64) map[mailstore.UID][]string {
	t.Helper()
	out := map[mailstore.UID][]string{}
	for _, m := range messages(t, st, mailboxID) {
		out[m.UID] = m.Flags
	}
	return out
}

func testFlags(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "Operations", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		for i := 0; i < 4; i++ {
			appendMsg(t, st, inbox.ID, bodyOf("f"))
		}
		all := []mailstore.UID{1, 2, 3, 4}

		changed, failed := storeFlags(t, st, a.ID, "INBOX", []mailstore.UID{3, 1, 99, 1}, mailstore.FlagsAdd, []string{`\seen`, "Work", `\SEEN`}, 0)
		equalUIDs(t, "+FLAGS changed", uidsOf(changed), []mailstore.UID{1, 3})
		equalUIDs(t, "+FLAGS failed", failed, nil)
		for _, c := range changed {
			equalFlags(t, "+FLAGS", c.Flags, []string{"Work", `\Seen`})
		}
		if mb := getMailbox(t, st, a.ID, "INBOX"); mb.Unseen != 2 {
			t.Fatalf("Unseen = %d, want 2", mb.Unseen)
		}

		// Adding what is there (keywords compare case-insensitively)
		// changes nothing and bumps no MODSEQ.
		changed, _ = storeFlags(t, st, a.ID, "INBOX", []mailstore.UID{1, 3}, mailstore.FlagsAdd, []string{"work", `\Seen`}, 0)
		equalUIDs(t, "no-op +FLAGS", uidsOf(changed), nil)

		changed, _ = storeFlags(t, st, a.ID, "INBOX", all, mailstore.FlagsRemove, []string{"WORK"}, 0)
		equalUIDs(t, "-FLAGS changed", uidsOf(changed), []mailstore.UID{1, 3})
		f := flagsOf(t, st, inbox.ID)
		equalFlags(t, "uid 1", f[1], []string{`\Seen`})
		equalFlags(t, "uid 2", f[2], nil)

		changed, _ = storeFlags(t, st, a.ID, "INBOX", all, mailstore.FlagsReplace, []string{`\Draft`, `\Answered`, "$Forwarded"}, 0)
		equalUIDs(t, "FLAGS changed", uidsOf(changed), all)
		for _, uid := range all {
			equalFlags(t, "FLAGS", flagsOf(t, st, inbox.ID)[uid], []string{"$Forwarded", `\Answered`, `\Draft`})
		}
		if mb := getMailbox(t, st, a.ID, "INBOX"); mb.Unseen != 4 {
			t.Fatalf("Unseen = %d, want 4", mb.Unseen)
		}
		changed, _ = storeFlags(t, st, a.ID, "INBOX", []mailstore.UID{2}, mailstore.FlagsReplace, nil, 0)
		equalUIDs(t, "FLAGS ()", uidsOf(changed), []mailstore.UID{2})
		equalFlags(t, "FLAGS ()", flagsOf(t, st, inbox.ID)[2], nil)

		_, _, err := st.StoreFlags(ctx, inbox.ID, all, mailstore.FlagsAdd, []string{`\Recent`}, 0)
		wantErr(t, "StoreFlags \\Recent", err, mailstore.ErrInvalidFlag)
		_, _, err = st.StoreFlags(ctx, inbox.ID+1000, all, mailstore.FlagsAdd, []string{`\Seen`}, 0)
		wantErr(t, "StoreFlags missing mailbox", err, mailstore.ErrNoSuchMailbox)
		changed, failed, err = st.StoreFlags(ctx, inbox.ID, nil, mailstore.FlagsAdd, []string{`\Seen`}, 0)
		if err != nil || len(changed) != 0 || len(failed) != 0 {
			t.Fatalf("StoreFlags of no UIDs = %v, %v, %v", changed, failed, err)
		}
	})

	sub(t, open, "UnchangedSince", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		m1 := appendMsg(t, st, inbox.ID, bodyOf("1"))
		m2 := appendMsg(t, st, inbox.ID, bodyOf("2"))
		m3 := appendMsg(t, st, inbox.ID, bodyOf("3"))
		// m2 changes after the client's snapshot at m3.ModSeq.
		snapshot := m3.ModSeq
		c2, _ := storeFlags(t, st, a.ID, "INBOX", []mailstore.UID{m2.UID}, mailstore.FlagsAdd, []string{`\Flagged`}, 0)

		changed, failed := storeFlags(t, st, a.ID, "INBOX", []mailstore.UID{m1.UID, m2.UID, m3.UID}, mailstore.FlagsAdd, []string{`\Seen`}, snapshot)
		equalUIDs(t, "changed", uidsOf(changed), []mailstore.UID{m1.UID, m3.UID})
		equalUIDs(t, "failed", failed, []mailstore.UID{m2.UID})
		f := flagsOf(t, st, inbox.ID)
		equalFlags(t, "m2 untouched", f[m2.UID], []string{`\Flagged`})

		// UNCHANGEDSINCE equal to the message's MODSEQ succeeds.
		changed, failed = storeFlags(t, st, a.ID, "INBOX", []mailstore.UID{m2.UID}, mailstore.FlagsAdd, []string{`\Seen`}, c2[0].ModSeq)
		equalUIDs(t, "changed at equal MODSEQ", uidsOf(changed), []mailstore.UID{m2.UID})
		equalUIDs(t, "failed at equal MODSEQ", failed, nil)
		// A message that would not change still fails the condition.
		_, failed = storeFlags(t, st, a.ID, "INBOX", []mailstore.UID{m1.UID}, mailstore.FlagsAdd, []string{`\Seen`}, snapshot)
		equalUIDs(t, "failed no-op", failed, []mailstore.UID{m1.UID})
	})

	sub(t, open, "ModSeqMonotonic", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		mb := getMailbox(t, st, a.ID, "INBOX")
		other := createMailbox(t, st, a.ID, "Other")
		last := mb.HighestModSeq
		bump := func(what string, modseqs ...uint64) {
			t.Helper()
			for _, m := range modseqs {
				if m <= last {
					t.Fatalf("%s: MODSEQ %d not above %d", what, m, last)
				}
				last = m
			}
			if hm := getMailbox(t, st, a.ID, "INBOX").HighestModSeq; hm != last {
				t.Fatalf("%s: HIGHESTMODSEQ %d, want %d", what, hm, last)
			}
		}
		for i := 0; i < 3; i++ {
			bump("append", appendMsg(t, st, mb.ID, bodyOf("m")).ModSeq)
		}
		changed, _ := storeFlags(t, st, a.ID, "INBOX", []mailstore.UID{1, 2, 3}, mailstore.FlagsAdd, []string{"k"}, 0)
		var ms3 []uint64
		for _, c := range changed {
			ms3 = append(ms3, c.ModSeq)
		}
		if len(ms3) != 3 {
			t.Fatalf("%d changed", len(ms3))
		}
		bump("flags", ms3...)
		_, dst, err := st.Copy(ctx, other.ID, nil, mb.ID)
		noErr(t, "empty Copy", err)
		if len(dst) != 0 {
			t.Fatal("copy of nothing copied")
		}
		appendMsg(t, st, other.ID, bodyOf("o"))
		_, dst, err = st.Copy(ctx, other.ID, []mailstore.UID{1}, mb.ID)
		noErr(t, "Copy", err)
		ms := messages(t, st, mb.ID)
		bump("copy", ms[len(ms)-1].ModSeq)
		if ms[len(ms)-1].UID != dst[0] {
			t.Fatal("copy UID")
		}
		noErr(t, "Expunge", expunge(t, st, mb.ID, 1))
		hm := getMailbox(t, st, a.ID, "INBOX").HighestModSeq
		if hm <= last {
			t.Fatalf("expunge: HIGHESTMODSEQ %d not above %d", hm, last)
		}
		van, err := st.Vanished(ctx, mb.ID, last)
		noErr(t, "Vanished", err)
		equalUIDs(t, "Vanished", van, []mailstore.UID{1})
		last = hm
		bump("append after expunge", appendMsg(t, st, mb.ID, bodyOf("m")).ModSeq)
	})
}

func testExpunge(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "AndVanished", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		for i := 0; i < 6; i++ {
			flags := []string{}
			if i%2 == 0 {
				flags = append(flags, `\Seen`)
			}
			appendMsg(t, st, inbox.ID, bodyOf("e"), flags...)
		}
		mb0 := getMailbox(t, st, a.ID, "INBOX")
		got, err := st.Expunge(ctx, inbox.ID, []mailstore.UID{4, 2, 99, 2})
		noErr(t, "Expunge", err)
		equalUIDs(t, "Expunge", got, []mailstore.UID{2, 4})
		mb1, ms := checkMailbox(t, st, a.ID, "INBOX")
		equalUIDs(t, "remaining", uidsOf(ms), []mailstore.UID{1, 3, 5, 6})
		if mb1.Messages != 4 || mb1.Unseen != 1 || mb1.HighestModSeq <= mb0.HighestModSeq {
			t.Fatalf("after expunge: %+v", mb1)
		}
		got, err = st.Expunge(ctx, inbox.ID, []mailstore.UID{1, 6, 2})
		noErr(t, "Expunge", err)
		equalUIDs(t, "second Expunge", got, []mailstore.UID{1, 6})
		mb2, _ := checkMailbox(t, st, a.ID, "INBOX")

		for _, c := range []struct {
			since uint64
			want  []mailstore.UID
		}{
			{0, []mailstore.UID{1, 2, 4, 6}},
			{mb0.HighestModSeq, []mailstore.UID{1, 2, 4, 6}},
			{mb1.HighestModSeq, []mailstore.UID{1, 6}},
			{mb2.HighestModSeq, nil},
		} {
			van, err := st.Vanished(ctx, inbox.ID, c.since)
			noErr(t, "Vanished", err)
			equalUIDs(t, "Vanished", van, c.want)
		}
		got, err = st.Expunge(ctx, inbox.ID, nil)
		if err != nil || len(got) != 0 {
			t.Fatalf("Expunge of nothing = %v, %v", got, err)
		}
		if mb := getMailbox(t, st, a.ID, "INBOX"); mb.HighestModSeq != mb2.HighestModSeq {
			t.Fatal("Expunge of nothing changed HIGHESTMODSEQ")
		}
		_, err = st.Expunge(ctx, inbox.ID+1000, []mailstore.UID{1})
		wantErr(t, "Expunge missing mailbox", err, mailstore.ErrNoSuchMailbox)
		_, err = st.Vanished(ctx, inbox.ID+1000, 0)
		wantErr(t, "Vanished missing mailbox", err, mailstore.ErrNoSuchMailbox)
	})

	sub(t, open, "Large", func(t *testing.T, st mailstore.Store) {
		// Enough messages that backends switch to set-based statements.
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		for i := 0; i < 120; i++ {
			appendMsg(t, st, inbox.ID, bodyOf("x"))
		}
		var odd []mailstore.UID
		for u := mailstore.UID(1); u <= 130; u += 2 {
			odd = append(odd, u)
		}
		changed, _ := storeFlags(t, st, a.ID, "INBOX", odd, mailstore.FlagsAdd, []string{`\Deleted`}, 0)
		if len(changed) != 60 {
			t.Fatalf("%d changed, want 60", len(changed))
		}
		got, err := st.Expunge(ctx, inbox.ID, odd)
		noErr(t, "Expunge", err)
		equalUIDs(t, "Expunge", got, odd[:60])
		_, ms := checkMailbox(t, st, a.ID, "INBOX")
		if len(ms) != 60 || ms[0].UID != 2 {
			t.Fatalf("%d left, first %d", len(ms), ms[0].UID)
		}
	})
}

func testCopyMove(t *testing.T, open func(t *testing.T) mailstore.Store) {
	setup := func(t *testing.T, st mailstore.Store) (mailstore.Account, mailstore.Mailbox, mailstore.Mailbox, []mailstore.Message) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		dst := createMailbox(t, st, a.ID, "Dst")
		appendMsg(t, st, dst.ID, bodyOf("already there"))
		var ms []mailstore.Message
		for i, f := range [][]string{{`\Seen`}, nil, {`\Flagged`, "kw"}} {
			ms = append(ms, appendMsg(t, st, inbox.ID, bodyOf(string(rune('a'+i))), f...))
		}
		return a, inbox, dst, ms
	}
	checkCopies := func(t *testing.T, st mailstore.Store, dstID int64, dstUIDs []mailstore.UID, srcs []mailstore.Message) {
		t.Helper()
		got := messages(t, st, dstID)
		for i, uid := range dstUIDs {
			j := slices.IndexFunc(got, func(m mailstore.Message) bool { return m.UID == uid })
			if j < 0 {
				t.Fatalf("copied UID %d missing", uid)
			}
			c, s := got[j], srcs[i]
			if !slices.Equal(c.Flags, s.Flags) || c.BlobID != s.BlobID || c.Size != s.Size || !c.InternalDate.Equal(s.InternalDate) {
				t.Fatalf("copy %+v of %+v", c, s)
			}
		}
	}

	sub(t, open, "Copy", func(t *testing.T, st mailstore.Store) {
		a, inbox, dst, ms := setup(t, st)
		src, dstUIDs, err := st.Copy(ctx, inbox.ID, []mailstore.UID{3, 1, 99, 2, 1}, dst.ID)
		noErr(t, "Copy", err)
		equalUIDs(t, "COPYUID source", src, []mailstore.UID{1, 2, 3})
		equalUIDs(t, "COPYUID destination", dstUIDs, []mailstore.UID{2, 3, 4})
		checkCopies(t, st, dst.ID, dstUIDs, ms)
		inboxMb, inboxMsgs := checkMailbox(t, st, a.ID, "INBOX")
		if len(inboxMsgs) != 3 || inboxMb.Unseen != 2 {
			t.Fatalf("source changed: %+v", inboxMb)
		}
		for i := range ms {
			sameMessage(t, "source after copy", inboxMsgs[i], ms[i])
		}
		d, _ := checkMailbox(t, st, a.ID, "Dst")
		if d.Messages != 4 || d.Unseen != 3 || d.UIDNext != 5 {
			t.Fatalf("Dst after copy: %+v", d)
		}
		// Copy into the same mailbox.
		src, dstUIDs, err = st.Copy(ctx, inbox.ID, []mailstore.UID{2}, inbox.ID)
		noErr(t, "Copy to self", err)
		equalUIDs(t, "self source", src, []mailstore.UID{2})
		equalUIDs(t, "self destination", dstUIDs, []mailstore.UID{4})
		checkMailbox(t, st, a.ID, "INBOX")
		// Nothing to copy.
		src, dstUIDs, err = st.Copy(ctx, inbox.ID, []mailstore.UID{50}, dst.ID)
		if err != nil || len(src) != 0 || len(dstUIDs) != 0 {
			t.Fatalf("Copy of missing UIDs = %v %v %v", src, dstUIDs, err)
		}
	})

	sub(t, open, "Move", func(t *testing.T, st mailstore.Store) {
		a, inbox, dst, ms := setup(t, st)
		before := getMailbox(t, st, a.ID, "INBOX")
		src, dstUIDs, err := st.Move(ctx, inbox.ID, []mailstore.UID{1, 3}, dst.ID)
		noErr(t, "Move", err)
		equalUIDs(t, "source", src, []mailstore.UID{1, 3})
		equalUIDs(t, "destination", dstUIDs, []mailstore.UID{2, 3})
		checkCopies(t, st, dst.ID, dstUIDs, []mailstore.Message{ms[0], ms[2]})
		mb, left := checkMailbox(t, st, a.ID, "INBOX")
		equalUIDs(t, "left in source", uidsOf(left), []mailstore.UID{2})
		if mb.Unseen != 1 || mb.Messages != 1 {
			t.Fatalf("source after move: %+v", mb)
		}
		van, err := st.Vanished(ctx, inbox.ID, before.HighestModSeq)
		noErr(t, "Vanished", err)
		equalUIDs(t, "Vanished after move", van, []mailstore.UID{1, 3})
		checkMailbox(t, st, a.ID, "Dst")
		equalBytes(t, "moved body", readBlob(t, st, ms[2].BlobID), []byte(bodyOf("c")))
	})

	sub(t, open, "Errors", func(t *testing.T, st mailstore.Store) {
		a, inbox, dst, _ := setup(t, st)
		bob := newAccount(t, st, "bob@example.org")
		bobInbox := getMailbox(t, st, bob.ID, "INBOX")
		_, _, err := st.Copy(ctx, inbox.ID, []mailstore.UID{1}, bobInbox.ID)
		wantErr(t, "Copy to another account", err, mailstore.ErrNotAllowed)
		_, _, err = st.Move(ctx, inbox.ID, []mailstore.UID{1}, bobInbox.ID)
		wantErr(t, "Move to another account", err, mailstore.ErrNotAllowed)
		_, _, err = st.Copy(ctx, inbox.ID, []mailstore.UID{1}, dst.ID+1000)
		wantErr(t, "Copy to missing mailbox", err, mailstore.ErrNoSuchMailbox)
		_, _, err = st.Move(ctx, inbox.ID+1000, []mailstore.UID{1}, dst.ID)
		wantErr(t, "Move from missing mailbox", err, mailstore.ErrNoSuchMailbox)
		if _, ms := checkMailbox(t, st, a.ID, "INBOX"); len(ms) != 3 {
			t.Fatal("failed move changed the source")
		}
		if _, ms := checkMailbox(t, st, bob.ID, "INBOX"); len(ms) != 0 {
			t.Fatal("failed copy changed the target")
		}
	})
}
