package parsers

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Options are the settings a Parser needs beyond its formats.
type Options struct {
	// Location is the zone of timestamps written without an offset
	// (RFC 3164 syslog, Exim). Nil means time.Local.
	Location *time.Location
}

// Parser turns lines into Events with a fixed set of compiled formats. It is
// safe for concurrent use. Its mutable state is its statistics counters and,
// for formats with session rules, the attempts counted per session (see
// sessions.go): a summary line's count depends on the lines before it.
type Parser struct {
	loc     *time.Location
	formats []*format            // in the order given to Compile
	exact   map[string][]*format // program tag → formats naming it exactly
	globbed []*format            // formats with a wildcard program, in order
	plain   []*format            // formats that read plain lines, in order

	// The first literal of every plain format's patterns, found in one pass.
	plainIdx   *litIndex
	plainLines atomic.Uint64 // lines offered to the plain formats

	// byProgram remembers, for the program tags seen, the formats that claim
	// them in the order they are tried: a map that is replaced, never
	// changed, so that reading it needs no lock.
	byProgram atomic.Pointer[map[string][]*format]

	// sessionsStale says the session record must be written again though
	// no table changed: AdoptSessions changed which tables p has.
	sessionsStale atomic.Bool
}

// maxPrograms bounds the program tags byProgram remembers; others are
// resolved on every line.
const maxPrograms = 512

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
	p.indexPlain()
	return p, nil
}

// indexPlain numbers the plain formats' patterns and indexes the first
// literal of each, so that a plain line is searched once for all of them.
// With more patterns than an index holds, the later ones search their
// literals one by one.
func (p *Parser) indexPlain() {
	var lits []string
	for _, f := range p.plain {
		for _, pat := range f.patterns {
			pat.lit = -1
			if len(lits) < maxIndexed {
				pat.lit = len(lits)
				lits = append(lits, pat.contains[0])
			}
		}
	}
	p.plainIdx = newLitIndex(lits)
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
	Ignored  uint64 // matches vetoed by a pattern's ignore-if or by a pattern of kind ignore
	Unusable uint64 // matches whose ip capture is not a client's address
	Repeats  uint64 // session summaries whose attempts other lines had all counted
	Patterns []PatternStats
}

// PatternStats counts the matches and events of one pattern.
type PatternStats struct {
	Name    string
	Kind    Kind // KindUnknown for a pattern of kind ignore
	Ignore  bool // a pattern of kind ignore
	Matches uint64
	Events  uint64
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
			Repeats:  f.repeats.Load(),
			Patterns: make([]PatternStats, len(f.patterns)),
		}
		if f.plain {
			st.Lines += p.plainLines.Load() - f.twice.Load()
		}
		for j, pat := range f.patterns {
			st.Patterns[j] = PatternStats{Name: pat.name, Kind: pat.kind, Ignore: pat.ignore,
				Matches: pat.matches.Load(), Events: pat.events.Load()}
		}
		out[i] = st
	}
	return out
}

// origin is where a message came from, enough to finish an Event.
type origin struct {
	line     string // the whole line; Evidence is a copy of it
	program  string // the syslog program tag; "" for a plain line
	evidence bool   // Evidence is "program: line" (ParseMessage)
	stamp    string
	kind     stampKind
	fixed    time.Time // ParseMessage's time
	hasTime  bool      // fixed is the time
	arrival  time.Time
}

// Parse reads one line and returns the event it reports, if any. Only lines
// that produce an event cost more than a header scan and a few literal
// searches: their time is parsed and their text copied. The Event shares no
// memory with line. A line whose time cannot be read gets arrival.
func (p *Parser) Parse(line string, arrival time.Time) (Event, bool) {
	return p.parse(line, arrival, nil)
}

// Explain is Parse that also tells what every format made of the line: for
// `mailban test --explain`, as fail2ban-regex does for fail2ban. It counts
// the line as Parse would (statistics, sessions), so a replay explained
// gives the events of a replay parsed.
func (p *Parser) Explain(line string, arrival time.Time) Explanation {
	var x Explanation
	x.Event, x.OK = p.parse(line, arrival, &x)
	return x
}

