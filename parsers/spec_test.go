package parsers

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const goodFormat = `name: demo
programs: [demo]
patterns:
  - name: fail
    kind: auth_failure
    contains: [bad]
    regex: '^bad password from (?P<ip>\S+) for (?P<login>\S+)$'
`

func TestParseFormatsErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // the error's lines, exactly
	}{
		{
			name: "unknown key in a pattern",
			yaml: "name: demo\nprograms: [demo]\npatterns:\n  - name: fail\n    kind: auth_failure\n    contains: [bad]\n    regexp: '^(?P<ip>x)$'\n",
			want: []string{
				`demo.yaml:7: unknown key "regexp" in pattern (known: name, kind, contains, regex, ignore-if, session, address-after-last)`,
			},
		},
		{
			name: "unknown key in a format",
			yaml: "name: demo\nprogram: [demo]\nprograms: [demo]\npatterns:\n  - {name: fail, kind: auth_failure, contains: [x], regex: '(?P<ip>x)'}\n",
			want: []string{`demo.yaml:2: unknown key "program" in format (known: name, description, header, programs, service, time-layouts, patterns)`},
		},
		{
			name: "missing ip capture",
			yaml: "name: demo\nprograms: [demo]\npatterns:\n  - name: a\n    kind: auth_failure\n    contains: [x]\n    regex: '^(?P<login>x)$'\n  - name: b\n    kind: auth_failure\n    contains: [x]\n    regex: '^(?P<ip>x)$'\n  - name: c\n    kind: auth_failure\n    contains: [x]\n    regex: '^(?P<Ip>x)$'\n",
			want: []string{
				`demo.yaml:7: patterns[0].regex: missing capture group ip`,
				`demo.yaml:15: patterns[2].regex: capture group "Ip": did you mean "ip"? (names are case-sensitive)`,
				`demo.yaml:15: patterns[2].regex: missing capture group ip`,
			},
		},
		{
			name: "bad regex",
			yaml: "name: demo\nprograms: [demo]\npatterns:\n  - name: a\n    kind: auth_failure\n    contains: [x]\n    regex: '^(?P<ip>x$'\n",
			want: []string{"demo.yaml:7: patterns[0].regex: error parsing regexp: missing closing ): `^(?P<ip>x$`"},
		},
		{
			name: "perl-only regex",
			yaml: "name: demo\nprograms: [demo]\npatterns:\n  - name: a\n    kind: auth_failure\n    contains: [x]\n    regex: '^(?!y)(?P<ip>x)$'\n",
			want: []string{"demo.yaml:7: patterns[0].regex: error parsing regexp: invalid or unsupported Perl syntax: `(?!`"},
		},
		{
			name: "bad kind",
			yaml: "name: demo\nprograms: [demo]\npatterns:\n  - name: a\n    kind: auth_fail\n    contains: [x]\n    regex: '(?P<ip>x)'\n",
			want: []string{`demo.yaml:5: patterns[0].kind: unknown kind "auth_fail" (want auth_failure, auth_success, abuse or ignore)`},
		},
		{
			name: "missing kind, contains and name",
			yaml: "name: demo\nprograms: [demo]\npatterns:\n  - regex: '(?P<ip>x)'\n",
			want: []string{
				`demo.yaml:4: patterns[0]: every pattern needs a name`,
				`demo.yaml:4: patterns[0].kind: missing kind (auth_failure, auth_success, abuse or ignore)`,
				`demo.yaml:4: patterns[0].contains: give at least one literal the line must contain: it is what keeps other lines away from the regex`,
			},
		},
		{
			name: "syslog format without programs, bad header, bad service",
			yaml: "name: demo\nheader: [syslog, json]\nservice: gopher\npatterns:\n  - {name: a, kind: auth_failure, contains: [x], regex: '(?P<ip>x)'}\n",
			want: []string{
				`demo.yaml:2: header[1]: unknown header "json" (want syslog or plain)`,
				`demo.yaml:2: programs: a syslog format needs the program tags it applies to`,
				`demo.yaml:3: service: unknown service "gopher" (want smtp, imap, pop3, managesieve, jmap or http)`,
			},
		},
		{
			name: "plain format with programs",
			yaml: "name: demo\nheader: plain\nprograms: [x]\npatterns:\n  - {name: a, kind: auth_failure, contains: [x], regex: '(?P<ip>x)'}\n",
			want: []string{`demo.yaml:3: programs: only syslog lines have a program tag; add syslog to header or drop programs`},
		},
		{
			name: "duplicate names",
			yaml: "- name: demo\n  programs: [x]\n  patterns:\n    - {name: a, kind: auth_failure, contains: [x], regex: '(?P<ip>x)'}\n    - {name: a, kind: auth_success, contains: [x], regex: '(?P<ip>x)'}\n- name: demo\n  programs: [y]\n  patterns:\n    - {name: a, kind: auth_failure, contains: [x], regex: '(?P<ip>x)'}\n",
			want: []string{
				`demo.yaml:5: patterns[1].name: pattern "a" is already patterns[0]`,
				`demo.yaml:6: name: format "demo" is already defined at line 1`,
			},
		},
		{
			name: "wrong types",
			yaml: "name: demo\nprograms: demo\npatterns:\n  - name: a\n    kind: auth_failure\n    contains: x\n    regex: '(?P<ip>x)'\n",
			want: []string{
				"demo.yaml:2: cannot unmarshal !!str `demo` into []string",
				"demo.yaml:6: cannot unmarshal !!str `x` into []string",
			},
		},
		{
			name: "syntax error",
			yaml: "name: demo\npatterns: [\n",
			want: []string{`demo.yaml:2: did not find expected node content`},
		},
		{
			name: "not a format",
			yaml: "just words\n",
			want: []string{`demo.yaml:1: want a format (a mapping) or a list of formats`},
		},
		{
			name: "empty",
			yaml: "# nothing\n",
			want: []string{`demo.yaml: no formats`},
		},
		{
			name: "attempts on a success",
			yaml: "name: demo\nprograms: [demo]\npatterns:\n  - name: a\n    kind: auth_success\n    contains: [x]\n    regex: '(?P<ip>x) (?P<attempts>\\d+)'\n",
			want: []string{`demo.yaml:7: patterns[0].regex: only an auth_failure pattern can capture attempts`},
		},
		{
			name: "session rules",
			yaml: "name: demo\nprograms: [demo]\npatterns:\n" +
				"  - {name: a, kind: auth_failure, session: attempt, contains: [x], regex: '(?P<ip>x)'}\n" +
				"  - {name: b, kind: auth_success, session: summary, contains: [x], regex: '(?P<ip>x)'}\n" +
				"  - {name: c, kind: auth_failure, contains: [x], regex: '(?P<ip>x)<(?P<session>y)>'}\n" +
				"  - {name: d, kind: auth_failure, session: first, contains: [x], regex: '(?P<ip>x)'}\n",
			want: []string{
				`demo.yaml:4: patterns[0].regex: a pattern with session: attempt needs a capture group session`,
				`demo.yaml:5: patterns[1].session: only auth_failure patterns share attempts across a session`,
				`demo.yaml:6: patterns[2].session: the regex captures a session: say how its lines count (session: attempt or summary)`,
				`demo.yaml:7: patterns[3].session: unknown session rule "first" (want attempt or summary)`,
			},
		},
		{
			name: "time layouts",
			yaml: "name: demo\nheader: plain\ntime-layouts: ['02/Jan/2006 15:04:05', 'yesterday', '15:04:05']\npatterns:\n  - {name: a, kind: ignore, contains: [x], regex: 'x'}\n",
			want: []string{
				`demo.yaml:3: time-layouts[1]: "yesterday" is not a Go time layout with a date and a time of day (write the reference time, Mon Jan 2 15:04:05 MST 2006, as your log does)`,
				`demo.yaml:3: time-layouts[2]: "15:04:05" is not a Go time layout with a date and a time of day (write the reference time, Mon Jan 2 15:04:05 MST 2006, as your log does)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			specs, err := ParseFormats([]byte(tt.yaml), "demo.yaml")
			if err == nil {
				t.Fatalf("no error; got %d specs", len(specs))
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestParseFormatsShapes(t *testing.T) {
	list := "- " + strings.ReplaceAll(strings.TrimSuffix(goodFormat, "\n"), "\n", "\n  ") + "\n"
	two := goodFormat + "---\n" + strings.Replace(goodFormat, "name: demo", "name: other", 1)
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"one document", goodFormat, []string{"demo"}},
		{"a list", list, []string{"demo"}},
		{"two documents", two, []string{"demo", "other"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			specs, err := ParseFormats([]byte(tt.yaml), "x.yaml")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range specs {
				names = append(names, s.Name)
				if s.Origin != "x.yaml" {
					t.Errorf("Origin = %q", s.Origin)
				}
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Errorf("names = %v, want %v", names, tt.want)
			}
		})
	}
}

// A configuration file embeds formats in its own YAML and decodes them with
// its own decoder: the spec stays strict, and Compile still names lines.
func TestFormatSpecEmbedded(t *testing.T) {
	type config struct {
		Formats []FormatSpec `yaml:"formats"`
	}
	doc := "formats:\n  - name: demo\n    programs: [demo]\n    patterns:\n      - name: a\n        kind: auth_failure\n        contains: [x]\n        regex: '(?P<login>x)'\n"
	var c config
	if err := yaml.Unmarshal([]byte(doc), &c); err != nil { // a lax decoder
		t.Fatal(err)
	}
	c.Formats[0].Origin = "mailban.yaml"
	_, err := Compile(c.Formats, Options{})
	want := "mailban.yaml:8: patterns[0].regex: missing capture group ip"
	if err == nil || err.Error() != want {
		t.Errorf("Compile error = %v, want %s", err, want)
	}
	var se *SpecError
	if !errors.As(err, &se) || se.Line != 8 || se.Path != "patterns[0].regex" || se.Format != "demo" {
		t.Errorf("SpecError = %+v", se)
	}

	bad := strings.Replace(doc, "    programs:", "    programz:", 1)
	err = yaml.Unmarshal([]byte(bad), &c)
	if err == nil || !strings.Contains(err.Error(), `line 3: unknown key "programz" in format`) {
		t.Errorf("lax decode of an unknown key: %v", err)
	}
}

func TestCompileErrors(t *testing.T) {
	presets, err := Presets()
	if err != nil {
		t.Fatal(err)
	}
	built := FormatSpec{Name: "built", Programs: []string{"x y"}, Patterns: []PatternSpec{{Name: "p", Kind: "auth_failure", Contains: []string{"x"}, Regex: "(?P<ip>x)"}}}
	tests := []struct {
		name  string
		specs []FormatSpec
		want  string
	}{
		{"nothing", nil, "compile formats: no formats given"},
		{"twice", []FormatSpec{presets["postfix"], presets["postfix"]},
			`presets/postfix.yaml:14: name: format "postfix" is given twice (first presets/postfix.yaml:14)`},
		{"built in Go, no lines", []FormatSpec{built},
			`format "built": programs[0]: "x y" is not a program tag (no spaces, brackets or colons; * is a wildcard)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.specs, Options{})
			if err == nil || err.Error() != tt.want {
				t.Errorf("error = %v\nwant    %s", err, tt.want)
			}
		})
	}
}

