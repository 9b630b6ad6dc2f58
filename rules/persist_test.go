package rules

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/parsers"
)

// store is what the agent's state file would hold: bucket → key → value.
type store map[string]map[string][]byte

func (s store) apply(recs []Record) {
	for _, r := range recs {
		b := s[r.Bucket]
		if b == nil {
			b = make(map[string][]byte)
			s[r.Bucket] = b
		}
		if r.Value == nil {
			delete(b, string(r.Key))
		} else {
			b[string(r.Key)] = bytes.Clone(r.Value)
		}
	}
}

// records lists the store as the state file's Load does: bucket by bucket,
// keys in byte order.
func (s store) records() []Record {
	var out []Record
	for _, bucket := range slices.Sorted(func(yield func(string) bool) {
		for b := range s {
			if !yield(b) {
				return
			}
		}
	}) {
		keys := make([]string, 0, len(s[bucket]))
		for k := range s[bucket] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			out = append(out, Record{Bucket: bucket, Key: []byte(k), Value: s[bucket][k]})
		}
	}
	return out
}

func restoreAll(t *testing.T, e *Engine, s store) {
	t.Helper()
	for _, r := range s.records() {
		if err := e.Restore(r); err != nil {
			t.Fatalf("Restore: %v", err)
		}
	}
}

// op is one thing that happens to an engine: an event, an Expire, or an
// operator's command. It returns what the engine decided.
type op struct {
	at   time.Time
	name string
	do   func(e *Engine) []Decision
}

// workload makes a deterministic mix of attackers (single addresses, a
// rotating IPv6 /64, a distributed guess at a few logins), real users with
// successes and typos, expiries and operator commands.
func workload(seed uint64, n int) []op {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var addrs []string
	for i := range 30 {
		addrs = append(addrs, fmt.Sprintf("203.0.113.%d", i))
	}
	for i := range 10 {
		addrs = append(addrs, fmt.Sprintf("2001:db8:%d::%x", i%3, r.Uint32()&0xffff))
	}
	addrs = append(addrs, "::ffff:198.51.100.9", "198.51.100.9", "127.0.0.1")
	logins := []string{"alice", "bob", "carol", "admin", "info", "test", ""}
	at := t0
	var ops []op
	for i := range n {
		at = at.Add(time.Duration(r.IntN(90)) * time.Second)
		a, l := addrs[r.IntN(len(addrs))], logins[r.IntN(len(logins))]
		switch k := r.IntN(100); {
		case k < 75:
			ev := failure(a, l, at.Add(-time.Duration(r.IntN(5))*time.Second), 1+r.IntN(3)*r.IntN(2))
			ev.Evidence = fmt.Sprintf("line %d", i)
			ops = append(ops, op{at, "fail " + a + " " + l, func(e *Engine) []Decision { return e.Observe(ev) }})
		case k < 85:
			ev := successEvent(a, l, at)
			ops = append(ops, op{at, "success " + a + " " + l, func(e *Engine) []Decision { return e.Observe(ev) }})
		case k < 93:
			ops = append(ops, op{at, "expire", func(e *Engine) []Decision { return e.Expire() }})
		case k < 95:
			p := netip.PrefixFrom(netip.MustParseAddr(a).Unmap(), 24+r.IntN(9))
			d := time.Duration(r.IntN(3)) * 30 * time.Minute
			ops = append(ops, op{at, "ban " + p.String(), func(e *Engine) []Decision {
				if d, err := e.BanManual(p, d, "op"); err == nil {
					return []Decision{d}
				}
				return nil
			}})
		case k < 97:
			p := netip.PrefixFrom(netip.MustParseAddr(a).Unmap(), 32)
			if netip.MustParseAddr(a).Is6() && !netip.MustParseAddr(a).Is4In6() {
				p, _ = netip.MustParseAddr(a).Prefix(64)
			}
			ops = append(ops, op{at, "unban " + p.String(), func(e *Engine) []Decision {
				if d, ok := e.Unban(p); ok {
					return []Decision{d}
				}
				return nil
			}})
		case k < 98:
			p := netip.PrefixFrom(netip.MustParseAddr(a).Unmap(), 28).Masked()
			ops = append(ops, op{at, "block " + p.String(), func(e *Engine) []Decision {
				if r.IntN(2) == 0 {
					if d, ok := e.UnblockManual(p); ok {
						return []Decision{d}
					}
					return nil
				}
				if d, err := e.BlockManual(p, "op"); err == nil {
					return []Decision{d}
				}
				return nil
			}})
		default:
			ops = append(ops, op{at, "unlock " + l, func(e *Engine) []Decision {
				if d, ok := e.Unlock(l); ok {
					return []Decision{d}
				}
				return nil
			}})
		}
	}
	return ops
}

