package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/letterbox/letterbox/internal/audit"
)

// anchorFlags collects --anchor SEQ:SHA256 (repeatable).
type anchorFlags []audit.Anchor

func (a *anchorFlags) String() string { return "" }

func (a *anchorFlags) Set(s string) error {
	x, err := audit.ParseAnchor(s)
	if err != nil {
		return err
	}
	*a = append(*a, x)
	return nil
}

// cmdAudit runs `letterbox audit verify [--config FILE] [--anchor SEQ:SHA256]`:
// exit 0 and a one-line summary when the chain is intact, exit 1 and the
// first broken record otherwise (or when the log cannot be read), exit 2
// for a bad config.
func cmdAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		if len(args) > 0 {
			fmt.Fprintf(stderr, "letterbox audit: unknown subcommand %q\n", args[0])
		}
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	fset, cfgPath := newFlagSet("audit verify", stderr)
	var anchors anchorFlags
	fset.Var(&anchors, "anchor", "SEQ:SHA256 of a record, recorded earlier (a previous verify's head); repeatable")
	pos, err := parseFlags(fset, args[1:])
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "letterbox audit verify: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	dir := cfg.Audit.Dir
	rep, err := audit.Verify(dir, anchors...)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "letterbox audit verify: no audit log at %s\n", dir)
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(stderr, "letterbox audit verify: %v\n", err)
		return exitFailure
	}
	if p := rep.Broken; p != nil {
		loc := filepath.Join(dir, p.File)
		if p.Line > 0 {
			loc += ":" + strconv.Itoa(p.Line)
		}
		seq := ""
		if p.Seq > 0 {
			seq = " (seq " + strconv.FormatUint(p.Seq, 10) + ")"
		}
		fmt.Fprintf(stdout, "audit log BROKEN at %s%s: %s: %s\n", loc, seq, p.Kind, p.Detail)
		fmt.Fprintf(stdout, "%d records verified before it\n", rep.Records)
		return exitFailure
	}
	fmt.Fprintln(stdout, rep.Summary())
	return exitOK
}

// recordAdmin writes the audit record of an account change this process
// made, fsynced; a nil log (audit.enabled = false) records nothing.
func recordAdmin(l *audit.Log, event, account, detail string) error {
	if l == nil {
		return nil
	}
	return l.AppendSync(audit.Event{Event: event, Proto: "cli", User: account, Actor: actor(), Detail: detail})
}

// actor names the OS user running this process, as uid=N(name).
func actor() string {
	uid := strconv.Itoa(os.Getuid())
	if u, err := user.LookupId(uid); err == nil && u.Username != "" && !strings.ContainsAny(u.Username, "()") {
		return "uid=" + uid + "(" + u.Username + ")"
	}
	return "uid=" + uid
}
