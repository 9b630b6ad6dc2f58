package source

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// runner is any source.
type runner interface {
	Run(ctx context.Context, out chan<- Line) error
}

// collector runs a source and keeps what it delivers, as the agent would:
// every line, and the last cursor of each stream.
type collector struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
	ended  chan struct{} // Run returned

	mu     sync.Mutex
	lines  []Line
	cursor map[string][]byte
	runErr error
}

func collect(t *testing.T, src runner) *collector {
	t.Helper()
	return collectWith(t, src, nil)
}

// collectWith is collect with a hook called with each line as it is taken
// (as the agent processes it).
func collectWith(t *testing.T, src runner, hook func(Line)) *collector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{t: t, cancel: cancel, done: make(chan error, 1), ended: make(chan struct{}), cursor: map[string][]byte{}}
	out := make(chan Line)
	taken := make(chan struct{})
	// Lines are taken until Run returns, as the agent does: a source may
	// finish sending what it started after ctx is done.
	go func() {
		defer close(taken)
		for {
			select {
			case l := <-out:
				c.mu.Lock()
				c.lines = append(c.lines, l)
				if l.Cursor.Value != nil {
					c.cursor[l.Cursor.Stream] = l.Cursor.Value
				}
				c.mu.Unlock()
				if hook != nil {
					hook(l)
				}
			case <-c.ended:
				return
			}
		}
	}()
	go func() {
		err := src.Run(ctx, out)
		c.mu.Lock()
		c.runErr = err
		c.mu.Unlock()
		close(c.ended)
		<-ctx.Done()
		<-taken
		c.done <- err
	}()
	t.Cleanup(func() { c.stop() })
	return c
}

// stop cancels the run, waits for Run to return and returns the cursors to
// resume from. Run must return nil.
func (c *collector) stop() map[string][]byte {
	c.t.Helper()
	c.cancel()
	if err, ok := <-c.done; ok {
		close(c.done)
		if err != nil {
			c.t.Errorf("Run returned %v, want nil", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps(c.cursor)
}

func (c *collector) snapshot() []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}

func (c *collector) waitLines(n int) {
	c.t.Helper()
	got := 0
	waitFor(c.t, fmt.Sprintf("%d lines", n), func() bool { got = len(c.snapshot()); return got >= n },
		func() string {
			return fmt.Sprintf("got %d: first %q last %q", got, firstText(c.snapshot()), lastText(c.snapshot()))
		})
}

func (c *collector) waitText(text string) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("line %q", text), func() bool {
		return slices.ContainsFunc(c.snapshot(), func(l Line) bool { return l.Text == text })
	})
}

// waitEnded waits until Run returned on its own and returns its error.
func (c *collector) waitEnded() error {
	c.t.Helper()
	waitFor(c.t, "Run to return", func() bool {
		select {
		case <-c.ended:
			return true
		default:
			return false
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runErr
}
