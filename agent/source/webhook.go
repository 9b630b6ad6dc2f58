package source

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of WebhookConfig.
const (
	DefaultWebhookListen  = "127.0.0.1:9848"
	DefaultWebhookPath    = "/"
	DefaultMaxBodyBytes   = 8 << 20
	DefaultAckTimeout     = 20 * time.Second
	DefaultWebhookHistory = 4096
)

// WebhookConfig says where a Webhook source listens and what it accepts.
type WebhookConfig struct {
	Name   string // source name (Line.Source)
	Listen string // host:port; "" means DefaultWebhookListen (loopback)
	Path   string // the URL path events are posted to; "" means "/"
	// Key, when set, is the HMAC-SHA256 key Stalwart signs with
	// (signature-key): a request without a valid X-Signature is refused.
	Key []byte
	// MaxBodyBytes refuses longer requests (413). Zero means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// AckTimeout is how long a request waits for its events to be saved
	// with the counters before it is answered 503 (and retried by its
	// sender). Zero means DefaultAckTimeout.
	AckTimeout time.Duration
	// History is how many counted events are remembered to recognise a
	// retried delivery. Zero means DefaultWebhookHistory.
	History int
}

func (cfg WebhookConfig) withDefaults() (WebhookConfig, error) {
	if cfg.Name == "" {
		return cfg, errors.New("name is empty")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultWebhookListen
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return cfg, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	if cfg.Path == "" {
		cfg.Path = DefaultWebhookPath
	}
	if cfg.Path[0] != '/' {
		return cfg, fmt.Errorf("URL path %q does not start with /", cfg.Path)
	}
	switch {
	case cfg.MaxBodyBytes < 0 || cfg.AckTimeout < 0 || cfg.History < 0:
		return cfg, errors.New("negative limit")
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.History == 0 {
		cfg.History = DefaultWebhookHistory
	}
	return cfg, nil
}

// Webhook receives Stalwart's webhook deliveries: POSTs of
// {"events":[{"id","createdAt","type","data":{...}}]}, signed in
// X-Signature (base64 of the body's HMAC-SHA256) when a key is set. The
// event types mailban counts (stalwart.go) become Lines with their Event.
//
// A push feed cannot be read again, so "resume exactly" rests on the
// sender: Stalwart keeps a batch and posts it again (merged with newer
// events) until it gets a 2xx, for up to its discard-after (5m by
// default). A request is therefore answered 200 only once its events are
// saved in the state file together with the counters they changed (the
// agent calls Committed after each checkpoint); a crash before that loses
// the in-memory counts and the answer alike, and the retry counts them once.
// What remains is the crash after the save and before the answer, or an
// answer lost on the way: the retry then brings events already counted. So
// the cursor saved with the counters holds the digests of the last History
// counted events, and an event whose digest is among them is a duplicate,
// answered 200 and not counted. Stalwart's event id does not serve: it is
// the event's second and type ("<unix seconds><type number>"), the same for
// two failures of one type in one second; the digest is of the whole event
// as sent, which a retry repeats byte for byte. Two events alike in every
// field (type, second, address, port, account) but delivered apart are
// counted once: the price of never counting a retry twice.
type Webhook struct {
	cfg    WebhookConfig
	log    *slog.Logger
	health *health
	m      *Metrics
	now    func() time.Time
	ran    atomic.Bool
	addr   atomic.Pointer[net.TCPAddr]

	// Set by Run before serving.
	runCtx context.Context
	out    chan<- Line

	batchMu sync.Mutex        // one request's events at a time, in order
	seen    map[uint64]uint64 // digest of a counted event → the batch that counted it
	order   []uint64          // the digests in seen, oldest first
	seq     uint64            // the last batch delivered

	ackMu     sync.Mutex
	committed uint64        // the last batch saved
	acked     chan struct{} // closed when committed grows
	refused   map[string]bool
}

// webhookStateV1 marks the first encoding of a Webhook's cursor.
const webhookStateV1 = 1

// NewWebhook checks cfg and makes a Webhook source. saved holds the cursor
// last delivered (and processed) in an earlier run under the stream "".
func NewWebhook(cfg WebhookConfig, saved map[string][]byte, logger *slog.Logger, m *Metrics) (*Webhook, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("configure webhook source %q: %w", cfg.Name, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("source", cfg.Name)
	h := newHealth(cfg.Name, "webhook", logger, m)
	h.update(func(st *StreamStatus) { st.Stream = "http://" + cfg.Listen + cfg.Path })
	w := &Webhook{
		cfg:     cfg,
		log:     logger,
		health:  h,
		m:       m,
		now:     time.Now,
		seen:    map[uint64]uint64{},
		acked:   make(chan struct{}),
		refused: map[string]bool{},
	}
	if v := saved[""]; v != nil {
		seq, digests, err := decodeWebhookState(v)
		if err != nil {
			return nil, fmt.Errorf("configure webhook source %q: saved cursor: %w", cfg.Name, err)
		}
		w.seq, w.committed = seq, seq
		for _, d := range digests {
			w.remember(d, seq)
		}
	}
	return w, nil
}

func decodeWebhookState(b []byte) (uint64, []uint64, error) {
	if len(b) == 0 || b[0] != webhookStateV1 {
		return 0, nil, fmt.Errorf("%w: not a webhook position", ErrBadCursor)
	}
	seq, k := binary.Uvarint(b[1:])
	if k <= 0 {
		return 0, nil, fmt.Errorf("%w: truncated batch number", ErrBadCursor)
	}
	rest := b[1+k:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > uint64(len(rest)-k)/8 || uint64(len(rest)-k) != 8*n {
		return 0, nil, fmt.Errorf("%w: digest list does not add up", ErrBadCursor)
	}
	rest = rest[k:]
	digests := make([]uint64, n)
	for i := range digests {
		digests[i] = binary.BigEndian.Uint64(rest[8*i:])
	}
	return seq, digests, nil
}

// state encodes the batch number and the remembered digests: version,
// uvarint batch, uvarint count, 8 bytes per digest, oldest first.
func (w *Webhook) state() []byte {
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+8*len(w.order))
	b = append(b, webhookStateV1)
	b = binary.AppendUvarint(b, w.seq)
	b = binary.AppendUvarint(b, uint64(len(w.order)))
	for _, d := range w.order {
		b = binary.BigEndian.AppendUint64(b, d)
	}
	return b
}

func (w *Webhook) remember(digest, seq uint64) {
	if len(w.order) >= w.cfg.History {
		delete(w.seen, w.order[0])
		w.order = w.order[1:]
	}
	w.seen[digest] = seq
	w.order = append(w.order, digest)
}

// Name is the source's configured name.
func (w *Webhook) Name() string { return w.cfg.Name }

// Status reports the receiver: Lines are events counted, Errors requests
// refused, LastError the last refusal.
func (w *Webhook) Status() []StreamStatus { return w.health.status() }

// Addr is the address the receiver listens on, once it does; nil before.
func (w *Webhook) Addr() net.Addr {
	if a := w.addr.Load(); a != nil {
		return a
	}
	return nil
}

// Committed tells the source that the agent saved value, a cursor it
// delivered, with the counters: requests whose events it covers are
// answered.
func (w *Webhook) Committed(stream string, value []byte) {
	if stream != "" || len(value) < 2 || value[0] != webhookStateV1 {
		return
	}
	seq, k := binary.Uvarint(value[1:])
	if k <= 0 {
		return
	}
	w.ackMu.Lock()
	defer w.ackMu.Unlock()
	if seq > w.committed {
		w.committed = seq
		close(w.acked)
		w.acked = make(chan struct{})
	}
}

// waitSaved waits until batch seq is saved; false when the wait ended
// first (timeout, the request gone, the source stopping).
func (w *Webhook) waitSaved(reqCtx context.Context, seq uint64) bool {
	t := time.NewTimer(w.cfg.AckTimeout)
	defer t.Stop()
	for {
		w.ackMu.Lock()
		done, acked := w.committed >= seq, w.acked
		w.ackMu.Unlock()
		if done {
			return true
		}
		select {
		case <-acked:
		case <-t.C:
			return false
		case <-reqCtx.Done():
			return false
		case <-w.runCtx.Done():
			return false
		}
	}
}

// Run listens and serves until ctx is done, then stops accepting, answers
// the requests in progress and returns nil. A listen address in use is
// logged and tried again. The events of a request are delivered whole: the
// consumer of out must keep taking lines until Run returns (as the agent
// does). Run may be called once.
func (w *Webhook) Run(ctx context.Context, out chan<- Line) error {
	if !w.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("run webhook source %q: Run called twice", w.cfg.Name)
	}
	w.runCtx, w.out = ctx, out
	delay := DefaultRestartDelay
	var ln net.Listener
	for {
		var err error
		var lc net.ListenConfig
		ln, err = lc.Listen(ctx, "tcp", w.cfg.Listen)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		w.health.problem("listen", err)
		w.health.update(func(st *StreamStatus) { st.State = stateError })
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, DefaultMaxRestartDelay)
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		w.addr.Store(a)
	}
	w.health.recovered()
	w.health.update(func(st *StreamStatus) { st.State = stateRunning })
	w.log.Info("webhook receiver listening", "address", ln.Addr().String(), "path", w.cfg.Path, "signed", w.cfg.Key != nil)
	srv := &http.Server{
		Handler:           w,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		w.health.problem("serve", err)
		return fmt.Errorf("serve webhooks: %w", err)
	case <-ctx.Done():
	}
	// Requests waiting for a save answer 503 at once (runCtx is done);
	// Shutdown waits for them.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-served
	return nil
}

// refuse answers a request that is not accepted, counts it, and logs the
// first refusal of each kind.
func (w *Webhook) refuse(rw http.ResponseWriter, r *http.Request, code int, result, why string) {
	w.m.request(w.cfg.Name, result)
	w.health.update(func(st *StreamStatus) { st.Errors++; st.LastError = result + ": " + why })
	w.ackMu.Lock()
	first := !w.refused[result]
	w.refused[result] = true
	w.ackMu.Unlock()
	if first && code != http.StatusServiceUnavailable {
		w.log.Warn("webhook request refused; further ones like it are counted, not logged",
			"result", result, "status", code, "why", why, "client", r.RemoteAddr)
	}
	if code == http.StatusMethodNotAllowed {
		rw.Header().Set("Allow", http.MethodPost)
	}
	http.Error(rw, why, code)
}

// webhookEvent is one event of a delivery.
type webhookEvent struct {
	ID        string                     `json:"id"`
	CreatedAt string                     `json:"createdAt"`
	Type      string                     `json:"type"`
	Data      map[string]json.RawMessage `json:"data"`
}

// dataString is the text of a data value: a string as it is, a number or a
// boolean as written; "" for anything else.
func dataString(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f':
		return string(raw)
	}
	return ""
}

