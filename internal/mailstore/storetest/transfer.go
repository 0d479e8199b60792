package storetest

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/storecopy"
)

// testTransfer covers mailstore.Transfer and storecopy.Copy, which
// `letterbox store copy` runs: a store copied into a new one (of the same
// backend: open is called twice) is the same store for every client, down
// to UIDVALIDITY, UIDs, UIDNEXT, MODSEQs, HIGHESTMODSEQ, flags, dates,
// bodies, the expunge log (Vanished), subscriptions, special use,
// credentials and quotas; the destination then continues above everything
// imported (UIDs, MODSEQs, UIDVALIDITYs). The Import methods refuse what
// already exists and anything at or above UIDNEXT or above HIGHESTMODSEQ,
// all or nothing per call, and publish nothing.
//
// The group is skipped for a store that does not implement
// mailstore.Transfer. It relies on one more convention: a spool that was
// consumed (stored or aborted) refuses further writes, which is how it
// checks that a failed ImportMessages consumed its spools.
func testTransfer(t *testing.T, open func(t *testing.T) mailstore.Store) {
	if _, ok := open(t).(mailstore.Transfer); !ok {
		t.Skip("the store does not implement mailstore.Transfer")
	}
	tr := func(st mailstore.Store) mailstore.Transfer { return st.(mailstore.Transfer) }

	sub(t, open, "RoundTrip", func(t *testing.T, src mailstore.Store) {
		buildTransferSource(t, src)
		want := takeSnapshot(t, src)
		if len(want.accounts) != 3 {
			t.Fatalf("source has %d accounts", len(want.accounts))
		}

		dst := open(t)
		var progress []string
		stats, err := storecopy.Copy(ctx, dst, src, func(msg string) { progress = append(progress, msg) })
		noErr(t, "storecopy.Copy", err)
		if len(progress) == 0 {
			t.Fatal("Copy reported no progress")
		}
		if ws := want.stats(); stats != ws {
			t.Fatalf("Copy stats %+v, want %+v", stats, ws)
		}
		got := takeSnapshot(t, dst)
		compareSnapshots(t, "copy", got, want)
		compareSnapshots(t, "source after the copy", takeSnapshot(t, src), want)
		for _, as := range got.accounts {
			for _, bs := range as.boxes {
				checkMailbox(t, dst, as.acct.ID, bs.mb.Name)
			}
		}

		// And back again: a copy of the copy is the source.
		back := open(t)
		_, err = storecopy.Copy(ctx, back, dst, nil)
		noErr(t, "storecopy.Copy of the copy", err)
		compareSnapshots(t, "copy of the copy", takeSnapshot(t, back), want)

		// A second copy into a store that is no longer empty is refused
		// and changes nothing.
		_, err = storecopy.Copy(ctx, dst, src, nil)
		wantErr(t, "Copy into a non-empty store", err, storecopy.ErrNotEmpty)
		compareSnapshots(t, "destination after a refused copy", takeSnapshot(t, dst), want)

		// The destination continues above everything imported.
		var maxValidity uint32
		for _, as := range got.accounts {
			for _, bs := range as.boxes {
				maxValidity = max(maxValidity, bs.mb.UIDValidity)
				if as.acct.Name == "bob@example.org" || bs.mb.Name != "INBOX" && bs.mb.Name != "Work/Projects/2024 Q1" {
					continue // bob is over his quota
				}
				m := appendMsg(t, dst, bs.mb.ID, bodyOf("after the copy"))
				if m.UID != bs.mb.UIDNext {
					t.Fatalf("%s %s: Append after the copy got UID %d, want the imported UIDNEXT %d", as.acct.Name, bs.mb.Name, m.UID, bs.mb.UIDNext)
				}
				if m.ModSeq <= bs.mb.HighestModSeq {
					t.Fatalf("%s %s: Append after the copy got MODSEQ %d, imported HIGHESTMODSEQ %d", as.acct.Name, bs.mb.Name, m.ModSeq, bs.mb.HighestModSeq)
				}
				checkMailbox(t, dst, as.acct.ID, bs.mb.Name)
			}
		}
		if maxValidity < uint32(time.Now().Unix())+1000 {
			t.Fatalf("the source has no UIDVALIDITY in the future (max %d): the check below proves nothing", maxValidity)
		}
		alice := got.accounts[0].acct
		nb := createMailbox(t, dst, alice.ID, "Created after the copy")
		if nb.UIDValidity <= maxValidity {
			t.Fatalf("CreateMailbox after the copy: UIDVALIDITY %d, an imported one is %d", nb.UIDValidity, maxValidity)
		}
		// A flag change of an imported message too gets a new MODSEQ.
		inbox := got.accounts[0].box(t, "INBOX").mb
		changed, _, err := dst.StoreFlags(ctx, inbox.ID, []mailstore.UID{got.accounts[0].box(t, "INBOX").msgs[0].UID},
			mailstore.FlagsAdd, []string{"$AfterCopy"}, 0)
		noErr(t, "StoreFlags after the copy", err)
		if len(changed) != 1 || changed[0].ModSeq <= inbox.HighestModSeq+1 {
			t.Fatalf("StoreFlags after the copy: %+v (imported HIGHESTMODSEQ %d, then one append)", changed, inbox.HighestModSeq)
		}
	})

	sub(t, open, "EmptyAndNotEmpty", func(t *testing.T, src mailstore.Store) {
		dst := open(t)
		stats, err := storecopy.Copy(ctx, dst, src, nil)
		noErr(t, "Copy of an empty store", err)
		if stats != (storecopy.Stats{}) {
			t.Fatalf("Copy of an empty store: %+v", stats)
		}
		newAccount(t, src, "alice@example.org")
		newAccount(t, dst, "zed@example.org")
		before := takeSnapshot(t, dst)
		_, err = storecopy.Copy(ctx, dst, src, nil)
		wantErr(t, "Copy into a store with an account", err, storecopy.ErrNotEmpty)
		compareSnapshots(t, "destination after a refused copy", takeSnapshot(t, dst), before)
	})

	sub(t, open, "Import", func(t *testing.T, st mailstore.Store) {
		existing := newAccount(t, st, "alice@example.org")
		created := date.Add(-48 * time.Hour)
		a, err := tr(st).ImportAccount(ctx, mailstore.Account{ID: 9999, Name: "Bob@Example.org", PasswordHash: "h-bob",
			SCRAMSHA256: "s-bob", Created: created, QuotaBytes: 100, QuotaMessages: 2})
		noErr(t, "ImportAccount", err)
		if a.Name != "bob@example.org" || a.PasswordHash != "h-bob" || a.SCRAMSHA256 != "s-bob" || !a.Created.Equal(created) ||
			a.QuotaBytes != 100 || a.QuotaMessages != 2 || a.ID == existing.ID {
			t.Fatalf("ImportAccount = %+v", a)
		}
		if got, err := st.Account(ctx, "bob@example.org"); err != nil || got.ID != a.ID || got.SCRAMSHA256 != "s-bob" || !got.Created.Equal(created) {
			t.Fatalf("Account after ImportAccount = %+v, %v", got, err)
		}
		_, err = tr(st).ImportAccount(ctx, mailstore.Account{Name: "ALICE@example.org", PasswordHash: "x"})
		wantErr(t, "ImportAccount of an existing name", err, mailstore.ErrAccountExists)
		_, err = tr(st).ImportAccount(ctx, mailstore.Account{Name: "bob@example.org", PasswordHash: "x"})
		wantErr(t, "ImportAccount of an imported name", err, mailstore.ErrAccountExists)
		_, err = tr(st).ImportAccount(ctx, mailstore.Account{Name: "", PasswordHash: "x"})
		wantErr(t, "ImportAccount of an empty name", err, mailstore.ErrInvalidName)

		// Imports publish nothing.
		s := st.Subscribe(a.ID)
		defer s.Close()

		imb := mailstore.Mailbox{ID: 12345, AccountID: existing.ID, Name: "inbox", Subscribed: true,
			UIDValidity: 77, UIDNext: 10, HighestModSeq: 20, Messages: 3, Unseen: 2, Size: 999}
		mb, err := tr(st).ImportMailbox(ctx, a.ID, imb)
		noErr(t, "ImportMailbox", err)
		if mb.Name != "INBOX" || mb.AccountID != a.ID || !mb.Subscribed || mb.SpecialUse != "" || mb.UIDValidity != 77 ||
			mb.UIDNext != 10 || mb.HighestModSeq != 20 || mb.Messages != 0 || mb.Unseen != 0 || mb.Size != 0 {
			t.Fatalf("ImportMailbox = %+v", mb)
		}
		if got := getMailbox(t, st, a.ID, "INBOX"); got != mb {
			t.Fatalf("Mailbox after ImportMailbox = %+v, ImportMailbox returned %+v", got, mb)
		}
		trash, err := tr(st).ImportMailbox(ctx, a.ID, mailstore.Mailbox{Name: "Bin/Old", SpecialUse: `\Trash`,
			UIDValidity: 78, UIDNext: 1, HighestModSeq: 1})
		noErr(t, "ImportMailbox of a nested name", err)
		if trash.Name != "Bin/Old" || trash.SpecialUse != mailstore.SpecialTrash || trash.Subscribed {
			t.Fatalf("ImportMailbox = %+v", trash)
		}
		_, err = tr(st).ImportMailbox(ctx, a.ID, imb)
		wantErr(t, "ImportMailbox of an existing name", err, mailstore.ErrMailboxExists)
		_, err = tr(st).ImportMailbox(ctx, existing.ID, imb)
		wantErr(t, "ImportMailbox of INBOX into an account that has one", err, mailstore.ErrMailboxExists)
		_, err = tr(st).ImportMailbox(ctx, a.ID+existing.ID+1000, mailstore.Mailbox{Name: "X", UIDValidity: 1, UIDNext: 1, HighestModSeq: 1})
		wantErr(t, "ImportMailbox into a missing account", err, mailstore.ErrNoSuchAccount)
		_, err = tr(st).ImportMailbox(ctx, a.ID, mailstore.Mailbox{Name: "a//b", UIDValidity: 1, UIDNext: 1, HighestModSeq: 1})
		wantErr(t, "ImportMailbox of an invalid name", err, mailstore.ErrInvalidName)

		// An empty mailbox's view, before messages are imported.
		v, err := st.View(ctx, mb.ID)
		noErr(t, "View", err)
		if len(v.UIDs) != 0 {
			t.Fatalf("View of an imported empty mailbox: %+v", v)
		}

		saved := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC)
		im := func(uid mailstore.UID, modseq uint64, body string, flags ...string) mailstore.ImportMessage {
			return mailstore.ImportMessage{Spool: spool(t, st, []byte(body)), UID: uid, ModSeq: modseq, Flags: flags,
				InternalDate: date.Add(time.Duration(uid) * time.Minute), SaveDate: saved}
		}
		noErr(t, "ImportMessages", tr(st).ImportMessages(ctx, mb.ID, []mailstore.ImportMessage{
			im(3, 5, bodyOf("three"), `\seen`, "$Label"),
		}))
		before, ms := checkMailbox(t, st, a.ID, "INBOX")
		if len(ms) != 1 || ms[0].UID != 3 || ms[0].ModSeq != 5 || !slices.Equal(ms[0].Flags, []string{"$Label", `\Seen`}) ||
			!ms[0].InternalDate.Equal(date.Add(3*time.Minute)) || !ms[0].SaveDate.Equal(saved) || before.Unseen != 0 ||
			before.UIDNext != 10 || before.HighestModSeq != 20 {
			t.Fatalf("after ImportMessages: %+v %+v", before, ms)
		}

		// Refused calls: all or nothing, also when one message of two is
		// wrong, and their spools are consumed.
		for _, c := range []struct {
			what string
			msgs []mailstore.ImportMessage
		}{
			{"a UID equal to UIDNEXT", []mailstore.ImportMessage{im(5, 6, bodyOf("5")), im(10, 7, bodyOf("10"))}},
			{"a UID above UIDNEXT", []mailstore.ImportMessage{im(5, 6, bodyOf("5")), im(11, 7, bodyOf("11"))}},
			{"a UID already present", []mailstore.ImportMessage{im(5, 6, bodyOf("5")), im(3, 7, bodyOf("3 again"))}},
			{"a MODSEQ above HIGHESTMODSEQ", []mailstore.ImportMessage{im(5, 21, bodyOf("5")), im(6, 7, bodyOf("6"))}},
			{"a UID twice", []mailstore.ImportMessage{im(5, 6, bodyOf("5")), im(5, 7, bodyOf("5 again"))}},
			{"UID 0", []mailstore.ImportMessage{im(0, 6, bodyOf("0"))}},
		} {
			err := tr(st).ImportMessages(ctx, mb.ID, c.msgs)
			wantErr(t, "ImportMessages with "+c.what, err, mailstore.ErrNotAllowed)
			mailboxUnchanged(t, st, "ImportMessages with "+c.what, before)
			equalUIDs(t, "after ImportMessages with "+c.what, uidsOf(messages(t, st, mb.ID)), []mailstore.UID{3})
			for i, m := range c.msgs {
				if _, err := m.Spool.Write([]byte("x")); err == nil {
					t.Fatalf("ImportMessages with %s: spool %d was not consumed", c.what, i)
				}
			}
		}
		err = tr(st).ImportMessages(ctx, mb.ID+trash.ID+1000, []mailstore.ImportMessage{im(1, 1, bodyOf("1"))})
		wantErr(t, "ImportMessages into a missing mailbox", err, mailstore.ErrNoSuchMailbox)

		// Several messages in one call, one a message with the body of
		// the first (the bodies may share a blob), one \Deleted.
		body9 := "Subject: nine\r\n\r\nx\x00y\xff\rz\r\n"
		noErr(t, "ImportMessages", tr(st).ImportMessages(ctx, mb.ID, []mailstore.ImportMessage{
			im(9, 20, body9, `\Deleted`, "Other"),
			im(5, 6, bodyOf("three")),
		}))
		after, ms := checkMailbox(t, st, a.ID, "INBOX")
		if after.UIDNext != 10 || after.HighestModSeq != 20 || after.Messages != 3 || after.Unseen != 2 {
			t.Fatalf("after ImportMessages: %+v", after)
		}
		equalUIDs(t, "after ImportMessages", uidsOf(ms), []mailstore.UID{3, 5, 9})
		equalBytes(t, "imported body", readBlob(t, st, ms[2].BlobID), []byte(body9))
		equalBytes(t, "imported body", readBlob(t, st, ms[1].BlobID), []byte(bodyOf("three")))
		checkStructure(t, st, mb.ID, 9, []byte(body9))
		checkStructure(t, st, mb.ID, 5, []byte(bodyOf("three")))
		v, err = st.View(ctx, mb.ID)
		noErr(t, "View", err)
		if !slices.Equal(v.UIDs, []mailstore.UID{3, 5, 9}) || v.FirstUnseen != 5 || !slices.Equal(v.Keywords, []string{"$Label", "Other"}) ||
			v.Deleted != 1 || v.DeletedSize != int64(len(body9)) {
			t.Fatalf("View after ImportMessages = %+v", v)
		}
		if changed, err := st.MessagesChangedSince(ctx, mb.ID, 5); err != nil || !slices.Equal(uidsOf(changed), []mailstore.UID{5, 9}) {
			t.Fatalf("MessagesChangedSince 5 = %v, %v", uidsOf(changed), err)
		}
		// Not checked against the quota (2 messages, 100 octets): the
		// source held the messages.
		if u, err := st.Usage(ctx, a.ID); err != nil || u.Messages != 3 || u.Bytes != after.Size || u.Bytes <= 100 || u.QuotaMessages != 2 {
			t.Fatalf("Usage = %+v, %v", u, err)
		}

		// The expunge log.
		log, err := tr(st).ExpungeLog(ctx, mb.ID)
		noErr(t, "ExpungeLog", err)
		if len(log) != 0 {
			t.Fatalf("ExpungeLog of a new mailbox = %v", log)
		}
		wantLog := []mailstore.Expunged{{UID: 1, ModSeq: 2}, {UID: 4, ModSeq: 8}, {UID: 6, ModSeq: 19}}
		noErr(t, "ImportExpunged", tr(st).ImportExpunged(ctx, mb.ID, []mailstore.Expunged{wantLog[2], wantLog[0]}))
		noErr(t, "ImportExpunged", tr(st).ImportExpunged(ctx, mb.ID, wantLog[1:2]))
		for _, c := range []struct {
			what string
			log  []mailstore.Expunged
		}{
			{"a UID equal to UIDNEXT", []mailstore.Expunged{{UID: 7, ModSeq: 9}, {UID: 10, ModSeq: 10}}},
			{"a MODSEQ above HIGHESTMODSEQ", []mailstore.Expunged{{UID: 7, ModSeq: 9}, {UID: 8, ModSeq: 21}}},
			{"a UID already in the log", []mailstore.Expunged{{UID: 7, ModSeq: 9}, {UID: 4, ModSeq: 10}}},
			{"a UID twice", []mailstore.Expunged{{UID: 7, ModSeq: 9}, {UID: 7, ModSeq: 10}}},
		} {
			wantErr(t, "ImportExpunged with "+c.what, tr(st).ImportExpunged(ctx, mb.ID, c.log), mailstore.ErrNotAllowed)
		}
		wantErr(t, "ImportExpunged into a missing mailbox",
			tr(st).ImportExpunged(ctx, mb.ID+trash.ID+1000, wantLog[:1]), mailstore.ErrNoSuchMailbox)
		log, err = tr(st).ExpungeLog(ctx, mb.ID)
		noErr(t, "ExpungeLog", err)
		if !slices.Equal(log, wantLog) {
			t.Fatalf("ExpungeLog = %v, want %v", log, wantLog)
		}
		for _, c := range []struct {
			modseq uint64
			want   []mailstore.UID
		}{{0, []mailstore.UID{1, 4, 6}}, {2, []mailstore.UID{4, 6}}, {8, []mailstore.UID{6}}, {19, nil}} {
			got, err := st.Vanished(ctx, mb.ID, c.modseq)
			noErr(t, "Vanished", err)
			equalUIDs(t, fmt.Sprint("Vanished ", c.modseq), got, c.want)
		}
		mailboxUnchanged(t, st, "ImportExpunged", after)
		_, err = tr(st).ExpungeLog(ctx, mb.ID+trash.ID+1000)
		wantErr(t, "ExpungeLog of a missing mailbox", err, mailstore.ErrNoSuchMailbox)

		expectChanges(t, "imports", s)

		// Normal operation continues above the imported state.
		setQuota(t, st, "bob@example.org", 0, 0)
		m := appendMsg(t, st, mb.ID, bodyOf("appended"))
		if m.UID != 10 || m.ModSeq <= 20 {
			t.Fatalf("Append after import: UID %d MODSEQ %d, want UID 10 and MODSEQ above 20", m.UID, m.ModSeq)
		}
		gone, err := st.Expunge(ctx, mb.ID, []mailstore.UID{5})
		noErr(t, "Expunge", err)
		equalUIDs(t, "Expunge", gone, []mailstore.UID{5})
		got, err := st.Vanished(ctx, mb.ID, 19)
		noErr(t, "Vanished", err)
		equalUIDs(t, "Vanished after an expunge", got, []mailstore.UID{5})
		checkMailbox(t, st, a.ID, "INBOX")
	})

	sub(t, open, "UIDValidityAboveImported", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		future := uint32(time.Now().Unix()) + 50_000_000
		mb, err := tr(st).ImportMailbox(ctx, a.ID, mailstore.Mailbox{Name: "Imported", UIDValidity: future, UIDNext: 1, HighestModSeq: 1})
		noErr(t, "ImportMailbox", err)
		if mb.UIDValidity != future {
			t.Fatalf("ImportMailbox: UIDVALIDITY %d, want %d", mb.UIDValidity, future)
		}
		// A lower one imported later does not lower the floor.
		_, err = tr(st).ImportMailbox(ctx, a.ID, mailstore.Mailbox{Name: "Old", UIDValidity: 1000, UIDNext: 1, HighestModSeq: 1})
		noErr(t, "ImportMailbox", err)
		last := future
		for i := range 3 {
			nb := createMailbox(t, st, a.ID, "New")
			if nb.UIDValidity <= last {
				t.Fatalf("CreateMailbox %d after importing UIDVALIDITY %d: got %d, previous %d", i, future, nb.UIDValidity, last)
			}
			last = nb.UIDValidity
			noErr(t, "DeleteMailbox", st.DeleteMailbox(ctx, a.ID, "New"))
		}
		b := newAccount(t, st, "bob@example.org")
		for _, mb := range mustMailboxes(t, st, b.ID) {
			if mb.UIDValidity <= future {
				t.Fatalf("new account's %s: UIDVALIDITY %d, an imported one is %d", mb.Name, mb.UIDValidity, future)
			}
		}
	})
}

