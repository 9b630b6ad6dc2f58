package nftables

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/mailban/mailban/rules"
)

// reconcileTolerance is how far a kernel element's end may be from the
// decided one and still count as the same: the kernel keeps milliseconds
// of jiffies, and reading the table takes a moment.
const reconcileTolerance = time.Second

// maxRetryInterval caps the wait between retries after failures.
const maxRetryInterval = time.Minute

// syncState says how far the kernel can be trusted to match the view.
type syncState int

const (
	unknown syncState = iota // never reconciled: the kernel's content is adopted at the first Apply
	inSync                   // the view matches what the kernel accepted
	stale                    // an update failed: the next attempt reads the kernel afresh
)

// Enforcer keeps bans and blocks in the sets of its nftables table.
type Enforcer struct {
	cfg    Config
	log    *slog.Logger
	clock  rules.Clock
	m      *metrics
	nsFile *os.File // nil: mailban's own namespace

	mu          sync.Mutex // guards everything below; Apply, Reconcile and the retry loop take it
	conn        *nftables.Conn
	flushBudget int
	layout      *layout
	views       [numSets]*setView
	state       syncState
	pending     []rules.Decision // given to Apply before the kernel could be read

	retry  chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New connects to nftables and checks that mailban may use it; it changes
// nothing in the kernel until Reconcile or Apply. The errors say what is
// missing: ErrPermission (CAP_NET_ADMIN), ErrUnavailable (no nf_tables in
// the kernel), ErrTableOwned.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Enforcer, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultConfig().Table
	}
	if cfg.MailPortsOnly && len(cfg.MailPorts) == 0 {
		cfg.MailPorts = DefaultMailPorts()
	}
	if cfg.Clock == nil {
		cfg.Clock = wallClock{}
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	e := &Enforcer{
		cfg:    cfg,
		log:    logger.With("enforcer", "nftables", "table", "inet "+cfg.Table),
		clock:  cfg.Clock,
		m:      m,
		layout: newLayout(cfg),
		retry:  make(chan struct{}, 1),
	}
	for id := range numSets {
		e.views[id] = newSetView()
	}
	netns := 0
	if cfg.NetNS != "" {
		if e.nsFile, err = os.Open(cfg.NetNS); err != nil {
			return nil, fmt.Errorf("open network namespace: %w", err)
		}
		netns = int(e.nsFile.Fd())
	}
	if err := e.connect(netns); err != nil {
		e.closeFiles()
		return nil, err
	}
	// The first netlink request shows whether nftables is there and ours
	// to use: reading needs CAP_NET_ADMIN as writing does.
	if _, err := e.findTable(); err != nil {
		e.closeFiles()
		return nil, classify(err)
	}
	// The retry loop outlives any one call; Close ends it.
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Go(func() { e.retryLoop(ctx) })
	return e, nil
}

func (e *Enforcer) connect(netns int) error {
	c, budget, err := dial(netns)
	if err != nil {
		if netns > 0 && errors.Is(err, unix.EPERM) {
			return fmt.Errorf("enter network namespace %s (needs CAP_SYS_ADMIN): %w", e.cfg.NetNS, err)
		}
		return fmt.Errorf("open netlink socket: %w", classify(err))
	}
	e.conn, e.flushBudget = c, budget
	return nil
}

func (e *Enforcer) reconnect() error {
	netns := 0
	if e.nsFile != nil {
		netns = int(e.nsFile.Fd())
	}
	old := e.conn
	if err := e.connect(netns); err != nil {
		return err
	}
	return old.CloseLasting()
}

// Name is "nftables", the enforcer's key in the configuration.
func (e *Enforcer) Name() string { return "nftables" }

// Reconcile makes the table match the bans and blocks in force: it creates
// what is missing, repairs what differs, adds to the sets what they lack
// and removes what is no longer decided. Elements the kernel already holds
// with the right end stay untouched.
func (e *Enforcer) Reconcile(_ context.Context, active []rules.Decision) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		return errClosed
	}
	e.pending = nil
	if e.state == unknown {
		e.state = stale // the view is complete from here on
	}
	for _, v := range e.views {
		v.resetDecided()
	}
	for _, d := range active {
		e.decide(d)
	}
	return e.syncAll()
}

