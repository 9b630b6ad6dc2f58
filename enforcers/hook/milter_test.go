package hook

import (
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	milter "github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// newMilterHook is a test hook with the milter on a unix socket (and the
// native protocol for company), the other protocols off.
func newMilterHook(t testing.TB, edit func(*Config)) *testHook {
	t.Helper()
	dir := shortTempDir(t)
	return newTestHook(t, func(c *Config) {
		c.Postfix.Listen, c.Dovecot.Listen, c.Nginx.Listen = nil, nil, nil
		c.Milter.Listen = []string{filepath.Join(dir, "milter.sock"), "127.0.0.1:0"}
		c.Milter.Group = ""
		if edit != nil {
			edit(c)
		}
	})
}

// milterSession opens a session with go-milter's own client, as an MTA
// would, with the given {auth_authen} (or none).
func milterClient(t testing.TB, a net.Addr, login string) *milter.ClientSession {
	t.Helper()
	macros := milter.NewMacroBag()
	if login != "" {
		macros.Set(milter.MacroAuthAuthen, login)
	}
	s, err := milter.NewClient(a.Network(), a.String()).Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestMilter runs SMTP sessions through go-milter's client: banned and
// blocked addresses are refused with 421 at CONNECT, a locked login with
// 450 at MAIL except from its owner's address, the rest goes on.
func TestMilter(t *testing.T) {
	h := newMilterHook(t, nil)
	h.ban(t, "203.0.113.7")
	h.lock(t, "alice@example.test")
	h.succeed(t, "192.0.2.1", "alice@example.test")
	const (
		banned  = "421 4.7.0 too many failed logins from your address, try again later"
		blocked = "421 4.7.0 access from your address is refused"
		locked  = "450 4.7.1 login temporarily locked after too many failed logins, try again later"
	)
	for _, network := range []string{"unix", "tcp"} {
		a := h.addr(t, protoMilter, network)
		for _, tc := range []struct {
			name        string
			family      milter.ProtoFamily
			client      string
			login       string
			connect     string // the SMTP reply at CONNECT; "" goes on
			mail        string // at MAIL; "" accepts
			mailCommand bool   // MAIL is reached
		}{
			{name: "clean client", family: milter.FamilyInet, client: "192.0.2.50", mailCommand: true},
			{name: "clean client with a login", family: milter.FamilyInet, client: "192.0.2.50", login: "bob@example.test", mailCommand: true},
			{name: "banned client", family: milter.FamilyInet, client: "203.0.113.7", connect: banned},
			{name: "blocked network", family: milter.FamilyInet, client: "198.51.100.20", connect: blocked},
			{name: "locked login", family: milter.FamilyInet, client: "192.0.2.50", login: "Alice@example.test", mail: locked, mailCommand: true},
			{name: "locked login from its owner's address", family: milter.FamilyInet, client: "192.0.2.1", login: "alice@example.test", mailCommand: true},
			{name: "IPv6 client", family: milter.FamilyInet6, client: "2001:db8::5", mailCommand: true},
			{name: "IPv4-mapped banned client", family: milter.FamilyInet6, client: "::ffff:203.0.113.7", connect: banned},
			{name: "local client with a locked login", family: milter.FamilyUnix, client: "/run/submit.sock", login: "alice@example.test", mail: locked, mailCommand: true},
			{name: "unknown client with a locked login", family: milter.FamilyUnknown, login: "alice@example.test", mail: locked, mailCommand: true},
		} {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				s := milterClient(t, a, tc.login)
				for _, opt := range []milter.OptProtocol{milter.OptNoHelo, milter.OptNoRcptTo, milter.OptNoBody, milter.OptNoHeaders} {
					if !s.ProtocolOption(opt) {
						t.Errorf("the milter did not ask to leave out %v", opt)
					}
				}
				act, err := s.Conn("client.example.test", tc.family, 45294, tc.client)
				if err != nil {
					t.Fatal(err)
				}
				checkMilterAction(t, "CONNECT", act, tc.connect, milter.ActionContinue)
				if !tc.mailCommand {
					return
				}
				if _, err := s.Helo("client.example.test"); err != nil {
					t.Fatal(err)
				}
				act, err = s.Mail("sender@example.test", "")
				if err != nil {
					t.Fatal(err)
				}
				checkMilterAction(t, "MAIL", act, tc.mail, milter.ActionAccept)
			})
		}
	}
	// 2 networks x (banned, blocked, mapped, and three locked logins).
	if got := testutil.ToFloat64(h.m.proto[protoMilter].requests[outDeny]); got != 12 {
		t.Errorf("milter denials counted %v, want 12", got)
	}
	if got := testutil.ToFloat64(h.m.proto[protoMilter].requests[outError]); got != 0 {
		t.Errorf("milter errors counted %v, want 0", got)
	}
}

