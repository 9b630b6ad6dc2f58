package nftables

import (
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/mailban/mailban/internal/netnstest"
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
	// The enforcer's own series pass client_golang's linter.
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// The kernel lets a ban go at its end by itself; the unban the rules send
// when they notice is then a no-op that must not fail the batch.
func TestExpiryAndUnban(t *testing.T) {
	h := newHarness(t, nil)
	e := h.start(h.config())
	h.reconcile(e)
	now := h.clock.Now()
	h.apply(e,
		ban("203.0.113.7/32", now.Add(time.Second)),
		ban("203.0.113.8/32", now.Add(time.Hour)),
		ban("2001:db8:7::/64", now.Add(time.Hour)))
	if got, want := listTable(t, h.ns, "inet", "mailban").elems("ban4"), []string{"203.0.113.7 timeout 1s", "203.0.113.8 timeout 3600s"}; !slices.Equal(got, want) {
		t.Fatalf("ban4 holds %q, want %q", got, want)
	}
	waitFor(t, "the kernel expires 203.0.113.7", func() bool {
		return slices.Equal(listTable(t, h.ns, "inet", "mailban").elems("ban4"), []string{"203.0.113.8 timeout 3600s"})
	})

	h.clock.Set(now.Add(5 * time.Second))
	h.apply(e, unban("203.0.113.7/32"))
	h.apply(e, unban("203.0.113.8/32"), unban("2001:db8:7::/64"))
	tab := listTable(t, h.ns, "inet", "mailban")
	if got := append(tab.elems("ban4"), tab.elems("ban6")...); len(got) != 0 {
		t.Errorf("after unban the sets hold %q", got)
	}
	if n := h.metric(e.m.flushErrors); n != 0 {
		t.Errorf("%v failed flushes", n)
	}
	// Unbanning again, and unbanning what was never banned, is harmless.
	h.apply(e, unban("203.0.113.8/32"), unban("192.0.2.99/32"))
	if n := h.metric(e.m.flushErrors); n != 0 {
		t.Errorf("%v failed flushes", n)
	}
}

// A reload builds a new enforcer on the same table: the chains change,
// the elements stay as they are (not re-added: their timeouts would be
// shorter by the time that has passed).
func TestReloadKeepsElements(t *testing.T) {
	h := newHarness(t, nil)
	first := h.start(h.config())
	now := h.clock.Now()
	active := []rules.Decision{ban("203.0.113.7/32", now.Add(time.Hour)), ban("2001:db8:7::/64", now.Add(2*time.Hour)), block("198.51.100.0/24")}
	h.reconcile(first, active...)
	before4 := kernelTimeouts(t, h.ns, "mailban", "ban4")
	before6 := kernelTimeouts(t, h.ns, "mailban", "ban6")

	h.clock.Set(now.Add(300 * time.Millisecond))
	cfg := h.config()
	cfg.Priority, cfg.Forward, cfg.MailPortsOnly = -150, true, true
	second := h.start(cfg)
	first.Close()
	h.reconcile(second, active...)

	tab := listTable(t, h.ns, "inet", "mailban")
	if got, want := tab.Chains["input"], (nftChain{Type: "filter", Hook: "input", Prio: -150, Policy: "accept"}); got != want {
		t.Errorf("input chain %+v, want %+v", got, want)
	}
	if _, ok := tab.Chains["forward"]; !ok || tab.Rules != 12 {
		t.Errorf("chains %v with %d rules, want input and forward with 6 each", tab.Chains, tab.Rules)
	}
	if got := kernelTimeouts(t, h.ns, "mailban", "ban4"); !maps.Equal(got, before4) {
		t.Errorf("ban4 timeouts %v, were %v", got, before4)
	}
	if got := kernelTimeouts(t, h.ns, "mailban", "ban6"); !maps.Equal(got, before6) {
		t.Errorf("ban6 timeouts %v, were %v", got, before6)
	}
	if got := tab.elems("block4"); !slices.Equal(got, []string{"198.51.100.0/24"}) {
		t.Errorf("block4 holds %q", got)
	}

	// and back: the forward chain goes
	third := h.start(h.config())
	second.Close()
	h.reconcile(third, active...)
	tab = listTable(t, h.ns, "inet", "mailban")
	if _, ok := tab.Chains["forward"]; ok || tab.Rules != 4 || tab.Chains["input"].Prio != -10 {
		t.Errorf("chains %v with %d rules, want input alone at -10 with 4", tab.Chains, tab.Rules)
	}
}

// Bans stay in the kernel while mailban is stopped; at the next start the
// sets are made to match the state: what the kernel lacks is added, what
// the state no longer has is removed, what is right is left alone.
func TestRestartReconciles(t *testing.T) {
	h := newHarness(t, nil)
	now := h.clock.Now()
	first := h.start(h.config())
	h.reconcile(first,
		ban("203.0.113.7/32", now.Add(time.Hour)),
		ban("203.0.113.8/32", now.Add(time.Hour)),
		ban("203.0.113.9/32", now.Add(time.Hour)),
		block("198.51.100.0/24"))
	kept := kernelTimeouts(t, h.ns, "mailban", "ban4")["203.0.113.7"]
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if got := listTable(t, h.ns, "inet", "mailban").elems("ban4"); len(got) != 3 {
		t.Fatalf("after Close ban4 holds %q, want the 3 bans", got)
	}
	// While mailban is down, someone edits the sets.
	h.ns.MustExec(t, "nft", "delete element inet mailban ban4 { 203.0.113.8 }")
	h.ns.MustExec(t, "nft", "add element inet mailban ban4 { 203.0.113.99 timeout 1h }")
	h.ns.MustExec(t, "nft", "add element inet mailban block4 { 192.0.2.128/25 }")

	later := now.Add(200 * time.Millisecond)
	h.clock.Set(later)
	second := h.start(h.config())
	h.reconcile(second,
		ban("203.0.113.7/32", now.Add(time.Hour)),     // unchanged
		ban("203.0.113.9/32", later.Add(2*time.Hour)), // extended
		ban("203.0.113.10/32", later.Add(time.Hour)),  // new
		block("198.51.100.0/24"))
	tab := listTable(t, h.ns, "inet", "mailban")
	want4 := []string{"203.0.113.10 timeout 3600s", "203.0.113.7 timeout 3600s", "203.0.113.9 timeout 7200s"}
	if got := tab.elems("ban4"); !slices.Equal(got, want4) {
		t.Errorf("ban4 holds %q, want %q", got, want4)
	}
	if got := tab.elems("block4"); !slices.Equal(got, []string{"198.51.100.0/24"}) {
		t.Errorf("block4 holds %q", got)
	}
	if got := kernelTimeouts(t, h.ns, "mailban", "ban4")["203.0.113.7"]; got != kept {
		t.Errorf("203.0.113.7 was re-added (timeout %s, was %s)", got, kept)
	}
}

// mailban owns one table; other tables, including one of the same name in
// another family, are never touched, not even by Remove.
func TestForeignTablesUntouched(t *testing.T) {
	h := newHarness(t, nil)
	rulesetFile := filepath.Join(t.TempDir(), "foreign.nft")
	foreign := `table inet filter {
	set admins { type ipv4_addr; flags interval; elements = { 192.0.2.0/28 } }
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr @admins tcp dport 22 accept
	}
}
table ip mailban {
	set ban4 { type ipv4_addr; elements = { 203.0.113.7 } }
	chain input { type filter hook input priority -20; policy accept; }
}
`
	if err := os.WriteFile(rulesetFile, []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	h.ns.MustExec(t, "nft", "-f", rulesetFile)
	snapshot := func() string {
		return h.ns.MustExec(t, "nft", "list", "table", "inet", "filter") + h.ns.MustExec(t, "nft", "list", "table", "ip", "mailban")
	}
	before := snapshot()

	e := h.start(h.config())
	now := h.clock.Now()
	h.reconcile(e, ban("203.0.113.7/32", now.Add(time.Hour)), block("198.51.100.0/24"))
	h.apply(e, ban("203.0.113.8/32", now.Add(time.Hour)), unban("203.0.113.7/32"))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(); after != before {
		t.Errorf("foreign tables changed:\n%s\nwere:\n%s", after, before)
	}

	cfg := h.config()
	r, err := Remove(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Existed || r.Entries["ban4"] != 1 || r.Entries["block4"] != 1 {
		t.Errorf("Remove found %+v, want ban4 1 and block4 1", r)
	}
	if listTable(t, h.ns, "inet", "mailban") != nil {
		t.Error("inet mailban is still there after Remove")
	}
	if after := snapshot(); after != before {
		t.Errorf("Remove changed foreign tables:\n%s\nwere:\n%s", after, before)
	}
	if r, err := Remove(cfg); err != nil || r.Existed {
		t.Errorf("second Remove: %+v, %v; want nothing found", r, err)
	}
}

// Another firewall's reload (nft flush ruleset, iptables-restore) takes our
// table away: the next update fails, is counted, and is retried at once
// after reading the kernel, which recreates the table with every ban.
func TestRecoversFromFlushedRuleset(t *testing.T) {
	h := newHarness(t, nil)
	e := h.start(h.config())
	now := h.clock.Now()
	h.reconcile(e, ban("203.0.113.7/32", now.Add(time.Hour)), block("198.51.100.0/24"))
	h.ns.MustExec(t, "nft", "flush", "ruleset") // inside the test's namespace
	h.apply(e, ban("203.0.113.8/32", now.Add(time.Hour)))
	tab := listTable(t, h.ns, "inet", "mailban")
	if got, want := tab.elems("ban4"), []string{"203.0.113.7 timeout 3600s", "203.0.113.8 timeout 3600s"}; !slices.Equal(got, want) {
		t.Errorf("ban4 holds %q, want %q", got, want)
	}
	if got := tab.elems("block4"); !slices.Equal(got, []string{"198.51.100.0/24"}) {
		t.Errorf("block4 holds %q", got)
	}
	if n := h.metric(e.m.flushErrors); n != 1 {
		t.Errorf("%v failed flushes counted, want 1", n)
	}
	if h.metric(e.m.inSync) != 1 {
		t.Error("not in sync")
	}
}

// An element someone put in our set that overlaps a new ban makes the
// kernel refuse the batch; the retry removes it.
func TestRecoversFromForeignElement(t *testing.T) {
	h := newHarness(t, nil)
	e := h.start(h.config())
	now := h.clock.Now()
	h.reconcile(e)
	h.ns.MustExec(t, "nft", "add element inet mailban ban4 { 203.0.113.0/24 }")
	h.apply(e, ban("203.0.113.7/32", now.Add(time.Hour)))
	if got, want := listTable(t, h.ns, "inet", "mailban").elems("ban4"), []string{"203.0.113.7 timeout 3600s"}; !slices.Equal(got, want) {
		t.Errorf("ban4 holds %q, want %q", got, want)
	}
	if n := h.metric(e.m.flushErrors); n != 1 {
		t.Errorf("%v failed flushes counted, want 1", n)
	}
}

// While the table belongs to another program (the nftables owner flag),
// every attempt fails: Apply says why, the retry loop keeps trying, and
// once the table is free again the bans are all there.
func TestRetriesUntilTheTableIsFree(t *testing.T) {
	h := newHarness(t, nil)
	e := h.start(h.config())
	now := h.clock.Now()
	h.reconcile(e, ban("203.0.113.7/32", now.Add(time.Hour)))

	h.ns.MustExec(t, "nft", "delete", "table", "inet", "mailban")
	owner := exec.Command("ip", "netns", "exec", h.ns.Name, "nft", "-i")
	stdin, err := owner.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); owner.Wait() })
	if _, err := io.WriteString(stdin, "add table inet mailban { flags owner; }\n"); err != nil {
		t.Fatal(err)
	}
	// (nft 1.0.6 cannot write an owned table as JSON: ask for text.)
	waitFor(t, "nft -i creates its table", func() bool {
		return strings.Contains(h.ns.MustExec(t, "nft", "list", "tables"), "table inet mailban")
	})

	err = e.Apply(context.Background(), []rules.Decision{ban("203.0.113.8/32", now.Add(time.Hour))})
	if !errors.Is(err, ErrTableOwned) {
		t.Fatalf("Apply: %v, want ErrTableOwned", err)
	}
	waitFor(t, "the retry loop tries again", func() bool { return h.metric(e.m.resyncs) >= 4 })
	if h.metric(e.m.inSync) != 0 {
		t.Error("in sync while the table is another program's")
	}

	stdin.Close() // nft exits; its table goes with it
	if err := owner.Wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retry loop brings the table back", func() bool { return h.metric(e.m.inSync) == 1 })
	if got, want := listTable(t, h.ns, "inet", "mailban").elems("ban4"), []string{"203.0.113.7 timeout 3600s", "203.0.113.8 timeout 3600s"}; !slices.Equal(got, want) {
		t.Errorf("ban4 holds %q, want %q", got, want)
	}
}

