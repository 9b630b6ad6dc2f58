package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/control"
	"github.com/mailban/mailban/agent/source"
	"github.com/mailban/mailban/agent/state"
	"github.com/mailban/mailban/enforcers/dryrun"
	"github.com/mailban/mailban/enforcers/hook"
	"github.com/mailban/mailban/enforcers/nftables"
	"github.com/mailban/mailban/fleet"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// positionsBucket holds each source stream's last processed Cursor, keyed
// by source name, a NUL byte and the stream name.
const positionsBucket = "positions"

// seqKey is the positions bucket's key for the number of the last burst
// (no source is named "": it cannot be a source's key).
const seqKey = "\x00fleet-seq"

// expireInterval is how often bans, locks and windows are aged.
const expireInterval = 5 * time.Second

// Options are what the agent takes besides its configuration.
type Options struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry // the agent's private registry; nil makes one
	Clock    rules.Clock          // nil: the wall clock
	// FreshState moves a corrupt state file aside and starts empty instead
	// of refusing to start.
	FreshState bool
	// HostAddresses lists the host's own addresses for the allowlist; nil
	// asks the kernel. Tests inject their own.
	HostAddresses func() ([]netip.Prefix, error)
	// Enforcers are added to those the configuration names, for programs
	// that embed the agent and for tests that watch its decisions.
	Enforcers []Enforcer
	// Stdin is what a source of type stdin reads: the process's standard
	// input, made interruptible where it can be (a pipe in non-blocking
	// mode), so that stopping does not wait for the next line.
	Stdin io.Reader
	// Version is reported by `mailban status` and mailban_build_info.
	Version string
	// Reload is what the control socket's reload command does; nil reads
	// the configuration file again and calls Reload. The daemon passes the
	// same function SIGHUP runs, so both tell systemd and set the log level.
	Reload func(ctx context.Context) error
}

// Source is one stream of log lines. Run sends lines until ctx is done and
// returns nil then; any other return is a failure of that source alone.
type Source interface {
	Name() string
	Run(ctx context.Context, out chan<- source.Line) error
}

// committedWatcher is a Source that wants to know when a cursor it
// delivered is saved with the counters: a push feed answers its sender only
// then (source.Webhook).
type committedWatcher interface {
	Committed(stream string, value []byte)
}

// Agent is a running mailban.
type Agent struct {
	log    *slog.Logger
	reg    *prometheus.Registry
	clock  rules.Clock
	m      *metrics
	srcM   *source.Metrics
	store  *state.Store
	engine *rules.Engine
	fleet  *fleet.Store // nil: this host alone
	opt    Options

	lines    chan source.Line
	reloads  chan reloadRequest
	commands chan command
	ready    chan struct{} // closed when Run has started everything
	loopDone chan struct{} // closed when Run no longer takes commands
	started  time.Time
	cfgFile  string // the file the configuration is read from on reload
	srcStat  *sourceCollector
	ctl      *control.Server

	// Owned by the Run goroutine:
	cfg       *config.Config
	parsers   map[string]*parsers.Parser // by source name
	sources   map[string]*runningSource  // by source name
	enforcers []Enforcer
	hook      *hook.Server      // the running hook, kept across reloads; nil when off
	positions map[string][]byte // source name + "\x00" + stream → cursor value
	dirtyPos  map[string]struct{}
	burstPos  map[string][]byte // positions changed since they last went to the fleet
	seq       uint64            // bursts processed, for the fleet's positions
	pending   []state.Record    // changes not yet committed (kept across a failed commit)
	decided   []rules.Decision
	batch     []parsers.Event // the burst's events, observed together
	batchPtrs []*parsers.Event
	lineCount map[string]prometheus.Counter
	allow     []netip.Prefix // the allowlist in force, loopback and host addresses included
	health    map[string]*enforcerHealth
	reloadSt  control.Reload
	stateSt   control.State
}

// enforcerHealth is how an enforcer's attempts to apply decisions went.
type enforcerHealth struct {
	healthy     bool
	errors      uint64
	lastError   string
	lastErrorAt time.Time
	lastApplied time.Time
}

type runningSource struct {
	cfg    config.SourceConfig
	src    Source
	cancel context.CancelFunc
	done   chan struct{}
}

