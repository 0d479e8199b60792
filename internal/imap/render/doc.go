// Package render writes the message data of IMAP FETCH responses — ENVELOPE,
// BODY, BODYSTRUCTURE, BODY[section], BINARY[section] and BINARY.SIZE — from
// the structure that package message computed once, at delivery, and the
// stored message bytes. A FETCH never re-parses a message: ENVELOPE and
// BODYSTRUCTURE come from the stored message.Part tree, and every section is
// a byte range (or a concatenation of byte ranges) of the stored blob.
//
// # Why it exists
//
// Package message deliberately knows nothing about IMAP syntax; the session
// code (package imap) should not have to know MIME. This package sits
// between them and owns every protocol formatting rule that depends on the
// message structure: choosing quoted strings or literals, NIL for absent
// values, the "7bit" and ("charset" "us-ascii") defaults, unfolding header
// strings, the RFC 3501 section 6.4.5 section and part-number rules, and the
// serving-time rules that make our answers match what established servers
// (Dovecot 2.3.19, recorded in shared/testdata/mime-oracle) send for the same
// bytes:
//
//   - Strings with CR, LF, NUL, 8-bit bytes or more than four quoted-specials
//     are sent as literals; a NUL byte is never sent in a string or in a
//     BODY[] literal (RFC 3501 CHAR8 excludes it): it becomes 0x80, as
//     Dovecot does. BINARY[] sections (sent as literal8) keep NUL.
//   - ENVELOPE: Subject and display names have runs of white space squeezed
//     to one space and are trimmed; Date, Message-ID and In-Reply-To lose
//     their line breaks; encoded words are never decoded; absent Sender and
//     Reply-To repeat From (RFC 3501 section 7.4.2).
//   - BODYSTRUCTURE: text/* parts without a charset get ("charset"
//     "us-ascii"); a multipart without usable children shows one empty
//     text/plain part; message/rfc822 parts carry the envelope, body and line
//     count of the encapsulated message.
//   - Sections: HEADER.FIELDS[.NOT] returns the matching header lines in
//     their original order plus a CRLF; P.MIME of the single part of a
//     non-multipart message is that message's header; a part number that
//     does not exist gives an empty section.
//
// The package also contains a small IMAP data tokenizer (ParseData,
// SplitResponse) that turns response bytes into trees of lists, strings and
// atoms, for tests that compare responses as data rather than bytes.
//
// # Writing
//
// Writers take a *bufio.Writer and return nothing: bufio.Writer errors are
// sticky, so the caller checks the error once, when it flushes the response.
// Section data is returned as an io.ReaderAt plus a size so that large
// sections are streamed from the blob into the response literal without
// copying the message into memory.
package render
