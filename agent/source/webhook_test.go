package source

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailban/mailban/parsers"
)

const webhookKey = "s3cr3t-key-shared-with-stalwart"

// stalwartEventJSON is one event as Stalwart's webhook serializer writes
// it: id (second and type number), createdAt, type, data.
func stalwartEventJSON(id, createdAt, typ string, data map[string]any) json.RawMessage {
	b, err := json.Marshal(struct {
		ID        string         `json:"id"`
		CreatedAt string         `json:"createdAt"`
		Type      string         `json:"type"`
		Data      map[string]any `json:"data"`
	}{id, createdAt, typ, data})
	if err != nil {
		panic(err)
	}
	return b
}

// failed is an auth.failed event of login from addr.
func failed(second int, addr, login string) json.RawMessage {
	return stalwartEventJSON(fmt.Sprintf("17680328%02d0533", second), fmt.Sprintf("2026-01-10T08:15:%02dZ", second), "auth.failed",
		map[string]any{"listenerId": "imap", "localPort": 143, "remoteIp": addr, "remotePort": 51514, "accountName": login})
}

// deliver posts events as Stalwart does (one JSON body, signed with key
// when key is set) and returns the status and body of the answer.
func deliver(t *testing.T, url, key string, events ...json.RawMessage) (int, string) {
	t.Helper()
	body, err := json.Marshal(map[string][]json.RawMessage{"events": events})
	if err != nil {
		t.Fatal(err)
	}
	return post(t, url, key, body)
}

