package agent

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/mailban/mailban/internal/netnstest"
)

// benchAddr is the i-th address of 198.18.0.0/15, the range set aside for
// benchmarks. Addresses only appear in log lines and set elements.
func benchAddr(i int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0xc6120000+uint32(i))
	return netip.AddrFrom4(b)
}

// BenchmarkBanLatency measures, with the real agent (file source, parser,
// rules, nftables enforcer in a namespace of its own), the time from
// appending the failure line that crosses the threshold to the moment the
// kernel has committed its address to the ban set, as seen by a netlink
// monitor. The two lines before it are appended and counted first, outside
// the measurement. in= is how many bans the set already holds: the kernel
// rebuilds an interval set's lookup table at each commit, so the cost of
// one ban grows with the set.
//
//	go test ./agent -run '^$' -bench BanLatency -benchtime 1000x
//
// Beside each, kernel-alone is the baseline of the same run: one element
// added to a set of the same size and kind by a bare netlink client, from
// the call to the kernel's acknowledgement of the commit. What mailban adds
// is the difference.
func BenchmarkBanLatency(b *testing.B) {
	for _, preload := range []int{0, 10_000, 100_000} {
		b.Run(fmt.Sprintf("in=%d", preload), func(b *testing.B) { benchBanLatency(b, preload) })
		b.Run(fmt.Sprintf("in=%d/kernel-alone", preload), func(b *testing.B) { benchKernelAdd(b, preload) })
	}
}

// benchKernelAdd adds one address at a time, with a timeout, to an
// interval set that holds preload of them already, and reports how long
// the kernel takes to commit each.
func benchKernelAdd(b *testing.B, preload int) {
	ns := netnstest.New(b)
	c, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		b.Fatal(err)
	}
	table := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "bench"})
	set := &nftables.Set{Table: table, Name: "ban4", KeyType: nftables.TypeIPAddr, Interval: true, HasTimeout: true}
	if err := c.AddSet(set, nil); err != nil {
		b.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		b.Fatal(err)
	}
	element := func(i int) []nftables.SetElement {
		a := benchAddr(i).As4()
		end := benchAddr(i + 1).As4()
		return []nftables.SetElement{{Key: a[:], Timeout: time.Hour}, {Key: end[:], IntervalEnd: true}}
	}
	for start := 0; start < preload; start += 1000 {
		var els []nftables.SetElement
		for i := start; i < min(preload, start+1000); i++ {
			els = append(els, element(2*i)...) // every other address: no two intervals touch
		}
		if err := c.SetAddElements(set, els); err != nil {
			b.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	var took []time.Duration
	i := preload
	for b.Loop() {
		if err := c.SetAddElements(set, element(2*i)); err != nil {
			b.Fatal(err)
		}
		i++
		start := time.Now()
		if err := c.Flush(); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	reportQuantiles(b, took)
}

func benchBanLatency(b *testing.B, preload int) {
	ns := netnstest.New(b)
	dir := b.TempDir()
	log := filepath.Join(dir, "mail.log")
	var pre strings.Builder
	for i := range preload {
		for range 3 {
			pre.WriteString(failureLine(benchAddr(i)))
		}
	}
	if err := os.WriteFile(log, []byte(pre.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	a, err := New(nftablesConfig(b, dir, "    netns: "+ns.Path), Options{HostAddresses: noHostAddresses})
	if err != nil {
		b.Fatal(err)
	}
	runAgent(b, a)
	waitUntil(b, fmt.Sprintf("%d bans preloaded", preload), func() bool {
		return metricValue(b, a.Registry(), "mailban_enforcer_set_entries") >= float64(preload)
	})

	// The monitor reports each transaction when the kernel commits it.
	// (It watches everything: google/nftables v0.3.0 tests its object
	// filter as (flags&1)<<type, so a filter for elements drops them.)
	mon, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		b.Fatal(err)
	}
	m := nftables.NewMonitor(nftables.WithMonitorEventBuffer(1024))
	events, err := mon.AddGenerationalMonitor(m)
	if err != nil {
		b.Fatal(err)
	}
	added := make(chan netip.Addr, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for evs := range events {
			for _, ev := range evs.Changes {
				elems, ok := ev.Data.([]nftables.SetElement)
				if ev.Type != nftables.MonitorEventTypeNewSetElem || !ok {
					continue
				}
				for _, el := range elems {
					if addr, ok := netip.AddrFromSlice(el.Key); ok && !el.IntervalEnd {
						added <- addr
					}
				}
			}
		}
	}()
	b.Cleanup(func() {
		m.Close()
		for { // let the monitor's goroutines end
			select {
			case <-added:
			case <-done:
				return
			}
		}
	})

	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	read := max(0, metricValue(b, a.Registry(), "mailban_lines_read_total"))
	var took []time.Duration
	i := preload
	for b.Loop() {
		b.StopTimer()
		addr := benchAddr(i)
		i++
		first := failureLine(addr) + failureLine(addr)
		if _, err := f.WriteString(first); err != nil {
			b.Fatal(err)
		}
		read += 2
		for metricValue(b, a.Registry(), "mailban_lines_read_total") < read {
			time.Sleep(200 * time.Microsecond)
		}
		line := failureLine(addr)
		// Two lines must not ban: nothing of addr may be in flight.
		for len(added) > 0 {
			if got := <-added; got == addr {
				b.Fatalf("%s banned before its third failure", addr)
			}
		}
		b.StartTimer()
		start := time.Now()
		if _, err := f.WriteString(line); err != nil {
			b.Fatal(err)
		}
		read++
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case got := <-added:
				if got == addr {
					break wait
				}
			case <-timeout:
				b.Fatalf("%s not in the kernel after 10s", addr)
			}
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	reportQuantiles(b, took)
}

// reportQuantiles reports the 50th, 90th and 99th percentiles and the
// maximum of took, in milliseconds.
func reportQuantiles(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	q := func(p float64) float64 {
		return float64(took[min(len(took)-1, int(p*float64(len(took))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.9), "p90-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(took[len(took)-1])/float64(time.Millisecond), "max-ms")
}
