package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSocketModeAndOwnership(t *testing.T) {
	for _, tc := range []struct {
		group string
		mode  os.FileMode
	}{
		{"", 0o600},
		{"0", 0o660},
	} {
		path := filepath.Join(t.TempDir(), "run", "control.sock")
		ln, err := Listen(path, tc.group)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != tc.mode {
			t.Errorf("group %q: socket mode %v, want a socket with %v", tc.group, fi.Mode(), tc.mode)
		}
		if st := fi.Sys().(*syscall.Stat_t); tc.group != "" && st.Gid != 0 {
			t.Errorf("group %q: socket gid %d", tc.group, st.Gid)
		}
		entries, _ := os.ReadDir(filepath.Dir(path))
		if len(entries) != 1 {
			t.Errorf("directory holds %d entries after Listen, want only the socket", len(entries))
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket still there after Close: %v", err)
		}
	}
	// Another group, by name: root may give the socket to any group.
	g, err := user.LookupGroup("nogroup")
	switch {
	case os.Getenv("CI") == "true" && (err != nil || os.Geteuid() != 0):
		t.Fatalf("CI runs as root on Debian, which has the group nogroup: %v (euid %d)", err, os.Geteuid())
	case err != nil || os.Geteuid() != 0:
		t.Log("not root, or no group nogroup: giving the socket to another group is not tested")
	default:
		path := filepath.Join(t.TempDir(), "c.sock")
		ln, err := Listen(path, "nogroup")
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(path)
		if gid := fi.Sys().(*syscall.Stat_t).Gid; strconv.Itoa(int(gid)) != g.Gid || fi.Mode().Perm() != 0o660 {
			t.Errorf("socket for group nogroup: gid %d, mode %v; want %s, 0660", gid, fi.Mode().Perm(), g.Gid)
		}
		ln.Close()
	}
	if _, err := Listen(filepath.Join(t.TempDir(), "c.sock"), "no-such-group-mailban"); err == nil {
		t.Error("an unknown group was accepted")
	}
}

func TestListenReplacesOnlyDeadSockets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "control.sock")

	// A socket whose process is gone: replaced.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	ln, err := Listen(path, "")
	if err != nil {
		t.Fatalf("a dead socket was not replaced: %v", err)
	}

	// A socket someone answers on: refused, and left alone.
	if _, err := Listen(path, ""); err == nil || !strings.Contains(err.Error(), "answers on it") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the live socket was disturbed: %v", err)
	}
	conn.Close()
	ln.Close()

	// Not a socket: refused, and left alone.
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Error("a regular file in the socket's place was changed")
	}
}

// Close leaves alone a socket that another process put in our path.
func TestCloseRemovesOnlyItsOwnSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed another process's socket: %v", err)
	}
}

// backend records what reaches it. The agent is the real Backend (tested
// through the CLI against a running daemon); this one checks the transport:
// what the server refuses before the agent sees it, and how errors travel.
type backend struct {
	mu     sync.Mutex
	orders []string
	fail   error
}

func (b *backend) record(what string, o Order) (Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.orders = append(b.orders, fmt.Sprintf("%s %v %q for=%v perm=%v reason=%q force=%v inside=%v",
		what, o.Network, o.Login, o.For, o.Permanent, o.Reason, o.Force, o.Inside))
	if b.fail != nil {
		return Result{}, b.fail
	}
	return Result{Message: what + " done"}, nil
}

func (b *backend) Status(context.Context) (Status, error) { return Status{Version: "test"}, nil }
func (b *backend) List(_ context.Context, what string, f Filter) ([]Entry, error) {
	b.record("list "+what, Order{Network: f.Network, Login: f.Login, Reason: f.Reason})
	return nil, nil
}
func (b *backend) Ban(_ context.Context, o Order) (Result, error)     { return b.record("ban", o) }
func (b *backend) Unban(_ context.Context, o Order) (Result, error)   { return b.record("unban", o) }
func (b *backend) Block(_ context.Context, o Order) (Result, error)   { return b.record("block", o) }
func (b *backend) Unblock(_ context.Context, o Order) (Result, error) { return b.record("unblock", o) }
func (b *backend) Unlock(_ context.Context, o Order) (Result, error)  { return b.record("unlock", o) }
func (b *backend) Why(_ context.Context, s string) (Why, error)       { return Why{Subject: s}, nil }
func (b *backend) Reload(context.Context) (Result, error)             { return Result{Message: "reloaded"}, b.fail }
func (b *backend) Version() Version                                   { return Version{Version: "test", PID: 1} }

func serve(t *testing.T, b Backend) (*Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := NewServer(b, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	c := NewClient(path)
	t.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		ln.Close()
	})
	return c, reg
}