func (p *Parser) parse(line string, arrival time.Time, x *Explanation) (Event, bool) {
	h := splitLine(line)
	o := origin{line: line, stamp: h.stamp, kind: h.stampKind, arrival: arrival}
	if x != nil {
		x.Stamp = h.stamp
	}
	if h.syslog {
		o.program = h.program
		if x != nil {
			x.Program = h.program
		}
		if ev, ok := p.tagged(h.program, h.message, &o, x); ok {
			return ev, true
		}
		if !h.hostless {
			return Event{}, false
		}
		// A hostless line may also be a plain format's: Dovecot's own log
		// file writes `<time> imap-login: Info: ...`.
		o.program = ""
	}
	return p.plainLine(h.rest, &o, func(f *format) bool {
		// Offered once already as syslog: count each line once per format.
		return h.syslog && f.syslog && f.claims(h.program)
	}, x)
}

// ParseMessage reads a message whose header a structured source (the
// journal) has already split off: formats whose programs match program read
// it as a syslog message; with program "" the plain formats read it. Evidence
// is "program: message".
func (p *Parser) ParseMessage(t time.Time, program, message string) (Event, bool) {
	o := origin{program: program, evidence: program != "", line: message, fixed: t, hasTime: true, arrival: t}
	if program != "" {
		return p.tagged(program, message, &o, nil)
	}
	return p.plainLine(message, &o, nil, nil)
}

// plainLine offers a message without a program tag to the plain formats,
// except those skip says were offered it already.
func (p *Parser) plainLine(msg string, o *origin, skip func(*format) bool, x *Explanation) (Event, bool) {
	if len(p.plain) == 0 {
		return Event{}, false
	}
	p.plainLines.Add(1)
	var found litSet
	p.plainIdx.scan(msg, &found)
	for _, f := range p.plain {
		if skip != nil && skip(f) {
			f.twice.Add(1)
			continue
		}
		if ev, ok := p.try(f, msg, o, &found, x); ok {
			return ev, true
		}
	}
	return Event{}, false
}

// tagged offers a syslog message to the formats of its program: those that
// name it exactly first, then those that match it with a wildcard.
func (p *Parser) tagged(program, msg string, o *origin, x *Explanation) (Event, bool) {
	for _, f := range p.formatsFor(program) {
		f.lines.Add(1)
		if ev, ok := p.try(f, msg, o, nil, x); ok {
			return ev, true
		}
	}
	return Event{}, false
}

// formatsFor returns the formats that claim a program tag, in the order
// they are tried. A log has few distinct tags: they are resolved once.
func (p *Parser) formatsFor(program string) []*format {
	seen := p.byProgram.Load()
	if seen != nil {
		if list, ok := (*seen)[program]; ok {
			return list
		}
	}
	exact := p.exact[program]
	list := slices.Clip(exact)
	for _, f := range p.globbed {
		if f.claims(program) && !slices.Contains(exact, f) {
			list = append(list, f)
		}
	}
	if seen == nil || len(*seen) < maxPrograms {
		next := make(map[string][]*format, 1+lenOf(seen))
		if seen != nil {
			for k, v := range *seen {
				next[k] = v
			}
		}
		next[strings.Clone(program)] = list
		// Another goroutine may have stored its own map meanwhile: one of
		// the two tags is then resolved again later, nothing worse.
		p.byProgram.CompareAndSwap(seen, &next)
	}
	return list
}

func lenOf(m *map[string][]*format) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

func (f *format) claims(program string) bool {
	for _, g := range f.programs {
		if g.match(program) {
			return true
		}
	}
	return false
}

