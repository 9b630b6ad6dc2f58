package parsers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FormatSpec is one log format as written in YAML: the schema that the
// embedded presets and users' own formats share (see SCHEMA.md). It is
// exported so that a configuration file can hold a list of formats and decode
// them with this same struct; decoding is strict (unknown keys are errors)
// however the surrounding document is decoded, and remembers the line of every
// key so that Compile can say where a problem is.
type FormatSpec struct {
	Name        string        `yaml:"name"`
	Description string        `yaml:"description,omitempty"`
	Header      Headers       `yaml:"header,omitempty"`   // syslog (default), plain, or both
	Programs    []string      `yaml:"programs,omitempty"` // syslog program tags; * matches any run of characters
	Service     string        `yaml:"service,omitempty"`  // default service; a `service` capture overrides it
	Patterns    []PatternSpec `yaml:"patterns"`
	// Go time layouts ("02/Jan/2006 15:04:05") tried on a pattern's `time`
	// capture when it has none of the shapes a line's header may have.
	TimeLayouts []string `yaml:"time-layouts,omitempty"`

	// Origin names where the spec was read from (a file name) in error
	// messages. ParseFormats sets it; whoever decodes a FormatSpec from a
	// document of its own may set it too.
	Origin string `yaml:"-"`

	pos positions
}

// PatternSpec is one kind of line a format recognises.
type PatternSpec struct {
	Name     string   `yaml:"name"`
	Kind     string   `yaml:"kind"`     // auth_failure, auth_success, abuse, or ignore (a known line not to count)
	Contains []string `yaml:"contains"` // literals that must all occur before the regex runs
	Regex    string   `yaml:"regex"`    // RE2, applied to the message; captures ip (required), login, attempts, service, time, session
	IgnoreIf []string `yaml:"ignore-if,omitempty"`
	// attempt or summary: how lines that share one session's attempts count.
	Session string `yaml:"session,omitempty"`
	// The ip capture must directly follow the last occurrence of this
	// literal in the message (only the server writes after it).
	AddressAfterLast string `yaml:"address-after-last,omitempty"`

	pos positions
}

// Headers lists the line shapes a format reads: "syslog" (`<time> <host>
// <program>[pid]: <message>`) and "plain" (`<time> <message>`). In YAML it is
// a single word or a list of words.
type Headers []string

// The header names a format may list.
const (
	HeaderSyslog = "syslog"
	HeaderPlain  = "plain"
)

// UnmarshalYAML accepts `header: syslog` as well as `header: [syslog, plain]`.
func (h *Headers) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*h = Headers{n.Value}
		return nil
	case yaml.SequenceNode:
		var words []string
		if err := n.Decode(&words); err != nil {
			return err
		}
		*h = words
		return nil
	}
	return typeErrorf(n.Line, "header must be a word (syslog, plain) or a list of them")
}

// positions remembers where a mapping and its keys' values were written.
type positions struct {
	line int            // the mapping's own line; 0 when not decoded from YAML
	keys map[string]int // key → line of its value
}

func (p positions) of(key string) int {
	if l, ok := p.keys[key]; ok {
		return l
	}
	return p.line
}

// UnmarshalYAML decodes a format strictly: every key must be one the schema
// knows, whatever decoder options the caller used.
func (s *FormatSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain FormatSpec // the same fields without this method
	pos, errs := checkKeys(n, "format", "name", "description", "header", "programs", "service", "time-layouts", "patterns")
	if err := n.Decode((*plain)(s)); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return err
		}
		errs = append(errs, te.Errors...)
	}
	s.pos = pos
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// UnmarshalYAML decodes a pattern strictly, like FormatSpec.UnmarshalYAML.
func (p *PatternSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain PatternSpec
	pos, errs := checkKeys(n, "pattern", "name", "kind", "contains", "regex", "ignore-if", "session", "address-after-last")
	if err := n.Decode((*plain)(p)); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return err
		}
		errs = append(errs, te.Errors...)
	}
	p.pos = pos
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// checkKeys records the line of every key of mapping n and reports the keys
// that are not in known, in yaml.v3's "line N: message" shape.
func checkKeys(n *yaml.Node, what string, known ...string) (positions, []string) {
	pos := positions{line: n.Line, keys: map[string]int{}}
	if n.Kind != yaml.MappingNode {
		return pos, []string{fmt.Sprintf("line %d: a %s must be a mapping of keys to values", n.Line, what)}
	}
	var errs []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		pos.keys[k.Value] = v.Line
		if !slices.Contains(known, k.Value) {
			errs = append(errs, fmt.Sprintf("line %d: unknown key %q in %s (known: %s)",
				k.Line, k.Value, what, strings.Join(known, ", ")))
		}
	}
	return pos, errs
}

