package postgres

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// Notifications: see the package documentation for the design. In short,
// changes are never pushed by the writer: every node finds them by
// scanning the database (scanLocked) for the accounts its local sessions
// watch, and publishes to its Hub what lies above its per-mailbox
// watermarks. A local commit scans synchronously before the call returns;
// other nodes learn which accounts to scan from NOTIFY letterbox_changes.

const (
	// maxPayload bounds a NOTIFY payload (PostgreSQL's limit is 8000
	// bytes).
	maxPayload = 7900
	// scanWorkers scan the accounts named by other nodes' notifications.
	scanWorkers = 4
	// scanTimeout bounds one scan.
	scanTimeout = 30 * time.Second
	// subscribeTimeout bounds the initialisation of an account's
	// watermarks in Subscribe (which has no context); a background scan
	// retries it.
	subscribeTimeout = 5 * time.Second
	// rescanDelay is the pause before a failed scan is tried again.
	rescanDelay = time.Second
	// listenBackoffMax caps the pause between reconnections of the
	// LISTEN connection.
	listenBackoffMax = 5 * time.Second
	// sweepInterval is how often the sweep drops unwatched accounts and
	// checks the watched ones for changes whose NOTIFY never came.
	sweepInterval = 30 * time.Second
)

// watch is the published state of one account on this node: the
// watermarks of its mailboxes. Scans of one account are serialised by mu.
type watch struct {
	acct int64
	// dropped is set (under mu, with the watch removed from the map) by
	// the sweep when the account has no subscribers left; a dropped
	// watch publishes nothing more.
	dropped bool

	// requested counts scan requests of mutating calls (taken after
	// their commit); scanned is the count covered by the last finished
	// scan (a scan covers every request made before it started).
	requested atomic.Uint64

	mu      sync.Mutex
	scanned uint64
	ready   bool // boxes initialised
	boxes   map[int64]boxMark
}

// boxMark is what this node has published of one mailbox: its name, its
// UIDNEXT (UIDs at or above it were not announced) and its HIGHESTMODSEQ
// (changes up to it were published).
type boxMark struct {
	name    string
	uidNext mailstore.UID
	modseq  uint64
}

// notifications is the Store's notification state.
type notifications struct {
	mu      sync.Mutex
	watches map[int64]*watch

	// Accounts to announce to the other nodes (coalesced), and the
	// notifier's wake-up.
	outMu   sync.Mutex
	out     map[int64]struct{}
	outKick chan struct{}

	// Accounts to scan in the background (notifications from other
	// nodes, catch-up after a reconnect, failed scans).
	dirtyMu   sync.Mutex
	dirty     map[int64]struct{}
	dirtyKick chan struct{}
}

func (s *Store) startNotifications() {
	n := &s.notes
	n.watches = make(map[int64]*watch)
	n.out = make(map[int64]struct{})
	n.outKick = make(chan struct{}, 1)
	n.dirty = make(map[int64]struct{})
	n.dirtyKick = make(chan struct{}, 1)
	s.bgWG.Add(3 + scanWorkers)
	go s.notifyLoop()
	go s.listenLoop()
	go s.sweepLoop()
	for range scanWorkers {
		go s.scanLoop()
	}
}

func (s *Store) stopNotifications() {
	s.bgCancel()
	s.bgWG.Wait()
	s.flushNotify()
}

// Subscribe returns a subscription to the account's committed changes, made
// on this node or any other. The first subscription of an account on this
// node initialises the account's watermarks from the current state:
// changes committed from then on are published.
func (s *Store) Subscribe(accountID int64) *mailstore.Subscription {
	sub := s.hub.Subscribe(accountID)
	if err := s.enter(); err != nil {
		return sub // closed: nothing will be published
	}
	defer s.leave()
	w := s.watchOf(accountID, true)
	w.mu.Lock()
	for w.dropped { // the sweep dropped it just now: take the new one
		w.mu.Unlock()
		w = s.watchOf(accountID, true)
		w.mu.Lock()
	}
	defer w.mu.Unlock()
	if !w.ready {
		ctx, cancel := context.WithTimeout(s.bgCtx, subscribeTimeout)
		defer cancel()
		if err := s.initWatch(ctx, w); err != nil {
			// The background scan initialises it later; changes
			// committed until then are not published.
			s.log.Warn("postgres: initialising notifications failed", "account", accountID, "err", err)
			s.markDirtyLater(accountID)
		}
	}
	return sub
}

