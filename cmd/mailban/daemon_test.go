package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The daemon test builds the real binary and drives it as an admin would:
// through its config file, the log it follows, and signals. It reads the
// daemon's JSON log to see what it decided.

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mailban")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// daemon is one running mailban process.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	logs chan map[string]any
	done chan error
	// early holds what was logged before "mailban running": goroutines
	// started with it (the metrics endpoint) may log before or after.
	early []map[string]any
}

func startDaemon(t *testing.T, bin, config string) *daemon {
	t.Helper()
	return startDaemonWith(t, bin, config, nil, nil)
}

// startDaemonWith starts the daemon with stdin as its standard input and
// env added to its environment.
func startDaemonWith(t *testing.T, bin, config string, stdin io.Reader, env []string) *daemon {
	t.Helper()
	cmd := exec.Command(bin, "run", "--config", config)
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, cmd: cmd, logs: make(chan map[string]any, 1000), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				rec = map[string]any{"msg": "unparsed output", "line": sc.Text()}
			}
			t.Logf("daemon: %s", sc.Text())
			d.logs <- rec
		}
		close(d.logs)
		d.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	// The metrics endpoint may say it listens before or after this:
	// what is passed over here is kept for the next await.
	_, d.early = d.await("mailban running", nil)
	return d
}

// await returns the next log record with the message msg whose attributes
// include want, failing the test after a generous deadline. Records passed
// over are returned too, so callers can check nothing unexpected happened.
func (d *daemon) await(msg string, want map[string]any) (map[string]any, []map[string]any) {
	d.t.Helper()
	for i, rec := range d.early {
		if rec["msg"] == msg && matches(rec, want) {
			skipped := d.early[:i]
			d.early = d.early[i+1:]
			return rec, skipped
		}
	}
	skipped := d.early
	d.early = nil
	deadline := time.After(20 * time.Second)
	for {
		select {
		case rec, ok := <-d.logs:
			if !ok {
				d.t.Fatalf("daemon exited while waiting for %q %v", msg, want)
			}
			if rec["level"] == "ERROR" && rec["msg"] != "configuration not reloaded; the running one stays in force" {
				d.t.Errorf("daemon logged an error: %v", rec)
			}
			if rec["msg"] == msg && matches(rec, want) {
				return rec, skipped
			}
			skipped = append(skipped, rec)
		case <-deadline:
			d.t.Fatalf("no %q %v in the daemon's log", msg, want)
		}
	}
}

func matches(rec, want map[string]any) bool {
	for k, v := range want {
		if fmt.Sprint(rec[k]) != fmt.Sprint(v) {
			return false
		}
	}
	return true
}

func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) stop() []map[string]any {
	d.t.Helper()
	d.signal(syscall.SIGTERM)
	var rest []map[string]any
	for rec := range d.logs {
		rest = append(rest, rec)
	}
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Fatalf("daemon exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		d.t.Fatal("daemon did not exit after SIGTERM")
	}
	return rest
}

func decisionsIn(recs []map[string]any) []string {
	var out []string
	for _, r := range recs {
		if r["msg"] == "decision" {
			out = append(out, fmt.Sprintf("%v %v%v", r["action"], r["prefix"], r["login"]))
		}
	}
	return out
}

func appendLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := io.WriteString(f, l+"\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func failure(ip, login string) string {
	return fmt.Sprintf("%s mx1 postfix/submission/smtpd[4242]: warning: unknown[%s]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=%s",
		time.Now().UTC().Format("2006-01-02T15:04:05.000000-07:00"), ip, login)
}

func noise(i int) string {
	return fmt.Sprintf("%s mx1 postfix/smtpd[4243]: connect from unknown[198.51.100.%d]",
		time.Now().UTC().Format(time.RFC3339), i%250)
}

const daemonConfig = `
log: {format: json, level: info}
state: {path: %[1]s/state.db, checkpoint-interval: 100ms}
rules:
  ip: {threshold: "3/10m"}
  login: {threshold: "50/1h"}
  ban: {for: 1h}
allowlist: {host-addresses: false}
%[2]s
sources:
  - name: mail
    paths: [%[1]s/mail.log]
    formats: [postfix, dovecot]
    start-at: beginning
enforcers:
  log: {}
metrics: {listen: "127.0.0.1:0"}
control: {socket: %[1]s/control.sock}
`

func writeConfig(t *testing.T, dir, extra string) string {
	return writeTemplate(t, dir, daemonConfig, extra)
}

