package hook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Config is every setting of the hook. A protocol with no listen address
// is off.
type Config struct {
	Native  NativeConfig
	Postfix PostfixConfig
	Dovecot DovecotConfig
	Nginx   NginxConfig
	Milter  MilterConfig
	Limits  Limits
}

// NativeConfig is mailban's own line protocol (CHECK, REPORT, WATCH).
type NativeConfig struct {
	// Listen holds unix socket paths (absolute) and loopback host:port
	// addresses.
	Listen []string
	// Group owns the unix sockets (mode 0660); "" keeps mailban's own group.
	Group string
	// ReportOverTCP accepts REPORT on TCP listeners too. Off by default:
	// every local user can reach a loopback port, and a false report can
	// lock a login or ban an address.
	ReportOverTCP bool
}

// PostfixConfig is Postfix's SMTPD policy delegation (check_policy_service).
type PostfixConfig struct {
	Listen []string
	Group  string
}

// DovecotConfig is Dovecot's auth policy server (auth_policy_server_url).
type DovecotConfig struct {
	Listen []string
	Group  string
	// APIKey must arrive in the APIHeader header of every request
	// (auth_policy_server_api_header = "X-API-Key: <key>").
	APIKey    string
	APIHeader string
	// Report feeds command=report results into the rules as events.
	Report bool
	// Tarpit, when more than 0, answers a locked login from an address
	// that is not exempt with a delay of this long instead of a refusal:
	// Dovecot waits, then checks the password, so the owner on a new
	// address still gets in and a guesser's wrong password bans its address
	// at once. Banned addresses are refused either way.
	Tarpit time.Duration
	// RepeatWindow is how long a failure with the same password hash, from
	// the same address, for the same login, is counted once (a phone with a
	// stale password retrying). 0 means DefaultRepeatWindow.
	RepeatWindow time.Duration
}

// NginxConfig is nginx's mail auth_http service: refusals are answered
// here, everything else is passed to Upstream, the real auth_http service.
type NginxConfig struct {
	Listen []string
	Group  string
	// APIKey must arrive in the APIHeader header of every request (nginx:
	// auth_http_header X-API-Key <key>). It is not passed upstream.
	APIKey    string
	APIHeader string
	// Upstream is the URL of the real auth_http service.
	Upstream        string
	UpstreamTimeout time.Duration
	// Report feeds the upstream's answers (Auth-Status OK or not) into the
	// rules as successes and failures.
	Report bool
	// AuthWait, when more than 0, is sent as Auth-Wait with a refusal:
	// nginx then holds the client that long and lets it try again, instead
	// of closing the connection.
	AuthWait time.Duration
}

// MilterConfig is the milter protocol (Postfix's smtpd_milters, Sendmail,
// Stalwart): a banned address is refused at CONNECT, a locked login at MAIL.
type MilterConfig struct {
	Listen []string
	Group  string
}

// Limits bound what one client can cost. They apply to every protocol.
type Limits struct {
	// MaxConnections is the most connections one listener holds at once;
	// more are closed as soon as they are accepted.
	MaxConnections int
	// MaxLine is the longest line of the line protocols (native, Postfix).
	MaxLine int
	// MaxRequest is the largest request: a Postfix attribute block, HTTP
	// headers, an HTTP body, a milter packet.
	MaxRequest int
	// IdleTimeout closes a connection that sends no request for this long.
	IdleTimeout time.Duration
	// RequestTimeout bounds reading one request once it has begun, and
	// writing one answer.
	RequestTimeout time.Duration
	// MaxConnectionAge closes a line-protocol connection after its answer
	// once it is this old (WATCH streams excepted); the client reconnects.
	MaxConnectionAge time.Duration
	// WatchQueue is how many decision batches a WATCH subscriber may fall
	// behind before it is disconnected (it reconnects and resynchronises).
	WatchQueue int
}

// DefaultRepeatWindow is DovecotConfig.RepeatWindow's default.
const DefaultRepeatWindow = time.Hour

