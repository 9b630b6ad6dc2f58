package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// speedLine is the summary's line about this run's speed.
var speedLine = regexp.MustCompile(`(?m)^\d+ lines in .* lines/s\)\n`)

// golden compares got with testdata/NAME, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// The offline replay is a contract that users' scripts rely on: its JSON and
// its summary are pinned by golden files.
func TestReplayGolden(t *testing.T) {
	const log = "../../testdata/replay/attack.log"
	const config = "../../testdata/replay/mailban.yaml"
	cases := []struct {
		name   string
		args   []string
		stdin  string
		golden string
	}{
		{"json", []string{"test", "--config", config, "--json", log}, "", "replay/attack.json"},
		{"summary", []string{"test", "--config", config, log}, "", "replay/attack.summary"},
		{"one format", []string{"test", "--config", config, "--format", "dovecot", "--json", log}, "", "replay/attack-dovecot.json"},
		{"stdin", []string{"test", "--config", config, "--json", "-"}, "stdin", "replay/attack.json"},
		{"two files", []string{"test", "--config", config, "--json", log, log}, "", "replay/attack-twice.json"},
		{"explain", []string{"test", "--config", config, "--explain", log}, "", "replay/attack.explain"},
		{"explain json", []string{"test", "--config", config, "--explain", "--json", log}, "", "replay/attack-explain.json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdin bytes.Buffer
			if tc.stdin != "" {
				data, err := os.ReadFile(log)
				if err != nil {
					t.Fatal(err)
				}
				stdin.Write(data)
			}
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tc.args, &stdin, &stdout, &stderr); code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			out := stdout.Bytes()
			if !strings.HasSuffix(tc.golden, ".json") {
				// The summary's first line reports the speed of this run.
				out = speedLine.ReplaceAll(out, nil)
			}
			if tc.name == "stdin" && *update {
				return // the same golden as "json"; do not let the order of cases decide it
			}
			golden(t, tc.golden, out)
		})
	}
}

func TestCommandLineMistakes(t *testing.T) {
	cases := []struct {
		args     []string
		code     int
		inStderr string
	}{
		{nil, exitUsage, "Usage:"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"test"}, exitUsage, "name at least one log file"},
		{[]string{"test", "--colour", "x.log"}, exitUsage, "flag provided but not defined: -colour"},
		{[]string{"test", "/nonexistent/mail.log"}, exitFailure, "/nonexistent/mail.log: no such file or directory"},
		{[]string{"test", "--format", "nosuch", "../../testdata/replay/attack.log"}, exitFailure, `no format named "nosuch"`},
		{[]string{"test", "--timezone", "Mars/Olympus", "../../testdata/replay/attack.log"}, exitUsage, `--timezone "Mars/Olympus": unknown time zone`},
		{[]string{"check-config", "--config", "/nonexistent.yaml"}, exitFailure, "read config: open /nonexistent.yaml"},
		{[]string{"check-config", "--config", "../../examples/mailban.yaml", "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"run", "--config", "/nonexistent.yaml"}, exitFailure, "no such file or directory (pass --config FILE, or start from examples/mailban.yaml"},
		{[]string{"check-config", "--config", "../../examples/mailban.yaml"}, exitOK, ""},
		{[]string{"version"}, exitOK, ""},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, strings.NewReader(""), &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.inStderr) {
			t.Errorf("mailban %s: exit %d, stderr %q; want exit %d and %q",
				strings.Join(tc.args, " "), code, stderr.String(), tc.code, tc.inStderr)
		}
	}
}

// Times written without a zone (syslog) are read in --timezone's zone,
// else in the one the configuration's sources agree on, as the daemon
// reads them.
func TestReplayTimezone(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "mail.log")
	line := "Nov 25 10:00:00 mx postfix/smtpd[1]: warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6\n"
	if err := os.WriteFile(log, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mailban.yaml")
	if err := os.WriteFile(cfg, []byte("sources:\n  - {name: mail, paths: [mail.log], timezone: Asia/Tokyo}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string // the event's time, in UTC
	}{
		{[]string{"--timezone", "Europe/Berlin"}, `"time":"2026-11-25T09:00:00Z"`},
		{[]string{"--config", cfg}, `"time":"2026-11-25T01:00:00Z"`},
		{[]string{"--config", cfg, "--timezone", "UTC"}, `"time":"2026-11-25T10:00:00Z"`},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		args := append(append([]string{"test", "--json"}, tc.args...), log)
		if code := run(context.Background(), args, nil, &stdout, &stderr); code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		if !strings.Contains(stdout.String(), tc.want) {
			t.Errorf("%v: got %s, want %s", tc.args, stdout.String(), tc.want)
		}
	}
}
