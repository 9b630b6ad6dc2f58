package rulestest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// Factory makes the engines a run of the suite tests.
type Factory struct {
	Name string
	// New returns an engine deciding by cfg with clock, counting in the
	// store under test, with nothing counted yet.
	New func(t testing.TB, cfg rules.Config, clock rules.Clock) *rules.Engine
	// Local says the engine counts in its own maps, so that Stats counts
	// its windows, logins and offences (a shared store keeps those).
	Local bool
	// Invariants, when set, checks bookkeeping no test sees directly.
	Invariants func(t testing.TB, e *rules.Engine)
	// UpdateGolden rewrites rules/testdata/workload.golden with what this
	// store decides instead of comparing (package rules' -update).
	UpdateGolden bool
}

func (f Factory) engine(t testing.TB, cfg rules.Config, clock rules.Clock) *rules.Engine {
	t.Helper()
	return f.New(t, cfg, clock)
}

func (f Factory) invariants(t testing.TB, e *rules.Engine) {
	t.Helper()
	if f.Invariants != nil {
		f.Invariants(t, e)
	}
}

// Run runs every behavioural test against engines from f.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"AddressWindow", testAddressWindow},
		{"FutureEventsAreClampedToNow", testFutureEventsAreClampedToNow},
		{"EventWithoutTimeCountsNow", testEventWithoutTimeCountsNow},
		{"AddressGrouping", testAddressGrouping},
		{"Allowlist", testAllowlist},
		{"LoginLock", testLoginLock},
		{"LoginLockWithoutAddressCounting", testLoginLockWithoutAddressCounting},
		{"BanGrowth", testBanGrowth},
		{"OffenderMemory", testOffenderMemory},
		{"BannedAddressCollectsNoBans", testBannedAddressCollectsNoBans},
		{"OldLinesAreOffencesButNotBans", testOldLinesAreOffencesButNotBans},
		{"Blocks", testBlocks},
		{"ManualBanAndUnban", testManualBanAndUnban},
		{"SharedEvidenceArrivesLater", testSharedEvidenceArrivesLater},
		{"Unlock", testUnlock},
		{"ReconfigureAllowlistUnbans", testReconfigureAllowlistUnbans},
		{"ExpireKeepsWhatStillCounts", testExpireKeepsWhatStillCounts},
		{"Evidence", testEvidence},
		{"ObserveIgnoresWhatItDoesNotKnow", testObserveIgnoresWhatItDoesNotKnow},
		{"SuccessDoesNotResetFailures", testSuccessDoesNotResetFailures},
		{"OddEventTimes", testOddEventTimes},
		{"WorkloadGolden", testWorkloadGolden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, f) })
	}
}

// FakeClock is a Clock that tests move by hand.
type FakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *FakeClock { return &FakeClock{t: t} }

// NewFakeClock returns a clock showing t until moved.
func NewFakeClock(t time.Time) *FakeClock { return newFakeClock(t) }

// Now is the time set.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// Advance moves the clock by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// t0 is when every test's story begins.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// T0 is when every test's story begins.
var T0 = t0

func failure(addr, login string, at time.Time, attempts int) *parsers.Event {
	ev := &parsers.Event{Time: at, Kind: parsers.AuthFailure, Login: login, Attempts: attempts}
	if addr != "" {
		ev.Addr = netip.MustParseAddr(addr)
	}
	ev.Evidence = fmt.Sprintf("%s fail %s %s x%d", at.Format(time.TimeOnly), addr, login, attempts)
	return ev
}

func successEvent(addr, login string, at time.Time) *parsers.Event {
	return &parsers.Event{Time: at, Kind: parsers.AuthSuccess, Addr: netip.MustParseAddr(addr), Login: login, Attempts: 1,
		Evidence: fmt.Sprintf("%s login %s %s", at.Format(time.TimeOnly), addr, login)}
}

// baseConfig bans an address after 5 failures in 10 minutes for an hour and
// locks a login after 3 failures in 10 minutes for an hour.
func baseConfig() rules.Config {
	return rules.Config{
		IP:            rules.Threshold{Count: 5, Period: 10 * time.Minute},
		Login:         rules.Threshold{Count: 3, Period: 10 * time.Minute},
		BanFor:        time.Hour,
		LockFor:       time.Hour,
		SuccessMemory: rules.Day,
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// maxBan is the engine's stand-in for "no cap": a century.
const maxBan = 100 * 365 * rules.Day

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return fmt.Sprint(n) + suffix
}

// Summary is a decision without its evidence, written for comparisons.
func Summary(d rules.Decision) string { return summary(d) }

func summary(d rules.Decision) string {
	s := d.Action.String()
	if d.Prefix.IsValid() {
		s += " " + d.Prefix.String()
	}
	if d.Login != "" {
		s += " " + d.Login
	}
	s += " at " + d.At.UTC().Format(time.DateTime)
	if d.Action == rules.Ban || d.Action == rules.Lock {
		if d.Until.IsZero() {
			s += " forever"
		} else {
			s += " for " + rules.FormatDuration(d.Until.Sub(d.At))
		}
	}
	return s
}

func summaries(ds []rules.Decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, summary(d))
	}
	return out
}

