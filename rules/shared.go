package rules

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mailban/mailban/parsers"
)

// UseStore makes the engine tally failures and successes in s (see Store)
// instead of its own maps. Call it before the first Observe. The engine
// keeps its bans, locks, blocks, evidence and the successes it saw itself;
// its own windows count only while the store fails.
func (e *Engine) UseStore(s Store) error {
	if s == nil {
		return errors.New("use store: nil store")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := s.Configure(e.cfg); err != nil {
		return err
	}
	e.store = s
	e.heads = make(map[groupKey]uint64)
	e.loginHeads = make(map[string]uint64)
	return nil
}

// ObserveBatch observes evs in order, as Observe does each, and appends
// the decisions to dst. With a Store, the batch is tallied there in one
// call; when that fails, the engine counts the batch itself, hands the
// decisions it made to Store.Publish, and returns the store's error beside
// them. Without a Store the error is always nil.
func (e *Engine) ObserveBatch(evs []*parsers.Event, dst []Decision) ([]Decision, error) {
	if e.store == nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		now := e.clock.Now().UnixNano()
		for _, ev := range evs {
			dst = append(dst, e.observeLocked(ev, now)...)
		}
		return dst, nil
	}
	e.sharedMu.Lock()
	defer e.sharedMu.Unlock()

	e.mu.Lock()
	now := e.clock.Now().UnixNano()
	ops, opOf := e.ops[:0], e.opOf[:0]
	for _, ev := range evs {
		op, ok := e.prepare(ev, now)
		if !ok {
			opOf = append(opOf, -1)
			continue
		}
		opOf = append(opOf, int32(len(ops)))
		ops = append(ops, op)
	}
	e.ops, e.opOf = ops, opOf
	e.mu.Unlock()

	// Hook checks go on while the store answers.
	var err error
	outs := e.outcomes[:0]
	if len(ops) > 0 {
		outs, err = e.store.Tally(ops, outs)
		if err == nil && len(outs) != len(ops) {
			err = errors.New("store returned the wrong number of outcomes")
		}
	}
	e.outcomes = outs

	e.mu.Lock()
	if err != nil {
		start := len(dst)
		for _, ev := range evs {
			dst = append(dst, e.observeLocked(ev, now)...)
		}
		e.mu.Unlock()
		// Outside e.mu: the store takes its own lock, and may call the
		// engine while holding it.
		if mine := dst[start:]; len(mine) > 0 {
			as := make([]Announcement, len(mine))
			for i, d := range mine {
				as[i] = Announcement{Decision: d, Offence: d.Action == Ban}
			}
			e.store.Publish(as)
		}
		return dst, err
	}
	start := len(dst)
	for i, ev := range evs {
		if j := opOf[i]; j >= 0 && ops[j].Kind == OpFailure {
			dst = e.settle(ev, &ops[j], &outs[j], now, dst)
		}
	}
	e.mu.Unlock()
	e.publishEvidence(dst[start:])
	return dst, nil
}

// publishEvidence hands the store the evidence of the bans and locks its
// Tally made: the store's outcomes carry none, so without it the other
// engines would see the reason without the lines. Call it without e.mu:
// the store takes its own lock.
func (e *Engine) publishEvidence(ds []Decision) {
	var as []Announcement
	for _, d := range ds {
		if (d.Action == Ban || d.Action == Lock) && len(d.Evidence) > 0 {
			as = append(as, Announcement{Decision: d, EvidenceOnly: true})
		}
	}
	if len(as) > 0 {
		e.store.Publish(as)
	}
}

// observeLocked is Observe's body, for a caller holding e.mu.
func (e *Engine) observeLocked(ev *parsers.Event, now int64) []Decision {
	if ev == nil || (ev.Kind != parsers.AuthFailure && ev.Kind != parsers.AuthSuccess) {
		return nil
	}
	t := eventTime(ev.Time, now)
	addr := ev.Addr.Unmap().WithZone("")
	if addr.IsValid() && e.allow.contains(addr) {
		return nil
	}
	if ev.Kind == parsers.AuthSuccess {
		e.success(ev.Login, addr, t)
		return nil
	}
	return e.failure(ev, addr, t, now)
}

