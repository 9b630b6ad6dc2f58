package source

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// benchLine is one mail-server-shaped line (about 130 bytes).
const benchLine = "2026-11-25T19:45:07.123456+00:00 mx1 postfix/smtpd[4242]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=admin"

// BenchmarkAppendLatency measures, with inotify, the time from a line's
// append (the start of its write) until the consumer of File.Run holds it,
// one line at a time, and reports its percentiles. Run it with a fixed count,
// e.g. -benchtime=2000x.
//
// steady: one File, its follower started and past its start-up check.
// after-start: each append is the first line written after a File started
// and delivered the file's one line, where the start-up window of
// nxadm/tail lies (see startcheck.go); its tail shows what a missed write
// costs.
func BenchmarkAppendLatency(b *testing.B) {
	b.Run("steady", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "mail.log")
		appendBenchLines(b, path, 1)
		f, err := NewFile(FileConfig{Name: "bench", Paths: []string{path}}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		out, stop := runBench(b, f)
		defer stop()
		takeLine(b, out)
		waitBench(b, "the start-up check", func() bool {
			st := f.Status()
			return len(st) == 1 && st[0].watching
		})
		w := openAppend(b, path)
		defer w.Close()
		lat := make([]time.Duration, 0, b.N)
		line := []byte(benchLine + "\n")
		for b.Loop() {
			start := time.Now()
			if _, err := w.Write(line); err != nil {
				b.Fatal(err)
			}
			takeLine(b, out)
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
	b.Run("after-start", func(b *testing.B) {
		dir := b.TempDir()
		lat := make([]time.Duration, 0, b.N)
		line := []byte(benchLine + "\n")
		round := 0
		for b.Loop() {
			path := filepath.Join(dir, "mail"+strconv.Itoa(round)+".log")
			round++
			appendBenchLines(b, path, 1)
			f, err := NewFile(FileConfig{Name: "bench", Paths: []string{path}}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			w := openAppend(b, path)
			out, stop := runBench(b, f)
			takeLine(b, out)
			start := time.Now()
			if _, err := w.Write(line); err != nil {
				b.Fatal(err)
			}
			takeLine(b, out)
			lat = append(lat, time.Since(start))
			stop()
			w.Close()
			os.Remove(path)
		}
		reportLatency(b, lat)
	})
}

// reportLatency reports the percentiles of lat in microseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	at := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(at(0.50), "p50-µs")
	b.ReportMetric(at(0.99), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds())/1e3, "max-µs")
}

func appendBenchLines(b *testing.B, path string, n int) {
	w := openAppend(b, path)
	defer w.Close()
	for range n {
		if _, err := w.WriteString(benchLine + "\n"); err != nil {
			b.Fatal(err)
		}
	}
}

func openAppend(b *testing.B, path string) *os.File {
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// runBench runs f; stop ends it and waits.
func runBench(b *testing.B, f *File) (<-chan Line, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Line)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, out) }()
	return out, func() {
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// takeLine takes one line, or fails after waitTimeout.
func takeLine(b *testing.B, out <-chan Line) {
	select {
	case <-out:
	case <-time.After(waitTimeout):
		b.Fatal("timed out waiting for a line")
	}
}

func waitBench(b *testing.B, what string, cond func() bool) {
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
