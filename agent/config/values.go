package config

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailban/mailban/rules"
)

// Duration is a YAML duration: Go's units plus d (24h) and w (7d), "36h", "1w".
type Duration time.Duration

// UnmarshalYAML reads a duration, naming the line when it is not one.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errAt(n, "want a duration such as 10m, 1h or 1d")
	}
	v, err := rules.ParseDuration(n.Value)
	if err != nil {
		return errAt(n, "%q is not a duration (use a number and a unit: s, m, h, d, w; e.g. 90s, 10m, 1d)", n.Value)
	}
	if v < 0 {
		return errAt(n, "%q: a duration cannot be negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// Threshold is a YAML "N/period" threshold such as "100/1d".
type Threshold rules.Threshold

// UnmarshalYAML reads a threshold, naming the line when it is not one.
func (t *Threshold) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errAt(n, `want a threshold written "N/period", e.g. "100/1d"`)
	}
	v, err := rules.ParseThreshold(n.Value)
	if err != nil {
		return errAt(n, "%v", err)
	}
	*t = Threshold(v)
	return nil
}

// Network is an address ("203.0.113.7") or a CIDR network ("203.0.113.0/24").
type Network netip.Prefix

// UnmarshalYAML reads an address or network, naming the line when it is neither.
func (p *Network) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errAt(n, "want an address or a CIDR network such as 203.0.113.0/24")
	}
	v, err := ParseNetwork(n.Value)
	if err != nil {
		return errAt(n, "%v", err)
	}
	*p = Network(v)
	return nil
}

// ParseNetwork reads "203.0.113.7", "2001:db8::/32" or "203.0.113.0/24".
// Host bits set below the prefix ("203.0.113.7/24") are refused: they are
// almost always a typo for another network.
func ParseNetwork(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR network", s)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR network (e.g. 203.0.113.0/24, 2001:db8::/48)", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: did you mean %s?", s, p.Masked())
	}
	if p.Addr().Is4In6() {
		a := p.Addr().Unmap()
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped network must be /96 or longer", s)
		}
		p = netip.PrefixFrom(a, p.Bits()-96)
	}
	return p, nil
}

// Level is a log level: debug, info, warn or error.
type Level slog.Level

// UnmarshalYAML reads a log level.
func (l *Level) UnmarshalYAML(n *yaml.Node) error {
	var v slog.Level
	if n.Kind != yaml.ScalarNode || v.UnmarshalText([]byte(n.Value)) != nil {
		return errAt(n, "%q is not a log level (debug, info, warn, error)", n.Value)
	}
	*l = Level(v)
	return nil
}

// oneOf is a YAML word that must be one of a fixed set.
func oneOf(n *yaml.Node, dst *string, words ...string) error {
	if n.Kind == yaml.ScalarNode {
		for _, w := range words {
			if n.Value == w {
				*dst = w
				return nil
			}
		}
	}
	return errAt(n, "%q is not one of %s", n.Value, strings.Join(words, ", "))
}

// LogFormat is how the daemon writes its own log: text or json.
type LogFormat string

// UnmarshalYAML reads text or json.
func (f *LogFormat) UnmarshalYAML(n *yaml.Node) error {
	var s string
	err := oneOf(n, &s, "text", "json")
	*f = LogFormat(s)
	return err
}

// StartAt says where a file seen for the first time is read from.
type StartAt string

// UnmarshalYAML reads end or beginning.
func (s *StartAt) UnmarshalYAML(n *yaml.Node) error {
	var v string
	err := oneOf(n, &v, "end", "beginning")
	*s = StartAt(v)
	return err
}

// Location is a time zone name ("Local", "UTC", "Europe/Berlin").
type Location struct{ *time.Location }

// UnmarshalYAML reads a zone name from the system's zone database.
func (l *Location) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errAt(n, "want a time zone name such as UTC or Europe/Berlin")
	}
	loc, err := time.LoadLocation(n.Value)
	if err != nil {
		return errAt(n, "unknown time zone %q (use Local, UTC or a name like Europe/Berlin)", n.Value)
	}
	l.Location = loc
	return nil
}
