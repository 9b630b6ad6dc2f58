package journaldtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Paths of a journald. Binary is where Debian installs it.
const (
	Binary     = "/lib/systemd/systemd-journald"
	socketPath = "/run/systemd/journal/socket"
	socketDir  = "/run/systemd/journal"
	runtimeDir = "/run/log/journal"
	confDir    = "/run/systemd/journald.conf.d"
	confFile   = confDir + "/zz-mailban-test.conf"
	// lockPath is left in place after a test: another test process may
	// be waiting on it, and a lock file removed under a waiter locks
	// nothing.
	lockPath = "/run/lock/mailban-test-journald.lock"
)

// unavailable skips the test, or fails it when CI=true (CI installs what
// the test needs, so a missing piece there is a failure).
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("journald test: "+format, args...)
	}
	t.Skipf("journald test: "+format+" (CI=true makes this a failure)", args...)
}

// Running reports whether a journald accepts entries on its native socket.
func Running() bool {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socketPath, Net: "unixgram"})
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.Write(nil) // journald discards an empty datagram
	return err == nil
}

// Need makes sure a journald accepts entries until the test ends. Tests
// that need one hold a lock for their whole run, so that tests of several
// packages running at once neither start two nor stop one another's.
func Need(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"journalctl", "systemd-cat", "logger"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "%s not found (Debian: apt-get install systemd)", tool)
		}
	}
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		unavailable(t, "make %s: %v", filepath.Dir(lockPath), err)
	}
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		unavailable(t, "open the lock %s: %v", lockPath, err)
	}
	if err := flockWithin(lock, 2*time.Minute); err != nil {
		lock.Close()
		t.Fatalf("journald test: wait for the lock %s: %v", lockPath, err)
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	})
	if Running() {
		return
	}
	if os.Geteuid() != 0 {
		unavailable(t, "no journald runs, and only root can start one")
	}
	if _, err := os.Stat(Binary); err != nil {
		unavailable(t, "no journald runs, and %s is missing: %v", Binary, err)
	}
	start(t)
}

// flockWithin takes an exclusive lock on f, waiting at most d.
func flockWithin(f *os.File, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still held after %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start runs a journald of the test's own and arranges its end: stopped by
// its pid, and everything it or the test created removed.
func start(t testing.TB) {
	t.Helper()
	var created []string // removed at the end, last first
	for _, dir := range []string{confDir, socketDir, runtimeDir} {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			created = append(created, dir)
		}
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Volatile: nothing of the test stays in /var/log/journal. No rate
	// limit: a test writes hundreds of entries at once.
	conf := "[Journal]\nStorage=volatile\nRateLimitBurst=0\nForwardToSyslog=no\nForwardToWall=no\n"
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(Binary)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		os.Remove(confFile)
		t.Fatalf("start %s: %v", Binary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		os.Remove(confFile)
		for i := len(created) - 1; i >= 0; i-- {
			if err := os.RemoveAll(created[i]); err != nil {
				t.Errorf("remove %s: %v", created[i], err)
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !Running() || !journalFiles() {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("%s exited: %v\n%s", Binary, err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up in 10s:\n%s", Binary, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("started %s (pid %d) for this test", Binary, cmd.Process.Pid)
}

func journalFiles() bool {
	m, _ := filepath.Glob(filepath.Join(runtimeDir, "*", "*.journal"))
	return len(m) > 0
}

// Cat writes each line as an entry of the program identifier, as a
// service's standard output reaches the journal (systemd-cat).
func Cat(t testing.TB, identifier string, lines ...string) {
	t.Helper()
	cmd := exec.Command("systemd-cat", "-t", identifier)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-cat: %v\n%s", err, out)
	}
}

// Write sends one entry with the given FIELD=value pairs, as a program
// that logs structured fields does (logger --journald, the native
// protocol).
func Write(t testing.TB, fields ...string) {
	t.Helper()
	cmd := exec.Command("logger", "--journald")
	cmd.Stdin = strings.NewReader(strings.Join(fields, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("logger --journald: %v\n%s", err, out)
	}
}

// WaitEntries waits until the journal holds n entries matching matches
// (journalctl's FIELD=value terms), and returns their cursors in order.
func WaitEntries(t testing.TB, n int, matches ...string) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		args := append([]string{"--output=json", "--no-pager", "--output-fields=MESSAGE"}, matches...)
		out, err := exec.Command("journalctl", args...).Output()
		if err != nil {
			t.Fatalf("journalctl %v: %v", args, err)
		}
		var cursors []string
		for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
			var e struct {
				Cursor string `json:"__CURSOR"`
			}
			if len(line) > 0 && json.Unmarshal(line, &e) == nil {
				cursors = append(cursors, e.Cursor)
			}
		}
		if len(cursors) >= n {
			return cursors
		}
		if time.Now().After(deadline) {
			t.Fatalf("the journal holds %d entries matching %v after 20s, want %d", len(cursors), matches, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
