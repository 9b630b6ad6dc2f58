package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/control"
)

// The commands that talk to a running daemon over its control socket.

// ctlFlags are the flags every control command takes.
type ctlFlags struct {
	fs      *flag.FlagSet
	socket  *string
	config  *string
	timeout *time.Duration
	json    *bool
}

func newCtlFlags(name string, stderr io.Writer) *ctlFlags {
	fs := newFlags(name, stderr)
	return &ctlFlags{
		fs:      fs,
		socket:  fs.String("socket", "", "control socket `path` (default: $MAILBAN_SOCKET, or "+control.DefaultSocket+")"),
		config:  fs.String("config", "", "take the control socket's path from this configuration `file`"),
		timeout: fs.Duration("timeout", 30*time.Second, "how long to wait for the daemon"),
		json:    fs.Bool("json", false, "print the daemon's answer as JSON"),
	}
}

// parse reads flags and positional arguments in any order (`mailban ban
// 203.0.113.7 --for 1d` as well as `mailban ban --for 1d 203.0.113.7`) and
// checks the number of positional arguments.
func (f *ctlFlags) parse(args []string, want int, what string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(f.fs, args); err != nil {
			return nil, err
		}
		args = f.fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	switch {
	case len(pos) < want:
		return nil, usageError{fmt.Errorf("name %s", what)}
	case len(pos) > want:
		return nil, usageError{fmt.Errorf("unexpected argument %q", pos[want])}
	}
	return pos, nil
}

// client connects to the socket the flags, the environment or the
// default name.
func (f *ctlFlags) client() (*control.Client, error) {
	path := *f.socket
	switch {
	case path != "":
	case *f.config != "":
		cfg, err := config.Load(*f.config)
		if err != nil {
			return nil, err
		}
		if cfg.Control.Socket == "" {
			return nil, fmt.Errorf("the control socket is turned off in %s (control.socket is empty)", *f.config)
		}
		path = cfg.Control.Socket
	case os.Getenv("MAILBAN_SOCKET") != "":
		path = os.Getenv("MAILBAN_SOCKET")
	default:
		path = control.DefaultSocket
	}
	return control.NewClient(path), nil
}

func (f *ctlFlags) context(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, *f.timeout)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ctl runs one control command.
func ctl(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	f := newCtlFlags(cmd, stderr)
	var (
		req    control.Request
		filter control.Filter
		netStr string
		want   = 0
		what   string
	)
	switch cmd {
	case "ban":
		f.fs.StringVar(&req.For, "for", "", "how long: 90m, 12h, 2d, 1w, or permanent (default: the configured rules.ban.for)")
		f.fs.StringVar(&req.Reason, "reason", "", "why, for the log and `mailban why`")
		f.fs.BoolVar(&req.Force, "force", false, "ban a network that contains allowlisted addresses (they stay allowed) or every address (/0)")
		want, what = 1, "an address or a CIDR network to ban"
	case "block":
		f.fs.StringVar(&req.Reason, "reason", "", "why, for the log and `mailban why`")
		f.fs.BoolVar(&req.Force, "force", false, "block a network that contains allowlisted addresses (they stay allowed) or every address (/0)")
		want, what = 1, "an address or a CIDR network to block"
	case "unban", "unblock":
		f.fs.BoolVar(&req.Inside, "inside", false, "also lift every "+strings.TrimPrefix(cmd, "un")+" inside the network")
		want, what = 1, "the address or network to "+cmd
	case "unlock":
		want, what = 1, "the login to unlock"
	case "why":
		want, what = 1, "an address, a network or a login"
	case "bans":
		f.fs.StringVar(&netStr, "net", "", "only bans and blocks overlapping this address or `network`")
		f.fs.StringVar(&filter.Type, "type", "", "only `ban` or block")
	case "locks":
		f.fs.StringVar(&filter.Login, "login", "", "only logins that contain this `text`")
	}
	if cmd == "bans" || cmd == "locks" {
		f.fs.StringVar(&filter.Reason, "reason", "", "only entries whose reason contains this `text` (any case)")
		f.fs.BoolVar(&filter.Permanent, "permanent", false, "only entries without end")
		f.fs.IntVar(&filter.Limit, "limit", 0, "show at most `N` entries (0: all)")
	}
	pos, err := f.parse(args, want, what)
	if err != nil {
		return err
	}

	// Check what can be checked here, so that a typo costs no round trip
	// and gets the same message whether the daemon runs or not.
	switch cmd {
	case "ban", "block", "unban", "unblock":
		if _, err := control.ParseTarget(pos[0]); err != nil {
			return usageError{err}
		}
		req.Target = pos[0]
	case "unlock":
		req.Target = pos[0]
	}
	if req.For != "" {
		if _, _, err := control.ParseBanLength(req.For); err != nil {
			return usageError{err}
		}
	}
	if netStr != "" {
		if filter.Network, err = control.ParseTarget(netStr); err != nil {
			return usageError{fmt.Errorf("--net: %w", err)}
		}
	}
	if filter.Type != "" && filter.Type != "ban" && filter.Type != "block" {
		return usageError{fmt.Errorf("--type %q: want ban or block", filter.Type)}
	}
	if filter.Limit < 0 {
		return usageError{errors.New("--limit cannot be negative")}
	}

	c, err := f.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := f.context(ctx)
	defer cancel()

	var out any
	var text func(io.Writer)
	switch cmd {
	case "status":
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		out, text = st, func(w io.Writer) { printStatus(w, st, time.Now()) }
	case "bans", "locks":
		var es []control.Entry
		if cmd == "bans" {
			es, err = c.Bans(ctx, filter)
		} else {
			es, err = c.Locks(ctx, filter)
		}
		if err != nil {
			return err
		}
		out, text = es, func(w io.Writer) { printEntries(w, cmd, es, time.Now()) }
	case "why":
		wh, err := c.Why(ctx, pos[0])
		if err != nil {
			return err
		}
		out, text = wh, func(w io.Writer) { printWhy(w, wh, time.Now()) }
		if !wh.Refused {
			// Nothing to explain: say so, and tell scripts with exit code 4.
			if err := emit(stdout, *f.json, out, text); err != nil {
				return err
			}
			return notRefused{}
		}
	default:
		var res control.Result
		switch cmd {
		case "ban":
			res, err = c.Ban(ctx, req)
		case "unban":
			res, err = c.Unban(ctx, req)
		case "block":
			res, err = c.Block(ctx, req)
		case "unblock":
			res, err = c.Unblock(ctx, req)
		case "unlock":
			res, err = c.Unlock(ctx, req)
		case "reload":
			res, err = c.Reload(ctx)
		}
		if err != nil {
			return err
		}
		out, text = res, func(w io.Writer) { fmt.Fprintln(w, res.Message) }
	}
	return emit(stdout, *f.json, out, text)
}