// prepare turns an event into the Op a store tallies. A success is also
// remembered here, for Check's exemptions.
func (e *Engine) prepare(ev *parsers.Event, now int64) (Op, bool) {
	if ev == nil || (ev.Kind != parsers.AuthFailure && ev.Kind != parsers.AuthSuccess) {
		return Op{}, false
	}
	t := eventTime(ev.Time, now)
	addr := ev.Addr.Unmap().WithZone("")
	if addr.IsValid() && e.allow.contains(addr) {
		return Op{}, false
	}
	op := Op{Time: t, Now: now, Attempts: max(ev.Attempts, 1)}
	var key groupKey
	if addr.IsValid() {
		key, op.Group = group(addr, e.cfg.IPv6Prefix)
	}
	if ev.Kind == parsers.AuthSuccess {
		e.success(ev.Login, addr, t)
		if ev.Login == "" || !addr.IsValid() || !e.cfg.Login.Enabled() || e.cfg.SuccessMemory <= 0 {
			return Op{}, false
		}
		op.Kind, op.Login = OpSuccess, ev.Login
		return op, true
	}
	op.Kind = OpFailure
	if e.cfg.Login.Enabled() {
		op.Login = ev.Login
	}
	if addr.IsValid() {
		op.Refused = e.refused(addr, key, t)
	}
	if op.Login == "" && (!addr.IsValid() || op.Refused || !e.cfg.IP.Enabled()) {
		return Op{}, false // nothing to count
	}
	return op, true
}

// settle turns a store's outcome for one failure into decisions, as
// failure does for the engine's own windows: the evidence is kept and
// linked the same way, and the reasons are the same.
func (e *Engine) settle(ev *parsers.Event, op *Op, o *Outcome, now int64, dst []Decision) []Decision {
	var key groupKey
	if op.Group.IsValid() {
		key = op.Group.Addr().As16()
	}
	countAddr, countLogin := o.AddrCounted, o.LoginCounted
	if ev.Evidence != "" && (countAddr || o.LockBan || countLogin) {
		var prevAddr, prevLogin uint64
		if countAddr || o.LockBan {
			prevAddr = e.heads[key]
		}
		if countLogin {
			prevLogin = e.loginHeads[op.Login]
		}
		seq := e.evidence.push(ev.Evidence, op.Time, prevAddr, prevLogin)
		if countAddr || o.LockBan {
			e.heads[key] = seq
		}
		if countLogin {
			e.loginHeads[op.Login] = seq
		}
	}
	if countLogin && o.Locked {
		head := e.loginHeads[op.Login]
		delete(e.loginHeads, op.Login)
		if o.LockUntil > now {
			evidence := e.evidence.lines(head, true, o.LoginRef-int64(e.cfg.Login.Period), e.cfg.EvidenceLines)
			h := &hold{at: op.Time, until: o.LockUntil, reason: LockReason(o.LoginCount, e.cfg.Login), evidence: evidence}
			e.setLock(op.Login, h)
			dst = append(dst, lockDecision(op.Login, h))
		}
	}
	if o.Banned {
		head := e.heads[key]
		delete(e.heads, key)
		permanent := o.BanUntil == 0
		if permanent || o.BanUntil > now {
			var reason string
			after := op.Time - 1
			if o.LockBan {
				reason = LockBanReason(op.Login)
				if e.cfg.IP.Enabled() {
					after = o.AddrRef - int64(e.cfg.IP.Period)
				}
			} else {
				reason = ThresholdBanReason(o.AddrCount, e.cfg.IP)
				after = o.AddrRef - int64(e.cfg.IP.Period)
			}
			length, _ := e.banLength(o.BanPrev)
			reason += OffenceSuffix(o.BanPrev, length, permanent)
			evidence := e.evidence.lines(head, false, after, e.cfg.EvidenceLines)
			h := &hold{at: op.Time, until: o.BanUntil, reason: reason, evidence: evidence}
			e.bans.set(op.Group, h)
			e.touchBan(op.Group)
			dst = append(dst, banDecision(op.Group, h))
		}
	}
	return dst
}

// setLock holds a lock on login and marks the login locked in the
// engine's own state too, for the time the store may fail.
func (e *Engine) setLock(login string, h *hold) {
	ls := e.logins[login]
	if ls == nil {
		login = strings.Clone(login) // an Event's Login may share the memory of its whole line
		ls = &loginState{}
		e.logins[login] = ls
	}
	e.locks[login] = h
	ls.lockedUntil = max(ls.lockedUntil, h.until)
	e.touchLogin(login, dirtyLock|dirtyWindow)
}

// announce hands a decision of the operator's to the store, if any.
func (e *Engine) announce(d Decision) {
	if e.store != nil {
		e.store.Publish([]Announcement{{Decision: d}})
	}
}