// ServeHTTP handles one delivery.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.URL.Path != w.cfg.Path {
		w.refuse(rw, r, http.StatusNotFound, resultNotFound, "events are posted to "+w.cfg.Path)
		return
	}
	if r.Method != http.MethodPost {
		w.refuse(rw, r, http.StatusMethodNotAllowed, resultBadMethod, "events are POSTed")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, w.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			w.refuse(rw, r, http.StatusRequestEntityTooLarge, resultTooLarge, fmt.Sprintf("body over %d bytes", w.cfg.MaxBodyBytes))
			return
		}
		w.refuse(rw, r, http.StatusBadRequest, resultBadJSON, "read body: "+err.Error())
		return
	}
	if w.cfg.Key != nil && !validSignature(w.cfg.Key, body, r.Header.Get("X-Signature")) {
		w.refuse(rw, r, http.StatusUnauthorized, resultBadSignature, "X-Signature missing or not the body's HMAC-SHA256 with the configured key")
		return
	}
	var delivery struct {
		Events *[]json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(body, &delivery); err != nil || delivery.Events == nil {
		why := `want {"events":[...]}`
		if err != nil {
			why += ": " + err.Error()
		}
		w.refuse(rw, r, http.StatusBadRequest, resultBadJSON, why)
		return
	}
	events := make([]webhookEvent, len(*delivery.Events))
	digests := make([]uint64, len(events))
	evidence := make([]string, len(events))
	var buf bytes.Buffer
	for i, raw := range *delivery.Events {
		if err := json.Unmarshal(raw, &events[i]); err != nil || events[i].Type == "" {
			why := fmt.Sprintf("event %d is not an object with a type", i)
			if err != nil {
				why += ": " + err.Error()
			}
			w.refuse(rw, r, http.StatusBadRequest, resultBadJSON, why)
			return
		}
		buf.Reset()
		if json.Compact(&buf, raw) != nil {
			buf.Write(raw)
		}
		h := fnv.New64a()
		h.Write(buf.Bytes())
		digests[i] = h.Sum64()
		evidence[i] = capEvidence(buf.String())
	}
	seq, counts, ok := w.accept(events, digests, evidence)
	if !ok {
		w.refuse(rw, r, http.StatusServiceUnavailable, resultUnavailable, "mailban is stopping; deliver again later")
		return
	}
	if seq > 0 && !w.waitSaved(r.Context(), seq) {
		w.refuse(rw, r, http.StatusServiceUnavailable, resultUnavailable, "events not saved in time; deliver again later")
		return
	}
	w.m.request(w.cfg.Name, resultAccepted)
	for outcome, n := range counts {
		w.m.event(w.cfg.Name, outcome, n)
	}
	rw.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(rw, `{"counted":%d,"duplicate":%d,"ignored":%d,"unusable":%d}`+"\n",
		counts[outcomeCounted], counts[outcomeDuplicate], counts[outcomeIgnored], counts[outcomeUnusable])
}