// buildTransferSource fills st with what a copy must keep: three accounts
// (one without mail), credentials with and without a SCRAM secret, quotas
// (one below the usage), nested and non-ASCII mailbox names, special use,
// subscriptions on and off, a mailbox of more than one copy batch, keywords
// and system flags, flags changed after the appends, shared bodies
// (deliveries to two accounts, COPY, identical content), bodies with bare
// CRs, NULs and 8-bit bytes and one larger than a spool buffer, expunged
// messages (UID gaps, a non-empty expunge log, a mailbox emptied by
// expunges, HIGHESTMODSEQ above every message's MODSEQ), and a mailbox
// with a UIDVALIDITY in the future (imported into the source).
func buildTransferSource(t *testing.T, st mailstore.Store) {
	t.Helper()
	alice := newAccount(t, st, "alice@example.org")
	bob := newAccount(t, st, "bob@example.org")
	newAccount(t, st, "carol@example.net")
	noErr(t, "SetCredentials", st.SetCredentials(ctx, "alice@example.org", "$argon2id$alice", "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"))
	noErr(t, "SetCredentials", st.SetCredentials(ctx, "bob@example.org", "$argon2id$bob", ""))
	setQuota(t, st, "alice@example.org", 50<<20, 10000)

	rcpts := []mailstore.Recipient{{AccountID: alice.ID, Mailbox: "INBOX"}, {AccountID: bob.ID, Mailbox: "INBOX"}}
	deliver(t, st, bodyOf("to both"), rcpts...)

	// INBOX: more messages than one batch of the copy, varied flags and
	// dates, some with identical bodies.
	inbox := getMailbox(t, st, alice.ID, "INBOX")
	const bulk = 300
	msgs := make([]mailstore.AppendMessage, bulk)
	for i := range msgs {
		var flags []string
		if i%3 == 0 {
			flags = append(flags, mailstore.FlagSeen)
		}
		if i%5 == 0 {
			flags = append(flags, "$Label1")
		}
		if i%7 == 0 {
			flags = append(flags, mailstore.FlagFlagged)
		}
		if i%11 == 0 {
			flags = append(flags, "Project-X")
		}
		body := bodyOf(fmt.Sprint("bulk ", i))
		if i%50 == 0 {
			body = bodyOf("the same every time")
		}
		msgs[i] = mailstore.AppendMessage{Spool: spool(t, st, []byte(body)), Flags: flags, Date: date.Add(time.Duration(i) * time.Minute)}
	}
	_, err := st.AppendMany(ctx, inbox.ID, msgs)
	noErr(t, "AppendMany", err)
	uids := func(lo, hi mailstore.UID) []mailstore.UID {
		var out []mailstore.UID
		for u := lo; u <= hi; u++ {
			out = append(out, u)
		}
		return out
	}
	storeFlags(t, st, alice.ID, "INBOX", uids(20, 40), mailstore.FlagsAdd, []string{mailstore.FlagAnswered}, 0)
	storeFlags(t, st, alice.ID, "INBOX", uids(30, 35), mailstore.FlagsRemove, []string{mailstore.FlagSeen, "$Label1"}, 0)
	storeFlags(t, st, alice.ID, "INBOX", []mailstore.UID{100}, mailstore.FlagsReplace, []string{mailstore.FlagDeleted, "$Junk"}, 0)
	for _, r := range [][2]mailstore.UID{{2, 10}, {100, 100}, {250, 262}, {bulk + 1, bulk + 1}} {
		noErr(t, "Expunge", expunge(t, st, inbox.ID, uids(r[0], r[1])...))
	}

	// Nested mailboxes, names with spaces and non-ASCII, subscriptions.
	work := createMailbox(t, st, alice.ID, "Work")
	createMailbox(t, st, alice.ID, "Work/Projects")
	createMailbox(t, st, alice.ID, "Work/Projects/2024 Q1")
	createMailbox(t, st, alice.ID, "Entwürfe/Ärger")
	_, err = st.CreateMailbox(ctx, alice.ID, "Lists", mailstore.SpecialArchive)
	noErr(t, "CreateMailbox with special use", err)
	noErr(t, "SetSubscribed", st.SetSubscribed(ctx, alice.ID, "Work", true))
	noErr(t, "SetSubscribed", st.SetSubscribed(ctx, alice.ID, "Work/Projects/2024 Q1", true))
	noErr(t, "SetSubscribed", st.SetSubscribed(ctx, alice.ID, "Junk", false))

	big := strings.Repeat("a line of a larger message, long enough to span spool buffers\n", 3000)
	appendMsg(t, st, work.ID, "Subject: big\n\n"+big, mailstore.FlagDraft)
	appendMsg(t, st, work.ID, "Subject: odd\r\n\r\nx\x00y\xff\xfe\x80\nü\rlone CR\r\r\n", mailstore.FlagSeen, mailstore.FlagAnswered, "$Forwarded")
	appendMsg(t, st, work.ID, "Subject: no final newline\r\n\r\nbody\r", "NonJunk")
	appendMsg(t, st, work.ID, bodyOf("to copy"), mailstore.FlagFlagged)
	projects := getMailbox(t, st, alice.ID, "Work/Projects")
	_, _, err = st.Copy(ctx, work.ID, []mailstore.UID{1, 2, 4}, projects.ID)
	noErr(t, "Copy", err)
	q1 := getMailbox(t, st, alice.ID, "Work/Projects/2024 Q1")
	_, _, err = st.Move(ctx, work.ID, []mailstore.UID{3, 4}, q1.ID)
	noErr(t, "Move", err)
	storeFlags(t, st, alice.ID, "Work/Projects", []mailstore.UID{1}, mailstore.FlagsAdd, []string{mailstore.FlagSeen}, 0)
	// Work/Projects/2024 Q1 ends up empty, with an expunge log.
	noErr(t, "Expunge", expunge(t, st, q1.ID, 1, 2))
	storeFlags(t, st, alice.ID, "Work", []mailstore.UID{2}, mailstore.FlagsReplace, []string{"$Forwarded"}, 0)

	// A mailbox whose UIDVALIDITY lies in the future, as an imported
	// mailbox may have it (another server's scheme, a clock ahead).
	future, err := st.(mailstore.Transfer).ImportMailbox(ctx, alice.ID, mailstore.Mailbox{Name: "Imported",
		SpecialUse: "", Subscribed: true, UIDValidity: uint32(time.Now().Unix()) + 10_000_000, UIDNext: 1, HighestModSeq: 1})
	noErr(t, "ImportMailbox", err)
	appendMsg(t, st, future.ID, bodyOf("in the future"), mailstore.FlagSeen)

	// bob: flags, and a quota below his usage (lowering removes nothing;
	// the copy must not enforce it).
	binbox := getMailbox(t, st, bob.ID, "INBOX")
	appendMsg(t, st, binbox.ID, bodyOf("bob's own"))
	storeFlags(t, st, bob.ID, "INBOX", []mailstore.UID{1}, mailstore.FlagsAdd, []string{mailstore.FlagSeen, "Later"}, 0)
	setQuota(t, st, "bob@example.org", 100, 1)
}