func workloadConfig() Config {
	return Config{
		IP:             Threshold{Count: 4, Period: 10 * time.Minute},
		Login:          Threshold{Count: 5, Period: 15 * time.Minute},
		BanFor:         10 * time.Minute,
		BanFactor:      2,
		BanMax:         2 * time.Hour,
		PermanentAfter: 6,
		OffenderMemory: 6 * time.Hour,
		LockFor:        20 * time.Minute,
		SuccessMemory:  2 * time.Hour,
		Allow:          []netip.Prefix{mustPrefix("127.0.0.0/8")},
		Blocked:        []netip.Prefix{mustPrefix("203.0.113.16/30")},
		EvidenceLines:  4,
	}
}

// The blocks ops draw from a shared source of randomness; run them in order
// on one engine at a time.
func run(t *testing.T, e *Engine, clock *fakeClock, ops []op) []Decision {
	t.Helper()
	var out []Decision
	for _, o := range ops {
		clock.Set(o.at)
		out = append(out, o.do(e)...)
	}
	return out
}

// TestPersistenceRoundTrip runs a workload on one engine, and the same
// workload on a second engine that is persisted and restored into a third
// part of the way through. They must decide the same, except that the
// restored engine's evidence can lack lines from before the restart.
func TestPersistenceRoundTrip(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		for _, split := range []int{1, 700, 1500} {
			t.Run(fmt.Sprintf("seed %d split %d", seed, split), func(t *testing.T) {
				ops := workload(seed, 2000)
				cfg := workloadConfig()

				clock1 := newFakeClock(t0)
				one := newTestEngine(t, cfg, clock1)
				ops1 := workload(seed, 2000) // fresh closures: the block ops draw randomness
				run(t, one, clock1, ops1[:split])
				want := run(t, one, clock1, ops1[split:])

				clock2 := newFakeClock(t0)
				two := newTestEngine(t, cfg, clock2)
				saved := store{}
				for i := 0; i < split; i += 97 {
					run(t, two, clock2, ops[i:min(i+97, split)])
					saved.apply(two.TakeChanges(nil))
				}
				three := newTestEngine(t, cfg, clock2)
				restoreAll(t, three, saved)
				saved.apply(three.TakeChanges(nil)) // what Restore dropped
				if got, want := activeSummaries(three), activeSummaries(two); !slices.Equal(got, want) {
					t.Fatalf("Active() after restore:\n got %v\nwant %v", got, want)
				}
				for i, d := range three.Active() { // bans and locks keep their evidence
					if w := two.Active()[i]; d.Reason != w.Reason || !slices.Equal(d.Evidence, w.Evidence) {
						t.Fatalf("Active()[%d] after restore: %q %q, want %q %q", i, d.Reason, d.Evidence, w.Reason, w.Evidence)
					}
				}
				got := run(t, three, clock2, ops[split:])
				saved.apply(three.TakeChanges(nil))

				compareDecisions(t, got, want)
				if g, w := activeSummaries(three), activeSummaries(one); !slices.Equal(g, w) {
					t.Fatalf("Active() at the end:\n got %v\nwant %v", g, w)
				}
				if g, w := three.Stats(), one.Stats(); g != w {
					t.Fatalf("Stats at the end: got %+v, want %+v", g, w)
				}
				for _, a := range []string{"203.0.113.1", "203.0.113.17", "2001:db8:1::1", "198.51.100.9", "127.0.0.1"} {
					for _, l := range []string{"", "alice", "admin"} {
						addr := netip.MustParseAddr(a)
						if g, w := three.Check(addr, l), one.Check(addr, l); g.Allow != w.Allow || !g.Until.Equal(w.Until) {
							t.Errorf("Check(%s, %q): got %+v, want %+v", a, l, g, w)
						}
					}
				}

				// What was saved along the way restores to the same state
				// as the engine that never stopped.
				four := newTestEngine(t, cfg, clock2)
				restoreAll(t, four, saved)
				if g, w := activeSummaries(four), activeSummaries(one); !slices.Equal(g, w) {
					t.Fatalf("Active() restored at the end:\n got %v\nwant %v", g, w)
				}
				if g, w := four.Stats(), one.Stats(); g != w {
					t.Fatalf("Stats restored at the end: got %+v, want %+v", g, w)
				}
				full := store{}
				one.SetTracking(false)
				one.SetTracking(true)
				full.apply(one.TakeChanges(nil))
				compareStores(t, saved, full)
				for _, e := range []*Engine{one, two, three, four} {
					checkInvariants(t, e)
				}
			})
		}
	}
}

