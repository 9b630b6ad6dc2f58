package source

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReadLines(t *testing.T) {
	long := strings.Repeat("x", 100)
	cases := []struct {
		name    string
		in      string
		maxLine int
		want    []pipeLine
	}{
		{"lines", "a\nb\n", 10, []pipeLine{{text: "a"}, {text: "b"}}},
		{"empty lines kept", "\n\na\n", 10, []pipeLine{{text: ""}, {text: ""}, {text: "a"}}},
		{"last line without newline", "a\nb", 10, []pipeLine{{text: "a"}, {text: "b"}}},
		{"carriage return kept", "a\r\n", 10, []pipeLine{{text: "a\r"}}},
		{"exactly the limit", "abcd\n", 4, []pipeLine{{text: "abcd"}}},
		{"one over the limit", "abcde\nf\n", 4, []pipeLine{{text: "abcd", cut: true}, {text: "f"}}},
		{"longer than the read buffer", long + "\nf\n", 10, []pipeLine{{text: long[:10], cut: true}, {text: "f"}}},
		{"long last line without newline", long, 10, []pipeLine{{text: long[:10], cut: true}}},
		{"nothing", "", 10, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Whole reads, and one byte at a time: every way a line can
			// be split across reads.
			for _, r := range []io.Reader{strings.NewReader(tc.in), oneByte{strings.NewReader(tc.in)}} {
				out := make(chan pipeLine, 100)
				if err := readLines(context.Background(), r, tc.maxLine, out); err != nil {
					t.Fatal(err)
				}
				close(out)
				var got []pipeLine
				for l := range out {
					got = append(got, l)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("%T: got %+v, want %+v", r, got, tc.want)
				}
			}
		})
	}
}

// oneByte reads one byte per call.
type oneByte struct{ r *strings.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

// filterRun feeds lines through a replay filter started from last and
// returns what it delivered and the position the next run starts from.
func filterRun(last outputPos, lines []string, quietAfter int) ([]string, outputPos) {
	f := newReplayFilter(last)
	var got []string
	for i, l := range lines {
		ready, _ := f.add(pipeLine{text: l})
		for _, r := range ready {
			got = append(got, r.text)
		}
		if i+1 == quietAfter {
			for _, r := range f.quiet() {
				got = append(got, r.text)
			}
		}
	}
	return got, f.end()
}

func TestReplayFilter(t *testing.T) {
	history := numbered("h", 0, 40)
	_, afterHistory := filterRun(outputPos{}, history, 0)
	_, afterShort := filterRun(outputPos{}, history[:3], 0)
	banner := append([]string{"starting"}, numbered("x", 0, 30)...)
	_, afterBanner := filterRun(outputPos{}, banner, 0)

	cases := []struct {
		name       string
		last       outputPos
		lines      []string
		quietAfter int // the quiet timer fires after this many lines (0: never)
		want       []string
		nextN      uint64 // lines the next run compares with
	}{
		{"first output: everything", outputPos{}, history, 0, history, 40},
		{"replay of all: nothing", afterHistory, history, 0, nil, 40},
		{"replay and more: the more", afterHistory, append(slices.Clone(history), "n 0", "n 1"), 0, []string{"n 0", "n 1"}, 42},
		{"replay cut short: nothing, the last output stays", afterHistory, history[:10], 0, nil, 40},
		{"other output: everything", afterHistory, numbered("o", 0, 5), 0, numbered("o", 0, 5), 5},
		{"same first line, other lines: everything", afterBanner, append([]string{"starting"}, numbered("y", 0, 30)...), 0,
			append([]string{"starting"}, numbered("y", 0, 30)...), 31},
		{"same first line, then quiet: delivered", afterBanner, []string{"starting", "y 0"}, 2, []string{"starting", "y 0"}, 2},
		{"short last output replayed, then new", afterShort, append(slices.Clone(history[:3]), "n 0"), 0, []string{"n 0"}, 4},
		{"short last output, other output", afterShort, []string{"h 0", "h 1", "z"}, 0, []string{"h 0", "h 1", "z"}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, next := filterRun(tc.last, tc.lines, tc.quietAfter)
			if !slices.Equal(got, tc.want) {
				t.Errorf("delivered %q, want %q", got, tc.want)
			}
			if next.n != tc.nextN {
				t.Errorf("next run compares with %d lines, want %d", next.n, tc.nextN)
			}
		})
	}

	// A position survives its encoding.
	p, err := decodeOutputPos(afterHistory.encode())
	if err != nil || p != afterHistory {
		t.Errorf("decode(encode(%+v)) = %+v, %v", afterHistory, p, err)
	}
	for _, bad := range [][]byte{nil, {2}, {1}, {1, 5, 0}, append(afterHistory.encode(), 0)} {
		if _, err := decodeOutputPos(bad); !errors.Is(err, ErrBadCursor) {
			t.Errorf("decode(%x) = %v, want ErrBadCursor", bad, err)
		}
	}
}

