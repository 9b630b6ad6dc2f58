package fleet

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	up               prometheus.Gauge
	roundTrips       prometheus.Counter
	roundTripSeconds prometheus.Histogram
	redisOps         prometheus.Counter
	localOps         prometheus.Counter
	errors           prometheus.Counter
	outbox           prometheus.Gauge
	resyncs          prometheus.Counter
	received         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_fleet_redis_up", Help: "1 while failures are counted in Redis, 0 while this host counts alone.",
		}),
		roundTrips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_round_trips_total", Help: "Round trips to Redis (one per burst of lines, plus resyncs).",
		}),
		roundTripSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailban_fleet_round_trip_seconds", Help: "Time a burst's tally took in Redis, round trip included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		redisOps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_events_shared_total", Help: "Failures and successes counted in Redis.",
		}),
		localOps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_events_local_total", Help: "Failures and successes counted on this host alone because Redis was unavailable.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_errors_total", Help: "Failed round trips to Redis.",
		}),
		outbox: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_fleet_outbox_decisions", Help: "Decisions waiting to be recorded in Redis and announced.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_resyncs_total", Help: "Times this host handed its own counts and decisions to Redis and caught up.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_decisions_received_total", Help: "Decisions announced by other hosts and read from the stream.",
		}),
	}
	reg.MustRegister(m.up, m.roundTrips, m.roundTripSeconds, m.redisOps, m.localOps, m.errors, m.outbox, m.resyncs, m.received)
	return m
}