func TestServerChecksRequestsBeforeTheBackend(t *testing.T) {
	b := &backend{}
	c, reg := serve(t, b)
	ctx := context.Background()
	cases := []struct {
		name  string
		call  func() error
		code  string // "" for success
		order string // what the backend received, "" for nothing
	}{
		{"ban an address", func() error {
			_, err := c.Ban(ctx, Request{Target: "203.0.113.7", For: "2d", Reason: " brute force "})
			return err
		}, "", `ban 203.0.113.7/32 "" for=48h0m0s perm=false reason="brute force" force=false inside=false`},
		{"ban permanently", func() error {
			_, err := c.Ban(ctx, Request{Target: "2001:db8::/32", For: "permanent", Force: true})
			return err
		}, "", `ban 2001:db8::/32 "" for=0s perm=true reason="" force=true inside=false`},
		{"typo in an address", func() error { _, err := c.Ban(ctx, Request{Target: "203.0.113.256"}); return err }, CodeInvalid, ""},
		{"host bits set", func() error { _, err := c.Block(ctx, Request{Target: "203.0.113.7/24"}); return err }, CodeInvalid, ""},
		{"a name, not an address", func() error { _, err := c.Unban(ctx, Request{Target: "mail.example.com"}); return err }, CodeInvalid, ""},
		{"no target", func() error { _, err := c.Ban(ctx, Request{}); return err }, CodeInvalid, ""},
		{"bad duration", func() error { _, err := c.Ban(ctx, Request{Target: "203.0.113.7", For: "soon"}); return err }, CodeInvalid, ""},
		{"zero duration", func() error { _, err := c.Ban(ctx, Request{Target: "203.0.113.7", For: "0"}); return err }, CodeInvalid, ""},
		{"duration on a block", func() error { _, err := c.Block(ctx, Request{Target: "203.0.113.0/24", For: "1h"}); return err }, CodeInvalid, ""},
		{"reason with a newline", func() error {
			_, err := c.Ban(ctx, Request{Target: "203.0.113.7", Reason: "a\nb"})
			return err
		}, CodeInvalid, ""},
		{"reason too long", func() error {
			_, err := c.Block(ctx, Request{Target: "203.0.113.0/24", Reason: strings.Repeat("x", MaxReason+1)})
			return err
		}, CodeInvalid, ""},
		{"unlock without login", func() error { _, err := c.Unlock(ctx, Request{Target: " "}); return err }, CodeInvalid, ""},
		{"unlock", func() error { _, err := c.Unlock(ctx, Request{Target: "Alice@Example.test"}); return err }, "",
			`unlock invalid Prefix "Alice@Example.test" for=0s perm=false reason="" force=false inside=false`},
		{"list with a bad network", func() error { _, err := c.Bans(ctx, Filter{Type: "lock"}); return err }, CodeInvalid, ""},
		{"why without subject", func() error { _, err := c.Why(ctx, ""); return err }, CodeInvalid, ""},
	}
	for _, tc := range cases {
		b.orders = nil
		err := tc.call()
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.code != "" && CodeOf(err) != tc.code:
			t.Errorf("%s: error %v (code %s), want code %s", tc.name, err, CodeOf(err), tc.code)
		}
		got := strings.Join(b.orders, "; ")
		if got != tc.order {
			t.Errorf("%s: backend got %q, want %q", tc.name, got, tc.order)
		}
	}
	if n := counterValue(t, reg, "mailban_control_requests_total", map[string]string{"command": "ban", "code": CodeInvalid}); n != 5 {
		t.Errorf("invalid ban requests counted %v, want 5", n)
	}
}

// counterValue is the value of the series of name with labels, failing
// the test when there is none.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func TestErrorsKeepTheirCodeAcrossTheSocket(t *testing.T) {
	b := &backend{}
	c, _ := serve(t, b)
	ctx := context.Background()
	for _, sentinel := range []error{ErrNotFound, ErrRefused, ErrInvalid, errors.New("disk full")} {
		b.fail = fmt.Errorf("unban 203.0.113.7/32: %w", sentinel)
		if code := CodeOf(sentinel); code != CodeFailed {
			b.fail = newError(code, "unban 203.0.113.7/32: nothing to say")
		}
		_, err := c.Unban(ctx, Request{Target: "203.0.113.7"})
		if err == nil || !strings.Contains(err.Error(), "unban 203.0.113.7/32: ") {
			t.Errorf("%v: client got %v", sentinel, err)
		}
		if want := CodeOf(sentinel); CodeOf(err) != want {
			t.Errorf("%v: code %s, want %s", sentinel, CodeOf(err), want)
		}
		if CodeOf(sentinel) != CodeFailed && !errors.Is(err, sentinel) {
			t.Errorf("errors.Is(%v, %v) is false", err, sentinel)
		}
	}
}

func TestClientSaysWhatToDoWhenTheDaemonIsUnreachable(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	dead := filepath.Join(dir, "dead.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	// A socket that accepts and never answers.
	stuckPath := filepath.Join(dir, "stuck.sock")
	stuck, err := net.Listen("unix", stuckPath)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()

	for _, tc := range []struct {
		path    string
		timeout time.Duration
		want    string
	}{
		{missing, time.Minute, "is mailban running"},
		{dead, time.Minute, "mailban is not running"},
		{stuckPath, 50 * time.Millisecond, "no answer in time"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
		_, err := NewClient(tc.path).Status(ctx)
		cancel()
		if CodeOf(err) != CodeUnavailable || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: %v; want code %s and %q", tc.path, err, CodeUnavailable, tc.want)
		}
	}
}

func TestParseBanLength(t *testing.T) {
	for in, want := range map[string]time.Duration{"90m": 90 * time.Minute, "1d": 24 * time.Hour, "2w": 14 * 24 * time.Hour} {
		d, perm, err := ParseBanLength(in)
		if err != nil || perm || d != want {
			t.Errorf("%q: %v %v %v", in, d, perm, err)
		}
	}
	if _, perm, err := ParseBanLength("Permanent"); err != nil || !perm {
		t.Errorf("permanent: %v %v", perm, err)
	}
	for _, in := range []string{"", "0", "-1h", "1 hour", "10"} {
		if _, _, err := ParseBanLength(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
