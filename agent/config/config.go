package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailban/mailban/agent/source"
	"github.com/mailban/mailban/enforcers/hook"
	"github.com/mailban/mailban/enforcers/nftables"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// DefaultPath is where `mailban run` looks without --config.
const DefaultPath = "/etc/mailban/mailban.yaml"

// Config is the whole configuration file. Field comments are the reference;
// examples/mailban.yaml shows every key with its default.
type Config struct {
	Log   LogConfig   `yaml:"log"`
	State StateConfig `yaml:"state"`
	// Fail2ban is the short form: one threshold for addresses and for logins,
	// as Stalwart writes it ("100/1d"). rules.ip.threshold and
	// rules.login.threshold, when given, win over it.
	Fail2ban        *Threshold           `yaml:"fail2ban"`
	Rules           RulesConfig          `yaml:"rules"`
	Allowlist       AllowlistConfig      `yaml:"allowlist"`
	BlockedNetworks []Network            `yaml:"blocked-networks"`
	Sources         []SourceConfig       `yaml:"sources"`
	Formats         []parsers.FormatSpec `yaml:"formats"`
	Enforcers       EnforcersConfig      `yaml:"enforcers"`
	Metrics         MetricsConfig        `yaml:"metrics"`
	// Fleet shares counting and decisions with other mail hosts through
	// Redis; absent (the default), this host counts and decides alone.
	Fleet   *FleetConfig  `yaml:"fleet"`
	Control ControlConfig `yaml:"control"`

	// File is where the configuration was read from ("" for built-in defaults).
	File string `yaml:"-"`

	given [][]givenKey // per source, the keys the file gives, for sourceKeys
}

// LogConfig is about mailban's own log.
type LogConfig struct {
	Level  Level     `yaml:"level"`
	Format LogFormat `yaml:"format"`
}

// StateConfig is about the embedded state file.
type StateConfig struct {
	Path string `yaml:"path"`
	// CheckpointInterval is how often counters and read positions are saved
	// together. A crash loses nothing: lines after the last checkpoint are
	// read and counted again, against the counters saved with it.
	CheckpointInterval Duration `yaml:"checkpoint-interval"`
}

// RulesConfig holds thresholds and ban lengths.
type RulesConfig struct {
	IP            IPRules    `yaml:"ip"`
	Login         LoginRules `yaml:"login"`
	Ban           BanRules   `yaml:"ban"`
	EvidenceLines int        `yaml:"evidence-lines"`
}

// IPRules count failures per address.
type IPRules struct {
	Threshold  *Threshold `yaml:"threshold"`
	IPv6Prefix int        `yaml:"ipv6-prefix"`
}

// LoginRules count failures per login across all addresses.
type LoginRules struct {
	Threshold     *Threshold `yaml:"threshold"`
	LockFor       Duration   `yaml:"lock-for"`
	SuccessMemory Duration   `yaml:"success-memory"`
}

// BanRules say how long bans last and how they grow.
type BanRules struct {
	For            Duration `yaml:"for"`
	Factor         float64  `yaml:"factor"`
	Max            Duration `yaml:"max"`
	PermanentAfter int      `yaml:"permanent-after"`
	OffenderMemory Duration `yaml:"offender-memory"`
}

// AllowlistConfig lists who is never counted or banned.
type AllowlistConfig struct {
	Networks      []Network `yaml:"networks"`
	Loopback      bool      `yaml:"loopback"`
	HostAddresses bool      `yaml:"host-addresses"`
}

