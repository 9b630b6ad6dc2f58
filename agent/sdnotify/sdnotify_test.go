package sdnotify

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen is what systemd does: a unixgram socket that receives one
// notification per datagram.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestNotificationsReachTheSocket(t *testing.T) {
	for _, tc := range []struct {
		name   string
		socket func(t *testing.T) (envName, listenName string)
	}{
		{"path", func(t *testing.T) (string, string) {
			p := filepath.Join(t.TempDir(), "notify")
			return p, p
		}},
		{"abstract", func(t *testing.T) (string, string) {
			n := "mailban-sdnotify-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			return "@" + n, "\x00" + n
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			envName, listenName := tc.socket(t)
			conn := listen(t, listenName)
			n, err := FromEnv(env(map[string]string{"NOTIFY_SOCKET": envName}))
			if err != nil || n == nil {
				t.Fatalf("FromEnv = %v, %v", n, err)
			}

			if err := n.Ready("watching 2 sources"); err != nil {
				t.Fatal(err)
			}
			if got, want := receive(t, conn), "READY=1\nSTATUS=watching 2 sources"; got != want {
				t.Errorf("ready: got %q, want %q", got, want)
			}

			before := monotonic(t)
			if err := n.Reloading(); err != nil {
				t.Fatal(err)
			}
			got := receive(t, conn)
			first, usec, ok := strings.Cut(got, "\nMONOTONIC_USEC=")
			if !ok || first != "RELOADING=1" {
				t.Fatalf("reloading: got %q", got)
			}
			if v, err := strconv.ParseInt(usec, 10, 64); err != nil || v < before || v > monotonic(t) {
				t.Errorf("MONOTONIC_USEC=%s is not the monotonic clock now (%d..)", usec, before)
			}

			for _, c := range []struct {
				send func() error
				want string
			}{
				{n.Stopping, "STOPPING=1"},
				{n.Watchdog, "WATCHDOG=1"},
				{func() error { return n.Status("reloading\nnow") }, "STATUS=reloading now"},
				{func() error { return n.Ready("") }, "READY=1"},
			} {
				if err := c.send(); err != nil {
					t.Fatal(err)
				}
				if got := receive(t, conn); got != c.want {
					t.Errorf("got %q, want %q", got, c.want)
				}
			}
		})
	}
}

func monotonic(t *testing.T) int64 {
	t.Helper()
	v, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWithoutSystemdNothingIsSent(t *testing.T) {
	n, err := FromEnv(env(nil))
	if err != nil || n != nil {
		t.Fatalf("FromEnv without NOTIFY_SOCKET = %v, %v; want nil, nil", n, err)
	}
	for _, f := range []func() error{func() error { return n.Ready("x") }, n.Reloading, n.Stopping, n.Watchdog} {
		if err := f(); err != nil {
			t.Errorf("nil notifier: %v", err)
		}
	}
	if _, err := FromEnv(env(map[string]string{"NOTIFY_SOCKET": "relative/path"})); err == nil {
		t.Error("a relative NOTIFY_SOCKET was accepted")
	}
	gone := filepath.Join(t.TempDir(), "gone")
	n, _ = FromEnv(env(map[string]string{"NOTIFY_SOCKET": gone}))
	if err := n.Ready(""); err == nil {
		t.Error("sending to a missing socket reported no error")
	}
}

func TestWatchdogInterval(t *testing.T) {
	cases := []struct {
		vars    map[string]string
		want    time.Duration
		enabled bool
		bad     bool
	}{
		{nil, 0, false, false},
		{map[string]string{"WATCHDOG_USEC": "30000000"}, 30 * time.Second, true, false},
		{map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 30 * time.Second, true, false},
		{map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, 0, false, false},
		{map[string]string{"WATCHDOG_USEC": "soon"}, 0, false, true},
		{map[string]string{"WATCHDOG_USEC": "0"}, 0, false, true},
		{map[string]string{"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "x"}, 0, false, true},
	}
	for _, tc := range cases {
		got, enabled, err := WatchdogInterval(env(tc.vars), 42)
		if got != tc.want || enabled != tc.enabled || (err != nil) != tc.bad {
			t.Errorf("%v: got %v, %v, %v; want %v, %v, error %v", tc.vars, got, enabled, err, tc.want, tc.enabled, tc.bad)
		}
	}
}

// The watchdog is fed only when the daemon proves it is alive: a failed
// liveness check sends nothing and is reported.
func TestKeepaliveFeedsTheWatchdogOnlyWhenAlive(t *testing.T) {
	p := filepath.Join(t.TempDir(), "notify")
	conn := listen(t, p)
	n, _ := FromEnv(env(map[string]string{"NOTIFY_SOCKET": p}))

	ticks := make(chan time.Time)
	results := make(chan error)
	misses := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Keepalive(ctx, ticks, time.Second, func(context.Context) error { return <-results }, func(err error) { misses <- err })
	}()

	stuck := errors.New("main loop did not answer")
	ticks <- time.Time{}
	results <- stuck
	if err := <-misses; !errors.Is(err, stuck) {
		t.Fatalf("miss reported as %v", err)
	}
	ticks <- time.Time{}
	results <- nil
	if got := receive(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", got)
	}
	// Only one datagram was sent: the failed check sent none.
	if err := conn.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("an extra notification was sent (%d bytes)", n)
	}
	cancel()
	<-done
}