// Where each protocol listens when it is turned on without saying where.
// Postfix's smtpd runs chrooted in /var/spool/postfix on Debian and sees
// this socket as private/mailban.
const (
	DefaultNativeSocket  = "/run/mailban/hook.sock"
	DefaultPostfixSocket = "/var/spool/postfix/private/mailban"
	DefaultDovecotListen = "127.0.0.1:9849"
	DefaultNginxListen   = "127.0.0.1:9850"
	DefaultMilterSocket  = "/var/spool/postfix/private/mailban-milter"
)

// DefaultConfig has the native socket on and every other protocol off, with
// the defaults each protocol's settings take when it is turned on.
func DefaultConfig() Config {
	return Config{
		Native:  NativeConfig{Listen: []string{DefaultNativeSocket}},
		Postfix: PostfixConfig{Group: "postfix"},
		Milter:  MilterConfig{Group: "postfix"},
		Dovecot: DovecotConfig{APIHeader: "X-API-Key", Report: true},
		Nginx:   NginxConfig{APIHeader: "X-API-Key", UpstreamTimeout: 10 * time.Second, Report: true},
		Limits:  DefaultLimits(),
	}
}

// DefaultLimits are generous for mail servers on the same host and small
// enough that nobody can exhaust mailban through the hook.
func DefaultLimits() Limits {
	return Limits{
		MaxConnections:   256,
		MaxLine:          1024,
		MaxRequest:       16 << 10,
		IdleTimeout:      5 * time.Minute,
		RequestTimeout:   10 * time.Second,
		MaxConnectionAge: time.Hour,
		WatchQueue:       1024,
	}
}

// FieldError is a problem with one setting. Field is its path in the
// configuration file's spelling below the hook's block ("dovecot.api-key").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Validate checks the configuration without looking at the host: whether
// a group exists, or an address is free, is found when New opens the
// listeners. The error joins one *FieldError per problem.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	seen := map[string]string{}
	listens := func(proto string, addrs []string, group string) {
		for i, a := range addrs {
			field := fmt.Sprintf("%s.listen[%d]", proto, i)
			addr, err := parseListen(a)
			if err != nil {
				bad(field, "%v", err)
				continue
			}
			if strings.HasSuffix(addr.address, ":0") {
				continue // any free port: never the same twice
			}
			if other, dup := seen[addr.String()]; dup {
				bad(field, "%s is already used by %s", a, other)
			}
			seen[addr.String()] = field
		}
		if strings.ContainsAny(group, ": \t\n") {
			bad(proto+".group", "%q is not a group name", group)
		}
	}
	listens("native", c.Native.Listen, c.Native.Group)
	listens("postfix", c.Postfix.Listen, c.Postfix.Group)
	listens("dovecot", c.Dovecot.Listen, c.Dovecot.Group)
	listens("nginx", c.Nginx.Listen, c.Nginx.Group)
	listens("milter", c.Milter.Listen, c.Milter.Group)

	apiKey := func(proto, key, header string) {
		if key == "" {
			bad(proto+".api-key", "must be set: without it any local user could refuse or report logins")
		} else if strings.ContainsAny(key, "\r\n") {
			bad(proto+".api-key", "cannot contain a line break")
		}
		if header == "" || strings.ContainsAny(header, ": \t\r\n") {
			bad(proto+".api-header", "%q is not an HTTP header name", header)
		}
	}
	if len(c.Dovecot.Listen) > 0 {
		apiKey("dovecot", c.Dovecot.APIKey, c.Dovecot.APIHeader)
	}
	if c.Dovecot.Tarpit < 0 || c.Dovecot.Tarpit > 5*time.Minute {
		// Dovecot caps a policy delay at 5 minutes (AUTH_REQUEST_MAX_DELAY_SECS).
		bad("dovecot.tarpit", "%s is outside 0 to 5m", c.Dovecot.Tarpit)
	}
	if c.Dovecot.RepeatWindow < 0 {
		bad("dovecot.repeat-window", "cannot be negative")
	}
	if len(c.Nginx.Listen) > 0 {
		apiKey("nginx", c.Nginx.APIKey, c.Nginx.APIHeader)
		if u, err := url.Parse(c.Nginx.Upstream); c.Nginx.Upstream == "" {
			bad("nginx.upstream", "must name the real auth_http service (http://host:port/path): nginx needs a backend for every login mailban lets through")
		} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("nginx.upstream", "%q is not an http:// or https:// URL", c.Nginx.Upstream)
		}
		if c.Nginx.UpstreamTimeout <= 0 {
			bad("nginx.upstream-timeout", "must be more than 0")
		}
	}
	if c.Nginx.AuthWait < 0 {
		bad("nginx.auth-wait", "cannot be negative")
	}

	l := &c.Limits
	if l.MaxConnections < 1 {
		bad("limits.max-connections", "must be at least 1")
	}
	if l.MaxLine < 64 || l.MaxLine > 1<<20 {
		bad("limits.max-line", "%d is outside 64 to 1048576 bytes", l.MaxLine)
	}
	if l.MaxRequest < 1024 || l.MaxRequest > 16<<20 {
		bad("limits.max-request", "%d is outside 1024 to 16777216 bytes", l.MaxRequest)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"limits.idle-timeout", l.IdleTimeout}, {"limits.request-timeout", l.RequestTimeout}, {"limits.max-connection-age", l.MaxConnectionAge}} {
		if d.v <= 0 {
			bad(d.field, "must be more than 0")
		}
	}
	if l.WatchQueue < 1 {
		bad("limits.watch-queue", "must be at least 1")
	}
	return errors.Join(errs...)
}

