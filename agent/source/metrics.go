package source

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the series the sources of one agent share, labelled by source
// name (never by address or login). A nil *Metrics counts nothing.
type Metrics struct {
	restarts *prometheus.CounterVec
	problems *prometheus.CounterVec
	requests *prometheus.CounterVec
	events   *prometheus.CounterVec
}

// Webhook request results, the result label of mailban_webhook_requests_total.
const (
	resultAccepted     = "accepted"      // 200: every event counted, or already counted
	resultBadSignature = "bad_signature" // 401: X-Signature missing or wrong
	resultBadJSON      = "bad_json"      // 400: not the {"events":[...]} shape
	resultTooLarge     = "too_large"     // 413: body over the limit
	resultBadMethod    = "bad_method"    // 405: not a POST
	resultNotFound     = "not_found"     // 404: another URL path
	resultUnavailable  = "unavailable"   // 503: not saved in time, or shutting down; the sender retries
)

// Webhook event outcomes, the outcome label of mailban_webhook_events_total.
const (
	outcomeCounted   = "counted"   // became an Event
	outcomeDuplicate = "duplicate" // counted before: a retried delivery
	outcomeIgnored   = "ignored"   // a type mailban does not count, or a probe without credentials
	outcomeUnusable  = "unusable"  // a counted type without a usable remoteIp
)

// NewMetrics registers the sources' series with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_source_restarts_total",
			Help: "Times a source started its reader again (journalctl, a command) after it ended or failed to start.",
		}, []string{"source"}),
		problems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_source_errors_total",
			Help: "Problems a source met (a reader that failed to start or exited with an error, an unreadable record).",
		}, []string{"source"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_webhook_requests_total",
			Help: "Webhook requests received, by result (accepted, bad_signature, bad_json, too_large, bad_method, not_found, unavailable).",
		}, []string{"source", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailban_webhook_events_total",
			Help: "Events in accepted webhook requests, by outcome (counted, duplicate, ignored, unusable).",
		}, []string{"source", "outcome"}),
	}
	for _, c := range []prometheus.Collector{m.restarts, m.problems, m.requests, m.events} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register source metrics: %w", err)
		}
	}
	return m, nil
}

// begin makes a source's series exist at zero, so that a dashboard's
// rate() sees the first restart or error rather than a series appearing.
func (m *Metrics) begin(source, mode string) {
	if m == nil {
		return
	}
	m.restarts.WithLabelValues(source)
	m.problems.WithLabelValues(source)
	if mode == "webhook" {
		m.requests.WithLabelValues(source, resultAccepted)
		m.events.WithLabelValues(source, outcomeCounted)
	}
}

func (m *Metrics) restarted(source string) {
	if m != nil {
		m.restarts.WithLabelValues(source).Inc()
	}
}

func (m *Metrics) problem(source string) {
	if m != nil {
		m.problems.WithLabelValues(source).Inc()
	}
}

func (m *Metrics) request(source, result string) {
	if m != nil {
		m.requests.WithLabelValues(source, result).Inc()
	}
}

func (m *Metrics) event(source, outcome string, n int) {
	if m != nil && n > 0 {
		m.events.WithLabelValues(source, outcome).Add(float64(n))
	}
}
