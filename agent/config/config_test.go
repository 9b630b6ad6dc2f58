package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
			want: `t.yaml:3: sorces: unknown key (did you mean sources?)`,
		},
		{
			name: "unknown key like none",
			yaml: "rules:\n  ip:\n    frobnicate: 3\n",
			want: `t.yaml:3: rules.ip.frobnicate: unknown key (check its spelling and indentation)`,
		},
		{
			name: "unknown nested key",
			yaml: "rules:\n  ip:\n    treshold: 10/1h\n",
			want: `t.yaml:3: rules.ip.treshold: unknown key (did you mean threshold?)`,
		},
		{
			name: "unknown key in a list item",
			yaml: "sources:\n  - name: a\n    paths: [/x]\n  - name: b\n    path: /y\n",
			want: `t.yaml:5: sources[1].path: unknown key (did you mean paths?)`,
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
			name: "unknown format, far from any",
			yaml: "sources:\n  - paths: [/x]\n    formats: [smtpd]\n",
			want: `t.yaml:3: sources[0].formats[0]: no format named "smtpd"`,
		},
		{
			name: "unknown format",
			yaml: "sources:\n  - paths: [/x]\n    formats: [postfix, dovecott]\n",
			want: `t.yaml:3: sources[0].formats[1]: no format named "dovecott" (did you mean "dovecot"?)`,
		},
		{
			name: "duplicate source names",
			yaml: "sources:\n  - name: a\n    paths: [/x]\n  - name: a\n    paths: [/y]\n",
			want: `t.yaml:4: sources[1].name: source name "a" is already used by sources[0]`,
		},
		{
			name: "unknown source type",
			yaml: "sources:\n  - type: carrier-pigeon\n    paths: [/x]\n",
			want: `t.yaml:2: sources[0].type: unknown source type "carrier-pigeon" (this mailban reads: file, journald, command, stdin, webhook)`,
		},
		{
			name: "a key of another source type",
			yaml: "sources:\n  - type: journald\n    paths: [/x]\n",
			want: `t.yaml:3: sources[0].paths: does not apply to a journald source (it is for file sources; a journald source takes name, type, formats, matches, start-at, journalctl, journal-directory, restart-delay)`,
		},
		{
			name: "a key two other types take",
			yaml: "sources:\n  - type: webhook\n    formats: [postfix]\n    restart-delay: 1s\n",
			want: "t.yaml:3: sources[0].formats: does not apply to a webhook source (it is for file and journald and command and stdin sources; a webhook source takes name, type, listen, url-path, signature-key, signature-key-file, max-body-bytes)\n" +
				"t.yaml:4: sources[0].restart-delay: does not apply to a webhook source (it is for journald and command sources; a webhook source takes name, type, listen, url-path, signature-key, signature-key-file, max-body-bytes)",
		},
		{
			name: "bad journal match",
			yaml: "sources:\n  - type: journald\n    matches:\n      - _SYSTEMD_UNIT=postfix@-.service\n      - syslog_identifier=dovecot\n",
			want: `t.yaml:5: sources[0].matches[1]: "syslog_identifier=dovecot" is not a journal match (FIELD=value, the field in capitals, e.g. _SYSTEMD_UNIT=postfix@-.service)`,
		},
		{
			name: "command without a program",
			yaml: "sources:\n  - type: command\n    stderr: lines\n",
			want: `t.yaml:2: sources[0].command: a command source needs a program and its arguments, e.g. [docker, logs, --follow, mailserver]`,
		},
		{
			name: "bad stderr and follow words",
			yaml: "sources:\n  - type: command\n    command: [x]\n    stderr: drop\n  - paths: [/x]\n    follow: latest\n",
			want: "t.yaml:4: sources[0].stderr: \"drop\" is not one of log, lines\n" +
				"t.yaml:6: sources[1].follow: \"latest\" is not one of each, newest",
		},
		{
			name: "standard input twice",
			yaml: "sources:\n  - type: stdin\n  - type: stdin\n    name: again\n",
			want: `t.yaml:3: sources[1].type: standard input is read by sources[0] already`,
		},
		{
			name: "webhook open to the network without a key",
			yaml: "sources:\n  - type: webhook\n    listen: 0.0.0.0:9848\n",
			want: `t.yaml:3: sources[0].listen: 0.0.0.0:9848 is reachable from other hosts: anyone who reaches it could get addresses banned; set signature-key (Stalwart's webhook signature-key) or listen on loopback`,
		},
		{
			name: "webhook key twice",
			yaml: "sources:\n  - type: webhook\n    signature-key: abc\n    signature-key-file: /nonexistent/key\n",
			want: `t.yaml:4: sources[0].signature-key-file: give the key or a file holding it, not both`,
		},
		{
			name: "webhook key file missing",
			yaml: "sources:\n  - type: webhook\n    signature-key-file: /nonexistent/key\n",
			want: `t.yaml:3: sources[0].signature-key-file: read the key: open /nonexistent/key: no such file or directory`,
		},
		{
			name: "two webhooks on one address",
			yaml: "sources:\n  - type: webhook\n  - type: webhook\n    listen: 127.0.0.1:9848\n",
			want: `t.yaml:4: sources[1].listen: 127.0.0.1:9848 is where sources[0] listens already`,
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
			want: "t.yaml:3: rules.ip.treshold: unknown key (did you mean threshold?)\n" +
				"t.yaml:5: rules.ban.for: \"soon\" is not a duration (use a number and a unit: s, m, h, d, w; e.g. 90s, 10m, 1d)\n" +
				"t.yaml:9: sources[0].formats[1]: no format named \"dovecott\" (did you mean \"dovecot\"?)",
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
			name: "nftables: bad table name, port and namespace",
			yaml: "enforcers:\n  nftables:\n    table: \"mail ban\"\n    mail-ports: [25, 70000]\n    netns: run/netns/mail\n",
			want: "t.yaml:3: enforcers.nftables.table: \"mail ban\" is not a table name (a letter, then letters, digits or _; at most 64)\n" +
				"t.yaml:4: enforcers.nftables.mail-ports[1]: 70000 is not a port (1 to 65535)\n" +
				"t.yaml:5: enforcers.nftables.netns: \"run/netns/mail\" is not an absolute path (e.g. /run/netns/mail or /proc/PID/ns/net)",
		},
		{
			name: "nftables: mail ports only, with none",
			yaml: "enforcers:\n  nftables:\n    mail-ports-only: true\n    mail-ports: []\n",
			want: `t.yaml:4: enforcers.nftables.mail-ports: mail-ports-only with no ports would refuse nothing; list the ports or leave the key out for the defaults`,
		},
		{
			name: "nftables: unknown key",
			yaml: "enforcers:\n  nftables:\n    prio: 5\n",
			want: `t.yaml:3: enforcers.nftables.prio: unknown key (did you mean priority?)`,
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

func TestNftablesDefaults(t *testing.T) {
	cases := []struct {
		yaml     string
		want     string
		required bool
	}{
		{"enforcers:\n  nftables: {}\n", "table=mailban priority=-10 forward=false ports-only=false ports=[25 465 587 110 995 143 993 4190 443] netns=", true},
		{"enforcers:\n  nftables:\n    table: mb2\n    priority: 0\n    forward: true\n    mail-ports-only: true\n    mail-ports: [25, 587]\n    netns: /run/netns/mail\n    required: false\n",
			"table=mb2 priority=0 forward=true ports-only=true ports=[25 587] netns=/run/netns/mail", false},
	}
	for _, tc := range cases {
		cfg, err := Parse([]byte(tc.yaml), "t.yaml")
		if err != nil {
			t.Fatal(err)
		}
		n := cfg.Enforcers.Nftables
		e := n.Enforcer(nil)
		got := fmt.Sprintf("table=%s priority=%d forward=%v ports-only=%v ports=%v netns=%s", e.Table, e.Priority, e.Forward, e.MailPortsOnly, e.MailPorts, e.NetNS)
		if got != tc.want || n.IsRequired() != tc.required {
			t.Errorf("%q:\n got %s required=%v\nwant %s required=%v", tc.yaml, got, n.IsRequired(), tc.want, tc.required)
		}
	}
}

// Every source key is listed for the types it applies to, and every listed
// key is a key of SourceConfig.
func TestSourceKeysCoverSourceConfig(t *testing.T) {
	fields := yamlKeys(SourceConfig{})
	listed := map[string]bool{}
	for typ, keys := range sourceKeys {
		for _, k := range keys {
			listed[k] = true
			if !slices.Contains(fields, k) {
				t.Errorf("sourceKeys[%s] lists %q, which SourceConfig does not have", typ, k)
			}
		}
	}
	for _, f := range fields {
		if !listed[f] {
			t.Errorf("SourceConfig key %q applies to no source type in sourceKeys", f)
		}
	}
	if len(sourceKeys) != len(sourceTypes) {
		t.Errorf("sourceKeys has %d types, sourceTypes %d", len(sourceKeys), len(sourceTypes))
	}
}

// Each source type's settings reach its source's configuration.
func TestSourceTypes(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "stalwart.key")
	if err := os.WriteFile(keyFile, []byte("k3y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := `
sources:
  - name: dated
    paths: [logs/stalwart.log.*]
    follow: newest
  - name: journal
    type: journald
    matches: ["_SYSTEMD_UNIT=postfix@-.service", "SYSLOG_IDENTIFIER=dovecot"]
    journal-directory: journal
    start-at: beginning
    restart-delay: 2s
  - name: docker
    type: command
    command: [docker, logs, --follow, mx]
    stderr: lines
  - name: script
    type: command
    command: [bin/tail-logs, -x]
  - type: stdin
  - name: hooks
    type: webhook
    listen: "[::]:9848"
    url-path: /stalwart
    signature-key-file: stalwart.key
    max-body-bytes: 1024
`
	path := filepath.Join(dir, "mailban.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sources
	if f := s[0].FileSource(); !f.FollowNewest || f.Paths[0] != filepath.Join(dir, "logs/stalwart.log.*") {
		t.Errorf("file source %+v", f)
	}
	if j := s[1].JournalSource(); j.Directory != filepath.Join(dir, "journal") || j.StartAtEnd || j.RestartDelay != 2*time.Second ||
		len(j.Matches) != 2 || j.Journalctl != "" {
		t.Errorf("journald source %+v", j)
	}
	if c := s[2].CommandSource(); strings.Join(c.Argv, " ") != "docker logs --follow mx" || !c.StderrLines {
		t.Errorf("command source %+v", c)
	}
	if c := s[3].CommandSource(); c.Argv[0] != filepath.Join(dir, "bin/tail-logs") || c.StderrLines {
		t.Errorf("command source %+v", c)
	}
	if st := s[4].StdinSource(); st.Name != "stdin" {
		t.Errorf("stdin source %+v", st)
	}
	if w := s[5].WebhookSource(); string(w.Key) != "k3y" || w.Listen != "[::]:9848" || w.Path != "/stalwart" || w.MaxBodyBytes != 1024 {
		t.Errorf("webhook source %+v", w)
	}
}

func TestFleetConfig(t *testing.T) {
	bad := []struct{ yaml, want string }{
		{"fleet:\n  redis: {}\n", `t.yaml:2: fleet.redis.address: must name the Redis server (host:port)`},
		{"fleet:\n  redis:\n    address: redis.example\n", `t.yaml:3: fleet.redis.address: "redis.example" is not host:port (e.g. 127.0.0.1:6379): address redis.example: missing port in address`},
		{"fleet:\n  redis:\n    address: 127.0.0.1:6379\n    key-prefix: \"{x}\"\n", `t.yaml:4: fleet.redis.key-prefix: "{x}": braces are not allowed (mailban puts the prefix in a hash tag itself)`},
		{"fleet:\n  redis:\n    address: 127.0.0.1:6379\n    password: a\n    password-file: /p\n", `t.yaml:5: fleet.redis.password-file: give password or password-file, not both`},
		{"fleet:\n  redis:\n    address: 127.0.0.1:6379\n    tls:\n      cert-file: /c\n", `t.yaml:5: fleet.redis.tls.cert-file: cert-file and key-file go together`},
		{"fleet:\n  redis:\n    adress: 127.0.0.1:6379\n", `t.yaml:3: fleet.redis.adress: unknown key (did you mean address?)`},
		{"fleet:\n  redis:\n    address: 127.0.0.1:6379\n    timeout: soon\n", `t.yaml:4: fleet.redis.timeout: "soon" is not a duration (use a number and a unit: s, m, h, d, w; e.g. 90s, 10m, 1d)`},
	}
	for _, tc := range bad {
		_, err := Parse([]byte(tc.yaml), "t.yaml")
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.yaml, err, tc.want)
		}
	}

	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte("fleet:\n  host: mx2\n  redis:\n    address: 127.0.0.1:6379\n    username: mb\n    password-file: pw\n    tls: {server-name: redis.test}\n"), filepath.Join(dir, "m.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := cfg.Fleet.Options()
	if err != nil {
		t.Fatal(err)
	}
	if o.Host != "mx2" || o.Username != "mb" || o.Password != "s3cret" || o.KeyPrefix != "mailban" || o.Timeout != time.Second ||
		o.TLS == nil || o.TLS.ServerName != "redis.test" {
		t.Errorf("options %+v", o)
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
