package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxCount bounds a threshold's count. A window keeps up to Count-1
// timestamps per key, so the bound is also a bound on one key's memory.
const MaxCount = 1 << 20

// Threshold is "Count failures within Period". The zero Threshold is
// disabled: nothing is counted against it.
type Threshold struct {
	Count  int
	Period time.Duration
}

// Enabled reports whether the threshold counts anything.
func (t Threshold) Enabled() bool { return t.Count > 0 }

// ParseThreshold reads "COUNT/PERIOD" ("100/1d", "5/10m", "20/90s"; period
// units as ParseDuration) or "off" for the disabled threshold.
func ParseThreshold(s string) (Threshold, error) {
	t, err := parseThreshold(strings.TrimSpace(s))
	if err != nil {
		return Threshold{}, fmt.Errorf("invalid threshold %q: %w", s, err)
	}
	return t, nil
}

func parseThreshold(s string) (Threshold, error) {
	if s == "off" {
		return Threshold{}, nil
	}
	count, period, ok := strings.Cut(s, "/")
	if !ok {
		return Threshold{}, errors.New(`want COUNT/PERIOD such as "5/10m" or "100/1d", or "off"`)
	}
	n, err := strconv.Atoi(strings.TrimSpace(count))
	if err != nil {
		return Threshold{}, fmt.Errorf("count %q is not a whole number", count)
	}
	if n < 1 {
		return Threshold{}, fmt.Errorf(`count must be at least 1 (write "off" to disable)`)
	}
	if n > MaxCount {
		return Threshold{}, fmt.Errorf("count %d is larger than %d", n, MaxCount)
	}
	d, err := parseDuration(strings.TrimSpace(period))
	if err != nil {
		return Threshold{}, fmt.Errorf("period %q: %w", period, err)
	}
	if d <= 0 {
		return Threshold{}, fmt.Errorf("period %q must be positive", period)
	}
	return Threshold{Count: n, Period: d}, nil
}

// String writes the threshold the way ParseThreshold reads it: "100/1d",
// "20/90s", or "off" when disabled.
func (t Threshold) String() string {
	if !t.Enabled() {
		return "off"
	}
	return strconv.Itoa(t.Count) + "/" + FormatDuration(t.Period)
}

// MarshalText writes String, so configs and JSON show "5/10m".
func (t Threshold) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads what ParseThreshold reads.
func (t *Threshold) UnmarshalText(b []byte) error {
	v, err := ParseThreshold(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

func (t Threshold) validate() error {
	switch {
	case t.Count < 0:
		return fmt.Errorf("count %d is negative", t.Count)
	case t.Count == 0:
		return nil
	case t.Count > MaxCount:
		return fmt.Errorf("count %d is larger than %d", t.Count, MaxCount)
	case t.Period <= 0:
		return fmt.Errorf("period %s must be positive", t.Period)
	}
	return nil
}
