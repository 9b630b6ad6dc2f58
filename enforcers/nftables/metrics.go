package nftables

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the enforcer's series, labelled enforcer="nftables". None is
// labelled by address.
type metrics struct {
	flushes      prometheus.Counter
	flushErrors  prometheus.Counter
	flushSeconds prometheus.Histogram
	resyncs      prometheus.Counter
	elements     *prometheus.GaugeVec
	inSync       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	labels := prometheus.Labels{"enforcer": "nftables"}
	m := &metrics{
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_enforcer_flushes_total", ConstLabels: labels,
			Help: "Batches of changes the kernel accepted (one netlink transaction each).",
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_enforcer_flush_errors_total", ConstLabels: labels,
			Help: "Batches of changes the kernel refused or that could not be sent; each is retried after reading the kernel afresh.",
		}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailban_enforcer_flush_duration_seconds", ConstLabels: labels,
			Help:    "Time to send one batch of changes and get the kernel's answer.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, .5, 2},
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_enforcer_resyncs_total", ConstLabels: labels,
			Help: "Attempts to read the whole table from the kernel and make it match (at start, at reload, and after a failure until one succeeds).",
		}),
		elements: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mailban_enforcer_set_entries", ConstLabels: labels,
			Help: "Intervals (addresses or networks) held in each kernel set.",
		}, []string{"set"}),
		inSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_enforcer_in_sync", ConstLabels: labels,
			Help: "1 when the kernel holds every ban and block in force; 0 while a failed update waits to be retried.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	m.flushes = register(reg, m.flushes, &errs)
	m.flushErrors = register(reg, m.flushErrors, &errs)
	m.flushSeconds = register(reg, m.flushSeconds, &errs)
	m.resyncs = register(reg, m.resyncs, &errs)
	m.elements = register(reg, m.elements, &errs)
	m.inSync = register(reg, m.inSync, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}

// register adds c to reg, or returns the collector already registered
// under its name: a reload builds a new enforcer on the same registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		*errs = append(*errs, err)
	}
	return c
}
