package rules

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestConcurrentUse runs the pipeline's calls (Observe, Expire,
// TakeChanges) beside a hook server's (Check) and an operator's. Run it
// with -race; it also checks that no address is banned twice while its
// ban lasts.
func TestConcurrentUse(t *testing.T) {
	cfg := baseConfig()
	cfg.IP = Threshold{Count: 3, Period: time.Hour}
	cfg.Login = Threshold{Count: 20, Period: time.Hour}
	cfg.BanFor = Week // nothing expires during the test
	clock := newFakeClock(t0)
	e := newTestEngine(t, cfg, clock)

	const observers, events = 2, 2000
	decisions := make([][]Decision, observers)
	var wg sync.WaitGroup
	for o := range observers {
		wg.Go(func() {
			for i := range events {
				ev := failure(fmt.Sprintf("192.0.%d.%d", o, i%200), fmt.Sprint("user", i%7), clock.Now(), 1)
				decisions[o] = append(decisions[o], e.Observe(ev)...)
				if i%50 == 0 {
					e.Observe(successEvent(fmt.Sprintf("198.51.100.%d", i%250), "user1", clock.Now()))
				}
			}
		})
	}
	for c := range 2 {
		wg.Go(func() {
			for i := range events {
				e.Check(netip.AddrFrom4([4]byte{192, 0, byte(c), byte(i)}), fmt.Sprint("User", i%7))
			}
		})
	}
	wg.Go(func() {
		var recs []Record
		for i := range 200 {
			clock.Advance(time.Second)
			e.Expire()
			recs = e.TakeChanges(recs[:0])
			e.Active()
			e.Stats()
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)
			e.BlockManual(p, "")
			e.BanManual(p, time.Hour, "")
			e.Unban(p)
			e.UnblockManual(p)
			e.Unlock("user3")
		}
	})
	wg.Wait()

	banned := map[netip.Prefix]int{}
	for _, ds := range decisions {
		for _, d := range ds {
			if d.Action == Ban {
				banned[d.Prefix]++
			}
		}
	}
	if len(banned) != observers*200 {
		t.Errorf("%d addresses banned, want every one of the %d", len(banned), observers*200)
	}
	for p, n := range banned {
		if n != 1 {
			t.Errorf("%s banned %d times", p, n)
		}
		if v := e.Check(p.Addr(), ""); v.Allow {
			t.Errorf("%s was banned but Check lets it through", p)
		}
	}
	var active int
	for _, d := range e.Active() {
		if d.Action == Ban {
			active++
		}
	}
	if active != len(banned) {
		t.Errorf("Active() holds %d bans, want %d", active, len(banned))
	}
	checkInvariants(t, e)
}
