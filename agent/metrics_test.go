package agent

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/control"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The metrics a running agent exposes pass client_golang's linter, and
// their names, types, labels and help are pinned by testdata/metrics.golden,
// which dashboards and alerts (examples/grafana) are checked against. None
// has a label that could hold an address or a login.
func TestMetricsAreLintedAndPinned(t *testing.T) {
	dir, err := os.MkdirTemp("", "mbmet") // short: the control socket's path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	logPath := filepath.Join(dir, "mail.log")
	yaml := fmt.Sprintf(`
state: {path: %[1]s/state.db, checkpoint-interval: 50ms}
rules:
  ip: {threshold: "2/10m"}
allowlist: {host-addresses: false}
sources:
  - {name: mail, paths: [%[1]s/mail.log], start-at: beginning}
  - {name: stalwart, type: webhook, listen: "127.0.0.1:0"}
enforcers:
  log: {}
  hook:
    native: {listen: [%[1]s/hook.sock]}
metrics: {listen: ""}
control: {socket: %[1]s/ctl.sock}
# Redis is not there (a closed port): the fleet's series exist all the same,
# and this host counts alone.
fleet:
  host: mx1
  redis: {address: %[2]q, timeout: 100ms}
`, dir, freePort(t))
	cfgPath := filepath.Join(dir, "mailban.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	rec := newRecorder()
	a, err := New(cfg, Options{Registry: reg, Enforcers: []Enforcer{rec}, HostAddresses: noHostAddresses, Version: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	<-a.Ready()

	line := time.Now().UTC().Format(time.RFC3339) + " mx postfix/smtpd[1]: warning: unknown[203.0.113.9]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=alice\n"
	if err := os.WriteFile(logPath, []byte(line+line), 0o644); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 1)
	c := control.NewClient(filepath.Join(dir, "ctl.sock"))
	defer c.Close()
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReloadFile(ctx, cfgPath); err != nil {
		t.Fatal(err)
	}
	// A checkpoint has written the state file's size.
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(a.m.stateSize) == 0 && time.Now().Before(deadline) {
		if err := a.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
				if strings.Contains(l.GetValue(), "203.0.113.9") || strings.Contains(l.GetValue(), "alice") {
					t.Errorf("%s has a label holding an address or login: %s=%q", mf.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
		names := make([]string, 0, len(labels))
		for l := range labels {
			names = append(names, l)
		}
		slices.Sort(names)
		help := mf.GetHelp()
		if !strings.HasSuffix(help, ".") || len(help) < 10 {
			t.Errorf("%s: help %q is not a sentence", mf.GetName(), help)
		}
		fmt.Fprintf(&b, "%s %s {%s} %s\n", mf.GetName(), strings.ToLower(mf.GetType().String()), strings.Join(names, ","), help)
	}
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("metrics differ from %s (go test -update rewrites it; then check examples/grafana)\ngot:\n%s\nwant:\n%s", golden, b.Bytes(), want)
	}
}