type reloadRequest struct {
	cfg     *config.Config
	loadErr error // the file did not load: a failed reload to record
	errc    chan error
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// New opens the state, restores the rules' memory and read positions from it,
// and builds parsers and enforcers. Nothing runs until Run.
func New(cfg *config.Config, opt Options) (*Agent, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Registry == nil {
		opt.Registry = prometheus.NewRegistry()
	}
	if opt.Clock == nil {
		opt.Clock = wallClock{}
	}
	if opt.HostAddresses == nil {
		opt.HostAddresses = interfaceAddresses
	}
	if opt.Version == "" {
		opt.Version = "dev"
	}
	a := &Agent{
		log:       opt.Logger,
		reg:       opt.Registry,
		clock:     opt.Clock,
		opt:       opt,
		m:         newMetrics(opt.Registry),
		lines:     make(chan source.Line, 4096),
		reloads:   make(chan reloadRequest),
		commands:  make(chan command),
		ready:     make(chan struct{}),
		loopDone:  make(chan struct{}),
		started:   time.Now(),
		cfgFile:   absPath(cfg.File),
		srcStat:   newSourceCollector(),
		sources:   map[string]*runningSource{},
		positions: map[string][]byte{},
		dirtyPos:  map[string]struct{}{},
		burstPos:  map[string][]byte{},
		lineCount: map[string]prometheus.Counter{},
		health:    map[string]*enforcerHealth{},
	}
	a.m.setBuild(opt.Version, a.started)
	if err := a.reg.Register(a.srcStat); err != nil {
		return nil, fmt.Errorf("register source metrics: %w", err)
	}
	var err error
	if a.ctl, err = control.NewServer(controlBackend{a}, a.log, a.reg); err != nil {
		return nil, err
	}
	if a.srcM, err = source.NewMetrics(opt.Registry); err != nil {
		return nil, err
	}
	rc, err := a.rulesConfig(cfg)
	if err != nil {
		return nil, err
	}
	a.allow = canonical(rc.Allow)
	a.engine, err = rules.NewEngine(rc, opt.Clock)
	if err != nil {
		return nil, fmt.Errorf("start rules: %w", err)
	}
	a.engine.SetTracking(true)
	if a.parsers, err = buildParsers(cfg); err != nil {
		return nil, err
	}
	a.store, err = state.Open(state.Options{Path: cfg.State.Path, Fresh: opt.FreshState}, a.log)
	if err != nil {
		return nil, err
	}
	if err := a.restore(); err != nil {
		a.store.Close()
		return nil, err
	}
	if cfg.Fleet != nil {
		if err := a.joinFleet(cfg.Fleet); err != nil {
			a.store.Close()
			return nil, err
		}
	}
	// Enforcers come after the state and the fleet: the hook answers mail
	// servers from the engine as soon as it listens, so the engine must
	// hold its bans and use the store it will keep.
	if a.enforcers, err = a.buildEnforcers(cfg); err != nil {
		if a.fleet != nil {
			a.fleet.Close()
		}
		a.store.Close()
		return nil, err
	}
	a.hook = hookIn(a.enforcers)
	a.cfg = cfg
	a.stateSt = control.State{Path: a.store.Path(), Bytes: a.store.Size()}
	return a, nil
}

// joinFleet makes the engine count in the fleet's Redis. Connecting waits
// for Run: a Redis that is down does not keep mailban from starting.
func (a *Agent) joinFleet(fc *config.FleetConfig) error {
	fo, err := fc.Options()
	if err != nil {
		return err
	}
	fo.Clock = a.clock
	a.fleet, err = fleet.New(fo, a.log, a.reg)
	if err != nil {
		return err
	}
	if err := a.engine.UseStore(a.fleet); err != nil {
		a.fleet.Close()
		return fmt.Errorf("join fleet: %w", err)
	}
	return nil
}

// Fleet is the fleet store, or nil when this host is alone.
func (a *Agent) Fleet() *fleet.Store { return a.fleet }
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil && p != "" {
		return a
	}
	return p
}

func canonical(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
		}
		out = append(out, p.Masked())
	}
	return out
}

// restore loads positions and rule state saved by the last run.
func (a *Agent) restore() error {
	n := 0
	err := a.store.Load(func(r state.Record) error {
		n++
		switch {
		case r.Bucket == positionsBucket && string(r.Key) == seqKey:
			if len(r.Value) != 8 {
				return fmt.Errorf("burst number is %d bytes, want 8", len(r.Value))
			}
			a.seq = binary.BigEndian.Uint64(r.Value)
			return nil
		case r.Bucket == positionsBucket:
			a.positions[string(r.Key)] = slices.Clone(r.Value)
			return nil
		case rules.OwnsBucket(r.Bucket):
			return a.engine.Restore(rules.Record{Bucket: r.Bucket, Key: r.Key, Value: r.Value})
		case r.Bucket == sessionsBucket:
			a.restoreSessions(r)
			return nil
		}
		return fmt.Errorf("unknown bucket (written by another program or a newer mailban?)")
	})
	if err != nil {
		return fmt.Errorf("restore state: %w (start with --fresh-state to move the file aside and start empty)", err)
	}
	// What Restore changed (state of addresses the configuration now
	// allowlists is dropped) goes out with the first checkpoint.
	st := a.engine.Stats()
	a.log.Info("state restored", "path", a.store.Path(), "records", n, "positions", len(a.positions),
		"bans", st.Bans, "locks", st.Locks, "blocks", st.Blocks, "tracked_addresses", st.Addresses, "tracked_logins", st.Logins)
	return nil
}

