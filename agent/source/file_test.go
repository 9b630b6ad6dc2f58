package source

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nxadm/tail/watch"
)

// TestFileRenameRotation is logrotate's default (create): the log is renamed,
// its writer goes on writing to the old descriptor for a while, then a new
// file takes the name. Every line arrives exactly once.
func TestFileRenameRotation(t *testing.T) {
	for _, mode := range modes {
		for _, slow := range []bool{false, true} {
			name := mode.name
			if slow {
				name += "/slow-consumer"
			}
			t.Run(name, func(t *testing.T) { testRenameRotation(t, mode.poll, slow) })
		}
	}
}

// testRenameRotation is TestFileRenameRotation in one mode; a slow consumer
// takes no line until all are written, so that the rotation comes while the
// follower holds lines read but not delivered.
func testRenameRotation(t *testing.T, poll, slow bool) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := startRun(t, testConfig(poll, path), nil)
	r.waitStatus(path, "following", func(st StreamStatus) bool { return st.State == stateFollowing })

	const n, m, k = 300, 200, 300
	if slow {
		r.gate.Lock()
	}
	for i := range n {
		writeLines(t, w, numbered("a", i, i+1)...)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeLines(t, w, numbered("b", 0, m)...) // to the old file, through the old descriptor
	appendLines(t, path, numbered("c", 0, k)...)
	if slow {
		r.gate.Unlock()
	}
	r.waitLines(n + m + k)
	// Let the old file's grace end, so that nothing more can come of it.
	r.clock.Advance(2 * time.Hour)
	r.waitStatus(path, "no rotated file left", func(st StreamStatus) bool { return st.Rotated == 0 })
	appendLines(t, path, "end 0")
	r.waitText("end 0")
	st := r.waitStatus(path, "all read", func(st StreamStatus) bool { return st.Lines == n+m+k+1 })
	if st.Rotations != 1 || st.State != stateFollowing || st.Offset != st.Size || st.Errors != 0 || st.LastRead.IsZero() {
		t.Errorf("status %+v; want one rotation, following, at the end, no errors", st)
	}
	r.stop()
	checkExactlyOnce(t, r.snapshot(), numbered("a", 0, n), numbered("b", 0, m), numbered("c", 0, k), []string{"end 0"})
}

// TestFileLateLinesAfterRotation: lines the writer adds to the old file after
// the new one took the name still arrive (until the grace ends), and do not
// move the saved position.
func TestFileLateLinesAfterRotation(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mail.log")
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			r := startRun(t, testConfig(mode.poll, path), nil)
			writeLines(t, w, numbered("a", 0, 10)...)
			r.waitLines(10)
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			appendLines(t, path, numbered("c", 0, 10)...)
			r.waitLines(20)
			r.waitStatus(path, "one rotated file", func(st StreamStatus) bool { return st.Rotated == 1 })

			writeLines(t, w, numbered("late", 0, 5)...)
			if _, err := w.WriteString("unfinished"); err != nil {
				t.Fatal(err)
			}
			r.waitLines(25)
			r.clock.Advance(2 * time.Hour) // the grace ends: the unfinished line is all there will be
			r.waitText("unfinished")
			r.waitStatus(path, "no rotated file left", func(st StreamStatus) bool { return st.Rotated == 0 })
			cursors := r.stop()

			got := r.snapshot()
			checkExactlyOnce(t, got, numbered("a", 0, 10), numbered("c", 0, 10), numbered("late", 0, 5), []string{"unfinished"})
			for _, l := range got {
				late := strings.HasPrefix(l.Text, "late") || l.Text == "unfinished"
				if late != (l.Cursor.Value == nil) {
					t.Errorf("%q: cursor %x; want nil exactly for late lines", l.Text, l.Cursor.Value)
				}
				if l.Cursor.Stream != path || l.Source != "test" {
					t.Errorf("%q: stream %q source %q, want %q %q", l.Text, l.Cursor.Stream, l.Source, path, "test")
				}
			}
			// The saved position is in the new file, after "c 9".
			r2 := startRun(t, testConfig(mode.poll, path), cursors)
			appendLines(t, path, "d 0")
			r2.waitText("d 0")
			r2.stop()
			checkExactlyOnce(t, r2.snapshot(), []string{"d 0"})
		})
	}
}

