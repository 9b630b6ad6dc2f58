package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/rules"
)

func noHost() ([]netip.Prefix, error) { return nil, nil }

func TestBadConfigsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want string // the whole error text
	}{
		{
			name: "unknown top-level key",
			yaml: "sources:\n  - paths: [/var/log/mail.log]\nsorces: []\n",
			want: `t.yaml:3: sorces: unknown key (check its spelling and indentation)`,
		},
		{
			name: "unknown nested key",
			yaml: "rules:\n  ip:\n    treshold: 10/1h\n",
			want: `t.yaml:3: rules.ip.treshold: unknown key (check its spelling and indentation)`,
		},
		{
			name: "unknown key in a list item",
			yaml: "sources:\n  - name: a\n    paths: [/x]\n  - name: b\n    path: /y\n",
			want: `t.yaml:5: sources[1].path: unknown key (check its spelling and indentation)`,
		},
		{
			name: "bad duration",
			yaml: "rules:\n  ban:\n    for: 10 minutes\n",
			want: `t.yaml:3: rules.ban.for: "10 minutes" is not a duration (use a number and a unit: s, m, h, d, w; e.g. 90s, 10m, 1d)`,
		},
		{
			name: "bad threshold",
			yaml: "fail2ban: 100 per day\n",
			want: `t.yaml:1: fail2ban: ` + thresholdErr(t, "100 per day"),
		},
		{
			name: "bad CIDR in a list",
			yaml: "blocked-networks:\n  - 198.51.100.0/24\n  - 203.0.113.0/33\n",
			want: `t.yaml:3: blocked-networks[1]: "203.0.113.0/33" is not a CIDR network (e.g. 203.0.113.0/24, 2001:db8::/48)`,
		},
		{
			name: "host bits set",
			yaml: "allowlist:\n  networks: [192.0.2.7/24]\n",
			want: `t.yaml:2: allowlist.networks[0]: "192.0.2.7/24" has host bits set: did you mean 192.0.2.0/24?`,
		},
		{
			name: "wrong type",
			yaml: "rules:\n  ip:\n    ipv6-prefix: wide\n",
			want: `t.yaml:3: rules.ip.ipv6-prefix: text "wide" is not a whole number`,
		},
		{
			name: "bad word",
			yaml: "sources:\n  - paths: [/x]\n    start-at: middle\n",
			want: `t.yaml:3: sources[0].start-at: "middle" is not one of end, beginning`,
		},
		{
			name: "out of range after decoding",
			yaml: "rules:\n  ip:\n    ipv6-prefix: 129\n",
			want: `t.yaml:3: rules.ip.ipv6-prefix: 129 is not a prefix length (1 to 128; 64 groups each customer's /64)`,
		},
		{
			name: "missing paths",
			yaml: "sources:\n  - name: mail\n    formats: [postfix]\n",
			want: `t.yaml:2: sources[0].paths: a file source needs at least one path or glob pattern`,
		},
		{
			name: "unknown format",
			yaml: "sources:\n  - paths: [/x]\n    formats: [postfix, dovecott]\n",
			want: `t.yaml:3: sources[0].formats[1]: no format named "dovecott"`,
		},
		{
			name: "duplicate source names",
			yaml: "sources:\n  - name: a\n    paths: [/x]\n  - name: a\n    paths: [/y]\n",
			want: `t.yaml:4: sources[1].name: source name "a" is already used by sources[0]`,
		},
		{
			name: "unknown source type",
			yaml: "sources:\n  - type: carrier-pigeon\n    paths: [/x]\n",
			want: `t.yaml:2: sources[0].type: unknown source type "carrier-pigeon" (this mailban reads: file)`,
		},
		{
			name: "two problems at once",
			yaml: "rules:\n  ban:\n    factor: 0.5\n    max: 1m\n",
			want: "t.yaml:3: rules.ban.factor: 0.5: bans may grow or stay the same, so the factor is 1 or more\n" +
				"t.yaml:4: rules.ban.max: 1m0s is shorter than rules.ban.for (1h0m0s)",
		},
		{
			name: "duplicate key",
			yaml: "log:\n  level: info\n  level: debug\n",
			want: `t.yaml:3: log.level: mapping key "level" already defined at line 2`,
		},
		{
			name: "syntax error",
			yaml: "sources:\n  - paths: [/x\n",
			want: `t.yaml:1: YAML syntax: did not find expected ',' or ']'`,
		},
		{
			name: "bad metrics address",
			yaml: "metrics:\n  listen: localhost\n",
			want: `t.yaml:2: metrics.listen: "localhost" is not host:port (e.g. 127.0.0.1:9847): address localhost: missing port in address`,
		},
		{
			name: "user format with a bad pattern",
			yaml: "formats:\n  - name: mine\n    programs: [myapp]\n    patterns:\n      - name: p\n        kind: auth_failure\n        contains: [failed]\n        regex: 'failed from (?P<addr>\\S+)'\n",
			want: `t.yaml:8: formats[0].patterns[0].regex: missing capture group ip`,
		},
		{
			// rules.ban.max (1m) is shorter than the default rules.ban.for,
			// but the user's own for did not decode: comparing with a value
			// they did not mean would only mislead.
			name: "every problem at once, each reported once",
			yaml: "rules:\n  ip:\n    treshold: 10/1h\n  ban:\n    for: soon\n    max: 1m\nsources:\n  - paths: [/x]\n    formats: [postfix, dovecott]\n",
			want: "t.yaml:3: rules.ip.treshold: unknown key (check its spelling and indentation)\n" +
				"t.yaml:5: rules.ban.for: \"soon\" is not a duration (use a number and a unit: s, m, h, d, w; e.g. 90s, 10m, 1d)\n" +
				"t.yaml:9: sources[0].formats[1]: no format named \"dovecott\"",
		},
		{
			name: "block of everything",
			yaml: "blocked-networks: [0.0.0.0/0]\n",
			want: `t.yaml:1: blocked-networks[0]: 0.0.0.0/0 blocks every address`,
		},
		{
			name: "block overlapping the allowlist",
			yaml: "allowlist:\n  networks: [192.0.2.0/26]\nblocked-networks:\n  - 198.51.100.0/24\n  - 192.0.2.0/24\n",
			want: `t.yaml:5: blocked-networks[1]: 192.0.2.0/24 overlaps the allowlisted 192.0.2.0/26: allowlisted addresses are never refused, so this block would be half a block`,
		},
		{
			name: "control group unknown",
			yaml: "control:\n  group: no-such-group-mailban\n",
			want: `t.yaml:2: control.group: no group "no-such-group-mailban" on this host (group: unknown group no-such-group-mailban)`,
		},
		{
			name: "control group without socket",
			yaml: "control:\n  socket: \"\"\n  group: \"0\"\n",
			want: `t.yaml:3: control.group: names a group for a socket that is turned off (control.socket is empty)`,
		},
		{
			name: "bad time zone",
			yaml: "sources:\n  - paths: [/x]\n    timezone: Mars/Olympus\n",
			want: `t.yaml:3: sources[0].timezone: unknown time zone "Mars/Olympus" (use Local, UTC or a name like Europe/Berlin)`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "t.yaml")
			if err == nil {
				t.Fatal("Parse accepted a bad configuration")
			}
			got := err.Error()
			// a missing format's message goes on to list the known formats
			got = regexp.MustCompile(` \(known: [^)]*\)`).ReplaceAllString(got, "")
			if got != tc.want {
				t.Errorf("error\n  %s\nwant\n  %s", got, tc.want)
			}
		})
	}
}

