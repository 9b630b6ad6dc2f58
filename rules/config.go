package rules

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"
)

// Defaults for the zero values of Config fields that have one.
const (
	DefaultIPv6Prefix    = 64
	DefaultEvidenceLines = 10
	DefaultEvidenceRing  = 1 << 14
)

// MaxRemembered bounds the offences remembered per address: a ban's growth
// counts at most MaxRemembered-1 previous offences, and PermanentAfter may
// be at most MaxRemembered.
const MaxRemembered = 256

// maxBan stands in for "no cap" when a grown ban would overflow: a century.
const maxBan = 100 * 365 * Day

// Config is what the engine decides by. The zero values of IPv6Prefix,
// BanFactor, EvidenceLines and EvidenceRing take defaults; the zero
// Threshold disables that kind of counting.
type Config struct {
	IP    Threshold // failures per address (IPv6: per IPv6Prefix group) within Period → ban
	Login Threshold // failures per normalised login across all addresses → lock

	IPv6Prefix int // group IPv6 addresses by this prefix length (1-128); 0: 64

	BanFor         time.Duration // the first ban's length
	BanFactor      float64       // each remembered offence multiplies the ban (≥1; 1 or 0: no growth)
	BanMax         time.Duration // cap for grown bans (0: no cap)
	PermanentAfter int           // the Nth remembered ban of one address is permanent (0: never)
	OffenderMemory time.Duration // a ban counts as a previous offence until this long after it ends

	LockFor       time.Duration // how long a locked login stays locked
	SuccessMemory time.Duration // how long an address that logged in as a login is exempt from that login's lock

	Allow   []netip.Prefix // never counted, banned or locked out
	Blocked []netip.Prefix // static blocks: refused, never expire

	EvidenceLines int // lines kept per decision; 0: DefaultEvidenceLines
	// EvidenceRing is how many recent failure lines are kept in total, shared
	// by every key; evidence older than that is missing from decisions.
	// 0: DefaultEvidenceRing.
	EvidenceRing int
}

// ConfigError says which Config field is wrong, so that the agent can point
// at the matching key of its configuration file.
type ConfigError struct {
	Field string // the Config field, "IP" or "Allow[2]"
	Err   error
}

func (e *ConfigError) Error() string { return "rules config: " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func fieldErr(field string, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate reports the first field that is out of range or inconsistent
// with another, as a *ConfigError.
func (c Config) Validate() error {
	if err := c.IP.validate(); err != nil {
		return &ConfigError{Field: "IP", Err: err}
	}
	if err := c.Login.validate(); err != nil {
		return &ConfigError{Field: "Login", Err: err}
	}
	if c.IPv6Prefix < 0 || c.IPv6Prefix > 128 {
		return fieldErr("IPv6Prefix", "%d is not a prefix length (0-128; 0 means %d)", c.IPv6Prefix, DefaultIPv6Prefix)
	}
	banning := c.IP.Enabled() || c.Login.Enabled()
	switch {
	case c.BanFor < 0:
		return fieldErr("BanFor", "%s is negative", c.BanFor)
	case c.BanFor == 0 && banning:
		return fieldErr("BanFor", "must be positive when IP or Login thresholds are enabled")
	case c.BanFor > maxBan:
		return fieldErr("BanFor", "%s is longer than a century (use PermanentAfter: 1 for permanent bans)", FormatDuration(c.BanFor))
	}
	switch {
	case math.IsNaN(c.BanFactor) || math.IsInf(c.BanFactor, 0):
		return fieldErr("BanFactor", "%v is not a number", c.BanFactor)
	case c.BanFactor != 0 && c.BanFactor < 1:
		return fieldErr("BanFactor", "%v is less than 1 (bans cannot shrink; 1 means no growth)", c.BanFactor)
	}
	switch {
	case c.BanMax < 0:
		return fieldErr("BanMax", "%s is negative", c.BanMax)
	case c.BanMax > 0 && c.BanMax < c.BanFor:
		return fieldErr("BanMax", "%s is shorter than BanFor %s", FormatDuration(c.BanMax), FormatDuration(c.BanFor))
	case c.BanMax > maxBan:
		return fieldErr("BanMax", "%s is longer than a century", FormatDuration(c.BanMax))
	}
	switch {
	case c.PermanentAfter < 0:
		return fieldErr("PermanentAfter", "%d is negative", c.PermanentAfter)
	case c.PermanentAfter > MaxRemembered:
		return fieldErr("PermanentAfter", "%d is more than the %d offences remembered", c.PermanentAfter, MaxRemembered)
	}
	switch {
	case c.OffenderMemory < 0:
		return fieldErr("OffenderMemory", "%s is negative", c.OffenderMemory)
	case c.OffenderMemory == 0 && c.BanFactor > 1:
		return fieldErr("OffenderMemory", "must be positive when BanFactor is above 1 (bans grow with remembered offences)")
	case c.OffenderMemory == 0 && c.PermanentAfter > 1:
		return fieldErr("OffenderMemory", "must be positive when PermanentAfter is above 1 (it counts remembered offences)")
	}
	switch {
	case c.LockFor < 0:
		return fieldErr("LockFor", "%s is negative", c.LockFor)
	case c.LockFor == 0 && c.Login.Enabled():
		return fieldErr("LockFor", "must be positive when the Login threshold is enabled")
	case c.LockFor > maxBan:
		return fieldErr("LockFor", "%s is longer than a century", FormatDuration(c.LockFor))
	}
	if c.SuccessMemory < 0 {
		return fieldErr("SuccessMemory", "%s is negative", c.SuccessMemory)
	}
	for i, p := range c.Allow {
		if !p.IsValid() {
			return fieldErr(fmt.Sprintf("Allow[%d]", i), "not a valid network")
		}
	}
	for i, p := range c.Blocked {
		if !p.IsValid() {
			return fieldErr(fmt.Sprintf("Blocked[%d]", i), "not a valid network")
		}
	}
	if c.EvidenceLines < 0 {
		return fieldErr("EvidenceLines", "%d is negative", c.EvidenceLines)
	}
	if c.EvidenceRing < 0 || c.EvidenceRing > 1<<24 {
		return fieldErr("EvidenceRing", "%d is out of range (0-%d)", c.EvidenceRing, 1<<24)
	}
	return nil
}

// withDefaults validates c and returns it with defaults filled in and every
// prefix in canonical form (masked, IPv4-mapped networks as IPv4).
func (c Config) withDefaults() (Config, error) {
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.IPv6Prefix == 0 {
		c.IPv6Prefix = DefaultIPv6Prefix
	}
	if c.BanFactor == 0 {
		c.BanFactor = 1
	}
	if c.EvidenceLines == 0 {
		c.EvidenceLines = DefaultEvidenceLines
	}
	if c.EvidenceRing == 0 {
		c.EvidenceRing = DefaultEvidenceRing
	}
	c.Allow = canonicalPrefixes(c.Allow)
	c.Blocked = canonicalPrefixes(c.Blocked)
	return c, nil
}

func canonicalPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	seen := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		p, _ = canonicalPrefix(p)
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// canonicalPrefix masks p, drops a zone, and turns an IPv4-mapped IPv6
// network (::ffff:10.0.0.0/104) into the IPv4 one (10.0.0.0/8), because
// events carry IPv4 addresses unmapped.
func canonicalPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, errors.New("not a valid network")
	}
	a, bits := p.Addr().WithZone(""), p.Bits()
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}