// activeSummaries summarises Active(), leaving out when blocks from the
// configuration were made: that is when the engine was made.
func activeSummaries(e *Engine) []string {
	ds := e.Active()
	for i := range ds {
		if ds[i].Action == Block && ds[i].Reason == staticBlockReason {
			ds[i].At = time.Time{}
		}
	}
	return summaries(ds)
}

func compareDecisions(t *testing.T, got, want []Decision) {
	t.Helper()
	var bans, locks int
	for i := range max(len(got), len(want)) {
		if i >= len(got) || i >= len(want) {
			t.Fatalf("decision %d: got %d decisions, want %d", i, len(got), len(want))
		}
		g, w := got[i], want[i]
		if summary(g) != summary(w) || g.Reason != w.Reason {
			t.Fatalf("decision %d:\n got %s (%s)\nwant %s (%s)", i, summary(g), g.Reason, summary(w), w.Reason)
		}
		// Evidence from before the restart may be missing, never wrong.
		if len(g.Evidence) > len(w.Evidence) || !slices.Equal(g.Evidence, w.Evidence[len(w.Evidence)-len(g.Evidence):]) {
			t.Fatalf("decision %d (%s): evidence %q is not a suffix of %q", i, summary(g), g.Evidence, w.Evidence)
		}
		switch g.Action {
		case Ban:
			bans++
		case Lock:
			locks++
		}
	}
	if bans < 5 || locks < 1 {
		t.Fatalf("the workload made %d bans and %d locks: too few to test anything", bans, locks)
	}
}

// compareStores compares two saved states, ignoring the evidence inside bans
// and locks (the restored engine can have less).
func compareStores(t *testing.T, got, want store) {
	t.Helper()
	for _, bucket := range []string{BucketAddrs, BucketLogins, BucketOffenders, BucketBans, BucketLocks, BucketBlocks} {
		g, w := got[bucket], want[bucket]
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				t.Errorf("%s %x: missing from the saved state", bucket, k)
				continue
			}
			if bucket == BucketBans || bucket == BucketLocks {
				gh, err1 := decodeHold(gv)
				wh, err2 := decodeHold(wv)
				if err1 != nil || err2 != nil {
					t.Fatalf("%s %x: %v %v", bucket, k, err1, err2)
				}
				if gh.at != wh.at || gh.until != wh.until || gh.reason != wh.reason || gh.manual != wh.manual {
					t.Errorf("%s %x: saved %+v, want %+v", bucket, k, gh, wh)
				}
				continue
			}
			if !bytes.Equal(gv, wv) {
				t.Errorf("%s %x: saved %x, want %x", bucket, k, gv, wv)
			}
		}
		for k := range g {
			if _, ok := w[k]; !ok {
				t.Errorf("%s %x: saved but no longer held", bucket, k)
			}
		}
	}
}

func TestTakeChangesHoldsOnlyWhatChanged(t *testing.T) {
	e := newTestEngine(t, baseConfig(), newFakeClock(t0))
	e.Observe(failure("203.0.113.7", "alice", t0, 1))
	recs := e.TakeChanges(nil)
	var got []string
	for _, r := range recs {
		got = append(got, r.Bucket)
	}
	if !slices.Equal(got, []string{BucketAddrs, BucketLogins}) {
		t.Fatalf("records for one failure: %v", got)
	}
	if recs := e.TakeChanges(nil); len(recs) != 0 {
		t.Fatalf("second TakeChanges: %d records, want none", len(recs))
	}
	e.Observe(failure("203.0.113.8", "", t0, 1))
	key := netip.MustParseAddr("203.0.113.8").As16()
	if recs := e.TakeChanges(recs[:0]); len(recs) != 1 || recs[0].Bucket != BucketAddrs || !bytes.Equal(recs[0].Key, key[:]) {
		t.Fatalf("after one more failure: %+v", recs)
	}
}

