package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"golang.org/x/term"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/auth"
	"github.com/letterbox/letterbox/internal/delivery"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/server"
)

func cmdUser(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	sub := args[0]
	if sub == "quota" {
		return cmdUserQuota(args[1:], stdout, stderr) // quota.go
	}
	fs, cfgPath := newFlagSet("user "+sub, stderr)
	withQuota := fs.Bool("quota", false, "user list: show each account's quota and usage")
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	if *withQuota && sub != "list" {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	wantArgs := 1
	switch sub {
	case "add", "passwd", "del":
	case "list":
		wantArgs = 0
	default:
		fmt.Fprintf(stderr, "letterbox user: unknown subcommand %q\n%s", sub, usage)
		return exitUsage
	}
	if len(pos) != wantArgs {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	store, err := server.OpenStore(cfg, newLogger(cfg, stderr))
	if err != nil {
		fmt.Fprintf(stderr, "letterbox: %v\n", err)
		return exitFailure
	}
	defer store.Close()
	ctx := context.Background()

	if sub == "list" {
		accounts, err := store.Accounts(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "letterbox: %v\n", err)
			return exitFailure
		}
		for _, a := range accounts {
			if !*withQuota {
				fmt.Fprintln(stdout, a.Name)
				continue
			}
			u, err := store.Usage(ctx, a.ID)
			if err != nil {
				fmt.Fprintf(stderr, "letterbox: %v\n", err)
				return exitFailure
			}
			fmt.Fprintln(stdout, describeQuota(a.Name, u))
		}
		return exitOK
	}

	// Account changes are audited: none is made unless the audit log
	// (when enabled) is open to take its record. (Its "audit log open"
	// line is for the server's log, not for here: warnings only.)
	auditLog, err := server.OpenAudit(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintf(stderr, "letterbox: %v (no account changed)\n", err)
		return exitFailure
	}
	if auditLog != nil {
		defer auditLog.Close()
	}

	// The same address syntax the delivery agent resolves recipients with.
	ad, err := delivery.ParseAddress(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "letterbox user %s: %q is not an address (want user@domain): %v\n", sub, pos[0], err)
		return exitDataErr
	}
	address := strings.ToLower(ad.String())
	switch sub {
	case "del":
		if err := store.DeleteAccount(ctx, address); err != nil {
			return reportAccountErr(stderr, sub, address, err)
		}
		if err := recordAdmin(auditLog, audit.EventUserDel, address, ""); err != nil {
			fmt.Fprintf(stderr, "letterbox: deleted %s, but its audit record was not written: %v\n", address, err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "deleted %s\n", address)
		return exitOK
	case "passwd":
		// Check first so that nobody types a password for nothing.
		if _, err := store.Account(ctx, address); err != nil {
			return reportAccountErr(stderr, sub, address, err)
		}
	case "add":
		domain := address[strings.LastIndexByte(address, '@')+1:]
		if !slices.Contains(cfg.Domains, domain) {
			fmt.Fprintf(stderr, "letterbox: warning: %s is not one of the local domains (%s); mail for it will not be accepted\n",
				domain, strings.Join(cfg.Domains, ", "))
		}
	}
	password, err := readPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "letterbox user %s: %v\n", sub, err)
		return exitDataErr
	}
	hash, scram, err := passwordCredentials(password)
	if err != nil {
		fmt.Fprintf(stderr, "letterbox: %v\n", err)
		return exitSoftware
	}
	if sub == "add" {
		_, err = store.CreateAccount(ctx, address, hash)
	}
	if err == nil {
		// For add, a second step: an account that a crash leaves without
		// SCRAM keys gets them at its first password login.
		err = store.SetCredentials(ctx, address, hash, scram)
	}
	if err != nil {
		return reportAccountErr(stderr, sub, address, err)
	}
	event := audit.EventUserAdd
	if sub == "passwd" {
		event = audit.EventUserPasswd
	}
	if err := recordAdmin(auditLog, event, address, ""); err != nil {
		fmt.Fprintf(stderr, "letterbox user %s: %s changed, but its audit record was not written: %v\n", sub, address, err)
		return exitFailure
	}
	if sub == "add" {
		fmt.Fprintf(stdout, "added %s\n", address)
	} else {
		fmt.Fprintf(stdout, "password changed for %s\n", address)
	}
	return exitOK
}

// passwordCredentials returns what is stored for a password: its argon2id
// hash and its SCRAM-SHA-256 secret (salted keys, never the password).
func passwordCredentials(password string) (hash, scram string, err error) {
	if hash, err = auth.HashPassword(password); err != nil {
		return "", "", err
	}
	if scram, err = auth.NewSCRAMSecret(password); err != nil {
		return "", "", err
	}
	return hash, scram, nil
}

func reportAccountErr(stderr io.Writer, sub, address string, err error) int {
	switch {
	case errors.Is(err, mailstore.ErrNoSuchAccount):
		fmt.Fprintf(stderr, "letterbox user %s: no such account %s\n", sub, address)
		return exitNoUser
	case errors.Is(err, mailstore.ErrAccountExists):
		fmt.Fprintf(stderr, "letterbox user %s: account %s already exists\n", sub, address)
		return exitDataErr
	case errors.Is(err, mailstore.ErrInvalidName):
		fmt.Fprintf(stderr, "letterbox user %s: invalid account name %q\n", sub, address)
		return exitDataErr
	}
	fmt.Fprintf(stderr, "letterbox user %s: %v\n", sub, err)
	return exitFailure
}

// readPassword reads the first line of stdin when it is not a terminal, or
// prompts twice without echo when it is.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stderr, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", errors.New("passwords do not match")
		}
		return checkPassword(string(p1))
	}
	line, err := bufio.NewReaderSize(stdin, 4096).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("no password on standard input")
	}
	return checkPassword(strings.TrimRight(line, "\r\n"))
}

func checkPassword(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New("empty password")
	case len(p) > 1024:
		return "", errors.New("password longer than 1024 bytes")
	case strings.ContainsAny(p, "\x00\r\n"):
		return "", errors.New("password contains NUL or line breaks")
	}
	return p, nil
}
