package nftables

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mailban/mailban/internal/netnstest"
)

// Real packets: a client namespace connects over a veth pair to an echo
// server in the namespace mailban guards.

// dialTimeout bounds a connection attempt; a dropped SYN shows as a
// timeout, a working path answers within a millisecond.
const dialTimeout = 400 * time.Millisecond

// echoServer answers every line it reads with the same line, on each port,
// on all of the namespace's addresses.
func echoServer(t *testing.T, ns *netnstest.NS, ports ...int) {
	t.Helper()
	var (
		wg        sync.WaitGroup
		listeners []net.Listener
		conns     sync.Map
	)
	t.Cleanup(func() {
		for _, ln := range listeners {
			ln.Close()
		}
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		wg.Wait()
	})
	for _, port := range ports {
		var ln net.Listener
		err := ns.Do(func() error {
			var err error
			ln, err = net.Listen("tcp", ":"+strconv.Itoa(port))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, ln)
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns.Store(c, true)
				wg.Go(func() {
					defer c.Close()
					r := bufio.NewReader(c)
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						if _, err := c.Write([]byte(line)); err != nil {
							return
						}
					}
				})
			}
		})
	}
}

// dialFrom connects from a client address to the server's port.
func dialFrom(ns *netnstest.NS, from, to netip.Addr, port int) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: dialTimeout, LocalAddr: &net.TCPAddr{IP: from.AsSlice()}}
		var err error
		c, err = d.Dial("tcp", netip.AddrPortFrom(to, uint16(port)).String())
		return err
	})
	return c, err
}

// echo sends a line and waits for it to come back.
func echo(c net.Conn, wait time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(c, "ping"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "ping\n" {
		return fmt.Errorf("echo %q", line)
	}
	return nil
}

// connects says whether a new connection from..to works end to end.
func connects(ns *netnstest.NS, from, to netip.Addr, port int) bool {
	c, err := dialFrom(ns, from, to, port)
	if err != nil {
		return false
	}
	defer c.Close()
	return echo(c, dialTimeout) == nil
}

func expectConnects(t *testing.T, ns *netnstest.NS, from, to netip.Addr, port int, want bool) {
	t.Helper()
	if got := connects(ns, from, to, port); got != want {
		t.Errorf("%s → %s port %d: connects %v, want %v", from, to, port, got, want)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func TestTrafficBanIPv4(t *testing.T) {
	l := netnstest.NewLink(t)
	h := newHarness(t, l.Server)
	e := h.start(h.config())
	h.reconcile(e)
	echoServer(t, l.Server, 25)

	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 25, true)
	open, err := dialFrom(l.Client, l.ClientV4, l.ServerV4, 25)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := echo(open, time.Second); err != nil {
		t.Fatal(err)
	}

	h.apply(e, ban("192.0.2.2/32", h.clock.Now().Add(time.Hour)))
	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 25, false)
	expectConnects(t, l.Client, l.ClientV4b, l.ServerV4, 25, true) // the neighbour is not banned
	// The open connection is cut off too: what it sends is dropped.
	if err := echo(open, dialTimeout); !isTimeout(err) {
		t.Errorf("open connection after the ban: %v, want a timeout", err)
	}

	h.apply(e, unban("192.0.2.2/32"))
	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 25, true)
	// TCP retransmits what was dropped: the open connection recovers.
	if err := open.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(open).ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("open connection after the unban: %q, %v", line, err)
	}
}

// A ban ends in the kernel at its time, with no word from mailban.
func TestTrafficBanExpires(t *testing.T) {
	l := netnstest.NewLink(t)
	h := newHarness(t, l.Server)
	e := h.start(h.config())
	h.reconcile(e)
	echoServer(t, l.Server, 25)

	h.apply(e, ban("192.0.2.2/32", h.clock.Now().Add(1500*time.Millisecond)))
	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 25, false)
	if err := e.Close(); err != nil { // mailban stops; the kernel carries on
		t.Fatal(err)
	}
	waitFor(t, "192.0.2.2 connects after its ban expired", func() bool {
		return connects(l.Client, l.ClientV4, l.ServerV4, 25)
	})
}

