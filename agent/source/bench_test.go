package source

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// benchLines is how many lines the pre-written benchmark log holds.
const benchLines = 200_000

// writeBenchLog writes a log of mail-server-shaped lines (about 130 bytes
// each, like a busy Postfix and Dovecot host's) and returns its path and size.
func writeBenchLog(b *testing.B, lines int) (string, int64) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "mail.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range lines {
		ip := fmt.Sprintf("%d.%d.%d.%d", 11+i%200, i/256%256, i%256, 1+i%250)
		switch i % 4 {
		case 0:
			fmt.Fprintf(w, "2026-11-25T19:45:%02d.%06d+00:00 mx1 postfix/smtpd[%d]: connect from unknown[%s]\n", i%60, i%1000000, 1000+i%5000, ip)
		case 1:
			fmt.Fprintf(w, "2026-11-25T19:45:%02d.%06d+00:00 mx1 postfix/smtpd[%d]: warning: unknown[%s]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=admin\n", i%60, i%1000000, 1000+i%5000, ip)
		case 2:
			fmt.Fprintf(w, "2026-11-25T19:45:%02d.%06d+00:00 mx1 dovecot: imap-login: Disconnected: Connection closed (auth failed, 1 attempts in 2 secs): user=<bob@example.test>, method=PLAIN, rip=%s, lip=192.0.2.10, session=<wdJUER9hKcF/AAAi>\n", i%60, i%1000000, ip)
		default:
			fmt.Fprintf(w, "2026-11-25T19:45:%02d.%06d+00:00 mx1 postfix/smtpd[%d]: disconnect from unknown[%s] ehlo=1 auth=0/1 quit=1 commands=2/3\n", i%60, i%1000000, 1000+i%5000, ip)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return path, fi.Size()
}

// BenchmarkFileRun measures lines per second through File.Run: a pre-written
// file read from its beginning, through nxadm/tail, each line checked and
// given its cursor, to a consumer that only counts.
func BenchmarkFileRun(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			path, size := writeBenchLog(b, benchLines)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				f, err := NewFile(FileConfig{Name: "bench", Paths: []string{path}, Poll: mode.poll}, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				drain(b, f, benchLines)
			}
			b.ReportMetric(float64(benchLines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
		})
	}
}

// BenchmarkLineReader measures our own reader, which drains rotated files,
// copies and the rest of a file after a restart.
func BenchmarkLineReader(b *testing.B) {
	path, size := writeBenchLog(b, benchLines)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	lr := newLineReader(DefaultMaxLineBytes)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		end, err := lr.read(f, 0, false, func(text []byte, _ int64, _ bool) error {
			_ = string(text) // what delivery does
			n++
			return nil
		})
		if err != nil || end != size || n != benchLines {
			b.Fatalf("read %d lines to %d: %v", n, end, err)
		}
	}
	b.ReportMetric(float64(benchLines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// drain runs src until it has sent n lines, then stops it and waits for
// it to return.
func drain(b *testing.B, src interface {
	Run(context.Context, chan<- Line) error
}, n int) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Line, 1024)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	for range n {
		<-out
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
