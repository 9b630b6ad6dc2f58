package dryrun

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/rules"
)

func TestApplyLogsEachDecision(t *testing.T) {
	at := time.Date(2026, 11, 25, 19, 45, 24, 0, time.UTC)
	cases := []struct {
		name     string
		cfg      Config
		decision rules.Decision
		want     []string
	}{
		{
			name: "timed ban",
			decision: rules.Decision{Action: rules.Ban, Prefix: netip.MustParsePrefix("203.0.113.7/32"),
				At: at, Until: at.Add(time.Hour), Reason: "10 failures in 1h", Evidence: []string{"line one"}},
			want: []string{`msg=decision enforcer=log action=ban prefix=203.0.113.7/32 until=2026-11-25T20:45:24.000Z for=1h reason="10 failures in 1h"`},
		},
		{
			name: "permanent ban with evidence",
			cfg:  Config{Evidence: true},
			decision: rules.Decision{Action: rules.Ban, Prefix: netip.MustParsePrefix("2001:db8::/64"),
				At: at, Reason: "5th offence", Evidence: []string{"first line", "second line"}},
			want: []string{
				`msg=decision enforcer=log action=ban prefix=2001:db8::/64 until=permanent reason="5th offence"`,
				`msg=evidence enforcer=log action=ban line="first line"`,
				`msg=evidence enforcer=log action=ban line="second line"`,
			},
		},
		{
			name:     "lock",
			decision: rules.Decision{Action: rules.Lock, Login: "alice@example.com", At: at, Until: at.Add(30 * time.Minute), Reason: "30 failures"},
			want:     []string{`msg=decision enforcer=log action=lock login=alice@example.com until=2026-11-25T20:15:24.000Z for=30m reason="30 failures"`},
		},
		{
			name:     "unblock",
			decision: rules.Decision{Action: rules.Unblock, Prefix: netip.MustParsePrefix("198.51.100.0/24"), At: at},
			want:     []string{`msg=decision enforcer=log action=unblock prefix=198.51.100.0/24`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
						return slog.Attr{}
					}
					return a
				},
			}))
			e := New(tc.cfg, logger)
			if err := e.Apply(context.Background(), []rules.Decision{tc.decision}); err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("logged\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
