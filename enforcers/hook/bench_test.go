package hook

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkNativeCheck measures CHECK over loopback TCP and the unix
// socket, with concurrent clients each sending a request and waiting for
// its answer (as a mail server does), and with one client sending
// requests back to back. The engine holds 10,000 bans and a locked login;
// requests mix banned and clean addresses with and without a login. PING
// over the same connections is the baseline: the cost of the round trip
// without asking the rules.
//
//	go test ./enforcers/hook -run '^$' -bench NativeCheck -benchtime 200000x
//
// Reports req/s (all clients together) and the latency percentiles each
// request saw, in microseconds.
func BenchmarkNativeCheck(b *testing.B) {
	h := newTestHook(b, func(c *Config) {
		c.Postfix.Listen, c.Dovecot.Listen, c.Nginx.Listen = nil, nil, nil
		c.Limits.MaxConnections = 1024
	})
	for i := range 10000 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), 32)
		if _, err := h.engine.BanManual(p, time.Hour, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	h.lock(b, "alice@example.test")
	requests := [][]byte{
		[]byte("CHECK ip=203.0.1.7\n"),
		[]byte("CHECK ip=192.0.2.44 login=bob@example.test service=imap\n"),
		[]byte("CHECK ip=192.0.2.45\n"),
		[]byte("CHECK ip=192.0.2.46 login=alice@example.test\n"),
	}
	ping := [][]byte{[]byte("PING\n")}

	for _, network := range []string{"tcp", "unix"} {
		addr := h.addr(b, protoNative, network)
		for _, clients := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d", network, clients), func(b *testing.B) {
				benchRoundTrips(b, addr, clients, requests)
			})
			b.Run(fmt.Sprintf("%s/clients=%d/ping-baseline", network, clients), func(b *testing.B) {
				benchRoundTrips(b, addr, clients, ping)
			})
		}
	}
	b.Run("tcp/pipelined", func(b *testing.B) {
		benchPipelined(b, h.addr(b, protoNative, "tcp"), requests)
	})
}

// benchRoundTrips runs b.N requests over clients connections, each
// waiting for one answer before sending the next request.
func benchRoundTrips(b *testing.B, addr net.Addr, clients int, requests [][]byte) {
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.Dial(addr.Network(), addr.String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i, c := range conns {
		wg.Go(func() {
			r := bufio.NewReader(c)
			mine := make([]time.Duration, 0, b.N/clients+1)
			for n := next.Add(1); n <= int64(b.N); n = next.Add(1) {
				t0 := time.Now()
				if _, err := c.Write(requests[n%int64(len(requests))]); err != nil {
					b.Error(err)
					return
				}
				if _, err := r.ReadSlice('\n'); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			lat[i] = mine
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(pct(0.999), "p99.9-µs")
}

// benchPipelined has one client write b.N requests without waiting while
// it reads the answers.
func benchPipelined(b *testing.B, addr net.Addr, requests [][]byte) {
	c, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		w := bufio.NewWriterSize(c, 32<<10)
		for n := range b.N {
			w.Write(requests[n%len(requests)])
		}
		w.Flush()
	})
	r := bufio.NewReaderSize(c, 32<<10)
	for range b.N {
		if _, err := r.ReadSlice('\n'); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
}