// snapshot is everything a client can see of a store, read through the
// Store and Transfer interfaces.
type snapshot struct {
	accounts []accountSnap
}

type accountSnap struct {
	acct  mailstore.Account
	usage mailstore.Usage
	boxes []boxSnap
}

type boxSnap struct {
	mb       mailstore.Mailbox
	msgs     []mailstore.Message
	bodies   [][]byte
	structs  [][]byte // message.Part.Marshal of each message
	view     mailstore.MailboxView
	log      []mailstore.Expunged
	vanished map[uint64][]mailstore.UID // Vanished(modseq) at every modseq where it changes
}

func (a *accountSnap) box(t *testing.T, name string) *boxSnap {
	t.Helper()
	for i := range a.boxes {
		if a.boxes[i].mb.Name == name {
			return &a.boxes[i]
		}
	}
	t.Fatalf("%s has no mailbox %q", a.acct.Name, name)
	return nil
}

// stats is what storecopy.Copy should report for copying the snapshot's
// store.
func (s snapshot) stats() storecopy.Stats {
	var st storecopy.Stats
	for _, a := range s.accounts {
		st.Accounts++
		for _, b := range a.boxes {
			st.Mailboxes++
			st.Messages += int64(len(b.msgs))
			st.Bytes += b.mb.Size
			st.Expunged += int64(len(b.log))
		}
	}
	return st
}

