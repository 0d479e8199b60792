package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/mailstore/blobfs"
	"github.com/letterbox/letterbox/internal/message"
)

// msgRow is a message as the writers see it.
type msgRow struct {
	mailstore.Message
	seen    bool
	blobRow int64 // blobs.id
}

// msgCols selects a message ("m") with its blob's hash, kept on the row
// (migration 2). Rows inserted by a node of the previous version lack it;
// for those the hash is looked up by a scalar subquery (evaluated only
// when blob_hash is NULL), not a join: one primary-key lookup per such
// row, whatever the size of the blobs table.
const msgCols = `m.uid, m.modseq, m.flags, m.internal_date, m.save_date, m.size,
	coalesce(m.blob_hash, (SELECT hash FROM blobs WHERE id = m.blob_id)), m.seen, m.blob_id`

func scanMsg(row pgx.Row) (msgRow, error) {
	var r msgRow
	var uid int64
	var flags string
	var idate, sdate int64
	err := row.Scan(&uid, &r.ModSeq, &flags, &idate, &sdate, &r.Size, &r.BlobID, &r.seen, &r.blobRow)
	r.UID = mailstore.UID(uid)
	r.Flags = decodeFlags(flags)
	r.InternalDate = fromNanos(idate)
	r.SaveDate = fromNanos(sdate)
	return r, err
}

func encodeFlags(flags []string) string { return strings.Join(flags, " ") }

func decodeFlags(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, " ")
}

// spooled is a finished spool with the structure computed from its bytes.
type spooled struct {
	sp        *blobfs.Spool
	id        string
	size      int64
	structure []byte
	// committed is set once the spool was moved into the blob tree (or
	// found there): a rerun of the transaction must not commit it again.
	committed bool
}

// finishSpool fsyncs the spool and computes the message structure by
// reading the spool file back: once per message, whatever the number of
// recipients, and never again at FETCH time.
func (s *Store) finishSpool(sp mailstore.Spool) (*spooled, error) {
	bs, ok := sp.(*blobfs.Spool)
	if !ok {
		return nil, fmt.Errorf("postgres: spool %T was not created by this store", sp)
	}
	id, err := bs.Finish()
	if err != nil {
		return nil, err
	}
	part, err := message.Parse(bs.NewReader())
	if err != nil {
		return nil, fmt.Errorf("postgres: parse spooled message: %w", err)
	}
	return &spooled{sp: bs, id: id, size: bs.Size(), structure: part.Marshal()}, nil
}

// blobStage makes the blob of sd present, referenced-to-be and durable in
// tx: it inserts the blob's row, or locks the existing one FOR SHARE, so
// that no collection can delete the row (and the file) before tx ends (see
// gc.go); only then it moves the spool into the blob tree, or finds an
// identical file already there, and fsyncs the directories involved. The
// caller inserts the rows that reference the blob in the same transaction.
//
// It runs before any mailbox row is locked: the fsyncs are not done while
// holding the lock that serialises the mailbox's writers, and the blob rows
// always come first in the lock order (blob rows, then mailbox rows by ID,
// then account rows).
func (s *Store) blobStage(ctx context.Context, tx pgx.Tx, sd *spooled) (int64, error) {
	var id int64
	for attempt := 0; ; attempt++ {
		// New content is the common case: insert first. A row being
		// deleted by a collection makes the insert wait for it.
		err := tx.QueryRow(ctx, `INSERT INTO blobs (hash, size, structure) VALUES ($1, $2, $3)
			ON CONFLICT (hash) DO NOTHING RETURNING id`, sd.id, sd.size, sd.structure).Scan(&id)
		if err == nil {
			break
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return 0, err
		}
		err = tx.QueryRow(ctx, `SELECT id FROM blobs WHERE hash = $1 FOR SHARE`, sd.id).Scan(&id)
		if err == nil {
			break
		}
		// Deleted by a collection between the two statements: insert.
		if !errors.Is(err, pgx.ErrNoRows) || attempt >= 5 {
			return 0, err
		}
	}
	var dirs blobfs.DirSet
	if sd.committed {
		// An earlier run of this transaction moved the spool into place
		// and was rolled back; the file is ours only if still there.
		path := s.blobs.Path(sd.id)
		if _, err := os.Stat(path); err != nil {
			return 0, fmt.Errorf("postgres: blob %s vanished while the delivery was retried: %w", sd.id, err)
		}
		dirs.Add(filepath.Dir(path))
	} else {
		if _, err := s.blobs.Commit(sd.sp, &dirs); err != nil {
			return 0, err
		}
		sd.committed = true
	}
	if err := dirs.Sync(); err != nil {
		return 0, err
	}
	return id, nil
}

