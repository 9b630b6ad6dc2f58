package agent

import (
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailban/mailban/agent/source"
	"github.com/mailban/mailban/rules"
)

// metrics are the agent's own Prometheus series. None is labelled by
// address or login: those are unbounded and attacker-chosen.
type metrics struct {
	linesRead         *prometheus.CounterVec
	events            *prometheus.CounterVec
	decisions         *prometheus.CounterVec
	bansActive        prometheus.Gauge
	locksActive       prometheus.Gauge
	blocksActive      prometheus.Gauge
	trackedAddresses  prometheus.Gauge
	trackedLogins     prometheus.Gauge
	enforcerErrors    *prometheus.CounterVec
	stateCommits      prometheus.Counter
	stateCommitErrors prometheus.Counter
	stateSize         prometheus.Gauge
	reloadSuccess     prometheus.Gauge
	reloadTime        prometheus.Gauge
	reloads           *prometheus.CounterVec
	enforcerHealthy   *prometheus.GaugeVec
	enforcerApply     *prometheus.HistogramVec
	buildInfo         *prometheus.GaugeVec
	startTime         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		linesRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_lines_read_total", Help: "Log lines read, by source.",
		}, []string{"source"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_events_total", Help: "Authentication events parsed, by format, kind and service.",
		}, []string{"format", "kind", "service"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_decisions_total", Help: "Decisions taken, by action (ban, unban, block, unblock, lock, unlock).",
		}, []string{"action"}),
		bansActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_bans_active", Help: "Addresses and networks banned now.",
		}),
		locksActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_login_locks_active", Help: "Logins locked now.",
		}),
		blocksActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_blocks_active", Help: "Networks blocked by configuration or by an operator.",
		}),
		trackedAddresses: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_tracked_addresses", Help: "Addresses (IPv6: prefixes) with failures inside their window.",
		}),
		trackedLogins: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_tracked_logins", Help: "Logins with failures inside their window.",
		}),
		enforcerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_enforcer_errors_total", Help: "Failed attempts to apply decisions, by enforcer.",
		}, []string{"enforcer"}),
		stateCommits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_state_commits_total", Help: "Checkpoints written to the state file.",
		}),
		stateCommitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_state_commit_errors_total", Help: "Checkpoints that could not be written (retried at the next one).",
		}),
		stateSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_state_size_bytes", Help: "Size of the state file.",
		}),
		reloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_config_last_reload_successful", Help: "1 if the last configuration reload succeeded.",
		}),
		reloadTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_config_last_reload_success_timestamp_seconds", Help: "When the configuration was last loaded successfully.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_config_reloads_total", Help: "Configuration reloads (SIGHUP or mailban reload), by result (success, failure).",
		}, []string{"result"}),
		enforcerHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mailban_enforcer_healthy", Help: "1 if the enforcer's last attempt to apply decisions succeeded, 0 if it failed.",
		}, []string{"enforcer"}),
		enforcerApply: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mailban_enforcer_apply_duration_seconds", Help: "Time an enforcer took to apply one batch of decisions.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"enforcer"}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mailban_build_info", Help: "Always 1; the labels say which mailban runs.",
		}, []string{"version", "goversion"}),
		startTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_start_time_seconds", Help: "When the daemon started, in seconds since the Unix epoch.",
		}),
	}
	reg.MustRegister(m.linesRead, m.events, m.decisions, m.bansActive, m.locksActive, m.blocksActive,
		m.trackedAddresses, m.trackedLogins, m.enforcerErrors, m.stateCommits, m.stateCommitErrors,
		m.stateSize, m.reloadSuccess, m.reloadTime, m.reloads, m.enforcerHealthy, m.enforcerApply,
		m.buildInfo, m.startTime)
	// Series whose label values are known now start at zero, so that
	// rate() and absent() see them before the first event.
	for _, a := range []rules.Action{rules.Ban, rules.Unban, rules.Block, rules.Unblock, rules.Lock, rules.Unlock} {
		m.decisions.WithLabelValues(a.String())
	}
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// statuser is a Source that can say what each of its streams is doing.
type statuser interface {
	Status() []source.StreamStatus
}

// sourceCollector reports, at scrape time, how far behind each running
// source is. The pipeline goroutine registers sources as it starts and
// stops them.
type sourceCollector struct {
	mu      sync.Mutex
	sources map[string]statuser

	lag, lastRead, streams *prometheus.Desc
}

func newSourceCollector() *sourceCollector {
	return &sourceCollector{
		sources: map[string]statuser{},
		lag: prometheus.NewDesc("mailban_source_lag_bytes",
			"Bytes written to a source's files and not yet read (file size minus read offset, summed over its files).",
			[]string{"source"}, nil),
		lastRead: prometheus.NewDesc("mailban_source_last_read_timestamp_seconds",
			"When a source last delivered a line, in seconds since the Unix epoch.",
			[]string{"source"}, nil),
		streams: prometheus.NewDesc("mailban_source_streams",
			"Files a source follows, by state (waiting, following, detached, error).",
			[]string{"source", "state"}, nil),
	}
}

func (c *sourceCollector) set(name string, s statuser) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s == nil {
		delete(c.sources, name)
		return
	}
	c.sources[name] = s
}

func (c *sourceCollector) snapshot() map[string]statuser {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]statuser, len(c.sources))
	for k, v := range c.sources {
		out[k] = v
	}
	return out
}

// Describe implements prometheus.Collector.
func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lag
	ch <- c.lastRead
	ch <- c.streams
}

// Collect implements prometheus.Collector.
func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	for name, s := range c.snapshot() {
		var lag int64
		var last time.Time
		states := map[string]int{"waiting": 0, "following": 0, "detached": 0, "error": 0}
		for _, st := range s.Status() {
			lag += streamLag(st)
			if st.LastRead.After(last) {
				last = st.LastRead
			}
			states[st.State]++
		}
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(lag), name)
		if !last.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.lastRead, prometheus.GaugeValue, float64(last.UnixNano())/1e9, name)
		}
		for state, n := range states {
			ch <- prometheus.MustNewConstMetric(c.streams, prometheus.GaugeValue, float64(n), name, state)
		}
	}
}

// streamLag is how many bytes of a stream's current file are unread.
func streamLag(st source.StreamStatus) int64 {
	if st.State != "following" && st.State != "detached" {
		return 0
	}
	return max(0, st.Size-st.Offset)
}

func (m *metrics) setBuild(version string, started time.Time) {
	m.buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	m.startTime.Set(float64(started.Unix()))
}
