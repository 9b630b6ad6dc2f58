package source

import (
	"log/slog"
	"sync"
)

// States of single-stream sources (journald, command, stdin, webhook), as
// StreamStatus.State reports them, besides those of file streams.
const (
	stateRunning    = "running"    // reading, or listening
	stateRestarting = "restarting" // the reader ended; waiting to start it again
	stateEnded      = "ended"      // the input ended for good (standard input at its end)
)

// health is the StreamStatus of a single-stream source with its problem
// log: each distinct problem is logged once until the source recovers, and
// every one is counted.
type health struct {
	name string
	log  *slog.Logger
	m    *Metrics

	mu     sync.Mutex
	st     StreamStatus
	logged string // the problem logged last; "" after recovery
}

func newHealth(name, mode string, log *slog.Logger, m *Metrics) *health {
	m.begin(name, mode)
	return &health{name: name, log: log, m: m, st: StreamStatus{Mode: mode, State: stateWaiting}}
}

func (h *health) update(fn func(st *StreamStatus)) {
	h.mu.Lock()
	fn(&h.st)
	h.mu.Unlock()
}

func (h *health) status() []StreamStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return []StreamStatus{h.st}
}

// problem records a problem; it is logged at error level unless it is the
// one logged last.
func (h *health) problem(what string, err error) {
	msg := what + ": " + err.Error()
	h.m.problem(h.name)
	h.mu.Lock()
	h.st.Errors++
	h.st.LastError = msg
	repeat := msg == h.logged
	h.logged = msg
	h.mu.Unlock()
	if !repeat {
		h.log.Error(what, "err", err)
	}
}

// recovered clears the last problem: the next one is logged again.
func (h *health) recovered() {
	h.mu.Lock()
	h.st.LastError = ""
	h.logged = ""
	h.mu.Unlock()
}

// restarted counts a restart of the source's reader.
func (h *health) restarted() {
	h.m.restarted(h.name)
	h.update(func(st *StreamStatus) { st.Restarts++ })
}
