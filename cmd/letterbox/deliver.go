package main

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/letterbox/letterbox/internal/delivery"
	"github.com/letterbox/letterbox/internal/server"
)

// cmdDeliver is the local MDA: `letterbox deliver [-f SENDER] RCPT... <
// message`. Every recipient is resolved before anything is stored: if one
// fails, nothing is delivered and the exit code says why (75 when any
// failure is temporary, so the MTA retries the whole message; else 67 for
// an unknown or non-local recipient). Otherwise the message is stored once
// for all recipients and the exit code is 0 only when every copy is
// durable; a recipient over quota is 77 (EX_NOPERM, as dovecot-lda -e) or,
// with quota.over_quota = "defer", 75, while the others are delivered.
func cmdDeliver(args []string, stdin io.Reader, stderr io.Writer) int {
	fs, cfgPath := newFlagSet("deliver", stderr)
	sender := fs.String("f", "", "envelope sender (Return-Path); empty or <> for the null sender")
	rcpts, err := parseFlags(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(rcpts) == 0 {
		fmt.Fprintln(stderr, "letterbox deliver: no recipients")
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	from := *sender
	if from == "<>" {
		from = ""
	}
	if from != "" {
		ad, err := delivery.ParseAddress(from)
		if err != nil {
			fmt.Fprintf(stderr, "letterbox deliver: bad sender %q: %v\n", from, err)
			return exitDataErr
		}
		from = ad.String()
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	logger := newLogger(cfg, stderr)
	store, err := server.OpenStore(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "letterbox deliver: %v\n", err)
		return exitTempFail
	}
	defer store.Close()
	agent := server.NewAgent(cfg, store, logger)
	ctx := context.Background()

	env := &delivery.Envelope{From: from}
	var failures []error
	for _, r := range rcpts {
		rcpt, err := agent.Resolve(ctx, r)
		if err != nil {
			fmt.Fprintf(stderr, "letterbox deliver: %s: %v\n", r, err)
			failures = append(failures, err)
			continue
		}
		env.Recipients = append(env.Recipients, rcpt)
	}
	if len(failures) > 0 {
		return delivery.ExitCodeAll(failures)
	}
	errs := agent.Deliver(ctx, env, bufio.NewReaderSize(stdin, 64<<10))
	for i, err := range errs {
		if err != nil {
			fmt.Fprintf(stderr, "letterbox deliver: %s: %v\n", rcpts[i], err)
		}
	}
	return delivery.ExitCodeAll(errs)
}
