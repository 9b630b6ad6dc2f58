package rules

import (
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/mailban/mailban/parsers"
)

// benchConfig counts 10 failures an hour per address and 10 an hour per
// login, as a busy server would.
func benchConfig() Config {
	return Config{
		IP:             Threshold{Count: 10, Period: time.Hour},
		Login:          Threshold{Count: 10, Period: time.Hour},
		BanFor:         time.Hour,
		BanFactor:      2,
		OffenderMemory: Week,
		LockFor:        time.Hour,
		SuccessMemory:  Day,
		Allow:          []netip.Prefix{mustPrefix("127.0.0.0/8"), mustPrefix("::1/128"), mustPrefix("192.0.2.10/32"), mustPrefix("2001:db8::10/128")},
	}
}

// nthIPv4 is the i-th address from 11.0.0.0 up, clear of the allowlist.
func nthIPv4(i int) netip.Addr {
	n := uint32(0x0B000000 + i)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func benchLine(i int) string {
	return "2026-11-25T12:00:00.000000+00:00 mx1 postfix/smtpd[1234]: warning: unknown[" + strconv.Itoa(i) + "]: SASL LOGIN authentication failed"
}

// BenchmarkObserveDistinctIPs: every event is a new address's first
// failure (a botnet spraying), with no login; no decision is made.
func BenchmarkObserveDistinctIPs(b *testing.B) {
	for _, tracking := range []bool{false, true} {
		b.Run(fmt.Sprintf("tracking=%v", tracking), func(b *testing.B) {
			clock := newFakeClock(t0.Add(time.Hour))
			e := newTestEngine(b, benchConfig(), clock)
			e.SetTracking(tracking)
			ev := &parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Time: t0, Evidence: benchLine(0)}
			var recs []Record
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				ev.Addr = nthIPv4(i)
				ev.Time = t0.Add(time.Duration(i) * time.Microsecond)
				if e.Observe(ev) != nil {
					b.Fatal("decided")
				}
				i++
				if tracking && i%1024 == 0 {
					recs = e.TakeChanges(recs[:0]) // as the agent commits each batch
				}
			}
		})
	}
}

// BenchmarkObserveHotIP: one address failing over and over, never reaching
// the threshold (five failures per period against a count of ten), with
// and without a login counted too.
func BenchmarkObserveHotIP(b *testing.B) {
	for _, login := range []string{"", "alice@example.com"} {
		for _, tracking := range []bool{false, true} {
			b.Run(fmt.Sprintf("login=%v/tracking=%v", login != "", tracking), func(b *testing.B) {
				cfg := benchConfig()
				clock := newFakeClock(t0)
				e := newTestEngine(b, cfg, clock)
				e.SetTracking(tracking)
				ev := &parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Addr: netip.MustParseAddr("203.0.113.7"),
					Login: login, Evidence: benchLine(7)}
				step := cfg.IP.Period / 5
				at := t0
				var recs []Record
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					at = at.Add(step)
					ev.Time = at
					clock.Set(at)
					if e.Observe(ev) != nil {
						b.Fatal("decided")
					}
					i++
					if tracking && i%1024 == 0 {
						recs = e.TakeChanges(recs[:0])
					}
				}
			})
		}
	}
}

// BenchmarkCheck asks about addresses and logins with 10000 bans, a few
// blocks and locks held: what a hook server does per connection.
func BenchmarkCheck(b *testing.B) {
	cfg := benchConfig()
	cfg.IP.Count = 1
	cfg.Blocked = []netip.Prefix{mustPrefix("10.0.0.0/8"), mustPrefix("2001:db8:bad::/48")}
	clock := newFakeClock(t0)
	e := newTestEngine(b, cfg, clock)
	for i := range 10000 {
		e.Observe(&parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Addr: nthIPv4(i * 2), Time: t0})
	}
	for i := range 10 {
		for j := range 10 {
			e.Observe(&parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Addr: nthIPv4(100000 + i*10 + j), Login: fmt.Sprint("locked", i), Time: t0})
		}
	}
	e.Observe(successEvent("198.51.100.7", "locked1", t0))
	for _, c := range []struct {
		name  string
		login string
	}{{"address", ""}, {"unlocked login", "alice@example.com"}, {"locked login", "locked1"}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				addr := nthIPv4(i % 20000) // half of them banned
				if i%8 == 0 {
					addr = netip.MustParseAddr("198.51.100.7")
				}
				e.Check(addr, c.login)
				i++
			}
		})
	}
}

// BenchmarkMemoryPerKey inserts one failure each from a million distinct
// IPv4 addresses and reports the heap the engine grew by per address.
// Run it with -benchtime=1x.
func BenchmarkMemoryPerKey(b *testing.B) {
	const keys = 1_000_000
	for _, tracking := range []bool{false, true} {
		b.Run(fmt.Sprintf("tracking=%v", tracking), func(b *testing.B) {
			var perKey, nsPerKey float64
			for range b.N {
				b.StopTimer()
				clock := newFakeClock(t0.Add(time.Hour))
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				e := newTestEngine(b, benchConfig(), clock)
				e.SetTracking(tracking)
				ev := &parsers.Event{Kind: parsers.AuthFailure, Attempts: 1}
				b.StartTimer()
				start := time.Now()
				for i := range keys {
					ev.Addr = nthIPv4(i)
					ev.Time = t0.Add(time.Duration(i) * time.Microsecond)
					ev.Evidence = benchLine(i)
					e.Observe(ev)
				}
				nsPerKey += float64(time.Since(start).Nanoseconds()) / keys
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&after)
				if s := e.Stats(); s.Addresses != keys {
					b.Fatalf("tracking %d addresses, want %d", s.Addresses, keys)
				}
				perKey += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / keys
				runtime.KeepAlive(e)
			}
			b.ReportMetric(perKey/float64(b.N), "B/key")
			b.ReportMetric(nsPerKey/float64(b.N), "ns/key")
		})
	}
}

// BenchmarkExpire visits a million windows, none of which has run out: the
// cost of one Expire call with a botnet's worth of state.
func BenchmarkExpire(b *testing.B) {
	const keys = 1_000_000
	clock := newFakeClock(t0.Add(time.Minute))
	e := newTestEngine(b, benchConfig(), clock)
	e.SetTracking(false)
	ev := &parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Time: t0}
	for i := range keys {
		ev.Addr = nthIPv4(i)
		e.Observe(ev)
	}
	b.ResetTimer()
	for b.Loop() {
		e.Expire()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/keys, "ns/key")
}

// BenchmarkTakeChanges is the persistence cost per changed address: one
// failure each from 1024 addresses, then one TakeChanges.
func BenchmarkTakeChanges(b *testing.B) {
	clock := newFakeClock(t0.Add(time.Hour))
	e := newTestEngine(b, benchConfig(), clock)
	ev := &parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Time: t0}
	var recs []Record
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		for range 1024 {
			ev.Addr = nthIPv4(i % (1 << 20))
			e.Observe(ev)
			i++
		}
		b.StartTimer()
		recs = e.TakeChanges(recs[:0])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1024, "ns/record")
}
