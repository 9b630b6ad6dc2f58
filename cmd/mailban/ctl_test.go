package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailban/mailban/agent/control"
)

// The control commands are tested as an admin uses them: the real binary,
// a running daemon, its socket. The daemon also reports to a socket that
// stands in for systemd's, so its notifications are checked on the way.

const ctlConfig = `
log: {format: json, level: info}
state: {path: %[1]s/state.db, checkpoint-interval: 1h} # only commands and stops save
rules:
  ip: {threshold: "3/10m"}
  login: {threshold: "3/10m"}
  ban: {for: 1h}
allowlist: {host-addresses: false, networks: [192.0.2.0/28]}
blocked-networks: [198.51.100.0/28]
sources:
  - name: mail
    paths: [%[1]s/mail.log]
    formats: [postfix, dovecot]
    start-at: beginning
enforcers:
  log: {evidence: true}
metrics: {listen: ""}
control: {socket: %[1]s/ctl.sock}
%[2]s`

// cli runs the mailban binary with args and returns its exit code and output.
func cli(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("mailban %s: %v", strings.Join(args, " "), err)
	return 0, "", ""
}

// systemd is a stand-in for systemd's notification socket.
type systemd struct {
	t    *testing.T
	conn *net.UnixConn
	path string
}

func newSystemd(t *testing.T, dir string) *systemd {
	t.Helper()
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &systemd{t: t, conn: conn, path: path}
}

// await returns the next notification that starts with prefix, skipping
// watchdog pings unless they are what it waits for.
func (s *systemd) await(prefix string) string {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	buf := make([]byte, 4096)
	for {
		if err := s.conn.SetReadDeadline(deadline); err != nil {
			s.t.Fatal(err)
		}
		n, err := s.conn.Read(buf)
		if err != nil {
			s.t.Fatalf("no notification %q: %v", prefix, err)
		}
		msg := string(buf[:n])
		if strings.HasPrefix(msg, prefix) {
			return msg
		}
		if msg != "WATCHDOG=1" {
			s.t.Fatalf("notification %q while waiting for %q", msg, prefix)
		}
	}
}

type cliCase struct {
	args   []string
	code   int
	stdout string // a substring of standard output, spaces squeezed
	stderr string // a substring of standard error
}