func (a *Agent) rulesConfig(cfg *config.Config) (rules.Config, error) {
	return cfg.RulesConfig(a.opt.HostAddresses)
}

func buildParsers(cfg *config.Config) (map[string]*parsers.Parser, error) {
	out := make(map[string]*parsers.Parser, len(cfg.Sources))
	for _, s := range cfg.Sources {
		specs, err := cfg.FormatSpecs(s.Formats)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", s.Name, err)
		}
		p, err := parsers.Compile(specs, parsers.Options{Location: s.Timezone.Location})
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", s.Name, err)
		}
		out[s.Name] = p
	}
	return out, nil
}

func (a *Agent) buildEnforcers(cfg *config.Config) ([]Enforcer, error) {
	var out []Enforcer
	if e := cfg.Enforcers.Log; e != nil {
		out = append(out, dryrun.New(dryrun.Config{Evidence: e.Evidence}, a.log))
	}
	if n := cfg.Enforcers.Nftables; n != nil {
		e, err := nftables.New(n.Enforcer(a.clock), a.log, a.reg)
		switch {
		case err == nil:
			out = append(out, e)
		case n.IsRequired():
			a.closeEnforcers(out)
			return nil, fmt.Errorf("start the nftables enforcer (enforcers.nftables.required: false runs mailban without it): %w", err)
		default:
			a.m.enforcerErrors.WithLabelValues("nftables").Inc()
			a.log.Error("nftables enforcer not started; mailban runs without it (enforcers.nftables.required is false), a reload tries again", "error", err)
		}
	}
	if cfg.Enforcers.Hook != nil {
		// The running hook stays across a reload (its listeners and its
		// clients' connections with it); applyConfig gives it the new
		// settings once the reload cannot fail any more.
		h := a.hook
		if h == nil {
			var err error
			h, err = hook.New(cfg.HookConfig(), hook.Deps{Checker: a.engine, Reporter: a, Clock: a.clock}, a.log, a.reg)
			if err != nil {
				return nil, err
			}
		}
		warnDoubleCounting(a.log, cfg)
		out = append(out, h)
	}
	out = append(out, a.opt.Enforcers...)
	if len(out) == 0 {
		a.log.Warn("no enforcer configured: decisions are only logged (enforcers: {log: {}})")
		out = append(out, dryrun.New(dryrun.Config{}, a.log))
	}
	return out, nil
}

// Registry is where the agent's metrics are registered; callers may add
// their own collectors to it.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Engine is the rules engine; it is safe for concurrent use.
func (a *Agent) Engine() *rules.Engine { return a.engine }

// Reload swaps in a new configuration: it keeps counters, bans and read
// positions, restarts only the sources whose settings changed and applies
// the difference in blocked networks. An error leaves the old
// configuration running.
func (a *Agent) Reload(ctx context.Context, cfg *config.Config) error {
	return a.sendReload(ctx, reloadRequest{cfg: cfg, errc: make(chan error, 1)})
}