func thresholdErr(t *testing.T, s string) string {
	t.Helper()
	_, err := rules.ParseThreshold(s)
	if err == nil {
		t.Fatalf("ParseThreshold(%q) succeeded", s)
	}
	return err.Error()
}

func TestFail2banShorthandAndDetailedForm(t *testing.T) {
	cases := []struct {
		name        string
		yaml        string
		ip, login   string
		banFor      time.Duration
		allowLength int
	}{
		{name: "defaults", yaml: "", ip: "10/1h", login: "30/1h", banFor: time.Hour},
		{name: "shorthand sets both", yaml: `fail2ban: "100/1d"`, ip: "100/1d", login: "100/1d", banFor: time.Hour},
		{name: "detailed wins over shorthand", yaml: "fail2ban: 100/1d\nrules:\n  login:\n    threshold: 20/1h\n", ip: "100/1d", login: "20/1h", banFor: time.Hour},
		{name: "detailed only", yaml: "rules:\n  ip:\n    threshold: 5/10m\n  ban:\n    for: 1d\n", ip: "5/10m", login: "30/1h", banFor: 24 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.yaml), "t.yaml")
			if err != nil {
				t.Fatal(err)
			}
			rc, err := cfg.RulesConfig(noHost)
			if err != nil {
				t.Fatal(err)
			}
			if rc.IP.String() != tc.ip || rc.Login.String() != tc.login || rc.BanFor != tc.banFor {
				t.Errorf("ip %s login %s ban %s; want %s %s %s", rc.IP, rc.Login, rc.BanFor, tc.ip, tc.login, tc.banFor)
			}
		})
	}
}

