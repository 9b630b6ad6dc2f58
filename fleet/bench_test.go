package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/fleet/redistest"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
	"github.com/mailban/mailban/rules/rulestest"
)

func benchConfig() rules.Config {
	return rules.Config{
		IP:             rules.Threshold{Count: 10, Period: time.Hour},
		Login:          rules.Threshold{Count: 30, Period: time.Hour},
		BanFor:         time.Hour,
		BanFactor:      2,
		OffenderMemory: rules.Week,
		LockFor:        time.Hour,
		SuccessMemory:  rules.Day,
	}
}

func nthIPv4(i int) netip.Addr {
	n := uint32(0x0B000000 + i)
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// BenchmarkFleetTally is a host seeing failures as fast as it can read
// them: bursts of 1024 (the agent's bound), each one ObserveBatch and so
// one round trip to a local redis-server. "spray" is a botnet, every
// failure a new address and no login (no decisions); "stuffing" adds a
// login from a list of 1000 to each, which locks them and bans nearly
// every address after; "hot" is 64 addresses and 8 logins failing over
// and over (bans and locks happen).
// It reports failures per second, round trips per burst, the bytes sent
// and read per failure, and Redis's memory per address key.
//
// Each mix runs first through an engine alone (store=memory), the
// single-host baseline of the same run, then through Redis (store=redis).
func BenchmarkFleetTally(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	for _, mix := range []string{"spray", "stuffing", "hot"} {
		b.Run(mix+"/store=memory", func(b *testing.B) {
			e, err := rules.NewEngine(benchConfig(), rulestest.NewFakeClock(rulestest.T0.Add(time.Hour)))
			if err != nil {
				b.Fatal(err)
			}
			evs, ptrs := newBurst()
			var ds []rules.Decision
			n := 0
			start := time.Now()
			for b.Loop() {
				n = fillBurst(evs, mix, n)
				if ds, err = e.ObserveBatch(ptrs, ds[:0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "failures/s")
		})
		b.Run(mix+"/store=redis", func(b *testing.B) {
			if _, err := srv.Do("FLUSHALL"); err != nil {
				b.Fatal(err)
			}
			clock := rulestest.NewFakeClock(rulestest.T0.Add(time.Hour))
			e, err := rules.NewEngine(benchConfig(), clock)
			if err != nil {
				b.Fatal(err)
			}
			s := newTestStore(b, srv, "bench", "h1", clock)
			connect(b, s, e)
			before := s.Stats()
			memBefore := usedMemory(b, srv)
			evs, ptrs := newBurst()
			var ds []rules.Decision
			n := 0
			start := time.Now()
			for b.Loop() {
				n = fillBurst(evs, mix, n)
				ds, err = e.ObserveBatch(ptrs, ds[:0])
				if err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			st := s.Stats()
			if st.LocalEvents != 0 || st.Errors != 0 {
				b.Fatalf("the store failed: %+v", st)
			}
			bursts := float64(b.N)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "failures/s")
			b.ReportMetric(float64(st.RoundTrips-before.RoundTrips)/bursts, "roundtrips/burst")
			b.ReportMetric(float64(st.BytesSent-before.BytesSent)/float64(n), "sent-B/failure")
			b.ReportMetric(float64(st.BytesRead-before.BytesRead)/float64(n), "read-B/failure")
			if mix == "spray" {
				// MEMORY USAGE of the last 100 address keys: the key, its
				// value and Redis's bookkeeping of them (not the hash
				// tables' slots, about 16 more bytes a key).
				var sum int
				for i := n - 100; i < n; i++ {
					out, err := srv.Do("MEMORY", "USAGE", "{bench}:a:"+nthIPv4(i).String()+"/32")
					v, _ := strconv.Atoi(strings.TrimPrefix(out, ":"))
					if err != nil || v == 0 {
						b.Fatalf("MEMORY USAGE: %q %v", out, err)
					}
					sum += v
				}
				b.ReportMetric(float64(sum)/100, "redis-B/addr-key")
				keys, _ := srv.Do("DBSIZE")
				k, _ := strconv.Atoi(strings.TrimPrefix(keys, ":"))
				b.ReportMetric(float64(usedMemory(b, srv)-memBefore)/float64(k), "used_memory-B/key")
			}
		})
	}
}

// newBurst is room for one burst of 1024 events (the agent's bound).
func newBurst() ([]parsers.Event, []*parsers.Event) {
	const burst = 1024
	evs := make([]parsers.Event, burst)
	ptrs := make([]*parsers.Event, burst)
	for i := range evs {
		ptrs[i] = &evs[i]
	}
	return evs, ptrs
}

// fillBurst writes the failures n, n+1, ... of mix into evs and returns
// the number of the next one.
func fillBurst(evs []parsers.Event, mix string, n int) int {
	for i := range evs {
		ev := &evs[i]
		*ev = parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Time: rulestest.T0.Add(time.Duration(n) * time.Microsecond),
			Evidence: "2026-11-25T12:00:00 mx1 postfix/smtpd[1]: warning: unknown[" + strconv.Itoa(n) + "]: SASL LOGIN authentication failed"}
		switch mix {
		case "spray":
			ev.Addr = nthIPv4(n)
		case "stuffing":
			ev.Addr, ev.Login = nthIPv4(n), "user"+strconv.Itoa(n%1000)
		default:
			ev.Addr, ev.Login = nthIPv4(n%64), "user"+strconv.Itoa(n%8)
		}
		n++
	}
	return n
}

func usedMemory(b *testing.B, srv *redistest.Server) int64 {
	b.Helper()
	out, err := srv.Info("memory")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no used_memory in INFO")
	return 0
}

// BenchmarkFleetDecisionLatency is the time from a ban decided on one host
// to its arrival on another through the stream, in milliseconds.
func BenchmarkFleetDecisionLatency(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	clock := rulestest.NewFakeClock(time.Now())
	cfg := benchConfig()
	cfg.IP = rules.Threshold{Count: 1, Period: time.Hour}
	ea, _ := rules.NewEngine(cfg, clock)
	eb, _ := rules.NewEngine(cfg, clock)
	sa := newTestStore(b, srv, "lat", "a", clock)
	sb := newTestStore(b, srv, "lat", "b", clock)
	connect(b, sa, ea)
	connect(b, sb, eb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sb.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var total time.Duration
	i := 0
	for b.Loop() {
		addr := nthIPv4(i)
		i++
		start := time.Now()
		ds, err := ea.ObserveBatch([]*parsers.Event{{Kind: parsers.AuthFailure, Addr: addr, Attempts: 1, Time: clock.Now()}}, nil)
		if err != nil || len(ds) != 1 {
			b.Fatalf("no ban: %v %v", ds, err)
		}
		for got := false; !got; {
			select {
			case rs := <-sb.Decisions():
				for _, d := range rs {
					got = got || d.Prefix.Addr() == addr
				}
			case <-time.After(10 * time.Second):
				b.Fatal(fmt.Sprintf("ban of %s did not arrive", addr))
			}
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/decision")
}
