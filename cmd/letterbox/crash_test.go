package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/smtp"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/letterbox/letterbox/internal/mailstore"
)

// TestCrashDurability is the durability proof of design.md §4: it delivers
// over SMTP from several connections, SIGKILLs the server right after a
// random number of 250 replies, restarts it, and finally checks that every
// acknowledged message is present exactly once and byte-exact, that nothing
// half-written is visible, and that UIDs never repeat.
func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	cycles := 50
	if s := os.Getenv("LETTERBOX_CRASH_CYCLES"); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	dataDir := t.TempDir()
	cfg := testConfig(t, dataDir, "")
	if _, stderr, code := letterbox(t, "pw\n", "user", "add", "--config", cfg, "crash@test.example"); code != 0 {
		t.Fatalf("user add: %s", stderr)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sent := map[string][]byte{} // id -> message bytes as sent
	acked := map[string]bool{}
	var mu sync.Mutex

	for cycle := range cycles {
		p := startServer(t, dataDir, "--config", cfg)
		addr := p.Addr("smtp")
		target := 1 + rng.IntN(6)
		ackCh := make(chan struct{}, 1024)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 4 {
			msgs := make([][]byte, 0, 64)
			ids := make([]string, 0, 64)
			for i := range 64 {
				id := fmt.Sprintf("c%d-g%d-m%d", cycle, g, i)
				msg := crashMessage(id, rng.IntN(3) == 0, rng)
				msgs, ids = append(msgs, msg), append(ids, id)
				mu.Lock()
				sent[id] = msg
				mu.Unlock()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := smtp.Dial(addr)
				if err != nil {
					return
				}
				defer c.Close()
				if c.Hello("crash.test") != nil {
					return
				}
				for i, msg := range msgs {
					select {
					case <-stop:
						return
					default:
					}
					if c.Mail("sender@example.org") != nil || c.Rcpt("crash@test.example") != nil {
						return
					}
					w, err := c.Data()
					if err != nil {
						return
					}
					if _, err := w.Write(msg); err != nil {
						return
					}
					if w.Close() != nil { // Close returns nil only on 250
						return
					}
					mu.Lock()
					acked[ids[i]] = true
					mu.Unlock()
					ackCh <- struct{}{}
				}
			}()
		}
		for range target {
			<-ackCh
		}
		p.Kill()
		close(stop)
		wg.Wait()
	}

	// Inspect the store directly, as the next server start would see it.
	store := openStore(t, cfg)
	ctx := context.Background()
	acct, err := store.Account(ctx, "crash@test.example")
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := store.Mailbox(ctx, acct.ID, mailstore.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := store.Messages(ctx, inbox.ID)
	if err != nil {
		t.Fatal(err)
	}
	if int(inbox.Messages) != len(msgs) {
		t.Errorf("mailbox counter %d, but %d messages", inbox.Messages, len(msgs))
	}
	seen := map[string]mailstore.UID{}
	var prev mailstore.UID
	for _, m := range msgs {
		if m.UID <= prev {
			t.Fatalf("UID %d after %d: not strictly ascending", m.UID, prev)
		}
		prev = m.UID
		b, err := store.OpenBlob(ctx, m.BlobID)
		if err != nil {
			t.Fatalf("UID %d: blob %s: %v", m.UID, m.BlobID, err)
		}
		data, err := io.ReadAll(b)
		b.Close()
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != m.Size {
			t.Errorf("UID %d: size %d, blob has %d octets", m.UID, m.Size, len(data))
		}
		id := crashID(data)
		want, ok := sent[id]
		if !ok {
			t.Errorf("UID %d: unknown message (id %q)", m.UID, id)
			continue
		}
		if !bytes.HasSuffix(data, want) {
			t.Errorf("UID %d (%s): stored bytes differ from what was sent", m.UID, id)
		}
		if u, dup := seen[id]; dup {
			t.Errorf("message %s stored twice (UIDs %d and %d)", id, u, m.UID)
		}
		seen[id] = m.UID
	}
	missing := 0
	for id := range acked {
		if _, ok := seen[id]; !ok {
			missing++
			t.Errorf("acknowledged message %s lost", id)
		}
	}
	t.Logf("%d cycles: %d messages acknowledged, %d stored, %d lost", cycles, len(acked), len(msgs), missing)
	if len(acked) < cycles {
		t.Fatalf("only %d acknowledgements in %d cycles", len(acked), cycles)
	}
}

func crashMessage(id string, big bool, rng *rand.Rand) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: sender@example.org\r\nTo: crash@test.example\r\nSubject: crash %s\r\nX-Crash-Id: %s\r\nMessage-ID: <%s@crash.test>\r\n\r\n", id, id, id)
	n := 5 + rng.IntN(40)
	if big {
		n = 2000 + rng.IntN(4000)
	}
	for i := range n {
		fmt.Fprintf(&b, "%s line %d %x\r\n", id, i, rng.Uint64())
	}
	return []byte(b.String())
}

func crashID(data []byte) string {
	_, rest, ok := bytes.Cut(data, []byte("\r\nX-Crash-Id: "))
	if !ok {
		return ""
	}
	id, _, _ := bytes.Cut(rest, []byte("\r\n"))
	return string(id)
}