// newMsg is a message to add with appendRows.
type newMsg struct {
	flags   []string // canonical
	date    time.Time
	blobRow int64
	blobID  string
	size    int64
}

// appendRows adds msgs at the end of mb (locked by the caller) with
// consecutive UIDs and ascending MODSEQs, and writes mb's UIDNEXT,
// HIGHESTMODSEQ and counters back, in one round trip.
func appendRows(ctx context.Context, tx pgx.Tx, mb *mailstore.Mailbox, now time.Time, msgs []newMsg) ([]mailstore.Message, error) {
	return insertRows(ctx, tx, mb, now, msgs, true)
}

// insertRows is appendRows; with save false it leaves the mailbox row's
// UPDATE (queueSaveMailbox with the advanced mb) to the caller.
func insertRows(ctx context.Context, tx pgx.Tx, mb *mailstore.Mailbox, now time.Time, msgs []newMsg, save bool) ([]mailstore.Message, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	if uint64(mb.UIDNext) == 0 || uint64(mb.UIDNext)+uint64(len(msgs)) > math.MaxUint32 {
		return nil, fmt.Errorf("postgres: mailbox %q: UID space exhausted", mb.Name)
	}
	n := len(msgs)
	var (
		uids, modseqs, idates, sdates, sizes, blobRows = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		flags, hashes                                  = make([]string, n), make([]string, n)
		seen, deleted                                  = make([]bool, n), make([]bool, n)
		out                                            = make([]mailstore.Message, n)
	)
	sdate := nanos(now)
	for i, m := range msgs {
		f := m.flags
		if f == nil {
			f = []string{}
		}
		out[i] = mailstore.Message{
			UID:          mb.UIDNext,
			ModSeq:       mb.HighestModSeq + 1,
			Flags:        slices.Clone(f),
			InternalDate: fromNanos(nanos(m.date)),
			SaveDate:     fromNanos(sdate),
			Size:         m.size,
			BlobID:       m.blobID,
		}
		uids[i], modseqs[i] = int64(out[i].UID), int64(out[i].ModSeq)
		flags[i] = encodeFlags(f)
		seen[i] = slices.Contains(f, mailstore.FlagSeen)
		deleted[i] = slices.Contains(f, mailstore.FlagDeleted)
		idates[i], sdates[i], sizes[i], blobRows[i], hashes[i] = nanos(m.date), sdate, m.size, m.blobRow, m.blobID
		mb.UIDNext++
		mb.HighestModSeq++
		mb.Messages++
		if !seen[i] {
			mb.Unseen++
		}
		mb.Size += m.size
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO messages (mailbox_id, uid, modseq, flags, seen, deleted, internal_date, save_date, size, blob_id, blob_hash)
		SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::boolean[], $6::boolean[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[])`,
		mb.ID, uids, modseqs, flags, seen, deleted, idates, sdates, sizes, blobRows, hashes)
	if save {
		queueSaveMailbox(b, mb)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// queueSaveMailbox queues the statement that writes mb's UIDNEXT,
// HIGHESTMODSEQ and counters back.
func queueSaveMailbox(b *pgx.Batch, mb *mailstore.Mailbox) {
	b.Queue(`UPDATE mailboxes SET uid_next = $2, highest_modseq = $3, messages = $4, unseen = $5, size = $6 WHERE id = $1`,
		mb.ID, int64(mb.UIDNext), int64(mb.HighestModSeq), int64(mb.Messages), int64(mb.Unseen), mb.Size)
}

// copiesOf turns existing rows into new messages sharing their blobs.
func copiesOf(rows []msgRow) []newMsg {
	out := make([]newMsg, len(rows))
	for i, r := range rows {
		out[i] = newMsg{flags: r.Flags, date: r.InternalDate, blobRow: r.blobRow, blobID: r.BlobID, size: r.Size}
	}
	return out
}

func uidsOfRows(rows []msgRow) []mailstore.UID {
	out := make([]mailstore.UID, len(rows))
	for i, r := range rows {
		out[i] = r.UID
	}
	return out
}

// rangeArrays returns the bounds of ranges as two arrays for unnest.
func rangeArrays(rs []mailstore.UIDRange) (lo, hi []int64) {
	lo, hi = make([]int64, len(rs)), make([]int64, len(rs))
	for i, r := range rs {
		lo[i], hi[i] = int64(r.Min), int64(r.Max)
	}
	return lo, hi
}

// qRanges selects the messages of mailbox $1 in the ranges [$2[i], $3[i]]:
// one index range scan of the (mailbox_id, uid) primary key per range.
// OFFSET 0 keeps the planner from flattening the LATERAL subquery into a
// join that filters the whole mailbox.
const qRanges = `SELECT ` + msgCols + ` FROM unnest($2::bigint[], $3::bigint[]) AS r(lo, hi)
	CROSS JOIN LATERAL (SELECT * FROM messages m WHERE m.mailbox_id = $1 AND m.uid BETWEEN r.lo AND r.hi OFFSET 0) m`

// selectMessages returns the messages of a mailbox with the given UIDs (any
// order, duplicates allowed), ascending by UID; UIDs that do not exist are
// skipped. uids == nil selects every message.
func selectMessages(ctx context.Context, q querier, mailboxID int64, uids []mailstore.UID) ([]msgRow, error) {
	var rs []mailstore.UIDRange
	if uids == nil {
		rs = []mailstore.UIDRange{{Min: 0, Max: math.MaxUint32}}
	} else {
		sorted := slices.Clone(uids)
		slices.Sort(sorted)
		sorted = slices.Compact(sorted)
		if len(sorted) == 0 {
			return nil, nil
		}
		// Runs of consecutive UIDs: each range holds exactly the UIDs
		// asked for.
		rs = mailstore.UIDRanges(sorted, nil)
	}
	lo, hi := rangeArrays(rs)
	rows, err := q.Query(ctx, qRanges+` ORDER BY m.uid`, mailboxID, lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []msgRow
	for rows.Next() {
		r, err := scanMsg(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// recipientName returns the canonical mailbox name of a delivery target.
func recipientName(r mailstore.Recipient) (string, bool) {
	name := r.Mailbox
	if name == "" {
		name = mailstore.Inbox
	}
	name, err := mailstore.CanonicalMailboxName(name)
	return name, err == nil
}

// Deliver stores the spooled message once and adds it to each recipient's
// mailbox, in one transaction. Each recipient runs in its own savepoint:
// one recipient's failure (no such account or mailbox, over quota) leaves
// the others' copies in place.
func (s *Store) Deliver(ctx context.Context, sp mailstore.Spool, date time.Time, rcpts []mailstore.Recipient) []error {
	errs := make([]error, len(rcpts))
	fail := func(err error) []error {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	if sp == nil {
		return fail(errors.New("postgres: nil spool"))
	}
	defer sp.Abort()
	if err := s.enter(); err != nil {
		return fail(err)
	}
	defer s.leave()
	if len(rcpts) == 0 {
		return errs
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	sd, err := s.finishSpool(sp)
	if err != nil {
		return fail(err)
	}
	if date.IsZero() {
		date = time.Now()
	}
	type key struct {
		acct int64
		name string
	}
	names := make([]string, len(rcpts))
	valid := make([]bool, len(rcpts))
	var keyAccts []int64
	var keyNames []string
	seenKey := map[key]bool{}
	for i, r := range rcpts {
		names[i], valid[i] = recipientName(r)
		if k := (key{r.AccountID, names[i]}); valid[i] && !seenKey[k] {
			seenKey[k] = true
			keyAccts = append(keyAccts, r.AccountID)
			keyNames = append(keyNames, names[i])
		}
	}
	var accts []int64
	err = s.txn(ctx, func(tx pgx.Tx) error {
		clear(errs)
		accts = accts[:0]
		now := time.Now()
		blobRow, err := s.blobStage(ctx, tx, sd)
		if err != nil {
			return err
		}
		// Resolve and lock the target mailboxes in one statement, in ID
		// order. A mailbox renamed meanwhile no longer matches its old
		// name when the lock is granted (the row is re-checked), so it
		// is not delivered to under a name it no longer has.
		rows, err := tx.Query(ctx, `SELECT `+prefixCols("mb", mailboxCols)+` FROM mailboxes mb
			JOIN unnest($1::bigint[], $2::text[]) AS r(acct, name) ON mb.account_id = r.acct AND mb.name = r.name
			ORDER BY mb.id FOR NO KEY UPDATE OF mb`, keyAccts, keyNames)
		if err != nil {
			return err
		}
		boxes := map[key]*mailstore.Mailbox{}
		var owners []int64
		for rows.Next() {
			mb, err := scanMailbox(rows)
			if err != nil {
				rows.Close()
				return err
			}
			boxes[key{mb.AccountID, mb.Name}] = &mb
			if !slices.Contains(owners, mb.AccountID) {
				owners = append(owners, mb.AccountID)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		slices.Sort(owners)
		limits, err := lockAccounts(ctx, tx, owners)
		if err != nil {
			return err
		}
		// Each recipient's rows go in under a SAVEPOINT, so that one
		// recipient's failure leaves the others delivered, except when
		// there is only one: then a failure rolls everything back anyway
		// and two round trips are saved. The mailbox row, locked above
		// by the top transaction, is updated by the top transaction
		// too, right after the savepoint: a row locked by a transaction
		// and updated by its subtransaction needs a MultiXact, and
		// MultiXact lookups were PostgreSQL's hottest function under
		// concurrent delivery (docs/benchmarks.md, scale-out).
		deliverable := 0
		for i, r := range rcpts {
			if mb := boxes[key{r.AccountID, names[i]}]; valid[i] && mb != nil {
				deliverable++
			}
		}
		delivered := false
		for i, r := range rcpts {
			mb := boxes[key{r.AccountID, names[i]}]
			if !valid[i] || mb == nil {
				errs[i] = mailstore.ErrNoSuchMailbox
				var one int
				if err := tx.QueryRow(ctx, `SELECT 1 FROM accounts WHERE id = $1`, r.AccountID).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
					errs[i] = mailstore.ErrNoSuchAccount
				} else if err != nil {
					return err
				}
				continue
			}
			l, ok := limits[mb.AccountID]
			if !ok {
				errs[i] = mailstore.ErrNoSuchAccount
				continue
			}
			saved := *mb
			add := func(tx pgx.Tx, save bool) error {
				if err := checkUsage(ctx, tx, mb.AccountID, l, sd.size, 1); err != nil {
					return err
				}
				_, err := insertRows(ctx, tx, mb, now, []newMsg{{date: date, blobRow: blobRow, blobID: sd.id, size: sd.size}}, save)
				return err
			}
			var err error
			if deliverable == 1 {
				err = add(tx, true)
			} else {
				err = savepoint(ctx, tx, func(tx pgx.Tx) error { return add(tx, false) })
				if err == nil {
					// The counters, by the top transaction, before
					// the next recipient's quota check reads them.
					var b pgx.Batch
					queueSaveMailbox(&b, mb)
					if err := tx.SendBatch(ctx, &b).Close(); err != nil {
						return err
					}
				}
			}
			if err != nil {
				if retryable(err) {
					return err
				}
				*mb = saved
				errs[i] = dbErr(err)
				continue
			}
			delivered = true
			if !slices.Contains(accts, mb.AccountID) {
				accts = append(accts, mb.AccountID)
			}
		}
		if !delivered {
			return errRollback // nothing to keep; errs says why
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	s.changed(ctx, accts...)
	return errs
}

// prefixCols qualifies a column list with a table alias.
func prefixCols(alias, cols string) string {
	parts := strings.Split(cols, ", ")
	for i, p := range parts {
		parts[i] = alias + "." + p
	}
	return strings.Join(parts, ", ")
}

// savepoint runs fn inside a SAVEPOINT of tx: if fn fails, its statements
// are rolled back and the transaction continues.
func savepoint(ctx context.Context, tx pgx.Tx, fn func(tx pgx.Tx) error) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if err := fn(sp); err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return fmt.Errorf("%w (and rollback to savepoint: %v)", err, rerr)
		}
		return err
	}
	return sp.Commit(ctx)
}

// precheck reports, without locking, whether the mailbox exists and the
// account could take bytes octets in n more messages. Append and
// AppendMany call it before moving spools into the blob tree, so that an
// append to a missing mailbox or over quota, which are refused again (and
// authoritatively) under the locks, usually leaves no orphan file.
func (s *Store) precheck(ctx context.Context, mailboxID, bytes, n int64) error {
	u, err := scanUsage(s.pool.QueryRow(ctx, `SELECT a.quota_bytes, a.quota_messages,
		coalesce((SELECT sum(size) FROM mailboxes WHERE account_id = a.id), 0)::bigint,
		coalesce((SELECT sum(messages) FROM mailboxes WHERE account_id = a.id), 0)::bigint
		FROM mailboxes mb JOIN accounts a ON a.id = mb.account_id WHERE mb.id = $1`, mailboxID))
	if errors.Is(err, mailstore.ErrNoSuchAccount) {
		return mailstore.ErrNoSuchMailbox
	}
	if err != nil {
		return dbErr(err)
	}
	if !u.Allows(bytes, n) {
		return overQuota(u, bytes, n)
	}
	return nil
}

// Append stores the spooled message in one mailbox (IMAP APPEND).
func (s *Store) Append(ctx context.Context, mailboxID int64, sp mailstore.Spool, flags []string, date time.Time) (mailstore.Message, error) {
	if sp == nil {
		return mailstore.Message{}, errors.New("postgres: nil spool")
	}
	msgs, err := s.AppendMany(ctx, mailboxID, []mailstore.AppendMessage{{Spool: sp, Flags: flags, Date: date}})
	if err != nil {
		return mailstore.Message{}, err
	}
	return msgs[0], nil
}

// AppendMany stores several spooled messages in one mailbox, all or none
// (IMAP MULTIAPPEND, RFC 3502 §6.3.11), in one transaction: the spools are
// finished (fsynced, parsed) first, then the transaction makes every blob
// present (blobStage, in hash order), locks the mailbox and the account,
// checks the quota for all messages together and inserts every row. If any
// step fails the transaction rolls back; blob files already moved into
// place are orphans that CollectGarbage removes.
func (s *Store) AppendMany(ctx context.Context, mailboxID int64, msgs []mailstore.AppendMessage) ([]mailstore.Message, error) {
	defer func() {
		for _, m := range msgs {
			if m.Spool != nil {
				m.Spool.Abort()
			}
		}
	}()
	flags, err := mailstore.CheckAppend(msgs)
	if err != nil {
		return nil, err
	}
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	if len(msgs) == 0 {
		_, err := s.mailboxByID(ctx, mailboxID)
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sds := make([]*spooled, len(msgs))
	var total int64
	for i, m := range msgs {
		sd, err := s.finishSpool(m.Spool)
		if err != nil {
			return nil, fmt.Errorf("postgres: message %d: %w", i+1, err)
		}
		sds[i] = sd
		total += sd.size
	}
	if err := s.precheck(ctx, mailboxID, total, int64(len(msgs))); err != nil {
		return nil, err
	}
	// Blob rows are locked in hash order, so that two calls with the
	// same contents cannot deadlock; one row (and one file) per content.
	order := make([]int, len(sds))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(sds[a].id, sds[b].id) })
	now := time.Now()
	var out []mailstore.Message
	var acct int64
	err = s.txn(ctx, func(tx pgx.Tx) error {
		blobRows := make([]int64, len(sds))
		byHash := map[string]int64{}
		for _, i := range order {
			sd := sds[i]
			if id, ok := byHash[sd.id]; ok {
				// Same content as an earlier message of the call:
				// its row is locked, its file in place.
				if !sd.committed {
					var dirs blobfs.DirSet
					if _, err := s.blobs.Commit(sd.sp, &dirs); err != nil {
						return err
					}
					sd.committed = true
				}
				blobRows[i] = id
				continue
			}
			id, err := s.blobStage(ctx, tx, sd)
			if err != nil {
				return err
			}
			byHash[sd.id] = id
			blobRows[i] = id
		}
		mb, err := lockMailbox(ctx, tx, mailboxID)
		if err != nil {
			return err
		}
		acct = mb.AccountID
		if err := checkQuota(ctx, tx, mb.AccountID, total, int64(len(sds))); err != nil {
			return err
		}
		add := make([]newMsg, len(sds))
		for i, sd := range sds {
			d := msgs[i].Date
			if d.IsZero() {
				d = now
			}
			add[i] = newMsg{flags: flags[i], date: d, blobRow: blobRows[i], blobID: sd.id, size: sd.size}
		}
		out, err = appendRows(ctx, tx, &mb, now, add)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.changed(ctx, acct)
	return out, nil
}
