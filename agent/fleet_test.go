package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/fleet/redistest"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// fleetHost is one agent of a test fleet.
type fleetHost struct {
	name   string
	a      *Agent
	rec    *recorder
	cancel context.CancelFunc
	done   chan error
}

// fleetConfig is a host's configuration: addresses ban at 6 failures an
// hour, logins lock at 9, counted across the fleet.
func fleetConfig(t *testing.T, dir, host, redisAddr string) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf(`
state: {path: %s/state.db, checkpoint-interval: 50ms}
control: {socket: ""}
rules:
  ip: {threshold: "6/1h"}
  login: {threshold: "9/1h", lock-for: 1h}
allowlist: {host-addresses: false}
metrics: {listen: ""}
fleet:
  host: %s
  redis: {address: %q, key-prefix: fleettest, timeout: 500ms}
`, dir, host, redisAddr)
	return writeConfig(t, dir, yaml)
}

// startHost starts an agent in its own directory (kept across restarts of
// the same name) and waits until it counts in Redis.
func startHost(t *testing.T, name, redisAddr string, dirs map[string]string) *fleetHost {
	t.Helper()
	dir, ok := dirs[name]
	if !ok {
		dir = t.TempDir()
		dirs[name] = dir
	}
	h := &fleetHost{name: name, rec: newRecorder(), done: make(chan error, 1)}
	var err error
	h.a, err = New(fleetConfig(t, dir, name, redisAddr), Options{Enforcers: []Enforcer{h.rec}, HostAddresses: noHostAddresses})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.a.Run(ctx) }()
	t.Cleanup(h.stop)
	waitUntil(t, name+" counts in redis and its enforcer holds what is in force", func() bool {
		h.rec.mu.Lock()
		defer h.rec.mu.Unlock()
		return h.a.Fleet().Up() && h.rec.reconciled > 0
	})
	return h
}

func (h *fleetHost) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

// fail reports one failed login to h and waits until h has counted it,
// in Redis or, when Redis is down, on its own.
func (h *fleetHost) fail(t *testing.T, addr, login string) {
	t.Helper()
	st := h.a.Fleet().Stats()
	before := st.SharedEvents + st.LocalEvents
	ev := parsers.Event{Time: time.Now(), Kind: parsers.AuthFailure, Service: parsers.ServiceIMAP,
		Addr: netip.MustParseAddr(addr), Login: login, Attempts: 1, Format: "test",
		Evidence: fmt.Sprintf("%s: %s failed as %q", h.name, addr, login)}
	if err := h.a.Report(context.Background(), "test", ev); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, h.name+" counted a failure", func() bool {
		st := h.a.Fleet().Stats()
		return st.SharedEvents+st.LocalEvents > before
	})
}

func (r *recorder) snapshot() []rules.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.decisions)
}

// banned reports whether r was told to ban p (and not to lift it since).
func (r *recorder) holds(action rules.Action, key string) bool {
	held := false
	for _, d := range r.snapshot() {
		k := d.Login
		if d.Prefix.IsValid() {
			k = d.Prefix.String()
		}
		if k != key {
			continue
		}
		switch d.Action {
		case action:
			held = true
		case rules.Unban, rules.Unlock, rules.Unblock:
			held = false
		}
	}
	return held
}

// activeKeys lists what Reconcile was last given, as "action key".
func (r *recorder) activeKeys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, d := range r.active {
		k := d.Login
		if d.Prefix.IsValid() {
			k = d.Prefix.String()
		}
		out = append(out, d.Action.String()+" "+k)
	}
	return out
}

func (r *recorder) count(action rules.Action) int {
	n := 0
	for _, d := range r.snapshot() {
		if d.Action == action {
			n++
		}
	}
	return n
}

// waitHeld waits until every host's enforcer holds the decision and
// returns how long the slowest took from the call.
func waitHeld(t *testing.T, hosts []*fleetHost, action rules.Action, key string) time.Duration {
	t.Helper()
	start := time.Now()
	for _, h := range hosts {
		waitUntil(t, fmt.Sprintf("%s: %s %s", h.name, action, key), func() bool { return h.rec.holds(action, key) })
	}
	return time.Since(start)
}

