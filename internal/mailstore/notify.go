package mailstore

import "sync"

// ChangeKind says what a Change is about.
type ChangeKind uint8

const (
	ChangeAppend        ChangeKind = iota + 1 // a message was added (delivery, APPEND, COPY, MOVE)
	ChangeFlags                               // a message's flags changed
	ChangeExpunge                             // a message was removed
	ChangeMailboxCreate                       // a mailbox was created
	ChangeMailboxRename                       // a mailbox was renamed
	ChangeMailboxDelete                       // a mailbox was deleted
)

func (k ChangeKind) String() string {
	switch k {
	case ChangeAppend:
		return "append"
	case ChangeFlags:
		return "flags"
	case ChangeExpunge:
		return "expunge"
	case ChangeMailboxCreate:
		return "mailbox-create"
	case ChangeMailboxRename:
		return "mailbox-rename"
	case ChangeMailboxDelete:
		return "mailbox-delete"
	}
	return "unknown"
}

// Change is one committed change, published after commit to the sessions of
// the account. Message changes carry MailboxID, UID and ModSeq (and Flags
// for ChangeAppend and ChangeFlags); mailbox changes carry MailboxID,
// MailboxName and, for renames, OldName.
type Change struct {
	Kind        ChangeKind
	MailboxID   int64
	MailboxName string
	OldName     string
	UID         UID
	ModSeq      uint64
	Flags       []string
	Size        int64 // for ChangeAppend
}

// Hub fans committed changes out to subscribers. Backends own one and
// Publish to it after each commit; Publish never blocks on a slow
// subscriber (each subscription queues its changes until drained).
type Hub struct {
	mu   sync.Mutex
	subs map[int64]map[*Subscription]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{subs: make(map[int64]map[*Subscription]struct{})}
}

// Subscribe registers a subscription for the account's changes.
func (h *Hub) Subscribe(accountID int64) *Subscription {
	s := &Subscription{hub: h, account: accountID, ready: make(chan struct{}, 1)}
	h.mu.Lock()
	m := h.subs[accountID]
	if m == nil {
		m = make(map[*Subscription]struct{})
		h.subs[accountID] = m
	}
	m[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Publish queues changes for every subscription of the account. Each
// subscription receives each change exactly once.
func (h *Hub) Publish(accountID int64, changes ...Change) {
	if len(changes) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[accountID] {
		s.push(changes)
	}
}

// Subscribers reports how many open subscriptions the account has. A
// backend that keeps per-account state for publishing (the postgres
// backend's watermarks) uses it to drop that state once nobody listens.
func (h *Hub) Subscribers(accountID int64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[accountID])
}

func (h *Hub) remove(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m := h.subs[s.account]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(h.subs, s.account)
		}
	}
}

// Subscription is one session's view of the account's change stream.
type Subscription struct {
	hub     *Hub
	account int64
	ready   chan struct{}

	mu      sync.Mutex
	pending []Change
	closed  bool
}

func (s *Subscription) push(changes []Change) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.pending = append(s.pending, changes...)
	s.mu.Unlock()
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready is signalled (without blocking the publisher) whenever changes are
// pending. After a receive, call Drain.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Drain returns and clears the pending changes, oldest first.
func (s *Subscription) Drain() []Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.pending
	s.pending = nil
	return c
}

// Close unregisters the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.pending = nil
	s.mu.Unlock()
	if !already {
		s.hub.remove(s)
	}
}
