package hook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
)

// Checker answers whether an address, and a login from it, may go on now.
// *rules.Engine is one; it must be safe for concurrent use.
type Checker interface {
	Check(addr netip.Addr, login string) rules.Verdict
	// Active lists the bans, blocks and locks in force now: what a WATCH
	// stream begins with.
	Active() []rules.Decision
}

// Reporter queues an event that a mail server reported (rather than
// logged) into the pipeline, to be counted like a parsed log line.
// *agent.Agent is one. origin names the reporter in metrics.
type Reporter interface {
	Report(ctx context.Context, origin string, ev parsers.Event) error
}

// Deps are what the Server asks and tells.
type Deps struct {
	Checker  Checker
	Reporter Reporter    // nil: reports are refused
	Clock    rules.Clock // nil: the wall clock; give the engine's
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Server is the hook: its listeners, their connections, and the WATCH
// subscribers. It serves from New until Close.
type Server struct {
	log   *slog.Logger
	deps  Deps
	clock rules.Clock
	reg   prometheus.Registerer
	m     *metrics
	cfg   atomic.Pointer[Config] // what Update may change takes effect per request
	start Config                 // listeners as opened

	ctx    context.Context // done when Close begins
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{} // line-protocol connections, closed by Close
	closing bool

	listeners []boundListener
	https     []*http.Server
	hub       *hub
	repeats   *repeatFilter
	upstream  *http.Client
	closeOnce sync.Once
	closeErr  error
}

// boundListener is one open listener and what it serves.
type boundListener struct {
	proto string
	addr  listenAddr
	ln    net.Listener
}

// New opens every configured listener and serves them until Close. It
// fails, with nothing left open, if any listener cannot be opened.
func New(cfg Config, deps Deps, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if deps.Checker == nil {
		return nil, errors.New("start hook: no checker")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("start hook: %w", err)
	}
	if deps.Clock == nil {
		deps.Clock = wallClock{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		log:     logger.With("enforcer", "hook"),
		deps:    deps,
		clock:   deps.Clock,
		reg:     reg,
		m:       newMetrics(),
		start:   cfg,
		conns:   map[net.Conn]struct{}{},
		repeats: newRepeatFilter(maxRepeatEntries),
		upstream: &http.Client{
			// Never a proxy from the environment: the upstream is named
			// in the configuration and nowhere else.
			Transport: &http.Transport{
				Proxy:                  nil,
				MaxIdleConnsPerHost:    16,
				IdleConnTimeout:        90 * time.Second,
				ResponseHeaderTimeout:  cfg.Nginx.UpstreamTimeout,
				MaxResponseHeaderBytes: int64(cfg.Limits.MaxRequest),
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	s.cfg.Store(&cfg)
	s.hub = newHub(s.m)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.m.register(reg); err != nil {
		return nil, fmt.Errorf("start hook: register metrics: %w", err)
	}
	if err := s.open(&cfg); err != nil {
		s.Close()
		return nil, fmt.Errorf("start hook: %w", err)
	}
	s.serve()
	for _, l := range s.listeners {
		s.log.Info("hook listening", "protocol", l.proto, "address", l.ln.Addr().String())
		if !l.addr.isLoopback() {
			s.log.Warn("hook listening beyond loopback: anyone who can reach it can ask, and with the API key report", "protocol", l.proto, "address", l.addr.address)
		}
	}
	return s, nil
}

func (s *Server) open(cfg *Config) error {
	for _, p := range []struct {
		proto  string
		listen []string
		group  string
	}{
		{protoNative, cfg.Native.Listen, cfg.Native.Group},
		{protoPostfix, cfg.Postfix.Listen, cfg.Postfix.Group},
		{protoDovecot, cfg.Dovecot.Listen, cfg.Dovecot.Group},
		{protoNginx, cfg.Nginx.Listen, cfg.Nginx.Group},
		{protoMilter, cfg.Milter.Listen, cfg.Milter.Group},
	} {
		for _, a := range p.listen {
			addr, err := parseListen(a)
			if err != nil {
				return err
			}
			ln, err := listen(addr, p.group)
			if err != nil {
				return err
			}
			pm := s.m.proto[p.proto]
			limited := &limitListener{
				Listener: ln,
				max:      func() int { return s.cfg.Load().Limits.MaxConnections },
				refused:  pm.refused.Inc,
				opened:   func(d int) { pm.connections.Add(float64(d)) },
			}
			s.listeners = append(s.listeners, boundListener{proto: p.proto, addr: addr, ln: limited})
		}
	}
	return nil
}

// serve starts one accept loop per line-protocol listener and one HTTP
// server per HTTP protocol.
func (s *Server) serve() {
	servers := map[string]*http.Server{}
	for _, l := range s.listeners {
		switch l.proto {
		case protoNative:
			tcp := l.addr.network == "tcp"
			s.wg.Go(func() { s.acceptLoop(l, func(c net.Conn) { s.serveNative(c, tcp) }) })
		case protoPostfix:
			s.wg.Go(func() { s.acceptLoop(l, s.servePostfix) })
		case protoMilter:
			s.wg.Go(func() { s.acceptLoop(l, s.serveMilter) })
		case protoDovecot, protoNginx:
			srv := servers[l.proto]
			if srv == nil {
				handle := s.dovecot
				if l.proto == protoNginx {
					handle = s.nginx
				}
				srv = s.httpServer(s.measured(l.proto, handle))
				servers[l.proto] = srv
				s.https = append(s.https, srv)
			}
			s.wg.Go(func() {
				if err := srv.Serve(l.ln); err != nil && s.ctx.Err() == nil {
					s.log.Error("hook listener stopped", "protocol", l.proto, "address", l.addr.address, "error", err)
				}
			})
		}
	}
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	lim := s.start.Limits
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.RequestTimeout,
		ReadTimeout:       lim.RequestTimeout,
		WriteTimeout:      lim.RequestTimeout + s.start.Nginx.UpstreamTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxRequest,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
}

// acceptLoop accepts until the listener closes, handing each connection
// to handle in a goroutine of its own. Temporary errors (out of file
// descriptors) pause it, up to a second, rather than end it.
func (s *Server) acceptLoop(l boundListener, handle func(net.Conn)) {
	var pause time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || !isTemporary(err) {
				if s.ctx.Err() == nil {
					s.log.Error("hook listener stopped", "protocol", l.proto, "address", l.addr.address, "error", err)
				}
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.log.Warn("hook accept failed; pausing", "protocol", l.proto, "error", err, "pause", pause)
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		pause = 0
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Go(func() {
			defer s.untrack(c)
			handle(c)
		})
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Name is "hook", the enforcer's key in the configuration.
func (s *Server) Name() string { return "hook" }

// Apply publishes a batch of decisions to the WATCH subscribers. It never
// blocks: a subscriber too far behind is disconnected instead. Refusals
// need nothing here; they are answered from the engine, which already
// holds these decisions.
func (s *Server) Apply(_ context.Context, batch []rules.Decision) error {
	s.hub.publish(batch)
	return nil
}

// Reconcile does nothing: the hook holds no state of its own to bring in
// line. A WATCH stream starts from the engine's own list (Checker.Active).
func (s *Server) Reconcile(context.Context, []rules.Decision) error { return nil }

// Update takes a new configuration at a reload. Everything but the
// listeners (addresses and groups) and the HTTP servers' limits applies
// to the next request or connection; those need a restart, and Update
// says so in the log.
func (s *Server) Update(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("reconfigure hook: %w", err)
	}
	if !sameListeners(&s.start, &cfg) {
		s.log.Warn("hook listeners changed: they take effect at the next start")
	}
	if (len(s.start.Dovecot.Listen) > 0 || len(s.start.Nginx.Listen) > 0) && s.start.Limits != cfg.Limits {
		s.log.Warn("hook limits changed: the dovecot and nginx listeners take them at the next start, the others now")
	}
	s.cfg.Store(&cfg)
	return nil
}

// Addrs lists the addresses a protocol listens on ("native", "postfix",
// "dovecot", "nginx", "milter"), with the ports the system chose for port 0.
func (s *Server) Addrs(protocol string) []net.Addr {
	var out []net.Addr
	for _, l := range s.listeners {
		if l.proto == protocol {
			out = append(out, l.ln.Addr())
		}
	}
	return out
}

// Close stops listening, closes every connection and WATCH stream, waits
// for their goroutines, and removes the unix sockets it created.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		var errs []error
		for _, l := range s.listeners {
			if err := l.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		// In-flight HTTP requests see s.ctx done (their reports and upstream
		// requests give up) and are waited for; then the rest is closed.
		for _, h := range s.https {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			h.Shutdown(ctx)
			cancel()
			h.Close()
		}
		s.mu.Lock()
		s.closing = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		s.upstream.CloseIdleConnections()
		s.m.unregister(s.reg)
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// measured is an HTTP protocol's handler, counted and timed in the
// protocol's series by the outcome handle returns.
func (s *Server) measured(proto string, handle func(http.ResponseWriter, *http.Request) outcome) http.Handler {
	pm := s.m.proto[proto]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		out := handle(w, r)
		pm.requests[out].Inc()
		pm.duration.Observe(time.Since(t0).Seconds())
	})
}