// ApplyShared takes in a decision that another engine made (or that a
// store holds) and reports whether it changed anything here: true means
// enforcers should apply it. Bans of allowlisted networks are refused, and
// a decision already held as it is changes nothing. Like operators' bans,
// another engine's bans do not count as offences here; the store keeps
// those.
func (e *Engine) ApplyShared(d Decision) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	at, until := unixNano(d.At), unixNano(d.Until)
	switch d.Action {
	case Ban, Unban, Block, Unblock:
		p, err := canonicalPrefix(d.Prefix)
		if err != nil {
			return false
		}
		switch d.Action {
		case Ban:
			if _, ok := e.allow.overlapping(p); ok {
				return false
			}
			if h, ok := e.bans.get(p); ok && h.until == until && h.at == at {
				if newEvidence(h, d.Evidence) {
					e.bans.set(p, withEvidence(h, d.Evidence))
					e.touchBan(p)
				}
				return false
			}
			e.bans.set(p, &hold{at: at, until: until, reason: d.Reason, evidence: d.Evidence, manual: isManual(d.Reason)})
			e.touchBan(p)
		case Unban:
			if _, ok := e.bans.get(p); !ok {
				return false
			}
			e.bans.delete(p)
			e.touchBan(p)
			if key, ok := prefixKey(p, e.cfg.IPv6Prefix); ok {
				if _, ok := e.offenders[key]; ok {
					delete(e.offenders, key)
					e.touchOffender(key)
				}
			}
		case Block:
			if _, ok := e.allow.overlapping(p); ok {
				return false
			}
			b, ok := e.blocks.get(p)
			if ok && b.manual && b.manualAt == at && b.manualReason == d.Reason {
				return false
			}
			if !ok {
				b = &block{}
				e.blocks.set(p, b)
			}
			fresh := !b.manual && !b.static
			b.manual, b.manualAt, b.manualReason = true, at, d.Reason
			e.touchBlock(p)
			return fresh || !ok
		case Unblock:
			b, ok := e.blocks.get(p)
			if !ok || !b.manual {
				return false
			}
			b.manual, b.manualAt, b.manualReason = false, 0, ""
			e.touchBlock(p)
			if b.static {
				return false
			}
			e.blocks.delete(p)
		}
		return true
	case Lock:
		login := normalizeLogin(d.Login)
		if login == "" || until == 0 {
			return false
		}
		if h := e.locks[login]; h != nil && h.until == until && h.at == at {
			if newEvidence(h, d.Evidence) {
				e.locks[login] = withEvidence(h, d.Evidence)
				e.touchLogin(login, dirtyLock)
			}
			return false
		}
		e.setLock(login, &hold{at: at, until: until, reason: d.Reason, evidence: d.Evidence})
		return true
	case Unlock:
		_, ok := e.unlock(d.Login)
		return ok
	}
	return false
}

// newEvidence reports whether ev is evidence that h, a decision held
// already, lacks: a store announces the lines of a decision it made after
// the decision itself. Taking them in is no change for enforcers.
func newEvidence(h *hold, ev []string) bool {
	return len(ev) > 0 && !slices.Equal(h.evidence, ev)
}

// withEvidence is h with the evidence ev; h itself stays as it is, for
// the Decisions that share its slices.
func withEvidence(h *hold, ev []string) *hold {
	c := *h
	c.evidence = ev
	return &c
}

