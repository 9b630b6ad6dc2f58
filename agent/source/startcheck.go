package source

import (
	"time"
)

// The start-up check closes a window nxadm/tail leaves open each time a
// follower starts: the library reads the file to its end, and only when it
// first meets the end does it add its inotify watch, so a line written
// between that read and inotify_add_watch makes no event, and the follower
// sleeps until the next write (seconds, hours). Every start has the window:
// the first, and the restarts after a rotation, a truncation or a stall.
//
// Once the library's watch is in place, every later write wakes it; what the
// file held at that moment is what it may have missed. So the check takes the
// file's size when it first sees the watch, and waits until the lines up to
// that size are delivered. If a complete line of them waits while the
// follower delivers nothing for startStallAfter, the follower missed its
// wake-up: it is started again at the last line delivered, which re-runs the
// library's read to the end, so nothing is lost or delivered twice. The new
// start is checked in turn; after maxStartRestarts restarts in a row the
// check gives up and leaves the follower to the watchdog, which also covers
// watches lost later.

const (
	// startCheckFirst is how soon after a start the check first looks; while
	// the library is still reading towards the end the wait doubles, up to
	// startCheckMax, so a long backlog costs few looks.
	startCheckFirst = 250 * time.Microsecond
	startCheckMax   = 2 * time.Millisecond
	// startStallAfter is how long a line that was in the file when the
	// watch was added may wait while the follower delivers nothing. A
	// follower that has the line in hand delivers it in microseconds.
	startStallAfter = time.Millisecond
	// maxStartRestarts bounds restarts in a row for missed wake-ups; more
	// mean something else is wrong (another source on the same file).
	maxStartRestarts = 3
)

// startCheck is the start-up check of one follower (tracked.tl).
type startCheck struct {
	active   bool
	wait     time.Duration // until the next look while no watch is seen
	target   int64         // the file's size when the watch was first seen; -1 before
	fromTail uint64        // tracked.fromTail at the last look since
	restarts int           // restarts in a row for missed wake-ups
}

// armStartCheck begins the check of c's follower, just started.
func (s *stream) armStartCheck(c *tracked) {
	if c.tl.poll {
		c.start = startCheck{}
		s.update(func(st *StreamStatus) { st.watching = true })
		return
	}
	c.start = startCheck{active: true, wait: startCheckFirst, target: -1}
	s.update(func(st *StreamStatus) { st.watching = false })
	s.armStartTimer(startCheckFirst)
}

func (s *stream) armStartTimer(d time.Duration) {
	if s.startTimer == nil {
		s.startTimer = time.NewTimer(d)
	} else {
		s.startTimer.Reset(d)
	}
	s.startArmed = true
}

// startTimerC is what run waits on for the next look: nil when none is due.
func (s *stream) startTimerC() <-chan time.Time {
	if !s.startArmed {
		return nil
	}
	return s.startTimer.C
}

func (s *stream) stopStartTimer() {
	if s.startTimer != nil {
		s.startTimer.Stop()
	}
	s.startArmed = false
}

// checkStart is one look of the start-up check of the current follower.
func (s *stream) checkStart() {
	s.startArmed = false
	c := s.cur
	if c == nil || c.tl == nil || !c.start.active {
		return
	}
	if !c.tl.watching() {
		c.start.wait = min(2*c.start.wait, startCheckMax)
		s.armStartTimer(c.start.wait)
		return
	}
	fi, err := c.f.Stat()
	if err != nil {
		c.start.active = false // the next check reports it
		return
	}
	size := fi.Size()
	progressed := true
	if c.start.target < 0 {
		c.start.target = size
	} else {
		progressed = c.fromTail != c.start.fromTail
	}
	c.start.fromTail = c.fromTail
	if !s.lineWaits(c, min(size, c.start.target)) {
		// Lines written from now on come by inotify.
		c.start.active, c.start.restarts = false, 0
		s.update(func(st *StreamStatus) { st.watching = true })
		return
	}
	if progressed {
		s.armStartTimer(startStallAfter)
		return
	}
	if c.start.restarts >= maxStartRestarts {
		c.start.active = false
		s.log.Warn("follower keeps missing writes as it starts; leaving it to the watchdog", "offset", c.pos)
		return
	}
	s.log.Debug("follower missed a write as it started; starting it again", "offset", c.pos)
	restarts := c.start.restarts + 1
	s.stopTail(c)
	s.update(func(st *StreamStatus) { st.Restarts++ })
	s.startTail(c)
	if c.tl != nil {
		c.start.restarts = restarts
	}
}

// lineWaits reports whether a complete line of c, between the last one
// delivered and end, is undelivered. Like the watchdog, it looks at most
// MaxLineBytes+1 bytes far.
func (s *stream) lineWaits(c *tracked, end int64) bool {
	if end <= c.pos {
		return false
	}
	complete, err := hasNewline(c.f, c.pos, min(end-c.pos, int64(s.src.cfg.MaxLineBytes)+1))
	return err == nil && complete
}
