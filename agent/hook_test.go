package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/agent/config"
)

// hookConfig is testConfig with the hook's native socket on.
func hookConfig(t *testing.T, dir, hookBlock string) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf(`
state: {path: %s/state.db, checkpoint-interval: 50ms}
control: {socket: ""}
rules:
  ip: {threshold: "3/10m"}
allowlist: {host-addresses: false}
metrics: {listen: ""}
enforcers:
%s
`, dir, hookBlock)
	return writeConfig(t, dir, yaml)
}

type hookClient struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialHook(t *testing.T, path string) *hookClient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &hookClient{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *hookClient) ask(req string) string {
	c.t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req + "\n")); err != nil {
		c.t.Fatal(err)
	}
	s, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("%s: %v", req, err)
	}
	return strings.TrimSuffix(s, "\n")
}

// waitAnswer asks until the answer starts with prefix: reports are counted
// by the pipeline goroutine, a moment after they are queued.
func (c *hookClient) waitAnswer(req, prefix string) string {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := c.ask(req)
		if strings.HasPrefix(got, prefix) {
			return got
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: %q, want %s...", req, got, prefix)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHookWiring: the hook answers from the agent's engine, its REPORTs go
// through the agent's pipeline, a reload keeps it (and its clients'
// connections) while changing its settings, and a restart answers from the
// restored state before Run begins.
func TestHookWiring(t *testing.T) {
	dir, err := os.MkdirTemp("", "mbagent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "hook.sock")
	cfg := hookConfig(t, dir, "  hook:\n    native: {listen: ["+sock+"]}\n")

	a, err := New(cfg, Options{HostAddresses: noHostAddresses})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	c := dialHook(t, sock)
	watch := dialHook(t, sock)
	watch.Write([]byte("WATCH\n"))
	if got, _ := watch.r.ReadString('\n'); !strings.Contains(got, `"synced"`) {
		t.Fatalf("WATCH began with %q", got)
	}
	for range 3 {
		if got := c.ask("REPORT fail ip=203.0.113.50 login=alice service=imap"); got != "OK" {
			t.Fatal(got)
		}
	}
	c.waitAnswer("CHECK ip=203.0.113.50", "DENY ")
	watch.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := watch.r.ReadString('\n'); err != nil || !strings.Contains(got, `"action":"ban","prefix":"203.0.113.50/32"`) {
		t.Errorf("WATCH got %q %v", got, err)
	}

	// A reload with new limits keeps the hook and this connection.
	next := hookConfig(t, dir, "  hook:\n    native: {listen: ["+sock+"]}\n    limits: {max-line: 100}\n")
	if err := a.Reload(ctx, next); err != nil {
		t.Fatal(err)
	}
	if got := c.ask("CHECK ip=203.0.113.50"); !strings.HasPrefix(got, "DENY ") {
		t.Errorf("after the reload: %q", got)
	}
	fresh := dialHook(t, sock)
	if got := fresh.ask("CHECK login=" + strings.Repeat("x", 150)); got != "ERR line too long" {
		t.Errorf("a new connection after the reload: %q, want the new max-line", got)
	}

	// A reload without the hook closes it.
	if err := a.Reload(ctx, hookConfig(t, dir, "  log: {}\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there: %v", err)
	}
	if err := a.Reload(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after Run: %v", err)
	}

	// After a restart the ban is refused as soon as the hook listens.
	a, err = New(cfg, Options{HostAddresses: noHostAddresses})
	if err != nil {
		t.Fatal(err)
	}
	if got := dialHook(t, sock).ask("CHECK ip=203.0.113.50"); !strings.HasPrefix(got, "DENY ") {
		t.Errorf("after a restart, before Run: %q", got)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- a.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Dovecot's reports and a log format that holds the same attempts count
// them twice: the agent says so for dovecot, and for postfix and exim on
// the condition that they authenticate through Dovecot SASL.
func TestWarnDoubleCounting(t *testing.T) {
	cases := []struct {
		report  bool
		formats []string
		want    []string // the formats warned about, in order
	}{
		{true, []string{"dovecot"}, []string{"dovecot"}},
		{true, []string{"postfix", "dovecot"}, []string{"dovecot", "postfix"}},
		{true, []string{"exim"}, []string{"exim"}},
		{true, []string{"stalwart"}, nil},
		{false, []string{"postfix", "dovecot", "exim"}, nil},
	}
	for _, tc := range cases {
		var buf bytes.Buffer
		cfg := &config.Config{
			Sources:   []config.SourceConfig{{Name: "mail", Formats: tc.formats}},
			Enforcers: config.EnforcersConfig{Hook: &config.HookConfig{Dovecot: &config.HookDovecotConfig{Report: tc.report}}},
		}
		warnDoubleCounting(slog.New(slog.NewTextHandler(&buf, nil)), cfg)
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			for _, f := range []string{"dovecot format", "postfix format", "exim format"} {
				if strings.Contains(line, "this source's "+f) {
					got = append(got, strings.TrimSuffix(f, " format"))
				}
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("report=%v formats %v: warned about %v, want %v\n%s", tc.report, tc.formats, got, tc.want, buf.String())
		}
	}
}