func testAddressWindow(t *testing.T, f Factory) {
	const P = 10 * time.Minute
	type step struct {
		at       time.Duration // after t0
		attempts int
	}
	every := func(n int, gap time.Duration) []step {
		var s []step
		for i := range n {
			s = append(s, step{at: time.Duration(i) * gap, attempts: 1})
		}
		return s
	}
	tests := []struct {
		name  string
		count int
		steps []step
		banAt int // index of the step that bans; -1: none
	}{
		{"N-1 failures do not ban", 5, every(4, time.Minute), -1},
		{"the Nth failure bans", 5, every(5, time.Minute), 4},
		{"the Nth failure bans at once", 5, every(5, 0), 4},
		{"pairs spaced exactly the period never ban", 2, every(10, P), -1},
		{"pairs spaced just over the period never ban", 2, every(10, P+time.Nanosecond), -1},
		{"pairs spaced just under the period ban", 2, every(2, P-time.Nanosecond), 1},
		{"five spaced a quarter period never ban", 5, every(20, P/4), -1},
		{"five spaced just over a quarter period never ban", 5, every(20, P/4+time.Nanosecond), -1},
		{"five spaced just under a quarter period ban", 5, every(5, P/4-time.Nanosecond), 4},
		{"attempts 3 counts three", 5, []step{{0, 3}, {time.Minute, 2}}, 1},
		{"attempts 3 and 1 are four", 5, []step{{0, 3}, {time.Minute, 1}}, -1},
		{"attempts past the count ban", 5, []step{{0, 7}}, 0},
		{"zero attempts count as one", 2, []step{{0, 0}, {time.Minute, 0}}, 1},
		{"count 1 bans at the first failure", 1, []step{{0, 1}}, 0},
		{"out of order within the window", 5, []step{{5 * time.Minute, 1}, {time.Minute, 1}, {2 * time.Minute, 1}, {3 * time.Minute, 1}, {4 * time.Minute, 1}}, 4},
		{"a straggler older than the period is not counted", 5, []step{{20 * time.Minute, 1}, {21 * time.Minute, 1}, {22 * time.Minute, 1}, {23 * time.Minute, 1}, {time.Minute, 1}}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.IP = rules.Threshold{Count: tt.count, Period: P}
			clock := newFakeClock(t0)
			e := f.engine(t, cfg, clock)
			for i, s := range tt.steps {
				at := t0.Add(s.at)
				if at.After(clock.Now()) {
					clock.Set(at)
				}
				got := e.Observe(failure("203.0.113.7", "", at, s.attempts))
				f.invariants(t, e)
				if i != tt.banAt {
					if len(got) != 0 {
						t.Fatalf("step %d (%v): got %v, want no decision", i, s.at, summaries(got))
					}
					continue
				}
				want := fmt.Sprintf("ban 203.0.113.7/32 at %s for 1h", at.Format(time.DateTime))
				if len(got) != 1 || summary(got[0]) != want {
					t.Fatalf("step %d: got %v, want [%s]", i, summaries(got), want)
				}
				if !strings.Contains(got[0].Reason, fmt.Sprintf("(threshold %d/10m)", tt.count)) {
					t.Errorf("reason %q does not give the threshold", got[0].Reason)
				}
			}
		})
	}
}

func testFutureEventsAreClampedToNow(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 1, Period: time.Minute}
	e := f.engine(t, cfg, newFakeClock(t0))
	got := e.Observe(failure("203.0.113.7", "", t0.Add(3*time.Hour), 1))
	if want := []string{"ban 203.0.113.7/32 at " + t0.Format(time.DateTime) + " for 1h"}; !slices.Equal(summaries(got), want) {
		t.Fatalf("got %v, want %v", summaries(got), want)
	}
}

func testEventWithoutTimeCountsNow(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 1, Period: time.Minute}
	e := f.engine(t, cfg, newFakeClock(t0))
	got := e.Observe(failure("203.0.113.7", "", time.Time{}, 1))
	if len(got) != 1 || !got[0].At.Equal(t0) {
		t.Fatalf("got %v, want a ban at %v", summaries(got), t0)
	}
}