// TestFileCopyTruncate is logrotate's copytruncate, while the reader is
// behind: what the truncation took before it was read comes from the copy.
func TestFileCopyTruncate(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mail.log")
			appendLines(t, path, numbered("a", 0, 10)...)
			r := startRun(t, testConfig(mode.poll, path), nil)
			r.waitLines(10)

			const n, k = 2000, 100
			appendLines(t, path, numbered("b", 0, n)...)
			copyTruncate(t, path, path+".1")
			appendLines(t, path, numbered("c", 0, k)...)
			r.waitText("c 99")
			r.waitLines(10 + n + k)
			appendLines(t, path, "end 0")
			r.waitText("end 0")
			if st := r.waitStatus(path, "truncated", func(StreamStatus) bool { return true }); st.Truncations != 1 {
				t.Errorf("status %+v; want one truncation", st)
			}
			r.stop()
			checkExactlyOnce(t, r.snapshot(), numbered("a", 0, 10), numbered("b", 0, n), numbered("c", 0, k), []string{"end 0"})
			if st := r.file.Status(); len(st) != 0 {
				t.Errorf("Status after Run returned: %+v, want none", st)
			}
		})
	}
}

// copyTruncate does what logrotate's copytruncate does: copy, then truncate
// in place.
func copyTruncate(t *testing.T, path, to string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
}

// TestFileRestartResume: a restart with the cursors delivered reads exactly
// what was written after them.
func TestFileRestartResume(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mail.log")
			appendLines(t, path, numbered("a", 0, 100)...)
			r := startRun(t, testConfig(mode.poll, path), nil)
			r.waitLines(100)
			saved := r.stop()
			checkExactlyOnce(t, r.snapshot(), numbered("a", 0, 100))

			appendLines(t, path, numbered("b", 0, 50)...)
			r2 := startRun(t, testConfig(mode.poll, path), saved)
			r2.waitLines(50)
			appendLines(t, path, "end 0")
			r2.waitText("end 0")
			r2.stop()
			checkExactlyOnce(t, r2.snapshot(), numbered("b", 0, 50), []string{"end 0"})
		})
	}
}

