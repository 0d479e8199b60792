// Package storecopy copies a whole mail store into another, empty one
// (`letterbox store copy`), keeping everything clients have synchronised
// against: UIDVALIDITY, UIDs, UIDNEXT, MODSEQs, HIGHESTMODSEQ, flags,
// internal and save dates and the expunge log, so that IMAP clients need no
// resynchronisation (CONDSTORE/QRESYNC state stays valid) and POP3 UIDLs
// ("<UIDVALIDITY>.<UID>") do not change; and everything else an account
// has: password hash, SCRAM secret, creation time, quotas, mailbox names,
// special use and subscriptions.
//
// It is a package of its own, on top of the mailstore interfaces only,
// because two callers must run the very same algorithm: the CLI, between
// whatever backends two configurations name (embedded SQLite to PostgreSQL
// and back), and the conformance suite (mailstore/storetest), which
// round-trips a store of every backend through Copy. A backend that passes
// the suite is thereby proven to work with the code operators run. It is
// not in package mailstore, which defines the model and not procedures on
// it, nor in the CLI, which the suite cannot import.
//
// Both stores must implement mailstore.Transfer: the source is read with
// the ordinary Store methods plus Transfer.ExpungeLog, the destination is
// written with the Transfer.Import methods. The copy is not one
// transaction: the source must not change while it runs (stop the server),
// and a copy that fails leaves a partial destination, to be discarded.
// Changes noticed during the copy (a message that appears, disappears or
// changes in the source) make it fail rather than produce an inexact copy.
package storecopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// batchSize is the number of messages per ImportMessages call: one
// transaction in the destination, and the number of bodies spooled (on
// disk, not in memory) at a time.
const batchSize = 256

// expungeBatch is the number of expunge-log entries per ImportExpunged call.
const expungeBatch = 4096

// progressEvery is how many messages of one mailbox pass between progress
// messages within that mailbox.
const progressEvery = 16 * batchSize

// ErrNotEmpty is returned when the destination already has an account:
// Copy only fills an empty store.
var ErrNotEmpty = errors.New("storecopy: the destination store is not empty")

// ErrSourceChanged is returned when the source changed while it was being
// copied (a server still running on it).
var ErrSourceChanged = errors.New("storecopy: the source store changed during the copy (is a server still using it?)")

// Stats counts what Copy copied.
type Stats struct {
	Accounts  int
	Mailboxes int
	Messages  int64
	Bytes     int64 // sum of the messages' sizes (each copy counts)
	Expunged  int64 // expunge-log entries
}

// Copy copies every account of src, with its mailboxes, messages and
// expunge logs, into dst, which must have no account (ErrNotEmpty).
// Accounts are copied one by one, mailboxes one by one, messages in batches
// of batchSize whose bodies are streamed from src.OpenBlob into
// dst.NewSpool. After each mailbox, Copy checks that the destination's
// UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, message count, unseen count, size
// and UIDs equal the source's, and that the source did not change
// meanwhile; after each account, its usage and quotas. progress, if not
// nil, receives one-line descriptions of what is being done.
func Copy(ctx context.Context, dst, src mailstore.Store, progress func(msg string)) (Stats, error) {
	var st Stats
	if progress == nil {
		progress = func(string) {}
	}
	srcT, ok := src.(mailstore.Transfer)
	if !ok {
		return st, fmt.Errorf("storecopy: the source store (%T) cannot be copied: it does not implement mailstore.Transfer", src)
	}
	dstT, ok := dst.(mailstore.Transfer)
	if !ok {
		return st, fmt.Errorf("storecopy: the destination store (%T) cannot be copied into: it does not implement mailstore.Transfer", dst)
	}
	existing, err := dst.Accounts(ctx)
	if err != nil {
		return st, fmt.Errorf("storecopy: listing the destination's accounts: %w", err)
	}
	if len(existing) > 0 {
		return st, fmt.Errorf("%w: it has %d account(s), the first %s; copy only into a new, empty store",
			ErrNotEmpty, len(existing), existing[0].Name)
	}
	accounts, err := src.Accounts(ctx)
	if err != nil {
		return st, fmt.Errorf("storecopy: listing the source's accounts: %w", err)
	}
	c := &copier{ctx: ctx, src: src, dst: dst, srcT: srcT, dstT: dstT, progress: progress, stats: &st}
	for i, a := range accounts {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		progress(fmt.Sprintf("account %s (%d of %d)", a.Name, i+1, len(accounts)))
		if err := c.account(a); err != nil {
			return st, fmt.Errorf("storecopy: account %s: %w", a.Name, err)
		}
		st.Accounts++
	}
	got, err := dst.Accounts(ctx)
	if err != nil {
		return st, fmt.Errorf("storecopy: verifying: %w", err)
	}
	if len(got) != len(accounts) {
		return st, fmt.Errorf("storecopy: verifying: the destination has %d accounts, the source %d", len(got), len(accounts))
	}
	return st, nil
}