// watchOf returns the account's watch, creating it if create is set.
// The sweep drops the watches of accounts without subscribers.
func (s *Store) watchOf(acct int64, create bool) *watch {
	n := &s.notes
	n.mu.Lock()
	defer n.mu.Unlock()
	w := n.watches[acct]
	if w == nil && create {
		w = &watch{acct: acct}
		n.watches[acct] = w
	}
	return w
}

// changed is called by a mutating method after its commit: it queues the
// accounts for a NOTIFY to the other nodes and, for each account watched
// here, waits until a scan that started after the commit has published the
// changes (storetest: a mutating call returns only after its changes were
// published).
func (s *Store) changed(ctx context.Context, accts ...int64) {
	if len(accts) == 0 {
		return
	}
	s.queueNotify(accts)
	for _, a := range accts {
		w := s.watchOf(a, false)
		if w == nil {
			continue
		}
		want := w.requested.Add(1)
		// The caller's context bounds the wait: a caller that gives up
		// after its commit leaves the publication to a background scan.
		sctx, cancel := context.WithTimeout(ctx, scanTimeout)
		s.scan(sctx, w, want)
		cancel()
	}
}

// scan runs a scan of w unless one that started after request number want
// (0: any) has finished meanwhile. A failed scan is retried in the
// background.
func (s *Store) scan(ctx context.Context, w *watch, want uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dropped || want != 0 && w.scanned >= want {
		return
	}
	upto := w.requested.Load()
	var err error
	if !w.ready {
		err = s.initWatch(ctx, w)
	} else {
		err = s.scanLocked(ctx, w)
	}
	if err != nil {
		if s.bgCtx.Err() == nil && ctx.Err() == nil {
			s.log.Warn("postgres: scanning for changes failed; retrying", "account", w.acct, "err", err)
		}
		s.markDirtyLater(w.acct)
		return
	}
	w.scanned = upto
}

// initWatch sets the watermarks to the current state. Called with w.mu.
func (s *Store) initWatch(ctx context.Context, w *watch) error {
	rows, err := s.pool.Query(ctx, `SELECT id, name, uid_next, highest_modseq FROM mailboxes WHERE account_id = $1`, w.acct)
	if err != nil {
		return err
	}
	defer rows.Close()
	boxes := map[int64]boxMark{}
	for rows.Next() {
		var id, uidNext int64
		var m boxMark
		if err := rows.Scan(&id, &m.name, &uidNext, &m.modseq); err != nil {
			return err
		}
		m.uidNext = mailstore.UID(uidNext)
		boxes[id] = m
	}
	if err := rows.Err(); err != nil {
		return err
	}
	w.boxes, w.ready = boxes, true
	return nil
}