// SourceConfig is one place to read log lines from. Which keys apply
// depends on Type (sourceKeys); a key given for a type it does not apply
// to is an error.
type SourceConfig struct {
	Name         string   `yaml:"name"`
	Type         string   `yaml:"type"`
	Paths        []string `yaml:"paths"`
	Formats      []string `yaml:"formats"`
	StartAt      StartAt  `yaml:"start-at"`
	Poll         bool     `yaml:"poll"`
	PollInterval Duration `yaml:"poll-interval"`
	Timezone     Location `yaml:"timezone"`
	// Follow is how a file source reads a glob pattern's matches: each
	// (every match followed at once) or newest (one after another in name
	// order, for dated files such as stalwart.log.2026-01-10).
	Follow Follow `yaml:"follow"`

	// Matches select journal entries (journald): one alternative per item,
	// FIELD=value terms within one separated by spaces.
	Matches          []string `yaml:"matches"`
	Journalctl       string   `yaml:"journalctl"`
	JournalDirectory string   `yaml:"journal-directory"`

	// Command is a command's program and arguments (command), run without
	// a shell.
	Command []string `yaml:"command"`
	// Stderr is what becomes of a command's standard error: log or lines.
	Stderr Stderr `yaml:"stderr"`
	// RestartDelay is the first wait before a command or journalctl that
	// ended is started again; it doubles while runs fail, up to a minute.
	RestartDelay Duration `yaml:"restart-delay"`

	// Listen, URLPath and the signature key configure a webhook receiver.
	Listen           string `yaml:"listen"`
	URLPath          string `yaml:"url-path"`
	SignatureKey     string `yaml:"signature-key"`
	SignatureKeyFile string `yaml:"signature-key-file"`
	MaxBodyBytes     int64  `yaml:"max-body-bytes"`

	key []byte // the signature key, read from the file if one is named
}

// EnforcersConfig enables enforcers by giving their blocks.
type EnforcersConfig struct {
	// Log writes each decision to mailban's log and changes nothing else:
	// a dry run, and the default when no enforcer is configured.
	Log *LogEnforcerConfig `yaml:"log"`
	// Nftables drops the packets of banned and blocked addresses in the
	// kernel, from a table of mailban's own.
	Nftables *NftablesEnforcerConfig `yaml:"nftables"`
	// Hook is the socket mail servers ask before they let a client or a
	// login go on (enforcers/hook): the only enforcer that sees logins.
	Hook *HookConfig `yaml:"hook"`
}

// LogEnforcerConfig configures the log enforcer.
type LogEnforcerConfig struct {
	// Evidence also logs the evidence lines of each decision.
	Evidence bool `yaml:"evidence"`
}

// NftablesEnforcerConfig configures the nftables enforcer. Pointers are
// for keys whose default is not their zero value.
type NftablesEnforcerConfig struct {
	// Table is the inet table mailban creates and owns; it never touches
	// any other table.
	Table string `yaml:"table"`
	// Priority of the input (and forward) chain; default -10, before the
	// usual filter chains at 0.
	Priority *int32 `yaml:"priority"`
	// Forward also drops in the forward hook (mail servers in containers).
	Forward bool `yaml:"forward"`
	// MailPortsOnly limits the drop to TCP to MailPorts.
	MailPortsOnly bool  `yaml:"mail-ports-only"`
	MailPorts     []int `yaml:"mail-ports"`
	// NetNS is a network namespace to enforce in (a path); "" is mailban's.
	NetNS string `yaml:"netns"`
	// Required makes mailban refuse to start (or reload) when nftables
	// cannot be used; default true. With false it runs on without it.
	Required *bool `yaml:"required"`
}

// Enforcer gives the nftables enforcer its settings, defaults filled in;
// clock is the rules' clock (nil: the wall clock).
func (n *NftablesEnforcerConfig) Enforcer(clock rules.Clock) nftables.Config {
	cfg := nftables.DefaultConfig()
	if n.Table != "" {
		cfg.Table = n.Table
	}
	if n.Priority != nil {
		cfg.Priority = *n.Priority
	}
	cfg.Forward = n.Forward
	cfg.MailPortsOnly = n.MailPortsOnly
	if len(n.MailPorts) > 0 {
		cfg.MailPorts = make([]uint16, len(n.MailPorts))
		for i, p := range n.MailPorts {
			cfg.MailPorts[i] = uint16(p)
		}
	}
	cfg.NetNS = n.NetNS
	cfg.Clock = clock
	return cfg
}

// IsRequired says whether mailban must stop when nftables is unusable.
func (n *NftablesEnforcerConfig) IsRequired() bool { return n.Required == nil || *n.Required }