// commandConfig runs argv with quick restarts.
func commandConfig(argv ...string) CommandConfig {
	return CommandConfig{Name: "cmd", Argv: argv, RestartDelay: 5 * time.Millisecond, MaxRestartDelay: 20 * time.Millisecond, StopTimeout: 2 * time.Second}
}

func startCommand(t *testing.T, cfg CommandConfig, saved map[string][]byte) (*Command, *collector) {
	t.Helper()
	c, err := NewCommand(cfg, saved, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, collect(t, c)
}

// TestCommandReplayedHistory is `docker logs -f` in miniature: a command
// that prints the whole history each time it runs (cat) ends and is started
// again, while lines are added; and mailban restarts. Every line arrives
// exactly once.
func TestCommandReplayedHistory(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "container.log")
	// The history grows whole lines at a time, as a container's log does
	// (the file is replaced, so cat never sees half a line).
	var history []string
	grow := func(lines ...string) {
		history = append(history, lines...)
		tmp := log + ".tmp"
		if err := os.WriteFile(tmp, []byte(strings.Join(history, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, log); err != nil {
			t.Fatal(err)
		}
	}
	grow(numbered("a", 0, 100)...)
	cmd, c := startCommand(t, commandConfig("cat", log), nil)
	c.waitLines(100)
	waitFor(t, "a restart", func() bool { return cmd.Status()[0].Restarts >= 2 })
	grow(numbered("b", 0, 50)...)
	c.waitLines(150)
	waitFor(t, "more restarts", func() bool { return cmd.Status()[0].Restarts >= 5 })
	saved := c.stop()
	checkExactlyOnce(t, c.snapshot(), numbered("a", 0, 100), numbered("b", 0, 50))
	if st := cmd.Status()[0]; st.Lines != 150 || st.Errors != 0 {
		t.Errorf("status %+v; want 150 lines, no errors", st)
	}

	// mailban restarts; the history grew meanwhile.
	grow(numbered("c", 0, 30)...)
	cmd2, c2 := startCommand(t, commandConfig("cat", log), saved)
	c2.waitLines(30)
	waitFor(t, "a restart", func() bool { return cmd2.Status()[0].Restarts >= 2 })
	grow("end 0")
	c2.waitText("end 0")
	c2.stop()
	checkExactlyOnce(t, c2.snapshot(), numbered("c", 0, 30), []string{"end 0"})
}

// TestCommandNewOutput: a command that prints only what is new each run is
// read in full every run, including output that starts with a banner line
// the last run started with too.
func TestCommandNewOutput(t *testing.T) {
	spool := t.TempDir()
	// Each run prints the banner and the batches waiting, then removes
	// them. A batch appears whole (renamed into place), so none is
	// half-printed.
	script := `echo starting; for f in "$1"/*.batch; do [ -e "$f" ] && cat "$f" && rm "$f"; done`
	batch := func(name string, lines []string) {
		tmp := filepath.Join(spool, name+".tmp")
		appendLines(t, tmp, lines...)
		if err := os.Rename(tmp, filepath.Join(spool, name+".batch")); err != nil {
			t.Fatal(err)
		}
	}
	batch("1", numbered("a", 0, 40))
	cmd, c := startCommand(t, commandConfig("/bin/sh", "-c", script, "sh", spool), nil)
	c.waitLines(41)
	waitFor(t, "a restart", func() bool { return cmd.Status()[0].Restarts >= 1 })
	batch("2", numbered("b", 0, 40))
	c.waitLines(41 + 41)
	c.stop()
	got := c.snapshot()
	starting := 0
	var rest []Line
	for _, l := range got {
		if l.Text == "starting" {
			starting++
			continue
		}
		rest = append(rest, l)
	}
	checkExactlyOnce(t, rest, numbered("a", 0, 40), numbered("b", 0, 40))
	if starting < 2 {
		t.Errorf("the banner arrived %d times, want once per run with output", starting)
	}
}

// TestCommandFailures: a program that does not exist, and one that fails
// with a message, are errors in the status and the log; the source keeps
// trying and stops cleanly.
func TestCommandFailures(t *testing.T) {
	cases := []struct {
		name string
		argv []string
		want string
	}{
		{"missing program", []string{"/nonexistent/mailban-no-such-program"}, "no such file or directory"},
		{"not in PATH", []string{"mailban-no-such-program"}, "executable file not found"},
		{"fails with a message", []string{"/bin/sh", "-c", "echo 'Error: No such container: mx' >&2; exit 1"}, `exit status 1 (last on standard error: "Error: No such container: mx")`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd, c := startCommand(t, commandConfig(tc.argv...), nil)
			waitFor(t, "restarts", func() bool { return cmd.Status()[0].Restarts >= 3 })
			st := cmd.Status()[0]
			if !strings.Contains(st.LastError, tc.want) || st.Errors < 3 {
				t.Errorf("status %+v; want errors saying %q", st, tc.want)
			}
			c.stop()
		})
	}
}

// TestCommandStop: stopping the source stops the command and what it
// started, also when it ignores SIGTERM.
func TestCommandStop(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name   string
		script string
	}{
		{"sleeps", `echo $$ > "$1"; echo ready; sleep 1000`},
		{"ignores SIGTERM", `trap "" TERM; echo $$ > "$1"; echo ready; sleep 1000`},
		{"pipeline", `echo $$ > "$1"; (echo ready; sleep 1000) | cat`},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(dir, "pid"+string(rune('0'+i)))
			cfg := commandConfig("/bin/sh", "-c", tc.script, "sh", pidFile)
			cfg.StopTimeout = 100 * time.Millisecond
			_, c := startCommand(t, cfg, nil)
			c.waitText("ready")
			data, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pgid := strings.TrimSpace(string(data))
			c.stop()
			// Nothing of the group is left.
			matches, _ := filepath.Glob("/proc/[0-9]*/stat")
			for _, m := range matches {
				stat, err := os.ReadFile(m)
				if err != nil {
					continue
				}
				// pid (comm) state ppid pgrp ...
				fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
				if len(fields) > 2 && fields[2] == pgid && fields[0] != "Z" {
					t.Errorf("%s is still running in the command's group %s", m, pgid)
				}
			}
		})
	}
}

