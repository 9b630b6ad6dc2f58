package parsers

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
)

// The capture groups a pattern's regex may use. Others (a `reason`, say) are
// allowed for the reader's sake and ignored.
const (
	captureIP       = "ip"
	captureLogin    = "login"
	captureAttempts = "attempts"
	captureService  = "service"
)

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

	lines    atomic.Uint64 // lines offered
	matched  atomic.Uint64 // lines a pattern's regex matched
	events   atomic.Uint64 // events produced
	ignored  atomic.Uint64 // matches vetoed by ignore-if
	unusable atomic.Uint64 // matches whose ip capture is no address
}

// pattern is one compiled PatternSpec.
type pattern struct {
	name     string
	kind     Kind
	contains []string
	ignoreIf []string
	re       *regexp.Regexp
	// Submatch numbers of the known captures; -1 when the regex has none.
	ip, login, attempts, service int

	events atomic.Uint64
}

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
	p := &pattern{name: ps.Name, ip: -1, login: -1, attempts: -1, service: -1}

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

	if ps.Kind == "" {
		bad("kind", "missing kind (auth_failure or auth_success)")
	} else if k, err := ParseKind(ps.Kind); err != nil {
		bad("kind", "%v", err)
	} else {
		p.kind = k
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
		default:
			for _, known := range []string{captureIP, captureLogin, captureAttempts, captureService} {
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
	if p.ip < 0 {
		bad("regex", "missing capture group ip")
	}
	if p.attempts >= 0 && p.kind == AuthSuccess {
		bad("regex", "an auth_success pattern cannot capture attempts")
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
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