// HookConfig turns on the hook's protocols. The native socket is on
// whenever the block is there (native.listen: [] turns it off); each other
// protocol is on when its block is there.
type HookConfig struct {
	Native  HookNativeConfig   `yaml:"native"`
	Postfix *HookPostfixConfig `yaml:"postfix"`
	Dovecot *HookDovecotConfig `yaml:"dovecot"`
	Nginx   *HookNginxConfig   `yaml:"nginx"`
	Milter  *HookMilterConfig  `yaml:"milter"`
	Limits  HookLimitsConfig   `yaml:"limits"`
}

// HookNativeConfig is mailban's own line protocol: CHECK, REPORT, WATCH.
type HookNativeConfig struct {
	Listen        []string `yaml:"listen"`
	Group         string   `yaml:"group"`
	ReportOverTCP bool     `yaml:"report-over-tcp"`
}

// HookPostfixConfig is Postfix's policy delegation.
type HookPostfixConfig struct {
	Listen []string `yaml:"listen"`
	Group  string   `yaml:"group"`
}

// HookDovecotConfig is Dovecot's auth policy server.
type HookDovecotConfig struct {
	Listen       []string `yaml:"listen"`
	Group        string   `yaml:"group"`
	APIKey       string   `yaml:"api-key"`
	APIHeader    string   `yaml:"api-header"`
	Report       bool     `yaml:"report"`
	Tarpit       Duration `yaml:"tarpit"`
	RepeatWindow Duration `yaml:"repeat-window"`
}

// HookNginxConfig is nginx's mail auth_http service, chained to the real one.
type HookNginxConfig struct {
	Listen          []string `yaml:"listen"`
	Group           string   `yaml:"group"`
	APIKey          string   `yaml:"api-key"`
	APIHeader       string   `yaml:"api-header"`
	Upstream        string   `yaml:"upstream"`
	UpstreamTimeout Duration `yaml:"upstream-timeout"`
	Report          bool     `yaml:"report"`
	AuthWait        Duration `yaml:"auth-wait"`
}

// HookMilterConfig is the milter protocol (Postfix smtpd_milters, Sendmail,
// Stalwart).
type HookMilterConfig struct {
	Listen []string `yaml:"listen"`
	Group  string   `yaml:"group"`
}

// HookLimitsConfig bounds what one client of the hook can cost.
type HookLimitsConfig struct {
	MaxConnections   int      `yaml:"max-connections"`
	MaxLine          int      `yaml:"max-line"`
	MaxRequest       int      `yaml:"max-request"`
	IdleTimeout      Duration `yaml:"idle-timeout"`
	RequestTimeout   Duration `yaml:"request-timeout"`
	MaxConnectionAge Duration `yaml:"max-connection-age"`
	WatchQueue       int      `yaml:"watch-queue"`
}

// The hook blocks take their defaults from enforcers/hook when they are
// present; these UnmarshalYAML methods, of the kind yaml.v3 calls with the
// decoder itself, keep KnownFields in force inside them.

// UnmarshalYAML fills the defaults, then what the file says.
func (h *HookConfig) UnmarshalYAML(unmarshal func(any) error) error {
	d := hook.DefaultConfig()
	*h = HookConfig{
		Native: HookNativeConfig{Listen: d.Native.Listen, Group: d.Native.Group, ReportOverTCP: d.Native.ReportOverTCP},
		Limits: HookLimitsConfig{
			MaxConnections: d.Limits.MaxConnections, MaxLine: d.Limits.MaxLine, MaxRequest: d.Limits.MaxRequest,
			IdleTimeout: Duration(d.Limits.IdleTimeout), RequestTimeout: Duration(d.Limits.RequestTimeout),
			MaxConnectionAge: Duration(d.Limits.MaxConnectionAge), WatchQueue: d.Limits.WatchQueue,
		},
	}
	type plain HookConfig
	return unmarshal((*plain)(h))
}

// UnmarshalYAML fills the defaults, then what the file says.
func (p *HookPostfixConfig) UnmarshalYAML(unmarshal func(any) error) error {
	d := hook.DefaultConfig().Postfix
	*p = HookPostfixConfig{Listen: []string{hook.DefaultPostfixSocket}, Group: d.Group}
	type plain HookPostfixConfig
	return unmarshal((*plain)(p))
}

