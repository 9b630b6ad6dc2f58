package hook

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailban/mailban/parsers"
)

// TestNativeConversation runs requests through one connection, in order,
// and checks each answer: good requests, refusals, and every kind of
// malformed request, which gets ERR and leaves the connection usable.
func TestNativeConversation(t *testing.T) {
	h := newTestHook(t, nil)
	h.ban(t, "203.0.113.7")
	h.lock(t, "alice@example.test")
	h.succeed(t, "192.0.2.1", "alice@example.test")

	steps := []struct{ send, want string }{
		{"PING", "PONG"},
		{"CHECK ip=192.0.2.50", "ALLOW"},
		{"check ip=192.0.2.50 login=bob service=imap", "ALLOW"},
		{"CHECK ip=203.0.113.7", "DENY 3600 banned: manual ban: test ban"},
		{"CHECK ip=::ffff:203.0.113.7", "DENY 3600 banned: manual ban: test ban"},
		{"CHECK ip=198.51.100.9", `DENY 0 blocked: .*`},
		{"CHECK ip=192.0.2.50 login=alice@example.test", `DENY 3600 login locked: .*`},
		{"CHECK ip=192.0.2.50 login=ALICE@Example.TEST", `DENY 3600 login locked: .*`},
		{"CHECK login=alice@example.test", `DENY 3600 login locked: .*`},
		{"CHECK ip=192.0.2.1 login=alice@example.test", "ALLOW"}, // exempt: logged in from here
		{"CHECK login=b%6fb", "ALLOW"},
		{"CHECK\tip=192.0.2.50\r", "ALLOW"},
		{"CHECK", "ERR CHECK needs ip=<address>, login=<login> or both"},
		{"CHECK ip=nonsense", `ERR ip: "nonsense" is not an IP address`},
		{"CHECK ip=fe80::1%eth0", "ERR ip: % must be followed by two hex digits"},
		{"CHECK ip=fe80::1%25eth0", `ERR ip: "fe80::1%eth0" is not an IP address`},
		{"CHECK ip=192.0.2.1 ip=192.0.2.2", "ERR ip given twice"},
		{"CHECK ip=192.0.2.1 colour=red", `ERR unknown argument "colour" \(ip, login, service\)`},
		{"CHECK ip=192.0.2.1 attempts=2", "ERR attempts: only REPORT fail takes it"},
		{"CHECK ip", `ERR "ip" is not key=value`},
		{"CHECK login=%zz", "ERR login: % must be followed by two hex digits"},
		{"CHECK login=%4", "ERR login: % must be followed by two hex digits"},
		{"CHECK login=%20", "ERR login: empty"},
		{"CHECK ip=192.0.2.1 service=gopher", `ERR service: unknown service "gopher" .*`},
		{"REPORT", `ERR REPORT wants fail or success first, not ""`},
		{"REPORT maybe ip=192.0.2.1", `ERR REPORT wants fail or success first, not "maybe"`},
		{"REPORT success ip=192.0.2.1", "ERR REPORT success needs ip= and login="},
		{"REPORT fail service=imap", "ERR REPORT fail needs ip=, login= or both"},
		{"REPORT fail ip=192.0.2.1 attempts=0", `ERR attempts: "0" is not a number from 1 to 1000`},
		{"REPORT success ip=192.0.2.1 login=x attempts=2", "ERR attempts= counts failures only"},
		{"WATCH now", "ERR WATCH takes no arguments"},
		{"", "ERR empty request"},
		{"   ", "ERR empty request"},
		{"FROB ip=1.2.3.4", `ERR unknown command "FROB" .*`},
		{"\x00\xff\xfe garbage", `ERR unknown command .*`},
		{"PING", "PONG"},
	}
	c := dialLine(t, h.addr(t, protoNative, "unix"))
	for _, st := range steps {
		c.send(st.send + "\n")
		got := c.mustLine()
		if !regexp.MustCompile("^" + st.want + "$").MatchString(got) {
			t.Errorf("%q: got %q, want %q", st.send, got, st.want)
		}
	}
	c.send("QUIT\n")
	if got := c.mustLine(); got != "BYE" {
		t.Errorf("QUIT: got %q", got)
	}
	if !c.closed() {
		t.Error("the connection is still open after QUIT")
	}
}

