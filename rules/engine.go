package rules

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mailban/mailban/parsers"
)

// maxSuccesses bounds the addresses remembered per login as having logged
// in successfully; the oldest is forgotten first.
const maxSuccesses = 8

// Verdict is Check's answer.
type Verdict struct {
	Allow  bool
	Until  time.Time // when a refusal ends; zero: not known to end (a block or a permanent ban)
	Reason string    // why it is refused; empty when allowed
}

// Stats counts what the engine holds, for metrics and `mailban status`.
type Stats struct {
	Addresses int // address groups whose failures are being counted
	Logins    int // logins with failures, successes or a lock remembered
	Offenders int // address groups whose past bans are remembered
	Bans      int // bans held (expired ones until the next Expire)
	Locks     int // locks held (expired ones until the next Expire)
	Blocks    int // static and manual blocks
}

// Engine turns authentication events into decisions. Its methods are safe
// for concurrent use: a hook server calls Check while the pipeline calls
// Observe.
type Engine struct {
	mu    sync.RWMutex
	clock Clock
	cfg   Config
	allow allowList

	slab      ringSlab // the rings of every window with two or more failures
	addrs     map[groupKey]window
	logins    map[string]*loginState
	offenders map[groupKey][]int64 // end of each remembered ban, ascending; forever: math.MaxInt64

	bans   prefixMap[*hold]
	blocks prefixMap[*block]
	locks  map[string]*hold

	evidence evidenceRing

	// Changes since the last TakeChanges. Address windows are the bulk, so
	// rather than a set they are a list, with a flag (refDirty) in each
	// window already listed; a key can be listed twice after a deletion.
	tracking       bool
	changedAddrs   []groupKey
	dirtyOffenders map[groupKey]struct{}
	dirtyLogins    map[string]uint8 // dirtyWindow, dirtyLock
	dirtyBans      map[netip.Prefix]struct{}
	dirtyBlocks    map[netip.Prefix]struct{}

	// With a Store (see store.go), the windows live there; these hold
	// what stays local.
	store      Store
	sharedMu   sync.Mutex          // one ObserveBatch at a time talks to the store
	heads      map[groupKey]uint64 // evidence head per address group
	loginHeads map[string]uint64   // evidence head per login
	ops        []Op
	outcomes   []Outcome
	opOf       []int32 // per event of a batch: its index in ops, or -1
}

const (
	dirtyWindow = 1 << iota // the logins entry
	dirtyLock               // the locks entry
)

// hold is a ban or a lock in force (or expired and not yet collected).
type hold struct {
	at       int64 // Unix nanoseconds
	until    int64 // 0: permanent
	reason   string
	evidence []string
	manual   bool
}

// block is a network refused with no expiry, by configuration, by an
// operator, or both.
type block struct {
	static       bool
	staticAt     int64
	manual       bool
	manualAt     int64
	manualReason string
}

// loginState is what is remembered about one normalised login.
type loginState struct {
	win         window
	lockedUntil int64     // end of the latest lock in event time; 0: none
	successes   []success // newest first, at most maxSuccesses
}

type success struct {
	key groupKey
	t   int64
}

func (ls *loginState) empty() bool {
	return ls.win.last == 0 && ls.lockedUntil == 0 && len(ls.successes) == 0
}

// exempt reports whether key logged in successfully as this login less
// than memory before t.
func (ls *loginState) exempt(key groupKey, t, memory int64) bool {
	for i := range ls.successes {
		if ls.successes[i].key == key && t-ls.successes[i].t < memory {
			return true
		}
	}
	return false
}

func (ls *loginState) addSuccess(key groupKey, t int64) {
	for i := range ls.successes {
		if ls.successes[i].key == key {
			t = max(t, ls.successes[i].t)
			ls.successes = append(ls.successes[:i], ls.successes[i+1:]...)
			break
		}
	}
	i := 0
	for i < len(ls.successes) && ls.successes[i].t > t {
		i++
	}
	if i >= maxSuccesses {
		return
	}
	if len(ls.successes) == maxSuccesses {
		ls.successes = ls.successes[:maxSuccesses-1]
	}
	ls.successes = append(ls.successes, success{})
	copy(ls.successes[i+1:], ls.successes[i:])
	ls.successes[i] = success{key: key, t: t}
}

// NewEngine returns an engine deciding by cfg, with no state but cfg's
// static blocks. Tracking of changes for TakeChanges is on.
func NewEngine(cfg Config, clock Clock) (*Engine, error) {
	if clock == nil {
		return nil, fmt.Errorf("new rules engine: no clock")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		clock:     clock,
		cfg:       cfg,
		allow:     newAllowList(cfg.Allow),
		addrs:     make(map[groupKey]window),
		logins:    make(map[string]*loginState),
		offenders: make(map[groupKey][]int64),
		bans:      newPrefixMap[*hold](),
		blocks:    newPrefixMap[*block](),
		locks:     make(map[string]*hold),
		evidence:  newEvidenceRing(cfg.EvidenceRing),
	}
	e.setTracking(true)
	now := clock.Now().UnixNano()
	for _, p := range cfg.Blocked {
		e.blocks.set(p, &block{static: true, staticAt: now})
	}
	return e, nil
}

func unixTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// eventTime is the event's own time in Unix nanoseconds, clamped to now
// (clock skew must not stretch a ban into the future). A time before 1970
// is garbage and counts as the first nanosecond of 1970; Unix nanoseconds
// cannot hold one after 2262.
func eventTime(t time.Time, now int64) int64 {
	if t.IsZero() {
		return now
	}
	switch sec := t.Unix(); {
	case sec < 0:
		return 1
	case sec >= math.MaxInt64/int64(time.Second):
		return now
	}
	return min(t.UnixNano(), now)
}

// Observe counts one event (ev.Attempts failures, at least one) and returns
// what it decides: usually nothing (nil). The event is not retained; its
// Evidence string is. A decision's Evidence slice is shared with the
// engine: do not modify it.
func (e *Engine) Observe(ev *parsers.Event) []Decision {
	if ev == nil || (ev.Kind != parsers.AuthFailure && ev.Kind != parsers.AuthSuccess) {
		return nil
	}
	if e.store != nil {
		ds, _ := e.ObserveBatch([]*parsers.Event{ev}, nil)
		return ds
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.observeLocked(ev, e.clock.Now().UnixNano())
}

func (e *Engine) success(login string, addr netip.Addr, t int64) {
	if login == "" || !addr.IsValid() || !e.cfg.Login.Enabled() || e.cfg.SuccessMemory <= 0 {
		return
	}
	key, _ := group(addr, e.cfg.IPv6Prefix)
	ls := e.logins[login]
	if ls == nil {
		ls = &loginState{}
		login = strings.Clone(login) // an Event's Login may share the memory of its whole line
		e.logins[login] = ls
	}
	ls.addSuccess(key, t)
	e.touchLogin(login, dirtyWindow)
}

func (e *Engine) failure(ev *parsers.Event, addr netip.Addr, t, now int64) []Decision {
	attempts := max(ev.Attempts, 1)
	haveAddr := addr.IsValid()
	var (
		key     groupKey
		pfx     netip.Prefix
		refused bool
	)
	if haveAddr {
		key, pfx = group(addr, e.cfg.IPv6Prefix)
		refused = e.refused(addr, key, t)
	}

	// Against the login: count it, or, while the login is locked, ban the
	// address at once (the firewall cannot see logins; this is how it
	// enforces the lock). Failures from an exempt address do neither.
	var (
		ls         *loginState
		countLogin bool
		lockBan    bool
		loginRef   int64
	)
	loginPeriod := int64(e.cfg.Login.Period)
	if ev.Login != "" && e.cfg.Login.Enabled() {
		ls = e.logins[ev.Login]
		switch {
		case ls == nil:
			ls = &loginState{}
			e.logins[strings.Clone(ev.Login)] = ls // an Event's Login may share the memory of its whole line
			countLogin, loginRef = true, t
		case haveAddr && ls.exempt(key, t, int64(e.cfg.SuccessMemory)):
		case t < ls.lockedUntil:
			lockBan = haveAddr && !refused
		default:
			loginRef = max(t, ls.win.last)
			ls.win.trim(&e.slab, loginRef, loginPeriod)
			countLogin = loginRef-t < loginPeriod
		}
	}

	// Against the address.
	var (
		w         window
		existed   bool
		countAddr bool
		addrRef   int64
	)
	addrPeriod := int64(e.cfg.IP.Period)
	if haveAddr && !refused && (e.cfg.IP.Enabled() || lockBan) {
		w, existed = e.addrs[key]
		addrRef = max(t, w.last)
		if e.cfg.IP.Enabled() {
			w.trim(&e.slab, addrRef, addrPeriod)
			countAddr = addrRef-t < addrPeriod
		}
	}

	if ev.Evidence != "" && (countAddr || lockBan || countLogin) {
		var prevAddr, prevLogin uint64
		if countAddr || lockBan {
			prevAddr = w.head(&e.slab)
		}
		if countLogin {
			prevLogin = ls.win.head(&e.slab)
		}
		seq := e.evidence.push(ev.Evidence, t, prevAddr, prevLogin)
		if countAddr || lockBan {
			w.setHead(&e.slab, seq)
		}
		if countLogin {
			ls.win.setHead(&e.slab, seq)
		}
	}

	var out []Decision
	if countLogin {
		c := ls.win.count(&e.slab) + attempts
		if c >= e.cfg.Login.Count {
			evidence := e.evidence.lines(ls.win.head(&e.slab), true, loginRef-loginPeriod, e.cfg.EvidenceLines)
			reason := LockReason(c, e.cfg.Login)
			if d, ok := e.lock(ev.Login, ls, t, now, reason, evidence); ok {
				out = append(out, d)
			}
		} else {
			ls.win.add(&e.slab, t, attempts, e.cfg.Login.Count-1)
		}
		e.touchLogin(ev.Login, dirtyWindow)
	}

	switch {
	case lockBan:
		after := t - 1 // only this line unless the address's window says more
		if e.cfg.IP.Enabled() {
			after = addrRef - addrPeriod
		}
		evidence := e.evidence.lines(w.head(&e.slab), false, after, e.cfg.EvidenceLines)
		if existed {
			e.dropAddr(key, w) // a banned address's window is cleared
		} else {
			w.release(&e.slab)
		}
		reason := LockBanReason(ev.Login)
		if d, ok := e.ban(key, pfx, t, now, reason, evidence); ok {
			out = append(out, d)
		}
	case countAddr:
		c := w.count(&e.slab) + attempts
		if c >= e.cfg.IP.Count {
			evidence := e.evidence.lines(w.head(&e.slab), false, addrRef-addrPeriod, e.cfg.EvidenceLines)
			if existed {
				e.dropAddr(key, w)
			} else {
				w.release(&e.slab)
			}
			reason := ThresholdBanReason(c, e.cfg.IP)
			if d, ok := e.ban(key, pfx, t, now, reason, evidence); ok {
				out = append(out, d)
			}
		} else {
			w.add(&e.slab, t, attempts, e.cfg.IP.Count-1)
			e.markAddr(key, &w)
			e.addrs[key] = w
		}
	}
	return out
}

// refused reports whether failures from addr at t are already dealt with:
// the address is banned at t (an automatic ban, remembered in event time
// so that a replay skips the same lines), inside a ban or block in force.
func (e *Engine) refused(addr netip.Addr, key groupKey, t int64) bool {
	if ends := e.offenders[key]; len(ends) > 0 && t < ends[len(ends)-1] {
		return true
	}
	for _, h := range e.bans.containing(addr) {
		if h.until == 0 || t < h.until {
			return true
		}
	}
	for range e.blocks.containing(addr) {
		return true
	}
	return false
}

// banLength is the length of a ban after prev remembered offences;
// permanent is true for a ban without end.
func (e *Engine) banLength(prev int) (length time.Duration, permanent bool) {
	if e.cfg.PermanentAfter > 0 && prev+1 >= e.cfg.PermanentAfter {
		return 0, true
	}
	limit := time.Duration(maxBan)
	if e.cfg.BanMax > 0 {
		limit = e.cfg.BanMax
	}
	l := float64(e.cfg.BanFor) * math.Pow(e.cfg.BanFactor, float64(prev))
	if l >= float64(limit) {
		return limit, false
	}
	return time.Duration(l), false
}

// pruneEnds drops the remembered bans that ended at least memory before
// ref. Bans still in force at ref are kept whatever the memory.
func pruneEnds(ends []int64, ref, memory int64) []int64 {
	i := 0
	for i < len(ends) && ends[i] <= ref && ref-ends[i] >= memory {
		i++
	}
	return ends[i:]
}

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return fmt.Sprint(n) + suffix
}

