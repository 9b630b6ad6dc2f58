package main

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY returns the two ends of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs pseudo-terminals (/dev/ptmx): %v", err)
		}
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestProgressOnlyOnATerminal(t *testing.T) {
	_, pts := openPTY(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	file, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, tc := range []struct {
		name string
		w    any
		want bool
	}{
		{"terminal", pts, true},
		{"pipe", w, false},
		{"/dev/null", devnull, false},
		{"file", file, false},
		{"buffer", &bytes.Buffer{}, false},
	} {
		var got bool
		switch w := tc.w.(type) {
		case *os.File:
			got = isTerminal(w)
		case *bytes.Buffer:
			got = isTerminal(w)
		}
		if got != tc.want {
			t.Errorf("%s: isTerminal = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fakeClock is advanced by the test.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestProgressLine(t *testing.T) {
	var out bytes.Buffer
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p := newProgress(&out, clock.now)
	in := p.track(strings.NewReader(strings.Repeat("x", 1000)), 1000)
	buf := make([]byte, 250)

	in.Read(buf)
	p.update(100_000)
	if out.Len() != 0 {
		t.Fatalf("drawn before %s: %q", p.initial, out.String())
	}
	clock.t = clock.t.Add(time.Second)
	p.update(2_000_000)
	if got, want := out.String(), "\r\x1b[K2.0M lines, 2.0M lines/s, 25%"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	out.Reset()
	clock.t = clock.t.Add(100 * time.Millisecond)
	p.update(2_100_000)
	if out.Len() != 0 {
		t.Errorf("redrawn after 100ms: %q", out.String())
	}
	clock.t = clock.t.Add(time.Second)
	for {
		if _, err := in.Read(buf); err != nil {
			break
		}
	}
	p.update(4_200_000)
	if got, want := out.String(), "\r\x1b[K4.2M lines, 2.0M lines/s, 99%"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	out.Reset()
	p.done()
	if got := out.String(); got != "\r\x1b[K" {
		t.Errorf("done wrote %q, want the line erased", got)
	}

	// A pipe among the inputs: no percent.
	out.Reset()
	p = newProgress(&out, clock.now)
	p.track(strings.NewReader(""), 10)
	p.track(strings.NewReader(""), -1)
	clock.t = clock.t.Add(time.Second)
	p.update(950)
	if got, want := out.String(), "\r\x1b[K950 lines, 950 lines/s"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Piped, `mailban test` writes nothing to stderr (isTerminal, tested above,
// is what keeps progress away from pipes).
func TestReplayQuietWhenPiped(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var stdout bytes.Buffer
	code := run(context.Background(), []string{"test", "--config", "../../testdata/replay/mailban.yaml", "../../testdata/replay/attack.log"},
		strings.NewReader(""), &stdout, w)
	w.Close()
	var stderr bytes.Buffer
	stderr.ReadFrom(r)
	if code != exitOK || stderr.Len() != 0 {
		t.Errorf("exit %d, stderr %q; want 0 and nothing", code, stderr.String())
	}
}