func checkMilterAction(t *testing.T, stage string, act *milter.Action, wantReply string, pass milter.ActionType) {
	t.Helper()
	switch {
	case wantReply == "" && act.Type != pass:
		t.Errorf("at %s: %+v, want action %v", stage, act, pass)
	case wantReply != "" && (act.Type != milter.ActionRejectWithCode || act.SMTPReply != wantReply):
		t.Errorf("at %s: %+v, want %q", stage, act, wantReply)
	}
}

// TestMilterReusedConnection: an MTA may use one milter connection for
// several SMTP clients in turn; each is checked on its own.
func TestMilterReusedConnection(t *testing.T) {
	h := newMilterHook(t, nil)
	h.ban(t, "203.0.113.7")
	s := milterClient(t, h.addr(t, protoMilter, "unix"), "")
	for i, tc := range []struct {
		client string
		want   milter.ActionType
	}{{"192.0.2.50", milter.ActionContinue}, {"203.0.113.7", milter.ActionRejectWithCode}, {"192.0.2.51", milter.ActionContinue}} {
		if i > 0 {
			if err := s.Reset(nil); err != nil {
				t.Fatal(err)
			}
		}
		act, err := s.Conn("c", milter.FamilyInet, 25, tc.client)
		if err != nil {
			t.Fatal(err)
		}
		if act.Type != tc.want {
			t.Errorf("client %s: %+v, want %v", tc.client, act, tc.want)
		}
	}
}

// milterPacket frames a packet as the MTA sends it: length, code, data.
func milterPacket(code byte, data string) []byte {
	p := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(p, code), data...)
}

// milterNegotiation is an MTA's option negotiation: protocol version 6,
// every action and protocol step offered.
func milterNegotiation() []byte {
	d := binary.BigEndian.AppendUint32(nil, 6)
	d = binary.BigEndian.AppendUint32(d, 0x1ff)
	d = binary.BigEndian.AppendUint32(d, 0x1fffff)
	return milterPacket('O', string(d))
}

// TestMilterMalformed sends what go-milter would read past the end of, or
// too much of: the connection is closed and counted, nothing panics (a
// panic in go-milter's session goroutine would end this test binary), and
// the next client is served as before.
func TestMilterMalformed(t *testing.T) {
	h := newMilterHook(t, func(c *Config) { c.Limits.MaxRequest = 4096 })
	h.ban(t, "203.0.113.7")
	a := h.addr(t, protoMilter, "unix")
	huge := binary.BigEndian.AppendUint32(nil, 1<<30)
	for i, tc := range []struct {
		name       string
		negotiated bool // send a proper negotiation first
		raw        []byte
	}{
		{"a packet of length 0", true, []byte{0, 0, 0, 0}},
		{"a packet of length 0 before negotiation", false, []byte{0, 0, 0, 0}},
		{"a packet larger than max-request", true, append(huge, 'C')},
		{"CONNECT without a NUL", true, milterPacket('C', "host.example.test")},
		{"CONNECT without a family", true, milterPacket('C', "host\x00")},
		{"MAIL without a NUL", true, milterPacket('M', "<a@example.test>")},
		{"RCPT without a NUL", true, milterPacket('R', "<b@example.test>")},
		{"macros for nothing", true, milterPacket('D', "")},
		{"a length cut short", true, []byte{0, 0}},
		{"a packet cut short", true, append(binary.BigEndian.AppendUint32(nil, 100), 'C', 'x')},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", a.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var out []byte
			if tc.negotiated {
				out = milterNegotiation()
			}
			c.Write(append(out, tc.raw...))
			if i >= 8 { // cut short: the MTA goes away mid-packet
				c.(*net.UnixConn).CloseWrite()
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if tc.negotiated {
				if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
					t.Fatalf("no negotiation answer: %v", err)
				}
			}
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Errorf("the connection was not closed: %v", err)
			}
			// Another client is served.
			s := milterClient(t, a, "")
			act, err := s.Conn("c", milter.FamilyInet, 25, "203.0.113.7")
			if err != nil || act.Type != milter.ActionRejectWithCode {
				t.Errorf("the next client: %+v, %v", act, err)
			}
		})
	}
	if got := testutil.ToFloat64(h.m.proto[protoMilter].requests[outError]); got != 10 {
		t.Errorf("milter errors counted %v, want 10", got)
	}
}

