package hook

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// testClock is a clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// pipeline does at once what the agent does with a reported event: the
// rules engine observes it and the hook gets the decisions. It keeps every
// event for the test to look at.
type pipeline struct {
	engine *rules.Engine
	mu     sync.Mutex
	events []parsers.Event
	hook   *Server
}

func (p *pipeline) Report(ctx context.Context, origin string, ev parsers.Event) error {
	p.mu.Lock()
	p.events = append(p.events, ev)
	ds := p.engine.Observe(&ev)
	h := p.hook
	p.mu.Unlock()
	if h != nil && len(ds) > 0 {
		return h.Apply(ctx, ds)
	}
	return nil
}

func (p *pipeline) Events() []parsers.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]parsers.Event(nil), p.events...)
}

// testRules: 3 failures from an address ban it for an hour, 5 on a login
// lock it for an hour, nothing is allowlisted (tests come from loopback).
func testRules() rules.Config {
	return rules.Config{
		IP:            rules.Threshold{Count: 3, Period: time.Hour},
		Login:         rules.Threshold{Count: 5, Period: time.Hour},
		BanFor:        time.Hour,
		BanFactor:     1,
		LockFor:       time.Hour,
		SuccessMemory: 24 * time.Hour,
		Blocked:       []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
	}
}

type testHook struct {
	*Server
	engine *rules.Engine
	clock  *testClock
	pipe   *pipeline
	reg    *prometheus.Registry
	dir    string
}

// shortTempDir is a private directory with a path short enough for unix
// sockets, removed when the test ends.
func shortTempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "mbhook")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newTestHook starts a hook with every protocol on: native on a unix
// socket and loopback TCP, Postfix on a unix socket, Dovecot and nginx on
// loopback TCP. edit changes the configuration first.
func newTestHook(t testing.TB, edit func(*Config)) *testHook {
	t.Helper()
	clock := newTestClock()
	engine, err := rules.NewEngine(testRules(), clock)
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	cfg := DefaultConfig()
	cfg.Native.Listen = []string{filepath.Join(dir, "native.sock"), "127.0.0.1:0"}
	cfg.Postfix.Listen = []string{filepath.Join(dir, "postfix.sock")}
	cfg.Postfix.Group = ""
	cfg.Dovecot.Listen = []string{"127.0.0.1:0"}
	cfg.Dovecot.APIKey = "dovecot-key"
	cfg.Nginx.Listen = []string{"127.0.0.1:0"}
	cfg.Nginx.APIKey = "nginx-key"
	cfg.Nginx.Upstream = "http://127.0.0.1:1/unused"
	if edit != nil {
		edit(&cfg)
	}
	pipe := &pipeline{engine: engine}
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, Deps{Checker: engine, Reporter: pipe, Clock: clock}, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	pipe.mu.Lock()
	pipe.hook = s
	pipe.mu.Unlock()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &testHook{Server: s, engine: engine, clock: clock, pipe: pipe, reg: reg, dir: dir}
}

// testWriter sends the server's log to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (h *testHook) addr(t testing.TB, proto, network string) net.Addr {
	t.Helper()
	for _, a := range h.Addrs(proto) {
		if a.Network() == network {
			return a
		}
	}
	t.Fatalf("no %s listener for %s", network, proto)
	return nil
}

// ban makes the engine ban addr, as failures would, and tells the hook.
func (h *testHook) ban(t testing.TB, addr string) {
	t.Helper()
	d, err := h.engine.BanManual(netip.MustParsePrefix(addr+"/32"), time.Hour, "test ban")
	if err != nil {
		t.Fatal(err)
	}
	h.Apply(context.Background(), []rules.Decision{d})
}

// lock makes the engine lock login with failures from five addresses.
func (h *testHook) lock(t testing.TB, login string) {
	t.Helper()
	for i := range 5 {
		ev := parsers.Event{Time: h.clock.Now(), Kind: parsers.AuthFailure, Login: login, Attempts: 1,
			Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), Evidence: "lock " + login}
		h.pipe.Report(context.Background(), "test", ev)
	}
	if v := h.engine.Check(netip.Addr{}, login); v.Allow {
		t.Fatalf("%s is not locked after five failures", login)
	}
}

// succeed records a successful login, which exempts addr from login's lock.
func (h *testHook) succeed(t testing.TB, addr, login string) {
	t.Helper()
	ev := parsers.Event{Time: h.clock.Now(), Kind: parsers.AuthSuccess, Login: login, Addr: netip.MustParseAddr(addr)}
	h.pipe.Report(context.Background(), "test", ev)
}

// lineClient speaks a line protocol.
type lineClient struct {
	t testing.TB
	net.Conn
	r *bufio.Reader
}

func dialLine(t testing.TB, a net.Addr) *lineClient {
	t.Helper()
	c, err := net.DialTimeout(a.Network(), a.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineClient{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *lineClient) send(s string) {
	c.t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(s)); err != nil {
		c.t.Fatalf("send %q: %v", s, err)
	}
}

// line reads one line, or "" and the error at its end.
func (c *lineClient) line() (string, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	s, err := c.r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

func (c *lineClient) mustLine() string {
	c.t.Helper()
	s, err := c.line()
	if err != nil {
		c.t.Fatalf("read: %v (after %q)", err, s)
	}
	return s
}

// closed reports whether the server has closed the connection: the next
// read ends without data.
func (c *lineClient) closed() bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
