package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether w is a terminal: progress is drawn only there,
// never into a pipe or a file that a script reads.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progress draws one line, rewritten in place, on a terminal: lines read,
// lines per second and, when the inputs' sizes are known, percent done.
type progress struct {
	w       io.Writer
	now     func() time.Time
	total   int64    // bytes in all inputs; 0: unknown
	read    []*int64 // bytes read so far, per input
	start   time.Time
	last    time.Time
	drawn   bool
	every   time.Duration // between redraws
	initial time.Duration // nothing is drawn before this: short runs stay silent
}

func newProgress(w io.Writer, now func() time.Time) *progress {
	t := now()
	return &progress{w: w, now: now, start: t, last: t, every: 200 * time.Millisecond, initial: 500 * time.Millisecond}
}

// track wraps an input so that its bytes count towards percent done; size
// is its length, or -1 when unknown (a pipe), which turns percent off.
func (p *progress) track(r io.Reader, size int64) io.Reader {
	n := new(int64)
	p.read = append(p.read, n)
	switch {
	case size < 0 || p.total < 0:
		p.total = -1
	default:
		p.total += size
	}
	return &countingReader{r: r, n: n}
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	*c.n += int64(n)
	return n, err
}

// update is called with the lines read so far; it redraws at most every
// p.every.
func (p *progress) update(lines int) {
	t := p.now()
	if t.Sub(p.start) < p.initial || t.Sub(p.last) < p.every {
		return
	}
	p.last = t
	rate := float64(lines) / t.Sub(p.start).Seconds()
	msg := fmt.Sprintf("%s lines, %s lines/s", count(float64(lines)), count(rate))
	if p.total > 0 {
		var read int64
		for _, n := range p.read {
			read += *n
		}
		// Input is read ahead in large blocks: cap below 100 until done.
		msg += fmt.Sprintf(", %d%%", min(99, read*100/p.total))
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s", msg)
	p.drawn = true
}

// done erases the progress line, so that what follows starts clean.
func (p *progress) done() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

// count writes a number as 950, 12.3k or 2.1M.
func count(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