// TestMilterIdleTimeout: a connection that sends nothing for
// limits.idle-timeout is closed.
func TestMilterIdleTimeout(t *testing.T) {
	h := newMilterHook(t, func(c *Config) { c.Limits.IdleTimeout = 50 * time.Millisecond })
	c, err := net.Dial("unix", h.addr(t, protoMilter, "unix").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Errorf("an idle connection was not closed by the hook: %v", err)
	}
}

// FuzzMilterStream: whatever bytes arrive on a milter connection, the
// session ends without a panic (go-milter's or ours).
func FuzzMilterStream(f *testing.F) {
	neg := milterNegotiation()
	f.Add(append(neg, milterPacket('C', "host\x004\x00\x19203.0.113.7\x00")...))
	f.Add(append(append(neg, milterPacket('D', "M{auth_authen}\x00alice\x00")...), milterPacket('M', "<a@b>\x00SIZE=1\x00")...))
	f.Add(append(neg, milterPacket('C', "h\x006\x00\x19IPv6:2001:db8::1\x00")...))
	f.Add(append(neg, milterPacket('R', "x")...))
	f.Add([]byte{0, 0, 0, 1, 'Q'})
	h := newMilterHook(f, func(c *Config) { c.Limits.MaxRequest = 1024 })
	h.ban(f, "203.0.113.7")
	h.log = slog.New(slog.DiscardHandler) // the test's log is not the fuzz target's to write
	f.Fuzz(func(t *testing.T, in []byte) {
		server, client := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(io.Discard, client)
		}()
		go func() {
			client.Write(in)
			client.Close()
		}()
		h.serveMilter(server)
		server.Close()
		<-done
	})
}

// TestMilterLimits: a listener holds limits.max-connections and closes the
// next at once (counted), and a connection older than
// limits.max-connection-age is ended at its next packet.
func TestMilterLimits(t *testing.T) {
	t.Run("max-connections", func(t *testing.T) {
		h := newMilterHook(t, func(c *Config) { c.Limits.MaxConnections = 1 })
		a := h.addr(t, protoMilter, "unix")
		s := milterClient(t, a, "")
		if act, err := s.Conn("c", milter.FamilyInet, 25, "192.0.2.50"); err != nil || act.Type != milter.ActionContinue {
			t.Fatalf("the first connection: %+v, %v", act, err)
		}
		c, err := net.Dial("unix", a.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(milterNegotiation())
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.Copy(io.Discard, c); n != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the second connection: %d bytes, %v; want it closed unanswered", n, err)
		}
		if got := testutil.ToFloat64(h.m.proto[protoMilter].refused); got != 1 {
			t.Errorf("refused connections counted %v, want 1", got)
		}
		// The first one is still served.
		if err := s.Reset(nil); err != nil {
			t.Fatal(err)
		}
		if act, err := s.Conn("c", milter.FamilyInet, 25, "192.0.2.51"); err != nil || act.Type != milter.ActionContinue {
			t.Errorf("the first connection afterwards: %+v, %v", act, err)
		}
	})
	t.Run("max-connection-age", func(t *testing.T) {
		h := newMilterHook(t, func(c *Config) { c.Limits.MaxConnectionAge = time.Nanosecond })
		c, err := net.Dial("unix", h.addr(t, protoMilter, "unix").String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(milterNegotiation())
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := io.Copy(io.Discard, c); n != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("an old connection: %d bytes, %v; want it closed unanswered", n, err)
		}
	})
}

// BenchmarkMilterSession measures one SMTP session's worth of milter
// traffic on a kept connection, as Postfix sends it for an authenticated
// client: CONNECT, (HELO, left out), the {auth_authen} macro and MAIL,
// then the reset for the next session. The engine holds 10,000 bans.
//
//	go test ./enforcers/hook -run '^$' -bench MilterSession -benchtime 20000x
//
// Reports sessions/s; each is two answered round trips.
func BenchmarkMilterSession(b *testing.B) {
	h := newMilterHook(b, nil)
	for i := range 10000 {
		h.ban(b, netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}).String())
	}
	h.log = slog.New(slog.DiscardHandler)
	for _, network := range []string{"unix", "tcp"} {
		b.Run(network, func(b *testing.B) {
			s := milterClient(b, h.addr(b, protoMilter, network), "bob@example.test")
			t0 := time.Now()
			for i := 0; b.Loop(); i++ {
				if i > 0 {
					if err := s.Reset(nil); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := s.Conn("c", milter.FamilyInet, 25, "192.0.2.50"); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Helo("c"); err != nil {
					b.Fatal(err)
				}
				if act, err := s.Mail("bob@example.test", ""); err != nil || act.Type != milter.ActionAccept {
					b.Fatalf("MAIL: %+v, %v", act, err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "sessions/s")
		})
	}
}
