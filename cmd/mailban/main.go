// Command mailban protects mail servers from password guessing: it reads
// their logs, counts failed logins per address and per login, and bans.
//
// Usage:
//
//	mailban run [--config FILE] [--fresh-state]
//	mailban check-config [--config FILE]
//	mailban test [--config FILE] [--format NAME[,NAME...]] [--json] [--explain] FILE...
//	mailban firewall remove [--config FILE]
//	mailban version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes: scripts and systemd tell failures apart by them.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed (bad config, state error, ...)
	exitUsage   = 2 // the command line itself was wrong
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = runDaemon(ctx, rest, stdin, stderr)
	case "check-config":
		err = checkConfig(rest, stdout, stderr)
	case "test":
		err = replay(ctx, rest, stdin, stdout, stderr)
	case "firewall":
		err = firewall(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "mailban %s\n", version)
	case "help", "-h", "--help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "mailban: unknown command %q\n\n", cmd)
		usage(stderr)
		return exitUsage
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "mailban %s: %v\n", cmd, err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "mailban %s: %v\n", cmd, err)
		return exitFailure
	}
}

// usageError is a mistake on the command line, as opposed to a failure of
// the command.
type usageError struct{ error }

func usage(w io.Writer) {
	fmt.Fprint(w, `mailban protects mail servers from password guessing.

Usage:
  mailban run [--config FILE] [--fresh-state]
        run the daemon (SIGHUP reloads the configuration, SIGTERM stops)
  mailban check-config [--config FILE]
        check a configuration file and exit non-zero if it has errors
  mailban test [--config FILE] [--format NAME[,NAME...]] [--json] [--explain] FILE...
        replay log files (- for standard input) through formats and rules,
        using the lines' own timestamps; --json prints events and decisions,
        --explain which pattern of which format matched each line and what
        it captured
  mailban firewall remove [--config FILE]
        delete the nftables enforcer's table (inet mailban), and nothing else
  mailban version

The configuration defaults to /etc/mailban/mailban.yaml; examples/mailban.yaml
documents every key.
`)
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("mailban "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}
