package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/internal/journaldtest"
)

// sourceConfig is a daemon configuration with one source, given as YAML
// lines indented for the sources list.
const sourceConfig = `
log: {format: json, level: info}
state: {path: %[1]s/state.db, checkpoint-interval: 100ms}
control: {socket: ""}
rules:
  ip: {threshold: "3/10m"}
  login: {threshold: "50/1h"}
  ban: {for: 1h}
allowlist: {host-addresses: false}
sources:
%[2]s
enforcers:
  log: {}
metrics: {listen: "127.0.0.1:0"}
`

// metricValue reads one series from a /metrics scrape; 0 when absent.
func metricValue(scrape, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(scrape)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// waitMetric waits until series reaches want, and fails if it passes it.
func (d *daemon) waitMetric(metricsURL, series string, want float64) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := metricValue(get(d.t, metricsURL), series)
		if got == want {
			return
		}
		if got > want {
			d.t.Fatalf("%s = %v, want %v", series, got, want)
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s = %v after 20s, want %v", series, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) metricsURL() string {
	d.t.Helper()
	rec, _ := d.await("metrics endpoint listening", nil)
	return "http://" + rec["address"].(string) + "/metrics"
}

// TestDaemonJournal runs mailban on a real journal: Postfix lines (program
// and message as the journal keeps them) and Stalwart's structured entries.
// It is stopped mid-stream, entries come while it is down, and it is killed
// mid-stream: each failure counts once, so each ban comes with the third.
func TestDaemonJournal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	journaldtest.Need(t)
	bin := buildBinary(t)
	dir := t.TempDir()
	tag := fmt.Sprintf("mbt%d%d", os.Getpid(), time.Now().UnixNano()%1e9)
	postfix, stalwart := "postfix-"+tag+"/smtpd", "stalwart-"+tag
	config := writeTemplate(t, dir, sourceConfig, fmt.Sprintf(`  - name: journal
    type: journald
    matches: ["SYSLOG_IDENTIFIER=%s", "SYSLOG_IDENTIFIER=%s"]
    formats: [postfix]
    restart-delay: 10ms`, postfix, stalwart))
	fail := func(ip string) string {
		return fmt.Sprintf("warning: unknown[%s]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=alice@example.test", ip)
	}
	stalwartFail := func(ip string) {
		journaldtest.Write(t, "SYSLOG_IDENTIFIER="+stalwart, "MESSAGE=Authentication failed", "REMOTEIP="+ip,
			"ACCOUNTNAME=bob@example.test", "LISTENERID=imap", "PRIORITY=5")
	}
	lines := `mailban_lines_read_total{source="journal"}`
	postfixEvents := `mailban_events_total{format="postfix",kind="auth_failure",service="smtp"}`
	stalwartEvents := `mailban_events_total{format="stalwart-journal",kind="auth_failure",service="imap"}`

	d := startDaemon(t, bin, config)
	url := d.metricsURL()
	d.await("reading the journal", nil)
	journaldtest.Cat(t, postfix, fail("203.0.113.7"), "connect from unknown[198.51.100.1]", fail("203.0.113.7"))
	stalwartFail("198.51.100.20")
	stalwartFail("198.51.100.20")
	d.waitMetric(url, lines, 5)
	d.waitMetric(url, postfixEvents, 2)
	d.waitMetric(url, stalwartEvents, 2)
	if got := decisionsIn(d.stop()); len(got) != 0 {
		t.Fatalf("decisions after two failures each: %v", got)
	}

	// While it is down: the third failure of each.
	journaldtest.Cat(t, postfix, fail("203.0.113.7"))
	stalwartFail("198.51.100.20")
	journaldtest.WaitEntries(t, 3, "SYSLOG_IDENTIFIER="+postfix)
	journaldtest.WaitEntries(t, 3, "SYSLOG_IDENTIFIER="+stalwart)
	d = startDaemon(t, bin, config)
	url = d.metricsURL()
	_, before := d.await("decision", map[string]any{"action": "ban"})
	_, between := d.await("decision", map[string]any{"action": "ban"})
	if got := decisionsIn(append(before, between...)); len(got) != 0 {
		t.Fatalf("other decisions before the bans: %v", got)
	}
	d.waitMetric(url, lines, 2) // only what came while it was down

	// Killed mid-stream: what was not saved is read again, and counted
	// against the counters saved with the position.
	ip := "203.0.113.50"
	journaldtest.Cat(t, postfix, fail(ip), fail(ip))
	d.waitMetric(url, postfixEvents, 3)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for range d.logs {
	}
	<-d.done
	d = startDaemon(t, bin, config)
	d.await("reading the journal", nil)
	journaldtest.Cat(t, postfix, fail(ip))
	ban, before := d.await("decision", map[string]any{"action": "ban", "prefix": ip + "/32"})
	// The bans of the run before may be decided again: if the kill came
	// before the checkpoint that saved them, their lines are read again and
	// give the same bans (enforcers take a ban twice as once). Nothing else.
	redecided := map[string]bool{"ban 203.0.113.7/32<nil>": true, "ban 198.51.100.20/32<nil>": true}
	for _, dec := range decisionsIn(before) {
		if !redecided[dec] {
			t.Fatalf("decisions before the ban: %v", decisionsIn(before))
		}
	}
	if reason := fmt.Sprint(ban["reason"]); !strings.HasPrefix(reason, "3 failures") {
		t.Fatalf("ban reason %q, want exactly 3 failures counted", reason)
	}
	d.stop()
}

// TestDaemonStdin runs `producer | mailban run`: it counts what the pipe
// brings, stops at SIGTERM while the pipe is open, and, fed the same
// input again, counts only what is new.
func TestDaemonStdin(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	config := writeTemplate(t, dir, sourceConfig, "  - type: stdin\n    formats: [postfix]")
	history := []string{failure("203.0.113.7", "alice"), noise(1), failure("203.0.113.7", "alice")}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemonWith(t, bin, config, r, nil)
	r.Close()
	url := d.metricsURL()
	if _, err := w.WriteString(strings.Join(history, "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	d.waitMetric(url, `mailban_lines_read_total{source="stdin"}`, 3)
	if got := decisionsIn(d.stop()); len(got) != 0 { // the pipe is still open
		t.Fatalf("decisions after two failures: %v", got)
	}
	w.Close()

	// The producer starts over: its history, then a third failure.
	r, w, err = os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	d = startDaemonWith(t, bin, config, r, nil)
	r.Close()
	if _, err := w.WriteString(strings.Join(append(history, failure("203.0.113.7", "alice")), "\n") + "\n"); err != nil {
		t.Fatal(err)
	}
	ban, before := d.await("decision", map[string]any{"action": "ban", "prefix": "203.0.113.7/32"})
	if got := decisionsIn(before); len(got) != 0 {
		t.Fatalf("decisions before the ban: %v", got)
	}
	if reason := fmt.Sprint(ban["reason"]); !strings.HasPrefix(reason, "3 failures") {
		t.Fatalf("ban reason %q, want exactly 3 failures counted", reason)
	}
	w.Close()
	d.await("standard input ended; this source is done", nil)
	d.stop()
}
