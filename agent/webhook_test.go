package agent

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/rules"
)

// freePort returns a loopback address nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// stalwartPost delivers events as Stalwart does: one signed JSON body. It
// retries while nothing listens yet, and returns the answer.
func stalwartPost(t *testing.T, url, key string, events ...string) (int, string) {
	t.Helper()
	body := []byte(`{"events":[` + strings.Join(events, ",") + `]}`)
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write(body)
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Signature", base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
}

func authFailed(second int, ip string) string {
	return fmt.Sprintf(`{"id":"17680328%02d0533","createdAt":"2026-01-10T08:15:%02dZ","type":"auth.failed","data":{"listenerId":"imap","localPort":143,"remoteIp":%q,"remotePort":51514,"accountName":"alice"}}`,
		second, second, ip)
}

// TestWebhookThroughTheAgent: a delivery is answered once the agent has
// saved it; after a restart, Stalwart's retry of a delivery whose answer was
// lost is not counted again, so the ban comes with the third real failure.
func TestWebhookThroughTheAgent(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	const key = "stalwart-signing-key"
	yaml := fmt.Sprintf(`
state: {path: %s/state.db, checkpoint-interval: 50ms}
control: {socket: ""}
rules:
  ip: {threshold: "3/1h"}
allowlist: {host-addresses: false}
metrics: {listen: ""}
sources:
  - name: stalwart
    type: webhook
    listen: %s
    url-path: /stalwart
    signature-key: %s
`, dir, addr, key)
	cfg := writeConfig(t, dir, yaml)
	url := "http://" + addr + "/stalwart"
	// The clock is where Stalwart's events are: their windows are open.
	clock := fixedClock{time.Date(2026, 1, 10, 8, 20, 0, 0, time.UTC)}
	start := func() (*Agent, *recorder, context.CancelFunc, chan error) {
		rec := newRecorder()
		a, err := New(cfg, Options{Enforcers: []Enforcer{rec}, HostAddresses: noHostAddresses, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		return a, rec, cancel, done
	}
	stop := func(cancel context.CancelFunc, done chan error) {
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}

	_, rec, cancel, done := start()
	e1, e2 := authFailed(1, "203.0.113.50"), authFailed(2, "203.0.113.50")
	if code, body := stalwartPost(t, url, key, e1, e2); code != 200 || body != `{"counted":2,"duplicate":0,"ignored":0,"unusable":0}` {
		t.Fatalf("first delivery: %d %s", code, body)
	}
	stop(cancel, done)
	if len(rec.decisions) != 0 {
		t.Fatalf("decisions after two failures: %v", rec.decisions)
	}

	// The answer was lost: Stalwart delivers the two again, with a new one.
	a, rec, cancel, done := start()
	defer func() { cancel(); <-done }()
	if code, body := stalwartPost(t, url, key, e1, e2); code != 200 || body != `{"counted":0,"duplicate":2,"ignored":0,"unusable":0}` {
		t.Fatalf("retried delivery: %d %s", code, body)
	}
	if code, body := stalwartPost(t, url, key, authFailed(3, "203.0.113.50")); code != 200 || body != `{"counted":1,"duplicate":0,"ignored":0,"unusable":0}` {
		t.Fatalf("third failure: %d %s", code, body)
	}
	got := rec.waitFor(t, 1)
	if got[0].Action != rules.Ban || got[0].Prefix != netip.MustParsePrefix("203.0.113.50/32") || !strings.HasPrefix(got[0].Reason, "3 failures") {
		t.Fatalf("decision %+v, want a ban for exactly 3 failures", got[0])
	}
	families, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var scrape strings.Builder
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			fmt.Fprintf(&scrape, "%s{%s} %v\n", f.GetName(), strings.Join(labels, ","), m.GetCounter().GetValue())
		}
	}
	for _, want := range []string{
		"mailban_webhook_events_total{outcome=duplicate,source=stalwart} 2",
		"mailban_webhook_events_total{outcome=counted,source=stalwart} 1",
		"mailban_webhook_requests_total{result=accepted,source=stalwart} 2",
	} {
		if !strings.Contains(scrape.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, scrape.String())
		}
	}
}

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }
