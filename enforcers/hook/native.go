package hook

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mailban/mailban/parsers"
)

// The native protocol, one request per line, one answer line per request
// (WATCH excepted), in order; a client may send requests back to back
// without waiting:
//
//	CHECK ip=<addr> [login=<login>] [service=<svc>]   → ALLOW | DENY <seconds> <reason>
//	REPORT fail|success ip=<addr> login=<login> [service=<svc>] [attempts=<n>] → OK
//	WATCH   → the bans, blocks and locks in force as JSON lines, then
//	          {"action":"synced",...}, then every change as it is decided
//	PING    → PONG
//	QUIT    → BYE, and the connection closes
//
// Anything else gets ERR <message>. Commands are case-insensitive; values
// may be percent-encoded (%20 for a space, %25 for %). DENY's seconds are
// 0 when the refusal has no end.

// nextState says what a connection does after a request.
type nextState int

const (
	goOn nextState = iota
	hangUp
	startWatch
)

func (s *Server) serveNative(c net.Conn, tcp bool) {
	lc := newLineConn(c, s.cfg.Load().Limits)
	pm := s.m.proto[protoNative]
	for {
		line, err := lc.readLine(true)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				pm.requests[outError].Inc()
				lc.w.WriteString("ERR line too long\n")
				lc.flush()
			}
			return
		}
		t0 := time.Now()
		out, next := s.nativeRequest(lc, line, tcp)
		pm.requests[out].Inc()
		pm.duration.Observe(time.Since(t0).Seconds())
		switch {
		case next == startWatch:
			s.watch(lc)
			return
		case next == hangUp || lc.tooOld(t0):
			lc.flush()
			return
		}
	}
}

// nativeRequest answers one line into lc's write buffer.
func (s *Server) nativeRequest(lc *lineConn, line []byte, tcp bool) (outcome, nextState) {
	w := lc.w
	cmd, rest := nextToken(line)
	fail := func(format string, args ...any) (outcome, nextState) {
		w.WriteString("ERR ")
		w.WriteString(oneLine(fmt.Sprintf(format, args...)))
		w.WriteByte('\n')
		return outError, goOn
	}
	switch {
	case equalFold(cmd, "CHECK"):
		a, err := parseNativeArgs(rest, false)
		if err != nil {
			return fail("%v", err)
		}
		if !a.ip.IsValid() && a.login == "" {
			return fail("CHECK needs ip=<address>, login=<login> or both")
		}
		r := s.check(a.ip, a.login)
		if !r.refused {
			w.WriteString("ALLOW\n")
			return outAllow, goOn
		}
		buf := append(w.AvailableBuffer(), "DENY "...)
		buf = strconv.AppendInt(buf, s.secondsLeft(r.v), 10)
		buf = append(buf, ' ')
		buf = append(buf, oneLine(r.v.Reason)...)
		buf = append(buf, '\n')
		w.Write(buf)
		return outDeny, goOn

	case equalFold(cmd, "REPORT"):
		if s.deps.Reporter == nil {
			return fail("reports are not accepted here")
		}
		if tcp && !s.cfg.Load().Native.ReportOverTCP {
			return fail("REPORT is refused over TCP (see native.report-over-tcp); use the unix socket")
		}
		what, rest := nextToken(rest)
		var kind parsers.Kind
		switch {
		case equalFold(what, "FAIL"), equalFold(what, "FAILURE"):
			kind = parsers.AuthFailure
		case equalFold(what, "SUCCESS"):
			kind = parsers.AuthSuccess
		default:
			return fail("REPORT wants fail or success first, not %q", what)
		}
		a, err := parseNativeArgs(rest, true)
		if err != nil {
			return fail("%v", err)
		}
		switch {
		case kind == parsers.AuthSuccess && (!a.ip.IsValid() || a.login == ""):
			return fail("REPORT success needs ip= and login=")
		case !a.ip.IsValid() && a.login == "":
			return fail("REPORT fail needs ip=, login= or both")
		case kind == parsers.AuthSuccess && a.attempts > 1:
			return fail("attempts= counts failures only")
		}
		if err := s.report("hook-"+protoNative, s.reportEvent(protoNative, kind, a.ip, a.login, a.service, a.attempts)); err != nil {
			return fail("not queued: %v", err)
		}
		w.WriteString("OK\n")
		return outReport, goOn

	case equalFold(cmd, "WATCH"):
		if len(bytes.TrimSpace(rest)) > 0 {
			return fail("WATCH takes no arguments")
		}
		return outWatch, startWatch
	case equalFold(cmd, "PING"):
		w.WriteString("PONG\n")
		return outOther, goOn
	case equalFold(cmd, "QUIT"):
		w.WriteString("BYE\n")
		return outOther, hangUp
	case len(cmd) == 0:
		return fail("empty request")
	}
	return fail("unknown command %q (CHECK, REPORT, WATCH, PING, QUIT)", truncate(cmd, 32))
}

