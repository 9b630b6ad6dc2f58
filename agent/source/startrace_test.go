package source

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/nxadm/tail/watch"
)

// TestFileWriteWhileFollowerStarts: nxadm/tail reads a file to its end and
// only then adds its inotify watch, so a line written in between wakes
// nobody. The test holds that window open: it parks the library's shared
// inotify goroutine (an event for a file of the test's own that nobody
// receives), lets the follower read to the end, whereupon it waits for that
// goroutine to add its watch, and writes a line. The line must come, and by
// inotify: the poll interval of an hour keeps the stat checks and the
// watchdog out.
func TestFileWriteWhileFollowerStarts(t *testing.T) {
	cases := []struct {
		name   string
		resume bool // resume at a saved cursor after the file's last line
	}{
		{"from the beginning", false},
		{"resumed at the end", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mail.log")
			appendLines(t, path, "old 0")
			var saved map[string][]byte
			if tc.resume {
				saved = map[string][]byte{path: cursorAtEnd(t, path)}
			}
			cfg := testConfig(false, path)
			cfg.PollInterval = time.Hour
			f, err := NewFile(cfg, saved, testLogger(t)) // starts the library's inotify goroutine
			if err != nil {
				t.Fatal(err)
			}

			release := parkInotifyTracker(t, filepath.Join(dir, "parker"))
			l := startLines(t, f)
			if !tc.resume {
				l.want("old 0")
			}
			waitGoroutine(t, "the follower at its first end, adding its watch", "watch.(*InotifyFileWatcher).ChangeEvents(")
			appendLines(t, path, "new 0")
			release()
			l.want("new 0")

			// The follower still works by inotify.
			appendLines(t, path, "new 1")
			l.want("new 1")
			// Restarts shows that the window was met, and closed by a restart.
			if st := f.Status(); len(st) != 1 || st[0].Mode != "inotify" || st[0].Restarts == 0 {
				t.Errorf("status %+v, want mode inotify after a restart", st)
			}
		})
	}
}

// appendRounds bounds TestFileAppendRightAfterStart.
const appendRounds = 100

// TestFileAppendRightAfterStart is the start-up window met by chance, without
// holding it open: each round starts a File, and appends a line as soon as
// the first one arrives (or, resuming after it, as soon as the follower
// runs). Without the start-up check, about one round in three missed its
// line under -race, one in a hundred without. Again no watchdog.
func TestFileAppendRightAfterStart(t *testing.T) {
	for _, resume := range []bool{false, true} {
		name := "from the beginning"
		if resume {
			name = "resumed at the end"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			for round := range appendRounds {
				path := filepath.Join(dir, "mail"+strconv.Itoa(round)+".log")
				appendLines(t, path, "old 0")
				var saved map[string][]byte
				if resume {
					saved = map[string][]byte{path: cursorAtEnd(t, path)}
				}
				cfg := testConfig(false, path)
				cfg.PollInterval = time.Hour
				f, err := NewFile(cfg, saved, testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				l, done := runLines(ctx, t, f)
				if resume {
					waitFor(t, "the follower", func() bool {
						runtime.Gosched()
						st := f.Status()
						return len(st) == 1 && st[0].follower != ""
					})
				} else {
					l.want("old 0")
				}
				line := "new " + strconv.Itoa(round)
				writeLines(t, w, line)
				l.want(line)
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// parkInotifyTracker blocks nxadm/tail's process-wide inotify goroutine:
// it watches name through the library and writes to it, and the goroutine
// then waits to hand over the event, which nobody receives, until release
// is called. Meanwhile no follower can add a watch.
func parkInotifyTracker(t *testing.T, name string) (release func()) {
	t.Helper()
	appendLines(t, name, "x")
	if err := watch.Watch(name); err != nil {
		t.Fatal(err)
	}
	appendLines(t, name, "y")
	waitGoroutine(t, "the library's inotify goroutine parked", "watch.(*InotifyTracker).sendEvent(")
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		if err := watch.RemoveWatch(name); err != nil { // also ends the pending hand-over
			t.Errorf("remove the parking watch: %v", err)
		}
	}
	t.Cleanup(release)
	return release
}

// waitGoroutine waits until some goroutine's stack holds frame (a
// function's name and its opening parenthesis, so that the goroutines it
// starts, named name.funcN, do not count).
func waitGoroutine(t *testing.T, what, frame string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	waitFor(t, what, func() bool {
		n := runtime.Stack(buf, true)
		return bytes.Contains(buf[:n], []byte(frame))
	})
}

// lineFeed is a File's Run whose lines the test takes one by one.
type lineFeed struct {
	t   *testing.T
	out chan Line
}

// startLines runs f until the test ends.
func startLines(t *testing.T, f *File) *lineFeed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l, done := runLines(ctx, t, f)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return l
}

// runLines runs f until ctx is done; done receives what Run returned.
func runLines(ctx context.Context, t *testing.T, f *File) (l *lineFeed, done <-chan error) {
	out := make(chan Line)
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx, out) }()
	return &lineFeed{t: t, out: out}, errc
}

// want takes the next line and fails unless it is text.
func (l *lineFeed) want(text string) {
	l.t.Helper()
	select {
	case got := <-l.out:
		if got.Text != text {
			l.t.Fatalf("got line %q, want %q", got.Text, text)
		}
	case <-time.After(waitTimeout):
		l.t.Fatalf("timed out waiting for line %q", text)
	}
}

// cursorAtEnd is a saved cursor after the last line of path.
func cursorAtEnd(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := fileIDOf(fi)
	if !ok {
		t.Fatalf("%s: no device and inode", path)
	}
	return encodeCursor(position{id: id, fp: fingerprintOf(b[:min(len(b), fingerprintSize)]), off: int64(len(b))})
}
