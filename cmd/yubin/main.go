// Command yubin is a complete mail system in one binary. This file only parses the command
// line; the work is done by internal/app and the packages it wires.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

const usage = `yubin: a complete mail system in one binary

Usage:
  yubin quickstart [--data DIR]           start a demo system on loopback (no config needed)
  yubin serve --config FILE               run a deployment
  yubin config check --config FILE        report every configuration error at once

  yubin domain add|list|remove [NAME]
  yubin domain catchall DOMAIN [TARGET]   set (or clear, without TARGET) a catch-all
  yubin account add ADDRESS [--password-stdin]
  yubin account list [DOMAIN]
  yubin account passwd ADDRESS [--password-stdin]
  yubin account remove ADDRESS
  yubin alias add ADDRESS TARGET...
  yubin alias list [DOMAIN]
  yubin alias remove ADDRESS
  yubin account app-password add|list|remove ADDRESS [NAME]
  yubin sendmail [-t] [-i] [-f sender] [-F name] [recipient...] < message
                                          hand a message to the running server (install
                                          as /usr/sbin/sendmail: ln -s $(which yubin) ...)
  yubin queue list | show ID | retry ID|all | remove ID | bounce ID
  yubin dkim keygen DOMAIN [--algo ed25519|rsa] [--selector NAME]
                                          create a signing key, print its DNS record
  yubin dkim list [DOMAIN] | remove DOMAIN SELECTOR
  yubin mail list ADDRESS [--mailbox NAME]  list the messages in a mailbox (default INBOX)
  yubin mail show ADDRESS UID [--mailbox NAME]  print one message as stored

The management commands work on the data directory whether or not the server runs; a running
server sees changes at once. They find it with --config FILE, --data DIR, $YUBIN_CONFIG or
$YUBIN_DATA, else ./yubin-data.
`

func main() {
	// Installed as /usr/sbin/sendmail (a symbolic link), yubin is the sendmail command.
	if filepath.Base(os.Args[0]) == "sendmail" {
		os.Exit(cmdSendmail(os.Args[1:], os.Stdin, os.Stderr))
	}
	if len(os.Args) > 1 && (os.Args[1] == "serve" || os.Args[1] == "quickstart") {
		keepSysmonAwake(os.Args)
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: tests call it directly.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		err = cmdServe(ctx, rest, stderr)
	case "quickstart":
		err = cmdQuickstart(ctx, rest, stdout, stderr)
	case "config":
		err = cmdConfig(rest, stdout)
	case "domain":
		err = cmdDomain(ctx, rest, stdout)
	case "account":
		err = cmdAccount(ctx, rest, stdin, stdout)
	case "alias":
		err = cmdAlias(ctx, rest, stdout)
	case "mail":
		err = cmdMail(ctx, rest, stdout)
	case "queue":
		err = cmdQueue(ctx, rest, stdout)
	case "dkim":
		err = cmdDKIM(ctx, rest, stdout)
	case "sendmail":
		return cmdSendmail(rest, stdin, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "yubin: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "yubin %s: %v\n", cmd, err)
			return 2
		}
		fmt.Fprintf(stderr, "yubin %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