// ReloadFile reads the configuration file at path and swaps it in as
// Reload does. A file that does not load is a failed reload like one that
// does not apply: counted in metrics, shown by status, and the running
// configuration stays.
func (a *Agent) ReloadFile(ctx context.Context, path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err := a.sendReload(ctx, reloadRequest{cfg: cfg, loadErr: err, errc: make(chan error, 1)}); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (a *Agent) sendReload(ctx context.Context, req reloadRequest) error {
	select {
	case a.reloads <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run runs the agent until ctx is done, then stops its sources, saves a
// last checkpoint and closes the state. Enforced bans stay in place.
func (a *Agent) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := a.close(); err == nil {
			err = cerr
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	httpCtx, stopHTTP := context.WithCancel(ctx)
	defer stopHTTP()
	defer close(a.loopDone)
	if a.cfg.Metrics.Listen != "" {
		wg.Go(func() { a.serveMetrics(httpCtx, a.cfg.Metrics.Listen) })
	}
	if a.cfg.Control.Socket != "" {
		// A socket that cannot be made leaves the CLI without a daemon to
		// talk to, but mail must stay protected: log it and go on.
		ln, err := control.Listen(a.cfg.Control.Socket, a.cfg.Control.Group)
		if err != nil {
			a.log.Error("control socket not started; the mailban CLI cannot reach this daemon", "error", err)
		} else {
			a.log.Info("control socket listening", "socket", ln.Path())
			wg.Go(func() {
				defer ln.Close()
				if err := a.ctl.Serve(httpCtx, ln); err != nil {
					a.log.Error("control socket stopped", "error", err)
				}
			})
		}
	}

	var fleetDecisions <-chan []rules.Decision
	var fleetReady <-chan struct{}
	if a.fleet != nil {
		// Resume after the lines already counted in Redis, then catch up
		// before enforcers reconcile, so that they start with what the
		// fleet holds.
		a.adoptFleetPositions(ctx)
		a.resyncFleet(ctx)
		a.decided = a.decided[:0] // reconcile below gives enforcers all that is in force
		fleetDecisions, fleetReady = a.fleet.Decisions(), a.fleet.Ready()
		wg.Go(func() { a.fleet.Run(ctx) })
	}
	a.reconcile(ctx)
	a.m.reloadSuccess.Set(1)
	now := time.Now()
	a.m.reloadTime.Set(float64(now.Unix()))
	a.reloadSt = control.Reload{At: now, OK: true}
	for _, s := range a.cfg.Sources {
		if err := a.startSource(ctx, s); err != nil {
			a.log.Error("source not started", "source", s.Name, "error", err)
		}
	}
	a.log.Info("mailban running", "sources", len(a.cfg.Sources), "enforcers", a.enforcerNames())
	close(a.ready)

	checkpoint := time.NewTicker(time.Duration(a.cfg.State.CheckpointInterval))
	defer checkpoint.Stop()
	// Expire walks every tracked key under the engine's lock (about 16 ms
	// per million keys): often enough that unbans are timely, rarely enough
	// that hook checks do not queue behind it.
	expire := time.NewTicker(expireInterval)
	defer expire.Stop()
	for {
		select {
		case l := <-a.lines:
			a.processBurst(ctx, l)
		case <-expire.C:
			a.decided = append(a.decided, a.engine.Expire()...)
			a.enforce(ctx)
			a.updateGauges()
		case ds := <-fleetDecisions:
			for _, d := range ds {
				if a.engine.ApplyShared(d) {
					a.decided = append(a.decided, d)
				}
			}
			a.enforce(ctx)
		case <-fleetReady:
			a.resyncFleet(ctx)
			a.enforce(ctx)
		case <-checkpoint.C:
			a.checkpoint()
		case req := <-a.reloads:
			req.errc <- a.reload(ctx, req.cfg, req.loadErr)
		case c := <-a.commands:
			c.run(ctx)
			close(c.done)
		case <-ctx.Done():
			a.stopSources(ctx, a.sourceNames())
			a.checkpoint()
			return nil
		}
	}
}

// processBurst handles one line and whatever else is already waiting, up to
// a bound, then hands the burst's decisions to the enforcers in one batch.
func (a *Agent) processBurst(ctx context.Context, first source.Line) {
	a.process(first)
	a.processQueued(1024)
	a.observeBatch()
	a.enforce(ctx)
}

// resyncFleet hands the fleet what this host did alone while Redis was
// away and takes in what the fleet holds (fleet.Store.Resync).
func (a *Agent) resyncFleet(ctx context.Context) {
	// Every position goes with the counts handed back, so that Redis's
	// positions are whole again after a time this host counted alone.
	a.fleet.SetPositions(a.seq, a.positions)
	ds, err := a.fleet.Resync(ctx, a.engine)
	a.decided = append(a.decided, ds...)
	if err != nil {
		a.log.Error("fleet: redis unavailable; counting on this host alone and trying again", "error", err)
		return
	}
	// The counts handed back are no longer this host's: save that now.
	a.checkpoint()
}

// adoptFleetPositions resumes from the read positions Redis keeps for
// this host when they are at least as new as the state file's: the host
// stopped (crashed) after Redis had counted lines its last checkpoint did
// not cover. Its own windows are then counts Redis already has.
func (a *Agent) adoptFleetPositions(ctx context.Context) {
	seq, pos, err := a.fleet.Positions(ctx)
	if err != nil {
		a.log.Warn("fleet: could not read this host's positions in redis; resuming from the state file", "error", err)
		return
	}
	if seq == 0 || seq < a.seq {
		return
	}
	for k, v := range pos {
		a.positions[k] = v
		a.dirtyPos[k] = struct{}{}
	}
	dropped := a.engine.DrainCounts()
	a.log.Info("fleet: resuming after the lines already counted in redis", "burst", seq, "state_file_burst", a.seq, "positions", len(pos), "local_counts_dropped", len(dropped))
	a.seq = seq
	a.dirtyPos[seqKey] = struct{}{}
}

// processQueued processes the lines already queued, at most limit of them,
// without waiting for more.
func (a *Agent) processQueued(limit int) {
	for range limit {
		select {
		case l := <-a.lines:
			a.process(l)
		default:
			return
		}
	}
}

func (a *Agent) process(l source.Line) {
	c, ok := a.lineCount[l.Source]
	if !ok {
		c = a.m.linesRead.WithLabelValues(l.Source)
		a.lineCount[l.Source] = c
	}
	c.Inc()
	switch p := a.parsers[l.Source]; {
	case l.Event != nil:
		a.observe(l.Event)
	case p == nil:
	case !l.Time.IsZero():
		// The source split the header off (the journal): the parser
		// reads the message as the program's, at the entry's time.
		if ev, ok := p.ParseMessage(l.Time, l.Program, l.Text); ok {
			a.observe(&ev)
		}
	default:
		if ev, ok := p.Parse(l.Text, l.Arrival); ok {
			a.observe(&ev)
		}
	}
	if l.Cursor.Value != nil {
		key := l.Source + "\x00" + l.Cursor.Stream
		a.positions[key] = l.Cursor.Value
		a.dirtyPos[key] = struct{}{}
		if a.fleet != nil {
			a.burstPos[key] = l.Cursor.Value
		}
	}
}

func (a *Agent) observe(ev *parsers.Event) {
	a.m.events.WithLabelValues(ev.Format, ev.Kind.String(), string(ev.Service)).Inc()
	a.batch = append(a.batch, *ev)
}

// observeBatch hands the burst's events to the rules in one call: in
// fleet mode, one round trip to Redis per burst.
func (a *Agent) observeBatch() {
	if a.fleet != nil && len(a.burstPos) > 0 {
		// The positions go to Redis with the burst's counts, so that after
		// a crash the lines counted there are not counted again.
		a.seq++
		a.dirtyPos[seqKey] = struct{}{}
		a.fleet.SetPositions(a.seq, a.burstPos)
		clear(a.burstPos)
	}
	if len(a.batch) == 0 {
		return
	}
	ptrs := a.batchPtrs[:0]
	for i := range a.batch {
		ptrs = append(ptrs, &a.batch[i])
	}
	a.decided, _ = a.engine.ObserveBatch(ptrs, a.decided) // a fleet failure is logged and counted by the fleet
	clear(ptrs)
	clear(a.batch)
	a.batchPtrs, a.batch = ptrs[:0], a.batch[:0]
}

// Report counts an event that did not come from a log line (a hook
// protocol's report of a failed or successful login) exactly as if a source
// had read it: in order with the lines, through the same rules, decisions
// and enforcers. origin names the reporter in metrics. It returns when the
// event is queued, or when ctx is done.
func (a *Agent) Report(ctx context.Context, origin string, ev parsers.Event) error {
	l := source.Line{Source: origin, Text: ev.Evidence, Arrival: a.clock.Now(), Event: &ev}
	select {
	case a.lines <- l:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enforce hands the pending decisions to every enforcer. A failing enforcer
// is logged and counted; it does not hold up the others, and the decision
// stays in the rules engine (and the state) to be reconciled.
func (a *Agent) enforce(ctx context.Context) {
	if len(a.decided) == 0 {
		return
	}
	for _, d := range a.decided {
		a.m.decisions.WithLabelValues(d.Action.String()).Inc()
	}
	for _, e := range a.enforcers {
		start := time.Now()
		err := e.Apply(ctx, a.decided)
		a.m.enforcerApply.WithLabelValues(e.Name()).Observe(time.Since(start).Seconds())
		a.noteEnforcer(e.Name(), err)
		if err != nil {
			a.log.Error("enforcer failed to apply decisions", "enforcer", e.Name(), "decisions", len(a.decided), "error", err)
		}
	}
	clear(a.decided)
	a.decided = a.decided[:0]
}

func (a *Agent) reconcile(ctx context.Context) {
	active := a.engine.Active()
	for _, e := range a.enforcers {
		r, ok := e.(reconciler)
		var err error
		if ok {
			err = r.Reconcile(ctx, active)
		} else {
			err = e.Apply(ctx, active)
		}
		a.noteEnforcer(e.Name(), err)
		if err != nil {
			a.log.Error("enforcer failed to take the bans in force", "enforcer", e.Name(), "error", err)
		}
	}
	a.updateGauges()
}

// forgetEnforcers drops the health of enforcers a reload removed, so that
// status and metrics show only those in use.
func (a *Agent) forgetEnforcers(old []Enforcer) {
	current := map[string]bool{}
	for _, e := range a.enforcers {
		current[e.Name()] = true
	}
	for _, e := range old {
		if name := e.Name(); !current[name] {
			delete(a.health, name)
			a.m.enforcerHealthy.DeleteLabelValues(name)
		}
	}
}

// noteEnforcer records how an enforcer's attempt went, for status and
// metrics.
func (a *Agent) noteEnforcer(name string, err error) {
	h := a.health[name]
	if h == nil {
		h = &enforcerHealth{}
		a.health[name] = h
		a.m.enforcerErrors.WithLabelValues(name)
	}
	h.healthy = err == nil
	if err != nil {
		h.errors++
		h.lastError, h.lastErrorAt = err.Error(), time.Now()
		a.m.enforcerErrors.WithLabelValues(name).Inc()
		a.m.enforcerHealthy.WithLabelValues(name).Set(0)
		return
	}
	h.lastApplied = time.Now()
	a.m.enforcerHealthy.WithLabelValues(name).Set(1)
}

// checkpoint saves the rules' changes and the positions of the lines that
// caused them in one transaction. A failed commit keeps the changes and
// tries again next time: nothing is dropped.
func (a *Agent) checkpoint() {
	for _, r := range a.engine.TakeChanges(nil) {
		a.pending = append(a.pending, state.Record{Bucket: r.Bucket, Key: r.Key, Value: r.Value})
	}
	for key := range a.dirtyPos {
		v := a.positions[key]
		if key == seqKey {
			v = binary.BigEndian.AppendUint64(nil, a.seq)
		}
		a.pending = append(a.pending, state.Record{Bucket: positionsBucket, Key: []byte(key), Value: v})
	}
	clear(a.dirtyPos)
	a.saveSessions()
	if len(a.pending) == 0 {
		return
	}
	if err := a.store.Commit(a.pending); err != nil {
		a.m.stateCommitErrors.Inc()
		a.stateSt.LastError = err.Error()
		a.log.Error("checkpoint failed; will retry", "records", len(a.pending), "error", err)
		return
	}
	a.m.stateCommits.Inc()
	size := a.store.Size()
	a.m.stateSize.Set(float64(size))
	now := time.Now()
	a.stateSt.Bytes, a.stateSt.LastCheckpoint, a.stateSt.LastError = size, &now, ""
	a.notifyCommitted(a.pending)
	clear(a.pending)
	a.pending = a.pending[:0]
}

// notifyCommitted tells the running sources that want to know which of
// their cursors are now saved.
func (a *Agent) notifyCommitted(records []state.Record) {
	for _, r := range records {
		if r.Bucket != positionsBucket {
			continue
		}
		name, stream, ok := strings.Cut(string(r.Key), "\x00")
		if !ok {
			continue
		}
		if rs := a.sources[name]; rs != nil {
			if w, ok := rs.src.(committedWatcher); ok {
				w.Committed(stream, r.Value)
			}
		}
	}
}

func (a *Agent) updateGauges() {
	st := a.engine.Stats()
	a.m.bansActive.Set(float64(st.Bans))
	a.m.locksActive.Set(float64(st.Locks))
	a.m.blocksActive.Set(float64(st.Blocks))
	a.m.trackedAddresses.Set(float64(st.Addresses))
	a.m.trackedLogins.Set(float64(st.Logins))
}

func (a *Agent) newSource(s config.SourceConfig) (Source, error) {
	saved := map[string][]byte{}
	prefix := s.Name + "\x00"
	for key, v := range a.positions {
		if stream, ok := cutPrefix(key, prefix); ok {
			saved[stream] = v
		}
	}
	build := func(saved map[string][]byte) (Source, error) {
		switch s.Type {
		case "file":
			return source.NewFile(s.FileSource(), saved, a.log)
		case "journald":
			return source.NewJournal(s.JournalSource(), saved, a.log, a.srcM)
		case "command":
			return source.NewCommand(s.CommandSource(), saved, a.log, a.srcM)
		case "stdin":
			if a.opt.Stdin == nil {
				return nil, errors.New("no standard input to read")
			}
			return source.NewStdin(s.StdinSource(), a.opt.Stdin, saved, a.log, a.srcM)
		case "webhook":
			wc := s.WebhookSource()
			// A delivery waits for the checkpoint that saves its events.
			wc.AckTimeout = max(source.DefaultAckTimeout, 3*time.Duration(a.cfg.State.CheckpointInterval))
			return source.NewWebhook(wc, saved, a.log, a.srcM)
		}
		return nil, fmt.Errorf("unknown source type %q", s.Type)
	}
	src, err := build(saved)
	if errors.Is(err, source.ErrBadCursor) {
		// A saved position that cannot be read must not keep the source
		// down: start it as if it were new, and say what that means.
		a.log.Warn("saved read positions are unreadable; reading as if for the first time (start-at applies)",
			"source", s.Name, "error", err)
		return build(nil)
	}
	return src, err
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

func (a *Agent) startSource(ctx context.Context, s config.SourceConfig) error {
	src, err := a.newSource(s)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	a.m.linesRead.WithLabelValues(s.Name) // from 0, before the first line
	rs := &runningSource{cfg: s, src: src, cancel: cancel, done: make(chan struct{})}
	a.sources[s.Name] = rs
	if st, ok := src.(statuser); ok {
		a.srcStat.set(s.Name, st)
	}
	go func() {
		defer close(rs.done)
		if err := src.Run(sctx, a.lines); err != nil && sctx.Err() == nil {
			a.log.Error("source stopped", "source", s.Name, "error", err)
		}
	}()
	return nil
}

// stopSources stops sources and processes every line they had already
// sent, so that their saved positions are those of the last line counted
// and a restarted source neither skips nor repeats a line.
func (a *Agent) stopSources(ctx context.Context, names []string) {
	for _, n := range names {
		if rs := a.sources[n]; rs != nil {
			rs.cancel()
		}
	}
	for _, n := range names {
		rs := a.sources[n]
		if rs == nil {
			continue
		}
		for waiting := true; waiting; {
			select {
			case l := <-a.lines:
				a.process(l)
			case <-rs.done:
				waiting = false
			}
		}
		delete(a.sources, n)
		a.srcStat.set(n, nil)
	}
	a.processQueued(cap(a.lines))
	a.observeBatch()
	a.enforce(ctx)
}

func (a *Agent) sourceNames() []string {
	names := make([]string, 0, len(a.sources))
	for n := range a.sources {
		names = append(names, n)
	}
	return names
}

func (a *Agent) enforcerNames() []string {
	names := make([]string, len(a.enforcers))
	for i, e := range a.enforcers {
		names[i] = e.Name()
	}
	return names
}

// reload applies a new configuration from the Run goroutine. Everything
// that can fail is built before anything is swapped.
func (a *Agent) reload(ctx context.Context, cfg *config.Config, loadErr error) error {
	err := loadErr
	if err == nil {
		err = a.applyConfig(ctx, cfg)
	}
	now := time.Now()
	if err != nil {
		a.m.reloadSuccess.Set(0)
		a.m.reloads.WithLabelValues("failure").Inc()
		a.reloadSt.OK, a.reloadSt.Error, a.reloadSt.FailedAt = false, err.Error(), &now
		a.reloadSt.Failures++
		return err
	}
	a.m.reloadSuccess.Set(1)
	a.m.reloads.WithLabelValues("success").Inc()
	a.m.reloadTime.Set(float64(now.Unix()))
	a.reloadSt.At, a.reloadSt.OK, a.reloadSt.Error = now, true, ""
	a.reloadSt.Successes++
	return nil
}

func (a *Agent) applyConfig(ctx context.Context, cfg *config.Config) error {
	rc, err := a.rulesConfig(cfg)
	if err != nil {
		return err
	}
	ps, err := buildParsers(cfg)
	if err != nil {
		return err
	}
	enfs, err := a.buildEnforcers(cfg)
	if err != nil {
		return err
	}
	ds, err := a.engine.Reconfigure(rc)
	if err != nil {
		a.closeEnforcers(without(enfs, a.enforcers))
		return fmt.Errorf("reconfigure rules: %w", err)
	}
	if cfg.State.Path != a.cfg.State.Path {
		a.log.Warn("state.path changed: it takes effect at the next start", "running", a.cfg.State.Path, "configured", cfg.State.Path)
	}
	if !reflect.DeepEqual(cfg.Fleet, a.cfg.Fleet) {
		a.log.Warn("fleet settings changed: they take effect at the next start")
	}
	if cfg.Metrics.Listen != a.cfg.Metrics.Listen {
		a.log.Warn("metrics.listen changed: it takes effect at the next start", "running", a.cfg.Metrics.Listen, "configured", cfg.Metrics.Listen)
	}
	if cfg.Control != a.cfg.Control {
		a.log.Warn("control changed: it takes effect at the next start", "running", a.cfg.Control, "configured", cfg.Control)
	}

	// Sources whose settings changed, or that are gone, stop first (their
	// lines in flight are processed with the old parsers).
	newSources := map[string]config.SourceConfig{}
	for _, s := range cfg.Sources {
		newSources[s.Name] = s
	}
	var stop []string
	for name, rs := range a.sources {
		if s, ok := newSources[name]; !ok || !sameSource(rs.cfg, s) {
			stop = append(stop, name)
		}
	}
	a.stopSources(ctx, stop)
	// Save what the stopped sources delivered before they start again
	// from it: a push source takes its saved cursor as saved, and answers
	// retries of its events at once.
	a.checkpoint()

	old := a.enforcers
	a.adoptSessions(ps)
	a.parsers, a.enforcers = ps, enfs
	a.allow = canonical(rc.Allow)
	gone := without(old, enfs)
	a.closeEnforcers(gone)
	a.forgetEnforcers(gone)
	if a.hook = hookIn(enfs); a.hook != nil {
		if err := a.hook.Update(cfg.HookConfig()); err != nil {
			a.log.Error("hook settings not changed", "error", err) // checked with the configuration: not expected
		}
	}
	a.reconcile(ctx)
	a.decided = append(a.decided, ds...)
	a.enforce(ctx)
	a.cfg = cfg
	for _, s := range cfg.Sources {
		if _, running := a.sources[s.Name]; running {
			a.sources[s.Name].cfg = s
			continue
		}
		if err := a.startSource(ctx, s); err != nil {
			a.log.Error("source not started", "source", s.Name, "error", err)
		}
	}
	a.log.Info("configuration reloaded", "file", cfg.File, "sources", len(cfg.Sources), "enforcers", a.enforcerNames())
	return nil
}

// sameSource reports whether a running source can go on under b: every
// setting but those of its parser (formats, time zone) is unchanged.
func sameSource(a, b config.SourceConfig) bool {
	a.Formats, b.Formats = nil, nil
	a.Timezone, b.Timezone = config.Location{}, config.Location{}
	return reflect.DeepEqual(a, b)
}

func (a *Agent) closeEnforcers(es []Enforcer) {
	for _, e := range es {
		if c, ok := e.(closer); ok {
			if err := c.Close(); err != nil {
				a.log.Warn("closing enforcer", "enforcer", e.Name(), "error", err)
			}
		}
	}
}

// without lists the enforcers of es that are not in keep.
func without(es, keep []Enforcer) []Enforcer {
	var out []Enforcer
	for _, e := range es {
		if !slices.Contains(keep, e) {
			out = append(out, e)
		}
	}
	return out
}

// hookIn finds the hook among the enforcers.
func hookIn(es []Enforcer) *hook.Server {
	for _, e := range es {
		if h, ok := e.(*hook.Server); ok {
			return h
		}
	}
	return nil
}

// warnDoubleCounting says when Dovecot's reports to the hook and a log
// source with the dovecot format would both count the same attempts.
func warnDoubleCounting(log *slog.Logger, cfg *config.Config) {
	if d := cfg.Enforcers.Hook.Dovecot; d == nil || !d.Report {
		return
	}
	for _, s := range cfg.Sources {
		if len(s.Formats) == 0 || slices.Contains(s.Formats, "dovecot") {
			log.Warn("Dovecot's reports to the hook and this source's dovecot format count the same attempts twice: "+
				"drop dovecot from the source's formats, or set enforcers.hook.dovecot.report: false", "source", s.Name)
		}
		// Postfix and Exim log the SMTP AUTH attempts that Dovecot reports
		// when they authenticate through Dovecot SASL, which mailban cannot
		// see from here: say it as a condition.
		for _, f := range []string{"postfix", "exim"} {
			if slices.Contains(s.Formats, f) {
				log.Warn("if "+f+" authenticates through Dovecot SASL, Dovecot's reports to the hook and this source's "+f+
					" format count its SMTP AUTH attempts twice: drop "+f+" from the source's formats, or set enforcers.hook.dovecot.report: false",
					"source", s.Name)
			}
		}
	}
}

func (a *Agent) close() error {
	a.closeEnforcers(a.enforcers)
	a.enforcers = nil
	if a.fleet != nil {
		a.fleet.Close()
	}
	return a.store.Close()
}

func (a *Agent) serveMetrics(ctx context.Context, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		a.log.Error("metrics endpoint not started", "listen", addr, "error", err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	a.log.Info("metrics endpoint listening", "address", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("metrics endpoint stopped", "error", err)
	}
}