// Apply puts new bans and blocks in the kernel and takes lifted ones out,
// in one netlink transaction. Locks are for hook enforcers; they are
// ignored here. A failed update is retried at once after reading the
// kernel afresh, and then in the background until it succeeds: nothing
// decided is dropped.
func (e *Enforcer) Apply(_ context.Context, decisions []rules.Decision) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		return errClosed
	}
	switch e.state {
	case unknown:
		// Not told what is in force: keep what the kernel holds and
		// apply the batch on top of it.
		e.pending = append(e.pending, decisions...)
		return e.adopt()
	case stale:
		for _, d := range decisions {
			e.decide(d)
		}
		return e.syncAll()
	}
	var regions [numSets][]netip.Prefix
	for _, d := range decisions {
		if id, r, ok := e.decide(d); ok {
			regions[id] = append(regions[id], r)
		}
	}
	now := e.clock.Now()
	var cs [numSets]change
	changed := false
	for id := range numSets {
		for _, r := range outermostOnly(regions[id]) {
			e.views[id].planRegion(r, now, &cs[id])
		}
		changed = changed || !cs[id].empty()
	}
	if changed {
		b := &batch{e: e}
		err := b.changes(&cs, now)
		if err == nil {
			err = b.flush()
		}
		if err != nil {
			e.fail()
			e.log.Warn("kernel refused an update; reading the table and trying again", "error", err)
			return e.syncAll()
		}
	}
	for id := range numSets {
		e.views[id].commit(&cs[id])
	}
	e.updateGauges()
	return nil
}

var errClosed = errors.New("nftables enforcer is closed")

// decide records one decision in the view and returns the set and region
// it touches.
func (e *Enforcer) decide(d rules.Decision) (setID, netip.Prefix, bool) {
	if !d.Prefix.IsValid() {
		return 0, netip.Prefix{}, false
	}
	p := d.Prefix.Masked()
	if a := p.Addr(); a.Is4In6() || a.Zone() != "" {
		bits := p.Bits()
		if a.Is4In6() {
			bits = max(0, bits-96)
		}
		p = netip.PrefixFrom(a.Unmap().WithZone(""), bits).Masked()
	}
	var id setID
	remove := false
	switch d.Action {
	case rules.Ban, rules.Unban:
		id, remove = ban4, d.Action == rules.Unban
	case rules.Block, rules.Unblock:
		id, remove = block4, d.Action == rules.Unblock
	default:
		return 0, netip.Prefix{}, false
	}
	if p.Addr().Is6() {
		id++ // ban6, block6
	}
	until := d.Until
	if !id.timed() {
		until = time.Time{} // blocks hold until unblocked
	}
	return id, e.views[id].decide(p, until, remove), true
}

// outermostOnly drops regions inside other regions of the same batch.
func outermostOnly(rs []netip.Prefix) []netip.Prefix {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	out := rs[:1]
	for _, r := range rs[1:] {
		if last := out[len(out)-1]; last.Contains(r.Addr()) && last.Bits() <= r.Bits() {
			continue
		}
		out = append(out, r)
	}
	return out
}

// adopt takes what the kernel holds as decided, then the decisions given
// since, for an enforcer used before it was told what is in force.
func (e *Enforcer) adopt() error {
	e.m.resyncs.Inc()
	now := e.clock.Now()
	ks, err := e.readKernel(now)
	if err != nil {
		e.fail()
		e.kick()
		return fmt.Errorf("read table: %w", err)
	}
	for id := range numSets {
		for _, en := range ks.entries[id] {
			for _, p := range rangePrefixes(en.lo, en.hi) {
				e.views[id].decide(p, en.until, false)
			}
		}
	}
	for _, d := range e.pending {
		e.decide(d)
	}
	e.pending = nil
	e.state = stale // from here on the view is complete
	if err := e.syncFrom(ks, now); err != nil {
		e.fail()
		e.markStale()
		return err
	}
	return nil
}

// syncAll reads the whole table and makes it match the view, in as few
// transactions as the socket allows. On failure the enforcer is stale and
// the retry loop takes over.
func (e *Enforcer) syncAll() error {
	e.m.resyncs.Inc()
	now := e.clock.Now()
	ks, err := e.readKernel(now)
	if err != nil {
		err = fmt.Errorf("read table: %w", err)
	} else {
		err = e.syncFrom(ks, now)
	}
	if err != nil {
		e.fail()
		e.markStale()
		return err
	}
	return nil
}

