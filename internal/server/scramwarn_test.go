package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/config"
)

// TestWarnMissingSCRAM: New names the accounts a SCRAM login would fail
// for (no SCRAM keys yet), and says nothing when every account has keys.
func TestWarnMissingSCRAM(t *testing.T) {
	dir := t.TempDir()
	text := fmt.Sprintf("hostname = \"mail.example.org\"\ndata_dir = %q\ndomains = [\"example.org\"]\n", filepath.Join(dir, "data"))
	cfg, err := config.Parse(filepath.Join(dir, "letterbox.toml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hash, err := auth.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := auth.NewSCRAMSecret("pw")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"old@example.org", "new@example.org"} {
		if _, err := st.CreateAccount(ctx, name, hash); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetCredentials(ctx, "new@example.org", hash, secret); err != nil {
		t.Fatal(err)
	}

	newServer := func() string {
		logs := &syncBuffer{}
		srv, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		srv.Close()
		return logs.String()
	}
	out := newServer()
	if !strings.Contains(out, "accounts without SCRAM keys") || !strings.Contains(out, "count=1 first=old@example.org") {
		t.Fatalf("log lacks the warning for old@example.org:\n%s", out)
	}
	if err := st.SetCredentials(ctx, "old@example.org", hash, secret); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if out := newServer(); strings.Contains(out, "without SCRAM keys") {
		t.Fatalf("warning although every account has keys:\n%s", out)
	}
}