// try runs a format's patterns over msg. found, when not nil, holds the
// plain index's verdict on each pattern's first literal.
func (p *Parser) try(f *format, msg string, o *origin, found *litSet, x *Explanation) (Event, bool) {
	if x != nil {
		x.Offered = append(x.Offered, f.name)
	}
	matched := false
	for _, pat := range f.patterns {
		if !pat.prefilter(msg, found) {
			continue
		}
		m := pat.re.FindStringSubmatchIndex(msg)
		if m == nil {
			continue
		}
		pat.matches.Add(1)
		if !matched {
			matched = true
			f.matched.Add(1)
		}
		var xm *Match
		if x != nil {
			x.Matches = append(x.Matches, explainMatch(f, pat, msg, m))
			xm = &x.Matches[len(x.Matches)-1]
		}
		if pat.ignore {
			f.ignored.Add(1)
			xm.say("not counted: the format knows this line and deliberately does not count it")
			return Event{}, false
		}
		if lit, vetoed := pat.vetoed(msg, m); vetoed {
			f.ignored.Add(1)
			xm.say(fmt.Sprintf("not counted: ignore-if %q", lit))
			continue
		}
		ev, why := p.event(f, pat, msg, m, o)
		if why != "" {
			f.unusable.Add(1)
			xm.say("no event: " + why)
			continue
		}
		if pat.session != sessionNone {
			n, note := f.sessionCount(pat, msg, m, &ev)
			xm.say(note)
			if n == 0 {
				f.repeats.Add(1)
				return Event{}, false
			}
			ev.Attempts = n
		} else {
			xm.say("event")
		}
		f.events.Add(1)
		pat.events.Add(1)
		return ev, true
	}
	return Event{}, false
}

// sessionCount applies a pattern's session rule to its event and returns
// the attempts that count and, for Explain, why.
func (f *format) sessionCount(pat *pattern, msg string, m []int, ev *Event) (int, string) {
	id, hasID := "", false
	if a, b, ok := group(m, pat.sess); ok && a < b {
		id, hasID = msg[a:b], true
	}
	var out sessionOutcome
	switch pat.session {
	case sessionAttempt:
		out = f.sessions.attempt(id, ev.Addr, ev.Login, ev.Attempts)
		if out.counted == 0 {
			return 0, fmt.Sprintf("counted already: a summary of session %q counted this attempt", id)
		}
		return out.counted, fmt.Sprintf("event: attempt of session %q", id)
	default:
		out = f.sessions.summary(id, hasID, ev.Addr, ev.Login, ev.Attempts)
	}
	whose := "its session's attempt lines"
	if !out.known {
		whose = "attempt lines of the same address and login"
	}
	switch {
	case out.before == 0:
		return out.counted, "event"
	case out.counted == 0:
		return 0, fmt.Sprintf("counted already: %s counted %s", whose, attempts(ev.Attempts))
	}
	return out.counted, fmt.Sprintf("event: %d of %s, %s counted the other %d", out.counted, attempts(ev.Attempts), whose, out.before)
}

// lastIndex is strings.LastIndex by forward searches, which are much faster
// for the few occurrences a line has.
func lastIndex(s, lit string) int {
	last := -1
	for off := 0; ; {
		i := strings.Index(s[off:], lit)
		if i < 0 {
			return last
		}
		last = off + i
		off = last + 1
	}
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return strconv.Itoa(n) + " attempts"
}

// prefilter reports whether msg starts with the literal the pattern's regex
// is anchored to, and every literal of the pattern occurs in msg.
func (pat *pattern) prefilter(msg string, found *litSet) bool {
	if p := pat.prefix; p != "" && (len(msg) < len(p) || msg[0] != p[0] || msg[:len(p)] != p) {
		return false
	}
	lits := pat.contains
	if found != nil && pat.lit >= 0 {
		if !found.has(pat.lit) {
			return false
		}
		lits = lits[1:]
	}
	for _, lit := range lits {
		if !strings.Contains(msg, lit) {
			return false
		}
	}
	return true
}

