package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"
)

// StdinConfig configures a Stdin source.
type StdinConfig struct {
	Name         string // source name (Line.Source)
	MaxLineBytes int    // longer lines are cut; zero means DefaultMaxLineBytes
}

// Stdin reads log lines from standard input (mailban run under a pipe:
// `producer | mailban run`). Like a command's output, standard input has no
// offsets; its Cursor lets a producer that sends its history again after a
// restart be skipped up to where reading stopped (replay.go). At the end of
// input the source stops; mailban goes on running its other sources, and
// bans still expire.
type Stdin struct {
	cfg    StdinConfig
	r      io.Reader
	last   outputPos
	log    *slog.Logger
	health *health
	pipe   *piped
	ran    atomic.Bool
}

// deadliner is an input whose pending read can be ended: a pipe or socket
// in non-blocking mode (*os.File).
type deadliner interface {
	SetReadDeadline(time.Time) error
}

// NewStdin makes a Stdin source reading r, the process's standard input.
// For a clean stop, r should be an *os.File whose reads can be interrupted
// (a pipe made non-blocking; see Run). saved holds the cursor last
// delivered in an earlier run under the stream "".
func NewStdin(cfg StdinConfig, r io.Reader, saved map[string][]byte, logger *slog.Logger, m *Metrics) (*Stdin, error) {
	if cfg.Name == "" {
		return nil, errors.New("configure stdin source: name is empty")
	}
	if r == nil {
		return nil, fmt.Errorf("configure stdin source %q: no standard input", cfg.Name)
	}
	switch {
	case cfg.MaxLineBytes < 0:
		return nil, fmt.Errorf("configure stdin source %q: max line bytes %d is negative", cfg.Name, cfg.MaxLineBytes)
	case cfg.MaxLineBytes == 0:
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	last, err := savedOutput(saved)
	if err != nil {
		return nil, fmt.Errorf("configure stdin source %q: saved cursor: %w", cfg.Name, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("source", cfg.Name)
	h := newHealth(cfg.Name, "stdin", logger, m)
	h.update(func(st *StreamStatus) { st.Stream = "stdin" })
	return &Stdin{
		cfg:    cfg,
		r:      r,
		last:   last,
		log:    logger,
		health: h,
		pipe:   &piped{name: cfg.Name, maxLine: cfg.MaxLineBytes, quiet: DefaultReplayQuiet, log: logger, health: h, now: time.Now},
	}, nil
}

// Name is the source's configured name.
func (s *Stdin) Name() string { return s.cfg.Name }

// Status reports whether standard input is being read.
func (s *Stdin) Status() []StreamStatus { return s.health.status() }

// Run reads standard input until its end or until ctx is done, and returns
// nil then; a read error is returned. When the input's reads cannot be
// interrupted (a terminal, a pipe in blocking mode), Run returns at ctx's
// end without waiting for the read in progress, which ends with the next
// line or the end of input.
func (s *Stdin) Run(ctx context.Context, out chan<- Line) error {
	if !s.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("run stdin source %q: Run called twice", s.cfg.Name)
	}
	interrupt := func() bool { return false }
	if d, ok := s.r.(deadliner); ok && d.SetReadDeadline(time.Time{}) == nil {
		interrupt = func() bool { return d.SetReadDeadline(time.Unix(1, 0)) == nil }
	} else {
		s.log.Debug("standard input cannot be interrupted; a stop will not wait for the read in progress")
	}
	s.health.update(func(st *StreamStatus) { st.State = stateRunning })
	_, delivered, err := s.pipe.feed(ctx, s.r, s.last, out, interrupt)
	if ctx.Err() != nil {
		return nil
	}
	s.health.update(func(st *StreamStatus) { st.State = stateEnded })
	if err != nil {
		s.health.problem("read standard input", err)
		return fmt.Errorf("read standard input: %w", err)
	}
	s.log.Info("standard input ended; this source is done", "lines", delivered)
	return nil
}