func TestTrackingOff(t *testing.T) {
	cfg := baseConfig()
	cfg.IP = Threshold{Count: 2, Period: time.Hour}
	clock := newFakeClock(t0)
	e := newTestEngine(t, cfg, clock)
	e.SetTracking(false)
	for i := range 50 {
		e.Observe(failure(fmt.Sprintf("192.0.2.%d", i%25), fmt.Sprint("u", i%3), t0, 1))
	}
	e.BlockManual(mustPrefix("10.0.0.0/8"), "")
	if recs := e.TakeChanges(nil); len(recs) != 0 {
		t.Fatalf("tracking off: %d records", len(recs))
	}
	if e.changedAddrs != nil || e.dirtyLogins != nil {
		t.Fatal("tracking off still keeps a dirty set")
	}
	// Turned on again, the next TakeChanges is a full dump.
	e.SetTracking(true)
	s := store{}
	s.apply(e.TakeChanges(nil))
	other := newTestEngine(t, cfg, clock)
	restoreAll(t, other, s)
	if g, w := summaries(other.Active()), summaries(e.Active()); !slices.Equal(g, w) || len(g) != 25+1+3 {
		t.Fatalf("restored from a full dump: %v, want %v", g, w)
	}
	if g, w := other.Stats(), e.Stats(); g != w {
		t.Fatalf("restored Stats %+v, want %+v", g, w)
	}
}

func TestRestoreDropsWhatNoLongerHolds(t *testing.T) {
	cfg := baseConfig()
	cfg.IP = Threshold{Count: 1, Period: time.Hour}
	clock := newFakeClock(t0)
	e := newTestEngine(t, cfg, clock)
	e.Observe(failure("203.0.113.7", "", t0, 1))
	e.Observe(failure("203.0.113.8", "", t0, 1))
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		e.Observe(failure(a, "alice", t0, 1))
	}
	s := store{}
	s.apply(e.TakeChanges(nil))

	// Two hours later, with 203.0.113.8 allowlisted: its ban and offences
	// go at once; the other bans and the lock have run out, are not active,
	// and are lifted by the next Expire.
	clock.Set(t0.Add(2 * time.Hour))
	cfg.Allow = []netip.Prefix{mustPrefix("203.0.113.8/32")}
	cfg.BanFactor, cfg.OffenderMemory = 2, Day
	r := newTestEngine(t, cfg, clock)
	restoreAll(t, r, s)
	if a := r.Active(); len(a) != 0 {
		t.Fatalf("Active() = %v; want nothing", summaries(a))
	}
	want := []string{"unban 192.0.2.1/32 at 2026-11-25 13:00:00", "unban 192.0.2.2/32 at 2026-11-25 13:00:00",
		"unban 192.0.2.3/32 at 2026-11-25 13:00:00", "unban 203.0.113.7/32 at 2026-11-25 13:00:00", "unlock alice at 2026-11-25 13:00:00"}
	if got := summaries(r.Expire()); !slices.Equal(got, want) {
		t.Fatalf("Expire after restore: %v, want %v", got, want)
	}
	s.apply(r.TakeChanges(nil))
	if n := len(s[BucketBans]) + len(s[BucketLocks]); n != 0 {
		t.Fatalf("%d bans and locks still saved", n)
	}
	if _, ok := s[BucketOffenders][string(netip.MustParseAddr("203.0.113.8").AsSlice())]; ok {
		t.Fatal("the allowlisted address's offences are still saved")
	}
	// 203.0.113.7's offence is remembered: its next ban grows.
	got := r.Observe(failure("203.0.113.7", "", clock.Now(), 1))
	if len(got) != 1 || FormatDuration(got[0].Until.Sub(got[0].At)) != "2h" {
		t.Fatalf("after restore: %v, want a second-offence ban", summaries(got))
	}
}