// UnmarshalYAML fills the defaults, then what the file says.
func (c *HookDovecotConfig) UnmarshalYAML(unmarshal func(any) error) error {
	d := hook.DefaultConfig().Dovecot
	*c = HookDovecotConfig{Listen: []string{hook.DefaultDovecotListen}, APIHeader: d.APIHeader, Report: d.Report,
		Tarpit: Duration(d.Tarpit), RepeatWindow: Duration(d.RepeatWindow)}
	type plain HookDovecotConfig
	return unmarshal((*plain)(c))
}

// UnmarshalYAML fills the defaults, then what the file says.
func (c *HookNginxConfig) UnmarshalYAML(unmarshal func(any) error) error {
	d := hook.DefaultConfig().Nginx
	*c = HookNginxConfig{Listen: []string{hook.DefaultNginxListen}, APIHeader: d.APIHeader, Report: d.Report,
		UpstreamTimeout: Duration(d.UpstreamTimeout), AuthWait: Duration(d.AuthWait)}
	type plain HookNginxConfig
	return unmarshal((*plain)(c))
}

// UnmarshalYAML fills the defaults, then what the file says.
func (m *HookMilterConfig) UnmarshalYAML(unmarshal func(any) error) error {
	d := hook.DefaultConfig().Milter
	*m = HookMilterConfig{Listen: []string{hook.DefaultMilterSocket}, Group: d.Group}
	type plain HookMilterConfig
	return unmarshal((*plain)(m))
}

// MetricsConfig is about the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is host:port for /metrics; "" turns it off. Loopback by default:
	// metrics tell who is attacking and how hard.
	Listen string `yaml:"listen"`
}

// ControlConfig is about the control socket the CLI speaks to.
type ControlConfig struct {
	// Socket is the unix socket's path; "" turns it off. Only its owner
	// (root) may use it, unless Group is set.
	Socket string `yaml:"socket"`
	// Group, a group name or number, may use the socket too (mode 0660).
	Group string `yaml:"group"`
}

// DefaultControlSocket is where the daemon listens and the CLI connects
// unless configured otherwise.
const DefaultControlSocket = "/run/mailban/control.sock"

// Default is the configuration used for keys a file leaves out.
func Default() *Config {
	return &Config{
		Log:   LogConfig{Level: Level(slog.LevelInfo), Format: "text"},
		State: StateConfig{Path: "/var/lib/mailban/state.db", CheckpointInterval: Duration(time.Second)},
		Rules: RulesConfig{
			IP:    IPRules{IPv6Prefix: 64},
			Login: LoginRules{LockFor: Duration(time.Hour), SuccessMemory: Duration(30 * 24 * time.Hour)},
			Ban: BanRules{
				For:            Duration(time.Hour),
				Factor:         2,
				Max:            Duration(7 * 24 * time.Hour),
				OffenderMemory: Duration(30 * 24 * time.Hour),
			},
			EvidenceLines: 10,
		},
		Allowlist: AllowlistConfig{Loopback: true, HostAddresses: true},
		Metrics:   MetricsConfig{Listen: "127.0.0.1:9847"},
		Control:   ControlConfig{Socket: DefaultControlSocket},
	}
}

// Default thresholds when neither fail2ban nor rules.*.threshold is given.
var (
	defaultIPThreshold    = rules.Threshold{Count: 10, Period: time.Hour}
	defaultLoginThreshold = rules.Threshold{Count: 30, Period: time.Hour}
)