// syncFrom makes the kernel, as read into ks, match the view.
func (e *Enforcer) syncFrom(ks *kernelState, now time.Time) error {
	var cs [numSets]change
	for id := range numSets {
		cs[id] = e.views[id].planAll(ks.entries[id], now, reconcileTolerance)
	}
	b := &batch{e: e}
	err := e.queueStructure(ks)
	if err == nil {
		err = b.changes(&cs, now)
	}
	if err == nil {
		err = b.flush()
	}
	if err != nil {
		return err
	}
	for id := range numSets {
		e.views[id].commit(&cs[id])
	}
	if e.state != inSync {
		e.log.Info("kernel table in sync", "ban4", e.views[ban4].entries, "ban6", e.views[ban6].entries,
			"block4", e.views[block4].entries, "block6", e.views[block6].entries)
	}
	e.state = inSync
	e.updateGauges()
	return nil
}

// fail replaces the connection after a failure: a refused batch can leave
// answers unread on the socket, and a batch cut short leaves commands
// queued. If a new socket cannot be had, the old one goes on with a
// socket per request.
func (e *Enforcer) fail() {
	if err := e.reconnect(); err != nil {
		e.log.Warn("could not reopen the netlink socket", "error", err)
	}
}

// queueStructure queues what makes the table look as configured: our four
// sets (kept with their elements when they are as we define them), our
// chains with their rules rewritten, and nothing else. It all goes in the
// first transaction, atomically: no packet sees a table half rebuilt.
func (e *Enforcer) queueStructure(ks *kernelState) error {
	l := e.layout
	c := e.conn
	c.AddTable(l.table)
	// Every rule goes before any chain or set does: rules refer to them.
	for _, ch := range ks.chains {
		c.FlushChain(ch)
	}
	present := map[string]bool{}
	for _, ch := range ks.chains {
		if l.wantedChain(ch) == nil {
			c.DelChain(ch)
			continue
		}
		present[ch.Name] = true
	}
	for _, s := range ks.sets {
		if anonymous(s.Name) {
			continue // freed with the rules that use it
		}
		ours := false
		for id := range numSets {
			ours = ours || (s.Name == id.String() && ks.keep[id])
		}
		if !ours {
			c.DelSet(s)
		}
	}
	for id := range numSets {
		if !ks.keep[id] {
			if err := c.AddSet(l.sets[id], nil); err != nil {
				return fmt.Errorf("encode set %s: %w", l.sets[id].Name, err)
			}
		}
	}
	for _, ch := range l.chains {
		if !present[ch.Name] {
			c.AddChain(ch)
		}
		if err := l.addRules(c, ch); err != nil {
			return fmt.Errorf("encode rules of chain %s: %w", ch.Name, err)
		}
	}
	return nil
}

func (e *Enforcer) markStale() {
	e.state = stale
	e.kick()
}

// kick wakes the retry loop.
func (e *Enforcer) kick() {
	e.m.inSync.Set(0)
	select {
	case e.retry <- struct{}{}:
	default:
	}
}

// retryLoop brings a stale kernel back in sync, waiting longer after each
// failure, until it succeeds or the enforcer is closed.
func (e *Enforcer) retryLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.retry:
		}
		wait := e.cfg.RetryInterval
		for attempt := 1; ; attempt++ {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			e.mu.Lock()
			var err error
			switch {
			case e.conn == nil:
			case e.state == unknown:
				err = e.adopt()
			case e.state == stale:
				err = e.syncAll()
			}
			e.mu.Unlock()
			if err == nil {
				break
			}
			e.log.Error("kernel table still out of sync; will try again", "attempt", attempt, "in", wait, "error", err)
			wait = min(2*wait, maxRetryInterval)
		}
		// A failure while we waited may have signalled again; the state
		// is checked before any work.
	}
}

func (e *Enforcer) updateGauges() {
	for id := range numSets {
		e.m.elements.WithLabelValues(id.String()).Set(float64(e.views[id].entries))
	}
	if e.state == inSync {
		e.m.inSync.Set(1)
	}
}

// Close stops retrying and releases the netlink socket. The table and its
// sets stay: the kernel goes on dropping and expiring without mailban.
func (e *Enforcer) Close() error {
	e.cancel()
	e.wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closeFiles()
}

func (e *Enforcer) closeFiles() error {
	var err error
	if e.conn != nil {
		err = e.conn.CloseLasting()
		e.conn = nil
	}
	if e.nsFile != nil {
		err = errors.Join(err, e.nsFile.Close())
		e.nsFile = nil
	}
	return err
}
