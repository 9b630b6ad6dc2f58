package agent

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/mailban/mailban/agent/config"
)

// BenchmarkReplay measures the offline pipeline (read, parse, count, decide)
// on the generated busy mail log, next to a baseline that only splits the
// same bytes into lines, so that the ratio says what parsing and rules cost
// on this machine today. For the full 2,000,000-line replay see README.md.
//
// MAILBAN_BENCH_LOG names another log to measure, such as the 2,000,000
// lines of gen-maillog.py:
//
//	python3 ../shared/bench/gen-maillog.py --lines 2000000 --out /tmp/bench.log
//	MAILBAN_BENCH_LOG=/tmp/bench.log go test ./agent -run '^$' -bench Replay -benchtime 3x -cpu 1
func BenchmarkReplay(b *testing.B) {
	path := "../testdata/logs/gen/default.log"
	if p := os.Getenv("MAILBAN_BENCH_LOG"); p != "" {
		path = p
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	lines := bytes.Count(data, []byte("\n"))
	cfg := config.Default()
	noHost := func() ([]netip.Prefix, error) { return nil, nil }

	b.Run("baseline=split-lines", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sc := bufio.NewScanner(bytes.NewReader(data))
			n := 0
			for sc.Scan() {
				n++
			}
			if n != lines {
				b.Fatalf("%d lines, want %d", n, lines)
			}
		}
		b.ReportMetric(float64(lines*b.N)/b.Elapsed().Seconds(), "lines/s")
	})
	b.Run("replay", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			sum, err := Replay(context.Background(), ReplayOptions{
				Config: cfg, Out: io.Discard, Now: time.Date(2025, 11, 25, 0, 0, 0, 0, time.UTC), HostAddresses: noHost,
			}, []ReplayInput{{Name: path, R: bytes.NewReader(data)}})
			if err != nil {
				b.Fatal(err)
			}
			if sum.Lines != lines {
				b.Fatalf("%d lines, want %d", sum.Lines, lines)
			}
		}
		b.ReportMetric(float64(lines*b.N)/b.Elapsed().Seconds(), "lines/s")
	})
}