// Failures spread over three hosts trip the per-address and per-login
// thresholds exactly at the failure that reaches them; the decision shows
// on every host.
func TestFleetCountsAcrossHosts(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	dirs := map[string]string{}
	hosts := []*fleetHost{startHost(t, "mx1", srv.Addr(), dirs), startHost(t, "imap1", srv.Addr(), dirs), startHost(t, "smtp1", srv.Addr(), dirs)}

	// Five failures of one address, spread: no one bans.
	for i := range 5 {
		hosts[i%3].fail(t, "203.0.113.7", "")
	}
	for _, h := range hosts {
		if n := len(h.rec.snapshot()); n != 0 {
			t.Fatalf("%s decided %v after 5 of 6 failures", h.name, h.rec.snapshot())
		}
	}
	// The sixth bans, wherever it happens, and every host enforces it.
	hosts[2].fail(t, "203.0.113.7", "")
	latency := waitHeld(t, hosts, rules.Ban, "203.0.113.7/32")
	t.Logf("a ban decided on %s reached every host in %v", hosts[2].name, latency)
	d := hosts[0].rec.snapshot()[0]
	if d.Until.Sub(d.At) != time.Hour || d.Reason != "6 failures in 1h (threshold 6/1h) (decided on smtp1)" {
		t.Errorf("mx1 got %s until %v: %q", d.Action, d.Until.Sub(d.At), d.Reason)
	}

	// Its evidence, the lines smtp1 saw, follows the decision: every host
	// explains the ban with them, and taking them in tells no enforcer
	// anything more.
	banLines := whyEvidence(t, hosts[2], "203.0.113.7")
	if want := `smtp1: 203.0.113.7 failed as ""`; len(banLines) != 2 || banLines[0] != want || banLines[1] != want {
		t.Fatalf("smtp1 explains its ban with %q", banLines)
	}
	for _, h := range hosts[:2] {
		waitUntil(t, h.name+" explains the ban with smtp1's lines", func() bool {
			return slices.Equal(whyEvidence(t, h, "203.0.113.7"), banLines)
		})
	}

	// A login guessed from eight addresses spread over the hosts is not
	// locked; the ninth failure locks it everywhere.
	for i := range 8 {
		hosts[i%3].fail(t, fmt.Sprintf("198.51.100.%d", i+1), "alice@example.test")
	}
	for _, h := range hosts {
		if h.rec.count(rules.Lock) != 0 {
			t.Fatalf("%s locked alice after 8 of 9 failures", h.name)
		}
	}
	hosts[0].fail(t, "198.51.100.9", "alice@example.test")
	waitHeld(t, hosts, rules.Lock, "alice@example.test")
	lockLines := heldEvidence(hosts[0], rules.Lock, "alice@example.test")
	if len(lockLines) != 4 {
		t.Fatalf("mx1 holds its lock with evidence %q, want its 4 lines", lockLines)
	}
	for _, h := range hosts[1:] {
		waitUntil(t, h.name+" holds the lock with mx1's lines", func() bool {
			return slices.Equal(heldEvidence(h, rules.Lock, "alice@example.test"), lockLines)
		})
	}
	// Another address failing on a locked login is banned on the spot,
	// on any host.
	hosts[1].fail(t, "198.51.100.10", "alice@example.test")
	waitHeld(t, hosts, rules.Ban, "198.51.100.10/32")
	for _, h := range hosts {
		if n := h.rec.count(rules.Ban); n != 2 {
			t.Errorf("%s holds %d bans, want 2: %v", h.name, n, h.rec.snapshot())
		}
		if n := h.rec.count(rules.Lock); n != 1 {
			t.Errorf("%s was told of the lock %d times, want once", h.name, n)
		}
	}

	// A manual block on one host reaches the others.
	if _, err := hosts[1].a.Engine().BlockManual(netip.MustParsePrefix("192.0.2.0/24"), "abuse desk"); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, []*fleetHost{hosts[0], hosts[2]}, rules.Block, "192.0.2.0/24")

	// A host that starts later catches up: its enforcer is reconciled with
	// the bans, the lock and the block in force.
	late := startHost(t, "pop1", srv.Addr(), dirs)
	active := late.rec.activeKeys()
	want := []string{"ban 198.51.100.10/32", "ban 203.0.113.7/32", "block 192.0.2.0/24", "lock alice@example.test"}
	if !slices.Equal(active, want) {
		t.Errorf("the late host's enforcer started with %q, want %q", active, want)
	}
	// It explains them with the deciding hosts' lines, from the holds.
	if got := whyEvidence(t, late, "203.0.113.7"); !slices.Equal(got, banLines) {
		t.Errorf("the late host explains 203.0.113.7 with %q, want %q", got, banLines)
	}
	if got := heldEvidence(late, rules.Lock, "alice@example.test"); !slices.Equal(got, lockLines) {
		t.Errorf("the late host holds alice's lock with evidence %q, want %q", got, lockLines)
	}
}

