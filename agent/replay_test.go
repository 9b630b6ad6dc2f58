package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/agent/config"
)

// TestReplayLocation: a time written without a zone is read in
// ReplayOptions.Location, and in the host's zone without one; a time
// written with its offset is the same instant whatever the Location.
func TestReplayLocation(t *testing.T) {
	cet := time.FixedZone("CET", 3600)
	const (
		rfc3164 = "Nov 25 19:45:21 mail postfix/smtpd[19770]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=admin"
		rfc3339 = "2026-11-25T19:45:21+00:00 mail postfix/smtpd[19770]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=admin"
	)
	for _, tt := range []struct {
		name string
		line string
		loc  *time.Location
		want time.Time
	}{
		{"no zone, CET", rfc3164, cet, time.Date(2026, 11, 25, 18, 45, 21, 0, time.UTC)},
		{"no zone, UTC", rfc3164, time.UTC, time.Date(2026, 11, 25, 19, 45, 21, 0, time.UTC)},
		{"no zone, no Location: the host's", rfc3164, nil, time.Date(2026, 11, 25, 19, 45, 21, 0, time.Local)},
		{"offset, CET", rfc3339, cet, time.Date(2026, 11, 25, 19, 45, 21, 0, time.UTC)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := Replay(context.Background(), ReplayOptions{
				Config: config.Default(), Formats: []string{"postfix"}, JSON: true, Out: &out,
				Now:           time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC),
				Location:      tt.loc,
				HostAddresses: func() ([]netip.Prefix, error) { return nil, nil },
			}, []ReplayInput{{Name: "mail.log", R: strings.NewReader(tt.line + "\n")}})
			if err != nil {
				t.Fatal(err)
			}
			var ev struct{ Time time.Time }
			if err := json.Unmarshal(bytes.SplitN(out.Bytes(), []byte("\n"), 2)[0], &ev); err != nil {
				t.Fatalf("%v in %q", err, out.String())
			}
			if !ev.Time.Equal(tt.want) {
				t.Errorf("time %v, want %v", ev.Time, tt.want.UTC())
			}
		})
	}
}