func testAddressGrouping(t *testing.T, f Factory) {
	tests := []struct {
		name   string
		prefix int
		addrs  []string
		want   []string // prefixes banned, in order
		denied []string // addresses Check refuses afterwards
		let    []string // addresses Check lets through afterwards
	}{
		{
			name:   "one IPv6 /64 counts as one",
			addrs:  []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"},
			want:   []string{"2001:db8:1:2::/64"},
			denied: []string{"2001:db8:1:2::99", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
			let:    []string{"2001:db8:1:3::1"},
		},
		{
			name:  "different /64s count apart",
			addrs: []string{"2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:1:4::1"},
			let:   []string{"2001:db8:1:2::1"},
		},
		{
			name:   "a /56 grouping",
			prefix: 56,
			addrs:  []string{"2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:1:ff::1"},
			want:   []string{"2001:db8:1::/56"},
			denied: []string{"2001:db8:1:7::7"},
			let:    []string{"2001:db8:1:100::1"},
		},
		{
			name:   "IPv4 addresses count one by one",
			addrs:  []string{"192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.1"},
			want:   []string{"192.0.2.1/32"},
			denied: []string{"192.0.2.1", "::ffff:192.0.2.1"},
			let:    []string{"192.0.2.2"},
		},
		{
			name:   "an IPv4-mapped address counts as IPv4",
			addrs:  []string{"::ffff:192.0.2.7", "192.0.2.7", "::ffff:192.0.2.7"},
			want:   []string{"192.0.2.7/32"},
			denied: []string{"192.0.2.7", "::ffff:192.0.2.7"},
		},
		{
			name:   "a zone is ignored",
			addrs:  []string{"fe80::1%eth0", "fe80::2%eth1", "fe80::3"},
			want:   []string{"fe80::/64"},
			denied: []string{"fe80::9%eth0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.IP = rules.Threshold{Count: 3, Period: time.Hour}
			cfg.IPv6Prefix = tt.prefix
			e := f.engine(t, cfg, newFakeClock(t0))
			var got []string
			for _, a := range tt.addrs {
				for _, d := range e.Observe(failure(a, "", t0, 1)) {
					got = append(got, d.Prefix.String())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("banned %v, want %v", got, tt.want)
			}
			for _, a := range tt.denied {
				if v := e.Check(netip.MustParseAddr(a), ""); v.Allow {
					t.Errorf("Check(%s) allowed, want refused", a)
				}
			}
			for _, a := range tt.let {
				if v := e.Check(netip.MustParseAddr(a), ""); !v.Allow {
					t.Errorf("Check(%s) refused (%s), want allowed", a, v.Reason)
				}
			}
		})
	}
}

func testAllowlist(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 2, Period: time.Hour}
	cfg.Login = rules.Threshold{Count: 2, Period: time.Hour}
	cfg.Allow = []netip.Prefix{mustPrefix("127.0.0.0/8"), mustPrefix("2001:db8:a::/48"), mustPrefix("::ffff:198.51.100.0/120")}
	clock := newFakeClock(t0)
	e := f.engine(t, cfg, clock)

	for _, a := range []string{"127.0.0.1", "::ffff:127.0.0.2", "2001:db8:a:1::1", "198.51.100.3"} {
		for range 10 {
			if got := e.Observe(failure(a, "carol", t0, 3)); len(got) != 0 {
				t.Fatalf("allowlisted %s: got %v", a, summaries(got))
			}
		}
		e.Observe(successEvent(a, "carol", t0))
	}
	if s := e.Stats(); s != (rules.Stats{}) {
		t.Fatalf("allowlisted failures were counted: %+v", s)
	}

	// Lock bob from elsewhere; the allowlisted address failing as bob is
	// neither banned nor refused.
	e.Observe(failure("203.0.113.1", "bob", t0, 1))
	if got := e.Observe(failure("203.0.113.2", "bob", t0, 1)); len(got) != 1 || got[0].Action != rules.Lock {
		t.Fatalf("got %v, want bob locked", summaries(got))
	}
	if got := e.Observe(failure("127.0.0.5", "bob", t0, 1)); len(got) != 0 {
		t.Fatalf("allowlisted address failing as a locked login: got %v", summaries(got))
	}
	if v := e.Check(netip.MustParseAddr("127.0.0.5"), "bob"); !v.Allow {
		t.Fatalf("Check(allowlisted, locked login) refused: %s", v.Reason)
	}
	if v := e.Check(netip.MustParseAddr("203.0.113.9"), "bob"); v.Allow {
		t.Fatalf("Check(other, locked login) allowed")
	}

	for _, p := range []string{"127.0.0.0/24", "0.0.0.0/0", "2001:db8:a:1::/64", "2001:db8::/32", "::ffff:198.51.100.7/128"} {
		if _, err := e.BanManual(mustPrefix(p), time.Hour, "test"); err == nil || !strings.Contains(err.Error(), rules.ErrAllowlisted.Error()) {
			t.Errorf("BanManual(%s) = %v, want rules.ErrAllowlisted", p, err)
		}
		if _, err := e.BlockManual(mustPrefix(p), "test"); err == nil {
			t.Errorf("BlockManual(%s) accepted an allowlisted network", p)
		}
	}
}

func testLoginLock(t *testing.T, f Factory) {
	cfg := baseConfig() // login 3/10m, lock 1h, successes remembered 1d
	cfg.IP = rules.Threshold{Count: 5, Period: 10 * time.Minute}
	clock := newFakeClock(t0)
	e := f.engine(t, cfg, clock)
	owner, owner6 := "198.51.100.7", "2001:db8:7::1"
	at := func(d time.Duration) time.Time { clock.Set(t0.Add(d)); return t0.Add(d) }

	type step struct {
		ev   *parsers.Event
		want []string
	}
	steps := []step{
		{successEvent(owner, "alice", at(0)), nil},
		{successEvent(owner6, "alice", at(0)), nil},
		// The owner's typos do not count toward the lock.
		{failure(owner, "alice", at(time.Minute), 2), nil},
		{failure("2001:db8:7::2", "alice", at(time.Minute), 2), nil}, // same /64 as a success
		{failure("203.0.113.1", "alice", at(2*time.Minute), 1), nil},
		{failure("203.0.113.2", "alice", at(3*time.Minute), 1), nil},
		{failure("203.0.113.3", "alice", at(4*time.Minute), 1), []string{"lock alice at 2026-11-25 12:04:00 for 1h"}},
		// While locked: others are banned at once, the owner is not.
		{failure("203.0.113.4", "alice", at(5*time.Minute), 1), []string{"ban 203.0.113.4/32 at 2026-11-25 12:05:00 for 1h"}},
		{failure(owner, "alice", at(6*time.Minute), 1), nil},
		{failure("203.0.113.4", "alice", at(7*time.Minute), 1), nil}, // already banned
		{failure("203.0.113.5", "bob", at(7*time.Minute), 1), nil},
	}
	for i, s := range steps {
		got := e.Observe(s.ev)
		if !slices.Equal(summaries(got), s.want) {
			t.Fatalf("step %d (%s): got %v, want %v", i, s.ev.Evidence, summaries(got), s.want)
		}
		if len(got) == 1 && got[0].Action == rules.Ban && !strings.Contains(got[0].Reason, `"alice", which is locked`) {
			t.Errorf("lock ban reason %q does not say why", got[0].Reason)
		}
	}

	checks := []struct {
		addr, login string
		allow       bool
	}{
		{"203.0.113.9", "alice", false},
		{"203.0.113.9", " Alice ", false}, // normalised
		{owner, "ALICE", true},
		{"2001:db8:7::99", "alice", true}, // the owner's /64
		{"2001:db8:8::1", "alice", false},
		{"203.0.113.9", "bob", true},
		{"203.0.113.9", "", true},
		{"203.0.113.4", "bob", false}, // banned
	}
	for _, c := range checks {
		v := e.Check(netip.MustParseAddr(c.addr), c.login)
		if v.Allow != c.allow {
			t.Errorf("Check(%s, %q) = %+v, want allow %v", c.addr, c.login, v, c.allow)
		}
		if !v.Allow && c.login == "alice" && !v.Until.Equal(t0.Add(4*time.Minute+time.Hour)) {
			t.Errorf("Check(%s, %q).Until = %v, want the lock's end", c.addr, c.login, v.Until)
		}
	}
	if v := e.Check(netip.Addr{}, "alice"); v.Allow {
		t.Errorf("Check(no address, locked login) allowed")
	}

	// The lock runs out; a fresh failure counts anew and bans nobody.
	clock.Set(t0.Add(4*time.Minute + time.Hour))
	if got := e.Expire(); !slices.Equal(summaries(got), []string{"unlock alice at 2026-11-25 13:04:00"}) {
		t.Fatalf("Expire: got %v", summaries(got))
	}
	if got := e.Observe(failure("203.0.113.6", "alice", clock.Now(), 1)); len(got) != 0 {
		t.Fatalf("after the lock: got %v", summaries(got))
	}
	if v := e.Check(netip.MustParseAddr("203.0.113.9"), "alice"); !v.Allow {
		t.Fatalf("after the lock: Check refused: %s", v.Reason)
	}

	// A day after the owner's success, the owner is no longer exempt.
	clock.Set(t0.Add(rules.Day + time.Minute))
	e.Expire()
	for i, a := range []string{"203.0.113.20", "203.0.113.21", owner} {
		got := e.Observe(failure(a, "alice", clock.Now(), 1))
		if (i == 2) != (len(got) == 1) {
			t.Fatalf("failure %d from %s a day later: got %v", i, a, summaries(got))
		}
	}
	if v := e.Check(netip.MustParseAddr(owner), "alice"); v.Allow {
		t.Fatalf("the owner is exempt for longer than SuccessMemory")
	}
}

func testLoginLockWithoutAddressCounting(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{}
	cfg.Login = rules.Threshold{Count: 2, Period: time.Hour}
	e := f.engine(t, cfg, newFakeClock(t0))
	e.Observe(failure("203.0.113.1", "root", t0, 1))
	e.Observe(failure("", "root", t0, 1)) // a line without an address still counts for the login
	got := e.Observe(failure("203.0.113.3", "root", t0, 1))
	want := []string{"ban 203.0.113.3/32 at 2026-11-25 12:00:00 for 1h"}
	if !slices.Equal(summaries(got), want) {
		t.Fatalf("got %v, want %v", summaries(got), want)
	}
	if !slices.Equal(got[0].Evidence, []string{"12:00:00 fail 203.0.113.3 root x1"}) {
		t.Errorf("evidence %q, want the one line", got[0].Evidence)
	}
	for i := range 5 {
		if got := e.Observe(failure("203.0.113.1", fmt.Sprint("user", i), t0, 1)); len(got) != 0 {
			t.Fatalf("address counting is off but got %v", summaries(got))
		}
	}
}

func testBanGrowth(t *testing.T, f Factory) {
	tests := []struct {
		name string
		cfg  func(*rules.Config)
		want []string // each ban's length
	}{
		{
			name: "doubling, capped, then permanent",
			cfg: func(c *rules.Config) {
				c.BanFactor, c.BanMax, c.PermanentAfter, c.OffenderMemory = 2, 5*time.Hour, 6, rules.Week
			},
			want: []string{"1h", "2h", "4h", "5h", "5h", "forever", "forever"},
		},
		{
			name: "no growth",
			cfg:  func(c *rules.Config) { c.OffenderMemory = rules.Week },
			want: []string{"1h", "1h", "1h"},
		},
		{
			name: "factor 1.5 without cap",
			cfg:  func(c *rules.Config) { c.BanFactor, c.OffenderMemory = 1.5, rules.Week },
			want: []string{"1h", "90m", "135m", "3h22m30s"},
		},
		{
			name: "every ban permanent",
			cfg:  func(c *rules.Config) { c.PermanentAfter = 1 },
			want: []string{"forever"},
		},
		{
			name: "no memory, no growth",
			cfg:  func(c *rules.Config) { c.BanFactor = 1 },
			want: []string{"1h", "1h"},
		},
		{
			name: "growth saturates at a century",
			cfg:  func(c *rules.Config) { c.BanFactor, c.OffenderMemory = 1e6, 1000*rules.Week },
			want: []string{"1h", rules.FormatDuration(maxBan)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.IP = rules.Threshold{Count: 1, Period: time.Minute}
			tt.cfg(&cfg)
			clock := newFakeClock(t0)
			e := f.engine(t, cfg, clock)
			at := t0
			for i, want := range tt.want {
				clock.Set(at)
				got := e.Observe(failure("203.0.113.7", "", at, 1))
				if len(got) != 1 {
					t.Fatalf("offence %d: got %v", i+1, summaries(got))
				}
				length := "forever"
				if !got[0].Until.IsZero() {
					length = rules.FormatDuration(got[0].Until.Sub(got[0].At))
				}
				if length != want {
					t.Fatalf("offence %d: ban %s, want %s (%s)", i+1, length, want, got[0].Reason)
				}
				if i > 0 && cfg.OffenderMemory > 0 && !strings.Contains(got[0].Reason, ordinal(i+1)+" offence") {
					t.Errorf("reason %q does not count the offence", got[0].Reason)
				}
				if got[0].Until.IsZero() {
					clock.Set(at.Add(100 * 365 * rules.Day))
					if ex := e.Expire(); len(ex) != 0 {
						t.Fatalf("a permanent ban expired: %v", summaries(ex))
					}
					if _, ok := e.Unban(got[0].Prefix); !ok {
						t.Fatal("Unban of a permanent ban failed")
					}
					return // an unban is a pardon: growth would start again
				}
				at = got[0].Until.Add(time.Minute)
			}
		})
	}
}

func testOffenderMemory(t *testing.T, f Factory) {
	tests := []struct {
		name     string
		afterEnd time.Duration // the second offence comes this long after the first ban ends
		want     string        // the second ban's length
	}{
		{"remembered just before memory runs out", rules.Day - time.Nanosecond, "2h"},
		{"forgotten when memory runs out", rules.Day, "1h"},
		{"forgotten long after", rules.Week, "1h"},
	}
	for _, tt := range tests {
		for _, expire := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s expire=%v", tt.name, expire), func(t *testing.T) {
				cfg := baseConfig()
				cfg.IP = rules.Threshold{Count: 1, Period: time.Minute}
				cfg.BanFactor, cfg.OffenderMemory = 2, rules.Day
				clock := newFakeClock(t0)
				e := f.engine(t, cfg, clock)
				e.Observe(failure("203.0.113.7", "", t0, 1))
				at := t0.Add(time.Hour + tt.afterEnd)
				clock.Set(at)
				if expire {
					e.Expire()
				}
				got := e.Observe(failure("203.0.113.7", "", at, 1))
				if len(got) != 1 || rules.FormatDuration(got[0].Until.Sub(got[0].At)) != tt.want {
					t.Fatalf("got %v, want a ban for %s", summaries(got), tt.want)
				}
			})
		}
	}
}