// ban records an offence of key at t and bans p. The Ban decision is
// returned only when the ban is still in force now: replaying old lines
// remembers old offences without banning anyone for them.
func (e *Engine) ban(key groupKey, p netip.Prefix, t, now int64, reason string, evidence []string) (Decision, bool) {
	ends := pruneEnds(e.offenders[key], t, int64(e.cfg.OffenderMemory))
	prev := len(ends)
	length, permanent := e.banLength(prev)
	end, until := int64(math.MaxInt64), int64(0)
	if !permanent {
		end, until = t+int64(length), t+int64(length)
	}
	reason += OffenceSuffix(prev, length, permanent)
	// Keep ends sorted: events from several sources may come slightly out
	// of order.
	i := len(ends)
	for i > 0 && ends[i-1] > end {
		i--
	}
	ends = append(ends, 0)
	copy(ends[i+1:], ends[i:])
	ends[i] = end
	if len(ends) > MaxRemembered {
		ends = ends[len(ends)-MaxRemembered:]
	}
	e.offenders[key] = ends
	e.touchOffender(key)
	if !permanent && end <= now {
		return Decision{}, false
	}
	h := &hold{at: t, until: until, reason: reason, evidence: evidence}
	e.bans.set(p, h)
	e.touchBan(p)
	return banDecision(p, h), true
}

