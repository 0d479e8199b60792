package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/config"
	"github.com/letterbox/letterbox/internal/server"
)

// shutdownGrace bounds how long in-flight work may take after SIGTERM.
const shutdownGrace = 30 * time.Second

func cmdServe(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := newFlagSet("serve", stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "letterbox serve: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	logger := newLogger(cfg, stderr)
	srv, err := server.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "letterbox: %v\n", err)
		if isConfigError(err) {
			return exitConfig
		}
		return exitFailure
	}
	if cfg.Local {
		if err := localModeSetup(srv, stdout); err != nil {
			fmt.Fprintf(stderr, "letterbox: %v\n", err)
			srv.Close()
			return exitFailure
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := srv.Start(); err != nil {
		fmt.Fprintf(stderr, "letterbox: %v\n", err)
		srv.Close()
		if isConfigError(err) {
			return exitConfig
		}
		return exitFailure
	}
	logger.Info("ready", "hostname", cfg.Hostname, "data_dir", cfg.DataDir, "version", Version)
	sig := <-sigs
	logger.Info("shutting down", "signal", sig.String())
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Error("shutdown", "err", err)
		return exitFailure
	}
	logger.Info("stopped")
	return exitOK
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// localModeSetup creates the demo account on first start and prints how to
// use it.
func localModeSetup(srv *server.Server, stdout io.Writer) error {
	ctx := context.Background()
	accounts, err := srv.Store.Accounts(ctx)
	if err != nil {
		return err
	}
	cfg := srv.Config
	fmt.Fprintf(stdout, "Letterbox local mode: data in %s, loopback only.\n", cfg.DataDir)
	if len(accounts) > 0 {
		names := make([]string, len(accounts))
		for i, a := range accounts {
			names[i] = a.Name
		}
		fmt.Fprintf(stdout, "Accounts: %s (manage with `letterbox user ...`).\n", strings.Join(names, ", "))
		return nil
	}
	password := rand.Text()[:20]
	hash, scram, err := passwordCredentials(password) // user.go
	if err != nil {
		return err
	}
	const demo = "demo@localhost"
	if _, err := srv.Store.CreateAccount(ctx, demo, hash); err != nil {
		return err
	}
	if err := srv.Store.SetCredentials(ctx, demo, hash, scram); err != nil {
		return err
	}
	if err := recordAdmin(srv.Audit, audit.EventUserAdd, demo, "local mode demo account"); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
Created account %[1]s with password %[2]s
(shown once; change it with: letterbox user passwd %[1]s)

Send it a message (SMTP on %[3]s):
  printf 'From: you@example.org\r\nTo: %[1]s\r\nSubject: hello\r\n\r\nHello from Letterbox.\r\n' |
    curl -s smtp://%[3]s --mail-from you@example.org --mail-rcpt %[1]s -T -

Read it over IMAP (%[7]s):
  curl -s 'imap://%[7]s/INBOX;UID=1' -u '%[1]s:%[2]s'

or over POP3 (%[4]s), leaving it on the server:
  curl -s pop3://%[4]s/1 -u '%[1]s:%[2]s'

or download it with fetchmail over STARTTLS, trusting the generated certificate
(fetchmail asks for the password; drop --keep to delete it from the server):
  fetchmail --protocol pop3 --service %[5]s --user %[1]s --keep --sslcertfile %[6]s --mda cat localhost

`, demo, password, cfg.Listen.SMTP, cfg.Listen.POP3, portOf(cfg.Listen.POP3), filepath.Join(cfg.DataDir, "tls", "cert.pem"), cfg.Listen.IMAP)
	return nil
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}
