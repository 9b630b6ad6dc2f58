package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/control"
	"github.com/mailban/mailban/agent/source"
	"github.com/mailban/mailban/agent/state"
	"github.com/mailban/mailban/enforcers/hook"
	"github.com/mailban/mailban/fleet"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

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

// absPath is p made absolute, for status to name the file whatever the
// daemon's working directory; p itself when that fails.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil && p != "" {
		return a
	}
	return p
}

// canonical writes networks as the rules key them: IPv4-mapped IPv6 as
// IPv4, host bits cleared, so that the control commands compare like with
// like.
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

// rulesConfig is cfg's rules part, with the host's own addresses
// allowlisted as the Options say to find them.
func (a *Agent) rulesConfig(cfg *config.Config) (rules.Config, error) {
	return cfg.RulesConfig(a.opt.HostAddresses)
}

// buildParsers compiles one parser per source, with the source's formats
// and time zone.
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

// Registry is where the agent's metrics are registered; callers may add
// their own collectors to it.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Engine is the rules engine; it is safe for concurrent use.
func (a *Agent) Engine() *rules.Engine { return a.engine }

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

// process counts one line: parsed by its source's parser (or carrying
// its event already), the event joins the burst's batch.
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

// observe queues ev for the rules at the end of the burst.
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

// updateGauges sets the in-force and tracking gauges from the engine.
func (a *Agent) updateGauges() {
	st := a.engine.Stats()
	a.m.bansActive.Set(float64(st.Bans))
	a.m.locksActive.Set(float64(st.Locks))
	a.m.blocksActive.Set(float64(st.Blocks))
	a.m.trackedAddresses.Set(float64(st.Addresses))
	a.m.trackedLogins.Set(float64(st.Logins))
}

// close releases the enforcers, the fleet store and the state file, in
// that order: the state is the last thing written.
func (a *Agent) close() error {
	a.closeEnforcers(a.enforcers)
	a.enforcers = nil
	if a.fleet != nil {
		a.fleet.Close()
	}
	return a.store.Close()
}

// serveMetrics serves /metrics on addr until ctx is done. A port that
// cannot be bound is logged, not fatal: metrics never keep mailban down.
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
