package parsers

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"sync/atomic"
	"time"
)

// The capture groups a pattern's regex may use. Others (a `reason`, say) are
// allowed for the reader's sake and ignored.
const (
	captureIP       = "ip"
	captureLogin    = "login"
	captureAttempts = "attempts"
	captureService  = "service"
	captureTime     = "time"
	captureSession  = "session"
)

// knownCaptures are the capture names with a meaning, for the case check.
var knownCaptures = [...]string{captureIP, captureLogin, captureAttempts, captureService, captureTime, captureSession}

// MaxAttempts bounds what one line can report: a larger `attempts` capture is
// cut to it, so that a garbled number cannot flood the counters.
const MaxAttempts = 1000

// format is one compiled FormatSpec.
type format struct {
	name     string
	service  Service
	syslog   bool // reads syslog lines whose program matches programs
	plain    bool // reads lines without a syslog header
	programs []glob
	patterns []*pattern
	layouts  []string      // Go layouts for `time` captures
	sessions *sessionTable // attempts counted per session; nil when no pattern has a session rule

	lines    atomic.Uint64 // lines offered
	matched  atomic.Uint64 // lines a pattern's regex matched
	events   atomic.Uint64 // events produced
	ignored  atomic.Uint64 // matches vetoed by ignore-if, or by a pattern of kind ignore
	unusable atomic.Uint64 // matches whose ip capture is no address
	repeats  atomic.Uint64 // session summaries whose attempts were all counted already
	twice    atomic.Uint64 // plain lines it was not offered as plain, having read them as syslog
}

// pattern is one compiled PatternSpec.
type pattern struct {
	name     string
	kind     Kind // KindUnknown with ignore
	ignore   bool // kind: ignore: a match ends the format's search without an event
	session  sessionRule
	contains []string
	prefix   string // the literal the regex is anchored to (^...): checked before contains
	last     string // address-after-last
	ignoreIf []string
	re       *regexp.Regexp
	// Submatch numbers of the known captures; -1 when the regex has none.
	ip, login, attempts, service, time, sess int
	lit                                      int // index of contains[0] in the parser's plain index; -1: none

	matches atomic.Uint64
	events  atomic.Uint64
}

// sessionRule says how a pattern's lines share attempts with other lines of
// the same session (see sessions.go).
type sessionRule uint8

const (
	sessionNone    sessionRule = iota
	sessionAttempt             // one attempt of the session
	sessionSummary             // the session's attempts; count those not yet counted
)

// kindName is how a pattern's kind is written in YAML.
func (p *pattern) kindName() string {
	if p.ignore {
		return patternIgnore
	}
	return p.kind.String()
}

// patternIgnore is the pattern kind of known lines that are not counted.
const patternIgnore = "ignore"

// glob is a program pattern split at its stars: ["postfix", "/smtpd"] for
// "postfix*/smtpd"; a single part means an exact name.
type glob []string

func (g glob) exact() bool { return len(g) == 1 }