// presetNames are the presets mailban promises: one for each of fail2ban's
// 25 mail filters, of the same name, and Stalwart's.
var presetNames = []string{
	"assp", "courier-auth", "courier-smtp", "cyrus-imap", "domino-smtp", "dovecot", "exim", "exim-spam",
	"groupoffice", "horde", "kerio", "openwebmail", "oracleims", "perdition", "postfix", "qmail",
	"roundcube-auth", "sendmail-auth", "sendmail-reject", "sieve", "sogo-auth", "solid-pop3d",
	"squirrelmail", "stalwart", "tine20", "uwimap-auth",
}

func TestPresets(t *testing.T) {
	presets, err := Presets()
	if err != nil {
		t.Fatal(err)
	}
	if len(presets) != len(presetNames) {
		t.Errorf("%d presets, want %d", len(presets), len(presetNames))
	}
	for _, name := range presetNames {
		s, ok := presets[name]
		if !ok {
			t.Fatalf("no preset %q", name)
		}
		if s.Description == "" {
			t.Errorf("%s: no description", name)
		}
		if want := "presets/" + name + ".yaml"; s.Origin != want {
			t.Errorf("%s: Origin = %q, want %q", name, s.Origin, want)
		}
	}
	if d := presets["dovecot"].Description; !strings.Contains(d, "session") || !strings.Contains(d, "not here") {
		t.Errorf("dovecot's description must state how auth-process lines count")
	}
	// Callers get their own copy.
	presets["postfix"] = FormatSpec{}
	again, _ := Presets()
	if again["postfix"].Name != "postfix" {
		t.Error("Presets shares its map between calls")
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		glob, s string
		want    bool
	}{
		{"postfix*/smtpd", "postfix/smtpd", true},
		{"postfix*/smtpd", "postfix/submission/smtpd", true},
		{"postfix*/smtpd", "postfix-incoming/smtpd", true},
		{"postfix*/smtpd", "postfix/smtpdx", false},
		{"postfix*/smtpd", "postfix/qmgr", false},
		{"postfix*/smtpd", "xpostfix/smtpd", false},
		{"postfix*/smtpd", "postfix/smtp", false},
		{"dovecot", "dovecot", true},
		{"dovecot", "dovecot2", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "acb", false},
		{"ab*ba", "aba", false}, // prefix and suffix must not overlap
		{"*", "", true},
	}
	for _, tt := range tests {
		if got := glob(strings.Split(tt.glob, "*")).match(tt.s); got != tt.want {
			t.Errorf("%q.match(%q) = %v, want %v", tt.glob, tt.s, got, tt.want)
		}
	}
}
