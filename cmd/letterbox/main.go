// Command letterbox is the Letterbox mail server and its administration
// tool (design.md §5): serve, user add|passwd|del|list, deliver, audit
// verify, store copy|migrate, version.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/letterbox/letterbox/internal/config"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// Exit codes: sysexits(3) where a caller (an MTA running `deliver`) acts on
// them, 2 for configuration errors as design.md §5 says.
const (
	exitOK          = 0
	exitFailure     = 1
	exitConfig      = 2
	exitUsage       = 64 // EX_USAGE
	exitDataErr     = 65 // EX_DATAERR
	exitNoUser      = 67 // EX_NOUSER
	exitUnavailable = 69 // EX_UNAVAILABLE
	exitSoftware    = 70 // EX_SOFTWARE
	exitTempFail    = 75 // EX_TEMPFAIL
)

const usage = `usage:
  letterbox serve [--config FILE]
  letterbox user add|passwd [--config FILE] ADDRESS   (password: first line of stdin, or prompted)
  letterbox user del [--config FILE] ADDRESS
  letterbox user list [--config FILE] [--quota]
  letterbox user quota [--config FILE] ADDRESS [SIZE [MESSAGES]]   (SIZE: 500M, 2G, 0 = none)
  letterbox deliver [--config FILE] [-f SENDER] RECIPIENT... < message
  letterbox audit verify [--config FILE] [--anchor SEQ:SHA256]...
  letterbox store copy --from CONFIG --to CONFIG   (server stopped; destination new and empty)
  letterbox store migrate [--config FILE]
  letterbox version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "user":
		return cmdUser(args[1:], stdin, stdout, stderr)
	case "deliver":
		return cmdDeliver(args[1:], stdin, stderr)
	case "audit":
		return cmdAudit(args[1:], stdout, stderr)
	case "store":
		return cmdStore(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "letterbox", Version)
		return exitOK
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "letterbox: unknown command %q\n%s", args[0], usage)
	return exitUsage
}

// parseFlags parses fs allowing flags and positional arguments in any order
// (`user add ADDRESS --config F` and `user add --config F ADDRESS` both work).
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	cfg := fs.String("config", "", "configuration file (default ./letterbox.toml, else local mode)")
	return fs, cfg
}

// loadConfig loads the config and prints a config error the way every
// command does: one line naming file and key.
func loadConfig(path string, stderr io.Writer) (*config.Config, int) {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "letterbox: %v\n", err)
		return nil, exitConfig
	}
	return cfg, exitOK
}

func isConfigError(err error) bool {
	var ce *config.Error
	return errors.As(err, &ce)
}