// TestCommandStderrLines: with StderrLines, standard error is read as
// lines too.
func TestCommandStderrLines(t *testing.T) {
	cfg := commandConfig("/bin/sh", "-c", `echo out 0; echo err 0 >&2; echo out 1; sleep 1000`)
	cfg.StderrLines = true
	cfg.StopTimeout = 100 * time.Millisecond
	_, c := startCommand(t, cfg, nil)
	c.waitLines(3)
	c.stop()
	checkExactlyOnce(t, c.snapshot(), []string{"out 0", "err 0", "out 1"})
}

// TestStdin reads a pipe until its end; a restart that is fed the same
// input again skips what was read, and a stop interrupts a pending read.
func TestStdin(t *testing.T) {
	start := func(t *testing.T, saved map[string][]byte) (*os.File, *Stdin, *collector) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		s, err := NewStdin(StdinConfig{Name: "stdin"}, r, saved, testLogger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		return w, s, collect(t, s)
	}
	w, s, c := start(t, nil)
	writeLines(t, w, numbered("a", 0, 50)...)
	c.waitLines(50)
	writeLines(t, w, "b 0")
	w.Close()
	if err := c.waitEnded(); err != nil {
		t.Fatalf("Run at the end of input: %v", err)
	}
	if st := s.Status()[0]; st.State != stateEnded || st.Lines != 51 {
		t.Errorf("status %+v; want ended after 51 lines", st)
	}
	saved := c.stop()
	checkExactlyOnce(t, c.snapshot(), numbered("a", 0, 50), []string{"b 0"})

	// The same input again, and more: only the more is new.
	w, _, c = start(t, saved)
	writeLines(t, w, numbered("a", 0, 50)...)
	writeLines(t, w, "b 0", "c 0")
	c.waitText("c 0")
	// The input stays open: a stop interrupts the read.
	c.stop()
	checkExactlyOnce(t, c.snapshot(), []string{"c 0"})
}