// listenAddr is a parsed listen address.
type listenAddr struct {
	network string // "unix" or "tcp"
	address string
}

func (a listenAddr) String() string { return a.network + ":" + a.address }

// parseListen reads "/abs/path" (or "unix:/abs/path") as a unix socket and
// "host:port" as TCP. The host must be an IP address or "localhost": names
// that resolve to other addresses later are a surprise nobody wants here.
func parseListen(s string) (listenAddr, error) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		s = p
		if !filepath.IsAbs(p) {
			return listenAddr{}, fmt.Errorf("%q: a unix socket path must be absolute", s)
		}
	}
	if filepath.IsAbs(s) {
		if filepath.Clean(s) != s || strings.HasSuffix(s, "/") {
			return listenAddr{}, fmt.Errorf("%q is not a clean socket path (did you mean %s?)", s, filepath.Clean(s))
		}
		if len(s) > 107 {
			return listenAddr{}, fmt.Errorf("%q is longer than a unix socket path may be (107 bytes)", s)
		}
		return listenAddr{network: "unix", address: s}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return listenAddr{}, fmt.Errorf("%q is neither an absolute unix socket path nor host:port (e.g. 127.0.0.1:9848)", s)
	}
	if host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return listenAddr{}, fmt.Errorf("%q: the host must be an IP address or localhost", s)
		}
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return listenAddr{}, fmt.Errorf("%q: %q is not a port number", s, port)
	}
	return listenAddr{network: "tcp", address: s}, nil
}

// isLoopback reports whether a TCP listen address only accepts local
// clients.
func (a listenAddr) isLoopback() bool {
	if a.network != "tcp" {
		return true
	}
	host, _, _ := net.SplitHostPort(a.address)
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// sameListeners reports whether two configurations listen in the same
// places with the same socket groups: what a reload cannot change in place.
func sameListeners(a, b *Config) bool {
	return slices.Equal(a.Native.Listen, b.Native.Listen) && a.Native.Group == b.Native.Group &&
		slices.Equal(a.Postfix.Listen, b.Postfix.Listen) && a.Postfix.Group == b.Postfix.Group &&
		slices.Equal(a.Dovecot.Listen, b.Dovecot.Listen) && a.Dovecot.Group == b.Dovecot.Group &&
		slices.Equal(a.Nginx.Listen, b.Nginx.Listen) && a.Nginx.Group == b.Nginx.Group &&
		slices.Equal(a.Milter.Listen, b.Milter.Listen) && a.Milter.Group == b.Milter.Group
}