// Load reads and checks a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read config: %w (pass --config FILE, or start from examples/mailban.yaml or examples/quickstart.yaml)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse checks a configuration held in memory; name is used in errors.
func Parse(data []byte, name string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, locate(name, nil, err)
	}
	cfg := Default()
	cfg.File = name
	var errs Errors
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, locate(name, &doc, err)
			}
			// yaml.v3 decoded everything else: check it too, so that one
			// run reports every problem in the file.
			errs = locate(name, &doc, err)
		}
		var extra yaml.Node
		if dec.Decode(&extra) == nil {
			return nil, Errors{{File: name, Line: extra.Line, Msg: "more than one YAML document; mailban reads one"}}
		}
	}
	cfg.resolvePaths(filepath.Dir(name))
	cfg.given = givenSourceKeys(&doc)
	// A value that did not decode is reported once, as such; and a mapping
	// with a misspelt key is likely to lack the key it meant, so the checks'
	// complaints about its siblings would only repeat the same mistake.
	decoded := slices.Clone(errs)
	suppressed := func(key string) bool {
		for _, d := range decoded {
			parent := d.Key[:max(0, strings.LastIndexByte(d.Key, '.'))]
			if key == d.Key || (parent != "" && strings.HasPrefix(key, parent+".")) {
				return true
			}
		}
		return false
	}
	for _, e := range cfg.check() {
		if suppressed(e.Key) {
			continue
		}
		e.File = name
		if e.Line == 0 {
			e.Line = lineOfPath(&doc, e.Key)
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b *Error) int { return a.Line - b.Line })
		return nil, errs
	}
	return cfg, nil
}

// resolvePaths makes relative file names relative to the configuration
// file's directory, as Prometheus does, so that what a file means does not
// depend on the directory mailban was started from.
func (c *Config) resolvePaths(dir string) {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		if a, err := filepath.Abs(filepath.Join(dir, p)); err == nil {
			return a
		}
		return p
	}
	c.State.Path = abs(c.State.Path)
	if f := c.Fleet; f != nil {
		f.Redis.PasswordFile = abs(f.Redis.PasswordFile)
		if t := f.Redis.TLS; t != nil {
			t.CAFile, t.CertFile, t.KeyFile = abs(t.CAFile), abs(t.CertFile), abs(t.KeyFile)
		}
	}
	c.Control.Socket = abs(c.Control.Socket)
	for i := range c.Sources {
		s := &c.Sources[i]
		for j, p := range s.Paths {
			s.Paths[j] = abs(p)
		}
		s.JournalDirectory = abs(s.JournalDirectory)
		s.SignatureKeyFile = abs(s.SignatureKeyFile)
		// A program named by a relative path with a slash (bin/tail-logs)
		// is relative to the file too; a bare name is looked up in PATH.
		if len(s.Command) > 0 && strings.Contains(s.Command[0], "/") {
			s.Command[0] = abs(s.Command[0])
		}
	}
}

