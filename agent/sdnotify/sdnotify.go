package sdnotify

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Notifier sends state changes to the service manager. A nil *Notifier,
// what FromEnv returns outside a Type=notify unit, accepts every call and
// sends nothing, so callers need no checks.
type Notifier struct {
	addr *net.UnixAddr
}

// FromEnv returns a Notifier for the socket named by $NOTIFY_SOCKET, or nil
// when it is unset. getenv is os.Getenv outside tests.
func FromEnv(getenv func(string) string) (*Notifier, error) {
	name := getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil, nil
	}
	switch {
	case strings.HasPrefix(name, "@"):
		// An abstract socket: the name starts with a NUL byte, not "@".
		name = "\x00" + name[1:]
	case !strings.HasPrefix(name, "/"):
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q is neither a path nor an abstract socket name", name)
	}
	return &Notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}}, nil
}

// Send sends one notification: newline-separated VARIABLE=value
// assignments, as sd_notify(3) describes them.
func (n *Notifier) Send(state string) error {
	if n == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

// Ready says start-up (or a reload) is complete; status is shown by
// `systemctl status` when not empty.
func (n *Notifier) Ready(status string) error {
	return n.Send(withStatus("READY=1", status))
}

// Reloading says a reload has begun; Ready must follow when it ends,
// whether it succeeded or not. MONOTONIC_USEC lets systemd (253 and later,
// Type=notify-reload) tell this reload from an earlier one.
func (n *Notifier) Reloading() error {
	usec, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return n.Send("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10))
}

// Stopping says shutdown has begun.
func (n *Notifier) Stopping() error {
	return n.Send("STOPPING=1")
}

// Watchdog tells the watchdog the daemon is alive.
func (n *Notifier) Watchdog() error {
	return n.Send("WATCHDOG=1")
}

// Status updates the one-line status `systemctl status` shows.
func (n *Notifier) Status(status string) error {
	return n.Send(withStatus("", status))
}

func withStatus(state, status string) string {
	if status == "" {
		return state
	}
	// A newline would start another assignment.
	status = "STATUS=" + strings.ReplaceAll(status, "\n", " ")
	if state == "" {
		return status
	}
	return state + "\n" + status
}

func monotonicUsec() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read the monotonic clock: %w", err)
	}
	return ts.Nano() / 1000, nil
}

// WatchdogInterval is how often systemd expects Watchdog calls
// ($WATCHDOG_USEC), or false when the unit has no watchdog or the watchdog
// is meant for another process ($WATCHDOG_PID). pid is os.Getpid().
func WatchdogInterval(getenv func(string) string, pid int) (time.Duration, bool, error) {
	v := getenv("WATCHDOG_USEC")
	if v == "" {
		return 0, false, nil
	}
	usec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || usec <= 0 {
		return 0, false, fmt.Errorf("WATCHDOG_USEC=%q is not a positive number of microseconds", v)
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		wpid, err := strconv.Atoi(p)
		if err != nil {
			return 0, false, fmt.Errorf("WATCHDOG_PID=%q is not a process id", p)
		}
		if wpid != pid {
			return 0, false, nil
		}
	}
	return time.Duration(usec) * time.Microsecond, true, nil
}

// Keepalive sends WATCHDOG=1 on each tick for which alive returns nil
// within timeout, until ctx is done. alive should prove that the daemon's
// work gets done (a round trip through its main loop), not merely that this
// goroutine runs: a stuck daemon must miss its pings and be restarted.
// Failures of alive are passed to onMiss.
func (n *Notifier) Keepalive(ctx context.Context, ticks <-chan time.Time, timeout time.Duration,
	alive func(context.Context) error, onMiss func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := alive(cctx)
		cancel()
		if err == nil {
			err = n.Watchdog()
		}
		if err != nil && ctx.Err() == nil {
			onMiss(err)
		}
	}
}
