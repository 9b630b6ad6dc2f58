package nftables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// entryText writes an entry as "lo-hi +1h0m0s", "lo-hi forever".
func entryText(e entry) string {
	end := "forever"
	if !e.until.IsZero() {
		end = "+" + e.until.Sub(t0).String()
	}
	return fmt.Sprintf("%s-%s %s", e.lo, e.hi, end)
}

func entriesText(es []entry) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = entryText(e)
	}
	return strings.Join(s, ", ")
}

// d is a decided prefix ending after t0; 0 is for good.
func d(prefix string, after time.Duration) decided {
	var until time.Time
	if after != 0 {
		until = t0.Add(after)
	}
	return decided{p: netip.MustParsePrefix(prefix), until: until}
}

func TestGroupsOfNestedPrefixes(t *testing.T) {
	cases := []struct {
		name string
		in   []decided
		want []string // one line per group
	}{
		{
			name: "lone prefixes are one entry each",
			in:   []decided{d("203.0.113.9/32", time.Hour), d("203.0.113.7/32", 2*time.Hour), d("198.51.100.0/24", 0)},
			want: []string{
				"198.51.100.0-198.51.100.255 forever",
				"203.0.113.7-203.0.113.7 +2h0m0s",
				"203.0.113.9-203.0.113.9 +1h0m0s",
			},
		},
		{
			name: "an address outliving its network keeps its own entry",
			in:   []decided{d("203.0.113.0/24", time.Hour), d("203.0.113.7/32", 3*time.Hour)},
			want: []string{"203.0.113.0-203.0.113.6 +1h0m0s, 203.0.113.7-203.0.113.7 +3h0m0s, 203.0.113.8-203.0.113.255 +1h0m0s"},
		},
		{
			name: "an address ending first disappears in its network",
			in:   []decided{d("203.0.113.7/32", 30*time.Minute), d("203.0.113.0/24", time.Hour)},
			want: []string{"203.0.113.0-203.0.113.255 +1h0m0s"},
		},
		{
			name: "a permanent inner prefix outlives any timed one",
			in:   []decided{d("2001:db8::/48", time.Hour), d("2001:db8:0:ff00::/56", 0)},
			want: []string{"2001:db8::-2001:db8:0:feff:ffff:ffff:ffff:ffff +1h0m0s, 2001:db8:0:ff00::-2001:db8:0:ffff:ffff:ffff:ffff:ffff forever"},
		},
		{
			name: "the first and last addresses of a network",
			in:   []decided{d("10.0.0.0/8", time.Hour), d("10.0.0.0/32", 2*time.Hour), d("10.255.255.255/32", 2*time.Hour)},
			want: []string{"10.0.0.0-10.0.0.0 +2h0m0s, 10.0.0.1-10.255.255.254 +1h0m0s, 10.255.255.255-10.255.255.255 +2h0m0s"},
		},
		{
			name: "the top of the address space",
			in:   []decided{d("255.255.255.255/32", time.Hour)},
			want: []string{"255.255.255.255-255.255.255.255 +1h0m0s"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, g := range groupsOf(slices.Clone(tc.in)) {
				got = append(got, entriesText(g.entries))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// A sequence of decisions on one set, each planned and committed as Apply
// does: what goes out of the kernel and what goes in.
func TestSetViewPlansOnlyTheRegionADecisionTouches(t *testing.T) {
	type step struct {
		p      string
		after  time.Duration // 0: for good
		remove bool
		del    string
		add    string
	}
	steps := []step{
		{p: "203.0.113.7/32", after: time.Hour, add: "203.0.113.7-203.0.113.7 +1h0m0s"},
		{p: "203.0.113.9/32", after: time.Hour, add: "203.0.113.9-203.0.113.9 +1h0m0s"},
		// the same ban again changes nothing
		{p: "203.0.113.7/32", after: time.Hour},
		// a longer ban replaces the entry
		{p: "203.0.113.7/32", after: 2 * time.Hour, del: "203.0.113.7-203.0.113.7 +1h0m0s", add: "203.0.113.7-203.0.113.7 +2h0m0s"},
		// a network over both: one region, split around the longer ban,
		// whose entry stays as it is
		{p: "203.0.113.0/24", after: 90 * time.Minute,
			del: "203.0.113.9-203.0.113.9 +1h0m0s",
			add: "203.0.113.0-203.0.113.6 +1h30m0s, 203.0.113.8-203.0.113.255 +1h30m0s"},
		// lifting the network leaves the addresses
		{p: "203.0.113.0/24", remove: true,
			del: "203.0.113.0-203.0.113.6 +1h30m0s, 203.0.113.8-203.0.113.255 +1h30m0s",
			add: "203.0.113.9-203.0.113.9 +1h0m0s"},
		{p: "203.0.113.9/32", remove: true, del: "203.0.113.9-203.0.113.9 +1h0m0s"},
		// lifting what is not there changes nothing
		{p: "192.0.2.1/32", remove: true},
	}
	v := newSetView()
	for i, s := range steps {
		var until time.Time
		if s.after != 0 {
			until = t0.Add(s.after)
		}
		r := v.decide(netip.MustParsePrefix(s.p), until, s.remove)
		var c change
		v.planRegion(r, t0, &c)
		if got := entriesText(c.del); got != s.del {
			t.Errorf("step %d (%s): delete %q, want %q", i, s.p, got, s.del)
		}
		if got := entriesText(c.add); got != s.add {
			t.Errorf("step %d (%s): add %q, want %q", i, s.p, got, s.add)
		}
		v.commit(&c)
	}
	if v.entries != 1 || len(v.groups) != 1 {
		t.Errorf("view ends with %d entries in %d groups, want 1 in 1", v.entries, len(v.groups))
	}
}

func TestPlanAllKeepsWhatTheKernelHolds(t *testing.T) {
	v := newSetView()
	for _, x := range []decided{d("203.0.113.7/32", time.Hour), d("203.0.113.8/32", 2*time.Hour), d("203.0.113.9/32", -time.Minute)} {
		v.decide(x.p, x.until, false)
	}
	kernel := []entry{
		{lo: a("203.0.113.7"), hi: a("203.0.113.7"), until: t0.Add(time.Hour + 300*time.Millisecond)}, // within tolerance
		{lo: a("203.0.113.8"), hi: a("203.0.113.8"), until: t0.Add(time.Hour)},                        // end differs
		{lo: a("192.0.2.0"), hi: a("192.0.2.255")},                                                    // not decided
	}
	c := v.planAll(kernel, t0, time.Second)
	if got, want := entriesText(c.del), "203.0.113.8-203.0.113.8 +1h0m0s, 192.0.2.0-192.0.2.255 forever"; got != want {
		t.Errorf("delete %q, want %q", got, want)
	}
	// 203.0.113.9 has expired: nothing to add for it
	if got, want := entriesText(c.add), "203.0.113.8-203.0.113.8 +2h0m0s"; got != want {
		t.Errorf("add %q, want %q", got, want)
	}
}

func a(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestEntriesOfPairsIntervalElements(t *testing.T) {
	el := func(addr string, end bool, timeout, expires time.Duration) nftables.SetElement {
		return nftables.SetElement{Key: a(addr).AsSlice(), IntervalEnd: end, Timeout: timeout, Expires: expires}
	}
	// as the kernel lists them: highest first, with nft's end marker at 0
	elems := []nftables.SetElement{
		el("203.0.113.10", true, 0, 0),
		el("203.0.113.7", false, time.Hour, 59*time.Minute),
		el("198.51.101.0", true, 0, 0),
		el("198.51.100.0", false, 0, 0),
		el("0.0.0.0", true, 0, 0),
		el("255.255.255.0", false, 0, 0), // open to the top
	}
	got := entriesText(entriesOf(elems, t0))
	want := "198.51.100.0-198.51.100.255 forever, 203.0.113.7-203.0.113.9 +59m0s, 255.255.255.0-255.255.255.255 forever"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// and back: the same elements, without the stray end marker
	back := elements(nil, entriesOf(elems, t0), true, forAdd, t0)
	if len(back) != 5 || back[1].Timeout != 0 || back[2].Timeout != 59*time.Minute || !back[3].IntervalEnd {
		t.Errorf("elements %+v", back)
	}
}

func TestLastAddrAndRangePrefixes(t *testing.T) {
	for p, want := range map[string]string{
		"203.0.113.0/24":  "203.0.113.255",
		"203.0.113.7/32":  "203.0.113.7",
		"10.0.0.0/9":      "10.127.255.255",
		"0.0.0.0/0":       "255.255.255.255",
		"2001:db8::/64":   "2001:db8::ffff:ffff:ffff:ffff",
		"2001:db8::/29":   "2001:dbf:ffff:ffff:ffff:ffff:ffff:ffff",
		"2001:db8::1/128": "2001:db8::1",
	} {
		if got := lastAddr(netip.MustParsePrefix(p)).String(); got != want {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, want)
		}
	}
	for r, want := range map[[2]string]string{
		{"203.0.113.0", "203.0.113.255"}:       "203.0.113.0/24",
		{"203.0.113.7", "203.0.113.9"}:         "203.0.113.7/32 203.0.113.8/31",
		{"0.0.0.0", "255.255.255.255"}:         "0.0.0.0/0",
		{"255.255.255.254", "255.255.255.255"}: "255.255.255.254/31",
		{"2001:db8::", "2001:db8::2"}:          "2001:db8::/127 2001:db8::2/128",
	} {
		var got []string
		for _, p := range rangePrefixes(a(r[0]), a(r[1])) {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != want {
			t.Errorf("rangePrefixes(%s, %s) = %v, want %s", r[0], r[1], got, want)
		}
	}
}

func TestCeilMillis(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{
		time.Hour:                    time.Hour,
		time.Hour - time.Microsecond: time.Hour,
		time.Nanosecond:              time.Millisecond,
		-time.Second:                 time.Millisecond,
	} {
		if got := ceilMillis(in); got != want {
			t.Errorf("ceilMillis(%s) = %s, want %s", in, got, want)
		}
	}
}
