// Package imap is Letterbox's IMAP server: IMAP4rev1 (RFC 3501) with the
// extensions listed in capabilities (auth.go), serving the mail store over
// the mailstore.Store interface only.
//
// # Why hand-written
//
// go-imap v2's server package lacks CONDSTORE/QRESYNC and writes (flushes)
// the socket once per response line, which made bulk FETCH about 60 times
// slower in our measurement. This package instead:
//
//   - parses commands with a streaming, token-by-token parser (parse.go)
//     that holds at most one line segment (maxLine) and one small literal in
//     memory; APPEND literals are streamed into a store spool; overlong
//     lines and literals are refused with BAD / NO [TOOBIG] and discarded
//     without being buffered (RFC 7888 §4 for LITERAL+);
//   - writes responses into one bufio.Writer per connection that is flushed
//     once per command (and not at all while the client has pipelined
//     further commands), streaming message sections straight from the blob
//     (io.ReaderAt) into the buffer;
//   - keeps per-session state small: the selected mailbox is a []UID (4
//     bytes per message); flags, sizes and dates are read from the store
//     when a command needs them.
//
// # Layout
//
//	server.go   Server: Serve, Shutdown
//	session.go  connection loop, state machine (RFC 9051 §3), dispatch, response helpers
//	parse.go    command parser and limits; seqset.go sequence sets
//	auth.go     CAPABILITY, NOOP, LOGOUT, ID, STARTTLS, LOGIN, AUTHENTICATE, ENABLE, NAMESPACE, UNAUTHENTICATE
//	mailbox.go  LIST (LIST-EXTENDED, LIST-STATUS), LSUB, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, STATUS
//	utf7.go     modified UTF-7 mailbox names for IMAP4rev1 clients (RFC 3501 §5.1.3)
//	select.go   SELECT/EXAMINE, CLOSE, UNSELECT, EXPUNGE, the selected view and live updates
//	fetch.go    FETCH (rendering via package render)
//	store.go    STORE;  copy.go COPY/MOVE;  append.go APPEND;  idle.go IDLE;  search.go SEARCH
//	compress.go COMPRESS=DEFLATE (RFC 4978)
//	quota.go    GETQUOTA, GETQUOTAROOT, SETQUOTA (refused) (RFC 9208)
//	audit.go    records for the audit log (Server.Audit): logins, body reads, expunges, moves
//
// # Extensions
//
// Advertised (baseCapabilities in auth.go), each implemented and tested:
// IMAP4rev2 (after ENABLE IMAP4rev2: UTF-8 names, ESEARCH answers, no
// \Recent, LIST in SELECT, STATUS DELETED), LITERAL+, SASL-IR,
// AUTH=SCRAM-SHA-256 (and -PLUS on TLS), AUTH=PLAIN and AUTH=LOGIN (where
// plaintext passwords are allowed; mechanisms in package auth), ID, ENABLE, IDLE, NAMESPACE, UNSELECT, UIDPLUS, MOVE, CHILDREN,
// LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CREATE-SPECIAL-USE, STATUS=SIZE,
// APPENDLIMIT, UNAUTHENTICATE, CONDSTORE, QRESYNC, ESEARCH, SEARCHRES,
// BINARY, SAVEDATE, UTF8=ACCEPT, COMPRESS=DEFLATE, and STARTTLS /
// LOGINDISABLED on plaintext connections that are not from loopback.
// QUOTA, QUOTA=RES-STORAGE and QUOTA=RES-MESSAGE (RFC 9208, quota.go):
// the account's limits as one quota root "", STATUS DELETED-STORAGE, and
// NO [OVERQUOTA] for APPEND and COPY.
// MULTIAPPEND (RFC 3502) is advertised as well: APPEND takes several
// messages, each spooled as it arrives, and the store appends all of them
// in one transaction or none (Store.AppendMany; RFC 3502 §6.3.11).
//
// # Live updates
//
// Each authenticated session subscribes to its account's committed changes
// (mailstore.Subscription). They are reported for the selected mailbox at
// the end of every command (RFC 9051 §7) and at once during IDLE; EXPUNGE
// is held back after FETCH, STORE and SEARCH by sequence number (RFC 9051
// §7.5.1). Changes the session made itself and already answered are not
// reported twice.
package imap