// IPv6 bans are of a network (the rules' ipv6-prefix, /64 by default): the
// client's other /64 is not touched.
func TestTrafficBanIPv6Network(t *testing.T) {
	l := netnstest.NewLink(t)
	h := newHarness(t, l.Server)
	e := h.start(h.config())
	h.reconcile(e)
	echoServer(t, l.Server, 25)

	expectConnects(t, l.Client, l.ClientV6, l.ServerV6, 25, true)
	open, err := dialFrom(l.Client, l.ClientV6, l.ServerV6, 25)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	h.apply(e, ban("2001:db8::/64", h.clock.Now().Add(time.Hour)))
	expectConnects(t, l.Client, l.ClientV6, l.ServerV6, 25, false)
	expectConnects(t, l.Client, l.ClientV6b, l.ServerV6b, 25, true)
	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 25, true)
	if err := echo(open, dialTimeout); !isTimeout(err) {
		t.Errorf("open connection after the ban: %v, want a timeout", err)
	}

	h.apply(e, unban("2001:db8::/64"))
	expectConnects(t, l.Client, l.ClientV6, l.ServerV6, 25, true)
}

// A blocked network is refused whole, until unblocked.
func TestTrafficBlockedNetwork(t *testing.T) {
	l := netnstest.NewLink(t)
	h := newHarness(t, l.Server)
	e := h.start(h.config())
	h.reconcile(e, block("192.0.2.0/24"))
	echoServer(t, l.Server, 25)

	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 25, false)
	expectConnects(t, l.Client, l.ClientV4b, l.ServerV4, 25, false)
	expectConnects(t, l.Client, l.ClientV6, l.ServerV6, 25, true)

	h.apply(e, unblock("192.0.2.0/24"), block("2001:db8::/32"))
	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 25, true)
	expectConnects(t, l.Client, l.ClientV6, l.ServerV6, 25, false)
	expectConnects(t, l.Client, l.ClientV6b, l.ServerV6b, 25, false) // 2001:db8:1::/64 is in the /32
}

// With MailPortsOnly a banned address loses the mail ports only.
func TestTrafficMailPortsOnly(t *testing.T) {
	l := netnstest.NewLink(t)
	h := newHarness(t, l.Server)
	cfg := h.config()
	cfg.MailPortsOnly = true
	e := h.start(cfg)
	h.reconcile(e, ban("192.0.2.2/32", h.clock.Now().Add(time.Hour)))
	echoServer(t, l.Server, 25, 993, 2222)

	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 25, false)
	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 993, false)
	expectConnects(t, l.Client, l.ClientV4, l.ServerV4, 2222, true)
	expectConnects(t, l.Client, l.ClientV4b, l.ServerV4, 25, true)
}

// With Forward, a mail server behind the host (a container, a VM) is
// guarded too: the client reaches it through the namespace mailban runs in.
func TestTrafficForward(t *testing.T) {
	l := netnstest.NewLink(t)
	mail := netnstest.New(t)
	l.Server.IP(t, "link", "add", "veth2", "type", "veth", "peer", "name", "veth3", "netns", mail.Name)
	l.Server.IP(t, "addr", "add", "198.51.100.1/24", "dev", "veth2")
	l.Server.IP(t, "link", "set", "veth2", "up")
	mail.IP(t, "addr", "add", "198.51.100.25/24", "dev", "veth3")
	mail.IP(t, "link", "set", "veth3", "up")
	mail.IP(t, "route", "add", "default", "via", "198.51.100.1")
	l.Client.IP(t, "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
	l.Server.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	echoServer(t, mail, 25)
	mailAddr := netip.MustParseAddr("198.51.100.25")

	h := newHarness(t, l.Server)
	cfg := h.config()
	cfg.Forward = true
	e := h.start(cfg)
	h.reconcile(e)
	expectConnects(t, l.Client, l.ClientV4, mailAddr, 25, true)
	h.apply(e, ban("192.0.2.2/32", h.clock.Now().Add(time.Hour)))
	expectConnects(t, l.Client, l.ClientV4, mailAddr, 25, false)
	expectConnects(t, l.Client, l.ClientV4b, mailAddr, 25, true)
}