// TestFileResumeRotatedWhileStopped: the file was rotated while mailban was
// stopped; the rest of the old file is read first, then the new one.
func TestFileResumeRotatedWhileStopped(t *testing.T) {
	rotations := []struct {
		name   string
		rotate func(t *testing.T, path string)
	}{
		{"rename", func(t *testing.T, path string) {
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
		}},
		{"rename-dated", func(t *testing.T, path string) {
			if err := os.Rename(path, path+"-20261125"); err != nil {
				t.Fatal(err)
			}
			// An older, compressed rotation that must be skipped.
			if err := os.WriteFile(path+".2.gz", []byte("not text\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"copytruncate", func(t *testing.T, path string) { copyTruncate(t, path, path+".1") }},
	}
	for _, mode := range modes {
		for _, rot := range rotations {
			t.Run(mode.name+"/"+rot.name, func(t *testing.T) {
				dir := t.TempDir()
				path := filepath.Join(dir, "mail.log")
				appendLines(t, path, numbered("a", 0, 100)...)
				r := startRun(t, testConfig(mode.poll, path), nil)
				r.waitLines(100)
				saved := r.stop()

				appendLines(t, path, numbered("b", 0, 30)...) // unread when the rotation comes
				rot.rotate(t, path)
				appendLines(t, path, numbered("c", 0, 40)...)

				r2 := startRun(t, testConfig(mode.poll, path), saved)
				r2.waitLines(70)
				appendLines(t, path, "end 0")
				r2.waitText("end 0")
				saved2 := r2.stop()
				checkExactlyOnce(t, r2.snapshot(), numbered("b", 0, 30), numbered("c", 0, 40), []string{"end 0"})

				// And the position saved now is in the new file.
				appendLines(t, path, "end 1")
				r3 := startRun(t, testConfig(mode.poll, path), saved2)
				r3.waitText("end 1")
				r3.stop()
				checkExactlyOnce(t, r3.snapshot(), []string{"end 1"})
			})
		}
	}
}

// TestFileResumeStoppedMidRotation: mailban stopped while it was still
// reading the old file's rest after a rotation; the next start finds it again.
func TestFileResumeStoppedInRenamedFile(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mail.log")
			appendLines(t, path, numbered("a", 0, 20)...)
			r := startRun(t, testConfig(mode.poll, path), nil)
			r.waitLines(20)
			saved := r.stop()

			appendLines(t, path, numbered("b", 0, 20)...)
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			// No new file yet: the start resumes in the renamed file.
			r2 := startRun(t, testConfig(mode.poll, path), saved)
			r2.waitLines(20)
			r2.waitStatus(path, "detached", func(st StreamStatus) bool { return st.State == stateDetached })
			appendLines(t, path+".1", numbered("b", 20, 25)...)
			r2.waitLines(25)
			saved2 := r2.stop()
			checkExactlyOnce(t, r2.snapshot(), numbered("b", 0, 25))

			appendLines(t, path+".1", numbered("b", 25, 30)...)
			appendLines(t, path, numbered("c", 0, 10)...)
			r3 := startRun(t, testConfig(mode.poll, path), saved2)
			r3.waitLines(15)
			r3.stop()
			checkExactlyOnce(t, r3.snapshot(), numbered("b", 25, 30), numbered("c", 0, 10))
		})
	}
}

// TestFileInodeReuse: the saved cursor names the inode the path has now, but
// the content is another file's (an inode number reused, or a file rewritten
// in place): it is read from its beginning, not from the old offset.
func TestFileInodeReuse(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mail.log")
			appendLines(t, path, numbered("a", 0, 50)...)
			r := startRun(t, testConfig(mode.poll, path), nil)
			r.waitLines(50)
			saved := r.stop()

			// Same inode, new content longer than the old offset.
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			writeLines(t, f, numbered("new", 0, 200)...)
			f.Close()
			checkSameInode(t, saved[path], path)

			r2 := startRun(t, testConfig(mode.poll, path), saved)
			r2.waitLines(200)
			appendLines(t, path, "end 0")
			r2.waitText("end 0")
			r2.stop()
			checkExactlyOnce(t, r2.snapshot(), numbered("new", 0, 200), []string{"end 0"})
		})
	}
}

// checkSameInode makes sure a test about identity tests what it says.
func checkSameInode(t *testing.T, cursor []byte, path string) {
	t.Helper()
	p, err := decodeCursor(cursor)
	if err != nil {
		t.Fatal(err)
	}
	id, err := statPath(path)
	if err != nil {
		t.Fatal(err)
	}
	if id != p.id {
		t.Fatalf("test setup: %s is inode %v, cursor names %v", path, id, p.id)
	}
}

// TestFileGlob: a glob is followed for files that appear later, and its
// rotated files are not read twice under their new names.
func TestFileGlob(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
			appendLines(t, a, numbered("a", 0, 10)...)
			r := startRun(t, testConfig(mode.poll, filepath.Join(dir, "*.log")), nil)
			r.waitLines(10)

			appendLines(t, b, numbered("b", 0, 10)...)
			r.waitLines(20)
			appendLines(t, a, numbered("a", 10, 20)...)
			r.waitLines(30)
			// b.log rotates to b.1.log, which the glob matches too.
			if err := os.Rename(b, filepath.Join(dir, "b.1.log")); err != nil {
				t.Fatal(err)
			}
			appendLines(t, filepath.Join(dir, "b.1.log"), numbered("b", 10, 15)...)
			appendLines(t, b, numbered("bb", 0, 5)...)
			r.waitLines(40)
			r.clock.Advance(2 * time.Hour)
			r.waitStatus(b, "no rotated file left", func(st StreamStatus) bool { return st.Rotated == 0 })
			appendLines(t, filepath.Join(dir, "b.1.log"), numbered("b", 15, 20)...)
			r.waitLines(45)
			appendLines(t, a, "end 0")
			r.waitText("end 0")
			r.stop()
			checkExactlyOnce(t, r.snapshot(), numbered("a", 0, 20), numbered("b", 0, 20), numbered("bb", 0, 5), []string{"end 0"})
			for _, l := range r.snapshot() {
				if strings.HasPrefix(l.Text, "a ") && l.Cursor.Stream != a {
					t.Errorf("%q: stream %q, want %q", l.Text, l.Cursor.Stream, a)
				}
			}
		})
	}
}

