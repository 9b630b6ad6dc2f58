package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is a network namespace made by `ip netns add`.
type NS struct {
	Name string
	Path string // /run/netns/NAME, for setns and nftables.WithNetNSFd
	file *os.File
}

// Require skips the test unless it can create network namespaces and use
// nftables in them (root, ip, nft). With CI=true a missing prerequisite
// fails the test instead: CI must run these tests for real.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (apt-get install iproute2 nftables)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "network namespace test needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// New creates a namespace with its loopback up.
func New(t testing.TB) *NS {
	t.Helper()
	Require(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	n := &NS{Name: "mbt-" + hex.EncodeToString(b[:])}
	n.Path = "/run/netns/" + n.Name
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		msg := fmt.Sprintf("ip netns add: %v: %s", err, out)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if n.file != nil {
			n.file.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	f, err := os.Open(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	n.file = f
	n.IP(t, "link", "set", "lo", "up")
	return n
}

// Fd is a descriptor of the namespace, open until the test ends.
func (n *NS) Fd() int { return int(n.file.Fd()) }

// IP runs `ip -n NAME args...` and fails the test if it fails.
func (n *NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Exec runs a command inside the namespace and returns its output.
func (n *NS) Exec(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustExec is Exec that fails the test on error.
func (n *NS) MustExec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Exec(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Do runs fn on an OS thread that has entered the namespace. Sockets fn
// opens belong to the namespace for good and may be used from anywhere
// afterwards; the thread returns to its namespace before it is reused.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and ends with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", n.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Link is two namespaces joined by a veth pair, with two client addresses
// in each family's first network and, for IPv6, one in a second /64 (the
// server has an address in both), so that tests can show a ban is exact.
type Link struct {
	Server, Client *NS

	ServerV4, ClientV4, ClientV4b netip.Addr // 192.0.2.1, .2, .3 (/24)
	ServerV6, ClientV6            netip.Addr // 2001:db8::1, ::2 (/64)
	ServerV6b, ClientV6b          netip.Addr // 2001:db8:1::1, 1::2 (/64)
}

// NewLink creates two namespaces joined by a veth pair.
func NewLink(t testing.TB) *Link {
	t.Helper()
	l := &Link{
		Server: New(t), Client: New(t),
		ServerV4: netip.MustParseAddr("192.0.2.1"), ClientV4: netip.MustParseAddr("192.0.2.2"), ClientV4b: netip.MustParseAddr("192.0.2.3"),
		ServerV6: netip.MustParseAddr("2001:db8::1"), ClientV6: netip.MustParseAddr("2001:db8::2"),
		ServerV6b: netip.MustParseAddr("2001:db8:1::1"), ClientV6b: netip.MustParseAddr("2001:db8:1::2"),
	}
	l.Server.IP(t, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", l.Client.Name)
	for _, a := range []string{"192.0.2.1/24"} {
		l.Server.IP(t, "addr", "add", a, "dev", "veth0")
	}
	for _, a := range []string{"2001:db8::1/64", "2001:db8:1::1/64"} {
		l.Server.IP(t, "-6", "addr", "add", a, "dev", "veth0", "nodad")
	}
	for _, a := range []string{"192.0.2.2/24", "192.0.2.3/24"} {
		l.Client.IP(t, "addr", "add", a, "dev", "veth1")
	}
	for _, a := range []string{"2001:db8::2/64", "2001:db8:1::2/64"} {
		l.Client.IP(t, "-6", "addr", "add", a, "dev", "veth1", "nodad")
	}
	l.Server.IP(t, "link", "set", "veth0", "up")
	l.Client.IP(t, "link", "set", "veth1", "up")
	return l
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
