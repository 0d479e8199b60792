// Package audit is Letterbox's tamper-evident audit log of security-relevant
// events: logins and failed logins, reads of message bodies, deletions,
// moves and copies, and administrative actions. It exists so that an
// operator can answer "who read or removed what, from where, and when"
// after the fact, and can tell whether anybody edited that answer: the
// ordinary server log is neither complete for these events nor protected
// against edits.
//
// # Format
//
// The log is a directory (mode 0700, never a symlink) of files of JSON
// lines (mode 0600): the current file audit.jsonl, and rotated files
// audit-<UTC time of rotation>-<seq of its last record, 20 digits>.jsonl.
// Each line is one JSON object (Record), fields in this order, empty ones
// left out:
//
//	seq          1, 2, 3, ... across all files, never reused
//	time         RFC 3339 UTC with nine fractional digits (TimeLayout)
//	event        login, login_failed, read, expunge, delete, move, copy, mailbox_delete,
//	             admin.user_add, admin.user_passwd, admin.user_del, admin.user_quota,
//	             audit.recovered
//	proto        imap, pop3, cli
//	user         the account; for login_failed the name the client gave
//	remote, tls  the client's ip:port and whether the connection was TLS (tls only with remote)
//	mech         LOGIN (IMAP LOGIN), USER (POP3 USER/PASS), or the SASL mechanism:
//	             PLAIN, SASL-LOGIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS
//	mailbox      the mailbox acted on; dest: the destination of a move or copy
//	uids, count  the messages as a compact UID set ("1:5,9") and how many
//	actor        who ran an admin command (uid=N(name) of the OS user)
//	detail       free text: sections fetched, RETR or TOP, a failure's reason
//	tail_bytes, tail_sha256  audit.recovered only (below)
//	prev         hex SHA-256 of the previous record's line
//
// # What is hashed
//
// prev is the lowercase hex SHA-256 of the previous record's line exactly
// as it is in the file: every byte from its opening '{' to its closing '}',
// without the terminating '\n'. The previous record is the one with seq-1,
// in the same file or at the end of the previous file. The first record of
// a new log (seq 1) has prev = 64 '0's (GenesisPrev). Verify hashes the
// bytes it reads and never re-encodes a record, so any change to any byte of
// a record (or its removal, or a reordering) breaks the link to the record
// after it.
//
// What the chain cannot show by itself: a change to the last record, or the
// removal of the last records (or of the newest files), or a rewrite of the
// chain from some record to the end by somebody who recomputes every hash.
// Against those, record the head (the summary of `letterbox audit verify`
// prints it, and the server logs it at start and at every rotation as
// "audit log open"/"audit log rotated", seq and head) somewhere the attacker
// cannot write, and pass it back as an Anchor (--anchor SEQ:HASH): Verify
// then checks that the record with that seq still has that hash and still
// exists. Removing the oldest files is reported too (MissingStart), so
// archives are moved elsewhere rather than pruned.
//
// # Writing, locking and durability
//
// Every append, by any process (`letterbox serve` and the `letterbox user`
// commands), holds an exclusive flock(2) on audit.lock in the directory
// while it finds the chain head, writes the record with one write(2) to the
// current file opened O_APPEND, and rotates if needed. Finding the head is
// one lstat(2): if the current file is the one this Log has open and has
// the size this Log left it at, nobody else wrote; otherwise the Log
// re-reads the file's end (the last 64 KiB, more only after damage). A
// record thus costs four system calls (flock, lstat, write, flock) and no
// fsync: measured on the 2-core development VM, whose system calls are
// slow, BenchmarkAppend is about 20 µs per record, of which the lock pair
// (BenchmarkFlock) is 3-5 µs. A password check (argon2id) costs thousands
// of times more, so the lock is not what limits logins; it does serialize
// the records of all sessions, at tens of thousands per second.
//
// Durability: a record is in the file (visible to any reader) when Append
// returns. Append does not fsync: a background goroutine fsyncs at most 100
// ms (Options.SyncInterval) after the first unsynced write, one fsync for
// all the records written meanwhile, so a login never waits for a disk
// flush. A power loss or kernel crash can therefore lose the records of the
// last ~100 ms (a process crash loses nothing: the data is in the kernel).
// Admin events (admin.*) use AppendSync and are fsynced before the command
// reports success. Rotation fsyncs the file before renaming it and the
// directory after; Close fsyncs.
//
// A failure to write a record is logged at error level and does not fail
// the mail operation (the log is not a way to stop the server); the admin
// commands, in contrast, refuse to run when the log cannot be opened and
// fail when their record cannot be written.
//
// # Crash recovery
//
// A crash (or a full disk) can cut a write short, leaving bytes after the
// last complete record: a partial line, or with some file systems zeros.
// The next writer (at the next start, or the next append of any process)
// finds the last newline-terminated line that parses as a record; the bytes
// after it are the damaged tail. It keeps them as they are (the log is
// append-only, even for its own leftovers) and appends, after a '\n' unless
// the tail ends with one, an audit.recovered record with the next seq, prev
// = the hash of that last complete record, tail_bytes = the tail's length
// and tail_sha256 = its SHA-256. If the tail is a complete record that
// follows the chain and lacks only its newline, the writer appends the
// newline instead: the record was written. A tail over 1 MiB, or one that
// holds a complete record that does not follow the chain, is no crash; the
// writer refuses to continue (the server does not start) until an operator
// has looked.
//
// Verify accepts exactly this: after a record, lines that are not records,
// immediately followed by an audit.recovered record whose seq and prev
// continue the chain from that record and whose tail_bytes and tail_sha256
// match those lines (plus the one separating newline). It reports each
// such recovery. An incomplete last line of the current file with nothing
// after it (a crash not yet followed by a writer, or a write in progress)
// is accepted and reported as a torn tail; if it is a whole record but for
// its newline, it must continue the chain. Anything else is a Problem.
// FuzzVerify checks that Verify and the writer agree: whatever Verify
// accepts, the writer continues from the same record, and the result
// verifies again.
//
// # Rotation
//
// After a record makes the current file reach Options.MaxFileSize, the
// writer fsyncs it, renames it to its archive name (refusing to replace an
// existing file) and fsyncs the directory. The next record creates a new
// audit.jsonl; its prev is the hash of the archive's last record, and its
// seq continues. Verify orders the archives by the seq in their names,
// checks that each archive's last record has that seq, and checks seq
// continuity and prev across file boundaries; a missing file in the middle
// is a seq gap at the start of the next file (MissingFile).
package audit
