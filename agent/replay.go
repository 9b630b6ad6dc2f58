package agent

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// ReplayInput is one log to replay.
type ReplayInput struct {
	Name string // shown in output; "-" for standard input
	R    io.Reader
}

// ReplayOptions configure an offline replay (`mailban test`).
type ReplayOptions struct {
	Config  *config.Config
	Formats []string // restrict to these formats; empty: every format the config knows
	// JSON writes one object per event and decision, in input order, to Out.
	JSON bool
	// Explain writes to Out, for every line a pattern matched, which pattern
	// of which format matched, what it captured and what came of it (a JSON
	// object per line with JSON, else a line of text).
	Explain bool
	Out     io.Writer
	// Now is the reference for lines that carry no year or no time at all.
	Now time.Time
	// Location is the zone of times written without one (RFC 3164 syslog,
	// Exim, `journalctl -o short`); nil means time.Local, as on the host
	// that wrote them.
	Location *time.Location
	// HostAddresses, when the config allowlists them; nil asks the kernel.
	HostAddresses func() ([]netip.Prefix, error)
	// Progress, when set, is called every ProgressEvery lines with the
	// number of lines read so far, from the goroutine that called Replay.
	Progress func(lines int)
}

// ProgressEvery is how many lines pass between ReplayOptions.Progress calls.
const ProgressEvery = 1 << 16

// ReplaySummary is what a replay counted.
type ReplaySummary struct {
	Lines     int
	Formats   []parsers.FormatStats
	Events    map[parsers.Kind]int // events by kind
	Attempts  map[parsers.Kind]int // attempts by kind (an event can report several)
	Decisions []rules.Decision     // bans and locks, in order
	TopIPs    []Count              // most failed attempts first
	TopLogins []Count
}

// Count is a key and how often it was seen.
type Count struct {
	Key string
	N   int
}

// replayClock is the time of the newest line replayed: the rules see the
// log's own time pass, not the wall clock's.
type replayClock struct{ now time.Time }

func (c *replayClock) Now() time.Time { return c.now }

// Replay runs logs through the formats and rules offline, using the lines'
// own timestamps. It is mailban's stable offline contract: output depends on
// the input, the configuration and Now only.
func Replay(ctx context.Context, opt ReplayOptions, inputs []ReplayInput) (*ReplaySummary, error) {
	cfg := opt.Config
	specs, err := cfg.FormatSpecs(opt.Formats)
	if err != nil {
		return nil, err
	}
	parser, err := parsers.Compile(specs, parsers.Options{Location: opt.Location})
	if err != nil {
		return nil, err
	}
	host := opt.HostAddresses
	if host == nil {
		host = interfaceAddresses
	}
	rc, err := cfg.RulesConfig(host)
	if err != nil {
		return nil, err
	}
	clock := &replayClock{}
	engine, err := rules.NewEngine(rc, clock)
	if err != nil {
		return nil, err
	}
	engine.SetTracking(false)

	r := &replayer{
		opt: opt, parser: parser, engine: engine, clock: clock,
		sum:    &ReplaySummary{Events: map[parsers.Kind]int{}, Attempts: map[parsers.Kind]int{}},
		ips:    map[netip.Addr]int{},
		logins: map[string]int{},
		enc:    json.NewEncoder(opt.Out),
		multi:  len(inputs) > 1,
	}
	for _, in := range inputs {
		if err := r.replay(ctx, in); err != nil {
			return nil, err
		}
	}
	r.finish()
	return r.sum, nil
}

type replayer struct {
	opt        ReplayOptions
	parser     *parsers.Parser
	engine     *rules.Engine
	clock      *replayClock
	sum        *ReplaySummary
	ips        map[netip.Addr]int
	logins     map[string]int
	enc        *json.Encoder
	multi      bool
	nextExpiry time.Time
}

type eventJSON struct {
	Line     int    `json:"line"`
	Time     string `json:"time"`
	Format   string `json:"format"`
	Kind     string `json:"kind"`
	Service  string `json:"service"`
	IP       string `json:"ip"`
	Login    string `json:"login"`
	Attempts int    `json:"attempts"`
	File     string `json:"file,omitempty"`
}

// explainJSON is one explained line: every pattern that matched it.
type explainJSON struct {
	Line    int         `json:"line"`
	Explain []matchJSON `json:"explain"`
	File    string      `json:"file,omitempty"`
}

type matchJSON struct {
	Format   string            `json:"format"`
	Pattern  string            `json:"pattern"`
	Kind     string            `json:"kind"`
	Captures map[string]string `json:"captures"`
	Result   string            `json:"result"`
}

type decisionJSON struct {
	Decision  string `json:"decision"`
	IP        string `json:"ip,omitempty"`
	Login     string `json:"login,omitempty"`
	At        string `json:"at"`
	Until     string `json:"until,omitempty"`
	Permanent bool   `json:"permanent,omitempty"`
	Reason    string `json:"reason"`
	Line      int    `json:"line"`
	File      string `json:"file,omitempty"`
}

// maxReplayLine bounds one line; the rest of a longer line is skipped.
const maxReplayLine = 1 << 20