func post(t *testing.T, url, key string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write(body)
		req.Header.Set("X-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// receiver is a running Webhook whose deliveries are "saved" (Committed)
// as the agent would after a checkpoint, while saving is on.
type receiver struct {
	w      *Webhook
	c      *collector
	url    string
	reg    *prometheus.Registry
	saving atomic.Bool
	logs   *recordLog
}

func startWebhook(t *testing.T, cfg WebhookConfig, saved map[string][]byte) *receiver {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "stalwart"
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	r := &receiver{reg: prometheus.NewRegistry(), logs: &recordLog{}}
	m, err := NewMetrics(r.reg)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(teeHandler{testLogger(t).Handler(), r.logs})
	r.w, err = NewWebhook(cfg, saved, logger, m)
	if err != nil {
		t.Fatal(err)
	}
	r.saving.Store(true)
	r.c = collectWith(t, r.w, func(l Line) {
		if l.Cursor.Value != nil && r.saving.Load() {
			r.w.Committed(l.Cursor.Stream, l.Cursor.Value)
		}
	})
	waitFor(t, "the receiver to listen", func() bool { return r.w.Addr() != nil })
	r.url = "http://" + r.w.Addr().String() + r.w.cfg.Path
	return r
}

func (r *receiver) requests(result string) float64 {
	return counterValue(r.c.t, r.w.m.requests.WithLabelValues(r.w.cfg.Name, result))
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// recordLog keeps the messages logged.
type recordLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *recordLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// teeHandler logs to the test and records each message.
type teeHandler struct {
	slog.Handler
	rec *recordLog
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	h.rec.mu.Lock()
	h.rec.msgs = append(h.rec.msgs, r.Message)
	h.rec.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.Handler.WithAttrs(as), h.rec}
}

func (h teeHandler) WithGroup(g string) slog.Handler {
	return teeHandler{h.Handler.WithGroup(g), h.rec}
}

// TestWebhookEvents: what of a signed delivery counts, and as what.
func TestWebhookEvents(t *testing.T) {
	r := startWebhook(t, WebhookConfig{Key: []byte(webhookKey), Path: "/stalwart"}, nil)
	events := []json.RawMessage{
		failed(2, "203.0.113.7", "Alice@Example.org"),
		stalwartEventJSON("17680328030533", "2026-01-10T08:15:03Z", "auth.failed", map[string]any{
			"listenerId": "https", "remoteIp": "198.51.100.9", "details": "Missing Authorization header."}),
		stalwartEventJSON("17680328040532", "2026-01-10T08:15:04Z", "auth.success", map[string]any{
			"listenerId": "submissions", "remoteIp": "::ffff:192.0.2.10", "accountName": "bob", "accountId": 42}),
		stalwartEventJSON("17680328050700", "2026-01-10T08:16:01Z", "security.authentication-ban", map[string]any{
			"remoteIp": "2001:db8::7", "accountName": "alice", "id": "a2", "spanId": 8823, "localPort": 993}),
		stalwartEventJSON("17680328060705", "2026-01-10T08:16:05Z", "security.ip-block-expired", map[string]any{"remoteIp": "203.0.113.7"}),
		stalwartEventJSON("17680328070100", "2026-01-10T08:16:07Z", "delivery.delivered", map[string]any{"remoteIp": "203.0.113.8"}),
		stalwartEventJSON("17680328080533", "2026-01-10T08:16:08Z", "auth.failed", map[string]any{"remoteIp": "unknown", "accountName": "x"}),
	}
	code, body := deliver(t, r.url, webhookKey, events...)
	if code != http.StatusOK || body != `{"counted":3,"duplicate":0,"ignored":3,"unusable":1}` {
		t.Fatalf("answer %d %s", code, body)
	}
	got := r.c.snapshot()
	want := []parsers.Event{
		{Time: time.Date(2026, 1, 10, 8, 15, 2, 0, time.UTC), Kind: parsers.AuthFailure, Service: parsers.ServiceIMAP,
			Addr: netip.MustParseAddr("203.0.113.7"), Login: "alice@example.org", Attempts: 1, Format: FormatStalwartWebhook},
		{Time: time.Date(2026, 1, 10, 8, 15, 4, 0, time.UTC), Kind: parsers.AuthSuccess, Service: parsers.ServiceSMTP,
			Addr: netip.MustParseAddr("192.0.2.10"), Login: "bob", Attempts: 1, Format: FormatStalwartWebhook},
		{Time: time.Date(2026, 1, 10, 8, 16, 1, 0, time.UTC), Kind: parsers.AuthFailure, Service: parsers.ServiceIMAP,
			Addr: netip.MustParseAddr("2001:db8::7"), Login: "alice", Attempts: 1, Format: FormatStalwartWebhook},
	}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d", len(got), len(want))
	}
	for i, w := range want {
		ev := got[i].Event
		if ev == nil {
			t.Fatalf("line %d has no event", i)
		}
		if !strings.Contains(ev.Evidence, `"type":`) || got[i].Text != ev.Evidence {
			t.Errorf("line %d: evidence %q, text %q", i, ev.Evidence, got[i].Text)
		}
		ev2 := *ev
		ev2.Evidence = ""
		if ev2 != w {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, ev2, w)
		}
		if (got[i].Cursor.Value != nil) != (i == len(want)-1) {
			t.Errorf("line %d: cursor %x; only the last line of a delivery has one", i, got[i].Cursor.Value)
		}
	}
	for outcome, n := range map[string]float64{outcomeCounted: 3, outcomeIgnored: 3, outcomeUnusable: 1} {
		if v := counterValue(t, r.w.m.events.WithLabelValues("stalwart", outcome)); v != n {
			t.Errorf("events %s = %v, want %v", outcome, v, n)
		}
	}
	if r.requests(resultAccepted) != 1 {
		t.Errorf("accepted requests = %v, want 1", r.requests(resultAccepted))
	}
}

