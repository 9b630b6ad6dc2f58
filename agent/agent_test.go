package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// recorder is an Enforcer that remembers what it was told.
type recorder struct {
	mu         sync.Mutex
	decisions  []rules.Decision
	active     []rules.Decision
	reconciled int // calls of Reconcile
	changed    chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 100)} }

func (r *recorder) Name() string { return "recorder" }

func (r *recorder) Apply(_ context.Context, batch []rules.Decision) error {
	r.mu.Lock()
	r.decisions = append(r.decisions, batch...)
	r.mu.Unlock()
	r.changed <- struct{}{}
	return nil
}

func (r *recorder) Reconcile(_ context.Context, active []rules.Decision) error {
	r.mu.Lock()
	r.active = active
	r.reconciled++
	r.mu.Unlock()
	return nil
}

// waitFor waits until the recorder holds n decisions and returns them.
func (r *recorder) waitFor(t *testing.T, n int) []rules.Decision {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		got := append([]rules.Decision(nil), r.decisions...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("%d decisions after 10s, want %d: %v", len(got), n, got)
		}
	}
}

func testConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf(`
state: {path: %s/state.db, checkpoint-interval: 50ms}
rules:
  ip: {threshold: "3/10m"}
allowlist: {host-addresses: false}
metrics: {listen: ""}
control: {socket: ""}
`, dir)
	return writeConfig(t, dir, yaml)
}

func noHostAddresses() ([]netip.Prefix, error) { return nil, nil }

// writeConfig writes yaml as dir/mailban.yaml and loads it, as the daemon
// would (relative paths are relative to dir).
func writeConfig(t testing.TB, dir, yaml string) *config.Config {
	t.Helper()
	path := filepath.Join(dir, "mailban.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Reported events (from a hook protocol, not a log) go through the same
// rules and enforcers as parsed lines, and survive a restart.
func TestReportedEventsAreCountedAndKept(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	rec := newRecorder()
	a, err := New(cfg, Options{Enforcers: []Enforcer{rec}, HostAddresses: noHostAddresses})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	addr := netip.MustParseAddr("203.0.113.50")
	fail := parsers.Event{Time: time.Now(), Kind: parsers.AuthFailure, Service: parsers.ServiceIMAP,
		Addr: addr, Login: "alice", Attempts: 1, Format: "dovecot-policy", Evidence: "report from the hook"}
	for range 2 {
		if err := a.Report(ctx, "hook", fail); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(rec.decisions) != 0 {
		t.Fatalf("decisions after two failures: %v", rec.decisions)
	}

	// After a restart the two failures are remembered: the third bans.
	rec = newRecorder()
	a, err = New(cfg, Options{Enforcers: []Enforcer{rec}, HostAddresses: noHostAddresses})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- a.Run(ctx) }()
	if err := a.Report(ctx, "hook", fail); err != nil {
		t.Fatal(err)
	}
	got := rec.waitFor(t, 1)
	if got[0].Action != rules.Ban || got[0].Prefix != netip.PrefixFrom(addr, 32) {
		t.Fatalf("decision %+v, want a ban of %s", got[0], addr)
	}
	if ev := got[0].Evidence; len(ev) == 0 || ev[len(ev)-1] != "report from the hook" {
		t.Errorf("evidence %q does not end with the reported event", ev)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A source restarts on reload only when a setting its reader uses changed,
// not for its formats or time zone (the parser is swapped instead).
func TestSameSource(t *testing.T) {
	base := config.SourceConfig{Name: "j", Type: "journald", Matches: []string{"_SYSTEMD_UNIT=postfix@-.service"}, StartAt: "end"}
	cases := []struct {
		name   string
		change func(s *config.SourceConfig)
		same   bool
	}{
		{"nothing", func(*config.SourceConfig) {}, true},
		{"formats", func(s *config.SourceConfig) { s.Formats = []string{"postfix"} }, true},
		{"time zone", func(s *config.SourceConfig) { s.Timezone = config.Location{Location: time.UTC} }, true},
		{"matches", func(s *config.SourceConfig) { s.Matches = []string{"SYSLOG_IDENTIFIER=dovecot"} }, false},
		{"restart delay", func(s *config.SourceConfig) { s.RestartDelay = config.Duration(time.Minute) }, false},
		{"command", func(s *config.SourceConfig) { s.Command = []string{"docker"} }, false},
		{"follow", func(s *config.SourceConfig) { s.Follow = "newest" }, false},
		{"listen", func(s *config.SourceConfig) { s.Listen = "127.0.0.1:1" }, false},
	}
	for _, tc := range cases {
		b := base
		b.Matches = slices.Clone(base.Matches)
		tc.change(&b)
		if got := sameSource(base, b); got != tc.same {
			t.Errorf("%s changed: sameSource = %v, want %v", tc.name, got, tc.same)
		}
	}
}

// A file that does not load on reload is a failed reload like one that does
// not apply: the metric drops, status says why, the old configuration runs.
func TestReloadOfABrokenFileIsRecorded(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	a, err := New(cfg, Options{HostAddresses: noHostAddresses})
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

	if err := os.WriteFile(cfg.File, []byte("rules:\n  ip:\n    threshold: lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReloadFile(ctx, cfg.File); err == nil {
		t.Fatal("a broken file reloaded")
	}
	if got := testutil.ToFloat64(a.m.reloadSuccess); got != 0 {
		t.Errorf("mailban_config_last_reload_successful = %v after a failed reload", got)
	}
	if got := testutil.ToFloat64(a.m.reloads.WithLabelValues("failure")); got != 1 {
		t.Errorf("failed reloads counted %v, want 1", got)
	}
	st, err := controlBackend{a}.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reload.OK || st.Reload.Failures != 1 || !strings.Contains(st.Reload.Error, "rules.ip.threshold") {
		t.Errorf("status after a failed reload: %+v", st.Reload)
	}

	testConfig(t, dir) // the good file again
	if _, err := a.ReloadFile(ctx, cfg.File); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(a.m.reloadSuccess); got != 1 {
		t.Errorf("mailban_config_last_reload_successful = %v after a good reload", got)
	}
}
