package hook

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailban/mailban/rules"
)

// TestWatchStreamsTheListThenChanges: a WATCH stream starts with what is
// in force, says when it is synced, then carries every change the rules
// decide, bans and locks alike, as they are applied.
func TestWatchStreamsTheListThenChanges(t *testing.T) {
	h := newTestHook(t, nil)
	h.ban(t, "203.0.113.7")
	h.lock(t, "alice@example.test")

	w := dialLine(t, h.addr(t, protoNative, "unix"))
	w.send("WATCH\n")
	var got []string
	for {
		l := w.mustLine()
		got = append(got, l)
		if strings.Contains(l, `"synced"`) {
			break
		}
	}
	want := []string{
		`{"action":"ban","prefix":"203.0.113.7/32","until":"2026-11-25T11:00:00Z","reason":"manual ban: test ban"}`,
		`{"action":"block","prefix":"198.51.100.0/24","reason":"listed in the configured blocked networks"}`,
		`{"action":"lock","login":"alice@example.test","until":"2026-11-25T11:00:00Z","reason":"5 failed logins in 1h (threshold 5/1h)"}`,
		`{"action":"synced","count":3}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the list:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A change decided by the rules through another client's REPORT.
	c := dialLine(t, h.addr(t, protoNative, "unix"))
	c.send("REPORT fail ip=2001:db8::1 attempts=3\n")
	if l := c.mustLine(); l != "OK" {
		t.Fatal(l)
	}
	var line watchLine
	if err := json.Unmarshal([]byte(w.mustLine()), &line); err != nil {
		t.Fatal(err)
	}
	if line.Action != "ban" || line.Prefix != "2001:db8::/64" || line.Until == nil || !strings.HasPrefix(line.Reason, "3 failures") {
		t.Errorf("ban line: %+v", line)
	}

	d, ok := h.engine.Unban(netip.MustParsePrefix("203.0.113.7/32"))
	if !ok {
		t.Fatal("no ban to lift")
	}
	h.Apply(context.Background(), []rules.Decision{d, {Action: rules.Unlock, Login: "alice@example.test"}})
	for _, want := range []string{`{"action":"unban","prefix":"203.0.113.7/32"}`, `{"action":"unlock","login":"alice@example.test"}`} {
		if l := w.mustLine(); l != want {
			t.Errorf("got %s, want %s", l, want)
		}
	}
	if n := testutil.ToFloat64(h.m.watchers); n != 1 {
		t.Errorf("watchers gauge %v", n)
	}
	w.Close()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(h.m.watchers) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a closed WATCH stream is still subscribed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWatchSlowSubscriberIsDropped: Apply never waits for a subscriber; one
// that falls behind is told so and disconnected, and others are untouched.
func TestWatchSlowSubscriberIsDropped(t *testing.T) {
	h := newTestHook(t, func(c *Config) { c.Limits.WatchQueue = 2 })
	slow := dialLine(t, h.addr(t, protoNative, "unix"))
	slow.send("WATCH\n")
	for !strings.Contains(slow.mustLine(), "synced") {
	}
	batch := make([]rules.Decision, 200)
	for i := range batch {
		batch[i] = rules.Decision{Action: rules.Ban, Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, byte(i), 1}), 32),
			Until: h.clock.Now().Add(time.Hour), Reason: strings.Repeat("r", 200)}
	}
	// The slow client reads nothing: after the socket buffers fill, its
	// queue does, and Apply drops it rather than wait.
	for i := 0; testutil.ToFloat64(h.m.watchDrops) == 0; i++ {
		if i > 100000 {
			t.Fatal("a subscriber that reads nothing was never dropped")
		}
		h.Apply(context.Background(), batch)
	}
	last := ""
	for {
		l, err := slow.line()
		if err != nil {
			break
		}
		last = l
	}
	if last != `{"action":"overflow"}` {
		t.Errorf("the last line is %.80q, want the overflow notice", last)
	}

	fresh := dialLine(t, h.addr(t, protoNative, "unix"))
	fresh.send("WATCH\n")
	if l := fresh.mustLine(); !strings.Contains(l, `"block"`) {
		t.Errorf("a new subscriber got %q", l)
	}
}