// TestWebhookRefuses: what is not a signed delivery of events to the path
// is refused with a 4xx, counted, logged once per kind, and changes
// nothing: a good delivery afterwards is counted as usual.
func TestWebhookRefuses(t *testing.T) {
	r := startWebhook(t, WebhookConfig{Key: []byte(webhookKey), MaxBodyBytes: 4096}, nil)
	good, _ := json.Marshal(map[string][]json.RawMessage{"events": {failed(1, "203.0.113.7", "alice")}})
	cases := []struct {
		name   string
		send   func() (int, string)
		code   int
		result string
	}{
		{"wrong key", func() (int, string) { return post(t, r.url, "another key", good) }, 401, resultBadSignature},
		{"no signature", func() (int, string) { return post(t, r.url, "", good) }, 401, resultBadSignature},
		{"signature of another body", func() (int, string) {
			req, _ := http.NewRequest(http.MethodPost, r.url, bytes.NewReader(good))
			mac := hmac.New(sha256.New, []byte(webhookKey))
			mac.Write([]byte(`{"events":[]}`))
			req.Header.Set("X-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, ""
		}, 401, resultBadSignature},
		{"not JSON", func() (int, string) { return post(t, r.url, webhookKey, []byte("events: [")) }, 400, resultBadJSON},
		{"not a delivery", func() (int, string) { return post(t, r.url, webhookKey, []byte(`{"event":{}}`)) }, 400, resultBadJSON},
		{"an event without a type", func() (int, string) { return post(t, r.url, webhookKey, []byte(`{"events":[{"id":"1"}]}`)) }, 400, resultBadJSON},
		{"too large", func() (int, string) {
			return post(t, r.url, webhookKey, []byte(`{"events":[],"pad":"`+strings.Repeat("x", 5000)+`"}`))
		}, 413, resultTooLarge},
		{"GET", func() (int, string) {
			resp, err := http.Get(r.url)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode, ""
		}, 405, resultBadMethod},
		{"another path", func() (int, string) { return post(t, r.url+"other", webhookKey, good) }, 404, resultNotFound},
	}
	for _, tc := range cases {
		for range 2 {
			if code, body := tc.send(); code != tc.code {
				t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.code)
			}
		}
	}
	for _, result := range []string{resultBadSignature, resultBadJSON, resultTooLarge, resultBadMethod, resultNotFound} {
		if r.requests(result) == 0 {
			t.Errorf("no %s request counted", result)
		}
	}
	if r.requests(resultBadSignature) != 6 || r.requests(resultBadJSON) != 6 {
		t.Errorf("bad_signature %v, bad_json %v; want 6 each", r.requests(resultBadSignature), r.requests(resultBadJSON))
	}
	if n := r.logs.count("webhook request refused; further ones like it are counted, not logged"); n != 5 {
		t.Errorf("refusals logged %d times, want once per kind (5)", n)
	}
	if got := r.c.snapshot(); len(got) != 0 {
		t.Fatalf("refused requests delivered %d lines", len(got))
	}
	if code, body := post(t, r.url, webhookKey, good); code != 200 || body != `{"counted":1,"duplicate":0,"ignored":0,"unusable":0}` {
		t.Fatalf("good delivery after the bad ones: %d %s", code, body)
	}
	r.c.waitLines(1)
}

