package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Event names. Protocol code uses these constants; the names are part of
// the log format (docs/configuration.md lists them).
const (
	EventLogin         = "login"          // a successful login
	EventLoginFailed   = "login_failed"   // wrong credentials or a refused authorization identity
	EventRead          = "read"           // message bytes sent: IMAP FETCH of a section, POP3 RETR/TOP
	EventExpunge       = "expunge"        // IMAP EXPUNGE, UID EXPUNGE, CLOSE: the UIDs removed
	EventDelete        = "delete"         // POP3 DELE committed at QUIT: the UIDs removed
	EventMove          = "move"           // IMAP MOVE / UID MOVE: source mailbox, destination, source UIDs
	EventCopy          = "copy"           // IMAP COPY / UID COPY: as move
	EventMailboxDelete = "mailbox_delete" // IMAP DELETE of a mailbox
	EventUserAdd       = "admin.user_add" // letterbox user add (or the local-mode demo account)
	EventUserPasswd    = "admin.user_passwd"
	EventUserDel       = "admin.user_del"
	EventUserQuota     = "admin.user_quota"
	EventRecovered     = "audit.recovered" // written by the log itself after a damaged tail (see the package doc)
)

// Event is what a caller records; the Log adds seq, time and prev.
type Event struct {
	Event   string   // one of the Event* constants (required)
	Proto   string   // "imap", "pop3", "cli"
	User    string   // the account (for login_failed: the name the client gave)
	Remote  string   // client address "ip:port"; "" for local actions
	TLS     bool     // the connection was TLS; recorded only when Remote is set
	Mech    string   // login mechanism: LOGIN (IMAP), USER (POP3 USER/PASS), PLAIN (SASL)
	Mailbox string   // the mailbox acted on (for move/copy: the source)
	Dest    string   // move/copy destination mailbox
	UIDs    []uint32 // the messages acted on, any order; recorded as a compact set
	Actor   string   // who ran an admin command (the OS user)
	Detail  string   // free text: the sections fetched, the reason of a failure, ...
}

// UIDList converts a slice of a uint32-based UID type for Event.UIDs.
func UIDList[T ~uint32](uids []T) []uint32 {
	out := make([]uint32, len(uids))
	for i, u := range uids {
		out[i] = uint32(u)
	}
	return out
}

// Record is one line of the log as JSON, in field order. The hash chain is
// over the line's bytes, not over this struct: the bytes are what is
// verified, the struct is how they are read.
type Record struct {
	Seq        uint64 `json:"seq"`
	Time       string `json:"time"`
	Event      string `json:"event"`
	Proto      string `json:"proto,omitempty"`
	User       string `json:"user,omitempty"`
	Remote     string `json:"remote,omitempty"`
	TLS        *bool  `json:"tls,omitempty"`
	Mech       string `json:"mech,omitempty"`
	Mailbox    string `json:"mailbox,omitempty"`
	Dest       string `json:"dest,omitempty"`
	UIDs       string `json:"uids,omitempty"`
	Count      int    `json:"count,omitempty"` // number of UIDs (the set may be truncated)
	Actor      string `json:"actor,omitempty"`
	Detail     string `json:"detail,omitempty"`
	TailBytes  int64  `json:"tail_bytes,omitempty"`  // audit.recovered: size of the damaged tail
	TailSHA256 string `json:"tail_sha256,omitempty"` // audit.recovered: its SHA-256
	Prev       string `json:"prev"`
}

// TimeLayout is the layout of Record.Time: RFC 3339 in UTC with exactly
// nine fractional digits, so that every time has the same width.
const TimeLayout = "2006-01-02T15:04:05.000000000Z"

// MaxRecordSize bounds one line (without its newline). Fields are truncated
// so that a record never exceeds it; a reader may rely on it.
const MaxRecordSize = 64 << 10

// GenesisPrev is the prev of the very first record of a log: 64 zeros.
const GenesisPrev = "0000000000000000000000000000000000000000000000000000000000000000"