func (g glob) match(s string) bool {
	if len(g) == 1 {
		return s == g[0]
	}
	if !strings.HasPrefix(s, g[0]) {
		return false
	}
	s = s[len(g[0]):]
	// Taking each middle part at its leftmost place leaves the most room for
	// the rest, so this finds a match whenever there is one.
	for _, part := range g[1 : len(g)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return strings.HasSuffix(s, g[len(g)-1])
}

// compileFormat checks a spec and compiles it. The error joins a SpecError for
// every problem found.
func compileFormat(s *FormatSpec) (*format, error) {
	var errs []error
	bad := func(line int, path, format string, args ...any) {
		errs = append(errs, s.errorf(line, path, format, args...))
	}
	f := &format{name: s.Name}

	switch {
	case s.Name == "":
		bad(s.pos.line, "name", "every format needs a name")
	case !validName(s.Name):
		bad(s.pos.of("name"), "name", "%q: use lower-case letters, digits, '-', '_' and '.' (it names metrics)", s.Name)
	}

	headers := s.Header
	if len(headers) == 0 {
		headers = Headers{HeaderSyslog}
	}
	for i, h := range headers {
		switch h {
		case HeaderSyslog:
			f.syslog = true
		case HeaderPlain:
			f.plain = true
		default:
			bad(s.pos.of("header"), fmt.Sprintf("header[%d]", i), "unknown header %q (want syslog or plain)", h)
		}
	}

	switch {
	case f.syslog && len(s.Programs) == 0:
		bad(s.pos.of("header"), "programs", "a syslog format needs the program tags it applies to")
	case !f.syslog && len(s.Programs) > 0:
		bad(s.pos.of("programs"), "programs", "only syslog lines have a program tag; add syslog to header or drop programs")
	}
	for i, p := range s.Programs {
		if p == "" || strings.ContainsAny(p, " \t[]:") {
			bad(s.pos.of("programs"), fmt.Sprintf("programs[%d]", i), "%q is not a program tag (no spaces, brackets or colons; * is a wildcard)", p)
			continue
		}
		f.programs = append(f.programs, strings.Split(p, "*"))
	}

	if s.Service != "" {
		svc, ok := ParseService(s.Service)
		if !ok {
			bad(s.pos.of("service"), "service", "unknown service %q (want smtp, imap, pop3, managesieve, jmap or http)", s.Service)
		}
		f.service = svc
	}

	for i, l := range s.TimeLayouts {
		if !validLayout(l) {
			bad(s.pos.of("time-layouts"), fmt.Sprintf("time-layouts[%d]", i),
				"%q is not a Go time layout with a date and a time of day (write the reference time, Mon Jan 2 15:04:05 MST 2006, as your log does)", l)
		}
	}
	f.layouts = s.TimeLayouts

	if len(s.Patterns) == 0 {
		bad(s.pos.of("patterns"), "patterns", "a format needs at least one pattern")
	}
	names := map[string]int{}
	for i := range s.Patterns {
		p, perrs := compilePattern(s, i)
		errs = append(errs, perrs...)
		if p == nil {
			continue
		}
		if j, dup := names[p.name]; dup {
			ps := &s.Patterns[i]
			bad(ps.pos.of("name"), fmt.Sprintf("patterns[%d].name", i), "pattern %q is already patterns[%d]", p.name, j)
		}
		names[p.name] = i
		f.patterns = append(f.patterns, p)
		if p.session != sessionNone && f.sessions == nil {
			f.sessions = newSessionTable(maxSessions)
		}
	}

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return f, nil
}

func compilePattern(s *FormatSpec, i int) (*pattern, []error) {
	ps := &s.Patterns[i]
	var errs []error
	at := func(key string) (int, string) { return ps.pos.of(key), fmt.Sprintf("patterns[%d].%s", i, key) }
	bad := func(key, format string, args ...any) {
		line, path := at(key)
		errs = append(errs, s.errorf(line, path, format, args...))
	}
	p := &pattern{name: ps.Name, ip: -1, login: -1, attempts: -1, service: -1, time: -1, sess: -1, lit: -1}

	switch {
	case ps.Name == "":
		line := ps.pos.line
		if line == 0 {
			line = s.pos.of("patterns")
		}
		errs = append(errs, s.errorf(line, fmt.Sprintf("patterns[%d]", i), "every pattern needs a name"))
	case !validName(ps.Name):
		bad("name", "%q: use lower-case letters, digits, '-', '_' and '.'", ps.Name)
	}

	switch k, err := ParseKind(ps.Kind); {
	case ps.Kind == "":
		bad("kind", "missing kind (auth_failure, auth_success, abuse or ignore)")
	case ps.Kind == patternIgnore:
		p.ignore = true
	case err != nil:
		bad("kind", "unknown kind %q (want auth_failure, auth_success, abuse or ignore)", ps.Kind)
	default:
		p.kind = k
	}

	switch ps.Session {
	case "":
	case "attempt":
		p.session = sessionAttempt
	case "summary":
		p.session = sessionSummary
	default:
		bad("session", "unknown session rule %q (want attempt or summary)", ps.Session)
	}
	if p.session != sessionNone && ps.Kind != "" && p.kind != AuthFailure {
		bad("session", "only auth_failure patterns share attempts across a session")
	}

	if len(ps.Contains) == 0 {
		bad("contains", "give at least one literal the line must contain: it is what keeps other lines away from the regex")
	}
	for j, lit := range ps.Contains {
		if lit == "" {
			bad("contains", "contains[%d] is empty", j)
		}
	}
	p.contains = ps.Contains
	for j, lit := range ps.IgnoreIf {
		if lit == "" {
			bad("ignore-if", "ignore-if[%d] is empty", j)
		}
	}
	p.ignoreIf = ps.IgnoreIf
	p.last = ps.AddressAfterLast

	if ps.Regex == "" {
		bad("regex", "missing regex")
		return nil, errs
	}
	re, err := regexp.Compile(ps.Regex)
	if err != nil {
		bad("regex", "%v", err)
		return nil, errs
	}
	p.re = re
	p.prefix = anchoredPrefix(ps.Regex)
	for n, name := range re.SubexpNames() {
		if name == "" {
			continue
		}
		slot := (*int)(nil)
		switch name {
		case captureIP:
			slot = &p.ip
		case captureLogin:
			slot = &p.login
		case captureAttempts:
			slot = &p.attempts
		case captureService:
			slot = &p.service
		case captureTime:
			slot = &p.time
		case captureSession:
			slot = &p.sess
		default:
			for _, known := range knownCaptures {
				if strings.EqualFold(name, known) {
					bad("regex", "capture group %q: did you mean %q? (names are case-sensitive)", name, known)
				}
			}
			continue
		}
		if *slot >= 0 {
			bad("regex", "capture group %s appears twice", name)
			continue
		}
		*slot = n
	}
	if p.ip < 0 && !p.ignore {
		bad("regex", "missing capture group ip")
	}
	if p.attempts >= 0 && p.kind != AuthFailure && !p.ignore {
		bad("regex", "only an auth_failure pattern can capture attempts")
	}
	switch {
	case p.session == sessionAttempt && p.sess < 0:
		bad("regex", "a pattern with session: attempt needs a capture group session")
	case p.session == sessionNone && p.sess >= 0 && !p.ignore:
		bad("session", "the regex captures a session: say how its lines count (session: attempt or summary)")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// anchoredPrefix returns the literal text that a regex anchored with ^
// requires at the start of the message: checking it costs less than a
// substring search. "" when there is none.
func anchoredPrefix(expr string) string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return ""
	}
	re = re.Simplify()
	if re.Op != syntax.OpConcat || len(re.Sub) < 2 || re.Sub[0].Op != syntax.OpBeginText {
		return ""
	}
	var b strings.Builder
	for _, sub := range re.Sub[1:] {
		if sub.Op != syntax.OpLiteral || sub.Flags&syntax.FoldCase != 0 {
			break
		}
		b.WriteString(string(sub.Rune))
	}
	return b.String()
}

// validLayout accepts a Go time layout that has a day, a month and an hour,
// and reads back what it writes.
func validLayout(l string) bool {
	ref := time.Date(2006, 1, 2, 15, 4, 5, 0, time.UTC)
	out := ref.Format(l)
	t, err := time.Parse(l, out)
	return err == nil && t.Day() == 2 && t.Month() == 1 && (t.Hour() == 15 || t.Hour() == 3)
}

// validName accepts what can safely be a metric label value and a file name.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}
