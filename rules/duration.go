package rules

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Day and Week are the units ParseDuration adds to time.ParseDuration's.
// They are fixed lengths (24h, 168h): thresholds count elapsed time, not
// calendar days, so a daylight-saving change does not stretch a window.
const (
	Day  = 24 * time.Hour
	Week = 7 * Day
)

// unitLength is the length of one of the units ParseDuration accepts.
func unitLength(u string) (uint64, bool) {
	switch u {
	case "ns":
		return uint64(time.Nanosecond), true
	case "us", "µs", "μs": // ASCII u, U+00B5 micro sign, U+03BC Greek mu
		return uint64(time.Microsecond), true
	case "ms":
		return uint64(time.Millisecond), true
	case "s":
		return uint64(time.Second), true
	case "m":
		return uint64(time.Minute), true
	case "h":
		return uint64(time.Hour), true
	case "d":
		return uint64(Day), true
	case "w":
		return uint64(Week), true
	}
	return 0, false
}

// ParseDuration reads a duration the way time.ParseDuration does ("90s",
// "1h30m", "1.5h", "-5m") and also accepts days and weeks: "1d", "1w",
// "1d12h", "2w3d". The error names the text and what is wrong with it.
func ParseDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", s, err)
	}
	return d, nil
}

func parseDuration(s string) (time.Duration, error) {
	orig := s
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		if orig == "" {
			return 0, errors.New("empty")
		}
		return 0, errors.New("sign without a number")
	}
	var total uint64
	for s != "" {
		// The number: digits, optionally a fraction.
		var whole uint64
		i := 0
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			if whole > (math.MaxUint64-9)/10 {
				return 0, errors.New("too large")
			}
			whole = whole*10 + uint64(s[i]-'0')
		}
		digits := i
		var frac, scale uint64 = 0, 1
		if i < len(s) && s[i] == '.' {
			i++
			for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
				digits++
				if scale > math.MaxUint64/100 {
					continue // beyond nanosecond precision of any unit: ignore the rest
				}
				frac = frac*10 + uint64(s[i]-'0')
				scale *= 10
			}
		}
		if digits == 0 {
			return 0, fmt.Errorf("expected a number at %q", s)
		}
		s = s[i:]
		// The unit: everything up to the next digit or dot.
		j := 0
		for ; j < len(s) && s[j] != '.' && (s[j] < '0' || s[j] > '9'); j++ {
		}
		if j == 0 {
			return 0, errors.New("missing unit (want s, m, h, d or w)")
		}
		unit, ok := unitLength(s[:j])
		if !ok {
			return 0, fmt.Errorf("unknown unit %q (want ns, us, ms, s, m, h, d or w)", s[:j])
		}
		s = s[j:]
		if whole > math.MaxInt64/unit {
			return 0, errors.New("too large")
		}
		v := whole * unit
		if frac > 0 {
			// frac/scale < 1, so frac*unit/scale < unit; compute in float to
			// avoid overflow of frac*unit, then round to the nanosecond.
			v += uint64(float64(frac) * (float64(unit) / float64(scale)))
		}
		total += v
		if total > math.MaxInt64 {
			return 0, errors.New("too large")
		}
	}
	if neg {
		return -time.Duration(total), nil
	}
	return time.Duration(total), nil
}

// FormatDuration writes d briefly, in a form ParseDuration reads back to
// the same value: in one unit (w, d, h, m or s) when that takes fewer than
// four digits ("1d", "36h", "90s", "2w"), otherwise in several, largest
// first ("3h22m30s", "5214w2d"). Durations with fractions of a second fall
// back to time.Duration.String ("1.5s").
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d%time.Second != 0 || d == math.MinInt64 {
		return d.String()
	}
	sign, abs := "", d
	if abs < 0 {
		sign, abs = "-", -abs
	}
	units := [...]struct {
		len  time.Duration
		name string
	}{{Week, "w"}, {Day, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}}
	for _, u := range units {
		if abs%u.len == 0 && abs/u.len < 1000 {
			return sign + strconv.FormatInt(int64(abs/u.len), 10) + u.name
		}
	}
	b := []byte(sign)
	for _, u := range units {
		if n := abs / u.len; n > 0 {
			b = strconv.AppendInt(b, int64(n), 10)
			b = append(b, u.name...)
			abs -= n * u.len
		}
	}
	return string(b)
}
