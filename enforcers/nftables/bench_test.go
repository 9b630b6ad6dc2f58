package nftables

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailban/mailban/internal/netnstest"
	"github.com/mailban/mailban/rules"
)

// manyBans is n timed bans: half IPv4 addresses, half IPv6 /64s, with
// ends spread over a day, as a busy server's state might hold. The
// addresses are only set elements: no packet is sent to them.
func manyBans(n int, now time.Time) []rules.Decision {
	out := make([]rules.Decision, 0, n)
	for i := range n {
		until := now.Add(time.Hour + time.Duration(i%86400)*time.Second)
		var p netip.Prefix
		if i%2 == 0 {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(i)) // 10.0.0.0/8
			p = netip.PrefixFrom(netip.AddrFrom4(b), 32)
		} else {
			b := [16]byte{0x20, 0x01, 0x0d, 0xb8} // 2001:db8::/32
			binary.BigEndian.PutUint32(b[4:], uint32(i))
			p = netip.PrefixFrom(netip.AddrFrom16(b), 64)
		}
		out = append(out, rules.Decision{Action: rules.Ban, Prefix: p, Until: until})
	}
	return out
}

func benchEnforcer(b *testing.B, ns *netnstest.NS) (*Enforcer, *prometheus.Registry) {
	b.Helper()
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.NetNS = ns.Path
	e, err := New(cfg, nil, reg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e, reg
}

// Loading 100,000 bans into an empty table, as at the first start with a
// big state: structure and elements, in as few transactions as fit the
// socket buffer.
func BenchmarkLoad100k(b *testing.B) {
	ns := netnstest.New(b)
	e, _ := benchEnforcer(b, ns)
	active := manyBans(100_000, time.Now())
	ctx := context.Background()
	if err := e.Reconcile(ctx, nil); err != nil {
		b.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for b.Loop() {
		b.StopTimer()
		ns.MustExec(b, "nft", "delete", "table", "inet", "mailban")
		b.StartTimer()
		if err := e.Reconcile(ctx, active); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := e.views[ban4].entries + e.views[ban6].entries; got != len(active) {
		b.Fatalf("%d entries in the kernel, want %d", got, len(active))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(len(active))/(b.Elapsed().Seconds()/float64(b.N)), "bans/s")
	// What the enforcer keeps per ban (its view), the decisions aside.
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(len(active)), "view-B/ban")
}

// Restarting with n bans the kernel already holds: read them all, find
// nothing to change, rewrite only the chains. Reading is the kernel's set
// dump, which restarts its walk for every 32 KiB message.
func BenchmarkReconcileUnchanged(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("bans=%d", n), func(b *testing.B) {
			ns := netnstest.New(b)
			e, _ := benchEnforcer(b, ns)
			active := manyBans(n, time.Now())
			ctx := context.Background()
			if err := e.Reconcile(ctx, active); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := e.Reconcile(ctx, active); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// One new ban applied on top of n others: the routine update, from Apply
// to the kernel's answer, with its distribution. The kernel's cost grows
// with the set (it rebuilds its lookup structure at each commit).
func BenchmarkApplyOneBan(b *testing.B) {
	for _, n := range []int{0, 1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("in=%d", n), func(b *testing.B) {
			ns := netnstest.New(b)
			e, _ := benchEnforcer(b, ns)
			now := time.Now()
			if err := e.Reconcile(context.Background(), manyBans(n, now)); err != nil {
				b.Fatal(err)
			}
			var took []time.Duration
			i := 0
			for b.Loop() {
				var a [4]byte
				binary.BigEndian.PutUint32(a[:], 0xc6336400+uint32(i%65536)) // from 198.51.100.0
				d := rules.Decision{Action: rules.Ban, Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 32), Until: now.Add(time.Hour + time.Duration(i)*time.Second)}
				i++
				start := time.Now()
				if err := e.Apply(context.Background(), []rules.Decision{d}); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			reportQuantiles(b, took)
		})
	}
}

func reportQuantiles(b *testing.B, took []time.Duration) {
	if len(took) == 0 {
		return
	}
	slices.Sort(took)
	q := func(p float64) float64 {
		return float64(took[min(len(took)-1, int(p*float64(len(took))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(took[len(took)-1])/float64(time.Millisecond), "max-ms")
}
