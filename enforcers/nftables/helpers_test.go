package nftables

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailban/mailban/internal/netnstest"
	"github.com/mailban/mailban/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fakeClock is a clock tests set by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// harness is an enforcer in a namespace of the test's own.
type harness struct {
	t     *testing.T
	ns    *netnstest.NS
	clock *fakeClock
	reg   *prometheus.Registry
}

func newHarness(t *testing.T, ns *netnstest.NS) *harness {
	t.Helper()
	if ns == nil {
		ns = netnstest.New(t)
	}
	// The kernel's timers run on real time: the fake clock starts at
	// the real now, so that decided ends and kernel timeouts agree.
	return &harness{t: t, ns: ns, clock: &fakeClock{now: time.Now()}, reg: prometheus.NewRegistry()}
}

func (h *harness) config() Config {
	cfg := DefaultConfig()
	cfg.NetNS = h.ns.Path
	cfg.Clock = h.clock
	cfg.RetryInterval = 20 * time.Millisecond
	return cfg
}

func (h *harness) start(cfg Config) *Enforcer {
	h.t.Helper()
	e, err := New(cfg, testLogger(h.t), h.reg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { e.Close() })
	return e
}

func (h *harness) reconcile(e *Enforcer, active ...rules.Decision) {
	h.t.Helper()
	if err := e.Reconcile(context.Background(), active); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) apply(e *Enforcer, ds ...rules.Decision) {
	h.t.Helper()
	if err := e.Apply(context.Background(), ds); err != nil {
		h.t.Fatal(err)
	}
}

// metric is the value of a collector holding one counter or gauge.
func (h *harness) metric(c prometheus.Collector) float64 {
	h.t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	close(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		h.t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	h.t.Fatalf("metric %v is neither counter nor gauge", m.String())
	return 0
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func ban(prefix string, until time.Time) rules.Decision {
	return rules.Decision{Action: rules.Ban, Prefix: netip.MustParsePrefix(prefix), Until: until}
}

func unban(prefix string) rules.Decision {
	return rules.Decision{Action: rules.Unban, Prefix: netip.MustParsePrefix(prefix)}
}

func block(prefix string) rules.Decision {
	return rules.Decision{Action: rules.Block, Prefix: netip.MustParsePrefix(prefix)}
}

func unblock(prefix string) rules.Decision {
	return rules.Decision{Action: rules.Unblock, Prefix: netip.MustParsePrefix(prefix)}
}

// nftElem is one set element as `nft -j` shows it: an address, a prefix
// (a/n) or a range (a-b), and for timed elements the timeout and the time
// left, in whole seconds.
type nftElem struct {
	Val     string
	Timeout int
	Expires int
}

func (e nftElem) String() string {
	if e.Timeout == 0 {
		return e.Val
	}
	return fmt.Sprintf("%s timeout %ds", e.Val, e.Timeout)
}

type nftSet struct {
	Type  string
	Flags []string
	Elems []nftElem
}

type nftChain struct {
	Type, Hook, Policy string
	Prio               int
}

// nftTable is a table as `nft -j list table` shows it.
type nftTable struct {
	Sets   map[string]nftSet
	Chains map[string]nftChain
	Rules  int
}

// listTable reads a table with `nft -j list table FAMILY NAME`; nil when
// there is no such table.
func listTable(t *testing.T, ns *netnstest.NS, family, name string) *nftTable {
	t.Helper()
	out, err := ns.Exec("nft", "-j", "list", "table", family, name)
	if err != nil {
		if strings.Contains(out, "No such file or directory") {
			return nil
		}
		t.Fatal(err)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j output: %v\n%s", err, out)
	}
	tab := &nftTable{Sets: map[string]nftSet{}, Chains: map[string]nftChain{}}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["set"]; ok {
			var s struct {
				Name  string            `json:"name"`
				Type  string            `json:"type"`
				Flags []string          `json:"flags"`
				Elem  []json.RawMessage `json:"elem"`
			}
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatal(err)
			}
			set := nftSet{Type: s.Type, Flags: s.Flags}
			for _, el := range s.Elem {
				set.Elems = append(set.Elems, parseElem(t, el))
			}
			tab.Sets[s.Name] = set
		}
		if raw, ok := obj["chain"]; ok {
			var c struct {
				Name   string `json:"name"`
				Type   string `json:"type"`
				Hook   string `json:"hook"`
				Prio   int    `json:"prio"`
				Policy string `json:"policy"`
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			tab.Chains[c.Name] = nftChain{Type: c.Type, Hook: c.Hook, Prio: c.Prio, Policy: c.Policy}
		}
		if _, ok := obj["rule"]; ok {
			tab.Rules++
		}
	}
	return tab
}

func parseElem(t *testing.T, raw json.RawMessage) nftElem {
	t.Helper()
	var wrapped struct {
		Elem *struct {
			Val     json.RawMessage `json:"val"`
			Timeout int             `json:"timeout"`
			Expires int             `json:"expires"`
		} `json:"elem"`
	}
	if err := json.Unmarshal(raw, &wrapped); err == nil && wrapped.Elem != nil {
		return nftElem{Val: parseVal(t, wrapped.Elem.Val), Timeout: wrapped.Elem.Timeout, Expires: wrapped.Elem.Expires}
	}
	return nftElem{Val: parseVal(t, raw)}
}

func parseVal(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var v struct {
		Prefix *struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
		Range []string `json:"range"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("element %s: %v", raw, err)
	}
	switch {
	case v.Prefix != nil:
		return fmt.Sprintf("%s/%d", v.Prefix.Addr, v.Prefix.Len)
	case len(v.Range) == 2:
		return v.Range[0] + "-" + v.Range[1]
	}
	t.Fatalf("element %s: unknown shape", raw)
	return ""
}

// elems lists a set's elements as text, sorted: "192.0.2.7 timeout 3600s".
func (tab *nftTable) elems(set string) []string {
	var out []string
	for _, e := range tab.Sets[set].Elems {
		out = append(out, e.String())
	}
	slices.Sort(out)
	return out
}

// kernelTimeouts reads a set over netlink, for its elements' timeouts to
// the millisecond (nft shows whole seconds): start address → timeout.
func kernelTimeouts(t *testing.T, ns *netnstest.NS, table, set string) map[string]time.Duration {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: table}, set)
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Duration{}
	for _, el := range elems {
		if el.IntervalEnd {
			continue
		}
		a, _ := netip.AddrFromSlice(el.Key)
		out[a.String()] = el.Timeout
	}
	return out
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update if the change is meant):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// waitFor polls cond until it holds, for kernel timers and the retry loop,
// failing after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
