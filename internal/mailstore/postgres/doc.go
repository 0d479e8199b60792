// Package postgres is Letterbox's scale-out mail store backend: metadata in
// PostgreSQL (github.com/jackc/pgx/v5, pgxpool) and message bodies in
// content-addressed files (package blobfs) on a file system shared by every
// node.
//
// It exists so that several Letterbox nodes can serve the same accounts at
// once (behind a load balancer, or for availability): each node runs
// `letterbox serve` against one database and one blob directory, and a
// message delivered, flagged or expunged on one node is seen by the IMAP
// sessions of every other node, with the same UIDs, MODSEQs and quotas as
// if there were one node. The embedded sqlite backend remains the default
// for a single node; both pass the same conformance suite (storetest).
//
// # Schema
//
// schema.go holds the versioned migrations (table schema_version); Open
// applies them (Migrate), inside a transaction holding
// pg_advisory_xact_lock(migrateLockKey), so that nodes starting together
// serialise and the later ones find the schema current. A database with a
// newer schema than the program is refused. Tables:
//
//	meta       last_uidvalidity (UIDVALIDITYs are never reused)
//	accounts   name, password hash, SCRAM secret, quotas
//	mailboxes  name, UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, exact counters
//	blobs      one row per body file: SHA-256, size, parsed MIME structure
//	messages   (mailbox_id, uid) -> modseq, flags, dates, size, blob_id;
//	           index (mailbox_id, modseq) for CONDSTORE and the scans
//	expunged   (mailbox_id, uid) -> modseq: the expunge log (QRESYNC)
//
// # Transactions and locks
//
// Every write is one READ COMMITTED transaction (PostgreSQL commits
// concurrent transactions in parallel: no group commit is needed). A
// transaction that allocates UIDs or MODSEQs locks the mailbox's row first
// (SELECT ... FOR NO KEY UPDATE) and writes UIDNEXT, HIGHESTMODSEQ and the
// counters back before COMMIT, so the allocations of one mailbox are
// strictly ordered and gap-free across all nodes, and its transactions
// commit in MODSEQ order. Lock order, the same for every writer so that
// writers do not deadlock: blob rows (by hash), mailbox rows (ascending ID,
// several in one statement), account rows (ascending ID). An operation
// that may grow an account locks the account's row and checks the quota
// (Usage.Allows) in the same transaction, after the mailbox rows, so quotas
// hold across nodes. Deliver is one transaction with a SAVEPOINT per
// recipient: a recipient's failure (no mailbox, over quota) leaves the
// others delivered. Deadlocks and serialization failures (SQLSTATE 40P01,
// 40001) rerun the transaction.
//
// Durability (design.md §4): a method returns only after COMMIT returned,
// with synchronous_commit on (a server configured with it off gets it
// switched on for letterbox's sessions; it is never lowered), and after
// the blob file and its directory were fsynced (blobfs), which happens
// before the rows referencing the blob are inserted. See gc.go for how
// blob garbage collection stays safe across nodes: both sides lock the blob
// row, and the collector removes the file inside its transaction.
//
// # Notifications
//
// Writers never push changes. Every node finds them by scanning, for each
// account that local sessions subscribed to (Subscribe), what changed above
// its watermarks: per mailbox, the name, UIDNEXT and HIGHESTMODSEQ it has
// published. One scan is one statement, so one snapshot: the account's
// mailboxes, the messages whose MODSEQ is above their mailbox's watermark
// (index (mailbox_id, modseq)), and the expunge log entries above it.
// Because a mailbox's transactions commit in MODSEQ order, a snapshot that
// shows HIGHESTMODSEQ h shows every change up to h: publishing the range
// (watermark, h] and moving the watermark to h publishes each change
// exactly once, in order. Messages at or above the previously published
// UIDNEXT are ChangeAppend (in UID order, with their current flags and
// size), other changed messages ChangeFlags, expunge log entries
// ChangeExpunge (except UIDs that appeared and vanished between two
// scans), and the difference between two mailbox lists (by ID) gives
// ChangeMailboxCreate, ChangeMailboxRename (children of a renamed mailbox
// too, and the mailbox made by RENAME INBOX, with its messages) and
// ChangeMailboxDelete. Scans of one account are serialised. Changes that
// happen between two scans are summarised: an append followed by a flag
// change is one ChangeAppend carrying the later flags and MODSEQ, two flag
// changes of one message are one ChangeFlags; a session never misses a
// state, it may skip intermediate ones.
//
// A mutating call, after its COMMIT, scans the accounts it changed that
// have local subscribers (waiting for a scan that started after the commit,
// which several concurrent calls share) before it returns, so a session
// sees its own changes at its next Drain. It also queues the account IDs
// for the notifier goroutine, which sends them, coalesced, to the other
// nodes with one `SELECT pg_notify('letterbox_changes', '<node> <acct>
// ...')` per batch, outside any transaction (a NOTIFY inside the write
// transaction would serialise every commit of the cluster). A listener
// goroutine holds one dedicated connection (application_name
// "letterbox-listen/<node>") in LISTEN letterbox_changes; a notification
// from another node queues a background scan of the named accounts that
// have local subscribers. When the LISTEN connection breaks, the listener
// reconnects with backoff and then scans every watched account: the scans
// catch up by MODSEQ, so nothing committed meanwhile is lost.
//
// A sweep every 30 seconds drops the watermarks of accounts whose last
// local subscription has closed (mailstore.Hub.Subscribers), and compares
// the watched accounts' mailboxes (count, highest ID, sum of
// HIGHESTMODSEQs; one statement for all of them) with what was published,
// scanning those that differ: a change whose NOTIFY never came (its node
// crashed between COMMIT and NOTIFY) is published at most one sweep late.
//
// # Mailbox locks
//
// LockMailbox (POP3) takes pg_try_advisory_lock(mailbox ID) on one
// connection taken from the pool while the node holds at least one lock,
// plus an in-process map for the sessions of this node. The lock is
// exclusive across nodes; it is released by pg_advisory_unlock, and if the
// connection dies, with the connection.
//
// # Connections
//
// Each node uses one pgxpool (pool_max_conns in the URL; without it
// max(16, 4×GOMAXPROCS), since sessions mostly wait on the network), one
// dedicated LISTEN connection, and one pool connection while it holds POP3
// locks. Session state is used (LISTEN, advisory locks, prepared
// statements), so a pooler in front of PostgreSQL must run in session mode.
//
// # When the database fails
//
// Every method takes the caller's context for its statements (COMMIT, once
// sent, is given up to 30 seconds regardless, so a change that may already
// be durable is not abandoned). A database that is down or unreachable
// makes the methods return an error after at most the context's deadline
// or the connect timeout (connect_timeout in the URL, default 10 s); the
// front ends answer with a temporary failure (SMTP/LMTP 4xx, IMAP NO) and
// the pool reconnects once the database is back. A connection lost during
// COMMIT leaves the outcome unknown: the call reports an error and a
// retried delivery may then be stored twice, never lost. A full disk on
// the database server (SQLSTATE 53100) is reported as
// mailstore.ErrInsufficientStorage. Notifications resume after an outage
// by the catch-up scan described above; a node that crashes between a
// COMMIT and its NOTIFY leaves the other nodes to learn of that change
// from their next sweep.
package postgres
