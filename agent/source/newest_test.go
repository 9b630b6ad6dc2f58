package source

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newestConfig follows the pattern in FollowNewest mode.
func newestConfig(poll bool, pattern string) FileConfig {
	cfg := testConfig(poll, pattern)
	cfg.FollowNewest = true
	return cfg
}

// positionOf returns where in got the line with text is; -1 if absent.
func positionOf(got []Line, text string) int {
	return slices.IndexFunc(got, func(l Line) bool { return l.Text == text })
}

// checkBefore fails unless every line of first arrived before every line
// of then.
func checkBefore(t *testing.T, got []Line, first, then []string) {
	t.Helper()
	last := -1
	for _, s := range first {
		last = max(last, positionOf(got, s))
	}
	for _, s := range then {
		if i := positionOf(got, s); i >= 0 && i < last {
			t.Errorf("%q arrived before the last of %q…", s, first[0])
			return
		}
	}
}

// TestFileNewestSwitchesAfterFinishing: a new dated file takes over; the
// lines still unread in the old one arrive before any of the new one's, late
// lines of the old one arrive too, and older files are never read.
func TestFileNewestSwitchesAfterFinishing(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			pattern := filepath.Join(dir, "stalwart.log.*")
			older := filepath.Join(dir, "stalwart.log.2026-01-09")
			day1 := filepath.Join(dir, "stalwart.log.2026-01-10")
			day2 := filepath.Join(dir, "stalwart.log.2026-01-11")
			appendLines(t, older, numbered("old", 0, 10)...)
			appendLines(t, day1, numbered("seen", 0, 10)...) // there before the start: start-at end
			if err := os.WriteFile(filepath.Join(dir, "stalwart.log.2026-01-08.gz"), []byte("\x1f\x8b"), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := newestConfig(mode.poll, pattern)
			cfg.StartAtEnd = true
			r := startRun(t, cfg, nil)
			r.waitStatus(pattern, "following", func(st StreamStatus) bool { return st.State == stateFollowing })

			appendLines(t, day1, numbered("a", 0, 5)...)
			r.waitLines(5)
			// The writer moves to the next day while lines of the old one
			// are still unread, then flushes a last line to the old one.
			w, err := os.OpenFile(day1, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			r.gate.Lock()
			writeLines(t, w, numbered("a", 5, 200)...)
			appendLines(t, day2, numbered("b", 0, 100)...)
			r.gate.Unlock()
			r.waitLines(300)
			writeLines(t, w, "late 0")
			r.waitText("late 0")
			appendLines(t, day2, numbered("b", 100, 110)...)
			r.waitLines(311)
			r.clock.Advance(2 * time.Hour)
			r.waitStatus(pattern, "no rotated file left", func(st StreamStatus) bool { return st.Rotated == 0 })
			st := r.waitStatus(pattern, "all read", func(st StreamStatus) bool { return st.Lines == 311 })
			if st.Rotations != 1 || st.Errors != 0 {
				t.Errorf("status %+v; want one switch, no errors", st)
			}
			saved := r.stop()
			got := r.snapshot()
			checkExactlyOnce(t, got, numbered("a", 0, 200), numbered("b", 0, 110), []string{"late 0"})
			checkBefore(t, got, numbered("a", 0, 200), numbered("b", 0, 110))
			for _, l := range got {
				if l.Cursor.Stream != pattern {
					t.Fatalf("%q: stream %q, want the pattern", l.Text, l.Cursor.Stream)
				}
				if (l.Text == "late 0") != (l.Cursor.Value == nil) {
					t.Errorf("%q: cursor %x; only the late line has none", l.Text, l.Cursor.Value)
				}
			}
			if len(saved) != 1 || saved[pattern] == nil {
				t.Fatalf("saved cursors %v, want one for the pattern", saved)
			}

			// Resuming finds its place in the newest file.
			appendLines(t, day2, "end 0")
			r2 := startRun(t, cfg, saved)
			r2.waitText("end 0")
			r2.stop()
			checkExactlyOnce(t, r2.snapshot(), []string{"end 0"})
		})
	}
}