func emit(w io.Writer, asJSON bool, v any, text func(io.Writer)) error {
	if asJSON {
		return printJSON(w, v)
	}
	text(w)
	return nil
}

// notRefused is `mailban why`'s answer when nothing is refused: printed,
// and exit code 4 for scripts.
type notRefused struct{}

func (notRefused) Error() string { return "" }

// exitCodeOf maps a control command's error to an exit code.
func exitCodeOf(err error) int {
	if errors.As(err, new(notRefused)) {
		return exitNotFound
	}
	switch control.CodeOf(err) {
	case control.CodeUnavailable:
		return exitUnavailable
	case control.CodeNotFound:
		return exitNotFound
	case control.CodeInvalid:
		return exitUsage
	}
	return exitFailure
}

// versionCmd prints this program's version and, when a daemon answers on
// the control socket, the daemon's.
func versionCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newCtlFlags("version", stderr)
	if _, err := f.parse(args, 0, ""); err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, min(*f.timeout, 2*time.Second))
	defer cancel()
	v, err := c.Version(ctx)
	if *f.json {
		out := map[string]any{"version": version}
		if err == nil {
			out["daemon"] = v
		}
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "mailban %s\n", version)
	if err == nil {
		fmt.Fprintf(stdout, "daemon: mailban %s (pid %d)\n", v.Version, v.PID)
	}
	return nil
}

func when(t time.Time, now time.Time) string {
	s := t.Local().Format(time.DateTime)
	d := t.Sub(now).Round(time.Second)
	switch {
	case d > 0:
		return s + " (in " + roughly(d) + ")"
	case d < 0:
		return s + " (" + roughly(-d) + " ago)"
	}
	return s
}

// roughly writes a span of time for a person reading a table: two units
// at most ("9m58s", "5h3m", "3d4h"), where rules.FormatDuration writes the
// exact configuration form ("598s").
func roughly(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return twoUnits(d, time.Minute, "m", time.Second, "s")
	case d < 48*time.Hour:
		return twoUnits(d, time.Hour, "h", time.Minute, "m")
	}
	return twoUnits(d, 24*time.Hour, "d", time.Hour, "h")
}

func twoUnits(d, big time.Duration, bigName string, small time.Duration, smallName string) string {
	n, rest := d/big, (d%big)/small
	if rest == 0 {
		return fmt.Sprintf("%d%s", n, bigName)
	}
	return fmt.Sprintf("%d%s%d%s", n, bigName, rest, smallName)
}

