package hook

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// refusal is the hook's answer to "may this address, and this login from
// it, go on?".
type refusal struct {
	refused bool
	login   bool // it is the login that is locked; the address itself may go on
	v       rules.Verdict
}

// check asks about the address alone first, so that a refusal says
// whether the address or the login is refused: mail servers answer the two
// differently (Postfix hangs up on an address, refuses a login's mail).
func (s *Server) check(addr netip.Addr, login string) refusal {
	if addr.IsValid() {
		if v := s.deps.Checker.Check(addr, ""); !v.Allow {
			return refusal{refused: true, v: v}
		}
	}
	if login != "" {
		if v := s.deps.Checker.Check(addr, login); !v.Allow {
			return refusal{refused: true, login: true, v: v}
		}
	}
	return refusal{}
}

// public is what a refused client is told: what it can do about it, not
// mailban's thresholds.
func (r refusal) public() string {
	switch {
	case r.login:
		return "login temporarily locked after too many failed logins, try again later"
	case r.v.Until.IsZero():
		return "access from your address is refused"
	}
	return "too many failed logins from your address, try again later"
}

// secondsLeft is how long the refusal lasts, rounded up to a second; 0
// when it has no end (a block, a permanent ban).
func (s *Server) secondsLeft(v rules.Verdict) int64 {
	if v.Until.IsZero() {
		return 0
	}
	d := v.Until.Sub(s.clock.Now())
	return max(1, int64((d+time.Second-1)/time.Second))
}

// report queues one event for the rules, waiting at most RequestTimeout
// for room in the pipeline.
func (s *Server) report(origin string, ev parsers.Event) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Load().Limits.RequestTimeout)
	defer cancel()
	return s.deps.Reporter.Report(ctx, origin, ev)
}

// reportEvent builds an event as the rules expect it: login normalised,
// address unmapped, the evidence a line saying who reported what.
func (s *Server) reportEvent(proto string, kind parsers.Kind, addr netip.Addr, login string, svc parsers.Service, attempts int) parsers.Event {
	addr = addr.Unmap().WithZone("")
	login = parsers.NormalizeLogin(login)
	var b strings.Builder
	b.WriteString("hook ")
	b.WriteString(proto)
	b.WriteString(": ")
	if kind == parsers.AuthSuccess {
		b.WriteString("success")
	} else {
		b.WriteString("failure")
	}
	if addr.IsValid() {
		b.WriteString(" ip=")
		b.WriteString(addr.String())
	}
	if login != "" {
		b.WriteString(" login=")
		b.WriteString(strconv.Quote(login))
	}
	if svc != parsers.ServiceUnknown {
		b.WriteString(" service=")
		b.WriteString(string(svc))
	}
	if attempts > 1 {
		b.WriteString(" attempts=")
		b.WriteString(strconv.Itoa(attempts))
	}
	return parsers.Event{
		Time:     s.clock.Now(),
		Kind:     kind,
		Service:  svc,
		Addr:     addr,
		Login:    login,
		Attempts: max(attempts, 1),
		Format:   "hook-" + proto,
		Evidence: b.String(),
	}
}
