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
	exitOK          = 0
	exitFailure     = 1 // the command ran and failed (bad config, state error, refused without --force, ...)
	exitUsage       = 2 // the command line itself was wrong (a typo in an address, an unknown flag)
	exitUnavailable = 3 // the daemon could not be reached over its control socket
	exitNotFound    = 4 // nothing to do: not banned, not blocked, not locked; `why`: not refused
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
		err = versionCmd(ctx, rest, stdout, stderr)
	case "status", "bans", "locks", "ban", "unban", "block", "unblock", "unlock", "why", "reload":
		err = ctl(ctx, cmd, rest, stdout, stderr)
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
	case errors.As(err, new(notRefused)):
		return exitNotFound // the answer is printed already
	default:
		fmt.Fprintf(stderr, "mailban %s: %v\n", cmd, err)
		return exitCodeOf(err)
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
  mailban test [--config FILE] [--format NAME[,NAME...]] [--json] [--explain] [--timezone ZONE] FILE...
        replay log files (- for standard input) through formats and rules,
        using the lines' own timestamps; --json prints events and decisions,
        --explain which pattern of which format matched each line and what
        it captured; --timezone the zone of times written without one
        (default: the sources' timezone in --config, else this host's)
  mailban firewall remove [--config FILE]
        delete the nftables enforcer's table (inet mailban), and nothing else
  mailban version
        print this program's version, and the running daemon's

Talking to the running daemon (over its control socket):
  mailban status                      sources and their lag, enforcers' health, counts
  mailban bans [--net CIDR] [--type ban|block] [--reason TEXT] [--permanent] [--limit N]
  mailban ban IP|CIDR [--for DURATION|permanent] [--reason TEXT] [--force]
  mailban unban IP|CIDR [--inside]
  mailban block CIDR [--reason TEXT] [--force]
        block until unblocked; saved, like a line in blocked-networks
  mailban unblock CIDR [--inside]
  mailban locks [--login TEXT] [--reason TEXT] [--limit N]
  mailban unlock LOGIN
  mailban why IP|CIDR|LOGIN           the rule that fired and the log lines behind it
  mailban reload                      read the configuration file again
Each takes --json, --timeout DURATION, and --socket PATH or --config FILE to
find the socket (default: $MAILBAN_SOCKET, else /run/mailban/control.sock).
--force bans or blocks a network that contains allowlisted addresses (they
stay allowed) or every address (/0).

Exit codes: 0 done; 1 failed or refused; 2 wrong command line (a typo in an
address, an unknown flag); 3 the daemon cannot be reached; 4 nothing to do
(not banned, blocked or locked; for why: not refused).

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