// TestFilePartialLine: a line written in pieces arrives once, whole, when
// its newline does; and not again after a restart.
func TestFilePartialLine(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mail.log")
			if err := os.WriteFile(path, []byte("a 0\nbeg"), 0o644); err != nil {
				t.Fatal(err)
			}
			r := startRun(t, testConfig(mode.poll, path), nil)
			r.waitLines(1)
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			for _, piece := range []string{"in", "ning 1", "\n", "a 2\nx"} {
				if _, err := w.WriteString(piece); err != nil {
					t.Fatal(err)
				}
			}
			r.waitText("a 2")
			saved := r.stop()
			checkExactlyOnce(t, r.snapshot(), []string{"a 0", "beginning 1", "a 2"})

			if _, err := w.WriteString(" 3\n"); err != nil {
				t.Fatal(err)
			}
			r2 := startRun(t, testConfig(mode.poll, path), saved)
			r2.waitText("x 3")
			r2.stop()
			checkExactlyOnce(t, r2.snapshot(), []string{"x 3"})
		})
	}
}

// TestFilePathAppearsLater: a path that does not exist is waited for, and
// read from its beginning when it appears.
func TestFilePathAppearsLater(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "later", "mail.log")
			cfg := testConfig(mode.poll, path)
			cfg.StartAtEnd = true // does not apply: the file was not there at start
			r := startRun(t, cfg, nil)
			r.waitStatus(path, "waiting", func(st StreamStatus) bool { return st.State == stateWaiting })
			if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			appendLines(t, path, numbered("a", 0, 10)...)
			r.waitLines(10)
			r.stop()
			checkExactlyOnce(t, r.snapshot(), numbered("a", 0, 10))
		})
	}
}

// TestFileUnreadablePath: a path that cannot be read (a directory here) is
// reported, does not stop the other paths, and is read once it is a file.
func TestFileUnreadablePath(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			bad, good := filepath.Join(dir, "bad.log"), filepath.Join(dir, "good.log")
			if err := os.Mkdir(bad, 0o755); err != nil {
				t.Fatal(err)
			}
			appendLines(t, good, numbered("good", 0, 5)...)
			r := startRun(t, testConfig(mode.poll, bad, good), nil)
			r.waitLines(5)
			st := r.waitStatus(bad, "error", func(st StreamStatus) bool { return st.State == stateError })
			if !strings.Contains(st.LastError, "not a regular file") {
				t.Errorf("LastError = %q, want it to say not a regular file", st.LastError)
			}
			if err := os.Remove(bad); err != nil {
				t.Fatal(err)
			}
			appendLines(t, bad, numbered("bad", 0, 5)...)
			r.waitLines(10)
			r.waitStatus(bad, "recovered", func(st StreamStatus) bool { return st.State == stateFollowing && st.LastError == "" })
			r.stop()
			checkExactlyOnce(t, r.snapshot(), numbered("good", 0, 5), numbered("bad", 0, 5))
		})
	}
}