// qScan reads, in one statement and therefore from one snapshot, what a
// scan needs: the account's mailboxes (kind 0); the messages whose MODSEQ
// lies above their mailbox's watermark (kind 1; for a mailbox not known
// yet, all of them), one index range scan of (mailbox_id, modseq) per
// mailbox that changed; and the expunge log entries above the watermark of
// the known mailboxes (kind 2). $2 and $3 are the known mailboxes' IDs and
// watermarks. OFFSET 0 keeps each LATERAL subquery a parameterised index
// scan (not flattened into a join that filters whole mailboxes).
const qScan = `SELECT 0, id, name, uid_next, highest_modseq, NULL::text, NULL::bigint
	FROM mailboxes WHERE account_id = $1
UNION ALL
SELECT 1, mb.id, NULL, m.uid, m.modseq, m.flags, m.size
	FROM mailboxes mb
	LEFT JOIN unnest($2::bigint[], $3::bigint[]) AS w(id, ms) ON w.id = mb.id
	CROSS JOIN LATERAL (SELECT uid, modseq, flags, size FROM messages m
		WHERE m.mailbox_id = mb.id AND m.modseq > coalesce(w.ms, 0) OFFSET 0) m
	WHERE mb.account_id = $1 AND mb.highest_modseq > coalesce(w.ms, 0)
UNION ALL
SELECT 2, mb.id, NULL, e.uid, e.modseq, NULL, NULL
	FROM unnest($2::bigint[], $3::bigint[]) AS w(id, ms)
	JOIN mailboxes mb ON mb.id = w.id AND mb.highest_modseq > w.ms
	CROSS JOIN LATERAL (SELECT uid, modseq FROM expunged e
		WHERE e.mailbox_id = mb.id AND e.modseq > w.ms OFFSET 0) e`

type scanBox struct {
	id      int64
	name    string
	uidNext mailstore.UID
	modseq  uint64
}

type seenMsg struct {
	uid      mailstore.UID
	modseq   uint64
	flags    string
	size     int64
	expunged bool
}

