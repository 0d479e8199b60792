package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"github.com/letterbox/letterbox/internal/audit"
	"github.com/letterbox/letterbox/internal/delivery"
	"github.com/letterbox/letterbox/internal/mailstore"
	"github.com/letterbox/letterbox/internal/server"
)

// cmdUserQuota runs `letterbox user quota [--config FILE] ADDRESS [SIZE
// [MESSAGES]]`. With SIZE it sets the account's storage limit (and, with
// MESSAGES, its message limit; without, the message limit stays as it is);
// with ADDRESS alone it shows the quota and the usage. SIZE is octets with
// an optional binary unit (500M, 2G, 10K, 1T; also 500MB or 500MiB), 0,
// "none" or "unlimited" for no limit; MESSAGES is a count or the same
// words. The limit is in the store: it applies at once to the running
// server, to every delivery and IMAP session (the store checks it in the
// transaction that adds a message). Lowering it below the usage removes
// nothing; the account only refuses to grow.
func cmdUserQuota(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := newFlagSet("user quota", stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) < 1 || len(pos) > 3 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	ad, err := delivery.ParseAddress(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "letterbox user quota: %q is not an address (want user@domain): %v\n", pos[0], err)
		return exitDataErr
	}
	address := strings.ToLower(ad.String())
	var bytes, messages int64
	if len(pos) >= 2 {
		if bytes, err = parseSize(pos[1]); err != nil {
			fmt.Fprintf(stderr, "letterbox user quota: SIZE %q: %v (want e.g. 500M, 2G, 0 or none)\n", pos[1], err)
			return exitDataErr
		}
	}
	if len(pos) == 3 {
		if messages, err = parseCount(pos[2]); err != nil {
			fmt.Fprintf(stderr, "letterbox user quota: MESSAGES %q: %v (want a number, 0 or none)\n", pos[2], err)
			return exitDataErr
		}
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

	acct, err := store.Account(ctx, address)
	if err != nil {
		return reportAccountErr(stderr, "quota", address, err)
	}
	if len(pos) == 1 {
		u, err := store.Usage(ctx, acct.ID)
		if err != nil {
			return reportAccountErr(stderr, "quota", address, err)
		}
		fmt.Fprintln(stdout, describeQuota(acct.Name, u))
		return exitOK
	}
	if len(pos) == 2 {
		messages = acct.QuotaMessages
	}

	// As for the other account changes: none is made unless the audit
	// log (when enabled) is open to take its record.
	auditLog, err := server.OpenAudit(cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintf(stderr, "letterbox: %v (no account changed)\n", err)
		return exitFailure
	}
	if auditLog != nil {
		defer auditLog.Close()
	}
	if err := store.SetQuota(ctx, address, bytes, messages); err != nil {
		return reportAccountErr(stderr, "quota", address, err)
	}
	detail := fmt.Sprintf("storage=%d messages=%d", bytes, messages)
	if err := recordAdmin(auditLog, audit.EventUserQuota, address, detail); err != nil {
		fmt.Fprintf(stderr, "letterbox user quota: %s changed, but its audit record was not written: %v\n", address, err)
		return exitFailure
	}
	u, err := store.Usage(ctx, acct.ID)
	if err != nil {
		return reportAccountErr(stderr, "quota", address, err)
	}
	fmt.Fprintln(stdout, describeQuota(acct.Name, u))
	return exitOK
}

// describeQuota is the one-line account summary of `user quota` and `user
// list --quota`, e.g.
//
//	alice@example.org: storage 1234 of 524288000 octets (500M), messages 3 (no limit)
func describeQuota(name string, u mailstore.Usage) string {
	var b strings.Builder
	b.WriteString(name + ": ")
	if u.QuotaBytes > 0 {
		fmt.Fprintf(&b, "storage %d of %d octets", u.Bytes, u.QuotaBytes)
		if h := formatSize(u.QuotaBytes); h != strconv.FormatInt(u.QuotaBytes, 10) {
			b.WriteString(" (" + h + ")")
		}
	} else {
		fmt.Fprintf(&b, "storage %d octets (no limit)", u.Bytes)
	}
	if u.QuotaMessages > 0 {
		fmt.Fprintf(&b, ", messages %d of %d", u.Messages, u.QuotaMessages)
	} else {
		fmt.Fprintf(&b, ", messages %d (no limit)", u.Messages)
	}
	return b.String()
}

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}}

// parseSize parses SIZE: a whole number of octets with an optional binary
// unit K, M, G or T (also written KB/KiB, ...; any case), or 0, "none" or
// "unlimited" for no limit.
func parseSize(s string) (int64, error) {
	if isNone(s) {
		return 0, nil
	}
	u := strings.ToUpper(s)
	u = strings.TrimSuffix(u, "IB")
	if len(u) == len(strings.ToUpper(s)) {
		u = strings.TrimSuffix(u, "B")
	}
	var shift uint
	for _, su := range sizeUnits {
		if strings.HasSuffix(u, su.suffix) {
			u, shift = strings.TrimSuffix(u, su.suffix), su.shift
			break
		}
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n < 0 || u == "" || u[0] == '+' {
		return 0, errors.New("not a size")
	}
	if n > math.MaxInt64>>shift {
		return 0, errors.New("too large")
	}
	return n << shift, nil
}

// parseCount parses MESSAGES: a whole number, or 0, "none" or "unlimited".
func parseCount(s string) (int64, error) {
	if isNone(s) {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || s[0] == '+' {
		return 0, errors.New("not a number")
	}
	return n, nil
}

func isNone(s string) bool {
	return strings.EqualFold(s, "none") || strings.EqualFold(s, "unlimited")
}

// formatSize writes n with the largest binary unit that divides it
// exactly, so that parseSize(formatSize(n)) == n.
func formatSize(n int64) string {
	for _, su := range sizeUnits {
		if n > 0 && n%(1<<su.shift) == 0 {
			return strconv.FormatInt(n>>su.shift, 10) + su.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