// check finds what the types alone cannot: missing, conflicting and
// out-of-range settings. Errors carry key paths; Parse adds the lines.
func (c *Config) check() Errors {
	var errs Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.State.Path == "" {
		bad("state.path", "must name the state file")
	}
	if c.State.CheckpointInterval <= 0 {
		bad("state.checkpoint-interval", "must be more than 0")
	}
	if p := c.Rules.IP.IPv6Prefix; p < 1 || p > 128 {
		bad("rules.ip.ipv6-prefix", "%d is not a prefix length (1 to 128; 64 groups each customer's /64)", p)
	}
	if c.Rules.Ban.Factor < 1 {
		bad("rules.ban.factor", "%g: bans may grow or stay the same, so the factor is 1 or more", c.Rules.Ban.Factor)
	}
	if c.Rules.Ban.For <= 0 {
		bad("rules.ban.for", "a ban must last more than 0")
	}
	if c.Rules.Ban.Max != 0 && c.Rules.Ban.Max < c.Rules.Ban.For {
		bad("rules.ban.max", "%s is shorter than rules.ban.for (%s)", time.Duration(c.Rules.Ban.Max), time.Duration(c.Rules.Ban.For))
	}
	if c.Rules.Ban.PermanentAfter < 0 {
		bad("rules.ban.permanent-after", "cannot be negative (0 means never)")
	}
	if c.Rules.Login.LockFor <= 0 {
		bad("rules.login.lock-for", "a lock must last more than 0")
	}
	if c.Rules.EvidenceLines < 0 {
		bad("rules.evidence-lines", "cannot be negative")
	}
	if len(errs) == 0 {
		// The checks above name the keys; this catches what they missed.
		if err := c.rulesConfig().Validate(); err != nil {
			bad("rules", "%v", err)
		}
	}

	allow := prefixes(c.Allowlist.Networks)
	if c.Allowlist.Loopback {
		allow = append(allow, loopbackNetworks...)
	}
	for i, b := range c.BlockedNetworks {
		key := fmt.Sprintf("blocked-networks[%d]", i)
		p := netip.Prefix(b)
		if p.Bits() == 0 {
			bad(key, "%s blocks every address", p)
			continue
		}
		for _, a := range allow {
			if p.Overlaps(a) {
				bad(key, "%s overlaps the allowlisted %s: allowlisted addresses are never refused, so this block would be half a block", p, a)
				break
			}
		}
	}

	presets, err := parsers.Presets()
	if err != nil {
		bad("formats", "embedded presets: %v", err)
	}
	known := map[string]bool{}
	for name := range presets {
		known[name] = true
	}
	own := map[string]int{}
	for i, f := range c.Formats {
		key := fmt.Sprintf("formats[%d]", i)
		if f.Name == "" {
			bad(key+".name", "every format needs a name")
			continue
		}
		if j, dup := own[f.Name]; dup {
			bad(key+".name", "format %q is already defined by formats[%d]", f.Name, j)
		}
		own[f.Name] = i // a format with a preset's name replaces the preset
		known[f.Name] = true
		if _, err := parsers.Compile([]parsers.FormatSpec{f}, parsers.Options{}); err != nil {
			errs = append(errs, formatErrors(key, err)...)
		}
	}

	names := map[string]int{}
	for i := range c.Sources {
		s := &c.Sources[i]
		key := fmt.Sprintf("sources[%d]", i)
		if s.Type == "" {
			s.Type = "file"
		}
		if s.Name == "" {
			s.Name = defaultSourceName(s, i)
		}
		if j, dup := names[s.Name]; dup {
			bad(key+".name", "source name %q is already used by sources[%d]", s.Name, j)
		}
		names[s.Name] = i
		if _, known := sourceKeys[s.Type]; !known {
			bad(key+".type", "unknown source type %q (this mailban reads: %s)", s.Type, strings.Join(sourceTypes, ", "))
		} else {
			if i < len(c.given) {
				errs = append(errs, keysApply(key, s.Type, c.given[i])...)
			}
			errs = append(errs, c.checkSource(key, s, i)...)
		}
		if s.StartAt == "" {
			s.StartAt = "end"
		}
		for j, f := range s.Formats {
			if !known[f] {
				bad(fmt.Sprintf("%s.formats[%d]", key, j), "no format named %q (%s)", f, suggest(f, sortedKeys(known)))
			}
		}
		if s.Timezone.Location == nil {
			s.Timezone.Location = time.Local
		}
	}
	if n := c.Enforcers.Nftables; n != nil {
		if n.Table != "" && !tableName.MatchString(n.Table) {
			bad("enforcers.nftables.table", "%q is not a table name (a letter, then letters, digits or _; at most 64)", n.Table)
		}
		for i, p := range n.MailPorts {
			if p < 1 || p > 65535 {
				bad(fmt.Sprintf("enforcers.nftables.mail-ports[%d]", i), "%d is not a port (1 to 65535)", p)
			}
		}
		if n.MailPortsOnly && n.MailPorts != nil && len(n.MailPorts) == 0 {
			bad("enforcers.nftables.mail-ports", "mail-ports-only with no ports would refuse nothing; list the ports or leave the key out for the defaults")
		}
		if n.NetNS != "" && !filepath.IsAbs(n.NetNS) {
			bad("enforcers.nftables.netns", "%q is not an absolute path (e.g. /run/netns/mail or /proc/PID/ns/net)", n.NetNS)
		}
	}
	if c.Enforcers.Hook != nil {
		hc := c.HookConfig()
		if err := hc.Validate(); err != nil {
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *hook.FieldError
				if errors.As(e, &fe) {
					bad("enforcers.hook."+fe.Field, "%v", fe.Err)
				} else {
					bad("enforcers.hook", "%v", e)
				}
			}
		}
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%q is not host:port (e.g. 127.0.0.1:9847): %v", c.Metrics.Listen, err)
		}
	}
	if c.Fleet != nil {
		errs = append(errs, c.Fleet.check()...)
	}
	if g := c.Control.Group; g != "" {
		if c.Control.Socket == "" {
			bad("control.group", "names a group for a socket that is turned off (control.socket is empty)")
		} else if _, err := strconv.Atoi(g); err != nil {
			if _, err := user.LookupGroup(g); err != nil {
				bad("control.group", "no group %q on this host (%v)", g, err)
			}
		}
	}
	return errs
}