func testBannedAddressCollectsNoBans(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 3, Period: 10 * time.Minute}
	cfg.Login = rules.Threshold{}
	clock := newFakeClock(t0)
	e := f.engine(t, cfg, clock)
	var bans int
	for i := range 30 {
		at := t0.Add(time.Duration(i) * time.Second)
		clock.Set(at)
		bans += len(e.Observe(failure("203.0.113.7", "", at, 1)))
	}
	if bans != 1 {
		t.Fatalf("%d bans, want 1", bans)
	}
	if s := e.Stats(); s.Addresses != 0 || s.Bans != 1 || (f.Local && s.Offenders != 1) {
		t.Fatalf("while banned: %+v; want the window cleared and not refilled", s)
	}
	// After the ban the window starts empty: two failures do not ban.
	clock.Set(t0.Add(2 * time.Hour))
	if got := e.Expire(); len(got) != 1 || got[0].Action != rules.Unban {
		t.Fatalf("Expire: %v", summaries(got))
	}
	for i := range 3 {
		got := e.Observe(failure("203.0.113.7", "", clock.Now(), 1))
		if (i == 2) != (len(got) == 1) {
			t.Fatalf("failure %d after the ban: %v", i+1, summaries(got))
		}
	}
}

// Resuming over old lines must remember what they show without banning
// anyone for what has long expired, and must skip what a ban in force then
// would have kept out.
func testOldLinesAreOffencesButNotBans(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 3, Period: 10 * time.Minute}
	cfg.BanFactor, cfg.OffenderMemory = 2, rules.Week
	clock := newFakeClock(t0.Add(3 * rules.Day))
	e := f.engine(t, cfg, clock)
	for i := range 10 {
		if got := e.Observe(failure("203.0.113.7", "", t0.Add(time.Duration(i)*time.Minute), 1)); len(got) != 0 {
			t.Fatalf("old line %d: got %v", i, summaries(got))
		}
	}
	if s := e.Stats(); (f.Local && s.Offenders != 1) || s.Bans != 0 || s.Addresses != 0 {
		t.Fatalf("after old lines: %+v; want one offence, no ban, and the banned lines skipped", s)
	}
	if a := e.Active(); len(a) != 0 {
		t.Fatalf("Active() = %v", summaries(a))
	}
	var got []rules.Decision
	for range 3 {
		got = e.Observe(failure("203.0.113.7", "", clock.Now(), 1))
	}
	if len(got) != 1 || rules.FormatDuration(got[0].Until.Sub(got[0].At)) != "2h" {
		t.Fatalf("fresh offence: got %v, want a second-offence ban of 2h", summaries(got))
	}
}

