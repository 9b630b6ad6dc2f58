package fleet

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/rules"
)

func TestHoldValuesRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 123, time.UTC)
	rc := rules.Config{IP: rules.Threshold{Count: 3, Period: time.Hour}, BanFor: time.Hour}
	for _, d := range []rules.Decision{
		{Action: rules.Ban, Prefix: netip.MustParsePrefix("203.0.113.7/32"), At: at, Until: at.Add(time.Hour), Reason: "manual ban: spam", Evidence: []string{"one", "two"}},
		{Action: rules.Ban, Prefix: netip.MustParsePrefix("2001:db8:1:2::/64"), At: at, Reason: "manual ban"},
		{Action: rules.Block, Prefix: netip.MustParsePrefix("198.51.100.0/24"), At: at, Reason: "manual block"},
		{Action: rules.Lock, Login: "alice@example.test", At: at, Until: at.Add(time.Hour), Reason: "5 failed logins"},
		{Action: rules.Unlock, Login: "alice@example.test", At: at, Reason: "manual unlock"},
	} {
		field := "b:" + d.Prefix.String()
		switch d.Action {
		case rules.Block:
			field = "k:" + d.Prefix.String()
		case rules.Lock, rules.Unlock:
			field = "l:" + d.Login
		}
		v := encodeHold(d, "mx1", false)
		got, host, err := decodeHold(field, v, rc)
		if err != nil || host != "mx1" {
			t.Fatalf("%s: %v (host %q)", field, err, host)
		}
		want := d
		want.Reason += " (decided on mx1)"
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", field, got, want)
		}
		// Every truncation, and trailing garbage, is an error, not a panic.
		for i := range len(v) {
			if _, _, err := decodeHold(field, v[:i], rc); err == nil {
				t.Fatalf("%s: %d of %d bytes decoded", field, i, len(v))
			}
		}
		if _, _, err := decodeHold(field, append(v, 0), rc); err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Fatalf("%s: trailing byte: %v", field, err)
		}
	}
	for _, field := range []string{"x:1", "b:not-a-network", "l:"} {
		v := encodeHold(rules.Decision{Action: rules.Ban, Prefix: netip.MustParsePrefix("192.0.2.1/32")}, "h", false)
		if _, _, err := decodeHold(field, v, rc); err == nil {
			t.Errorf("field %q decoded", field)
		}
	}
}
