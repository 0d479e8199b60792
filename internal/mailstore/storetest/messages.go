package storetest

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/letterbox/letterbox/internal/mailstore"
)

func testMessages(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "Append", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		body := bodyOf("append")
		before := time.Now().Add(-time.Second)
		m, err := st.Append(ctx, inbox.ID, spool(t, st, []byte(body)), []string{`\seen`, "$Label", `\FLAGGED`, `\Seen`, "$label"}, date)
		noErr(t, "Append", err)
		after := time.Now().Add(time.Second)
		if m.UID != 1 || m.ModSeq <= inbox.HighestModSeq || m.Size != int64(len(body)) || m.BlobID == "" ||
			!m.InternalDate.Equal(date) || m.SaveDate.Before(before) || m.SaveDate.After(after) {
			t.Fatalf("Append = %+v", m)
		}
		equalFlags(t, "Append", m.Flags, []string{"$Label", `\Flagged`, `\Seen`})
		mb, ms := checkMailbox(t, st, a.ID, "INBOX")
		if len(ms) != 1 {
			t.Fatalf("%d messages", len(ms))
		}
		sameMessage(t, "Messages after Append", ms[0], m)
		if mb.UIDNext != 2 || mb.HighestModSeq != m.ModSeq || mb.Messages != 1 || mb.Unseen != 0 || mb.Size != m.Size {
			t.Fatalf("mailbox after Append: %+v", mb)
		}
		equalBytes(t, "body", readBlob(t, st, m.BlobID), []byte(body))
		checkStructure(t, st, inbox.ID, m.UID, []byte(body))
		_, err = st.Structure(ctx, inbox.ID, m.UID+1)
		wantErr(t, "Structure of missing UID", err, mailstore.ErrNoSuchMessage)

		m2 := appendMsg(t, st, inbox.ID, bodyOf("2"))
		if m2.UID != 2 || m2.ModSeq <= m.ModSeq || len(m2.Flags) != 0 {
			t.Fatalf("second Append = %+v", m2)
		}
		mb, _ = checkMailbox(t, st, a.ID, "INBOX")
		if mb.Unseen != 1 {
			t.Fatalf("Unseen = %d", mb.Unseen)
		}
	})

	sub(t, open, "AppendErrors", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		for _, f := range []string{`\Recent`, `\Unknown`, "a b", "", "x(y", "ü", `\`} {
			_, err := st.Append(ctx, inbox.ID, spool(t, st, []byte(bodyOf("x"))), []string{f}, date)
			wantErr(t, "Append with flag "+f, err, mailstore.ErrInvalidFlag)
		}
		_, err := st.Append(ctx, inbox.ID+1000, spool(t, st, []byte(bodyOf("x"))), nil, date)
		wantErr(t, "Append to missing mailbox", err, mailstore.ErrNoSuchMailbox)
		mb, _ := checkMailbox(t, st, a.ID, "INBOX")
		if mb.Messages != 0 || mb.UIDNext != 1 {
			t.Fatalf("failed appends changed INBOX: %+v", mb)
		}
		// Aborting a spool twice, or after use, is harmless.
		sp := spool(t, st, []byte("x"))
		sp.Abort()
		sp.Abort()
	})

	sub(t, open, "UIDsNeverReused", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		var uids []mailstore.UID
		for i := 0; i < 3; i++ {
			uids = append(uids, appendMsg(t, st, inbox.ID, bodyOf("u")).UID)
		}
		equalUIDs(t, "appended", uids, []mailstore.UID{1, 2, 3})
		noErr(t, "Expunge", expunge(t, st, inbox.ID, 2, 3))
		if m := appendMsg(t, st, inbox.ID, bodyOf("u")); m.UID != 4 {
			t.Fatalf("UID after expunge of the last ones = %d, want 4", m.UID)
		}
		mb, ms := checkMailbox(t, st, a.ID, "INBOX")
		equalUIDs(t, "Messages", uidsOf(ms), []mailstore.UID{1, 4})
		if mb.UIDNext != 5 {
			t.Fatalf("UIDNEXT = %d", mb.UIDNext)
		}
	})

	sub(t, open, "ChangedSince", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		m1 := appendMsg(t, st, inbox.ID, bodyOf("1"))
		m2 := appendMsg(t, st, inbox.ID, bodyOf("2"))
		m3 := appendMsg(t, st, inbox.ID, bodyOf("3"))
		ch, err := st.MessagesChangedSince(ctx, inbox.ID, m1.ModSeq)
		noErr(t, "MessagesChangedSince", err)
		equalUIDs(t, "changed since m1", uidsOf(ch), []mailstore.UID{m2.UID, m3.UID})
		changed, _, err := st.StoreFlags(ctx, inbox.ID, []mailstore.UID{m1.UID}, mailstore.FlagsAdd, []string{`\Seen`}, 0)
		noErr(t, "StoreFlags", err)
		ch, err = st.MessagesChangedSince(ctx, inbox.ID, m3.ModSeq)
		noErr(t, "MessagesChangedSince", err)
		if len(ch) != 1 {
			t.Fatalf("changed since m3: %+v", ch)
		}
		sameMessage(t, "changed since m3", ch[0], changed[0])
		ch, err = st.MessagesChangedSince(ctx, inbox.ID, changed[0].ModSeq)
		noErr(t, "MessagesChangedSince", err)
		if len(ch) != 0 {
			t.Fatalf("changed since highest: %+v", ch)
		}
		ch, err = st.MessagesChangedSince(ctx, inbox.ID, 0)
		noErr(t, "MessagesChangedSince 0", err)
		equalUIDs(t, "changed since 0", uidsOf(ch), []mailstore.UID{1, 2, 3})
		_, err = st.MessagesChangedSince(ctx, inbox.ID+1000, 0)
		wantErr(t, "MessagesChangedSince missing mailbox", err, mailstore.ErrNoSuchMailbox)
		_, err = st.Messages(ctx, inbox.ID+1000)
		wantErr(t, "Messages missing mailbox", err, mailstore.ErrNoSuchMailbox)
	})

	sub(t, open, "OpenBlobMissing", func(t *testing.T, st mailstore.Store) {
		for _, id := range []string{"", "nope", "../../etc/passwd",
			"0000000000000000000000000000000000000000000000000000000000000000"} {
			_, err := st.OpenBlob(ctx, id)
			wantErr(t, "OpenBlob "+id, err, mailstore.ErrNoSuchMessage)
		}
	})
}

// spoolChunks writes chunks to a new spool, one Write each.
func spoolChunks(t *testing.T, st mailstore.Store, chunks ...[]byte) mailstore.Spool {
	t.Helper()
	sp, err := st.NewSpool()
	noErr(t, "NewSpool", err)
	for _, c := range chunks {
		n, err := sp.Write(c)
		if err != nil || n != len(c) {
			sp.Abort()
			t.Fatalf("spool Write = %d, %v; want %d", n, err, len(c))
		}
	}
	return sp
}

func testBodies(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "LineEndings", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		cases := []struct {
			name   string
			chunks []string
			want   string
		}{
			{"bare LF", []string{"a\nb\n"}, "a\r\nb\r\n"},
			{"CRLF kept", []string{"a\r\nb\r\n"}, "a\r\nb\r\n"},
			{"bare CR kept", []string{"a\rb\r"}, "a\rb\r"},
			{"CR then CRLF", []string{"a\r\r\nb"}, "a\r\r\nb"},
			{"LF LF", []string{"\n\n"}, "\r\n\r\n"},
			{"CR|LF across writes", []string{"a\r", "\nb"}, "a\r\nb"},
			{"CR|CR|LF across writes", []string{"a\r", "\r", "\n"}, "a\r\r\n"},
			{"text|LF across writes", []string{"a", "\n", "b"}, "a\r\nb"},
			{"CR|text across writes", []string{"a\r", "b\n"}, "a\rb\r\n"},
			{"empty writes", []string{"a\r", "", "\n", ""}, "a\r\n"},
			{"no final newline", []string{"Subject: x\n\nbody"}, "Subject: x\r\n\r\nbody"},
			{"NUL and 8-bit", []string{"x\x00y\xff\xfe\x80\nü\r\n"}, "x\x00y\xff\xfe\x80\r\nü\r\n"},
		}
		for _, c := range cases {
			var chunks [][]byte
			for _, s := range c.chunks {
				chunks = append(chunks, []byte(s))
			}
			sp := spoolChunks(t, st, chunks...)
			if sp.Size() != int64(len(c.want)) {
				t.Fatalf("%s: spool Size = %d, want %d", c.name, sp.Size(), len(c.want))
			}
			m, err := st.Append(ctx, inbox.ID, sp, nil, date)
			noErr(t, c.name, err)
			if m.Size != int64(len(c.want)) {
				t.Fatalf("%s: Size = %d, want %d", c.name, m.Size, len(c.want))
			}
			equalBytes(t, c.name, readBlob(t, st, m.BlobID), []byte(c.want))
			checkStructure(t, st, inbox.ID, m.UID, []byte(c.want))
		}
		// Byte-by-byte writes give the same result as one write.
		in := []byte("H: v\n\r\nx\r\ry\n\n\r")
		var chunks [][]byte
		for i := range in {
			chunks = append(chunks, in[i:i+1])
		}
		m, err := st.Append(ctx, inbox.ID, spoolChunks(t, st, chunks...), nil, date)
		noErr(t, "byte-wise", err)
		equalBytes(t, "byte-wise", readBlob(t, st, m.BlobID), []byte("H: v\r\n\r\nx\r\ry\r\n\r\n\r"))
		checkMailbox(t, st, a.ID, "INBOX")
	})

	sub(t, open, "Large", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		inbox := getMailbox(t, st, a.ID, "INBOX")
		// ~5 MiB of random bytes, including NULs, bare CRs and bare LFs,
		// written in chunks of odd sizes.
		rng := rand.New(rand.NewPCG(1, 2))
		in := make([]byte, 5<<20+123)
		for i := range in {
			in[i] = byte(rng.UintN(256))
		}
		var want bytes.Buffer
		for i, c := range in {
			if c == '\n' && (i == 0 || in[i-1] != '\r') {
				want.WriteByte('\r')
			}
			want.WriteByte(c)
		}
		sp, err := st.NewSpool()
		noErr(t, "NewSpool", err)
		for rest := in; len(rest) > 0; {
			n := min(len(rest), 1+int(rng.UintN(100000)))
			if _, err := sp.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		m, err := st.Append(ctx, inbox.ID, sp, nil, date)
		noErr(t, "Append large", err)
		if m.Size != int64(want.Len()) {
			t.Fatalf("Size = %d, want %d", m.Size, want.Len())
		}
		equalBytes(t, "large body", readBlob(t, st, m.BlobID), want.Bytes())
		checkStructure(t, st, inbox.ID, m.UID, want.Bytes())

		// Random access: ReadAt and Seek.
		b, err := st.OpenBlob(ctx, m.BlobID)
		noErr(t, "OpenBlob", err)
		defer b.Close()
		buf := make([]byte, 4096)
		off := int64(3<<20 + 17)
		if _, err := b.ReadAt(buf, off); err != nil {
			t.Fatalf("ReadAt: %v", err)
		}
		equalBytes(t, "ReadAt", buf, want.Bytes()[off:off+4096])
		if _, err := b.Seek(-10, io.SeekEnd); err != nil {
			t.Fatalf("Seek: %v", err)
		}
		tail, err := io.ReadAll(b)
		noErr(t, "read tail", err)
		equalBytes(t, "tail", tail, want.Bytes()[want.Len()-10:])
		checkMailbox(t, st, a.ID, "INBOX")
	})
}

func testDeliver(t *testing.T, open func(t *testing.T) mailstore.Store) {
	sub(t, open, "Recipients", func(t *testing.T, st mailstore.Store) {
		alice := newAccount(t, st, "alice@example.org")
		bob := newAccount(t, st, "bob@example.org")
		work := createMailbox(t, st, alice.ID, "Work")
		body := bodyOf("multi")
		rcpts := []mailstore.Recipient{
			{AccountID: alice.ID, Mailbox: mailstore.Inbox},
			{AccountID: bob.ID, Mailbox: "inbox"},
			{AccountID: alice.ID, Mailbox: "Nope"},
			{AccountID: bob.ID + alice.ID + 1000, Mailbox: mailstore.Inbox},
			{AccountID: alice.ID, Mailbox: "Work"},
			{AccountID: alice.ID, Mailbox: "a//b"},
		}
		errs := st.Deliver(ctx, spool(t, st, []byte(body)), date, rcpts)
		if len(errs) != len(rcpts) {
			t.Fatalf("%d results for %d recipients", len(errs), len(rcpts))
		}
		for i, want := range []error{nil, nil, mailstore.ErrNoSuchMailbox, mailstore.ErrNoSuchAccount, nil, mailstore.ErrNoSuchMailbox} {
			if want == nil {
				noErr(t, "recipient", errs[i])
			} else {
				wantErr(t, "recipient", errs[i], want)
			}
		}
		var blob string
		for _, target := range []struct {
			acct int64
			name string
		}{{alice.ID, "INBOX"}, {bob.ID, "INBOX"}, {alice.ID, "Work"}} {
			mb, ms := checkMailbox(t, st, target.acct, target.name)
			if len(ms) != 1 || mb.Unseen != 1 {
				t.Fatalf("%s: %d messages, unseen %d", target.name, len(ms), mb.Unseen)
			}
			m := ms[0]
			if m.UID != 1 || len(m.Flags) != 0 || !m.InternalDate.Equal(date) || m.Size != int64(len(body)) {
				t.Fatalf("delivered %+v", m)
			}
			// One delivery stores one blob, whatever the number of
			// recipients.
			if blob == "" {
				blob = m.BlobID
			} else if m.BlobID != blob {
				t.Fatalf("recipient copies have blobs %s and %s", blob, m.BlobID)
			}
			checkStructure(t, st, mb.ID, m.UID, []byte(body))
		}
		equalBytes(t, "delivered body", readBlob(t, st, blob), []byte(body))
		if getMailbox(t, st, alice.ID, "Work").ID != work.ID {
			t.Fatal("Work changed")
		}
		if errs := st.Deliver(ctx, spool(t, st, []byte(body)), date, nil); len(errs) != 0 {
			t.Fatalf("Deliver to nobody = %v", errs)
		}
	})

	sub(t, open, "SameContentTwice", func(t *testing.T, st mailstore.Store) {
		a := newAccount(t, st, "alice@example.org")
		r := mailstore.Recipient{AccountID: a.ID, Mailbox: mailstore.Inbox}
		deliver(t, st, bodyOf("same"), r)
		deliver(t, st, bodyOf("same"), r)
		_, ms := checkMailbox(t, st, a.ID, "INBOX")
		equalUIDs(t, "two deliveries", uidsOf(ms), []mailstore.UID{1, 2})
		for _, m := range ms {
			equalBytes(t, "body", readBlob(t, st, m.BlobID), []byte(bodyOf("same")))
		}
	})
}