// lock locks login from t. As with bans, the Lock decision is returned only
// when the lock is still in force now.
func (e *Engine) lock(login string, ls *loginState, t, now int64, reason string, evidence []string) (Decision, bool) {
	until := t + int64(e.cfg.LockFor)
	ls.lockedUntil = max(ls.lockedUntil, until)
	ls.win.release(&e.slab)
	if until <= now {
		return Decision{}, false
	}
	h := &hold{at: t, until: until, reason: reason, evidence: evidence}
	if _, ok := e.locks[login]; !ok {
		login = strings.Clone(login)
	}
	e.locks[login] = h
	e.touchLogin(login, dirtyLock)
	return lockDecision(login, h), true
}

func banDecision(p netip.Prefix, h *hold) Decision {
	return Decision{Action: Ban, Prefix: p, At: unixTime(h.at), Until: unixTime(h.until), Reason: h.reason, Evidence: h.evidence}
}

func lockDecision(login string, h *hold) Decision {
	return Decision{Action: Lock, Login: login, At: unixTime(h.at), Until: unixTime(h.until), Reason: h.reason, Evidence: h.evidence}
}

// staticBlockReason is the Reason of a block from Config.Blocked.
const staticBlockReason = "listed in the configured blocked networks"

func (b *block) decision(p netip.Prefix) Decision {
	if b.manual {
		return Decision{Action: Block, Prefix: p, At: unixTime(b.manualAt), Reason: b.manualReason}
	}
	return Decision{Action: Block, Prefix: p, At: unixTime(b.staticAt), Reason: staticBlockReason}
}

// Check says whether addr (and, when login is not empty, addr logging in
// as login) may go on now. Allowlisted addresses always may. A login is
// normalised here, as hook protocols pass it as the client sent it. An
// invalid addr checks the login alone; a locked login is then refused.
func (e *Engine) Check(addr netip.Addr, login string) Verdict {
	e.mu.RLock()
	defer e.mu.RUnlock()
	now := e.clock.Now().UnixNano()
	var key groupKey
	if addr.IsValid() {
		addr = addr.Unmap().WithZone("")
		if e.allow.contains(addr) {
			return Verdict{Allow: true}
		}
		for p, b := range e.blocks.containing(addr) {
			return Verdict{Reason: "blocked: " + b.decision(p).Reason}
		}
		for _, h := range e.bans.containing(addr) {
			if h.until == 0 || now < h.until {
				return Verdict{Until: unixTime(h.until), Reason: "banned: " + h.reason}
			}
		}
		key, _ = group(addr, e.cfg.IPv6Prefix)
	}
	if login != "" && len(e.locks) > 0 {
		login = normalizeLogin(login)
		if h := e.locks[login]; h != nil && now < h.until {
			ls := e.logins[login]
			if !addr.IsValid() || ls == nil || !ls.exempt(key, now, int64(e.cfg.SuccessMemory)) {
				return Verdict{Until: unixTime(h.until), Reason: "login locked: " + h.reason}
			}
		}
	}
	return Verdict{Allow: true}
}

// normalizeLogin is parsers.NormalizeLogin without an allocation for the
// usual login that is already normalised: printable ASCII, no capitals, no
// surrounding space.
func normalizeLogin(s string) string {
	if s == "" || len(s) > parsers.MaxLoginLen {
		return parsers.NormalizeLogin(s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || ('A' <= c && c <= 'Z') {
			return parsers.NormalizeLogin(s)
		}
	}
	return s
}

// Stats counts what the engine holds now.
func (e *Engine) Stats() Stats {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return Stats{
		Addresses: len(e.addrs),
		Logins:    len(e.logins),
		Offenders: len(e.offenders),
		Bans:      e.bans.len(),
		Locks:     len(e.locks),
		Blocks:    e.blocks.len(),
	}
}

// markAddr notes that k's window changed; w is the window about to be
// stored under k.
func (e *Engine) markAddr(k groupKey, w *window) {
	if e.tracking && !w.dirty() {
		w.ref |= refDirty
		e.changedAddrs = append(e.changedAddrs, k)
	}
}

// dropAddr forgets k's window w (as stored) and gives back its ring.
func (e *Engine) dropAddr(k groupKey, w window) {
	w.release(&e.slab)
	delete(e.addrs, k)
	if e.tracking && !w.dirty() {
		e.changedAddrs = append(e.changedAddrs, k)
	}
}

func (e *Engine) touchOffender(k groupKey) {
	if e.tracking {
		e.dirtyOffenders[k] = struct{}{}
	}
}

func (e *Engine) touchLogin(login string, what uint8) {
	if e.tracking {
		e.dirtyLogins[login] |= what
	}
}

func (e *Engine) touchBan(p netip.Prefix) {
	if e.tracking {
		e.dirtyBans[p] = struct{}{}
	}
}

func (e *Engine) touchBlock(p netip.Prefix) {
	if e.tracking {
		e.dirtyBlocks[p] = struct{}{}
	}
}