type copier struct {
	ctx        context.Context
	src, dst   mailstore.Store
	srcT, dstT mailstore.Transfer
	progress   func(string)
	stats      *Stats
}

// account copies one account and its mailboxes.
func (c *copier) account(a mailstore.Account) error {
	da, err := c.dstT.ImportAccount(c.ctx, a)
	if err != nil {
		return fmt.Errorf("importing the account: %w", err)
	}
	mbs, err := c.src.Mailboxes(c.ctx, a.ID)
	if err != nil {
		return fmt.Errorf("listing mailboxes: %w", err)
	}
	for _, mb := range mbs {
		if err := c.mailbox(a, da, mb); err != nil {
			return fmt.Errorf("mailbox %q: %w", mb.Name, err)
		}
		c.stats.Mailboxes++
	}
	su, err := c.src.Usage(c.ctx, a.ID)
	if err != nil {
		return fmt.Errorf("verifying: source usage: %w", err)
	}
	du, err := c.dst.Usage(c.ctx, da.ID)
	if err != nil {
		return fmt.Errorf("verifying: destination usage: %w", err)
	}
	if su != du {
		return fmt.Errorf("verifying: destination usage and quota %+v, source %+v", du, su)
	}
	dmbs, err := c.dst.Mailboxes(c.ctx, da.ID)
	if err != nil {
		return fmt.Errorf("verifying: listing the destination's mailboxes: %w", err)
	}
	if len(dmbs) != len(mbs) {
		return fmt.Errorf("verifying: the destination has %d mailboxes, the source %d", len(dmbs), len(mbs))
	}
	return nil
}

// mailbox copies one mailbox: its attributes, its messages in batches, its
// expunge log; then verifies it.
func (c *copier) mailbox(a, da mailstore.Account, mb mailstore.Mailbox) error {
	dmb, err := c.dstT.ImportMailbox(c.ctx, da.ID, mb)
	if err != nil {
		return fmt.Errorf("importing the mailbox: %w", err)
	}
	view, err := c.src.View(c.ctx, mb.ID)
	if err != nil {
		return fmt.Errorf("listing messages: %w", err)
	}
	uids := view.UIDs
	var bytes int64
	for i := 0; i < len(uids); i += batchSize {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if i > 0 && i%progressEvery == 0 {
			c.progress(fmt.Sprintf("%s %s: %d of %d messages", a.Name, mb.Name, i, len(uids)))
		}
		chunk := uids[i:min(i+batchSize, len(uids))]
		// The view's UIDs are all the mailbox has: none lies between two
		// of them, so one range reads exactly the chunk.
		msgs, err := c.src.MessagesInRanges(c.ctx, mb.ID, []mailstore.UIDRange{{Min: chunk[0], Max: chunk[len(chunk)-1]}})
		if err != nil {
			return fmt.Errorf("reading messages: %w", err)
		}
		if err := sameBatch(mb, chunk, msgs); err != nil {
			return err
		}
		batch, err := c.spool(msgs)
		if err != nil {
			return err
		}
		if err := c.dstT.ImportMessages(c.ctx, dmb.ID, batch); err != nil {
			return fmt.Errorf("importing UIDs %d to %d: %w", chunk[0], chunk[len(chunk)-1], err)
		}
		for _, m := range msgs {
			bytes += m.Size
		}
	}
	log, err := c.srcT.ExpungeLog(c.ctx, mb.ID)
	if err != nil {
		return fmt.Errorf("reading the expunge log: %w", err)
	}
	for i := 0; i < len(log); i += expungeBatch {
		part := log[i:min(i+expungeBatch, len(log))]
		if err := c.dstT.ImportExpunged(c.ctx, dmb.ID, part); err != nil {
			return fmt.Errorf("importing the expunge log: %w", err)
		}
	}
	if err := c.verify(a, da, mb, uids, len(log)); err != nil {
		return err
	}
	c.stats.Messages += int64(len(uids))
	c.stats.Bytes += bytes
	c.stats.Expunged += int64(len(log))
	if len(uids) > 0 || len(log) > 0 {
		c.progress(fmt.Sprintf("%s %s: %d messages, %d octets, %d expunge-log entries", a.Name, mb.Name, len(uids), bytes, len(log)))
	}
	return nil
}