func TestRestoreRefusesGarbage(t *testing.T) {
	v4 := func(s string) []byte { a := netip.MustParseAddr(s).As16(); return a[:] }
	tests := []struct {
		name    string
		rec     Record
		wantErr string
	}{
		{"foreign bucket", Record{Bucket: "positions", Key: []byte("k"), Value: []byte{1}}, "not a bucket of the rules engine"},
		{"unknown rules bucket", Record{Bucket: "rules.nope", Key: []byte("k"), Value: []byte{1}}, "not a bucket"},
		{"short address key", Record{Bucket: BucketAddrs, Key: []byte{1, 2, 3}, Value: []byte{1, 0}}, "key is 3 bytes, want 16"},
		{"empty value", Record{Bucket: BucketAddrs, Key: v4("192.0.2.1"), Value: []byte{}}, "empty value"},
		{"newer version", Record{Bucket: BucketAddrs, Key: v4("192.0.2.1"), Value: []byte{9, 0}}, "unknown record version 9"},
		{"truncated count", Record{Bucket: BucketAddrs, Key: v4("192.0.2.1"), Value: []byte{1, 0x80}}, "truncated"},
		{"count beyond the value", Record{Bucket: BucketAddrs, Key: v4("192.0.2.1"), Value: []byte{1, 100, 2}}, "count 100 is out of range"},
		{"trailing bytes", Record{Bucket: BucketAddrs, Key: v4("192.0.2.1"), Value: []byte{1, 1, 2, 7}}, "1 unexpected bytes"},
		{"negative time", Record{Bucket: BucketOffenders, Key: v4("192.0.2.1"), Value: []byte{1, 1, 3}}, "not positive"},
		{"time overflow", Record{Bucket: BucketAddrs, Key: v4("192.0.2.1"), Value: append([]byte{1, 2, 2}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)}, "overflows"},
		{"empty login", Record{Bucket: BucketLogins, Key: nil, Value: []byte{1, 0, 0, 0}}, "not a normalised login"},
		{"login not normalised", Record{Bucket: BucketLogins, Key: []byte("Alice"), Value: []byte{1, 0, 0, 0}}, `key "Alice"`},
		{"too many successes", Record{Bucket: BucketLogins, Key: []byte("alice"), Value: []byte{1, 0, 0, 20}}, "count 20"},
		{"lock without end", Record{Bucket: BucketLocks, Key: []byte("alice"), Value: []byte{1, 0, 2, 0, 0, 0}}, "without end"},
		{"ban key length", Record{Bucket: BucketBans, Key: []byte{1, 2, 3}, Value: []byte{1}}, "want 5 or 17"},
		{"ban prefix too long", Record{Bucket: BucketBans, Key: []byte{192, 0, 2, 1, 33}, Value: []byte{1}}, "too long"},
		{"ban prefix not masked", Record{Bucket: BucketBans, Key: []byte{192, 0, 2, 1, 24}, Value: []byte{1}}, "canonical"},
		{"ban unknown flags", Record{Bucket: BucketBans, Key: []byte{192, 0, 2, 1, 32}, Value: []byte{1, 4, 0, 0, 0, 0}}, "unknown flags"},
		{"ban ends before it starts", Record{Bucket: BucketBans, Key: []byte{192, 0, 2, 1, 32}, Value: []byte{1, 0, 20, 10, 0, 0}}, "ends before"},
		{"ban reason beyond the value", Record{Bucket: BucketBans, Key: []byte{192, 0, 2, 1, 32}, Value: []byte{1, 0, 2, 0, 50, 'x'}}, "out of range"},
		{"block truncated", Record{Bucket: BucketBlocks, Key: []byte{192, 0, 2, 0, 24}, Value: []byte{1}}, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTestEngine(t, baseConfig(), newFakeClock(t0))
			err := e.Restore(tt.rec)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.rec.Bucket) {
				t.Fatalf("Restore = %v; want an error naming the bucket and saying %q", err, tt.wantErr)
			}
			if s := e.Stats(); s != (Stats{}) {
				t.Fatalf("a refused record changed the engine: %+v", s)
			}
		})
	}
}

func FuzzRestore(f *testing.F) {
	cfg := workloadConfig()
	clock := newFakeClock(t0)
	seed := newTestEngine(f, cfg, clock)
	for _, o := range workload(7, 400) {
		clock.Set(o.at)
		o.do(seed)
	}
	for _, r := range seed.TakeChanges(nil) {
		f.Add(r.Bucket, r.Key, r.Value)
	}
	f.Fuzz(func(t *testing.T, bucket string, key, value []byte) {
		e := newTestEngine(t, cfg, newFakeClock(t0.Add(time.Hour)))
		if err := e.Restore(Record{Bucket: bucket, Key: key, Value: value}); err != nil {
			return
		}
		// Whatever was accepted must be usable.
		e.Active()
		e.Check(netip.MustParseAddr("203.0.113.1"), "alice")
		e.Observe(&parsers.Event{Kind: parsers.AuthFailure, Time: t0.Add(time.Hour), Addr: netip.MustParseAddr("203.0.113.1"), Login: "alice", Attempts: 1})
		e.Expire()
		e.TakeChanges(nil)
		checkInvariants(t, e)
	})
}

func TestOwnsBucket(t *testing.T) {
	for _, b := range []string{BucketAddrs, BucketLogins, BucketOffenders, BucketBans, BucketLocks, BucketBlocks} {
		if !OwnsBucket(b) {
			t.Errorf("OwnsBucket(%q) = false", b)
		}
	}
	if OwnsBucket("positions") || OwnsBucket("meta") {
		t.Error("OwnsBucket claims a foreign bucket")
	}
}