// TestNativeReportFeedsTheRules checks that REPORT reaches the rules as
// events, with the fields the rules key on, and that their decisions are
// in force at the next CHECK.
func TestNativeReportFeedsTheRules(t *testing.T) {
	h := newTestHook(t, nil)
	c := dialLine(t, h.addr(t, protoNative, "unix"))
	for _, req := range []string{
		"REPORT fail ip=203.0.113.9 login=Carol%40example.test service=submission attempts=2",
		"REPORT success ip=192.0.2.3 login=dave service=imaps",
	} {
		c.send(req + "\n")
		if got := c.mustLine(); got != "OK" {
			t.Fatalf("%s: %q", req, got)
		}
	}
	c.send("CHECK ip=203.0.113.9\n")
	if got := c.mustLine(); got != "ALLOW" {
		t.Fatalf("after two failures: %q, want ALLOW (threshold 3)", got)
	}
	c.send("REPORT fail ip=203.0.113.9\nCHECK ip=203.0.113.9\n")
	if got := c.mustLine(); got != "OK" {
		t.Fatal(got)
	}
	if got := c.mustLine(); !strings.HasPrefix(got, "DENY 3600 banned: ") {
		t.Fatalf("after the third failure: %q, want DENY 3600 banned: ...", got)
	}

	evs := h.pipe.Events()
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3", len(evs))
	}
	e := evs[0]
	if e.Kind != parsers.AuthFailure || e.Login != "carol@example.test" || e.Addr.String() != "203.0.113.9" ||
		e.Service != parsers.ServiceSMTP || e.Attempts != 2 || e.Format != "hook-native" || !e.Time.Equal(h.clock.Now()) {
		t.Errorf("failure event: %+v", e)
	}
	if want := `hook native: failure ip=203.0.113.9 login="carol@example.test" service=smtp attempts=2`; e.Evidence != want {
		t.Errorf("evidence %q, want %q", e.Evidence, want)
	}
	if e := evs[1]; e.Kind != parsers.AuthSuccess || e.Login != "dave" || e.Service != parsers.ServiceIMAP {
		t.Errorf("success event: %+v", e)
	}
}

// TestNativeReportOverTCP: REPORT is refused on TCP unless configured,
// and CHECK works there as on the unix socket.
func TestNativeReportOverTCP(t *testing.T) {
	for _, allowed := range []bool{false, true} {
		t.Run(fmt.Sprint("report-over-tcp=", allowed), func(t *testing.T) {
			h := newTestHook(t, func(c *Config) { c.Native.ReportOverTCP = allowed })
			c := dialLine(t, h.addr(t, protoNative, "tcp"))
			c.send("REPORT fail ip=203.0.113.9\nCHECK ip=192.0.2.1\n")
			got := c.mustLine()
			if allowed && got != "OK" || !allowed && !strings.HasPrefix(got, "ERR REPORT is refused over TCP") {
				t.Errorf("REPORT: %q", got)
			}
			if got := c.mustLine(); got != "ALLOW" {
				t.Errorf("CHECK: %q", got)
			}
			if n := len(h.pipe.Events()); allowed != (n == 1) {
				t.Errorf("%d events", n)
			}
		})
	}
}

// TestNativePipelining sends many requests at once and gets the answers in
// order.
func TestNativePipelining(t *testing.T) {
	h := newTestHook(t, nil)
	h.ban(t, "203.0.113.7")
	c := dialLine(t, h.addr(t, protoNative, "tcp"))
	var b strings.Builder
	const n = 5000
	for i := range n {
		if i%2 == 0 {
			b.WriteString("CHECK ip=203.0.113.7\n")
		} else {
			b.WriteString("CHECK ip=192.0.2.7 login=x\n")
		}
	}
	go c.Write([]byte(b.String())) // more than the socket buffers: write while reading
	for i := range n {
		got := c.mustLine()
		if want := i%2 == 0; want != strings.HasPrefix(got, "DENY") || !want && got != "ALLOW" {
			t.Fatalf("answer %d: %q", i, got)
		}
	}
}

// TestNativeMalformedConnectionsLeaveOthersAlone: a line past the limit
// closes that connection after ERR; a request that never ends is cut off
// at the request timeout; an idle connection at the idle timeout; and
// through all of it another client's connection keeps working.
func TestNativeMalformedConnectionsLeaveOthersAlone(t *testing.T) {
	h := newTestHook(t, func(c *Config) {
		c.Limits.MaxLine = 100
		c.Limits.RequestTimeout = 300 * time.Millisecond
		c.Limits.IdleTimeout = 600 * time.Millisecond
	})
	a := h.addr(t, protoNative, "unix")
	good := dialLine(t, a)
	ask := func() {
		t.Helper()
		good.send("CHECK ip=192.0.2.1\n")
		if got := good.mustLine(); got != "ALLOW" {
			t.Fatalf("the good client got %q", got)
		}
	}
	ask()

	long := dialLine(t, a)
	long.send("CHECK login=" + strings.Repeat("x", 200) + "\n")
	if got := long.mustLine(); got != "ERR line too long" {
		t.Errorf("long line: %q", got)
	}
	if !long.closed() {
		t.Error("still open after a line too long")
	}
	ask()

	// A long line without a newline at all: never buffered beyond the limit.
	endless := dialLine(t, a)
	endless.send(strings.Repeat("y", 10000))
	if got, _ := endless.line(); got != "ERR line too long" {
		t.Errorf("endless line: %q", got)
	}
	ask()

	slow := dialLine(t, a)
	slow.send("CHECK ip=192.0") // and nothing more
	if !slow.closed() {
		t.Error("a half-sent request was not cut off")
	}
	ask()

	idle := dialLine(t, a)
	if !idle.closed() {
		t.Error("an idle connection was not closed")
	}
	if got := testutil.ToFloat64(h.m.proto[protoNative].requests[outError]); got != 2 {
		t.Errorf("errors counted: %v, want 2", got)
	}
}