func TestAllowlistDefaultsAddLoopbackAndHost(t *testing.T) {
	host := netip.MustParsePrefix("192.0.2.10/32")
	hostAddrs := func() ([]netip.Prefix, error) { return []netip.Prefix{host}, nil }
	cases := []struct {
		yaml string
		want []string
	}{
		{"", []string{"127.0.0.0/8", "::1/128", "192.0.2.10/32"}},
		{"allowlist:\n  networks: [203.0.113.0/24]\n  host-addresses: false\n", []string{"203.0.113.0/24", "127.0.0.0/8", "::1/128"}},
		{"allowlist:\n  loopback: false\n  host-addresses: false\n", nil},
	}
	for _, tc := range cases {
		cfg, err := Parse([]byte(tc.yaml), "t.yaml")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := cfg.RulesConfig(hostAddrs)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range rc.Allow {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%q: allow %v, want %v", tc.yaml, got, tc.want)
		}
	}
}

func TestParseNetwork(t *testing.T) {
	good := map[string]string{
		"203.0.113.7":          "203.0.113.7/32",
		" 2001:db8::1 ":        "2001:db8::1/128",
		"198.51.100.0/24":      "198.51.100.0/24",
		"2001:db8::/32":        "2001:db8::/32",
		"::ffff:192.0.2.1":     "192.0.2.1/32",
		"::ffff:192.0.2.0/120": "192.0.2.0/24",
	}
	for in, want := range good {
		p, err := ParseNetwork(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseNetwork(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "mail.example.com", "203.0.113.0/24/8", "fe80::1%eth0", "203.0.113.1/24", "::ffff:0:0/64"} {
		if p, err := ParseNetwork(in); err == nil {
			t.Errorf("ParseNetwork(%q) = %v, want an error", in, p)
		}
	}
}

// Every example configuration shipped must load and pass the checks.
func TestExamplesLoad(t *testing.T) {
	paths, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no examples found (%v)", err)
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// The full example documents every key: decoding it must set every field
// a user can set, so a key added to Config without an example shows here.
func TestFullExampleMentionsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../examples/mailban.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, key := range yamlKeys(Config{}) {
		if !strings.Contains(text, key+":") {
			t.Errorf("examples/mailban.yaml does not mention %q", key)
		}
	}
}

// The control socket is on by default where systemd's RuntimeDirectory puts
// it; a relative path is relative to the configuration file, "" turns it off.
func TestControlSocket(t *testing.T) {
	for yaml, want := range map[string]string{
		"":                                 "/run/mailban/control.sock",
		"control: {socket: ctl.sock}\n":    "/etc/mailban/ctl.sock",
		"control: {socket: \"\"}\n":        "",
		"control: {socket: /tmp/c.sock}\n": "/tmp/c.sock",
	} {
		cfg, err := Parse([]byte(yaml), "/etc/mailban/mailban.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Control.Socket != want {
			t.Errorf("%q: socket %q, want %q", yaml, cfg.Control.Socket, want)
		}
	}
}