// sameBatch checks that the messages read for a chunk of the view are
// exactly the chunk, and within the mailbox's UIDNEXT and HIGHESTMODSEQ as
// read before: otherwise the source changed since.
func sameBatch(mb mailstore.Mailbox, chunk []mailstore.UID, msgs []mailstore.Message) error {
	if len(msgs) != len(chunk) {
		return fmt.Errorf("%w: %d of UIDs %d to %d read, %d listed", ErrSourceChanged, len(msgs), chunk[0], chunk[len(chunk)-1], len(chunk))
	}
	for i, m := range msgs {
		if m.UID != chunk[i] {
			return fmt.Errorf("%w: UID %d read where %d was listed", ErrSourceChanged, m.UID, chunk[i])
		}
		if m.UID >= mb.UIDNext || m.ModSeq > mb.HighestModSeq {
			return fmt.Errorf("%w: UID %d (MODSEQ %d) is beyond the mailbox's UIDNEXT %d / HIGHESTMODSEQ %d",
				ErrSourceChanged, m.UID, m.ModSeq, mb.UIDNext, mb.HighestModSeq)
		}
	}
	return nil
}

// spool copies the bodies of msgs into new spools of the destination, one
// at a time (io.Copy: a body is never held in memory whole). On failure
// the spools made so far are aborted.
func (c *copier) spool(msgs []mailstore.Message) (out []mailstore.ImportMessage, err error) {
	out = make([]mailstore.ImportMessage, 0, len(msgs))
	defer func() {
		if err != nil {
			for _, im := range out {
				im.Spool.Abort()
			}
			out = nil
		}
	}()
	for _, m := range msgs {
		sp, err := c.copyBody(m)
		if err != nil {
			return out, fmt.Errorf("UID %d: %w", m.UID, err)
		}
		out = append(out, mailstore.ImportMessage{
			Spool: sp, UID: m.UID, ModSeq: m.ModSeq, Flags: m.Flags,
			InternalDate: m.InternalDate, SaveDate: m.SaveDate,
		})
	}
	return out, nil
}

// copyBody streams one message body into a new spool of the destination.
// The source's bodies are already normalised (CRLF), which the spool's
// normalisation leaves as it is: the size must come out unchanged.
func (c *copier) copyBody(m mailstore.Message) (mailstore.Spool, error) {
	b, err := c.src.OpenBlob(c.ctx, m.BlobID)
	if err != nil {
		return nil, fmt.Errorf("opening the body: %w", err)
	}
	defer b.Close()
	sp, err := c.dst.NewSpool()
	if err != nil {
		return nil, fmt.Errorf("spooling the body: %w", err)
	}
	if _, err := io.Copy(sp, b); err != nil {
		sp.Abort()
		return nil, fmt.Errorf("copying the body: %w", err)
	}
	if sp.Size() != m.Size {
		sp.Abort()
		return nil, fmt.Errorf("the body copied is %d octets, the message's size %d", sp.Size(), m.Size)
	}
	return sp, nil
}

// verify compares the copied mailbox with the source, as read before the
// copy and as it is now.
func (c *copier) verify(a, da mailstore.Account, mb mailstore.Mailbox, uids []mailstore.UID, logLen int) error {
	now, err := c.src.Mailbox(c.ctx, a.ID, mb.Name)
	if err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	if !sameState(now, mb) {
		return fmt.Errorf("%w: before %s, after %s", ErrSourceChanged, describe(mb), describe(now))
	}
	got, err := c.dst.Mailbox(c.ctx, da.ID, mb.Name)
	if err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	if !sameState(got, mb) || got.Subscribed != mb.Subscribed || got.SpecialUse != mb.SpecialUse {
		return fmt.Errorf("verifying: the copy has %s, the source %s", describe(got), describe(mb))
	}
	if uint32(len(uids)) != mb.Messages {
		return fmt.Errorf("%w: %d messages listed, the mailbox counts %d", ErrSourceChanged, len(uids), mb.Messages)
	}
	v, err := c.dst.View(c.ctx, got.ID)
	if err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	if !slices.Equal(v.UIDs, uids) {
		return fmt.Errorf("verifying: the copy has %d UIDs, not those of the source (%d)", len(v.UIDs), len(uids))
	}
	log, err := c.dstT.ExpungeLog(c.ctx, got.ID)
	if err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	if len(log) != logLen {
		return fmt.Errorf("verifying: the copy's expunge log has %d entries, the source's %d", len(log), logLen)
	}
	return nil
}

// sameState compares what a mailbox's clients synchronise against and its
// counters.
func sameState(a, b mailstore.Mailbox) bool {
	return a.UIDValidity == b.UIDValidity && a.UIDNext == b.UIDNext && a.HighestModSeq == b.HighestModSeq &&
		a.Messages == b.Messages && a.Unseen == b.Unseen && a.Size == b.Size
}

func describe(mb mailstore.Mailbox) string {
	return fmt.Sprintf("UIDVALIDITY %d, UIDNEXT %d, HIGHESTMODSEQ %d, %d messages (%d unseen), %d octets",
		mb.UIDValidity, mb.UIDNext, mb.HighestModSeq, mb.Messages, mb.Unseen, mb.Size)
}
