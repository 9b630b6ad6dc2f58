package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/control"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// command is work for the Run goroutine: control requests run there, in
// order with lines and reloads, so that what they decide is enforced and
// saved like everything else.
type command struct {
	run  func(ctx context.Context)
	done chan struct{}
}

// errStopped is returned for commands that arrive when Run has ended.
var errStopped = errors.New("mailban is stopping")

// do runs fn in the Run goroutine and waits for it.
func (a *Agent) do(ctx context.Context, fn func(ctx context.Context)) error {
	c := command{run: fn, done: make(chan struct{})}
	select {
	case a.commands <- c:
	case <-a.loopDone:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// inLoop runs fn in Run's goroutine, as do does, and returns what fn
// returned. When ctx ends first, fn may still run later; its result is
// then dropped here, never read half-written.
func inLoop[T any](ctx context.Context, a *Agent, fn func(ctx context.Context) (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	if err := a.do(ctx, func(ctx context.Context) {
		v, err := fn(ctx)
		done <- result{v, err}
	}); err != nil {
		var zero T
		return zero, err
	}
	r := <-done
	return r.v, r.err
}

// Ready is closed once Run has started its sources and sockets.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Ping returns once the Run goroutine has taken a turn: proof for the
// systemd watchdog that lines, commands and checkpoints are being handled.
func (a *Agent) Ping(ctx context.Context) error {
	return a.do(ctx, func(context.Context) {})
}

// controlBackend is the agent as the control socket sees it.
type controlBackend struct{ a *Agent }

func (b controlBackend) Version() control.Version {
	return control.Version{Version: b.a.opt.Version, PID: os.Getpid()}
}

func (b controlBackend) Status(ctx context.Context) (control.Status, error) {
	return inLoop(ctx, b.a, func(context.Context) (control.Status, error) { return b.a.status(), nil })
}

// status is what mailban status shows; it runs in the pipeline goroutine.
func (a *Agent) status() control.Status {
	es := a.engine.Stats()
	st := control.Status{
		Version: a.opt.Version,
		PID:     os.Getpid(),
		Started: a.started,
		Config:  a.cfgFile,
		Reload:  a.reloadSt,
		State:   a.stateSt,
		Counts: control.Counts{Bans: es.Bans, Blocks: es.Blocks, Locks: es.Locks,
			TrackedAddresses: es.Addresses, TrackedLogins: es.Logins, Offenders: es.Offenders},
		Sources:   []control.Source{},
		Enforcers: []control.Enforcer{},
	}
	for _, s := range a.cfg.Sources {
		cs := control.Source{Name: s.Name, Type: s.Type}
		if rs := a.sources[s.Name]; rs != nil {
			cs.Running = true
			if sst, ok := rs.src.(statuser); ok {
				for _, ss := range sst.Status() {
					lag := streamLag(ss)
					cs.LagBytes += lag
					cs.Lines += ss.Lines
					cs.Streams = append(cs.Streams, control.Stream{
						Path: ss.Stream, State: ss.State, Mode: ss.Mode, Offset: ss.Offset, Size: ss.Size,
						LagBytes: lag, LastRead: timePtr(ss.LastRead), Lines: ss.Lines, Rotations: ss.Rotations,
						Truncations: ss.Truncations, Errors: ss.Errors, LastError: ss.LastError,
					})
				}
			}
		}
		st.Sources = append(st.Sources, cs)
	}
	for _, e := range a.enforcers {
		ce := control.Enforcer{Name: e.Name()}
		if h := a.health[e.Name()]; h != nil {
			ce.Healthy, ce.Errors, ce.LastError = h.healthy, h.errors, h.lastError
			ce.LastErrorAt, ce.LastApplied = timePtr(h.lastErrorAt), timePtr(h.lastApplied)
		}
		st.Enforcers = append(st.Enforcers, ce)
	}
	if a.fleet != nil {
		fs := a.fleet.Stats()
		st.Fleet = &control.Fleet{Host: fs.Host, Redis: fs.Addr, Up: fs.Up, DownSince: timePtr(fs.DownSince),
			LastError: fs.LastError, SharedEvents: fs.SharedEvents, LocalEvents: fs.LocalEvents,
			Outbox: fs.Outbox, Received: fs.Received, Errors: fs.Errors, Resyncs: fs.Resyncs}
	}
	return st
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func entryOf(d rules.Decision, evidence bool) control.Entry {
	e := control.Entry{Type: d.Action.String(), Login: d.Login, Since: d.At, Until: timePtr(d.Until), Reason: d.Reason}
	if d.Prefix.IsValid() {
		e.Network = d.Prefix.String()
	}
	if evidence {
		e.Evidence = slices.Clone(d.Evidence)
	}
	return e
}

func (b controlBackend) List(ctx context.Context, what string, f control.Filter) ([]control.Entry, error) {
	var out []control.Entry
	active := b.a.engine.Active() // the engine is safe for concurrent use
	reason := strings.ToLower(f.Reason)
	for _, d := range active {
		switch what {
		case "bans":
			if (d.Action != rules.Ban && d.Action != rules.Block) || (f.Type != "" && d.Action.String() != f.Type) {
				continue
			}
			if f.Network.IsValid() && !d.Prefix.Overlaps(f.Network) {
				continue
			}
		case "locks":
			if d.Action != rules.Lock || !strings.Contains(d.Login, strings.ToLower(f.Login)) {
				continue
			}
		}
		if (f.Permanent && !d.Until.IsZero()) || !strings.Contains(strings.ToLower(d.Reason), reason) {
			continue
		}
		out = append(out, entryOf(d, false))
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	return out, ctx.Err()
}

// everything reports whether p is a whole address family.
func everything(p netip.Prefix) bool { return p.Bits() == 0 }

// allowedParts checks p against the allowlist for a ban or block: it
// returns the parts of p to refuse (p itself when it overlaps nothing
// allowlisted; with force, the pieces of p around the allowlisted
// networks), or an error that says what stands in the way.
func (a *Agent) allowedParts(verb string, p netip.Prefix, force bool) ([]netip.Prefix, error) {
	if everything(p) && !force {
		return nil, control.Refusedf("%s %s: that is every %s address; add --force if you mean it",
			verb, p, family(p))
	}
	var inside []netip.Prefix
	for _, q := range a.allow {
		if !q.Overlaps(p) {
			continue
		}
		if q.Bits() <= p.Bits() {
			return nil, control.Refusedf("%s %s: it is allowlisted (%s), and allowlisted addresses are never refused; "+
				"take it out of the allowlist first (allowlist in %s; loopback and the host's own addresses are allowlisted by default)",
				verb, p, q, a.cfgFile)
		}
		inside = append(inside, q)
	}
	if len(inside) == 0 {
		return []netip.Prefix{p}, nil
	}
	parts := subtract(p, inside)
	if !force {
		return nil, control.Refusedf("%s %s: it contains allowlisted %s, which stay allowed whatever you do; "+
			"add --force to %s the rest of it (%s)",
			verb, p, joinPrefixes(inside, 3), verb, networks(len(parts)))
	}
	return parts, nil
}

func networks(n int) string {
	if n == 1 {
		return "1 network"
	}
	return fmt.Sprintf("%d networks", n)
}

func family(p netip.Prefix) string {
	if p.Addr().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

func joinPrefixes(ps []netip.Prefix, limit int) string {
	var s []string
	for i, p := range ps {
		if i == limit {
			s = append(s, fmt.Sprintf("and %d more", len(ps)-limit))
			break
		}
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}

// subtract returns the largest networks that together cover p without
// overlapping any of holes, each of which lies inside p: p is halved
// until each half is either clear of holes (kept) or inside one (dropped).
// The result has at most 128 networks per hole.
func subtract(p netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	var walk func(q netip.Prefix)
	walk = func(q netip.Prefix) {
		overlaps := false
		for _, h := range holes {
			if h.Overlaps(q) {
				if h.Bits() <= q.Bits() {
					return // q lies inside a hole
				}
				overlaps = true
			}
		}
		if !overlaps {
			out = append(out, q)
			return
		}
		lo := netip.PrefixFrom(q.Addr(), q.Bits()+1)
		walk(lo)
		walk(netip.PrefixFrom(nextPrefix(lo), q.Bits()+1))
	}
	walk(p)
	return out
}

// nextPrefix is the first address after the network p.
func nextPrefix(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bit := p.Bits() - 1 // the last bit of the network part
	b[bit/8] |= 0x80 >> (bit % 8)
	a, _ := netip.AddrFromSlice(b)
	return a
}

func (b controlBackend) Ban(ctx context.Context, o control.Order) (control.Result, error) {
	return inLoop(ctx, b.a, func(ctx context.Context) (control.Result, error) { return b.a.ban(ctx, o) })
}

func (a *Agent) ban(ctx context.Context, o control.Order) (control.Result, error) {
	parts, err := a.allowedParts("ban", o.Network, o.Force)
	if err != nil {
		return control.Result{}, err
	}
	length := o.For
	switch {
	case o.Permanent:
		length = 0
	case length == 0:
		length = time.Duration(a.cfg.Rules.Ban.For)
	}
	res, err := a.decideEach(ctx, parts, func(p netip.Prefix) (rules.Decision, error) {
		return a.engine.BanManual(p, length, o.Reason)
	})
	if err != nil {
		return res, err
	}
	how := "permanently"
	if length > 0 {
		how = fmt.Sprintf("for %s (until %s)", rules.FormatDuration(length), res.Entries[0].Until.Local().Format(time.DateTime))
	}
	res.Message = fmt.Sprintf("banned %s %s", o.Network, how)
	if len(parts) > 1 || parts[0] != o.Network {
		res.Message = fmt.Sprintf("banned %s except its allowlisted addresses, as %s, %s", o.Network, networks(len(parts)), how)
	}
	return res, nil
}

// decideEach makes one manual decision for each network of parts, then
// enforces and saves them. A refusal stops it there; what was decided
// before it stays, enforced and saved too.
func (a *Agent) decideEach(ctx context.Context, parts []netip.Prefix, decide func(netip.Prefix) (rules.Decision, error)) (control.Result, error) {
	var res control.Result
	defer a.commit(ctx)
	for _, p := range parts {
		d, err := decide(p)
		if err != nil {
			return res, control.Refusedf("%v", err)
		}
		a.decided = append(a.decided, d)
		res.Entries = append(res.Entries, entryOf(d, false))
	}
	return res, nil
}

// commit enforces what a command decided and saves it at once: an
// operator's ban or block must survive a crash a moment later.
func (a *Agent) commit(ctx context.Context) {
	a.enforce(ctx)
	a.checkpoint()
	a.updateGauges()
}

func (b controlBackend) Block(ctx context.Context, o control.Order) (control.Result, error) {
	return inLoop(ctx, b.a, func(ctx context.Context) (control.Result, error) { return b.a.block(ctx, o) })
}

func (a *Agent) block(ctx context.Context, o control.Order) (control.Result, error) {
	parts, err := a.allowedParts("block", o.Network, o.Force)
	if err != nil {
		return control.Result{}, err
	}
	res, err := a.decideEach(ctx, parts, func(p netip.Prefix) (rules.Decision, error) {
		return a.engine.BlockManual(p, o.Reason)
	})
	if err != nil {
		return res, err
	}
	res.Message = fmt.Sprintf("blocked %s until unblocked (saved; mailban unblock %s lifts it)", o.Network, o.Network)
	if len(parts) > 1 || parts[0] != o.Network {
		res.Message = fmt.Sprintf("blocked %s except its allowlisted addresses, as %s, until unblocked", o.Network, networks(len(parts)))
	}
	return res, nil
}

func (b controlBackend) Unban(ctx context.Context, o control.Order) (control.Result, error) {
	return inLoop(ctx, b.a, func(ctx context.Context) (control.Result, error) { return b.a.unban(ctx, o) })
}

func (a *Agent) unban(ctx context.Context, o control.Order) (control.Result, error) {
	p := o.Network
	targets := []netip.Prefix{p}
	if o.Inside {
		targets = nil
		for _, d := range a.engine.Active() {
			if d.Action == rules.Ban && within(d.Prefix, p) {
				targets = append(targets, d.Prefix)
			}
		}
	}
	var res control.Result
	for _, t := range targets {
		if d, ok := a.engine.Unban(t); ok {
			a.decided = append(a.decided, d)
			res.Entries = append(res.Entries, control.Entry{Type: "ban", Network: t.String(), Reason: d.Reason, Since: d.At})
		}
	}
	if len(res.Entries) == 0 {
		return res, control.NotFoundf("%s is not banned%s", p, a.whyNot(p, rules.Ban, o.Inside))
	}
	a.commit(ctx)
	res.Message = fmt.Sprintf("unbanned %s", p)
	if o.Inside {
		res.Message = fmt.Sprintf("unbanned %d inside %s", len(res.Entries), p)
	}
	return res, nil
}

// within reports whether q lies inside p.
func within(q, p netip.Prefix) bool {
	return q.Bits() >= p.Bits() && p.Contains(q.Addr())
}

var pastTense = map[rules.Action]string{rules.Ban: "banned", rules.Block: "blocked"}

// whyNot says what does hold p, when an unban or unblock found nothing
// held on exactly p: a larger ban or block around it, smaller ones inside
// it, or the other kind of refusal.
func (a *Agent) whyNot(p netip.Prefix, want rules.Action, inside bool) string {
	verb := "unban"
	if want == rules.Block {
		verb = "unblock"
	}
	var around, in, other []string
	for _, d := range a.engine.Active() {
		if !d.Prefix.IsValid() || !d.Prefix.Overlaps(p) {
			continue
		}
		switch {
		case d.Action != want:
			other = append(other, pastTense[d.Action]+" as "+d.Prefix.String())
		case within(p, d.Prefix):
			around = append(around, d.Prefix.String())
		default:
			in = append(in, d.Prefix.String())
		}
	}
	var hints []string
	if len(around) > 0 {
		hints = append(hints, fmt.Sprintf("it lies inside %s (mailban %s %s)", strings.Join(around, ", "), verb, around[0]))
	}
	if len(in) > 0 && !inside {
		hints = append(hints, fmt.Sprintf("%d inside it (%s; add --inside to lift them all)", len(in), strings.Join(in[:min(3, len(in))], ", ")))
	}
	if len(other) > 0 {
		hints = append(hints, "it is "+strings.Join(other, ", "))
	}
	if len(hints) == 0 {
		if inside {
			return " (nor is anything inside it)"
		}
		return ""
	}
	return "; " + strings.Join(hints, "; ")
}

func (b controlBackend) Unblock(ctx context.Context, o control.Order) (control.Result, error) {
	return inLoop(ctx, b.a, func(ctx context.Context) (control.Result, error) { return b.a.unblock(ctx, o) })
}

func (a *Agent) unblock(ctx context.Context, o control.Order) (control.Result, error) {
	static := map[netip.Prefix]bool{}
	for _, n := range a.cfg.BlockedNetworks {
		static[netip.Prefix(n)] = true
	}
	targets := []netip.Prefix{o.Network}
	if o.Inside {
		targets = nil
		for _, d := range a.engine.Active() {
			if d.Action == rules.Block && within(d.Prefix, o.Network) {
				targets = append(targets, d.Prefix)
			}
		}
	}
	var res control.Result
	var kept []string
	for _, t := range targets {
		if static[t] {
			// The rules lift the manual half of a block that configuration
			// also holds, and report nothing to enforce.
			if manual := a.manuallyBlocked(t); manual {
				a.engine.UnblockManual(t)
				res.Entries = append(res.Entries, control.Entry{Type: "block", Network: t.String(), Reason: "manual unblock"})
			}
			kept = append(kept, t.String())
			continue
		}
		if d, ok := a.engine.UnblockManual(t); ok {
			a.decided = append(a.decided, d)
			res.Entries = append(res.Entries, control.Entry{Type: "block", Network: t.String(), Reason: d.Reason, Since: d.At})
		}
	}
	a.commit(ctx)
	switch {
	case len(kept) > 0 && len(res.Entries) == 0:
		return res, control.Refusedf("%s stays blocked: it is listed in blocked-networks of %s; remove it there, then run mailban reload",
			strings.Join(kept, ", "), a.cfgFile)
	case len(res.Entries) == 0:
		return res, control.NotFoundf("%s is not blocked%s", o.Network, a.whyNot(o.Network, rules.Block, o.Inside))
	case len(kept) > 0:
		res.Message = fmt.Sprintf("lifted the manual block on %s; %s stays blocked, being listed in blocked-networks of %s",
			o.Network, strings.Join(kept, ", "), a.cfgFile)
	case o.Inside:
		res.Message = fmt.Sprintf("unblocked %d inside %s", len(res.Entries), o.Network)
	default:
		res.Message = fmt.Sprintf("unblocked %s", o.Network)
	}
	return res, nil
}

// manuallyBlocked reports whether an operator blocked exactly p. The rules
// give a manual block's decision a reason that starts with "manual".
func (a *Agent) manuallyBlocked(p netip.Prefix) bool {
	for _, d := range a.engine.Active() {
		if d.Action == rules.Block && d.Prefix == p {
			return strings.HasPrefix(d.Reason, "manual ")
		}
	}
	return false
}

func (b controlBackend) Unlock(ctx context.Context, o control.Order) (control.Result, error) {
	return inLoop(ctx, b.a, func(ctx context.Context) (control.Result, error) {
		login := parsers.NormalizeLogin(o.Login)
		d, ok := b.a.engine.Unlock(login)
		if !ok {
			return control.Result{}, control.NotFoundf("login %q is not locked (mailban locks lists the locked ones)", login)
		}
		b.a.decided = append(b.a.decided, d)
		b.a.commit(ctx)
		return control.Result{Message: fmt.Sprintf("unlocked %s", login),
			Entries: []control.Entry{{Type: "lock", Login: login, Since: d.At, Reason: d.Reason}}}, nil
	})
}

func (b controlBackend) Why(ctx context.Context, subject string) (control.Why, error) {
	return inLoop(ctx, b.a, func(context.Context) (control.Why, error) { return b.a.why(subject), nil })
}

// why explains subject (an address, a network or a login): what refuses
// it now, with the rule and the evidence lines, or that nothing does.
func (a *Agent) why(subject string) control.Why {
	w := control.Why{Subject: subject}
	active := a.engine.Active()
	if addr, err := netip.ParseAddr(subject); err == nil && addr.Zone() == "" {
		addr = addr.Unmap()
		w.Kind, w.Subject = "address", addr.String()
		for _, q := range a.allow {
			if q.Contains(addr) {
				w.Allowlisted = append(w.Allowlisted, q.String())
			}
		}
		for _, d := range active {
			if d.Prefix.IsValid() && d.Prefix.Contains(addr) {
				w.Entries = append(w.Entries, entryOf(d, true))
			}
		}
		v := a.engine.Check(addr, "")
		w.Refused = !v.Allow
		switch {
		case len(w.Allowlisted) > 0:
			w.Verdict = "allowed: allowlisted, never counted or refused"
		case v.Allow:
			w.Verdict = "allowed: not banned or blocked"
		default:
			w.Verdict = "refused: " + v.Reason
		}
		return w
	}
	if strings.Contains(subject, "/") {
		if p, err := config.ParseNetwork(subject); err == nil {
			w.Kind, w.Subject = "network", p.String()
			for _, q := range a.allow {
				if q.Overlaps(p) {
					w.Allowlisted = append(w.Allowlisted, q.String())
				}
			}
			for _, d := range active {
				if d.Prefix.IsValid() && d.Prefix.Overlaps(p) {
					w.Entries = append(w.Entries, entryOf(d, true))
					if within(p, d.Prefix) {
						w.Refused = true
					}
				}
			}
			switch {
			case w.Refused:
				w.Verdict = "refused: all of it lies inside a ban or block"
			case len(w.Entries) > 0:
				w.Verdict = fmt.Sprintf("partly refused: %d bans or blocks lie inside it", len(w.Entries))
			default:
				w.Verdict = "allowed: nothing in it is banned or blocked"
			}
			return w
		}
	}
	login := parsers.NormalizeLogin(subject)
	w.Kind, w.Subject = "login", login
	for _, d := range active {
		if d.Action == rules.Lock && d.Login == login {
			w.Entries = append(w.Entries, entryOf(d, true))
		}
	}
	if v := a.engine.Check(netip.Addr{}, login); !v.Allow {
		w.Refused = true
		w.Verdict = "refused: " + v.Reason + " (addresses that logged in as it recently are let through)"
	} else {
		w.Verdict = "allowed: not locked"
	}
	return w
}

func (b controlBackend) Reload(ctx context.Context) (control.Result, error) {
	reload := b.a.opt.Reload
	if reload == nil {
		reload = func(ctx context.Context) error {
			_, err := b.a.ReloadFile(ctx, b.a.cfgFile)
			return err
		}
	}
	if err := reload(ctx); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return control.Result{}, err
		}
		return control.Result{}, fmt.Errorf("configuration not reloaded; the running one stays in force: %w", err)
	}
	return control.Result{Message: "reloaded " + b.a.cfgFile}, nil
}
