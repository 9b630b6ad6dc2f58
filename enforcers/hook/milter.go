package hook

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	milter "github.com/d--j/go-milter"
)

// The milter protocol (Sendmail's libmilter, spoken by Postfix's
// smtpd_milters, Sendmail and Stalwart), served with github.com/d--j/go-milter.
//
// At CONNECT a banned or blocked client address is answered
// "421 4.7.0 <reason>": a temporary failure, so that a real server banned
// by mistake retries later. Postfix then sends a 421 instead of the
// greeting and hangs up; the text it sends at CONNECT is its own ("421
// <myhostname> Service unavailable - try again later"), and mailban's is
// in its log (milter-reject: CONNECT ...). At MAIL FROM, after SMTP AUTH, the login in the {auth_authen}
// macro is checked: a locked login (from an address that is not exempt)
// gets "450 4.7.1 <reason>" for that message. Everything else goes on.
// The milter asks the MTA for nothing but CONNECT and MAIL (and, at MAIL,
// for {auth_authen} alone), so it never sees a message's content.
//
// Fail open: when mailban is down or a connection breaks, the MTA applies
// its own default (Postfix: milter_default_action = accept, in the
// documented configuration).
//
// go-milter trusts the framing and shape of what it reads: a packet of
// length 0, or a CONNECT, MAIL or RCPT without the NUL its parser looks
// for, would panic its session goroutine, and with it mailban. So every
// packet is read whole, bounded and checked here first (milterConn); one
// that is malformed closes that connection alone.

const (
	milterAddressCode   = 421
	milterAddressStatus = "4.7.0 "
	milterLoginCode     = 450
	milterLoginStatus   = "4.7.1 "
)

// milterSkip are the protocol steps the milter asks the MTA to leave out:
// all but CONNECT and MAIL.
const milterSkip = milter.OptNoHelo | milter.OptNoRcptTo | milter.OptNoBody | milter.OptNoHeaders |
	milter.OptNoEOH | milter.OptNoUnknown | milter.OptNoData

// serveMilter runs one milter connection to its end. go-milter serves
// listeners, not connections, so it is handed a listener that yields this
// one connection and then waits for it to close: Serve returns when the
// session is over, and the connection stays the hook's to track and close.
func (s *Server) serveMilter(c net.Conn) {
	lim := s.cfg.Load().Limits
	mc := newMilterConn(c, lim)
	mc.malformed = func(err error) {
		s.m.proto[protoMilter].requests[outError].Inc()
		s.log.Warn("malformed milter packet; closing the connection", "error", err)
	}
	srv := milter.NewServer(
		milter.WithMilter(func() milter.Milter { return &milterSession{s: s} }),
		milter.WithNegotiationCallback(negotiateMilter),
		milter.WithMacroRequest(milter.StageMail, []milter.MacroName{milter.MacroAuthAuthen}),
		milter.WithWriteTimeout(lim.RequestTimeout),
	)
	ln := &oneConnListener{c: mc}
	srv.Serve(ln) // its error says only that the one connection is over
}

// negotiateMilter takes the MTA's protocol version (up to go-milter's) and
// asks it to leave out every step but CONNECT and MAIL, as far as it offers
// to. Asking for what the MTA does not offer would fail the negotiation,
// so only what is offered is taken. SETSYMLIST, where offered, lets the
// milter name the one macro it needs at MAIL.
func negotiateMilter(mtaVersion, milterVersion uint32, mtaActions, _ milter.OptAction, mtaProtocol, _ milter.OptProtocol, _ milter.DataSize) (uint32, milter.OptAction, milter.OptProtocol, milter.DataSize, error) {
	if mtaVersion < 2 {
		return 0, 0, 0, 0, fmt.Errorf("milter protocol version %d is too old", mtaVersion)
	}
	return min(mtaVersion, milterVersion), mtaActions & milter.OptSetMacros, mtaProtocol & milterSkip, milter.DataSize64K, nil
}

// milterSession answers one MTA connection's events. The MTA may reuse the
// connection for another SMTP client (after Connect comes Connect again).
type milterSession struct {
	milter.NoOpMilter
	s    *Server
	addr netip.Addr // the SMTP client's; invalid for a unix or unknown client
}

// Connect refuses a banned or blocked address; anything else goes on to
// MAIL, where the login is known.
func (m *milterSession) Connect(_ string, family string, _ uint16, addr string, _ milter.Modifier) (*milter.Response, error) {
	m.addr = netip.Addr{}
	if family == "tcp4" || family == "tcp6" {
		if a, err := netip.ParseAddr(addr); err == nil {
			m.addr = a.Unmap().WithZone("")
		}
	}
	return m.answer("", milter.RespContinue)
}

// MailFrom refuses a locked login, or an address banned since CONNECT; it
// accepts the rest, which tells the MTA that this message needs the milter
// no further.
func (m *milterSession) MailFrom(_, _ string, mod milter.Modifier) (*milter.Response, error) {
	return m.answer(mod.Get(milter.MacroAuthAuthen), milter.RespAccept)
}

// answer checks the session's address and login, counting and timing the
// request in the milter series; pass is the answer when nothing is refused.
func (m *milterSession) answer(login string, pass *milter.Response) (*milter.Response, error) {
	t0 := time.Now()
	pm := m.s.m.proto[protoMilter]
	defer func() { pm.duration.Observe(time.Since(t0).Seconds()) }()
	r := m.s.check(m.addr, login)
	if !r.refused {
		pm.requests[outAllow].Inc()
		return pass, nil
	}
	pm.requests[outDeny].Inc()
	code, status := uint16(milterAddressCode), milterAddressStatus
	if r.login {
		code, status = milterLoginCode, milterLoginStatus
	}
	resp, err := milter.RejectWithCodeAndReason(code, status+r.public())
	if err != nil {
		// Only a reply text go-milter cannot send gets here: ours are short
		// and fixed. A plain temporary failure says the same.
		return milter.RespTempFail, nil
	}
	return resp, nil
}

// errMilterTooOld ends a connection that has lived past MaxConnectionAge.
var errMilterTooOld = errors.New("milter connection older than limits.max-connection-age")

// milterConn reads the MTA's packets whole, one at a time, checks each
// before go-milter sees any of it, and bounds the reading and writing by
// the hook's limits: IdleTimeout for a packet to begin, RequestTimeout for
// the rest of it and for every write, MaxRequest for its size,
// MaxConnectionAge for the connection.
type milterConn struct {
	net.Conn
	r         *bufio.Reader
	lim       Limits
	started   time.Time
	pending   []byte // the rest of the current packet, checked
	buf       []byte
	malformed func(error)

	closeOnce sync.Once
	closed    chan struct{}
}

func newMilterConn(c net.Conn, lim Limits) *milterConn {
	return &milterConn{Conn: c, r: bufio.NewReaderSize(c, 4096), lim: lim, started: time.Now(), closed: make(chan struct{})}
}

func (c *milterConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// next reads and checks the next packet into pending. A malformed packet
// is reported and the connection ends as if the MTA had closed it (io.EOF,
// which go-milter ends a session on without logging its own warning).
func (c *milterConn) next() error {
	if time.Since(c.started) > c.lim.MaxConnectionAge {
		return fmt.Errorf("%w: %w", errMilterTooOld, io.EOF)
	}
	c.Conn.SetReadDeadline(time.Now().Add(c.lim.IdleTimeout))
	if _, err := c.r.Peek(1); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return io.EOF // idle too long: ended as quietly as a hang-up
		}
		return err
	}
	c.Conn.SetReadDeadline(time.Now().Add(c.lim.RequestTimeout))
	var head [4]byte
	if _, err := io.ReadFull(c.r, head[:]); err != nil {
		return c.broken(fmt.Errorf("%w: cut short in its length: %w", errMalformed, err))
	}
	n := binary.BigEndian.Uint32(head[:])
	if n < 1 || n > uint32(c.lim.MaxRequest) {
		return c.broken(fmt.Errorf("%w: a packet of %d bytes (1 to limits.max-request %d)", errMalformed, n, c.lim.MaxRequest))
	}
	c.buf = slices.Grow(c.buf[:0], 4+int(n))[:4+int(n)]
	copy(c.buf, head[:])
	if _, err := io.ReadFull(c.r, c.buf[4:]); err != nil {
		return c.broken(fmt.Errorf("%w: a packet cut short: %w", errMalformed, err))
	}
	if err := checkMilterPacket(c.buf[4], c.buf[5:]); err != nil {
		return c.broken(err)
	}
	c.pending = c.buf
	return nil
}

// broken reports a malformed packet, unless the connection was closed or
// timed out, and ends the session quietly.
func (c *milterConn) broken(err error) error {
	if !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) && c.malformed != nil {
		c.malformed(err)
	}
	return fmt.Errorf("%w: %w", err, io.EOF)
}

// checkMilterPacket refuses what go-milter would read past the end of:
// every packet it slices by a NUL must have one, and a CONNECT a family
// byte after the host name. The rest of the checking is go-milter's.
func checkMilterPacket(code byte, data []byte) error {
	switch code {
	case 'C': // host NUL family [port address NUL]
		i := bytes.IndexByte(data, 0)
		if i < 0 || i+1 >= len(data) {
			return fmt.Errorf("%w: CONNECT without a host name and family", errMalformed)
		}
	case 'M', 'R': // address NUL [args NUL ...]
		if bytes.IndexByte(data, 0) < 0 {
			return fmt.Errorf("%w: %c without a NUL-terminated address", errMalformed, code)
		}
	case 'D': // the command the macros are for, then name NUL value NUL ...
		if len(data) < 1 {
			return fmt.Errorf("%w: macros for no command", errMalformed)
		}
	}
	return nil
}

func (c *milterConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.lim.RequestTimeout))
	return c.Conn.Write(p)
}

func (c *milterConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { close(c.closed) })
	return err
}

// oneConnListener yields its connection once, then waits for it to close
// and reports itself closed.
type oneConnListener struct {
	c     *milterConn
	taken bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.taken {
		l.taken = true
		return l.c, nil
	}
	<-l.c.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return l.c.Close() }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }
