package source

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
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
			waitGoroutine(t, "the follower at its first end, adding its watch", "watch.(*InotifyFileWatcher).ChangeEvents")
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
	waitGoroutine(t, "the library's inotify goroutine parked", "watch.(*InotifyTracker).sendEvent")
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

// waitGoroutine waits until some goroutine's stack holds frame.
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
	out := make(chan Line)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &lineFeed{t: t, out: out}
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
