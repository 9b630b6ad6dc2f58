package source

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait for a file-system event to show in the output.
const waitTimeout = 20 * time.Second

// modes are the two ways of following a file every scenario runs in.
var modes = []struct {
	name string
	poll bool
}{{"inotify", false}, {"poll", true}}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testConfig is a configuration with short check intervals, so that tests
// see rotations quickly, and a long grace that only the fake clock ends.
func testConfig(poll bool, paths ...string) FileConfig {
	return FileConfig{
		Name:           "test",
		Paths:          paths,
		Poll:           poll,
		PollInterval:   10 * time.Millisecond,
		RescanInterval: 20 * time.Millisecond,
		RotatedGrace:   time.Hour,
	}
}

// run is one File.Run with everything it delivered.
type run struct {
	t      *testing.T
	file   *File
	clock  *fakeClock
	cancel context.CancelFunc
	done   chan error

	gate sync.Mutex // held by the test to stop taking lines: a slow consumer

	mu     sync.Mutex
	lines  []Line
	cursor map[string][]byte // per stream, the last non-nil cursor: what the agent would save
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testWriter sends log output to t.Log, so that it shows only for failures
// (and with -v).
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startRun starts a File with cfg and saved cursors and collects its lines
// until stop is called (or the test ends).
func startRun(t *testing.T, cfg FileConfig, saved map[string][]byte) *run {
	t.Helper()
	f, err := NewFile(cfg, saved, testLogger(t))
	if err != nil {
		t.Fatalf("NewFile: %v", err)
	}
	clock := newFakeClock()
	f.now = clock.Now
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{t: t, file: f, clock: clock, cancel: cancel, done: make(chan error, 1), cursor: map[string][]byte{}}
	out := make(chan Line)
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for {
			r.gate.Lock() // wait while the test holds the gate
			r.gate.Unlock()
			select {
			case l := <-out:
				r.mu.Lock()
				r.lines = append(r.lines, l)
				if l.Cursor.Value != nil {
					r.cursor[l.Cursor.Stream] = l.Cursor.Value
				}
				r.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		r.done <- f.Run(ctx, out)
		<-collected
		close(r.done)
	}()
	t.Cleanup(func() { r.stop() })
	return r
}

// stop ends the run and returns the cursors to resume from.
func (r *run) stop() map[string][]byte {
	r.t.Helper()
	r.cancel()
	if err, ok := <-r.done; ok && err != nil {
		r.t.Errorf("Run returned %v, want nil", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps(r.cursor)
}

func maps(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (r *run) snapshot() []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

// waitLines waits until at least n lines arrived.
func (r *run) waitLines(n int) {
	r.t.Helper()
	got := 0
	waitFor(r.t, fmt.Sprintf("%d lines", n), func() bool { got = len(r.snapshot()); return got >= n },
		func() string {
			return fmt.Sprintf("got %d: first %q last %q", got, firstText(r.snapshot()), lastText(r.snapshot()))
		})
}

// waitText waits until a line with this text arrived.
func (r *run) waitText(text string) {
	r.t.Helper()
	waitFor(r.t, fmt.Sprintf("line %q", text), func() bool {
		return slices.ContainsFunc(r.snapshot(), func(l Line) bool { return l.Text == text })
	})
}

// waitStatus waits until the stream of path reports what ok accepts.
func (r *run) waitStatus(path, what string, ok func(StreamStatus) bool) StreamStatus {
	r.t.Helper()
	var last StreamStatus
	waitFor(r.t, path+" "+what, func() bool {
		for _, st := range r.file.Status() {
			if st.Stream == path {
				last = st
				return ok(st)
			}
		}
		return false
	})
	return last
}

// waitFor polls cond until it holds or waitTimeout passes. It waits for
// files and goroutines to do something, never for time itself to pass.
func waitFor(t *testing.T, what string, cond func() bool, explain ...func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			for _, e := range explain {
				what += "; " + e()
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// texts returns the text of each line.
func texts(lines []Line) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

// numbered returns the lines "<tag> <n>" for n in [from, to).
func numbered(tag string, from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, tag+" "+strconv.Itoa(i))
	}
	return out
}

// appendLines appends each of lines and a newline to path in one write.
func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	writeLines(t, f, lines...)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeLines(t *testing.T, f *os.File, lines ...string) {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
}

// checkExactlyOnce fails unless got holds each of want exactly once and
// nothing else, and lines of one tag arrived in the order they were written.
func checkExactlyOnce(t *testing.T, got []Line, want ...[]string) {
	t.Helper()
	expect := map[string]int{}
	for _, w := range want {
		for _, s := range w {
			expect[s]++
		}
	}
	seen := map[string]int{}
	lastOfTag := map[string]int{}
	var problems []string
	for _, l := range got {
		seen[l.Text]++
		tag, num, ok := strings.Cut(l.Text, " ")
		if n, err := strconv.Atoi(num); ok && err == nil {
			if prev, ok := lastOfTag[tag]; ok && n < prev {
				problems = append(problems, fmt.Sprintf("%q arrived after %s %d", l.Text, tag, prev))
			}
			lastOfTag[tag] = n
		}
	}
	for s, n := range seen {
		if expect[s] == 0 {
			problems = append(problems, fmt.Sprintf("unexpected %q ×%d", s, n))
		} else if n != expect[s] {
			problems = append(problems, fmt.Sprintf("%q ×%d, want ×%d", s, n, expect[s]))
		}
	}
	for s := range expect {
		if seen[s] == 0 {
			problems = append(problems, fmt.Sprintf("missing %q", s))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("… and %d more", len(problems)-20))
		}
		t.Errorf("got %d lines, want %d:\n%s", len(got), len(expect), strings.Join(problems, "\n"))
	}
}

func firstText(lines []Line) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[0].Text
}

func lastText(lines []Line) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1].Text
}