func (r *replayer) replay(ctx context.Context, in ReplayInput) error {
	br := bufio.NewReaderSize(in.R, 1<<20)
	var long []byte
	file := ""
	if r.multi {
		file = in.Name
	}
	for n := 1; ; n++ {
		if n%ProgressEvery == 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if r.opt.Progress != nil {
				r.opt.Progress(r.sum.Lines)
			}
		}
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], b...)
			for errors.Is(err, bufio.ErrBufferFull) {
				b, err = br.ReadSlice('\n')
				if len(long) < maxReplayLine {
					long = append(long, b...)
				}
			}
			b = long
		}
		if len(b) == 0 && err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read %s: %w", in.Name, err)
		}
		b = trimEOL(b)
		r.sum.Lines++
		// The parser does not keep the line (its Event holds copies), so the
		// reader's buffer can be lent to it without a copy per line: this is
		// what lets a replay read millions of lines a second.
		line := unsafe.String(unsafe.SliceData(b), len(b))
		var ev parsers.Event
		var ok bool
		if r.opt.Explain {
			x := r.parser.Explain(line, r.opt.Now)
			if err := r.explain(n, file, &x); err != nil {
				return err
			}
			ev, ok = x.Event, x.OK
		} else {
			ev, ok = r.parser.Parse(line, r.opt.Now)
		}
		if ok {
			if err := r.event(n, file, &ev); err != nil {
				return err
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read %s: %w", in.Name, err)
		}
	}
}

// explain writes what the formats made of a line that a pattern matched.
func (r *replayer) explain(line int, file string, x *parsers.Explanation) error {
	if len(x.Matches) == 0 {
		return nil
	}
	var err error
	if r.opt.JSON {
		out := explainJSON{Line: line, File: file, Explain: make([]matchJSON, len(x.Matches))}
		for i, m := range x.Matches {
			caps := make(map[string]string, len(m.Captures))
			for _, c := range m.Captures {
				caps[c.Name] = c.Value
			}
			out.Explain[i] = matchJSON{Format: m.Format, Pattern: m.Pattern, Kind: m.Kind, Captures: caps, Result: m.Result}
		}
		err = r.enc.Encode(out)
	} else {
		where := strconv.Itoa(line)
		if file != "" {
			where = file + ":" + where
		}
		var b strings.Builder
		for _, m := range x.Matches {
			fmt.Fprintf(&b, "%s: %s/%s (%s)", where, m.Format, m.Pattern, m.Kind)
			for _, c := range m.Captures {
				v := c.Value
				if v == "" || strings.ContainsAny(v, " \t\"=") || !utf8.ValidString(v) {
					v = strconv.Quote(v)
				}
				fmt.Fprintf(&b, " %s=%s", c.Name, v)
			}
			fmt.Fprintf(&b, ": %s\n", m.Result)
		}
		_, err = io.WriteString(r.opt.Out, b.String())
	}
	if err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

func (r *replayer) event(line int, file string, ev *parsers.Event) error {
	r.sum.Events[ev.Kind]++
	r.sum.Attempts[ev.Kind] += ev.Attempts
	if ev.Kind == parsers.AuthFailure {
		r.ips[ev.Addr] += ev.Attempts
		if ev.Login != "" {
			r.logins[ev.Login] += ev.Attempts
		}
	}
	if r.opt.JSON {
		if err := r.enc.Encode(eventJSON{
			Line: line, Time: ev.Time.UTC().Format(time.RFC3339Nano), Format: ev.Format, Kind: ev.Kind.String(),
			Service: string(ev.Service), IP: ev.Addr.String(), Login: ev.Login, Attempts: ev.Attempts, File: file,
		}); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	if ev.Time.After(r.clock.now) {
		r.clock.now = ev.Time
	}
	if !r.clock.now.Before(r.nextExpiry) {
		// Let bans and locks end as log time passes, so that a long log
		// sees repeat offenders come back and grow their bans.
		r.engine.Expire()
		r.nextExpiry = r.clock.now.Add(time.Minute)
	}
	for _, d := range r.engine.Observe(ev) {
		if d.Action != rules.Ban && d.Action != rules.Lock {
			continue
		}
		r.sum.Decisions = append(r.sum.Decisions, d)
		if r.opt.JSON {
			if err := r.enc.Encode(decisionOut(d, line, file)); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		}
	}
	return nil
}

func decisionOut(d rules.Decision, line int, file string) decisionJSON {
	out := decisionJSON{Decision: d.Action.String(), Login: d.Login, At: d.At.UTC().Format(time.RFC3339Nano),
		Reason: d.Reason, Line: line, File: file}
	if d.Prefix.IsValid() {
		out.IP = prefixString(d.Prefix)
	}
	if d.Until.IsZero() {
		out.Permanent = true
	} else {
		out.Until = d.Until.UTC().Format(time.RFC3339Nano)
	}
	return out
}

// prefixString writes a single address without its /32 or /128.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func (r *replayer) finish() {
	r.sum.Formats = r.parser.Stats()
	r.sum.TopIPs = top(r.ips, func(a netip.Addr) string { return a.String() })
	r.sum.TopLogins = top(r.logins, func(s string) string { return s })
}

const topN = 10

func top[K comparable](m map[K]int, name func(K) string) []Count {
	out := make([]Count, 0, len(m))
	for k, n := range m {
		out = append(out, Count{Key: name(k), N: n})
	}
	slices.SortFunc(out, func(a, b Count) int {
		if c := cmp.Compare(b.N, a.N); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	if len(out) > topN {
		out = out[:topN]
	}
	return out
}