// whyEvidence is the evidence mailban why shows on h for what refuses
// addr (a single ban is expected).
func whyEvidence(t *testing.T, h *fleetHost, addr string) []string {
	t.Helper()
	w, err := controlBackend{h.a}.Why(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Entries) != 1 {
		t.Fatalf("%s: why %s gives %d entries", h.name, addr, len(w.Entries))
	}
	return w.Entries[0].Evidence
}

// heldEvidence is the evidence of what h's engine holds for key.
func heldEvidence(h *fleetHost, action rules.Action, key string) []string {
	for _, d := range h.a.Engine().Active() {
		if d.Action == action && (d.Login == key || d.Prefix.IsValid() && d.Prefix.String() == key) {
			return d.Evidence
		}
	}
	return nil
}

// Redis killed in the middle of an attack and started again (with its
// append-only file) loses nothing: failures counted on each host alone
// meanwhile are handed back and count across the fleet, and a ban decided
// alone meanwhile reaches the other hosts.
func TestFleetSurvivesRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AppendOnly: true})
	dirs := map[string]string{}
	a, b := startHost(t, "mx1", srv.Addr(), dirs), startHost(t, "mx2", srv.Addr(), dirs)

	a.fail(t, "203.0.113.7", "")
	b.fail(t, "203.0.113.7", "")
	b.fail(t, "203.0.113.8", "") // before the crash: bans 203.0.113.8 later
	srv.Kill()

	// While Redis is away each host counts alone: 203.0.113.7 fails three
	// more times (five in all, one short), and 203.0.113.9 six times on mx1
	// alone, which bans it there.
	a.fail(t, "203.0.113.7", "")
	a.fail(t, "203.0.113.7", "")
	b.fail(t, "203.0.113.7", "")
	for range 6 {
		a.fail(t, "203.0.113.9", "")
	}
	waitUntil(t, "mx1 bans 203.0.113.9 on its own", func() bool { return a.rec.holds(rules.Ban, "203.0.113.9/32") })
	if a.a.Fleet().Up() || b.a.Fleet().Up() {
		t.Fatal("a host still counts in a Redis that is not running")
	}
	// mailban status says so, and why.
	st, err := controlBackend{a.a}.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f := st.Fleet; f == nil || f.Up || f.DownSince == nil || f.LastError == "" || f.LocalEvents < 8 || f.Host != "mx1" || f.Redis != srv.Addr() {
		t.Errorf("status while Redis is down: %+v", f)
	}
	if a.rec.holds(rules.Ban, "203.0.113.7/32") || b.rec.holds(rules.Ban, "203.0.113.7/32") {
		t.Fatal("203.0.113.7 banned with fewer than six failures on any one host")
	}

	srv.Restart()
	waitUntil(t, "both hosts count in redis again", func() bool { return a.a.Fleet().Up() && b.a.Fleet().Up() })
	st, err = controlBackend{a.a}.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f := st.Fleet; f == nil || !f.Up || f.DownSince != nil || f.Resyncs == 0 {
		t.Errorf("status once Redis is back: %+v", f)
	}
	// The ban mx1 made alone reached mx2.
	waitHeld(t, []*fleetHost{b}, rules.Ban, "203.0.113.9/32")
	// The failures of before, during and after the outage add up: the
	// sixth bans, not the fifth.
	if a.rec.holds(rules.Ban, "203.0.113.7/32") || b.rec.holds(rules.Ban, "203.0.113.7/32") {
		t.Fatal("203.0.113.7 banned at its fifth failure")
	}
	b.fail(t, "203.0.113.7", "")
	waitHeld(t, []*fleetHost{a, b}, rules.Ban, "203.0.113.7/32")
	// And 203.0.113.8's count from before the crash was kept.
	for range 5 {
		a.fail(t, "203.0.113.8", "")
	}
	waitHeld(t, []*fleetHost{a, b}, rules.Ban, "203.0.113.8/32")
	for _, h := range []*fleetHost{a, b} {
		if n := h.rec.count(rules.Ban); n != 3 {
			t.Errorf("%s was told of %d bans, want 3: %v", h.name, n, h.rec.snapshot())
		}
	}
}

