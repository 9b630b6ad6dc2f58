package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the zero values of CommandConfig's durations.
const (
	DefaultRestartDelay    = time.Second
	DefaultMaxRestartDelay = time.Minute
	DefaultStopTimeout     = 5 * time.Second
)

// CommandConfig says which command a Command source runs and how.
type CommandConfig struct {
	Name string   // source name (Line.Source)
	Argv []string // the program and its arguments, run without a shell; a program without a slash is looked up in PATH
	// StderrLines makes the command's standard error part of its output,
	// read as lines in the order they were written (docker logs passes a
	// container's standard error there). Otherwise standard error is
	// logged: the first lines of each run, and the last one in the error
	// when the command fails.
	StderrLines bool
	// RestartDelay is the wait before starting the command again after it
	// ended; it doubles while runs end without delivering a line, up to
	// MaxRestartDelay. Zero means DefaultRestartDelay (and
	// DefaultMaxRestartDelay).
	RestartDelay    time.Duration
	MaxRestartDelay time.Duration
	// StopTimeout is how long the command may take to exit after SIGTERM
	// when the source stops, before its process group is killed. Zero
	// means DefaultStopTimeout.
	StopTimeout time.Duration
	// MaxLineBytes cuts longer lines. Zero means DefaultMaxLineBytes.
	MaxLineBytes int
}

func (cfg CommandConfig) withDefaults() (CommandConfig, error) {
	if cfg.Name == "" {
		return cfg, errors.New("name is empty")
	}
	if len(cfg.Argv) == 0 || cfg.Argv[0] == "" {
		return cfg, errors.New("no command")
	}
	if err := defaultDurations(&cfg.RestartDelay, &cfg.MaxRestartDelay, &cfg.StopTimeout); err != nil {
		return cfg, err
	}
	switch {
	case cfg.MaxLineBytes < 0:
		return cfg, fmt.Errorf("max line bytes %d is negative", cfg.MaxLineBytes)
	case cfg.MaxLineBytes == 0:
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	return cfg, nil
}

// defaultDurations checks and fills a restart delay, its maximum and a stop
// timeout.
func defaultDurations(delay, maxDelay, stop *time.Duration) error {
	for _, d := range []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"restart delay", delay, DefaultRestartDelay},
		{"maximum restart delay", maxDelay, max(DefaultMaxRestartDelay, *delay)},
		{"stop timeout", stop, DefaultStopTimeout},
	} {
		switch {
		case *d.d < 0:
			return fmt.Errorf("%s %v is negative", d.name, *d.d)
		case *d.d == 0:
			*d.d = d.def
		}
	}
	if *maxDelay < *delay {
		return fmt.Errorf("maximum restart delay %v is shorter than the restart delay %v", *maxDelay, *delay)
	}
	return nil
}

// Command runs a command and reads its standard output as log lines,
// starting it again (with a growing delay) whenever it ends. A command's
// output has no offsets: its Cursor records how many lines of the current
// output were read and what they were, so that a command that prints its
// history again when restarted (docker logs -f) is not counted twice
// (replay.go).
type Command struct {
	cfg    CommandConfig
	last   outputPos
	log    *slog.Logger
	health *health
	pipe   *piped
	ran    atomic.Bool
}

// NewCommand checks cfg and makes a Command source. saved holds the cursor
// last delivered (and processed) in an earlier run under the stream "".
func NewCommand(cfg CommandConfig, saved map[string][]byte, logger *slog.Logger, m *Metrics) (*Command, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("configure command source %q: %w", cfg.Name, err)
	}
	last, err := savedOutput(saved)
	if err != nil {
		return nil, fmt.Errorf("configure command source %q: saved cursor: %w", cfg.Name, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("source", cfg.Name)
	h := newHealth(cfg.Name, "command", logger, m)
	h.update(func(st *StreamStatus) { st.Stream = strings.Join(cfg.Argv, " ") })
	return &Command{
		cfg:    cfg,
		last:   last,
		log:    logger,
		health: h,
		pipe:   &piped{name: cfg.Name, maxLine: cfg.MaxLineBytes, quiet: DefaultReplayQuiet, log: logger, health: h, now: time.Now},
	}, nil
}

// Name is the source's configured name.
func (c *Command) Name() string { return c.cfg.Name }

// Status reports what the command is doing.
func (c *Command) Status() []StreamStatus { return c.health.status() }

// Run runs the command until ctx is done, sending its lines to out, and
// starts it again whenever it ends. A command that cannot be started or
// fails is logged and tried again; Run returns nil when ctx is done. Run may
// be called once.
func (c *Command) Run(ctx context.Context, out chan<- Line) error {
	if !c.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("run command source %q: Run called twice", c.cfg.Name)
	}
	r := restarter{min: c.cfg.RestartDelay, max: c.cfg.MaxRestartDelay, health: c.health, what: "run command", program: "command"}
	r.run(ctx, func(ctx context.Context) (int, error) { return c.runOnce(ctx, out) })
	return nil
}