func testBlocks(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 2, Period: time.Hour}
	cfg.Blocked = []netip.Prefix{mustPrefix("192.0.2.0/24"), mustPrefix("2001:db8:bad::/48"), mustPrefix("192.0.2.0/24")}
	clock := newFakeClock(t0)
	e := f.engine(t, cfg, clock)

	if v := e.Check(netip.MustParseAddr("192.0.2.5"), ""); v.Allow || !v.Until.IsZero() || !strings.Contains(v.Reason, "blocked") {
		t.Fatalf("Check(blocked) = %+v", v)
	}
	if v := e.Check(netip.MustParseAddr("2001:db8:bad:1::1"), ""); v.Allow {
		t.Fatalf("Check(blocked IPv6) allowed")
	}
	for range 5 {
		if got := e.Observe(failure("192.0.2.5", "", t0, 1)); len(got) != 0 {
			t.Fatalf("failure from a blocked address: %v", summaries(got))
		}
	}
	if s := e.Stats(); s.Addresses != 0 || s.Blocks != 2 {
		t.Fatalf("%+v: want blocked failures not counted and two blocks", s)
	}

	d, err := e.BlockManual(mustPrefix("198.51.100.0/24"), "spam run")
	if err != nil || d.Action != rules.Block || d.Reason != "manual block: spam run" {
		t.Fatalf("BlockManual = %+v, %v", d, err)
	}
	if v := e.Check(netip.MustParseAddr("198.51.100.200"), ""); v.Allow {
		t.Fatalf("Check(manually blocked) allowed")
	}

	reconfigure := func(blocked ...string) []string {
		t.Helper()
		c := cfg
		c.Blocked = nil
		for _, b := range blocked {
			c.Blocked = append(c.Blocked, mustPrefix(b))
		}
		got, err := e.Reconfigure(c)
		if err != nil {
			t.Fatalf("Reconfigure: %v", err)
		}
		return summaries(got)
	}
	got := reconfigure("192.0.2.0/24", "203.0.113.0/24")
	want := []string{"block 203.0.113.0/24 at 2026-11-25 12:00:00", "unblock 2001:db8:bad::/48 at 2026-11-25 12:00:00"}
	if !slices.Equal(got, want) {
		t.Fatalf("Reconfigure: got %v, want %v", got, want)
	}
	if v := e.Check(netip.MustParseAddr("198.51.100.1"), ""); v.Allow {
		t.Fatalf("Reconfigure lifted a manual block")
	}
	// A network blocked both ways stays blocked until both are lifted.
	if got := reconfigure("192.0.2.0/24", "203.0.113.0/24", "198.51.100.0/24"); len(got) != 0 {
		t.Fatalf("adding a manually blocked network to the config: %v", got)
	}
	if _, ok := e.UnblockManual(mustPrefix("198.51.100.0/24")); ok {
		t.Fatalf("UnblockManual reported a network still blocked by configuration as lifted")
	}
	if v := e.Check(netip.MustParseAddr("198.51.100.1"), ""); v.Allow {
		t.Fatalf("the configured block was lifted by UnblockManual")
	}
	if got := reconfigure("192.0.2.0/24", "203.0.113.0/24"); !slices.Equal(got, []string{"unblock 198.51.100.0/24 at 2026-11-25 12:00:00"}) {
		t.Fatalf("removing the last hold on a block: %v", got)
	}
	if _, ok := e.UnblockManual(mustPrefix("10.0.0.0/8")); ok {
		t.Fatalf("UnblockManual of a network never blocked reported true")
	}

	// Blocks never expire.
	clock.Set(t0.Add(10 * 365 * rules.Day))
	if got := e.Expire(); len(got) != 0 {
		t.Fatalf("Expire lifted %v", summaries(got))
	}
	if got := summaries(e.Active()); !slices.Equal(got, []string{"block 192.0.2.0/24 at 2026-11-25 12:00:00", "block 203.0.113.0/24 at 2026-11-25 12:00:00"}) {
		t.Fatalf("Active() = %v", got)
	}
	if _, err := e.BlockManual(netip.Prefix{}, ""); err == nil {
		t.Fatal("BlockManual of an invalid network succeeded")
	}
}