// A Redis that comes back empty (no persistence) gets the hosts' bans
// again, so that a host starting later still learns of them.
func TestFleetReseedsEmptyRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	dirs := map[string]string{}
	a := startHost(t, "mx1", srv.Addr(), dirs)
	for range 6 {
		a.fail(t, "203.0.113.7", "")
	}
	waitHeld(t, []*fleetHost{a}, rules.Ban, "203.0.113.7/32")
	srv.Kill()
	srv.Restart()                 // empty
	a.fail(t, "198.51.100.1", "") // finds Redis gone, and later back
	waitUntil(t, "mx1 counts in redis again", func() bool { return a.a.Fleet().Up() && a.a.Fleet().Stats().Resyncs >= 2 })
	late := startHost(t, "mx2", srv.Addr(), dirs)
	if got := late.rec.activeKeys(); !slices.Equal(got, []string{"ban 203.0.113.7/32"}) {
		t.Fatalf("the late host's enforcer started with %q", got)
	}
}

// A host that crashes after Redis counted lines that its last checkpoint
// does not cover resumes after them (Redis keeps its read positions with
// the counts): they are not counted twice.
func TestFleetCrashDoesNotCountTwice(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	line := func(addr string) string {
		return time.Now().UTC().Format(time.RFC3339) + " mx postfix/smtpd[1]: warning: unknown[" + addr +
			"]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=admin\n"
	}
	appendLog := func(n int) {
		f, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			if _, err := f.WriteString(line("203.0.113.7")); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	yaml := fmt.Sprintf(`
state: {path: %s/state.db, checkpoint-interval: 1h}
control: {socket: ""}
rules: {ip: {threshold: "6/1h"}}
sources: [{name: mail, paths: [%s], formats: [postfix], start-at: beginning}]
allowlist: {host-addresses: false}
metrics: {listen: ""}
fleet: {host: mx1, redis: {address: %q, key-prefix: crash}}
`, dir, logPath, srv.Addr())
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(dir, "m.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	start := func() *fleetHost {
		h := &fleetHost{name: "mx1", rec: newRecorder(), done: make(chan error, 1)}
		if h.a, err = New(cfg, Options{Enforcers: []Enforcer{h.rec}, HostAddresses: noHostAddresses}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		h.cancel = cancel
		go func() { h.done <- h.a.Run(ctx) }()
		t.Cleanup(h.stop)
		return h
	}
	counted := func(h *fleetHost, n int64) {
		t.Helper()
		waitUntil(t, fmt.Sprintf("%d failures counted in redis", n), func() bool { return h.a.Fleet().Stats().SharedEvents >= n })
	}

	appendLog(4)
	h := start()
	counted(h, 4)
	// The state file as a crash now would leave it: checkpointed before
	// any line was read (the interval is an hour).
	saved, err := os.ReadFile(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	if err := os.WriteFile(filepath.Join(dir, "state.db"), saved, 0o600); err != nil {
		t.Fatal(err)
	}

	h = start()
	appendLog(1)
	counted(h, 1)
	if n := h.rec.count(rules.Ban); n != 0 || h.a.Fleet().Stats().SharedEvents != 1 {
		t.Fatalf("after the restart: %d bans, %d failures counted; the lines before the crash were counted again",
			n, h.a.Fleet().Stats().SharedEvents)
	}
	appendLog(1)
	waitHeld(t, []*fleetHost{h}, rules.Ban, "203.0.113.7/32")
}