// Limits of the individual fields, in bytes before JSON escaping. With the
// worst case escaping (6 bytes per byte) they keep a record below
// MaxRecordSize.
const (
	maxShort  = 64   // event, proto, mech
	maxName   = 512  // user, remote, actor
	maxBox    = 1024 // mailbox, dest
	maxDetail = 2048
	maxUIDSet = 16 << 10
)

// LineHash returns the hex SHA-256 of a record line (without its newline):
// the prev of the record that follows it.
func LineHash(line []byte) string {
	h := sha256.Sum256(line)
	return hex.EncodeToString(h[:])
}

// marshal encodes r as one line without a newline.
func marshal(r *Record) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	line := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	if len(line) > MaxRecordSize {
		return nil, fmt.Errorf("audit: record of %d bytes exceeds %d", len(line), MaxRecordSize)
	}
	return line, nil
}

// newRecord builds the record of e (without seq, time and prev).
func newRecord(e Event) *Record {
	r := &Record{
		Event:   clip(e.Event, maxShort),
		Proto:   clip(e.Proto, maxShort),
		User:    clip(e.User, maxName),
		Remote:  clip(e.Remote, maxName),
		Mech:    clip(e.Mech, maxShort),
		Mailbox: clip(e.Mailbox, maxBox),
		Dest:    clip(e.Dest, maxBox),
		Actor:   clip(e.Actor, maxName),
		Detail:  clip(e.Detail, maxDetail),
	}
	if e.Remote != "" {
		tls := e.TLS
		r.TLS = &tls
	}
	if len(e.UIDs) > 0 {
		r.UIDs, r.Count = FormatUIDs(e.UIDs)
	}
	return r
}

// clip truncates s to at most n bytes at a character boundary, marking the
// cut with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// FormatUIDs returns the UIDs (any order, duplicates allowed) as a sorted
// compact set like "1:5,9" and the number of distinct UIDs. A set longer
// than 16 KiB is cut at a range boundary and ends in ",…"; the count is
// always complete.
func FormatUIDs(uids []uint32) (string, int) {
	s := slices.Clone(uids)
	slices.Sort(s)
	s = slices.Compact(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		item := strconv.FormatUint(uint64(s[i]), 10)
		if j > i {
			item += ":" + strconv.FormatUint(uint64(s[j]), 10)
		}
		if b.Len()+len(item)+len(",…")+1 > maxUIDSet {
			b.WriteString(",…")
			break
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(item)
		i = j + 1
	}
	return b.String(), len(s)
}

// errRecord is wrapped by every ParseRecord error.
var errRecord = errors.New("not an audit record")

// ParseRecord parses one line (without its newline). It accepts exactly one
// JSON object with a positive seq, a time in TimeLayout's form (any RFC 3339
// time), a non-empty event and a prev of 64 lowercase hex digits; other
// fields are optional and unknown fields are allowed (the hash covers them
// anyway). An audit.recovered record must also carry tail_bytes and
// tail_sha256.
func ParseRecord(line []byte) (Record, error) {
	var r Record
	if len(line) == 0 || line[0] != '{' {
		return r, fmt.Errorf("%w: not a JSON object", errRecord)
	}
	if len(line) > MaxRecordSize {
		return r, fmt.Errorf("%w: longer than %d bytes", errRecord, MaxRecordSize)
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", errRecord, err)
	}
	switch {
	case r.Seq == 0:
		return r, fmt.Errorf("%w: missing or zero seq", errRecord)
	case r.Event == "":
		return r, fmt.Errorf("%w: missing event", errRecord)
	case !isHash(r.Prev):
		return r, fmt.Errorf("%w: prev is not 64 lowercase hex digits", errRecord)
	}
	if _, err := time.Parse(time.RFC3339Nano, r.Time); err != nil {
		return r, fmt.Errorf("%w: bad time %q", errRecord, r.Time)
	}
	if r.Event == EventRecovered && (r.TailBytes <= 0 || !isHash(r.TailSHA256)) {
		return r, fmt.Errorf("%w: audit.recovered without tail_bytes and tail_sha256", errRecord)
	}
	return r, nil
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