// formatErrors turns the parsers' errors about one format into Errors
// under that format's key; their lines are already lines of this file.
func formatErrors(key string, err error) Errors {
	var out Errors
	var walk func(err error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var se *parsers.SpecError
		if errors.As(err, &se) {
			out = append(out, &Error{Line: se.Line, Key: joinKey(key, se.Path), Msg: se.Err.Error()})
			return
		}
		out = append(out, &Error{Key: key, Msg: err.Error()})
	}
	walk(err)
	return out
}

func defaultSourceName(s *SourceConfig, i int) string {
	switch {
	case s.Type == "file" && len(s.Paths) > 0:
		return s.Paths[0]
	case s.Type == "stdin":
		return "stdin"
	}
	return fmt.Sprintf("%s-%d", s.Type, i)
}

// suggest is the hint for a name that is not one of known (sorted): the
// nearest known name when a typo or two away, else the whole list.
func suggest(name string, known []string) string {
	if best, ok := nearest(name, known); ok {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "known: " + strings.Join(known, ", ")
}

// nearest is the name of known at most two typos (edits) from name, or
// else one that name is the start of.
func nearest(name string, known []string) (string, bool) {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" && len(name) >= 3 {
		for _, k := range known {
			if strings.HasPrefix(k, name) { // cut short: "prio" for priority
				return k, true
			}
		}
	}
	return best, best != ""
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// tableName is what mailban accepts as an nftables table name: one that
// nft takes unquoted.
var tableName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// loopbackNetworks are allowlisted by default: mail servers talk to
// themselves (webmail, content filters) and must never ban themselves.
var loopbackNetworks = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
}

// RulesConfig gives the rules engine its settings: the short fail2ban form
// fills the thresholds the detailed form leaves out, and the allowlist gets
// loopback and the host's own addresses (from hostAddresses) when the
// configuration asks for them, as it does by default.
func (c *Config) RulesConfig(hostAddresses func() ([]netip.Prefix, error)) (rules.Config, error) {
	rc := c.rulesConfig()
	if c.Allowlist.Loopback {
		rc.Allow = append(rc.Allow, loopbackNetworks...)
	}
	if c.Allowlist.HostAddresses {
		own, err := hostAddresses()
		if err != nil {
			return rules.Config{}, err
		}
		rc.Allow = append(rc.Allow, own...)
	}
	return rc, nil
}

func (c *Config) rulesConfig() rules.Config {
	ip, login := defaultIPThreshold, defaultLoginThreshold
	if c.Fail2ban != nil {
		ip, login = rules.Threshold(*c.Fail2ban), rules.Threshold(*c.Fail2ban)
	}
	if c.Rules.IP.Threshold != nil {
		ip = rules.Threshold(*c.Rules.IP.Threshold)
	}
	if c.Rules.Login.Threshold != nil {
		login = rules.Threshold(*c.Rules.Login.Threshold)
	}
	return rules.Config{
		IP:             ip,
		Login:          login,
		IPv6Prefix:     c.Rules.IP.IPv6Prefix,
		BanFor:         time.Duration(c.Rules.Ban.For),
		BanFactor:      c.Rules.Ban.Factor,
		BanMax:         time.Duration(c.Rules.Ban.Max),
		PermanentAfter: c.Rules.Ban.PermanentAfter,
		OffenderMemory: time.Duration(c.Rules.Ban.OffenderMemory),
		LockFor:        time.Duration(c.Rules.Login.LockFor),
		SuccessMemory:  time.Duration(c.Rules.Login.SuccessMemory),
		Allow:          prefixes(c.Allowlist.Networks),
		Blocked:        prefixes(c.BlockedNetworks),
		EvidenceLines:  c.Rules.EvidenceLines,
	}
}

