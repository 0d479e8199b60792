package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/letterbox/letterbox/internal/config"
	"github.com/letterbox/letterbox/internal/mailstore/storecopy"
	"github.com/letterbox/letterbox/internal/server"
)

const storeCopyHelp = `usage: letterbox store copy --from CONFIG --to CONFIG

Copies the whole mail store that the configuration file --from names into
the store that --to names, which may use another backend ([store] backend,
e.g. the embedded sqlite store to PostgreSQL or back). Everything clients
have synchronised against is kept: UIDVALIDITY, UIDs, UIDNEXT, MODSEQs,
HIGHESTMODSEQ, flags, dates and the expunge log, so IMAP clients need no
resynchronisation and POP3 UIDLs do not change; and accounts keep their
password hashes, SCRAM keys, quotas, mailboxes, special use and
subscriptions. Each mailbox is verified after it is copied.

Stop the server on the source first. The source can be opened while a
server runs on it, so nothing prevents the copy, but changes made during
the copy would be missed (the copy fails when it notices one). The
destination must be a new, empty store (no accounts) and must not be in
use either. A copy that fails or is interrupted leaves a partial
destination: discard it (its data_dir, or its database) and start again.

Only the store is copied: the audit log, TLS certificate and configuration
stay where they are.
`

// cmdStore runs `letterbox store copy|migrate`.
func cmdStore(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "copy":
		return cmdStoreCopy(args[1:], stdout, stderr)
	case "migrate":
		return cmdStoreMigrate(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "letterbox store: unknown subcommand %q\n%s", args[0], usage)
	return exitUsage
}

// cmdStoreCopy runs `letterbox store copy --from CONFIG --to CONFIG`: exit
// 0 and a summary when the copy is complete and verified, 64 for a wrong
// invocation (also --from and --to naming the same store), 2 for a bad
// config, 1 when the copy fails (with a non-empty destination among the
// reasons).
func cmdStoreCopy(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("store copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, storeCopyHelp) }
	from := fs.String("from", "", "configuration file of the source store")
	to := fs.String("to", "", "configuration file of the destination store (new and empty)")
	pos, err := parseFlags(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 || *from == "" || *to == "" {
		fmt.Fprint(stderr, storeCopyHelp)
		return exitUsage
	}
	src, code := loadConfig(*from, stderr)
	if src == nil {
		return code
	}
	dst, code := loadConfig(*to, stderr)
	if dst == nil {
		return code
	}
	if sameStore(src, dst) {
		fmt.Fprintf(stderr, "letterbox store copy: %s and %s name the same store (%s)\n", *from, *to, describeStore(src))
		return exitUsage
	}

	logger := newLogger(src, stderr)
	srcStore, err := server.OpenStore(src, logger)
	if err != nil {
		fmt.Fprintf(stderr, "letterbox store copy: source: %v\n", err)
		return exitFailure
	}
	defer srcStore.Close()
	dstStore, err := server.OpenStore(dst, logger)
	if err != nil {
		fmt.Fprintf(stderr, "letterbox store copy: destination: %v\n", err)
		return exitFailure
	}
	defer dstStore.Close()

	// SIGINT/SIGTERM stop the copy between two steps.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	progress := func(msg string) { fmt.Fprintf(stderr, "letterbox store copy: %s\n", msg) }
	stats, err := storecopy.Copy(ctx, dstStore, srcStore, progress)
	if err == nil {
		// Every import was durable when it returned; Close only releases.
		err = dstStore.Close()
	}
	if err != nil {
		fmt.Fprintf(stderr, "letterbox store copy: %v\n", err)
		if errors.Is(err, storecopy.ErrNotEmpty) {
			fmt.Fprintf(stderr, "letterbox store copy: nothing was copied; the destination (%s) is unchanged\n", describeStore(dst))
		} else {
			fmt.Fprintf(stderr, "letterbox store copy: the destination (%s) is incomplete: discard it before copying again\n", describeStore(dst))
		}
		return exitFailure
	}
	fmt.Fprintf(stdout, "copied %d accounts, %d mailboxes, %d messages (%d octets), %d expunge-log entries\nfrom %s\nto   %s\n",
		stats.Accounts, stats.Mailboxes, stats.Messages, stats.Bytes, stats.Expunged, describeStore(src), describeStore(dst))
	return exitOK
}

// sameStore reports whether two configurations name the same store: both
// sqlite with the same data_dir, or both postgres with the same database
// URL.
func sameStore(a, b *config.Config) bool {
	if a.Store.Backend != b.Store.Backend {
		return false
	}
	if a.Store.Backend == config.BackendPostgres {
		return a.Store.PostgresURL == b.Store.PostgresURL
	}
	if filepath.Clean(a.DataDir) == filepath.Clean(b.DataDir) {
		return true
	}
	// The same directory under two names (a symlink, a bind mount).
	fa, errA := os.Stat(a.DataDir)
	fb, errB := os.Stat(b.DataDir)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// describeStore names a config's store for messages, without credentials.
func describeStore(cfg *config.Config) string {
	if cfg.Store.Backend == config.BackendPostgres {
		return "postgres store, blob_dir " + cfg.Store.BlobDir
	}
	return "sqlite store in " + cfg.DataDir
}

// cmdStoreMigrate runs `letterbox store migrate [--config FILE]`: it brings
// the store's schema up to date. The sqlite store migrates whenever it is
// opened, so opening and closing it is the whole job.
func cmdStoreMigrate(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := newFlagSet("store migrate", stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "letterbox store migrate: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	applied, err := server.MigrateStore(cfg, newLogger(cfg, stderr))
	if err != nil {
		fmt.Fprintf(stderr, "letterbox store migrate: %v\n", err)
		return exitFailure
	}
	if applied > 0 {
		fmt.Fprintf(stdout, "applied %d migration(s)\n", applied)
	}
	fmt.Fprintln(stdout, "schema up to date")
	return exitOK
}