// writeTemplate writes template as dir/mailban.yaml, with %[1]s standing
// for dir and %[2]s for extra, and returns its path.
func writeTemplate(t *testing.T, dir, template, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "mailban.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(template, dir, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDaemonBansKeepsStateAcrossRestartAndReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	config := writeConfig(t, dir, "")
	appendLines(t, logPath, noise(0))

	d := startDaemon(t, bin, config)
	metricsAddr, _ := d.await("metrics endpoint listening", nil)

	// Two failures are under the threshold; the third bans.
	appendLines(t, logPath, failure("203.0.113.7", "alice@example.test"), noise(1), failure("203.0.113.7", "bob@example.test"))
	appendLines(t, logPath, failure("198.51.100.20", "carol@example.test"), failure("198.51.100.20", "carol@example.test"))
	appendLines(t, logPath, failure("203.0.113.7", "alice@example.test"))
	_, before := d.await("decision", map[string]any{"action": "ban", "prefix": "203.0.113.7/32"})
	if got := decisionsIn(before); len(got) != 0 {
		t.Fatalf("decisions before the third failure: %v", got)
	}
	scrape := get(t, "http://"+metricsAddr["address"].(string)+"/metrics")
	for _, want := range []string{
		`mailban_lines_read_total{source="mail"} 7`,
		`mailban_events_total{format="postfix",kind="auth_failure",service="smtp"} 5`,
		`mailban_decisions_total{action="ban"} 1`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	rest := d.stop()
	if got := decisionsIn(rest); len(got) != 0 {
		t.Fatalf("decisions while stopping: %v", got)
	}

	// Restart: the ban and 198.51.100.20's two failures are remembered, and
	// no line is read twice (no second ban of 203.0.113.7).
	d = startDaemon(t, bin, config)
	appendLines(t, logPath, failure("198.51.100.20", "carol@example.test"))
	_, before = d.await("decision", map[string]any{"action": "ban", "prefix": "198.51.100.20/32"})
	if got := decisionsIn(before); len(got) != 0 {
		t.Fatalf("decisions after restart before the new failure: %v", got)
	}

	// A reload that blocks a network applies the block at once.
	writeConfig(t, dir, "blocked-networks: [192.0.2.0/24]")
	d.signal(syscall.SIGHUP)
	d.await("decision", map[string]any{"action": "block", "prefix": "192.0.2.0/24"})
	d.await("configuration reloaded", nil)

	// A broken config is refused and the running one keeps working.
	if err := os.WriteFile(config, []byte("rules:\n  ip:\n    threshold: lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	refused, _ := d.await("configuration not reloaded; the running one stays in force", nil)
	if !strings.Contains(fmt.Sprint(refused["error"]), "mailban.yaml:3: rules.ip.threshold") {
		t.Errorf("reload error %q does not name file, line and key", refused["error"])
	}
	appendLines(t, logPath, failure("203.0.113.99", "dave@example.test"), failure("203.0.113.99", "dave@example.test"), failure("203.0.113.99", "dave@example.test"))
	d.await("decision", map[string]any{"action": "ban", "prefix": "203.0.113.99/32"})
	d.stop()
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A crash (SIGKILL) at any moment loses no line and counts none twice:
// lines after the last checkpoint are read again and counted against the
// counters saved with it. Each round kills the daemon at a different point
// relative to its checkpoints; the ban must come exactly with the third
// failure, and say 3 failures.
func TestDaemonCrashLosesNothingCountsNothingTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	config := writeConfig(t, dir, "")
	appendLines(t, logPath, noise(0))
	for round := range 6 {
		ip := fmt.Sprintf("203.0.113.%d", 10+round)
		d := startDaemon(t, bin, config)
		appendLines(t, logPath, failure(ip, "x@example.test"), noise(round))
		if round%2 == 1 {
			appendLines(t, logPath, failure(ip, "x@example.test"))
		}
		// Give the checkpoint a varying head start, from none to several.
		time.Sleep(time.Duration(round) * 60 * time.Millisecond)
		if err := d.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		for rec := range d.logs {
			if rec["msg"] == "decision" {
				t.Fatalf("round %d: decision before the third failure: %v", round, rec)
			}
		}
		<-d.done

		d = startDaemon(t, bin, config)
		if round%2 == 0 {
			appendLines(t, logPath, failure(ip, "x@example.test"))
		}
		appendLines(t, logPath, noise(round), failure(ip, "x@example.test"))
		ban, before := d.await("decision", map[string]any{"action": "ban", "prefix": ip + "/32"})
		if got := decisionsIn(before); len(got) != 0 {
			t.Fatalf("round %d: decisions before the ban: %v", round, got)
		}
		if reason := fmt.Sprint(ban["reason"]); !strings.HasPrefix(reason, "3 failures") {
			t.Fatalf("round %d: ban reason %q, want exactly 3 failures counted", round, reason)
		}
		d.stop()
	}
}