func takeSnapshot(t *testing.T, st mailstore.Store) snapshot {
	t.Helper()
	accts, err := st.Accounts(ctx)
	noErr(t, "Accounts", err)
	var s snapshot
	for _, a := range accts {
		as := accountSnap{acct: a}
		as.usage, err = st.Usage(ctx, a.ID)
		noErr(t, "Usage", err)
		for _, mb := range mustMailboxes(t, st, a.ID) {
			bs := boxSnap{mb: mb, vanished: map[uint64][]mailstore.UID{}}
			bs.msgs = messages(t, st, mb.ID)
			for _, m := range bs.msgs {
				bs.bodies = append(bs.bodies, readBlob(t, st, m.BlobID))
				p, err := st.Structure(ctx, mb.ID, m.UID)
				noErr(t, "Structure", err)
				bs.structs = append(bs.structs, p.Marshal())
			}
			bs.view, err = st.View(ctx, mb.ID)
			noErr(t, "View", err)
			bs.log, err = st.(mailstore.Transfer).ExpungeLog(ctx, mb.ID)
			noErr(t, "ExpungeLog", err)
			points := []uint64{0, mb.HighestModSeq}
			for _, e := range bs.log {
				points = append(points, e.ModSeq-1, e.ModSeq)
			}
			for _, p := range points {
				bs.vanished[p], err = st.Vanished(ctx, mb.ID, p)
				noErr(t, "Vanished", err)
			}
			as.boxes = append(as.boxes, bs)
		}
		s.accounts = append(s.accounts, as)
	}
	return s
}