func testManualBanAndUnban(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 2, Period: time.Hour}
	cfg.BanFactor, cfg.OffenderMemory = 2, rules.Week
	clock := newFakeClock(t0)
	e := f.engine(t, cfg, clock)

	d, err := e.BanManual(mustPrefix("203.0.113.77/24"), 2*time.Hour, "abuse report")
	if err != nil || summary(d) != "ban 203.0.113.0/24 at 2026-11-25 12:00:00 for 2h" || d.Reason != "manual ban: abuse report" {
		t.Fatalf("BanManual = %s (%q), %v", summary(d), d.Reason, err)
	}
	if v := e.Check(netip.MustParseAddr("203.0.113.9"), ""); v.Allow || !v.Until.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("Check inside a manual ban = %+v", v)
	}
	for range 4 {
		if got := e.Observe(failure("203.0.113.9", "", t0, 1)); len(got) != 0 {
			t.Fatalf("failure inside a manual ban: %v", summaries(got))
		}
	}
	if d, ok := e.Unban(mustPrefix("203.0.113.0/24")); !ok || d.Action != rules.Unban {
		t.Fatalf("Unban = %+v, %v", d, ok)
	}
	if _, ok := e.Unban(mustPrefix("203.0.113.0/24")); ok {
		t.Fatal("second Unban reported true")
	}

	perm, err := e.BanManual(mustPrefix("198.51.100.1/32"), 0, "")
	if err != nil || !perm.Until.IsZero() || perm.Reason != "manual ban" {
		t.Fatalf("permanent BanManual = %+v, %v", perm, err)
	}
	if _, err := e.BanManual(mustPrefix("198.51.100.2/32"), -time.Second, ""); err == nil {
		t.Fatal("BanManual with a negative duration succeeded")
	}
	if _, err := e.BanManual(netip.Prefix{}, time.Hour, ""); err == nil {
		t.Fatal("BanManual of an invalid network succeeded")
	}
	// A reason the state could not read back is refused, not saved.
	long := strings.Repeat("x", rules.MaxManualReason+1)
	if _, err := e.BanManual(mustPrefix("198.51.100.3/32"), time.Hour, long); err == nil {
		t.Fatal("BanManual with an overlong reason succeeded")
	}
	if _, err := e.BlockManual(mustPrefix("198.51.100.0/30"), long); err == nil {
		t.Fatal("BlockManual with an overlong reason succeeded")
	}

	// An operator's unban is a pardon: the next ban is a first offence.
	var got []rules.Decision
	for range 2 {
		got = e.Observe(failure("192.0.2.1", "", t0, 1))
	}
	if len(got) != 1 {
		t.Fatalf("got %v", summaries(got))
	}
	e.Unban(got[0].Prefix)
	for range 2 {
		got = e.Observe(failure("192.0.2.1", "", t0, 1))
	}
	if len(got) != 1 || rules.FormatDuration(got[0].Until.Sub(got[0].At)) != "1h" {
		t.Fatalf("after an unban: got %v, want a first-offence ban", summaries(got))
	}

	clock.Set(t0.Add(50 * 365 * rules.Day))
	e.Expire()
	if got := summaries(e.Active()); !slices.Equal(got, []string{"ban 198.51.100.1/32 at 2026-11-25 12:00:00 forever"}) {
		t.Fatalf("Active() = %v", got)
	}
}

