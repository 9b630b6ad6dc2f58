package agent

import (
	"github.com/prometheus/client_golang/prometheus"
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
	}
	reg.MustRegister(m.linesRead, m.events, m.decisions, m.bansActive, m.locksActive, m.blocksActive,
		m.trackedAddresses, m.trackedLogins, m.enforcerErrors, m.stateCommits, m.stateCommitErrors,
		m.stateSize, m.reloadSuccess, m.reloadTime)
	return m
}
