package source

import (
	"context"
	"time"
)

// restarter runs a reader that ends now and then (journalctl, a command)
// again and again until its context is done, waiting between runs: at
// once again after a run that delivered lines or lasted, longer and longer
// (up to max) while it keeps failing at once.
type restarter struct {
	min, max time.Duration
	health   *health
	what     string // the problem a failed run is, for status and the log ("run command")
	program  string // what ended, for the log ("command", "journalctl")
	// waiting is the stream state while waiting after a run that ended
	// with err; nil means stateRestarting.
	waiting func(err error) string
}

// run calls once until ctx is done and returns then. once returns how many
// lines it delivered and why the reader ended (nil: it ended or was
// stopped normally).
func (r restarter) run(ctx context.Context, once func(context.Context) (int, error)) {
	delay := r.min
	for first := true; ; first = false {
		if !first {
			r.health.restarted()
		}
		started := time.Now()
		delivered, err := once(ctx)
		if ctx.Err() != nil {
			return
		}
		if delivered > 0 || time.Since(started) >= r.max {
			delay = r.min
		}
		state := stateRestarting
		if r.waiting != nil {
			state = r.waiting(err)
		}
		if err != nil {
			r.health.problem(r.what, err)
		} else {
			r.health.log.Info(r.program+" ended; starting it again", "after", delay)
		}
		r.health.update(func(st *StreamStatus) { st.State = state })
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, r.max)
	}
}
