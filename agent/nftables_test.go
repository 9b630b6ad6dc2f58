package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/internal/netnstest"
	"github.com/mailban/mailban/rules"
)

// nftablesConfig writes a configuration that follows dir/mail.log and
// bans through the nftables enforcer; extra is added under
// enforcers.nftables.
func nftablesConfig(t testing.TB, dir, extra string, blocked ...string) *config.Config {
	t.Helper()
	log := filepath.Join(dir, "mail.log")
	if _, err := os.Stat(log); os.IsNotExist(err) {
		if err := os.WriteFile(log, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	yaml := fmt.Sprintf(`
state: {path: %s/state.db}
control: {socket: ""}
rules:
  ip: {threshold: "3/1h"}
allowlist: {host-addresses: false}
blocked-networks: [%s]
sources:
  - {name: mail, paths: [%s], formats: [postfix], start-at: beginning}
enforcers:
  nftables:
%s
metrics: {listen: ""}
`, dir, strings.Join(blocked, ", "), log, extra)
	return writeConfig(t, dir, yaml)
}

// failureLine is a Postfix SASL failure from addr, stamped now. Each
// address tries a login of its own, so that no login gets locked (a lock
// bans at the first failure).
func failureLine(addr netip.Addr) string {
	return fmt.Sprintf("%s mx postfix/smtpd[1]: warning: unknown[%s]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=user-%s\n",
		time.Now().Format(time.RFC3339), addr, addr)
}

func appendLines(t testing.TB, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(lines, "")); err != nil {
		t.Fatal(err)
	}
}

// setHolds lists the start addresses of a kernel set's intervals.
func setHolds(t testing.TB, ns *netnstest.NS, set string) map[netip.Addr]bool {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(&nftables.Set{Table: &nftables.Table{Family: nftables.TableFamilyINet, Name: "mailban"}, Name: set})
	if err != nil {
		return nil
	}
	out := map[netip.Addr]bool{}
	for _, el := range elems {
		if a, ok := netip.AddrFromSlice(el.Key); ok && !el.IntervalEnd {
			out[a] = true
		}
	}
	return out
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runAgent(t testing.TB, a *Agent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// The configuration's nftables block is built into an enforcer: a failing
// line's address ends up in the kernel, blocked networks are there from
// the start, and after a restart the ban is still there.
func TestNftablesEnforcerFromConfig(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	cfg := nftablesConfig(t, dir, "    netns: "+ns.Path, "198.51.100.0/24")
	a, err := New(cfg, Options{HostAddresses: noHostAddresses})
	if err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	attacker := netip.MustParseAddr("203.0.113.7")
	appendLines(t, filepath.Join(dir, "mail.log"), failureLine(attacker), failureLine(attacker), failureLine(attacker))
	waitUntil(t, "203.0.113.7 in ban4", func() bool { return setHolds(t, ns, "ban4")[attacker] })
	if !setHolds(t, ns, "block4")[netip.MustParseAddr("198.51.100.0")] {
		t.Error("the blocked network is not in block4")
	}
	stop()
	if !setHolds(t, ns, "ban4")[attacker] {
		t.Fatal("the ban went away when mailban stopped")
	}

	a, err = New(cfg, Options{HostAddresses: noHostAddresses})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, a)
	waitUntil(t, "the restarted agent reconciles", func() bool {
		return metricValue(t, a.Registry(), "mailban_enforcer_in_sync") == 1
	})
	if !setHolds(t, ns, "ban4")[attacker] {
		t.Error("the ban is gone after a restart")
	}
}

// A reload with other chain settings changes the chains and keeps the bans.
func TestNftablesReload(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	a, err := New(nftablesConfig(t, dir, "    netns: "+ns.Path), Options{HostAddresses: noHostAddresses})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, a)
	attacker := netip.MustParseAddr("203.0.113.9")
	appendLines(t, filepath.Join(dir, "mail.log"), failureLine(attacker), failureLine(attacker), failureLine(attacker))
	waitUntil(t, "203.0.113.9 in ban4", func() bool { return setHolds(t, ns, "ban4")[attacker] })

	next := nftablesConfig(t, dir, "    netns: "+ns.Path+"\n    forward: true\n    priority: -200")
	if err := a.Reload(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	out := ns.MustExec(t, "nft", "list", "chains", "inet")
	if !strings.Contains(out, "chain forward") || !strings.Contains(out, "hook input priority -200") {
		t.Errorf("chains after reload:\n%s", out)
	}
	if !setHolds(t, ns, "ban4")[attacker] {
		t.Error("the ban is gone after the reload")
	}
}

// When nftables cannot be used (here: its namespace does not exist),
// mailban refuses to start unless the configuration says it may run on
// without it; then everything else works.
func TestNftablesUnavailable(t *testing.T) {
	dir := t.TempDir()
	missing := "    netns: /run/netns/mailban-test-no-such-namespace"
	_, err := New(nftablesConfig(t, dir, missing), Options{HostAddresses: noHostAddresses})
	if err == nil || !strings.Contains(err.Error(), "nftables") || !strings.Contains(err.Error(), "required: false") {
		t.Fatalf("New with nftables unusable: %v, want an error naming nftables and the way out", err)
	}

	rec := newRecorder()
	reg := prometheus.NewRegistry()
	a, err := New(nftablesConfig(t, dir, missing+"\n    required: false"), Options{HostAddresses: noHostAddresses, Enforcers: []Enforcer{rec}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if got := a.enforcerNames(); strings.Join(got, ",") != "recorder" {
		t.Errorf("enforcers %v, want the recorder alone", got)
	}
	if n := metricValue(t, reg, "mailban_enforcer_errors_total"); n != 1 {
		t.Errorf("enforcer errors %v, want 1", n)
	}
	runAgent(t, a)
	attacker := netip.MustParseAddr("203.0.113.8")
	appendLines(t, filepath.Join(dir, "mail.log"), failureLine(attacker), failureLine(attacker), failureLine(attacker))
	if d := rec.waitFor(t, 1)[0]; d.Action != rules.Ban || d.Prefix.Addr() != attacker {
		t.Errorf("decision %+v, want a ban of %s", d, attacker)
	}
}

// metricValue is the value of the first series of a counter or gauge; -1
// when it is not there.
func metricValue(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return -1
}
