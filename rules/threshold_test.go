package rules

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "90s", want: 90 * time.Second},
		{in: "10m", want: 10 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "1d", want: 24 * time.Hour},
		{in: "1w", want: 7 * 24 * time.Hour},
		{in: "36h", want: 36 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "2w3d", want: 17 * 24 * time.Hour},
		{in: "0.5d", want: 12 * time.Hour},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "1µs", want: time.Microsecond},
		{in: "0", want: 0},
		{in: "-5m", want: -5 * time.Minute},
		{in: "", wantErr: "empty"},
		{in: "5", wantErr: "missing unit"},
		{in: "5x", wantErr: `unknown unit "x"`},
		{in: "d", wantErr: "expected a number"},
		{in: "1d2", wantErr: "missing unit"},
		{in: "-", wantErr: "sign without a number"},
		{in: "99999999w", wantErr: "too large"},
		{in: "1.d", want: 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Fatalf("ParseDuration(%q) = %v, %v; want an error naming the text and saying %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestParseDurationAgreesWithTime checks that what time.ParseDuration reads
// is read the same way.
func TestParseDurationAgreesWithTime(t *testing.T) {
	for _, s := range []string{"1h2m3s", "1.25h", "300ms", "2h45m0.5s", "-1.5m", "+3s", "0s", "1.000000001s", "7.3ns"} {
		want, werr := time.ParseDuration(s)
		got, err := ParseDuration(s)
		if (err != nil) != (werr != nil) || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; time.ParseDuration says %v, %v", s, got, err, want, werr)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{24 * time.Hour, "1d"},
		{7 * 24 * time.Hour, "1w"},
		{14 * 24 * time.Hour, "2w"},
		{36 * time.Hour, "36h"},
		{90 * time.Second, "90s"},
		{10 * time.Minute, "10m"},
		{1500 * time.Millisecond, "1.5s"},
		{0, "0s"},
		{-2 * time.Hour, "-2h"},
		{12150 * time.Second, "3h22m30s"},
		{1000 * time.Hour, "5w6d16h"},
		{36500 * Day, "5214w2d"},
		{999 * time.Second, "999s"},
		{1000 * time.Second, "16m40s"},
	}
	for _, tt := range tests {
		got := FormatDuration(tt.in)
		if got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
		back, err := ParseDuration(got)
		if err != nil || back != tt.in {
			t.Errorf("ParseDuration(FormatDuration(%v)) = %v, %v", tt.in, back, err)
		}
	}
}

func TestParseThreshold(t *testing.T) {
	tests := []struct {
		in      string
		want    Threshold
		wantErr string
	}{
		{in: "100/1d", want: Threshold{100, 24 * time.Hour}},
		{in: "5/10m", want: Threshold{5, 10 * time.Minute}},
		{in: "20/90s", want: Threshold{20, 90 * time.Second}},
		{in: " 3 / 1h ", want: Threshold{3, time.Hour}},
		{in: "off", want: Threshold{}},
		{in: "5", wantErr: "want COUNT/PERIOD"},
		{in: "x/1h", wantErr: `count "x" is not a whole number`},
		{in: "0/1h", wantErr: "count must be at least 1"},
		{in: "-3/1h", wantErr: "count must be at least 1"},
		{in: "5/", wantErr: `period "": empty`},
		{in: "5/10q", wantErr: `unknown unit "q"`},
		{in: "5/0s", wantErr: "must be positive"},
		{in: "5/-1m", wantErr: "must be positive"},
		{in: "9999999/1h", wantErr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseThreshold(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseThreshold(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseThreshold(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestThresholdStringRoundTrips(t *testing.T) {
	for _, s := range []string{"100/1d", "5/10m", "20/90s", "3/36h", "1/2w", "off", "7/1.5s"} {
		th, err := ParseThreshold(s)
		if err != nil {
			t.Fatalf("ParseThreshold(%q): %v", s, err)
		}
		if got := th.String(); got != s {
			t.Errorf("ParseThreshold(%q).String() = %q", s, got)
		}
		var back Threshold
		if err := back.UnmarshalText([]byte(th.String())); err != nil || back != th {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", th.String(), back, err, th)
		}
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	tests := []struct {
		field  string
		change func(*Config)
	}{
		{"IP", func(c *Config) { c.IP = Threshold{Count: 5} }},
		{"Login", func(c *Config) { c.Login = Threshold{Count: -1, Period: time.Hour} }},
		{"IPv6Prefix", func(c *Config) { c.IPv6Prefix = 129 }},
		{"BanFor", func(c *Config) { c.BanFor = 0 }},
		{"BanFactor", func(c *Config) { c.BanFactor = 0.5 }},
		{"BanMax", func(c *Config) { c.BanMax = time.Minute }},
		{"BanMax", func(c *Config) { c.BanMax = 200 * 365 * Day }},
		{"BanFor", func(c *Config) { c.BanFor = 200 * 365 * Day }},
		{"LockFor", func(c *Config) { c.LockFor = 200 * 365 * Day }},
		{"BanFor", func(c *Config) { c.BanFor = -time.Second }},
		{"IPv6Prefix", func(c *Config) { c.IPv6Prefix = -1 }},
		{"BanFactor", func(c *Config) { c.BanFactor = math.NaN() }},
		{"EvidenceRing", func(c *Config) { c.EvidenceRing = 1 << 30 }},
		{"PermanentAfter", func(c *Config) { c.PermanentAfter = MaxRemembered + 1 }},
		{"OffenderMemory", func(c *Config) { c.BanFactor = 2 }},
		{"OffenderMemory", func(c *Config) { c.PermanentAfter = 3 }},
		{"LockFor", func(c *Config) { c.LockFor = 0 }},
		{"SuccessMemory", func(c *Config) { c.SuccessMemory = -time.Second }},
		{"Allow[1]", func(c *Config) { c.Allow = []netip.Prefix{mustPrefix("127.0.0.0/8"), {}} }},
		{"Blocked[0]", func(c *Config) { c.Blocked = []netip.Prefix{{}} }},
		{"EvidenceLines", func(c *Config) { c.EvidenceLines = -1 }},
	}
	if err := baseConfig().Validate(); err != nil {
		t.Fatalf("baseConfig().Validate() = %v", err)
	}
	for _, tt := range tests {
		cfg := baseConfig()
		tt.change(&cfg)
		err := cfg.Validate()
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tt.field {
			t.Errorf("Validate() = %v; want a ConfigError for %s", err, tt.field)
			continue
		}
		if !strings.Contains(err.Error(), tt.field) {
			t.Errorf("error %q does not name %s", err, tt.field)
		}
		if _, err := NewEngine(cfg, newFakeClock(t0)); err == nil {
			t.Errorf("NewEngine accepted a config with a bad %s", tt.field)
		}
	}
}
