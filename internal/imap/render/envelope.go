package render

import (
	"bufio"

	"github.com/letterbox/letterbox/internal/message"
)

// Envelope writes the parenthesised ENVELOPE of env (RFC 3501 section 7.4.2,
// RFC 9051 section 7.5.2):
//
//	(date subject from sender reply-to to cc bcc in-reply-to message-id)
//
// A nil env (a message whose structure has no envelope) is written with
// every field NIL. Absent Sender and Reply-To repeat From, as the RFCs
// require of the server. Strings are served as described in the package doc:
// Subject and display names squeezed, Date, In-Reply-To and Message-ID
// without line breaks, encoded words not decoded.
func Envelope(w *bufio.Writer, env *message.Envelope) {
	if env == nil {
		w.WriteString("(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)")
		return
	}
	w.WriteByte('(')
	nstringNoLF(w, env.Date)
	w.WriteByte(' ')
	if env.Subject.Valid {
		human(w, env.Subject.S)
	} else {
		w.WriteString("NIL")
	}
	w.WriteByte(' ')
	addresses(w, env.From)
	w.WriteByte(' ')
	addresses(w, orFrom(env.Sender, env.From))
	w.WriteByte(' ')
	addresses(w, orFrom(env.ReplyTo, env.From))
	w.WriteByte(' ')
	addresses(w, env.To)
	w.WriteByte(' ')
	addresses(w, env.Cc)
	w.WriteByte(' ')
	addresses(w, env.Bcc)
	w.WriteByte(' ')
	nstringNoLF(w, env.InReplyTo)
	w.WriteByte(' ')
	nstringNoLF(w, env.MessageID)
	w.WriteByte(')')
}

// orFrom implements "if the Sender or Reply-To lines are absent in the
// [RFC-2822] header, or are present but empty, the server sets the
// corresponding member of the envelope to be the same value as the from
// member" (RFC 3501 section 7.4.2).
func orFrom(l, from []message.Address) []message.Address {
	if len(l) == 0 {
		return from
	}
	return l
}

// addresses writes an address list, NIL when empty. Group syntax is written
// as RFC 3501 section 7.4.2 describes: a group start is (NIL NIL "name"
// NIL), a group end (NIL NIL NIL NIL).
func addresses(w *bufio.Writer, l []message.Address) {
	if len(l) == 0 {
		w.WriteString("NIL")
		return
	}
	w.WriteByte('(')
	for i := range l {
		a := &l[i]
		switch a.Kind {
		case message.AddrGroupStart:
			w.WriteString("(NIL NIL ")
			String(w, a.Mailbox)
			w.WriteString(" NIL)")
		case message.AddrGroupEnd:
			w.WriteString("(NIL NIL NIL NIL)")
		default:
			w.WriteByte('(')
			if a.Name == "" {
				w.WriteString("NIL")
			} else {
				human(w, a.Name)
			}
			w.WriteByte(' ')
			if a.Route == "" {
				w.WriteString("NIL")
			} else {
				String(w, a.Route)
			}
			w.WriteByte(' ')
			String(w, a.Mailbox)
			w.WriteByte(' ')
			String(w, a.Host)
			w.WriteByte(')')
		}
	}
	w.WriteByte(')')
}
