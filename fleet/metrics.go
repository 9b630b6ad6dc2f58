package fleet

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats counts what a Store did, for status output and tests.
type Stats struct {
	Host         string // this host's name in the fleet
	Addr         string // the Redis server, host:port
	Up           bool
	DownSince    time.Time // when Redis was lost; zero while up
	LastError    string    // why Redis was last lost; kept after it returns
	RoundTrips   int64     // to Redis
	SharedEvents int64     // failures and successes counted in Redis
	LocalEvents  int64     // counted on this host alone, Redis being unavailable
	Errors       int64     // failed round trips
	Outbox       int       // decisions waiting to be recorded in Redis
	Received     int64     // decisions of other hosts read
	Resyncs      int64
	LostReplies  int64 // bursts Redis applied though their reply was lost
	BytesSent    int64 // arguments of tallies (keys, ops)
	BytesRead    int64 // replies of tallies
}

// counter is a Prometheus counter that also keeps its value for Stats.
type counter struct {
	prometheus.Counter
	n atomic.Int64
}

func (c *counter) Inc()          { c.n.Add(1); c.Counter.Inc() }
func (c *counter) Add(v float64) { c.n.Add(int64(v)); c.Counter.Add(v) }
func (c *counter) value() int64  { return c.n.Load() }

func newCounter(opts prometheus.CounterOpts) *counter {
	return &counter{Counter: prometheus.NewCounter(opts)}
}

type metrics struct {
	up               prometheus.Gauge
	roundTrips       *counter
	roundTripSeconds prometheus.Histogram
	redisOps         *counter
	localOps         *counter
	errors           *counter
	outbox           prometheus.Gauge
	resyncs          *counter
	received         *counter
	lostReplies      *counter
	bytesSent        atomic.Int64
	bytesRead        atomic.Int64
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_fleet_redis_up", Help: "1 while failures are counted in Redis, 0 while this host counts alone.",
		}),
		roundTrips: newCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_round_trips_total", Help: "Round trips to Redis (one per burst of lines, plus resyncs).",
		}),
		roundTripSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mailban_fleet_round_trip_seconds", Help: "Time a burst's tally took in Redis, round trip included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		redisOps: newCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_events_shared_total", Help: "Failures and successes counted in Redis.",
		}),
		localOps: newCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_events_local_total", Help: "Failures and successes counted on this host alone because Redis was unavailable.",
		}),
		errors: newCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_errors_total", Help: "Failed round trips to Redis.",
		}),
		outbox: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailban_fleet_outbox_decisions", Help: "Decisions waiting to be recorded in Redis and announced.",
		}),
		resyncs: newCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_resyncs_total", Help: "Times this host handed its own counts and decisions to Redis and caught up.",
		}),
		received: newCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_decisions_received_total", Help: "Decisions announced by other hosts and read from the stream.",
		}),
		lostReplies: newCounter(prometheus.CounterOpts{
			Name: "mailban_fleet_lost_replies_total", Help: "Bursts that Redis applied though their reply did not arrive in time (counted once all the same).",
		}),
	}
	reg.MustRegister(m.lostReplies, m.up, m.roundTrips, m.roundTripSeconds, m.redisOps, m.localOps, m.errors, m.outbox, m.resyncs, m.received)
	return m
}