// TestFileStartAtEnd: without a saved cursor, StartAtEnd skips what the file
// holds at start, but not a line being written.
func TestFileStartAtEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(path, []byte("old 0\nold 1\nnew"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(false, path)
	cfg.StartAtEnd = true
	r := startRun(t, cfg, nil)
	r.waitStatus(path, "following", func(st StreamStatus) bool { return st.State == stateFollowing })
	appendLines(t, path, " 0", "new 1")
	r.waitText("new 1")
	r.stop()
	checkExactlyOnce(t, r.snapshot(), []string{"new 0", "new 1"})
}

// TestFileLongLine: a line longer than MaxLineBytes arrives cut, and the
// next line whole, whether the follower or a drain reads it.
func TestFileLongLine(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mail.log")
			long := strings.Repeat("x", 300)
			appendLines(t, path, "a 0", long, "a 1")
			cfg := testConfig(mode.poll, path)
			cfg.MaxLineBytes = 100
			r := startRun(t, cfg, nil)
			r.waitText("a 1")
			// The rest goes to the old file after a rename: drained by us.
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			writeLines(t, w, "b 0", long+"y", "b 1")
			r.waitText("b 1")
			r.stop()
			checkExactlyOnce(t, r.snapshot(), []string{"a 0", long[:100], "a 1", "b 0", long[:100] + "", "b 1"})
			if st := r.file.Status(); len(st) != 0 {
				t.Errorf("Status after Run: %+v", st)
			}
		})
	}
}

func TestNewFileRejects(t *testing.T) {
	good := FileConfig{Name: "mail", Paths: []string{"/var/log/mail.log"}}
	tests := []struct {
		name   string
		mutate func(*FileConfig)
		saved  map[string][]byte
		want   string
	}{
		{"no name", func(c *FileConfig) { c.Name = "" }, nil, "name is empty"},
		{"no paths", func(c *FileConfig) { c.Paths = nil }, nil, "no paths"},
		{"relative path", func(c *FileConfig) { c.Paths = []string{"mail.log"} }, nil, `path "mail.log" is not absolute`},
		{"bad glob", func(c *FileConfig) { c.Paths = []string{"/var/log/[mail.log"} }, nil, "syntax error in pattern"},
		{"negative poll", func(c *FileConfig) { c.PollInterval = -time.Second }, nil, "poll interval -1s is negative"},
		{"negative max line", func(c *FileConfig) { c.MaxLineBytes = -1 }, nil, "max line bytes -1 is negative"},
		{"corrupt cursor", nil, map[string][]byte{"/var/log/mail.log": {1, 2, 3}}, "saved cursor of /var/log/mail.log: bad cursor"},
		{"future cursor", nil, map[string][]byte{"/var/log/mail.log": {9}}, "unknown version 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			_, err := NewFile(cfg, tt.saved, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewFile error = %v, want it to contain %q", err, tt.want)
			}
			if tt.saved != nil && !errors.Is(err, ErrBadCursor) {
				t.Errorf("error %v does not wrap ErrBadCursor", err)
			}
		})
	}
}

// TestFileCopyTruncateSlowConsumer: copytruncate while the consumer is far
// behind, so that the truncation takes lines nobody read yet; they come
// from the copy, and each line still arrives once.
func TestFileCopyTruncateSlowConsumer(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "mail.log")
			appendLines(t, path, numbered("a", 0, 10)...)
			r := startRun(t, testConfig(mode.poll, path), nil)
			r.waitLines(10)

			const n, k = 5000, 100
			r.gate.Lock()
			appendLines(t, path, numbered("b", 0, n)...)
			copyTruncate(t, path, path+".1")
			appendLines(t, path, numbered("c", 0, k)...)
			r.gate.Unlock()
			r.waitLines(10 + n + k)
			appendLines(t, path, "end 0")
			r.waitText("end 0")
			r.stop()
			checkExactlyOnce(t, r.snapshot(), numbered("a", 0, 10), numbered("b", 0, n), numbered("c", 0, k), []string{"end 0"})
		})
	}
}

