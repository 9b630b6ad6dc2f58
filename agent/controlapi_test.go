package agent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// A forced ban of a network around allowlisted addresses bans the rest of
// it: the fewest networks that cover it all but the holes.
func TestSubtractCoversAllButTheHoles(t *testing.T) {
	cases := []struct {
		p     string
		holes []string
		want  string
	}{
		{"192.0.2.0/24", []string{"192.0.2.128/25"}, "192.0.2.0/25"},
		{"192.0.2.0/30", []string{"192.0.2.1/32"}, "192.0.2.0/32 192.0.2.2/31"},
		{"192.0.2.0/24", []string{"192.0.2.0/26", "192.0.2.192/26"}, "192.0.2.64/26 192.0.2.128/26"},
		{"2001:db8::/32", []string{"2001:db8::/34"}, "2001:db8:4000::/34 2001:db8:8000::/33"},
	}
	for _, tc := range cases {
		got := subtract(netip.MustParsePrefix(tc.p), prefixes(t, tc.holes...))
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if strings.Join(s, " ") != tc.want {
			t.Errorf("%s minus %v = %v, want %s", tc.p, tc.holes, s, tc.want)
		}
	}

	// Everything but loopback and two host addresses: no address is lost
	// or doubled, and none of the holes is covered.
	holes := prefixes(t, "127.0.0.0/8", "192.0.2.10/32", "198.51.100.0/24")
	parts := subtract(netip.MustParsePrefix("0.0.0.0/0"), holes)
	var total uint64
	for i, p := range parts {
		total += 1 << (32 - p.Bits())
		for _, h := range holes {
			if p.Overlaps(h) {
				t.Errorf("%s overlaps the hole %s", p, h)
			}
		}
		if i > 0 && parts[i-1].Overlaps(p) {
			t.Errorf("%s and %s overlap", parts[i-1], p)
		}
	}
	if want := uint64(1<<32) - 1<<24 - 1 - 256; total != want {
		t.Errorf("the parts cover %d addresses, want %d", total, want)
	}
	if len(parts) > 3*32 {
		t.Errorf("%d parts for 3 holes", len(parts))
	}
	if !slices.IsSortedFunc(parts, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) }) {
		t.Error("parts are not in address order")
	}
}