func runCases(t *testing.T, bin, socket string, cases []cliCase) {
	t.Helper()
	for _, tc := range cases {
		// The socket goes first so that a case's own --socket wins.
		args := append([]string{tc.args[0], "--socket", socket}, tc.args[1:]...)
		code, stdout, stderr := cli(t, bin, args...)
		// Tables pad with spaces: compare with runs of spaces as one.
		flat := strings.Join(strings.Fields(stdout), " ")
		if code != tc.code || !strings.Contains(flat, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("mailban %s: exit %d\nstdout: %s\nstderr: %s\nwant exit %d, stdout with %q, stderr with %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
		}
	}
}

func TestControlCommandsAgainstARunningDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := buildBinary(t)
	dir, err := os.MkdirTemp("", "mbctl") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	logPath := filepath.Join(dir, "mail.log")
	socket := filepath.Join(dir, "ctl.sock")
	config := writeTemplate(t, dir, ctlConfig, "")
	appendLines(t, logPath, noise(0))
	sd := newSystemd(t, dir)

	d := startDaemonWith(t, bin, config, nil, []string{"NOTIFY_SOCKET=" + sd.path, "WATCHDOG_USEC=200000"})
	if got := sd.await("READY=1"); got != "READY=1\nSTATUS=watching 1 sources" {
		t.Errorf("ready notification %q", got)
	}
	sd.await("WATCHDOG=1")
	if fi, err := os.Lstat(socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, mode %v; want 0600", err, fi.Mode())
	}

	switch {
	case os.Geteuid() == 0:
		checkOthersAreKeptOut(t, bin, socket)
	case os.Getenv("CI") == "true":
		t.Fatal("CI runs as root: keeping other users out is tested as root")
	}

	appendLines(t, logPath, failure("203.0.113.7", "alice@example.test"), failure("203.0.113.7", "bob@example.test"), failure("203.0.113.7", "alice@example.test"))
	d.await("decision", map[string]any{"action": "ban", "prefix": "203.0.113.7/32"})

	runCases(t, bin, socket, []cliCase{
		{[]string{"status"}, 0, "following", ""},
		{[]string{"status"}, 0, "1 bans, 1 blocks, 0 locks", ""},
		{[]string{"bans"}, 0, "203.0.113.7/32 ban", ""},
		{[]string{"bans"}, 0, "3 failures in 10m (threshold 3/10m)", ""},
		{[]string{"bans", "--type", "block"}, 0, "198.51.100.0/28 block", ""},
		{[]string{"bans", "--net", "203.0.113.0/24", "--type", "block"}, 0, "no bans in force", ""},
		{[]string{"why", "203.0.113.7"}, 0, "rule: 3 failures in 10m", ""},
		{[]string{"why", "203.0.113.7"}, 0, "unknown[203.0.113.7]: SASL LOGIN authentication failed", ""},
		{[]string{"why", "203.0.113.99"}, exitNotFound, "allowed: not banned or blocked", ""},
		{[]string{"why", "192.0.2.3"}, exitNotFound, "allowlisted by 192.0.2.0/28", ""},
		{[]string{"why", "198.51.100.0/24"}, exitNotFound, "partly refused", ""},
	})

	// Wrong input: refused before the daemon is asked, or by it, with a
	// hint and an exit code that says which.
	runCases(t, bin, socket, []cliCase{
		{[]string{"ban"}, exitUsage, "", "name an address or a CIDR network to ban"},
		{[]string{"ban", "203.0.113.300"}, exitUsage, "", `"203.0.113.300" is not an IP address or CIDR network`},
		{[]string{"ban", "203.0.113.7/24"}, exitUsage, "", "did you mean 203.0.113.0/24?"},
		{[]string{"ban", "203.0.113.7", "203.0.113.8"}, exitUsage, "", `unexpected argument "203.0.113.8"`},
		{[]string{"ban", "203.0.113.8", "--for", "soon"}, exitUsage, "", `--for "soon" is not a duration`},
		{[]string{"ban", "203.0.113.8", "--colour"}, exitUsage, "", "flag provided but not defined: -colour"},
		{[]string{"bans", "--type", "lock"}, exitUsage, "", "want ban or block"},
		{[]string{"ban", "192.0.2.0/29"}, exitFailure, "", "it is allowlisted (192.0.2.0/28)"},
		{[]string{"ban", "192.0.2.0/29", "--force"}, exitFailure, "", "allowlisted addresses are never refused"},
		{[]string{"ban", "127.0.0.1"}, exitFailure, "", "it is allowlisted (127.0.0.0/8)"},
		{[]string{"ban", "0.0.0.0/0"}, exitFailure, "", "that is every IPv4 address; add --force if you mean it"},
		{[]string{"block", "::/0"}, exitFailure, "", "that is every IPv6 address"},
		{[]string{"block", "192.0.2.0/24"}, exitFailure, "", "contains allowlisted 192.0.2.0/28, which stay allowed whatever you do; add --force to block the rest of it (4 networks)"},
		{[]string{"unban", "203.0.113.99"}, exitNotFound, "", "203.0.113.99/32 is not banned"},
		{[]string{"unlock", "nobody@example.test"}, exitNotFound, "", `login "nobody@example.test" is not locked`},
		{[]string{"unblock", "198.51.100.0/28"}, exitFailure, "", "listed in blocked-networks of " + config + "; remove it there, then run mailban reload"},
		{[]string{"status", "--socket", filepath.Join(dir, "none.sock")}, exitUnavailable, "", "is mailban running"},
	})

	// Changes: each is enforced (the log enforcer writes it) and saved.
	runCases(t, bin, socket, []cliCase{
		{[]string{"ban", "203.0.113.50", "--for", "2d", "--reason", "seen scanning"}, 0, "banned 203.0.113.50/32 for 2d", ""},
	})
	d.await("decision", map[string]any{"action": "ban", "prefix": "203.0.113.50/32", "reason": "manual ban: seen scanning", "for": "2d"})
	runCases(t, bin, socket, []cliCase{
		{[]string{"why", "203.0.113.50"}, 0, "rule: manual ban: seen scanning", ""},
		{[]string{"unban", "203.0.113.50"}, 0, "unbanned 203.0.113.50/32", ""},
		{[]string{"unban", "203.0.113.50"}, exitNotFound, "", "is not banned"},
		{[]string{"ban", "--force", "192.0.2.0/24", "--for", "permanent"}, 0, "banned 192.0.2.0/24 except its allowlisted addresses, as 4 networks, permanently", ""},
		{[]string{"bans", "--permanent", "--net", "192.0.2.0/24"}, 0, "192.0.2.128/25 ban", ""},
		{[]string{"unban", "192.0.2.0/24"}, exitNotFound, "", "4 inside it (192.0.2.16/28, 192.0.2.32/27, 192.0.2.64/26; add --inside to lift them all)"},
		{[]string{"unban", "192.0.2.0/24", "--inside"}, 0, "unbanned 4 inside 192.0.2.0/24", ""},
		{[]string{"block", "203.0.113.128/25", "--reason", "hosting range"}, 0, "blocked 203.0.113.128/25 until unblocked", ""},
		{[]string{"unblock", "203.0.113.130"}, exitNotFound, "", "it lies inside 203.0.113.128/25 (mailban unblock 203.0.113.128/25)"},
	})
	d.await("decision", map[string]any{"action": "block", "prefix": "203.0.113.128/25", "reason": "manual block: hosting range"})

	var st control.Status
	_, out, _ := cli(t, bin, "status", "--json", "--socket", socket)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Counts.Bans != 1 || st.Counts.Blocks != 2 || len(st.Sources) != 1 || len(st.Sources[0].Streams) != 1 ||
		st.Sources[0].Streams[0].Lines != 4 || st.Sources[0].LagBytes != 0 || st.State.LastCheckpoint == nil || len(st.Enforcers) != 1 || !st.Enforcers[0].Healthy || st.Config != config {
		t.Errorf("status --json: %+v", st)
	}

	// A command's change is saved before it answers: a crash right after
	// loses nothing (checkpoints are an hour apart here).
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for range d.logs {
	}
	<-d.done
	d = startDaemonWith(t, bin, config, nil, []string{"NOTIFY_SOCKET=" + sd.path, "WATCHDOG_USEC=200000"})
	sd.await("READY=1")
	runCases(t, bin, socket, []cliCase{
		{[]string{"bans", "--type", "block", "--reason", "HOSTING"}, 0, "203.0.113.128/25 block", ""},
		{[]string{"bans", "--net", "192.0.2.0/24"}, 0, "no bans in force", ""},
		{[]string{"bans", "--net", "203.0.113.7"}, 0, "203.0.113.7/32 ban", ""},
	})

	// A login locked by failures from three addresses.
	appendLines(t, logPath, failure("203.0.113.61", "carol@example.test"), failure("203.0.113.62", "carol@example.test"), failure("203.0.113.63", "carol@example.test"))
	d.await("decision", map[string]any{"action": "lock", "login": "carol@example.test"})
	runCases(t, bin, socket, []cliCase{
		{[]string{"locks"}, 0, "carol@example.test", ""},
		{[]string{"locks", "--login", "dave"}, 0, "no locks in force", ""},
		{[]string{"why", "Carol@Example.test"}, 0, "carol@example.test: refused: login locked", ""},
		{[]string{"why", "carol@example.test"}, 0, "unknown[203.0.113.63]", ""},
		{[]string{"unlock", "Carol@Example.test"}, 0, "unlocked carol@example.test", ""},
		{[]string{"unlock", "carol@example.test"}, exitNotFound, "", "is not locked"},
	})
	d.await("decision", map[string]any{"action": "unlock", "login": "carol@example.test"})

	// Reload: systemd sees it begin and end; a broken file is refused with
	// its line, and the running configuration stays.
	runCases(t, bin, socket, []cliCase{{[]string{"reload"}, 0, "reloaded " + config, ""}})
	sd.await("RELOADING=1\nMONOTONIC_USEC=")
	sd.await("READY=1")
	good, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, []byte("rules:\n  ip:\n    threshold: lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runCases(t, bin, socket, []cliCase{{[]string{"reload"}, exitFailure, "", "mailban.yaml:3: rules.ip.threshold"}})
	sd.await("RELOADING=1")
	sd.await("READY=1")
	if err := os.WriteFile(config, good, 0o644); err != nil {
		t.Fatal(err)
	}
	runCases(t, bin, socket, []cliCase{
		{[]string{"status"}, 0, "LAST RELOAD FAILED", ""},
		{[]string{"version"}, 0, "daemon: mailban dev (pid ", ""},
	})

	runCases(t, bin, socket, []cliCase{
		{[]string{"unblock", "203.0.113.128/25"}, 0, "unblocked 203.0.113.128/25", ""},
	})
	d.await("decision", map[string]any{"action": "unblock", "prefix": "203.0.113.128/25"})

	d.stop()
	sd.await("STOPPING=1")
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// checkOthersAreKeptOut runs the CLI as nobody: the socket (0600, root's)
// refuses it, and the message says what to do.
func checkOthersAreKeptOut(t *testing.T, bin, socket string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mbnobody")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	nobodyBin := filepath.Join(dir, "mailban")
	if err := os.WriteFile(nobodyBin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nobodyBin, "status", "--socket", socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUnavailable || !strings.Contains(string(out), "permission denied: run as root") {
		t.Errorf("mailban status as nobody: %v\n%s\nwant exit %d and a permission hint", err, out, exitUnavailable)
	}
}

// In fleet mode status says where counting happens, and when Redis is
// away, since when and why.
func TestStatusShowsTheFleet(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.Local)
	lost := now.Add(-90 * time.Second)
	cases := []struct {
		fleet *control.Fleet
		want  string // the fleet line; "" for none
	}{
		{nil, ""},
		{&control.Fleet{Host: "mx1", Redis: "10.0.0.5:6379", Up: true, SharedEvents: 120, LocalEvents: 3, Received: 7},
			"fleet:   host mx1, Redis 10.0.0.5:6379 up; 120 events counted in Redis, 3 alone; 7 decisions of other hosts applied, 0 waiting to be sent"},
		{&control.Fleet{Host: "mx1", Redis: "10.0.0.5:6379", DownSince: &lost, LastError: "dial tcp 10.0.0.5:6379: connection refused", LocalEvents: 9, Outbox: 2},
			"fleet:   host mx1, REDIS 10.0.0.5:6379 DOWN since 2026-11-26 11:58:30 (1m30s ago), counting on this host alone: dial tcp 10.0.0.5:6379: connection refused; 0 events counted in Redis, 9 alone; 0 decisions of other hosts applied, 2 waiting to be sent"},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		printStatus(&out, control.Status{Started: now, Reload: control.Reload{At: now, OK: true}, Fleet: tc.fleet}, now)
		var got string
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(line, "fleet:") {
				got = line
			}
		}
		if got != tc.want {
			t.Errorf("fleet line:\n got %q\nwant %q", got, tc.want)
		}
	}
}

func TestRoughly(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                     "0s",
		42*time.Second + 400*time.Millisecond: "42s",
		598 * time.Second:                     "9m58s",
		10 * time.Minute:                      "10m",
		5*time.Hour + 3*time.Minute + 10*time.Second: "5h3m",
		47 * time.Hour:      "47h",
		76 * time.Hour:      "3d4h",
		14 * 24 * time.Hour: "14d",
	} {
		if got := roughly(d); got != want {
			t.Errorf("roughly(%v) = %q, want %q", d, got, want)
		}
	}
}
