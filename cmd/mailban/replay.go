package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailban/mailban/agent"
	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

func replay(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("test", stderr)
	path := fs.String("config", "", "configuration `file` (default: built-in defaults, every preset format)")
	formats := fs.String("format", "", "comma-separated format `names` to use (default: every format)")
	jsonOut := fs.Bool("json", false, "print one JSON object per event and decision")
	explain := fs.Bool("explain", false, "for every line a pattern matched, print which pattern of which format matched, what it captured and what came of it")
	zone := fs.String("timezone", "", "time `zone` of times written without one, e.g. Europe/Berlin (default: the configuration's sources' timezone when they agree, else this host's)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{errors.New("name at least one log file (- for standard input)")}
	}
	cfg := config.Default()
	if *path != "" {
		var err error
		if cfg, err = config.Load(*path); err != nil {
			return err
		}
	}
	loc, err := replayZone(*zone, cfg)
	if err != nil {
		return err
	}
	var names []string
	if *formats != "" {
		names = strings.Split(*formats, ",")
	}

	// Progress goes to a terminal only: piped or redirected, stderr stays
	// quiet for whoever reads it.
	var prog *progress
	if isTerminal(stderr) {
		prog = newProgress(stderr, time.Now)
		defer prog.done()
	}
	var inputs []agent.ReplayInput
	for _, name := range fs.Args() {
		r, size := stdin, int64(-1)
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		if f, ok := r.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				size = fi.Size()
			}
		}
		if prog != nil {
			r = prog.track(r, size)
		}
		inputs = append(inputs, agent.ReplayInput{Name: name, R: r})
	}
	out := io.Discard
	if *jsonOut || *explain {
		out = stdout
	}
	start := time.Now()
	opt := agent.ReplayOptions{Config: cfg, Formats: names, JSON: *jsonOut, Explain: *explain, Out: out, Now: start, Location: loc}
	if prog != nil {
		opt.Progress = prog.update
	}
	sum, err := agent.Replay(ctx, opt, inputs)
	if prog != nil {
		prog.done() // before the summary; the deferred call is for early returns
	}
	if err != nil {
		return err
	}
	if !*jsonOut {
		if *explain {
			fmt.Fprintln(stdout)
		}
		printSummary(stdout, sum, time.Since(start), *explain)
	}
	return nil
}

// replayZone is the zone for times written without one: the flag's, else
// the one every configured source reads in (as the daemon would), else
// this host's.
func replayZone(flag string, cfg *config.Config) (*time.Location, error) {
	if flag != "" {
		loc, err := time.LoadLocation(flag)
		if err != nil {
			return nil, usageError{fmt.Errorf("--timezone %q: %w", flag, err)}
		}
		return loc, nil
	}
	var loc *time.Location
	for _, s := range cfg.Sources {
		switch l := s.Timezone.Location; {
		case l == nil:
		case loc == nil:
			loc = l
		case l.String() != loc.String():
			return nil, nil // they differ: no one zone is the daemon's
		}
	}
	return loc, nil
}

// printSummary writes what a replay counted: every format (with patterns,
// when explaining), events, top addresses and logins, decisions.
func printSummary(w io.Writer, s *agent.ReplaySummary, took time.Duration, patterns bool) {
	rate := float64(s.Lines) / took.Seconds()
	fmt.Fprintf(w, "%d lines in %s (%.0f lines/s)\n\n", s.Lines, took.Round(time.Millisecond), rate)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "format\tlines\tmatched\tevents\t")
	for _, f := range s.Formats {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", f.Name, f.Lines, f.Matched, f.Events)
		if !patterns {
			continue
		}
		for _, p := range f.Patterns {
			kind := p.Kind.String()
			if p.Ignore {
				kind = "ignore"
			}
			fmt.Fprintf(tw, "/%s (%s)\t\t%d\t%d\t\n", p.Name, kind, p.Matches, p.Events)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\nevents: %d failures (%d attempts), %d successes",
		s.Events[parsers.AuthFailure], s.Attempts[parsers.AuthFailure], s.Events[parsers.AuthSuccess])
	if n := s.Events[parsers.Abuse]; n > 0 {
		fmt.Fprintf(w, ", %d abuse (not counted by the rules)", n)
	}
	fmt.Fprintln(w)
	printTop(w, "addresses", s.TopIPs)
	printTop(w, "logins", s.TopLogins)

	var bans, locks int
	for _, d := range s.Decisions {
		if d.Action == rules.Ban {
			bans++
		} else {
			locks++
		}
	}
	fmt.Fprintf(w, "\ndecisions: %d bans, %d locks\n", bans, locks)
	const shown = 20
	for i, d := range s.Decisions {
		if i == shown {
			fmt.Fprintf(w, "  ... %d more (use --json for all)\n", len(s.Decisions)-shown)
			break
		}
		who := d.Login
		if d.Prefix.IsValid() {
			who = d.Prefix.String()
		}
		until := "permanently"
		if !d.Until.IsZero() {
			until = "for " + rules.FormatDuration(d.Until.Sub(d.At))
		}
		fmt.Fprintf(w, "  %s %-5s %s %s: %s\n", d.At.UTC().Format(time.RFC3339), d.Action, who, until, d.Reason)
	}
}

func printTop(w io.Writer, what string, top []agent.Count) {
	if len(top) == 0 {
		return
	}
	fmt.Fprintf(w, "\ntop %s by failed attempts:\n", what)
	for _, c := range top {
		fmt.Fprintf(w, "  %8d  %s\n", c.N, c.Key)
	}
}
