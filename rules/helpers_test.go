package rules

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mailban/mailban/parsers"
)

// fakeClock is a Clock that tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// t0 is when every test's story begins.
var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

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
func baseConfig() Config {
	return Config{
		IP:            Threshold{Count: 5, Period: 10 * time.Minute},
		Login:         Threshold{Count: 3, Period: 10 * time.Minute},
		BanFor:        time.Hour,
		LockFor:       time.Hour,
		SuccessMemory: Day,
	}
}

func newTestEngine(t testing.TB, cfg Config, clock Clock) *Engine {
	t.Helper()
	e, err := NewEngine(cfg, clock)
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	return e
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// summary is a decision without its evidence, written for comparisons.
func summary(d Decision) string {
	s := d.Action.String()
	if d.Prefix.IsValid() {
		s += " " + d.Prefix.String()
	}
	if d.Login != "" {
		s += " " + d.Login
	}
	s += " at " + d.At.UTC().Format(time.DateTime)
	if d.Action == Ban || d.Action == Lock {
		if d.Until.IsZero() {
			s += " forever"
		} else {
			s += " for " + FormatDuration(d.Until.Sub(d.At))
		}
	}
	return s
}

func summaries(ds []Decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, summary(d))
	}
	return out
}

// checkInvariants checks the bookkeeping no test sees directly: every ring
// in the slab belongs to exactly one window, every window's ring is in
// use, and (while tracking) every window flagged as changed is listed.
func checkInvariants(t testing.TB, e *Engine) {
	t.Helper()
	e.mu.RLock()
	defer e.mu.RUnlock()
	owner := map[uint64]string{}
	own := func(w window, who string) {
		if w.ref&refRing == 0 {
			return
		}
		i := w.ref & refValue
		if i >= uint64(len(e.slab.rings)) {
			t.Fatalf("%s: ring %d is outside the slab", who, i)
		}
		if prev, ok := owner[i]; ok {
			t.Fatalf("%s and %s share ring %d", who, prev, i)
		}
		if e.slab.rings[i].buf == nil {
			t.Fatalf("%s: ring %d was given back", who, i)
		}
		owner[i] = who
	}
	listed := map[groupKey]bool{}
	for _, k := range e.changedAddrs {
		listed[k] = true
	}
	for k, w := range e.addrs {
		own(w, netip.AddrFrom16(k).String())
		if w.count(&e.slab) == 0 {
			t.Errorf("address %s holds an empty window", netip.AddrFrom16(k))
		}
		if e.tracking && w.dirty() && !listed[k] {
			t.Errorf("address %s is flagged as changed but not listed", netip.AddrFrom16(k))
		}
	}
	for l, ls := range e.logins {
		own(ls.win, "login "+l)
	}
	if len(owner) != e.slab.used() {
		t.Fatalf("%d rings in use, %d owned by windows", e.slab.used(), len(owner))
	}
}