func validSignature(key, body []byte, header string) bool {
	got, err := base64.StdEncoding.DecodeString(header)
	if err != nil || len(got) != sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// accept delivers the new events of a request as Lines, the last carrying
// the cursor, and returns the batch whose saving answers the request (0:
// none to wait for) and the events per outcome. It fails only when the
// source is stopping before anything was delivered.
func (w *Webhook) accept(events []webhookEvent, digests []uint64, evidence []string) (uint64, map[string]int, bool) {
	w.batchMu.Lock()
	defer w.batchMu.Unlock()
	if w.runCtx.Err() != nil {
		return 0, nil, false // the retry brings it
	}
	counts := map[string]int{}
	var lines []Line
	var wait uint64
	now := w.now()
	next := w.seq + 1
	for i, e := range events {
		// Alike events in one batch are distinct events; one counted in
		// an earlier batch is a retry.
		if s, dup := w.seen[digests[i]]; dup && s != next {
			counts[outcomeDuplicate]++
			wait = max(wait, s)
			continue
		}
		t, err := time.Parse(time.RFC3339, e.CreatedAt)
		if err != nil {
			t = now
		}
		f := stalwartFields{
			typ:       e.Type,
			remoteIP:  dataString(e.Data["remoteIp"]),
			account:   dataString(e.Data["accountName"]),
			listener:  dataString(e.Data["listenerId"]),
			localPort: dataString(e.Data["localPort"]),
			details:   dataString(e.Data["details"]),
			reason:    dataString(e.Data["reason"]),
		}
		ev, outcome := stalwartEvent(f, t, FormatStalwartWebhook, evidence[i])
		counts[outcome]++
		if outcome != outcomeCounted {
			continue
		}
		w.remember(digests[i], next)
		lines = append(lines, Line{Source: w.cfg.Name, Text: evidence[i], Arrival: now, Event: &ev})
	}
	if len(lines) == 0 {
		return wait, counts, true
	}
	w.seq = next
	lines[len(lines)-1].Cursor = Cursor{Value: w.state()}
	// Whole: a batch cut short would leave counted events without the
	// cursor that remembers them.
	for _, l := range lines {
		w.out <- l
	}
	w.health.update(func(st *StreamStatus) { st.Lines += uint64(len(lines)); st.LastRead = now })
	return next, counts, true
}
