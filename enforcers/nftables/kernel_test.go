package nftables

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/rules"
)

// The table, as `nft list table` prints it, is what an operator sees:
// pinned by golden files for the default and a fully configured layout.
func TestTableLayout(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
	}{
		{name: "default", edit: func(*Config) {}},
		{name: "forward-mail-ports", edit: func(c *Config) {
			c.Priority = -150
			c.Forward = true
			c.MailPortsOnly = true
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			cfg := h.config()
			tc.edit(&cfg)
			e := h.start(cfg)
			h.reconcile(e)
			golden(t, "layout-"+tc.name+".nft", h.ns.MustExec(t, "nft", "list", "table", "inet", "mailban"))
		})
	}
}

func TestKernelHoldsBansAndBlocks(t *testing.T) {
	h := newHarness(t, nil)
	e := h.start(h.config())
	now := h.clock.Now()
	h.reconcile(e,
		ban("203.0.113.7/32", now.Add(time.Hour)),
		ban("2001:db8:7::/64", now.Add(90*time.Minute)),
		ban("203.0.113.9/32", time.Time{}), // permanent
		block("198.51.100.0/24"),
		block("2001:db8:bad::/48"),
		rules.Decision{Action: rules.Lock, Login: "alice", Until: now.Add(time.Hour)}, // not for a firewall
	)
	tab := listTable(t, h.ns, "inet", "mailban")
	want := map[string][]string{
		"ban4":   {"203.0.113.7 timeout 3600s", "203.0.113.9"},
		"ban6":   {"2001:db8:7::/64 timeout 5400s"},
		"block4": {"198.51.100.0/24"},
		"block6": {"2001:db8:bad::/48"},
	}
	for set, w := range want {
		if got := tab.elems(set); !slices.Equal(got, w) {
			t.Errorf("set %s holds %q, want %q", set, got, w)
		}
	}
	for _, el := range tab.Sets["ban4"].Elems {
		if el.Timeout != 0 && (el.Expires > el.Timeout || el.Expires < el.Timeout-5) {
			t.Errorf("%s: expires in %ds of %ds", el.Val, el.Expires, el.Timeout)
		}
	}
	wantFlags := map[string][]string{"ban4": {"interval", "timeout"}, "ban6": {"interval", "timeout"}, "block4": {"interval"}, "block6": {"interval"}}
	for set, w := range wantFlags {
		if got := tab.Sets[set].Flags; !slices.Equal(got, w) {
			t.Errorf("set %s has flags %q, want %q", set, got, w)
		}
	}
	if got := h.metric(e.m.elements.WithLabelValues("ban4")); got != 2 {
		t.Errorf("ban4 gauge %v, want 2", got)
	}
}

var _ = regexp.MustCompile
var _ = strings.Contains
