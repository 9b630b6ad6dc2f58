package parsers

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Options are the settings a Parser needs beyond its formats.
type Options struct {
	// Location is the zone of timestamps written without an offset
	// (RFC 3164 syslog, Exim). Nil means time.Local.
	Location *time.Location
}

// Parser turns lines into Events with a fixed set of compiled formats. It is
// safe for concurrent use; its only mutable state is its statistics counters.
type Parser struct {
	loc     *time.Location
	formats []*format            // in the order given to Compile
	exact   map[string][]*format // program tag → formats naming it exactly
	globbed []*format            // formats with a wildcard program, in order
	plain   []*format            // formats that read plain lines, in order
}

// Compile checks specs and builds a Parser from them. For each line the
// formats are tried in order (for syslog lines, those naming the program
// exactly before those matching it by a wildcard) and within a format its
// patterns in order; the first pattern that yields an event wins. The error
// joins a SpecError for every problem found.
func Compile(specs []FormatSpec, opt Options) (*Parser, error) {
	p := &Parser{loc: opt.Location, exact: map[string][]*format{}}
	if p.loc == nil {
		p.loc = time.Local
	}
	var errs []error
	if len(specs) == 0 {
		errs = append(errs, errors.New("compile formats: no formats given"))
	}
	first := map[string]*FormatSpec{}
	for i := range specs {
		s := &specs[i]
		f, err := compileFormat(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := first[s.Name]; dup {
			errs = append(errs, s.errorf(s.pos.of("name"), "name", "format %q is given twice (first %s)", s.Name, where(prev)))
			continue
		}
		first[s.Name] = s
		p.formats = append(p.formats, f)
		if f.plain {
			p.plain = append(p.plain, f)
		}
		wild := false
		for _, g := range f.programs {
			if !g.exact() {
				wild = true
				continue
			}
			if list := p.exact[g[0]]; len(list) == 0 || list[len(list)-1] != f {
				p.exact[g[0]] = append(list, f)
			}
		}
		if wild {
			p.globbed = append(p.globbed, f)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

func where(s *FormatSpec) string {
	switch {
	case s.Origin != "" && s.pos.line > 0:
		return fmt.Sprintf("%s:%d", s.Origin, s.pos.line)
	case s.Origin != "":
		return s.Origin
	}
	return "earlier in the list"
}

// Formats names the parser's formats in the order they are tried.
func (p *Parser) Formats() []string {
	names := make([]string, len(p.formats))
	for i, f := range p.formats {
		names[i] = f.name
	}
	return names
}

// FormatStats counts, for one format, what became of the lines offered to it.
type FormatStats struct {
	Name     string
	Lines    uint64 // lines offered: syslog lines with one of its program tags, or plain lines
	Matched  uint64 // lines one of its patterns' regex matched
	Events   uint64 // events it produced
	Ignored  uint64 // matches vetoed by a pattern's ignore-if
	Unusable uint64 // matches whose ip capture is not an IP address
	Patterns []PatternStats
}

// PatternStats counts the events one pattern produced.
type PatternStats struct {
	Name   string
	Kind   Kind
	Events uint64
}

// Stats returns the counters of every format, in the order they are tried.
// The counters only grow; they are read without stopping parsing, so the
// numbers of one format may be a few lines apart from each other.
func (p *Parser) Stats() []FormatStats {
	out := make([]FormatStats, len(p.formats))
	for i, f := range p.formats {
		st := FormatStats{
			Name:     f.name,
			Lines:    f.lines.Load(),
			Matched:  f.matched.Load(),
			Events:   f.events.Load(),
			Ignored:  f.ignored.Load(),
			Unusable: f.unusable.Load(),
			Patterns: make([]PatternStats, len(f.patterns)),
		}
		for j, pat := range f.patterns {
			st.Patterns[j] = PatternStats{Name: pat.name, Kind: pat.kind, Events: pat.events.Load()}
		}
		out[i] = st
	}
	return out
}

// origin is where a message came from, enough to finish an Event.
type origin struct {
	line    string // the whole line; Evidence is a copy of it
	program string // for ParseMessage, whose Evidence is "program: message"
	stamp   string
	kind    stampKind
	fixed   time.Time // ParseMessage's time
	hasTime bool      // fixed is the time
	arrival time.Time
}

// Parse reads one line and returns the event it reports, if any. Only lines
// that produce an event cost more than a header scan and a few literal
// searches: their time is parsed and their text copied. The Event shares no
// memory with line. A line whose time cannot be read gets arrival.
func (p *Parser) Parse(line string, arrival time.Time) (Event, bool) {
	h := splitLine(line)
	o := origin{line: line, stamp: h.stamp, kind: h.stampKind, arrival: arrival}
	if h.syslog {
		if ev, ok := p.tagged(h.program, h.message, &o); ok {
			return ev, true
		}
		if !h.hostless {
			return Event{}, false
		}
		// A hostless line may also be a plain format's: Dovecot's own log
		// file writes `<time> imap-login: Info: ...`.
	}
	for _, f := range p.plain {
		if h.syslog && f.syslog && f.claims(h.program) {
			continue // offered once already: count each line once per format
		}
		if ev, ok := p.try(f, h.rest, &o); ok {
			return ev, true
		}
	}
	return Event{}, false
}

// ParseMessage reads a message whose header a structured source (the
// journal) has already split off: formats whose programs match program read
// it as a syslog message; with program "" the plain formats read it. Evidence
// is "program: message".
func (p *Parser) ParseMessage(t time.Time, program, message string) (Event, bool) {
	o := origin{program: program, line: message, fixed: t, hasTime: true, arrival: t}
	if program != "" {
		return p.tagged(program, message, &o)
	}
	for _, f := range p.plain {
		if ev, ok := p.try(f, message, &o); ok {
			return ev, true
		}
	}
	return Event{}, false
}

// tagged offers a syslog message to the formats of its program: those that
// name it exactly first, then those that match it with a wildcard.
func (p *Parser) tagged(program, msg string, o *origin) (Event, bool) {
	exact := p.exact[program]
	for _, f := range exact {
		if ev, ok := p.try(f, msg, o); ok {
			return ev, true
		}
	}
	for _, f := range p.globbed {
		if !f.claims(program) || slices.Contains(exact, f) {
			continue
		}
		if ev, ok := p.try(f, msg, o); ok {
			return ev, true
		}
	}
	return Event{}, false
}

func (f *format) claims(program string) bool {
	for _, g := range f.programs {
		if g.match(program) {
			return true
		}
	}
	return false
}

// try runs a format's patterns over msg.
func (p *Parser) try(f *format, msg string, o *origin) (Event, bool) {
	f.lines.Add(1)
	matched := false
	for _, pat := range f.patterns {
		if !pat.prefilter(msg) {
			continue
		}
		m := pat.re.FindStringSubmatchIndex(msg)
		if m == nil {
			continue
		}
		if !matched {
			matched = true
			f.matched.Add(1)
		}
		if pat.vetoed(msg, m) {
			f.ignored.Add(1)
			continue
		}
		ev, ok := p.event(f, pat, msg, m, o)
		if !ok {
			f.unusable.Add(1)
			continue
		}
		f.events.Add(1)
		pat.events.Add(1)
		return ev, true
	}
	return Event{}, false
}

// prefilter reports whether every literal of the pattern occurs in msg.
func (pat *pattern) prefilter(msg string) bool {
	for _, lit := range pat.contains {
		if !strings.Contains(msg, lit) {
			return false
		}
	}
	return true
}

// vetoed reports whether an ignore-if literal occurs in msg outside the
// login capture: a login is whatever the client sent, and must not be able to
// veto the line that reports it.
func (pat *pattern) vetoed(msg string, m []int) bool {
	if len(pat.ignoreIf) == 0 {
		return false
	}
	before, after := msg, ""
	if a, b, ok := group(m, pat.login); ok {
		before, after = msg[:a], msg[b:]
	}
	for _, lit := range pat.ignoreIf {
		if strings.Contains(before, lit) || strings.Contains(after, lit) {
			return true
		}
	}
	return false
}

// group returns the bounds of capture n in a submatch index slice.
func group(m []int, n int) (start, end int, ok bool) {
	if n < 0 || m[2*n] < 0 {
		return 0, 0, false
	}
	return m[2*n], m[2*n+1], true
}

// event builds the Event of a match; false when the ip capture is no address.
func (p *Parser) event(f *format, pat *pattern, msg string, m []int, o *origin) (Event, bool) {
	a, b, ok := group(m, pat.ip)
	if !ok {
		return Event{}, false
	}
	addr, err := netip.ParseAddr(msg[a:b])
	if err != nil {
		return Event{}, false
	}
	ev := Event{
		Kind:     pat.kind,
		Service:  f.service,
		Addr:     addr.Unmap().WithZone(""),
		Attempts: 1,
		Format:   f.name,
	}
	if a, b, ok := group(m, pat.login); ok {
		ev.Login = NormalizeLogin(msg[a:b])
	}
	if a, b, ok := group(m, pat.attempts); ok {
		// A number that does not parse or is below 1 still reports the
		// failure the line is about: count it once.
		if n, err := strconv.Atoi(msg[a:b]); err == nil && n > 1 {
			ev.Attempts = min(n, MaxAttempts)
		}
	}
	if a, b, ok := group(m, pat.service); ok {
		if svc, ok := ParseService(msg[a:b]); ok {
			ev.Service = svc
		}
	}
	switch {
	case o.hasTime:
		ev.Time = o.fixed
	default:
		t, ok := stampTime(o.stamp, o.kind, o.arrival, p.loc)
		if !ok {
			t = o.arrival
		}
		ev.Time = t
	}
	if o.program != "" {
		ev.Evidence = o.program + ": " + o.line
	} else {
		ev.Evidence = strings.Clone(o.line)
	}
	return ev, true
}