// TestWebhookResumeExactly is Stalwart's retry against mailban's saves:
// a delivery answered 503 because it was not saved in time, one whose
// answer was lost after it was saved (mailban restarted), and one lost in
// a crash before it was saved. Across all, each event counts once.
func TestWebhookResumeExactly(t *testing.T) {
	cfg := WebhookConfig{Key: []byte(webhookKey), AckTimeout: 100 * time.Millisecond}
	r := startWebhook(t, cfg, nil)
	e1, e2, e3, e4 := failed(1, "203.0.113.1", "a"), failed(2, "203.0.113.2", "b"), failed(3, "203.0.113.3", "c"), failed(4, "203.0.113.4", "d")

	// Not saved in time: 503; the retry is not counted again, and is
	// answered once the save comes.
	r.saving.Store(false)
	if code, body := deliver(t, r.url, webhookKey, e1, e2); code != http.StatusServiceUnavailable {
		t.Fatalf("unsaved delivery answered %d %s, want 503", code, body)
	}
	r.saving.Store(true)
	last := r.c.snapshot()[1]
	r.w.Committed(last.Cursor.Stream, last.Cursor.Value) // the checkpoint that came late
	if code, body := deliver(t, r.url, webhookKey, e1, e2); code != 200 || body != `{"counted":0,"duplicate":2,"ignored":0,"unusable":0}` {
		t.Fatalf("retry answered %d %s", code, body)
	}
	// Alike events in one delivery are two events.
	if code, body := deliver(t, r.url, webhookKey, e3, e3); code != 200 || body != `{"counted":2,"duplicate":0,"ignored":0,"unusable":0}` {
		t.Fatalf("delivery of two alike events answered %d %s", code, body)
	}
	saved := r.c.stop()
	counted := len(r.c.snapshot())

	// Restarted after the save but before answering: Stalwart delivers
	// again, merged with a newer event.
	r2 := startWebhook(t, cfg, saved)
	if code, body := deliver(t, r2.url, webhookKey, e3, e3, e2, e4); code != 200 || body != `{"counted":1,"duplicate":3,"ignored":0,"unusable":0}` {
		t.Fatalf("retry after restart answered %d %s", code, body)
	}
	saved2 := r2.c.stop()
	counted += len(r2.c.snapshot())

	// A crash before the save: the event was counted in memory only, and
	// the state has the cursor from before it.
	r3 := startWebhook(t, cfg, saved2)
	r3.saving.Store(false)
	e5 := failed(5, "203.0.113.5", "e")
	if code, _ := deliver(t, r3.url, webhookKey, e5); code != http.StatusServiceUnavailable {
		t.Fatalf("unsaved delivery answered %d", code)
	}
	r3.c.stop() // its cursor is not what the state holds
	r4 := startWebhook(t, cfg, saved2)
	if code, body := deliver(t, r4.url, webhookKey, e5); code != 200 || body != `{"counted":1,"duplicate":0,"ignored":0,"unusable":0}` {
		t.Fatalf("retry after the crash answered %d %s", code, body)
	}
	r4.c.stop()
	counted += len(r4.c.snapshot())

	// e1, e2, e3 twice, e4, e5: six events counted in what was saved.
	if counted != 6 {
		t.Errorf("%d events counted across the runs that were saved, want 6", counted)
	}
}

// TestWebhookStopAnswers: a delivery waiting for its save when the source
// stops is answered 503 at once, to be delivered again.
func TestWebhookStopAnswers(t *testing.T) {
	r := startWebhook(t, WebhookConfig{AckTimeout: time.Hour}, nil)
	r.saving.Store(false)
	answered := make(chan int, 1)
	go func() {
		code, _ := deliver(t, r.url, "", failed(1, "203.0.113.1", "a"))
		answered <- code
	}()
	r.c.waitLines(1)
	r.c.stop()
	select {
	case code := <-answered:
		if code != http.StatusServiceUnavailable {
			t.Errorf("answered %d, want 503", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer after the source stopped")
	}
}

// TestWebhookState: the cursor survives its encoding and bad ones are
// refused.
func TestWebhookState(t *testing.T) {
	w, err := NewWebhook(WebhookConfig{Name: "w", History: 3}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(5) {
		w.remember(100+i, 7)
	}
	w.seq = 7
	seq, digests, err := decodeWebhookState(w.state())
	if err != nil || seq != 7 || fmt.Sprint(digests) != "[102 103 104]" {
		t.Errorf("decoded %d %v %v, want 7 [102 103 104]", seq, digests, err)
	}
	for _, bad := range []string{"", "\x02", "\x01", "\x01\x07\x02abcdefgh"} {
		if _, err := NewWebhook(WebhookConfig{Name: "w"}, map[string][]byte{"": []byte(bad)}, nil, nil); err == nil {
			t.Errorf("saved cursor %q accepted", bad)
		}
	}
}