// Without CAP_NET_ADMIN New fails with an error that says so. The
// capability is dropped on one locked thread only, which then ends; New
// only reads, so it runs in the host's namespace.
func TestNewWithoutCapNetAdmin(t *testing.T) {
	netnstest.Require(t)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		data[0].Permitted &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		_, err := New(Config{}, nil, nil)
		errc <- err
	}()
	err := <-errc
	if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("New without CAP_NET_ADMIN: %v", err)
	}
	t.Log(err)
}

func TestNewInMissingNamespace(t *testing.T) {
	_, err := New(Config{NetNS: "/run/netns/mailban-no-such-namespace"}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "open network namespace") {
		t.Fatalf("New: %v", err)
	}
}

// A table of our name that is not as we make it (an older mailban, a hand
// edit) is repaired in one transaction: sets of the wrong kind are
// replaced, strangers in the table removed, sets that are right keep
// their elements.
func TestRepairsTheTable(t *testing.T) {
	h := newHarness(t, nil)
	file := filepath.Join(t.TempDir(), "old.nft")
	old := `table inet mailban {
	set ban4 { type ipv4_addr; elements = { 203.0.113.66 } }
	set block4 { type ipv4_addr; flags interval; elements = { 198.51.100.0/24 } }
	set junk { type inet_service; elements = { 22 } }
	chain helper { tcp dport @junk accept; }
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr @ban4 drop
		jump helper
	}
	chain output { type filter hook output priority 0; policy accept; }
}
`
	if err := os.WriteFile(file, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	h.ns.MustExec(t, "nft", "-f", file)
	e := h.start(h.config())
	now := h.clock.Now()
	h.reconcile(e, ban("203.0.113.7/32", now.Add(time.Hour)), block("198.51.100.0/24"))
	tab := listTable(t, h.ns, "inet", "mailban")
	if len(tab.Sets) != 4 || len(tab.Chains) != 1 || tab.Rules != 4 {
		t.Errorf("sets %v, chains %v, %d rules; want our 4 sets, the input chain and its 4 rules", tab.Sets, tab.Chains, tab.Rules)
	}
	if got := tab.elems("ban4"); !slices.Equal(got, []string{"203.0.113.7 timeout 3600s"}) {
		t.Errorf("ban4 holds %q", got)
	}
	if got := tab.elems("block4"); !slices.Equal(got, []string{"198.51.100.0/24"}) {
		t.Errorf("block4 holds %q", got)
	}
	if got := tab.Chains["input"]; got.Prio != -10 {
		t.Errorf("input chain %+v, want priority -10", got)
	}
}

// An enforcer given decisions before it was told what is in force keeps
// what the kernel holds and applies them on top.
func TestApplyBeforeReconcileKeepsTheKernel(t *testing.T) {
	h := newHarness(t, nil)
	now := h.clock.Now()
	first := h.start(h.config())
	h.reconcile(first, ban("203.0.113.7/32", now.Add(time.Hour)), block("198.51.100.0/24"))
	first.Close()

	second := h.start(h.config())
	h.apply(second, ban("203.0.113.8/32", now.Add(time.Hour)), unblock("198.51.100.0/24"))
	tab := listTable(t, h.ns, "inet", "mailban")
	if got, want := tab.elems("ban4"), []string{"203.0.113.7 timeout 3600s", "203.0.113.8 timeout 3600s"}; !slices.Equal(got, want) {
		t.Errorf("ban4 holds %q, want %q", got, want)
	}
	if got := tab.elems("block4"); len(got) != 0 {
		t.Errorf("block4 holds %q after the unblock", got)
	}
}