// TestFileNewestResumeAcrossDays: mailban stopped in one day's file and
// started again two files later: the rest of its file, then every file after
// it, in order, each exactly once.
func TestFileNewestResumeAcrossDays(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			pattern := filepath.Join(dir, "stalwart.log.*")
			day := func(d string) string { return filepath.Join(dir, "stalwart.log.2026-01-"+d) }
			appendLines(t, day("10"), numbered("a", 0, 10)...)
			cfg := newestConfig(mode.poll, pattern)
			r := startRun(t, cfg, nil) // start-at beginning: the newest file from 0
			r.waitLines(10)
			saved := r.stop()
			checkExactlyOnce(t, r.snapshot(), numbered("a", 0, 10))

			appendLines(t, day("10"), numbered("a", 10, 15)...)
			appendLines(t, day("11"), numbered("b", 0, 10)...)
			appendLines(t, day("12"), numbered("c", 0, 10)...)
			r2 := startRun(t, cfg, saved)
			r2.waitLines(25)
			appendLines(t, day("12"), "end 0")
			r2.waitText("end 0")
			saved = r2.stop()
			got := r2.snapshot()
			checkExactlyOnce(t, got, numbered("a", 10, 15), numbered("b", 0, 10), numbered("c", 0, 10), []string{"end 0"})
			checkBefore(t, got, numbered("a", 10, 15), numbered("b", 0, 10))
			checkBefore(t, got, numbered("b", 0, 10), numbered("c", 0, 10))

			// The file it was in is gone (a cleanup job) and a new day began:
			// the new day is read from its beginning, older files are not.
			if err := os.Remove(day("12")); err != nil {
				t.Fatal(err)
			}
			appendLines(t, day("13"), numbered("d", 0, 5)...)
			r3 := startRun(t, cfg, saved)
			r3.waitLines(5)
			appendLines(t, day("13"), "end 1")
			r3.waitText("end 1")
			r3.stop()
			checkExactlyOnce(t, r3.snapshot(), numbered("d", 0, 5), []string{"end 1"})
		})
	}
}

// TestFileNewestWaitsForAMatch: a pattern nothing matches yet is waited for,
// and the first file to match is read from its beginning; a file that is
// removed is not followed by an older one.
func TestFileNewestWaitsForAMatch(t *testing.T) {
	dir := t.TempDir()
	pattern := filepath.Join(dir, "app.log.*")
	cfg := newestConfig(false, pattern)
	cfg.StartAtEnd = true
	r := startRun(t, cfg, nil)
	// Nothing matched at the first look: the first file to match is new,
	// and read from its beginning.
	r.waitStatus(pattern, "waiting", func(st StreamStatus) bool { return st.checked && st.State == stateWaiting })
	appendLines(t, filepath.Join(dir, "app.log.2"), numbered("a", 0, 5)...)
	r.waitLines(5)
	// An older name appearing is not a later file.
	appendLines(t, filepath.Join(dir, "app.log.1"), numbered("older", 0, 5)...)
	appendLines(t, filepath.Join(dir, "app.log.3"), numbered("b", 0, 5)...)
	r.waitLines(10)
	if err := os.Remove(filepath.Join(dir, "app.log.3")); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(pattern, "detached", func(st StreamStatus) bool { return st.State == stateDetached })
	r.clock.Advance(2 * time.Hour) // the grace of the removed file ends
	r.waitStatus(pattern, "waiting again", func(st StreamStatus) bool { return st.State == stateWaiting })
	appendLines(t, filepath.Join(dir, "app.log.4"), "end 0")
	r.waitText("end 0")
	r.stop()
	got := r.snapshot()
	checkExactlyOnce(t, got, numbered("a", 0, 5), numbered("b", 0, 5), []string{"end 0"})
	for _, l := range got {
		if strings.HasPrefix(l.Text, "older") {
			t.Errorf("read %q from an older file", l.Text)
		}
	}
}