// vetoed reports whether an ignore-if literal occurs in msg outside the
// login capture: a login is whatever the client sent, and must not be able to
// veto the line that reports it.
func (pat *pattern) vetoed(msg string, m []int) (string, bool) {
	if len(pat.ignoreIf) == 0 {
		return "", false
	}
	before, after := msg, ""
	if a, b, ok := group(m, pat.login); ok {
		before, after = msg[:a], msg[b:]
	}
	for _, lit := range pat.ignoreIf {
		if strings.Contains(before, lit) || strings.Contains(after, lit) {
			return lit, true
		}
	}
	return "", false
}

// group returns the bounds of capture n in a submatch index slice.
func group(m []int, n int) (start, end int, ok bool) {
	if n < 0 || m[2*n] < 0 {
		return 0, 0, false
	}
	return m[2*n], m[2*n+1], true
}

// event builds the Event of a match; why says what is wrong with a match
// that gives none.
func (p *Parser) event(f *format, pat *pattern, msg string, m []int, o *origin) (ev Event, why string) {
	a, b, ok := group(m, pat.ip)
	if !ok {
		return Event{}, "the ip capture is empty"
	}
	if pat.last != "" {
		// The address the server wrote is after the last such literal:
		// an earlier one is in text a client chose.
		if k := lastIndex(msg, pat.last); k < 0 || k+len(pat.last) != a {
			return Event{}, fmt.Sprintf("ip %q is not the one after the last %q", msg[a:b], pat.last)
		}
	}
	addr, err := netip.ParseAddr(msg[a:b])
	if err != nil {
		return Event{}, fmt.Sprintf("ip %q is not an address", msg[a:b])
	}
	addr = addr.Unmap().WithZone("")
	if addr.IsUnspecified() {
		// 0.0.0.0 and :: are no client's address (anonymised samples, or a
		// server that did not know the peer): nothing to count or ban.
		return Event{}, fmt.Sprintf("ip %s is the unspecified address", addr)
	}
	ev = Event{
		Kind:     pat.kind,
		Service:  f.service,
		Addr:     addr,
		Attempts: 1,
		Format:   f.name,
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
	if ev.Service == ServiceUnknown && o.program != "" {
		// The daemon's name often says it: imapd, ipop3d, cyrus/pop3.
		if svc, ok := ParseService(o.program[strings.LastIndexAny(o.program, "/.")+1:]); ok {
			ev.Service = svc
		}
	}
	ev.Time = p.eventTime(f, pat, msg, m, o)
	if o.evidence {
		ev.Evidence = o.program + ": " + o.line
	} else {
		ev.Evidence = strings.Clone(o.line)
	}
	if a, b, ok := group(m, pat.login); ok {
		// msg ends the Evidence, which is the event's own copy: the login
		// is normalised from there and shares its memory (one copy less).
		off := len(ev.Evidence) - len(msg)
		ev.Login = normalizeLogin(ev.Evidence[off+a : off+b])
	}
	return ev, ""
}

// eventTime is the time the line reports: a `time` capture, else the line's
// header, else (ParseMessage) the message's time, else arrival. A time
// that reads as Go's zero time (0001-01-01T00:00:00, which text can
// spell) says nothing and counts as unreadable: an Event always has a time.
func (p *Parser) eventTime(f *format, pat *pattern, msg string, m []int, o *origin) time.Time {
	if a, b, ok := group(m, pat.time); ok {
		if t, ok := p.captureTime(f, msg[a:b], o.arrival); ok && !t.IsZero() {
			return t
		}
	}
	if o.hasTime && !o.fixed.IsZero() {
		return o.fixed
	}
	if t, ok := stampTime(o.stamp, o.kind, o.arrival, p.loc); ok && !t.IsZero() {
		return t
	}
	return o.arrival
}

// captureTime reads a `time` capture: a header's shape, or one of the
// format's layouts. The result is in the parser's location.
func (p *Parser) captureTime(f *format, s string, arrival time.Time) (time.Time, bool) {
	if n, k := stampLen(s); n == len(s) && k != stampNone {
		return stampTime(s, k, arrival, p.loc)
	}
	for _, l := range f.layouts {
		if t, err := time.ParseInLocation(l, s, p.loc); err == nil {
			return t.In(p.loc), true
		}
	}
	return time.Time{}, false
}