func typeErrorf(line int, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: ", line) + fmt.Sprintf(format, args...)}}
}

// SpecError is one problem with a format: where it is and what is wrong.
// Its text reads "dovecot.yaml:12: patterns[2].regex: missing capture group ip".
type SpecError struct {
	Origin string // the file, or "" when unknown
	Line   int    // 1-based; 0 when unknown
	Format string // the format's name, when known
	Path   string // the key inside the format: "patterns[2].regex"; "" for the whole document
	Err    error
}

func (e *SpecError) Error() string {
	var b strings.Builder
	switch {
	case e.Origin != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.Origin, e.Line)
	case e.Origin != "":
		fmt.Fprintf(&b, "%s: ", e.Origin)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Line == 0 && e.Format != "" {
		// Without a line the format's name is what finds the spot.
		fmt.Fprintf(&b, "format %q: ", e.Format)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *SpecError) Unwrap() error { return e.Err }

// ParseFormats decodes YAML holding one format, a list of formats, or several
// documents of either, and checks each format as Compile would. Errors name
// origin, line and key; every problem found is reported (joined), not only the
// first.
func ParseFormats(data []byte, origin string) ([]FormatSpec, error) {
	// Two decoders walk the same documents in step: the first only looks at
	// each document's shape (one format or a list), the second decodes it
	// strictly into that shape.
	shape := yaml.NewDecoder(bytes.NewReader(data))
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)

	var specs []FormatSpec
	var errs []error
	for doc := 0; ; doc++ {
		var n yaml.Node
		if err := shape.Decode(&n); err == io.EOF {
			break
		} else if err != nil {
			return nil, errors.Join(append(errs, yamlErrors(origin, err)...)...)
		}
		root := &n
		if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
			root = root.Content[0]
		}
		switch root.Kind {
		case yaml.MappingNode:
			var s FormatSpec
			if err := strict.Decode(&s); err != nil {
				errs = append(errs, yamlErrors(origin, err)...)
				continue
			}
			specs = append(specs, s)
		case yaml.SequenceNode:
			var list []FormatSpec
			if err := strict.Decode(&list); err != nil {
				errs = append(errs, yamlErrors(origin, err)...)
				continue
			}
			specs = append(specs, list...)
		default:
			var skip yaml.Node
			_ = strict.Decode(&skip) // keep the two decoders on the same document
			if root.Kind != 0 {
				errs = append(errs, &SpecError{Origin: origin, Line: root.Line,
					Err: errors.New("want a format (a mapping) or a list of formats")})
			}
		}
	}
	if len(specs) == 0 && len(errs) == 0 {
		errs = append(errs, &SpecError{Origin: origin, Err: errors.New("no formats")})
	}
	seen := map[string]int{}
	for i := range specs {
		s := &specs[i]
		s.Origin = origin
		if _, err := compileFormat(s); err != nil {
			errs = append(errs, err)
		}
		if j, dup := seen[s.Name]; dup && s.Name != "" {
			errs = append(errs, s.errorf(s.pos.of("name"), "name", "format %q is already defined at line %d", s.Name, specs[j].pos.line))
		}
		seen[s.Name] = i
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return specs, nil
}

// yamlErrors turns yaml.v3's errors ("line 3: field x not found", "yaml:
// line 3: did not find expected key") into SpecErrors with the line split out.
func yamlErrors(origin string, err error) []error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]error, 0, len(msgs))
	for _, m := range msgs {
		e := &SpecError{Origin: origin}
		m = strings.TrimPrefix(m, "yaml: ")
		if rest, ok := strings.CutPrefix(m, "line "); ok {
			num, after, found := strings.Cut(rest, ": ")
			if n, err := strconv.Atoi(num); found && err == nil {
				e.Line, m = n, after
			}
		}
		e.Err = errors.New(m)
		out = append(out, e)
	}
	return out
}

func (s *FormatSpec) errorf(line int, path, format string, args ...any) *SpecError {
	return &SpecError{Origin: s.Origin, Line: line, Format: s.Name, Path: path, Err: fmt.Errorf(format, args...)}
}
