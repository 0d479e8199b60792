package pop3

import (
	"context"
	"log/slog"
	"sync"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// seenMarker sets \Seen on retrieved messages without making RETR wait for
// a durable write. A flag is not acknowledged mail: losing a \Seen in a
// crash costs nothing, while a synchronous fsync per RETR made downloads
// several times slower than Dovecot's. Marks are committed in batches by
// one goroutine per session (the store group-commits them with other
// writes); QUIT and the end of the session wait for every mark, so a
// client that logs in again, and IMAP, see them.
type seenMarker struct {
	store   mailstore.Store
	mailbox int64
	log     *slog.Logger

	mu      sync.Mutex
	pending []mailstore.UID
	running bool
	wg      sync.WaitGroup
}

// mark queues uid. Only the session goroutine calls mark and wait.
func (m *seenMarker) mark(ctx context.Context, uid mailstore.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending = append(m.pending, uid)
	if !m.running {
		m.running = true
		m.wg.Add(1)
		go m.run(ctx)
	}
}

func (m *seenMarker) run(ctx context.Context) {
	defer m.wg.Done()
	for {
		m.mu.Lock()
		batch := m.pending
		m.pending = nil
		if len(batch) == 0 {
			m.running = false
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		if _, _, err := m.store.StoreFlags(ctx, m.mailbox, batch, mailstore.FlagsAdd, []string{mailstore.FlagSeen}, 0); err != nil {
			m.log.Warn("cannot set \\Seen", "messages", len(batch), "err", err)
		}
	}
}

// wait returns when every queued mark is committed (or has failed).
func (m *seenMarker) wait() {
	if m != nil {
		m.wg.Wait()
	}
}
