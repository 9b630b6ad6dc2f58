package hook

import (
	"github.com/prometheus/client_golang/prometheus"
)

// The protocols, as they appear in metrics and logs.
const (
	protoNative  = "native"
	protoPostfix = "postfix"
	protoDovecot = "dovecot"
	protoNginx   = "nginx"
	protoMilter  = "milter"
)

var protocols = []string{protoNative, protoPostfix, protoDovecot, protoNginx, protoMilter}

// outcome is what became of a request: the outcome label.
type outcome int

const (
	outAllow    outcome = iota // the client may go on (nginx: and the upstream agreed)
	outDeny                    // refused by mailban
	outReport                  // an event fed to the rules
	outRepeat                  // a report not counted: the same wrong password again
	outIgnored                 // a report not for counting (internal failure, reports off)
	outUpstream                // nginx: the upstream refused or could not be reached
	outError                   // malformed, unauthorised, or could not be answered
	outWatch                   // a WATCH stream began
	outOther                   // PING, QUIT
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"allow", "deny", "report", "repeat", "ignored", "upstream", "error", "watch", "other"}

// metrics are the hook's Prometheus series. None is labelled by address or
// login.
type metrics struct {
	collectors []prometheus.Collector
	watchers   prometheus.Gauge
	watchDrops prometheus.Counter
	proto      map[string]*protoMetrics
}

// protoMetrics are one protocol's series, resolved once so that counting a
// request costs no label lookup.
type protoMetrics struct {
	requests    [numOutcomes]prometheus.Counter
	duration    prometheus.Observer
	connections prometheus.Gauge
	refused     prometheus.Counter
}

func newMetrics() *metrics {
	reqVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailban_hook_requests_total",
		Help: "Requests answered by the hook, by protocol and outcome (allow, deny, report, repeat, ignored, upstream, error, watch, other).",
	}, []string{"protocol", "outcome"})
	durVec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mailban_hook_request_duration_seconds",
		Help:    "Time from a whole request read to its answer written, by protocol (nginx includes the upstream).",
		Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 50e-3, 250e-3, 1, 5},
	}, []string{"protocol"})
	connVec := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mailban_hook_connections",
		Help: "Connections open to the hook now, by protocol.",
	}, []string{"protocol"})
	refusedVec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailban_hook_connections_refused_total",
		Help: "Connections closed on accept because their listener held limits.max-connections already, by protocol.",
	}, []string{"protocol"})
	m := &metrics{
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_hook_watchers",
			Help: "WATCH streams open now.",
		}),
		watchDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_hook_watchers_dropped_total",
			Help: "WATCH streams closed because the client fell more than limits.watch-queue batches behind.",
		}),
		proto: map[string]*protoMetrics{},
	}
	m.collectors = []prometheus.Collector{reqVec, durVec, connVec, refusedVec, m.watchers, m.watchDrops}
	for _, p := range protocols {
		pm := &protoMetrics{
			duration:    durVec.WithLabelValues(p),
			connections: connVec.WithLabelValues(p),
			refused:     refusedVec.WithLabelValues(p),
		}
		for o, name := range outcomeNames {
			pm.requests[o] = reqVec.WithLabelValues(p, name)
		}
		m.proto[p] = pm
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

func (m *metrics) unregister(reg prometheus.Registerer) {
	for _, c := range m.collectors {
		reg.Unregister(c)
	}
}
