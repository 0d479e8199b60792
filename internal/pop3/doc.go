// Package pop3 is Letterbox's POP3 server: RFC 1939 (USER/PASS, STAT, LIST,
// RETR, DELE, NOOP, RSET, QUIT, TOP, UIDL; no APOP), RFC 2449 (CAPA,
// RESP-CODES, PIPELINING, EXPIRE NEVER, IMPLEMENTATION, [IN-USE]), RFC 2595
// (STLS), RFC 3206 ([SYS/TEMP], [AUTH], AUTH-RESP-CODE) and RFC 5034 with
// SCRAM-SHA-256[-PLUS] (RFC 7677), PLAIN (RFC 4616) and LOGIN (the SASL
// mechanisms are in package auth, shared with IMAP).
//
// # Why it is hand-written
//
// There is no maintained POP3 server library for Go: the few packages that
// exist are unmaintained experiments without STLS, CAPA, SASL or pipelining,
// and none of them can express POP3 as a view of a mail store that IMAP shares.
// The protocol is small (a line-based command loop and a handful of commands),
// so it is implemented here directly on top of net, bufio and crypto/tls, and
// talks to storage only through mailstore.Store.
//
// # The maildrop
//
// POP3 sees the account's INBOX. At login the session takes the mailbox's
// exclusive POP3 lock (Store.LockMailbox) and snapshots the message list;
// message numbers are positions in that snapshot for the whole session.
// Messages delivered later appear in the next session. DELE only marks a
// message; QUIT in the TRANSACTION state removes the marked messages with one
// Store.Expunge (atomic and durable) before it answers +OK, so IMAP sessions
// see an ordinary expunge. Any other end of the session (dropped connection,
// idle timeout, too many errors, server shutdown) removes nothing.
//
// UIDL is "<UIDVALIDITY>.<UID>" in decimal: unique and stable forever
// (UIDs are never reused within a UIDVALIDITY), at most 21 characters, all
// in 0x21-0x7E.
//
// RETR sets \Seen on the message at once (IMAP sees it); TOP does not. A
// message that already had \Seen in the login snapshot is not written again.
//
// # Message sizes
//
// The store keeps message bodies with CRLF line endings, so RETR sends the
// blob's bytes unchanged apart from dot-stuffing. A multi-line response must
// end with CRLF "." CRLF, though, so a body that does not end in CRLF gets
// one added before the terminating line: "\r\n" after a body ending in any
// byte other than CR, or "\n" after a body ending in a bare CR. An empty body
// gets nothing. The size reported by LIST, STAT and the RETR +OK line is the
// exact number of octets the client receives before the terminating ".\r\n"
// once it has removed the dot-stuffing: the blob size plus that added line
// end. That is what RFC 1939 clients count, and it is the same on every
// call, because it is computed (lazily, by reading the last two octets of
// the blob) with the same rule that RETR applies.
//
// # Response codes
//
//   - [AUTH] (RFC 3206 §4) for every authentication failure caused by the
//     credentials or by policy: wrong password and unknown user (one
//     identical reply), a disallowed authorization identity, a failed SCRAM
//     channel binding, and an attempt to use a plaintext mechanism
//     (USER/PASS, AUTH PLAIN, AUTH LOGIN) on a connection that is neither
//     TLS nor from a loopback address (unless tls.require_tls_for_auth is
//     false). RFC 3206 lists "an
//     attempt to authenticate in violation of policy (such as from an invalid
//     location ...)" as an [AUTH] case; [SYS/PERM] is meant for problems of
//     the system, which a missing TLS layer is not. The client is told to
//     use STLS when the server offers it.
//   - [SYS/TEMP] (RFC 3206 §3) when the authentication backend or the store
//     fails temporarily (also for QUIT's "some deleted messages not removed").
//   - [IN-USE] (RFC 2449 §8.1.2) when another session holds the maildrop
//     lock; the session stays in the AUTHORIZATION state, as RFC 1939 §4
//     allows, so the client may retry or QUIT.
//
// # Limits
//
// A command line may be 512 octets including CRLF (RFC 2449 asks clients for
// 255; we are lenient), a SASL response line 2048 octets. Longer lines are
// read and discarded up to their line end without being buffered, then
// answered with -ERR. Each connection reads and writes through fixed-size
// buffers, so its memory is bounded whatever the client sends. After ten
// -ERR responses in a session the connection is closed, as it is after the
// idle timeout (RFC 1939 §3's autologout timer, 10 minutes by default).
//
// Pipelined commands (RFC 2449 PIPELINING) are read as they come; responses
// are buffered and flushed only when no complete command is waiting in the
// input buffer, so a pipelined batch gets a batched answer.
package pop3