// compareSnapshots compares two stores' snapshots: everything but account
// and mailbox IDs and blob IDs must be equal, and messages that share a
// body in one store share it in the other.
func compareSnapshots(t *testing.T, what string, got, want snapshot) {
	t.Helper()
	if len(got.accounts) != len(want.accounts) {
		t.Fatalf("%s: %d accounts, want %d", what, len(got.accounts), len(want.accounts))
	}
	blobs, rblobs := map[string]string{}, map[string]string{}
	for i, ga := range got.accounts {
		wa := want.accounts[i]
		g, w := ga.acct, wa.acct
		if g.Name != w.Name || g.PasswordHash != w.PasswordHash || g.SCRAMSHA256 != w.SCRAMSHA256 || !g.Created.Equal(w.Created) ||
			g.QuotaBytes != w.QuotaBytes || g.QuotaMessages != w.QuotaMessages {
			t.Fatalf("%s: account\n got  %+v\n want %+v", what, g, w)
		}
		if ga.usage != wa.usage {
			t.Fatalf("%s: %s: usage %+v, want %+v", what, w.Name, ga.usage, wa.usage)
		}
		if len(ga.boxes) != len(wa.boxes) {
			t.Fatalf("%s: %s: %d mailboxes, want %d", what, w.Name, len(ga.boxes), len(wa.boxes))
		}
		for j, gb := range ga.boxes {
			wb := wa.boxes[j]
			where := fmt.Sprintf("%s: %s %s", what, w.Name, wb.mb.Name)
			gm, wm := gb.mb, wb.mb
			gm.ID, gm.AccountID, wm.ID, wm.AccountID = 0, 0, 0, 0
			if gm != wm {
				t.Fatalf("%s: mailbox\n got  %+v\n want %+v", where, gm, wm)
			}
			if len(gb.msgs) != len(wb.msgs) {
				t.Fatalf("%s: %d messages, want %d", where, len(gb.msgs), len(wb.msgs))
			}
			for k, g := range gb.msgs {
				w := wb.msgs[k]
				if g.UID != w.UID || g.ModSeq != w.ModSeq || !slices.Equal(g.Flags, w.Flags) && (len(g.Flags) > 0 || len(w.Flags) > 0) ||
					!g.InternalDate.Equal(w.InternalDate) || !g.SaveDate.Equal(w.SaveDate) || g.Size != w.Size {
					t.Fatalf("%s: message\n got  %+v\n want %+v", where, g, w)
				}
				equalBytes(t, fmt.Sprintf("%s UID %d body", where, w.UID), gb.bodies[k], wb.bodies[k])
				if !bytes.Equal(gb.structs[k], wb.structs[k]) {
					t.Fatalf("%s UID %d: structures differ", where, w.UID)
				}
				if b, ok := blobs[w.BlobID]; ok && b != g.BlobID {
					t.Fatalf("%s UID %d: messages sharing a body in one store do not share it in the other", where, w.UID)
				}
				if b, ok := rblobs[g.BlobID]; ok && b != w.BlobID {
					t.Fatalf("%s UID %d: messages with different bodies share one", where, w.UID)
				}
				blobs[w.BlobID], rblobs[g.BlobID] = g.BlobID, w.BlobID
			}
			gv, wv := gb.view, wb.view
			if !slices.Equal(gv.UIDs, wv.UIDs) || gv.FirstUnseen != wv.FirstUnseen || !slices.Equal(gv.Keywords, wv.Keywords) ||
				gv.Deleted != wv.Deleted || gv.DeletedSize != wv.DeletedSize {
				t.Fatalf("%s: view\n got  %+v\n want %+v", where, gv, wv)
			}
			if !slices.Equal(gb.log, wb.log) {
				t.Fatalf("%s: expunge log %v, want %v", where, gb.log, wb.log)
			}
			if !maps.EqualFunc(gb.vanished, wb.vanished, func(a, b []mailstore.UID) bool { return slices.Equal(a, b) }) {
				t.Fatalf("%s: Vanished %v, want %v", where, gb.vanished, wb.vanished)
			}
		}
	}
}