func isManual(reason string) bool {
	return len(reason) >= 6 && reason[:6] == "manual"
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Counts is what an engine counted in its own maps for one key while its
// store was failing, for the store to take back.
type Counts struct {
	Group     netip.Prefix // an address group; invalid for a login's counts
	Login     string
	Times     []int64 // failure times in the window, Unix nanoseconds, oldest first
	Successes []Success
}

// Success is a successful login of an address group.
type Success struct {
	Group netip.Prefix
	Time  int64 // Unix nanoseconds
}

// DrainCounts returns the failures counted in the engine's own windows
// (and every success it remembers) and empties those windows: a store
// that is back takes them in, so that failures counted during its absence
// count in the shared windows.
func (e *Engine) DrainCounts() []Counts {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Counts
	for k, w := range e.addrs {
		out = append(out, Counts{Group: keyPrefix(k, e.cfg.IPv6Prefix), Times: w.appendTimes(&e.slab, nil)})
		e.dropAddr(k, w)
	}
	for login, ls := range e.logins {
		c := Counts{Login: login, Times: ls.win.appendTimes(&e.slab, nil)}
		for _, s := range ls.successes {
			c.Successes = append(c.Successes, Success{Group: keyPrefix(s.key, e.cfg.IPv6Prefix), Time: s.t})
		}
		if len(c.Times) > 0 {
			ls.win.release(&e.slab)
			e.touchLogin(login, dirtyWindow)
		}
		if len(c.Times) > 0 || len(c.Successes) > 0 {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Counts) int {
		if c := comparePrefix(a.Group, b.Group); c != 0 {
			return c
		}
		if a.Login < b.Login {
			return -1
		}
		if a.Login > b.Login {
			return 1
		}
		return 0
	})
	return out
}

// pruneHeads forgets evidence heads whose lines have left the ring or
// are older than any window, so that the maps stay as small as the ring.
func (e *Engine) pruneHeads(now int64) {
	period := max(int64(e.cfg.IP.Period), int64(e.cfg.Login.Period))
	keep := func(seq uint64) bool {
		en := e.evidence.get(seq)
		return en != nil && now-en.t < period
	}
	for k, seq := range e.heads {
		if !keep(seq) {
			delete(e.heads, k)
		}
	}
	for l, seq := range e.loginHeads {
		if !keep(seq) {
			delete(e.loginHeads, l)
		}
	}
}

// HandBack gives the store what the engine counted in its own windows
// while the store was failing (see DrainCounts), as failures and
// successes tallied in time order, and returns the decisions that makes.
// When the store fails again the counts go back into the engine's windows.
func (e *Engine) HandBack() ([]Decision, error) {
	if e.store == nil {
		return nil, nil
	}
	e.sharedMu.Lock()
	defer e.sharedMu.Unlock()
	counts := e.DrainCounts()
	if len(counts) == 0 {
		return nil, nil
	}
	e.mu.Lock()
	now := e.clock.Now().UnixNano()
	var ops []Op
	for _, c := range counts {
		for _, t := range c.Times {
			op := Op{Kind: OpFailure, Time: t, Now: now, Attempts: 1}
			if c.Group.IsValid() {
				op.Group = c.Group
				op.Refused = e.refused(c.Group.Addr(), c.Group.Addr().As16(), t)
				if op.Refused {
					continue
				}
			} else {
				op.Login = c.Login
			}
			ops = append(ops, op)
		}
		for _, s := range c.Successes {
			ops = append(ops, Op{Kind: OpSuccess, Group: s.Group, Login: c.Login, Time: s.Time, Now: now, Attempts: 1})
		}
	}
	slices.SortStableFunc(ops, func(a, b Op) int {
		switch {
		case a.Time < b.Time:
			return -1
		case a.Time > b.Time:
			return 1
		}
		return 0
	})
	e.mu.Unlock()

	var outs []Outcome
	var err error
	if len(ops) > 0 {
		outs, err = e.store.Tally(ops, nil)
		if err == nil && len(outs) != len(ops) {
			err = errors.New("store returned the wrong number of outcomes")
		}
	}
	e.mu.Lock()
	if err != nil {
		e.putBack(counts)
		e.mu.Unlock()
		return nil, err
	}
	var out []Decision
	var none parsers.Event
	for i := range ops {
		if ops[i].Kind == OpFailure {
			out = e.settle(&none, &ops[i], &outs[i], now, out)
		}
	}
	e.mu.Unlock()
	e.publishEvidence(out)
	return out, nil
}

// putBack returns drained counts to the engine's windows.
func (e *Engine) putBack(counts []Counts) {
	for _, c := range counts {
		if len(c.Times) == 0 {
			continue
		}
		if c.Group.IsValid() {
			k := c.Group.Addr().As16()
			w := e.addrs[k]
			times := slices.Sorted(slices.Values(append(w.appendTimes(&e.slab, nil), c.Times...)))
			w.setTimes(&e.slab, times)
			e.markAddr(k, &w)
			e.addrs[k] = w
			continue
		}
		ls := e.logins[c.Login]
		if ls == nil {
			ls = &loginState{}
			e.logins[strings.Clone(c.Login)] = ls
		}
		times := slices.Sorted(slices.Values(append(ls.win.appendTimes(&e.slab, nil), c.Times...)))
		ls.win.setTimes(&e.slab, times)
		e.touchLogin(c.Login, dirtyWindow)
	}
}

// Forget takes back what the engine counted in its own windows for ops,
// a burst that its store failed to confirm but, as it turned out, did
// apply: without it those failures would count twice once handed back.
// Failures already gone from the windows (a ban or lock cleared them) are
// skipped.
func (e *Engine) Forget(ops []Op) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, op := range ops {
		if op.Kind != OpFailure {
			continue
		}
		if op.Group.IsValid() {
			k := op.Group.Addr().As16()
			if w, ok := e.addrs[k]; ok {
				times := removeTimes(w.appendTimes(&e.slab, nil), op.Time, op.Attempts)
				if len(times) == 0 {
					e.dropAddr(k, w)
				} else {
					w.setTimes(&e.slab, times)
					e.markAddr(k, &w)
					e.addrs[k] = w
				}
			}
		}
		if op.Login != "" {
			if ls := e.logins[op.Login]; ls != nil && ls.win.last != 0 {
				ls.win.setTimes(&e.slab, removeTimes(ls.win.appendTimes(&e.slab, nil), op.Time, op.Attempts))
				e.touchLogin(op.Login, dirtyWindow)
			}
		}
	}
}

// removeTimes removes up to n occurrences of t from the sorted ts.
func removeTimes(ts []int64, t int64, n int) []int64 {
	out := ts[:0]
	for _, x := range ts {
		if x == t && n > 0 {
			n--
			continue
		}
		out = append(out, x)
	}
	return out
}