func prefixes(ns []Network) []netip.Prefix {
	out := make([]netip.Prefix, len(ns))
	for i, n := range ns {
		out[i] = netip.Prefix(n)
	}
	return out
}

// FileSource gives the file source its settings.
func (s *SourceConfig) FileSource() source.FileConfig {
	return source.FileConfig{
		Name:         s.Name,
		Paths:        slices.Clone(s.Paths),
		StartAtEnd:   s.StartAt != "beginning",
		FollowNewest: s.Follow == "newest",
		Poll:         s.Poll,
		PollInterval: time.Duration(s.PollInterval),
	}
}

// HookConfig gives the hook its settings; the zero value when the
// configuration has no hook block. A Dovecot repeat window left at 0 is
// the longest period of the rules' thresholds: a stale password counts
// once in any window the rules count in.
func (c *Config) HookConfig() hook.Config {
	h := c.Enforcers.Hook
	if h == nil {
		return hook.Config{}
	}
	out := hook.Config{
		Native: hook.NativeConfig{Listen: slices.Clone(h.Native.Listen), Group: h.Native.Group, ReportOverTCP: h.Native.ReportOverTCP},
		Limits: hook.Limits{
			MaxConnections: h.Limits.MaxConnections, MaxLine: h.Limits.MaxLine, MaxRequest: h.Limits.MaxRequest,
			IdleTimeout: time.Duration(h.Limits.IdleTimeout), RequestTimeout: time.Duration(h.Limits.RequestTimeout),
			MaxConnectionAge: time.Duration(h.Limits.MaxConnectionAge), WatchQueue: h.Limits.WatchQueue,
		},
	}
	if p := h.Postfix; p != nil {
		out.Postfix = hook.PostfixConfig{Listen: slices.Clone(p.Listen), Group: p.Group}
	}
	if d := h.Dovecot; d != nil {
		out.Dovecot = hook.DovecotConfig{Listen: slices.Clone(d.Listen), Group: d.Group, APIKey: d.APIKey, APIHeader: d.APIHeader,
			Report: d.Report, Tarpit: time.Duration(d.Tarpit), RepeatWindow: time.Duration(d.RepeatWindow)}
		if out.Dovecot.RepeatWindow == 0 {
			rc := c.rulesConfig()
			if out.Dovecot.RepeatWindow = max(rc.IP.Period, rc.Login.Period); out.Dovecot.RepeatWindow == 0 {
				out.Dovecot.RepeatWindow = hook.DefaultRepeatWindow
			}
		}
	}
	if n := h.Nginx; n != nil {
		out.Nginx = hook.NginxConfig{Listen: slices.Clone(n.Listen), Group: n.Group, APIKey: n.APIKey, APIHeader: n.APIHeader,
			Upstream: n.Upstream, UpstreamTimeout: time.Duration(n.UpstreamTimeout), Report: n.Report, AuthWait: time.Duration(n.AuthWait)}
	}
	if m := h.Milter; m != nil {
		out.Milter = hook.MilterConfig{Listen: slices.Clone(m.Listen), Group: m.Group}
	}
	return out
}

// FormatSpecs is every format a configuration can use, presets first and
// the configuration's own after them, restricted to names when names is not
// empty.
func (c *Config) FormatSpecs(names []string) ([]parsers.FormatSpec, error) {
	presets, err := parsers.Presets()
	if err != nil {
		return nil, err
	}
	all := make(map[string]parsers.FormatSpec, len(presets)+len(c.Formats))
	order := make([]string, 0, len(all))
	for name, spec := range presets {
		all[name] = spec
		order = append(order, name)
	}
	slices.Sort(order)
	for _, f := range c.Formats {
		if _, ok := all[f.Name]; !ok {
			order = append(order, f.Name)
		}
		all[f.Name] = f // a user's format of a preset's name replaces the preset
	}
	if len(names) == 0 {
		names = order
	}
	specs := make([]parsers.FormatSpec, 0, len(names))
	for _, n := range names {
		spec, ok := all[n]
		if !ok {
			return nil, fmt.Errorf("no format named %q (%s)", n, suggest(n, slices.Sorted(maps.Keys(all))))
		}
		specs = append(specs, spec)
	}
	return specs, nil
}