// TestFileRemovedNotRecreated: a removed path's file is still read while
// its writer may use it; after the grace period it is let go of, and a file
// that takes the path later is read from its beginning.
func TestFileRemovedNotRecreated(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mail.log")
			w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			writeLines(t, w, numbered("a", 0, 5)...)
			r := startRun(t, testConfig(mode.poll, path), nil)
			r.waitLines(5)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			r.waitStatus(path, "detached", func(st StreamStatus) bool { return st.State == stateDetached })
			writeLines(t, w, numbered("a", 5, 10)...)
			r.waitLines(10)
			r.clock.Advance(2 * time.Hour)
			r.waitStatus(path, "waiting", func(st StreamStatus) bool { return st.State == stateWaiting })
			writeLines(t, w, "lost 0") // nobody reads a removed file for ever

			appendLines(t, path, numbered("b", 0, 5)...)
			r.waitLines(15)
			appendLines(t, path, "end 0")
			r.waitText("end 0")
			r.stop()
			checkExactlyOnce(t, r.snapshot(), numbered("a", 0, 10), numbered("b", 0, 5), []string{"end 0"})
		})
	}
}

// TestFileFollowerStall: when the library's process-wide inotify table loses
// the follower's watch, the watchdog notices the unread lines and restarts
// the follower; when that happens again, it polls.
func TestFileFollowerStall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	appendLines(t, path, numbered("a", 0, 5)...)
	r := startRun(t, testConfig(false, path), nil)
	r.waitLines(5)

	// Make sure the table exists (Events needs it), with a name of our own.
	other := filepath.Join(t.TempDir(), "other")
	appendLines(t, other, "x")
	if err := watch.Watch(other); err != nil {
		t.Fatal(err)
	}
	if err := watch.RemoveWatch(other); err != nil {
		t.Fatal(err)
	}
	loseWatch := func() {
		t.Helper()
		// Once the follower watches its file (and its start-up check is
		// done), a second watcher of the same name that goes away takes the
		// follower's events with it.
		st := r.waitStatus(path, "following", func(st StreamStatus) bool { return st.follower != "" && st.watching })
		if watch.Events(st.follower) == nil {
			t.Fatalf("follower %s past its start-up check without a watch", st.follower)
		}
		if err := watch.Watch(st.follower); err != nil {
			t.Fatal(err)
		}
		if err := watch.RemoveWatch(st.follower); err != nil {
			t.Fatal(err)
		}
	}

	loseWatch()
	appendLines(t, path, numbered("a", 5, 10)...)
	r.waitLines(10)
	st := r.waitStatus(path, "restarted", func(st StreamStatus) bool { return st.Restarts > 0 })
	if st.Mode != "inotify" {
		t.Errorf("after one stall: mode %s, want inotify", st.Mode)
	}

	loseWatch()
	appendLines(t, path, numbered("a", 10, 15)...)
	r.waitLines(15)
	r.waitStatus(path, "polling", func(st StreamStatus) bool { return st.Mode == "poll" })
	r.stop()
	checkExactlyOnce(t, r.snapshot(), numbered("a", 0, 15))
}

func TestFileRunTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	r := startRun(t, testConfig(false, path), nil)
	r.waitStatus(path, "waiting", func(st StreamStatus) bool { return st.State == stateWaiting })
	r.stop()
	err := r.file.Run(t.Context(), make(chan Line))
	if err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run: %v, want an error", err)
	}
}

// TestFileTwoSourcesOneFile: two sources following one file in inotify mode
// share one kernel watch, which the library's table gives to one name only;
// the other follower stalls, and its watchdog restarts it, taking the watch
// from the first, until stalls repeat and one of them polls. Both see every
// line.
func TestFileTwoSourcesOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.log")
	appendLines(t, path, numbered("a", 0, 5)...)
	r1 := startRun(t, testConfig(false, path), nil)
	r1.waitLines(5)
	r2 := startRun(t, testConfig(false, path), nil)
	r2.waitLines(5)
	appendLines(t, path, numbered("a", 5, 10)...)
	r1.waitLines(10)
	r2.waitLines(10)
	appendLines(t, path, "end 0")
	r1.waitText("end 0")
	r2.waitText("end 0")
	r1.stop()
	r2.stop()
	checkExactlyOnce(t, r1.snapshot(), numbered("a", 0, 10), []string{"end 0"})
	checkExactlyOnce(t, r2.snapshot(), numbered("a", 0, 10), []string{"end 0"})
}