// TestConnectionCap: beyond limits.max-connections per listener, new
// connections are closed at once, and counted; a closed connection frees
// its place.
func TestConnectionCap(t *testing.T) {
	h := newTestHook(t, func(c *Config) { c.Limits.MaxConnections = 2 })
	a := h.addr(t, protoNative, "tcp")
	one, two := dialLine(t, a), dialLine(t, a)
	for _, c := range []*lineClient{one, two} {
		c.send("PING\n")
		if got := c.mustLine(); got != "PONG" {
			t.Fatal(got)
		}
	}
	three := dialLine(t, a)
	three.send("PING\n")
	if !three.closed() {
		t.Error("a third connection was served")
	}
	if got := testutil.ToFloat64(h.m.proto[protoNative].refused); got != 1 {
		t.Errorf("refused connections counted: %v", got)
	}
	// Another listener has its own cap.
	other := dialLine(t, h.addr(t, protoNative, "unix"))
	other.send("PING\n")
	if got := other.mustLine(); got != "PONG" {
		t.Errorf("the unix listener: %q", got)
	}
	one.send("QUIT\n")
	one.mustLine()
	if !one.closed() {
		t.Fatal("QUIT did not close")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		four := dialLine(t, a)
		four.send("PING\n")
		if got, err := four.line(); err == nil && got == "PONG" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection did not free its place")
		}
		time.Sleep(10 * time.Millisecond) // the server's side of QUIT may not have closed yet
	}
}

// TestUnixSocketPermissions: 0660, the configured group, replaced when
// stale, refused when live, removed at Close.
func TestUnixSocketPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true: this test needs root to give a socket a group")
		}
		t.Skip("needs root to give a socket a group")
	}
	dir := shortTempDir(t)
	path := dir + "/hook.sock"
	// A stale socket from a crashed run is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	h := newTestHook(t, func(c *Config) {
		c.Native.Listen = []string{path}
		c.Native.Group = "daemon"
	})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("mode %v, want socket 0660", fi.Mode())
	}
	g, err := user.LookupGroup("daemon")
	if err != nil {
		t.Fatal(err)
	}
	if gid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)); gid != g.Gid {
		t.Errorf("group %s, want daemon (%s)", gid, g.Gid)
	}
	c := dialLine(t, h.addr(t, protoNative, "unix"))
	c.send("PING\n")
	if got := c.mustLine(); got != "PONG" {
		t.Fatal(got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the socket directory holds %d entries, want only the socket", len(entries))
	}

	// A second server on the same path is refused: the socket is alive.
	_, err = New(Config{Native: NativeConfig{Listen: []string{path}}, Limits: DefaultLimits()},
		Deps{Checker: h.engine}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Errorf("second server: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after Close: %v", err)
	}
}

// A file that is not a socket is never replaced.
func TestUnixSocketPathTaken(t *testing.T) {
	dir := shortTempDir(t)
	path := dir + "/hook.sock"
	if err := os.WriteFile(path, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newTestHook(t, func(c *Config) { c.Native.Listen = nil })
	_, err := New(Config{Native: NativeConfig{Listen: []string{path}}, Limits: DefaultLimits()}, Deps{Checker: h.engine}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("got %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "mine" {
		t.Error("the file was touched")
	}
}

// A group that does not exist is found when the socket is made, and
// nothing is left listening.
func TestUnixSocketUnknownGroup(t *testing.T) {
	dir := shortTempDir(t)
	h := newTestHook(t, func(c *Config) { c.Native.Listen = nil })
	_, err := New(Config{
		Native: NativeConfig{Listen: []string{"127.0.0.1:0", dir + "/hook.sock"}, Group: "no-such-group-here"},
		Limits: DefaultLimits(),
	}, Deps{Checker: h.engine}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), `no group "no-such-group-here" on this host`) {
		t.Errorf("got %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}