// nativeArgs are a request's key=value arguments.
type nativeArgs struct {
	ip       netip.Addr
	login    string
	service  parsers.Service
	attempts int
}

// parseNativeArgs reads key=value arguments; each key at most once.
// attempts= is accepted only where allowed (REPORT).
func parseNativeArgs(b []byte, attemptsAllowed bool) (nativeArgs, error) {
	var a nativeArgs
	var seen [4]bool
	for {
		var tok []byte
		tok, b = nextToken(b)
		if len(tok) == 0 {
			return a, nil
		}
		key, raw, ok := bytes.Cut(tok, []byte{'='})
		if !ok {
			return a, fmt.Errorf("%q is not key=value", truncate(tok, 32))
		}
		val, err := unescape(raw)
		if err != nil {
			return a, fmt.Errorf("%s: %v", truncate(key, 32), err)
		}
		var i int
		switch string(key) {
		case "ip":
			i = 0
			ip, err := netip.ParseAddr(val)
			if err != nil || ip.Zone() != "" {
				return a, fmt.Errorf("ip: %q is not an IP address", truncate([]byte(val), 64))
			}
			a.ip = ip.Unmap()
		case "login":
			i = 1
			if strings.TrimSpace(val) == "" {
				return a, errors.New("login: empty")
			}
			a.login = val
		case "service":
			i = 2
			svc, ok := parsers.ParseService(val)
			if !ok {
				return a, fmt.Errorf("service: unknown service %q (smtp, imap, pop3, managesieve, jmap, http)", truncate([]byte(val), 32))
			}
			a.service = svc
		case "attempts":
			i = 3
			if !attemptsAllowed {
				return a, errors.New("attempts: only REPORT fail takes it")
			}
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > 1000 {
				return a, fmt.Errorf("attempts: %q is not a number from 1 to 1000", truncate([]byte(val), 16))
			}
			a.attempts = n
		default:
			known := "ip, login, service"
			if attemptsAllowed {
				known += ", attempts"
			}
			return a, fmt.Errorf("unknown argument %q (%s)", truncate(key, 32), known)
		}
		if seen[i] {
			return a, fmt.Errorf("%s given twice", key)
		}
		seen[i] = true
	}
}

// nextToken splits off the next space- or tab-separated word.
func nextToken(b []byte) (tok, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	b = b[i:]
	j := 0
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	return b[:j], b[j:]
}

// equalFold compares b, in any case, with an upper-case ASCII word,
// without allocating.
func equalFold(b []byte, word string) bool {
	if len(b) != len(word) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != word[i] {
			return false
		}
	}
	return true
}

// unescape decodes %XX sequences; nothing else is special.
func unescape(b []byte) (string, error) {
	if bytes.IndexByte(b, '%') < 0 {
		return string(b), nil
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '%' {
			out = append(out, b[i])
			continue
		}
		if i+2 >= len(b) {
			return "", errors.New("% must be followed by two hex digits")
		}
		h, l := unhex(b[i+1]), unhex(b[i+2])
		if h < 0 || l < 0 {
			return "", errors.New("% must be followed by two hex digits")
		}
		out = append(out, byte(h<<4|l))
		i += 2
	}
	return string(out), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// oneLine keeps a message on one line and printable.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// truncate shortens client input quoted back in an error.
func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