// A store announces the evidence of a decision its tally made after the
// decision itself: taking it in updates what the engine explains, and is
// no change for enforcers.
func testSharedEvidenceArrivesLater(t *testing.T, f Factory) {
	e := f.engine(t, baseConfig(), newFakeClock(t0))
	ban := rules.Decision{Action: rules.Ban, Prefix: mustPrefix("203.0.113.7/32"), At: t0, Until: t0.Add(time.Hour),
		Reason: "6 failures in 1h (threshold 6/1h) (decided on mx1)"}
	lock := rules.Decision{Action: rules.Lock, Login: "carol", At: t0, Until: t0.Add(time.Hour),
		Reason: "9 failed logins in 1h (threshold 9/1h) (decided on mx1)"}
	lines := []string{"line 1", "line 2"}
	for _, d := range []rules.Decision{ban, lock} {
		if !e.ApplyShared(d) {
			t.Fatalf("%s: the decision changed nothing", d.Action)
		}
		withLines := d
		withLines.Evidence = lines
		if e.ApplyShared(withLines) || e.ApplyShared(withLines) {
			t.Errorf("%s: its evidence counted as a change for enforcers", d.Action)
		}
		without := d
		if e.ApplyShared(without) {
			t.Errorf("%s: the decision again, without evidence, counted as a change", d.Action)
		}
	}
	for _, d := range e.Active() {
		if !slices.Equal(d.Evidence, lines) || (d.Reason != ban.Reason && d.Reason != lock.Reason) || !d.Until.Equal(t0.Add(time.Hour)) {
			t.Errorf("Active: %s with reason %q and evidence %q", summary(d), d.Reason, d.Evidence)
		}
	}
	if n := len(e.Active()); n != 2 {
		t.Errorf("Active holds %d decisions, want 2", n)
	}
	// A different end is a new decision, whatever its evidence.
	longer := ban
	longer.Until, longer.Evidence = t0.Add(2*time.Hour), lines
	if !e.ApplyShared(longer) {
		t.Error("a ban with a new end changed nothing")
	}
}

func testUnlock(t *testing.T, f Factory) {
	cfg := baseConfig()
	clock := newFakeClock(t0)
	e := f.engine(t, cfg, clock)
	for _, a := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		e.Observe(failure(a, "erin", t0, 1))
	}
	if v := e.Check(netip.MustParseAddr("203.0.113.9"), "erin"); v.Allow {
		t.Fatal("erin is not locked")
	}
	d, ok := e.Unlock(" ERIN")
	if !ok || d.Action != rules.Unlock || d.Login != "erin" {
		t.Fatalf("Unlock = %+v, %v", d, ok)
	}
	if v := e.Check(netip.MustParseAddr("203.0.113.9"), "erin"); !v.Allow {
		t.Fatalf("after Unlock: %s", v.Reason)
	}
	if got := e.Observe(failure("203.0.113.4", "erin", t0, 1)); len(got) != 0 {
		t.Fatalf("failure after Unlock: %v", summaries(got))
	}
	if _, ok := e.Unlock("erin"); ok {
		t.Fatal("second Unlock reported true")
	}
}

func testReconfigureAllowlistUnbans(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 2, Period: time.Hour}
	cfg.BanFactor, cfg.OffenderMemory = 2, rules.Week
	e := f.engine(t, cfg, newFakeClock(t0))
	e.Observe(failure("203.0.113.5", "", t0, 2))
	e.Observe(failure("2001:db8:5::1", "", t0, 2))
	e.Observe(failure("203.0.113.6", "", t0, 1))
	cfg.Allow = []netip.Prefix{mustPrefix("203.0.113.0/24")}
	got, err := e.Reconfigure(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"unban 203.0.113.5/32 at 2026-11-25 12:00:00"}; !slices.Equal(summaries(got), want) {
		t.Fatalf("Reconfigure: %v, want %v", summaries(got), want)
	}
	if v := e.Check(netip.MustParseAddr("203.0.113.5"), ""); !v.Allow {
		t.Fatal("the allowlisted address is still refused")
	}
	if s := e.Stats(); s.Addresses != 0 || (f.Local && s.Offenders != 1) || s.Bans != 1 {
		t.Fatalf("%+v: want the allowlisted windows and offences gone, the IPv6 ban kept", s)
	}
	if _, err := e.Reconfigure(rules.Config{IP: rules.Threshold{Count: 3}}); err == nil {
		t.Fatal("Reconfigure accepted a bad config")
	}
}

func testExpireKeepsWhatStillCounts(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 4, Period: 10 * time.Minute}
	clock := newFakeClock(t0.Add(8 * time.Minute))
	e := f.engine(t, cfg, clock)
	for _, m := range []int{0, 1, 8} {
		e.Observe(failure("203.0.113.7", "", t0.Add(time.Duration(m)*time.Minute), 1))
	}
	clock.Set(t0.Add(11 * time.Minute)) // drops 0 and 1, keeps 8
	e.Expire()
	clock.Set(t0.Add(12 * time.Minute))
	e.Observe(failure("203.0.113.7", "", clock.Now(), 1))
	if got := e.Observe(failure("203.0.113.7", "", clock.Now(), 1)); len(got) != 0 {
		t.Fatalf("3 failures in the window banned: %v", summaries(got))
	}
	if got := e.Observe(failure("203.0.113.7", "", clock.Now(), 1)); len(got) != 1 {
		t.Fatalf("4 failures in the window did not ban: %v", summaries(got))
	}
}

func testEvidence(t *testing.T, f Factory) {
	line := func(i int) string { return fmt.Sprintf("line %d", i) }
	ev := func(addr, login string, at time.Time, i int) *parsers.Event {
		e := failure(addr, login, at, 1)
		e.Evidence = line(i)
		return e
	}
	t.Run("newest lines, oldest first", func(t *testing.T) {
		cfg := baseConfig()
		cfg.EvidenceLines = 3
		e := f.engine(t, cfg, newFakeClock(t0))
		var got []rules.Decision
		for i := range 5 {
			got = e.Observe(ev("203.0.113.7", "", t0, i))
		}
		if len(got) != 1 || !slices.Equal(got[0].Evidence, []string{"line 2", "line 3", "line 4"}) {
			t.Fatalf("got %v with evidence %q", summaries(got), got[0].Evidence)
		}
	})
	t.Run("only lines inside the window", func(t *testing.T) {
		e := f.engine(t, baseConfig(), newFakeClock(t0.Add(time.Hour)))
		e.Observe(ev("203.0.113.7", "", t0, 0))
		var got []rules.Decision
		for i := 1; i <= 5; i++ {
			got = e.Observe(ev("203.0.113.7", "", t0.Add(20*time.Minute), i))
		}
		if len(got) != 1 || !slices.Equal(got[0].Evidence, []string{"line 1", "line 2", "line 3", "line 4", "line 5"}) {
			t.Fatalf("evidence %q", got[0].Evidence)
		}
	})
	t.Run("lines that left the ring are missing", func(t *testing.T) {
		cfg := baseConfig()
		cfg.IP = rules.Threshold{Count: 3, Period: time.Hour}
		cfg.EvidenceRing = 4
		e := f.engine(t, cfg, newFakeClock(t0))
		e.Observe(ev("203.0.113.7", "", t0, 0))
		for i := 1; i <= 4; i++ {
			e.Observe(ev(fmt.Sprintf("192.0.2.%d", i), "", t0, i))
		}
		e.Observe(ev("203.0.113.7", "", t0, 5))
		got := e.Observe(ev("203.0.113.7", "", t0, 6))
		if len(got) != 1 || !slices.Equal(got[0].Evidence, []string{"line 5", "line 6"}) {
			t.Fatalf("got %v with evidence %q", summaries(got), got[0].Evidence)
		}
	})
	t.Run("a lock's lines come from every address", func(t *testing.T) {
		e := f.engine(t, baseConfig(), newFakeClock(t0))
		e.Observe(ev("192.0.2.1", "frank", t0, 0))
		e.Observe(ev("192.0.2.2", "grace", t0, 1))
		e.Observe(ev("192.0.2.2", "frank", t0, 2))
		got := e.Observe(ev("192.0.2.3", "frank", t0, 3))
		if len(got) != 1 || got[0].Action != rules.Lock || !slices.Equal(got[0].Evidence, []string{"line 0", "line 2", "line 3"}) {
			t.Fatalf("got %v with evidence %q", summaries(got), got[0].Evidence)
		}
		// A ban after the lock shows that address's own lines.
		got = e.Observe(ev("192.0.2.2", "frank", t0, 4))
		if len(got) != 1 || got[0].Action != rules.Ban || !slices.Equal(got[0].Evidence, []string{"line 1", "line 2", "line 4"}) {
			t.Fatalf("got %v with evidence %q", summaries(got), got[0].Evidence)
		}
	})
	t.Run("a ban starts the evidence afresh", func(t *testing.T) {
		cfg := baseConfig()
		cfg.IP = rules.Threshold{Count: 2, Period: time.Hour}
		clock := newFakeClock(t0)
		e := f.engine(t, cfg, clock)
		e.Observe(ev("203.0.113.7", "", t0, 0))
		e.Observe(ev("203.0.113.7", "", t0, 1))
		clock.Set(t0.Add(90 * time.Minute))
		e.Expire()
		e.Observe(ev("203.0.113.7", "", clock.Now(), 2))
		got := e.Observe(ev("203.0.113.7", "", clock.Now(), 3))
		if len(got) != 1 || !slices.Equal(got[0].Evidence, []string{"line 2", "line 3"}) {
			t.Fatalf("got %v with evidence %q", summaries(got), got[0].Evidence)
		}
	})
}

func testObserveIgnoresWhatItDoesNotKnow(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 1, Period: time.Hour}
	e := f.engine(t, cfg, newFakeClock(t0))
	for _, ev := range []*parsers.Event{
		nil,
		{Kind: parsers.KindUnknown, Addr: netip.MustParseAddr("192.0.2.1"), Time: t0},
		{Kind: parsers.Kind(99), Addr: netip.MustParseAddr("192.0.2.1"), Time: t0},
		// Abuse (RCPT rejects and the like) is an event kind the rules do not count.
		{Kind: parsers.Abuse, Addr: netip.MustParseAddr("192.0.2.1"), Login: "alice", Time: t0, Attempts: 3},
		{Kind: parsers.AuthFailure, Time: t0}, // no address, no login
	} {
		if got := e.Observe(ev); len(got) != 0 {
			t.Errorf("Observe(%+v) = %v", ev, summaries(got))
		}
	}
	if s := e.Stats(); s != (rules.Stats{}) {
		t.Fatalf("%+v", s)
	}
}

func testSuccessDoesNotResetFailures(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 3, Period: time.Hour}
	e := f.engine(t, cfg, newFakeClock(t0))
	e.Observe(failure("203.0.113.7", "henry", t0, 2))
	e.Observe(successEvent("203.0.113.7", "henry", t0))
	if got := e.Observe(failure("203.0.113.7", "henry", t0, 1)); len(got) != 1 || got[0].Action != rules.Ban {
		t.Fatalf("got %v, want the third failure to ban despite the success between", summaries(got))
	}
}

func testOddEventTimes(t *testing.T, f Factory) {
	cfg := baseConfig()
	cfg.IP = rules.Threshold{Count: 2, Period: time.Hour}
	clock := newFakeClock(t0)
	e := f.engine(t, cfg, clock)
	for _, at := range []time.Time{time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)} {
		got := e.Observe(failure("192.0.2.1", "", at, 1))
		if len(got) != 0 {
			t.Fatalf("an event from %v: %v", at, summaries(got))
		}
	}
	if f.Local && e.Stats().Offenders != 1 {
		t.Fatalf("two garbage-dated failures did not count as one offence long ago: %+v", e.Stats())
	}
	got := e.Observe(failure("192.0.2.2", "", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), 2))
	if len(got) != 1 || !got[0].At.Equal(t0) {
		t.Fatalf("an event from 9999: %v, want a ban now", summaries(got))
	}
}