// runOnce runs the command once and delivers its output; it returns how
// many lines it delivered and why the command is not running any more (nil
// for a command that exited with status 0, or was stopped).
func (c *Command) runOnce(ctx context.Context, out chan<- Line) (int, error) {
	stderr := &stderrLog{log: c.log}
	ch, err := startChild(c.cfg.Argv, c.cfg.StderrLines, stderr, c.cfg.StopTimeout)
	if err != nil {
		return 0, err
	}
	c.health.update(func(st *StreamStatus) { st.State = stateRunning })
	c.log.Info("command started", "pid", ch.pid)
	last, delivered, readErr := c.pipe.feed(ctx, ch.out, c.last, out, ch.stop)
	c.last = last
	if readErr != nil && ctx.Err() == nil && !errors.Is(readErr, os.ErrDeadlineExceeded) {
		c.log.Warn("reading the command's output failed", "err", readErr)
	}
	stopped, werr := ch.wait()
	if stopped || werr == nil {
		return delivered, nil // stopped by us: its exit status says nothing
	}
	return delivered, stderr.explain(c.cfg.Argv[0], werr)
}

// child is one run of a program whose standard output is read: in its own
// process group, so that stopping it stops what it started (a pipeline, a
// wrapper script), and killed should mailban die.
type child struct {
	cmd         *exec.Cmd
	pid         int
	out         *os.File // its standard output; reads end when it (and its children) close it
	stopTimeout time.Duration

	wg       sync.WaitGroup
	exited   chan struct{}
	stopping chan struct{}
	stopOnce sync.Once
}

// startChild starts argv with its standard output (and standard error, if
// stderrLines) on a pipe, and its standard error otherwise to stderr.
func startChild(argv []string, stderrLines bool, stderr io.Writer, stopTimeout time.Duration) (*child, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("make a pipe: %w", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = pw
	if stderrLines {
		cmd.Stderr = pw
	} else {
		cmd.Stderr = stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = stopTimeout // a grandchild left holding standard error does not hold up Wait
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pw.Close() // the child has its copy
	return &child{
		cmd: cmd, pid: cmd.Process.Pid, out: pr, stopTimeout: stopTimeout,
		exited: make(chan struct{}), stopping: make(chan struct{}),
	}, nil
}

// stop ends the child: SIGTERM to its group, SIGKILL if it is still there
// after stopTimeout. Reading its output then meets the end. It returns true:
// the reading can be waited for.
func (c *child) stop() bool {
	c.stopOnce.Do(func() {
		close(c.stopping)
		c.wg.Go(func() {
			_ = syscall.Kill(-c.pid, syscall.SIGTERM)
			t := time.NewTimer(c.stopTimeout)
			defer t.Stop()
			select {
			case <-c.exited:
				return
			case <-t.C:
			}
			_ = syscall.Kill(-c.pid, syscall.SIGKILL)
			// A grandchild that left the group may still hold the pipe:
			// stop waiting for it.
			_ = c.out.SetReadDeadline(time.Now())
		})
	})
	return true
}

// wait is called once the output was read to its end: it gives the child
// stopTimeout to exit before stopping it, and reports whether it was stopped
// (by stop) and how it exited.
func (c *child) wait() (stopped bool, err error) {
	waited := make(chan error, 1)
	go func() { waited <- c.cmd.Wait() }()
	t := time.NewTimer(c.stopTimeout)
	select {
	case err = <-waited:
	case <-t.C:
		c.stop()
		err = <-waited
	}
	t.Stop()
	c.stopOnce.Do(func() {}) // a stop under way has started its goroutine; later ones do nothing
	close(c.exited)
	c.wg.Wait()
	c.out.Close()
	select {
	case <-c.stopping:
		return true, err
	default:
		return false, err
	}
}

// maxStderrLogged bounds the standard error lines logged per run.
const maxStderrLogged = 20

// stderrLog logs what a command writes to standard error, line by line,
// or hands each line to report when that is set.
type stderrLog struct {
	log    *slog.Logger
	report func(line string)

	mu     sync.Mutex
	buf    []byte
	logged int
	last   string
}

func (w *stderrLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) > 4096 { // no newline in sight: log what there is
				i = len(w.buf)
			} else {
				return len(p), nil
			}
		}
		w.line(string(w.buf[:i]))
		w.buf = w.buf[min(i+1, len(w.buf)):]
	}
}

func (w *stderrLog) line(s string) {
	if len(s) > 512 {
		s = s[:512]
	}
	w.last = s
	if w.report != nil {
		w.report(s)
		return
	}
	switch {
	case w.logged < maxStderrLogged:
		w.log.Warn("command wrote to standard error", "line", s)
	case w.logged == maxStderrLogged:
		w.log.Warn("command keeps writing to standard error; not logging more of this run")
	}
	w.logged++
}

// explain is err, the way program exited, with the last line it wrote to
// standard error.
func (w *stderrLog) explain(program string, err error) error {
	if line := w.lastLine(); line != "" {
		return fmt.Errorf("%s: %w (last on standard error: %q)", program, err, line)
	}
	return fmt.Errorf("%s: %w", program, err)
}

func (w *stderrLog) lastLine() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		return string(w.buf)
	}
	return w.last
}