func printStatus(w io.Writer, st control.Status, now time.Time) {
	fmt.Fprintf(w, "mailban %s, pid %d, running since %s\n", st.Version, st.PID, when(st.Started, now))
	reload := "loaded " + when(st.Reload.At, now)
	if !st.Reload.OK {
		reload += fmt.Sprintf("; LAST RELOAD FAILED %s: %s", when(*st.Reload.FailedAt, now), st.Reload.Error)
	}
	fmt.Fprintf(w, "config:  %s, %s\n", st.Config, reload)
	state := fmt.Sprintf("%s, %s", st.State.Path, bytesText(st.State.Bytes))
	if st.State.LastCheckpoint != nil {
		state += ", saved " + when(*st.State.LastCheckpoint, now)
	}
	if st.State.LastError != "" {
		state += "; LAST SAVE FAILED: " + st.State.LastError
	}
	fmt.Fprintf(w, "state:   %s\n", state)
	c := st.Counts
	fmt.Fprintf(w, "in force: %d bans, %d blocks, %d locks; counting %d addresses, %d logins; %d repeat offenders remembered\n",
		c.Bans, c.Blocks, c.Locks, c.TrackedAddresses, c.TrackedLogins, c.Offenders)
	if f := st.Fleet; f != nil {
		redis := "Redis " + f.Redis + " up"
		if !f.Up {
			redis = "REDIS " + f.Redis + " DOWN"
			if f.DownSince != nil {
				redis += " since " + when(*f.DownSince, now)
			}
			redis += ", counting on this host alone"
			if f.LastError != "" {
				redis += ": " + f.LastError
			}
		}
		fmt.Fprintf(w, "fleet:   host %s, %s; %d events counted in Redis, %d alone; %d decisions of other hosts applied, %d waiting to be sent\n",
			f.Host, redis, f.SharedEvents, f.LocalEvents, f.Received, f.Outbox)
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tFILE\tSTATE\tLINES\tLAG\tLAST LINE\tPROBLEM")
	for _, s := range st.Sources {
		if !s.Running {
			fmt.Fprintf(tw, "%s\t\tnot running\t\t\t\tsee the daemon's log\n", s.Name)
			continue
		}
		if len(s.Streams) == 0 {
			fmt.Fprintf(tw, "%s\t\tno files yet\t\t\t\t\n", s.Name)
		}
		for _, f := range s.Streams {
			last := "-"
			if f.LastRead != nil {
				last = roughly(now.Sub(*f.LastRead)) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, f.Path, f.State, f.Lines, bytesText(f.LagBytes), last, f.LastError)
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENFORCER\tHEALTH\tERRORS\tLAST ERROR")
	for _, e := range st.Enforcers {
		health := "ok"
		if !e.Healthy {
			health = "FAILING"
		}
		last := e.LastError
		if e.LastErrorAt != nil {
			last = when(*e.LastErrorAt, now) + ": " + last
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", e.Name, health, e.Errors, last)
	}
	tw.Flush()
}

func bytesText(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 10<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func until(e control.Entry, now time.Time) string {
	switch {
	case e.Until != nil:
		return when(*e.Until, now)
	case e.Type == "block":
		return "until unblocked"
	}
	return "permanent"
}

func printEntries(w io.Writer, what string, es []control.Entry, now time.Time) {
	if len(es) == 0 {
		fmt.Fprintf(w, "no %s in force\n", what)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if what == "locks" {
		fmt.Fprintln(tw, "LOGIN\tSINCE\tUNTIL\tREASON")
		for _, e := range es {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Login, e.Since.Local().Format(time.DateTime), until(e, now), e.Reason)
		}
	} else {
		fmt.Fprintln(tw, "NETWORK\tTYPE\tSINCE\tUNTIL\tREASON")
		for _, e := range es {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Network, e.Type, e.Since.Local().Format(time.DateTime), until(e, now), e.Reason)
		}
	}
	tw.Flush()
}

func printWhy(w io.Writer, wh control.Why, now time.Time) {
	fmt.Fprintf(w, "%s: %s\n", wh.Subject, wh.Verdict)
	if len(wh.Allowlisted) > 0 {
		fmt.Fprintf(w, "  allowlisted by %s\n", strings.Join(wh.Allowlisted, ", "))
	}
	for _, e := range wh.Entries {
		who := e.Network
		if e.Login != "" {
			who = e.Login
		}
		end := until(e, now)
		if e.Until != nil {
			end = "until " + end
		}
		fmt.Fprintf(w, "\n%s %s since %s, %s\n", e.Type, who, e.Since.Local().Format(time.DateTime), end)
		fmt.Fprintf(w, "  rule: %s\n", e.Reason)
		if len(e.Evidence) == 0 {
			continue
		}
		fmt.Fprintf(w, "  evidence (%d lines, oldest first):\n", len(e.Evidence))
		for _, l := range e.Evidence {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
}
