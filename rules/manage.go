package rules

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// ErrAllowlisted is returned (wrapped) when an operator asks to ban or
// block a network that overlaps the allowlist.
var ErrAllowlisted = errors.New("overlaps the allowlist")

// MaxManualReason bounds an operator's reason for a ban or block, in bytes:
// a saved ban whose reason is longer than the state's decoder accepts
// (maxReasonLen) would make the state file unreadable.
const MaxManualReason = 1024

// BanManual bans p from now for d (forever when d is 0). It refuses a
// network that overlaps the allowlist. A ban already held on p is replaced.
// Manual bans are not offences: they do not make later bans grow.
func (e *Engine) BanManual(p netip.Prefix, d time.Duration, reason string) (Decision, error) {
	dec, err := e.banManual(p, d, reason)
	if err == nil {
		e.announce(dec)
	}
	return dec, err
}

func (e *Engine) banManual(p netip.Prefix, d time.Duration, reason string) (Decision, error) {
	p, err := canonicalPrefix(p)
	if err != nil {
		return Decision{}, fmt.Errorf("ban: %w", err)
	}
	if d < 0 {
		return Decision{}, fmt.Errorf("ban %s: negative duration %s", p, d)
	}
	if len(reason) > MaxManualReason {
		return Decision{}, fmt.Errorf("ban %s: the reason is %d bytes, at most %d", p, len(reason), MaxManualReason)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if q, ok := e.allow.overlapping(p); ok {
		return Decision{}, fmt.Errorf("ban %s: %w (%s)", p, ErrAllowlisted, q)
	}
	now := e.clock.Now().UnixNano()
	h := &hold{at: now, reason: manualReason("ban", reason), manual: true}
	if d > 0 {
		h.until = now + int64(min(d, time.Duration(maxBan)))
	}
	e.bans.set(p, h)
	e.touchBan(p)
	return banDecision(p, h), nil
}

func manualReason(what, reason string) string {
	if reason == "" {
		return "manual " + what
	}
	return "manual " + what + ": " + reason
}

// Unban lifts the ban held on exactly p and forgets the offences of the
// address p stands for (an operator's unban is a pardon). It reports false
// when no ban is held on p.
func (e *Engine) Unban(p netip.Prefix) (Decision, bool) {
	d, ok := e.unban(p)
	if ok {
		e.announce(d)
	}
	return d, ok
}

func (e *Engine) unban(p netip.Prefix) (Decision, bool) {
	p, err := canonicalPrefix(p)
	if err != nil {
		return Decision{}, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.bans.get(p); !ok {
		return Decision{}, false
	}
	e.bans.delete(p)
	e.touchBan(p)
	if key, ok := prefixKey(p, e.cfg.IPv6Prefix); ok {
		if _, ok := e.offenders[key]; ok {
			delete(e.offenders, key)
			e.touchOffender(key)
		}
	}
	return Decision{Action: Unban, Prefix: p, At: unixTime(e.clock.Now().UnixNano()), Reason: "manual unban"}, true
}

// BlockManual blocks p with no expiry. It refuses a network that overlaps
// the allowlist. Blocking p again replaces the reason.
func (e *Engine) BlockManual(p netip.Prefix, reason string) (Decision, error) {
	d, err := e.blockManual(p, reason)
	if err == nil {
		e.announce(d)
	}
	return d, err
}

func (e *Engine) blockManual(p netip.Prefix, reason string) (Decision, error) {
	p, err := canonicalPrefix(p)
	if err != nil {
		return Decision{}, fmt.Errorf("block: %w", err)
	}
	if len(reason) > MaxManualReason {
		return Decision{}, fmt.Errorf("block %s: the reason is %d bytes, at most %d", p, len(reason), MaxManualReason)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if q, ok := e.allow.overlapping(p); ok {
		return Decision{}, fmt.Errorf("block %s: %w (%s)", p, ErrAllowlisted, q)
	}
	b, ok := e.blocks.get(p)
	if !ok {
		b = &block{}
		e.blocks.set(p, b)
	}
	b.manual, b.manualAt, b.manualReason = true, e.clock.Now().UnixNano(), manualReason("block", reason)
	e.touchBlock(p)
	return b.decision(p), nil
}

// UnblockManual lifts the manual block on exactly p. It reports false when
// there is none, and also when p stays blocked by configuration (lift that
// by changing Config.Blocked).
func (e *Engine) UnblockManual(p netip.Prefix) (Decision, bool) {
	d, ok := e.unblockManual(p)
	if ok {
		e.announce(d)
	}
	return d, ok
}

func (e *Engine) unblockManual(p netip.Prefix) (Decision, bool) {
	p, err := canonicalPrefix(p)
	if err != nil {
		return Decision{}, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	b, ok := e.blocks.get(p)
	if !ok || !b.manual {
		return Decision{}, false
	}
	b.manual, b.manualAt, b.manualReason = false, 0, ""
	e.touchBlock(p)
	if b.static {
		return Decision{}, false
	}
	e.blocks.delete(p)
	return Decision{Action: Unblock, Prefix: p, At: unixTime(e.clock.Now().UnixNano()), Reason: "manual unblock"}, true
}

// Unlock lifts the lock on login (normalised here). It reports false when
// the login is not locked.
func (e *Engine) Unlock(login string) (Decision, bool) {
	d, ok := e.unlock(login)
	if ok {
		e.announce(d)
	}
	return d, ok
}

func (e *Engine) unlock(login string) (Decision, bool) {
	login = normalizeLogin(login)
	e.mu.Lock()
	defer e.mu.Unlock()
	if ls := e.logins[login]; ls != nil && ls.lockedUntil != 0 {
		ls.lockedUntil = 0
		e.touchLogin(login, dirtyWindow)
	}
	if _, ok := e.locks[login]; !ok {
		return Decision{}, false
	}
	delete(e.locks, login)
	e.touchLogin(login, dirtyLock)
	return Decision{Action: Unlock, Login: login, At: unixTime(e.clock.Now().UnixNano()), Reason: "manual unlock"}, true
}

// Active lists every ban, block and lock in force now, sorted by action,
// then network or login: what an enforcer should hold after a restart. The
// Evidence slices are shared: do not modify them.
func (e *Engine) Active() []Decision {
	e.mu.RLock()
	defer e.mu.RUnlock()
	now := e.clock.Now().UnixNano()
	var out []Decision
	for p, h := range e.bans.all() {
		if h.until == 0 || now < h.until {
			out = append(out, banDecision(p, h))
		}
	}
	for p, b := range e.blocks.all() {
		out = append(out, b.decision(p))
	}
	for login, h := range e.locks {
		if now < h.until {
			out = append(out, lockDecision(login, h))
		}
	}
	sortDecisions(out)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

func sortDecisions(ds []Decision) {
	slices.SortFunc(ds, func(a, b Decision) int {
		if c := cmp.Compare(a.Action, b.Action); c != 0 {
			return c
		}
		if c := comparePrefix(a.Prefix, b.Prefix); c != 0 {
			return c
		}
		return cmp.Compare(a.Login, b.Login)
	})
}

// Expire lifts, at clock.Now(), the bans and locks that have run out
// (returning Unban and Unlock decisions, sorted) and forgets windows,
// successes and offences that can no longer matter. It visits every key:
// call it every few seconds to a minute, not per event.
func (e *Engine) Expire() []Decision {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now().UnixNano()
	var out []Decision
	for p, h := range e.bans.all() {
		if h.until != 0 && h.until <= now {
			e.bans.delete(p)
			e.touchBan(p)
			out = append(out, Decision{Action: Unban, Prefix: p, At: unixTime(h.until), Reason: "ban expired"})
		}
	}
	for login, h := range e.locks {
		if h.until <= now {
			delete(e.locks, login)
			e.touchLogin(login, dirtyLock)
			out = append(out, Decision{Action: Unlock, Login: login, At: unixTime(h.until), Reason: "lock expired"})
		}
	}

	addrPeriod := int64(e.cfg.IP.Period)
	for k, w := range e.addrs {
		if !e.cfg.IP.Enabled() {
			e.dropAddr(k, w)
			continue
		}
		n := w.count(&e.slab)
		w.trim(&e.slab, now, addrPeriod)
		switch c := w.count(&e.slab); {
		case c == 0:
			e.dropAddr(k, w)
		case c != n:
			w.compact(&e.slab)
			e.markAddr(k, &w)
			e.addrs[k] = w
		}
	}

	memory := int64(e.cfg.OffenderMemory)
	for k, ends := range e.offenders {
		kept := pruneEnds(ends, now, memory)
		switch {
		case len(kept) == 0:
			delete(e.offenders, k)
			e.touchOffender(k)
		case len(kept) != len(ends):
			e.offenders[k] = slices.Clone(kept) // let the dropped prefix go
			e.touchOffender(k)
		}
	}

	loginPeriod := int64(e.cfg.Login.Period)
	successMemory := int64(e.cfg.SuccessMemory)
	for login, ls := range e.logins {
		changed := false
		if n := ls.win.count(&e.slab); n > 0 {
			if e.cfg.Login.Enabled() {
				ls.win.trim(&e.slab, now, loginPeriod)
				ls.win.compact(&e.slab)
			} else {
				ls.win.release(&e.slab)
			}
			changed = ls.win.count(&e.slab) != n
		}
		if ls.lockedUntil != 0 && ls.lockedUntil <= now {
			ls.lockedUntil = 0
			changed = true
		}
		kept := ls.successes[:0]
		for _, s := range ls.successes {
			if now-s.t < successMemory {
				kept = append(kept, s)
			}
		}
		if len(kept) != len(ls.successes) {
			clear(ls.successes[len(kept):])
			ls.successes = kept
			changed = true
		}
		if len(ls.successes) == 0 {
			ls.successes = nil
		}
		switch {
		case ls.empty():
			ls.win.release(&e.slab)
			delete(e.logins, login)
			e.touchLogin(login, dirtyWindow)
		case changed:
			e.touchLogin(login, dirtyWindow)
		}
	}
	if e.store != nil {
		e.pruneHeads(now)
	}
	sortDecisions(out)
	return out
}

// Reconfigure switches to cfg, keeping counters, offences, bans and locks.
// It returns Block and Unblock decisions for the change in cfg.Blocked
// (manual blocks are untouched) and an Unban for every ban that now
// overlaps the allowlist, whose counters and offences are forgotten too.
// Windows keyed under an old IPv6Prefix are kept and age out.
func (e *Engine) Reconfigure(cfg Config) ([]Decision, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.store != nil {
		if err := e.store.Configure(cfg); err != nil {
			return nil, fmt.Errorf("reconfigure store: %w", err)
		}
	}
	now := e.clock.Now().UnixNano()
	var out []Decision

	if !slices.Equal(cfg.Allow, e.cfg.Allow) {
		allow := newAllowList(cfg.Allow)
		for p := range e.bans.all() {
			if q, ok := allow.overlapping(p); ok {
				e.bans.delete(p)
				e.touchBan(p)
				out = append(out, Decision{Action: Unban, Prefix: p, At: unixTime(now), Reason: fmt.Sprintf("allowlisted (%s)", q)})
			}
		}
		for k, w := range e.addrs {
			if _, ok := allow.overlapping(keyPrefix(k, e.cfg.IPv6Prefix)); ok {
				e.dropAddr(k, w)
			}
		}
		for k := range e.offenders {
			if _, ok := allow.overlapping(keyPrefix(k, e.cfg.IPv6Prefix)); ok {
				delete(e.offenders, k)
				e.touchOffender(k)
			}
		}
		e.allow = allow
	}

	static := make(map[netip.Prefix]bool, len(cfg.Blocked))
	for _, p := range cfg.Blocked {
		static[p] = true
	}
	for p, b := range e.blocks.all() {
		if b.static && !static[p] {
			b.static = false
			if !b.manual {
				e.blocks.delete(p)
				out = append(out, Decision{Action: Unblock, Prefix: p, At: unixTime(now), Reason: "removed from configuration"})
			}
		}
	}
	for _, p := range cfg.Blocked {
		b, ok := e.blocks.get(p)
		switch {
		case !ok:
			b = &block{static: true, staticAt: now}
			e.blocks.set(p, b)
			out = append(out, b.decision(p))
		case !b.static:
			b.static, b.staticAt = true, now // already blocked by hand: nothing to enforce
		}
	}

	if cfg.EvidenceRing != e.cfg.EvidenceRing {
		// Sequence numbers go on from where they were, so the keys' links
		// into the old ring find nothing rather than the wrong lines.
		next := e.evidence.next
		e.evidence = newEvidenceRing(cfg.EvidenceRing)
		e.evidence.next = next
	}
	e.cfg = cfg
	sortDecisions(out)
	return out, nil
}