// scanLocked publishes the account's changes above the watermarks and
// raises them. Called with w.mu held, w ready.
//
// Why nothing is missed or published twice: MODSEQs of a mailbox are
// allocated under its row lock and its transactions commit in MODSEQ
// order, so a snapshot that shows a mailbox at HIGHESTMODSEQ h shows every
// change up to h and none above. Each scan publishes exactly the changes
// in (watermark, h] and sets the watermark to h. Messages with a UID at or
// above the mailbox's UIDNEXT of the previous scan are new: ChangeAppend
// (ascending UID, as sessions append them to their views), carrying the
// message's current flags and MODSEQ; an append and later flag changes
// between two scans are one ChangeAppend. Other changed messages are
// ChangeFlags, expunge log entries ChangeExpunge, except for UIDs that
// were never announced (appended and expunged between two scans). Mailbox
// creations, renames and deletions come from comparing the mailbox list
// with the last one, by ID.
func (s *Store) scanLocked(ctx context.Context, w *watch) error {
	ids := make([]int64, 0, len(w.boxes))
	marks := make([]int64, 0, len(w.boxes))
	for id, m := range w.boxes {
		ids = append(ids, id)
		marks = append(marks, int64(m.modseq))
	}
	rows, err := s.pool.Query(ctx, qScan, w.acct, ids, marks)
	if err != nil {
		return err
	}
	defer rows.Close()
	var boxes []scanBox
	msgs := map[int64][]seenMsg{}
	for rows.Next() {
		var kind int
		var id, n int64
		var name, flags *string
		var modseq int64
		var size *int64
		if err := rows.Scan(&kind, &id, &name, &n, &modseq, &flags, &size); err != nil {
			return err
		}
		switch kind {
		case 0:
			boxes = append(boxes, scanBox{id: id, name: *name, uidNext: mailstore.UID(n), modseq: uint64(modseq)})
		case 1:
			msgs[id] = append(msgs[id], seenMsg{uid: mailstore.UID(n), modseq: uint64(modseq), flags: *flags, size: *size})
		case 2:
			msgs[id] = append(msgs[id], seenMsg{uid: mailstore.UID(n), modseq: uint64(modseq), expunged: true})
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	slices.SortFunc(boxes, func(a, b scanBox) int { return cmpInt64(a.id, b.id) })

	var out []mailstore.Change
	next := make(map[int64]boxMark, len(boxes))
	for _, b := range boxes {
		old, known := w.boxes[b.id]
		switch {
		case !known:
			out = append(out, mailstore.Change{Kind: mailstore.ChangeMailboxCreate, MailboxID: b.id, MailboxName: b.name})
			old = boxMark{uidNext: 1}
		case old.name != b.name:
			out = append(out, mailstore.Change{Kind: mailstore.ChangeMailboxRename, MailboxID: b.id, MailboxName: b.name, OldName: old.name})
		}
		out = appendMessageChanges(out, b, old, msgs[b.id])
		next[b.id] = boxMark{name: b.name, uidNext: max(b.uidNext, old.uidNext), modseq: max(b.modseq, old.modseq)}
	}
	var gone []int64
	for id := range w.boxes {
		if _, ok := next[id]; !ok {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		out = append(out, mailstore.Change{Kind: mailstore.ChangeMailboxDelete, MailboxID: id, MailboxName: w.boxes[id].name})
	}
	w.boxes = next
	s.hub.Publish(w.acct, out...)
	return nil
}

// appendMessageChanges adds the message changes of one mailbox: flag
// changes and expunges of announced messages in MODSEQ order, then the new
// messages in UID order.
func appendMessageChanges(out []mailstore.Change, b scanBox, old boxMark, ms []seenMsg) []mailstore.Change {
	if len(ms) == 0 {
		return out
	}
	var olds, news []seenMsg
	for _, m := range ms {
		if m.modseq > b.modseq {
			continue // cannot happen within one snapshot; be safe
		}
		if m.uid < old.uidNext {
			olds = append(olds, m)
		} else if !m.expunged {
			news = append(news, m)
		}
		// An expunged UID at or above the old UIDNEXT was never
		// announced: nothing to say.
	}
	slices.SortFunc(olds, func(a, b seenMsg) int { return cmpInt64(int64(a.modseq), int64(b.modseq)) })
	slices.SortFunc(news, func(a, b seenMsg) int { return cmpInt64(int64(a.uid), int64(b.uid)) })
	for _, m := range olds {
		c := mailstore.Change{MailboxID: b.id, MailboxName: b.name, UID: m.uid, ModSeq: m.modseq}
		if m.expunged {
			c.Kind = mailstore.ChangeExpunge
		} else {
			c.Kind = mailstore.ChangeFlags
			c.Flags = decodeFlags(m.flags)
		}
		out = append(out, c)
	}
	for _, m := range news {
		out = append(out, mailstore.Change{Kind: mailstore.ChangeAppend, MailboxID: b.id, MailboxName: b.name,
			UID: m.uid, ModSeq: m.modseq, Flags: decodeFlags(m.flags), Size: m.size})
	}
	return out
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// --- background scans ---

// markDirty queues an account for a background scan.
func (s *Store) markDirty(accts ...int64) {
	n := &s.notes
	n.dirtyMu.Lock()
	for _, a := range accts {
		n.dirty[a] = struct{}{}
	}
	n.dirtyMu.Unlock()
	select {
	case n.dirtyKick <- struct{}{}:
	default:
	}
}

// markDirtyLater queues a background scan after rescanDelay.
func (s *Store) markDirtyLater(acct int64) {
	time.AfterFunc(rescanDelay, func() {
		if s.bgCtx.Err() == nil {
			s.markDirty(acct)
		}
	})
}

// markAllDirty queues every watched account (catch-up after the LISTEN
// connection was (re)established).
func (s *Store) markAllDirty() {
	n := &s.notes
	n.mu.Lock()
	accts := make([]int64, 0, len(n.watches))
	for a := range n.watches {
		accts = append(accts, a)
	}
	n.mu.Unlock()
	s.markDirty(accts...)
}

func (s *Store) takeDirty() (int64, bool) {
	n := &s.notes
	n.dirtyMu.Lock()
	defer n.dirtyMu.Unlock()
	for a := range n.dirty {
		delete(n.dirty, a)
		if len(n.dirty) > 0 {
			// Wake another worker for the rest.
			select {
			case n.dirtyKick <- struct{}{}:
			default:
			}
		}
		return a, true
	}
	return 0, false
}

func (s *Store) scanLoop() {
	defer s.bgWG.Done()
	for {
		select {
		case <-s.bgCtx.Done():
			return
		case <-s.notes.dirtyKick:
		}
		for {
			a, ok := s.takeDirty()
			if !ok || s.bgCtx.Err() != nil {
				break
			}
			if w := s.watchOf(a, false); w != nil {
				ctx, cancel := context.WithTimeout(s.bgCtx, scanTimeout)
				s.scan(ctx, w, 0)
				cancel()
			}
		}
	}
}

// --- sweep ---

// sweepLoop runs sweep every sweepInterval.
func (s *Store) sweepLoop() {
	defer s.bgWG.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.bgCtx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.bgCtx, scanTimeout)
		if err := s.sweep(ctx); err != nil && s.bgCtx.Err() == nil {
			s.log.Warn("postgres: checking watched accounts failed", "err", err)
		}
		cancel()
	}
}

// sweep does two things for the watched accounts. It drops the watch of
// every account that has no subscriber left on this node (sessions
// ended), so the node stops scanning for it. And it compares, in one
// statement, each remaining account's mailboxes (count, highest ID, sum
// of HIGHESTMODSEQs) with what this node has published, and queues a scan
// for those that differ: a change whose NOTIFY never came (its node
// crashed between COMMIT and NOTIFY) is published at most one interval
// late instead of waiting for the account's next change. (A rename
// changes none of the three; it is published with the next change.)
func (s *Store) sweep(ctx context.Context) error {
	type mark struct {
		count, maxID int64
		modseqs      uint64
	}
	n := &s.notes
	known := map[int64]mark{}
	n.mu.Lock()
	for a, w := range n.watches {
		if !w.mu.TryLock() {
			continue // being scanned: nothing to check now
		}
		if s.hub.Subscribers(a) == 0 {
			w.dropped = true
			delete(n.watches, a)
		} else if w.ready {
			var m mark
			for id, b := range w.boxes {
				m.count++
				m.maxID = max(m.maxID, id)
				m.modseqs += b.modseq
			}
			known[a] = m
		}
		w.mu.Unlock()
	}
	n.mu.Unlock()
	if len(known) == 0 {
		return nil
	}
	ids := make([]int64, 0, len(known))
	for a := range known {
		ids = append(ids, a)
	}
	rows, err := s.pool.Query(ctx, `SELECT account_id, count(*), max(id), sum(highest_modseq)::bigint
		FROM mailboxes WHERE account_id = ANY($1) GROUP BY account_id`, ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	var stale []int64
	seen := map[int64]bool{}
	for rows.Next() {
		var a int64
		var m mark
		var sum int64
		if err := rows.Scan(&a, &m.count, &m.maxID, &sum); err != nil {
			return err
		}
		m.modseqs = uint64(sum)
		seen[a] = true
		if m != known[a] {
			stale = append(stale, a)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for a := range known {
		if !seen[a] { // the account was deleted
			stale = append(stale, a)
		}
	}
	if len(stale) > 0 {
		s.markDirty(stale...)
	}
	return nil
}

// --- NOTIFY ---

// queueNotify queues accounts for the notifier: one NOTIFY per batch of
// accounts, sent after the commits and never inside a transaction (a
// NOTIFY in a transaction takes a cluster-wide lock at COMMIT, which would
// serialise every commit).
func (s *Store) queueNotify(accts []int64) {
	n := &s.notes
	n.outMu.Lock()
	for _, a := range accts {
		n.out[a] = struct{}{}
	}
	n.outMu.Unlock()
	select {
	case n.outKick <- struct{}{}:
	default:
	}
}

func (s *Store) takeOut() []int64 {
	n := &s.notes
	n.outMu.Lock()
	defer n.outMu.Unlock()
	if len(n.out) == 0 {
		return nil
	}
	accts := make([]int64, 0, len(n.out))
	for a := range n.out {
		accts = append(accts, a)
	}
	clear(n.out)
	return accts
}

// payloads splits accounts into NOTIFY payloads "<node> <acct> <acct> ...".
func (s *Store) payloads(accts []int64) []string {
	slices.Sort(accts)
	var out []string
	var b strings.Builder
	for _, a := range accts {
		id := strconv.FormatInt(a, 10)
		if b.Len() > 0 && b.Len()+1+len(id) > maxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(s.node)
		}
		b.WriteByte(' ')
		b.WriteString(id)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

func (s *Store) notifyLoop() {
	defer s.bgWG.Done()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-s.bgCtx.Done():
			return
		case <-s.notes.outKick:
		}
		accts := s.takeOut()
		if len(accts) == 0 {
			continue
		}
		if err := s.sendNotify(s.bgCtx, accts); err != nil {
			if s.bgCtx.Err() != nil {
				s.queueNotify(accts) // sent by flushNotify
				return
			}
			s.log.Warn("postgres: sending change notification failed; retrying", "err", err)
			s.queueNotify(accts)
			select {
			case <-time.After(backoff):
			case <-s.bgCtx.Done():
				return
			}
			backoff = min(2*backoff, listenBackoffMax)
			continue
		}
		backoff = 50 * time.Millisecond
	}
}

func (s *Store) sendNotify(ctx context.Context, accts []int64) error {
	if s.skipNotify.Load() {
		return nil // test: a node that crashed before its NOTIFY
	}
	for _, p := range s.payloads(accts) {
		if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, p); err != nil {
			return err
		}
	}
	return nil
}

// flushNotify sends what is still queued when the Store closes.
func (s *Store) flushNotify() {
	accts := s.takeOut()
	if len(accts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.sendNotify(ctx, accts); err != nil {
		s.log.Warn("postgres: change notification lost at close", "err", err)
	}
}

// --- LISTEN ---

// listenLoop holds the LISTEN connection: it reconnects with backoff when
// the connection breaks and, each time LISTEN is (re)established, scans
// every watched account, so that nothing committed elsewhere while it was
// down is missed (the scans catch up by MODSEQ).
func (s *Store) listenLoop() {
	defer s.bgWG.Done()
	backoff := 100 * time.Millisecond
	for s.bgCtx.Err() == nil {
		conn, err := s.listen()
		if err != nil {
			if s.bgCtx.Err() != nil {
				return
			}
			s.log.Warn("postgres: LISTEN connection failed; reconnecting", "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.bgCtx.Done():
				return
			}
			backoff = min(2*backoff, listenBackoffMax)
			continue
		}
		backoff = 100 * time.Millisecond
		s.markAllDirty()
		for {
			n, err := conn.WaitForNotification(s.bgCtx)
			if err != nil {
				if s.bgCtx.Err() == nil {
					s.log.Warn("postgres: LISTEN connection lost; reconnecting", "err", err)
				}
				break
			}
			s.handleNotification(n.Payload)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn.Close(ctx)
		cancel()
	}
}

// testListenHook, when set (by tests, before Open), is called before each
// (re)connection of the LISTEN connection.
var testListenHook func(s *Store)

func (s *Store) listen() (*pgx.Conn, error) {
	if h := testListenHook; h != nil {
		h(s)
	}
	ctx, cancel := context.WithTimeout(s.bgCtx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, s.listenCfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// handleNotification queues a scan of the watched accounts another node
// named.
func (s *Store) handleNotification(payload string) {
	f := strings.Fields(payload)
	if len(f) == 0 || f[0] == s.node {
		return // our own: published by the committing call already
	}
	var accts []int64
	for _, x := range f[1:] {
		a, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			continue
		}
		if s.watchOf(a, false) != nil {
			accts = append(accts, a)
		}
	}
	if len(accts) > 0 {
		s.markDirty(accts...)
	}
}
