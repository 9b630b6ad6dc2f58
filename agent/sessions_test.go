package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/state"
	"github.com/mailban/mailban/rules"
)

// verboseSession is the first session of the golden Dovecot auth_verbose
// log: three attempts from 203.0.113.70 (as admin@, info@, Info@ ->
// info@) logged by the auth process, then the login process's summary of
// the three.
func verboseSession(t *testing.T) (attempts []string, summary string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "logs", "dovecot-verbose.log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	// Lines 5-8 of the file, dated now: the rules count at the line's time.
	now := func(l string) string {
		const stamp = "Nov 25 20:00:01"
		return time.Now().UTC().Format(time.RFC3339) + l[len(stamp):] + "\n"
	}
	for _, l := range lines[4:7] {
		attempts = append(attempts, now(l))
	}
	summary = now(lines[7])
	if !strings.Contains(summary, "auth failed, 3 attempts") || !strings.Contains(attempts[0], "<Aa1Bb2Cc3Dd4Ee5F>") {
		t.Fatalf("dovecot-verbose.log changed: %q", lines[4:8])
	}
	return attempts, summary
}

// sessionsAgent is an agent reading one log file with the dovecot format.
type sessionsAgent struct {
	a      *Agent
	rec    *recorder
	cancel context.CancelFunc
	done   chan error
}

func startSessionsAgent(t *testing.T, cfg *config.Config, logger *slog.Logger) *sessionsAgent {
	t.Helper()
	h := &sessionsAgent{rec: newRecorder(), done: make(chan error, 1)}
	var err error
	h.a, err = New(cfg, Options{Enforcers: []Enforcer{h.rec}, HostAddresses: noHostAddresses, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.a.Run(ctx) }()
	t.Cleanup(h.stop)
	<-h.a.Ready()
	return h
}

func (h *sessionsAgent) decisions() []rules.Decision {
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	return append([]rules.Decision(nil), h.rec.decisions...)
}

func (h *sessionsAgent) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	<-h.done
}

// waitLines waits until the agent has counted n lines of source mail.
func (h *sessionsAgent) waitLines(t *testing.T, n float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(h.a.m.linesRead.WithLabelValues("mail")) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%v lines read after 10s, want %v", testutil.ToFloat64(h.a.m.linesRead.WithLabelValues("mail")), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The line is counted when its processing starts: a turn of the Run
	// goroutine after it finishes it.
	if err := h.a.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l); err != nil {
			t.Fatal(err)
		}
	}
}

func sessionsConfig(t *testing.T, dir, logPath string, formats string) *config.Config {
	t.Helper()
	// 203.0.113.70 makes 3 attempts, 2 of them as info@example.test: one
	// attempt below each threshold, as long as none counts twice.
	return writeConfig(t, dir, fmt.Sprintf(`
state: {path: %s/state.db, checkpoint-interval: 1h}
rules:
  ip: {threshold: "4/1h"}
  login: {threshold: "3/1h"}
sources: [{name: mail, paths: [%s], formats: [%s], start-at: beginning}]
allowlist: {host-addresses: false}
metrics: {listen: ""}
control: {socket: ""}
`, dir, logPath, formats))
}

// A Dovecot auth_verbose session whose attempt lines are read before a
// restart (or a reload) and whose summary after it counts its attempts
// once: per address and per login, the counts are the true ones.
func TestSessionCutByRestartOrReloadCountsOnce(t *testing.T) {
	for _, reload := range []bool{false, true} {
		name := "restart"
		if reload {
			name = "reload then restart"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			logPath := filepath.Join(dir, "mail.log")
			attempts, summary := verboseSession(t)
			appendFile(t, logPath, attempts...)
			cfg := sessionsConfig(t, dir, logPath, "dovecot")

			h := startSessionsAgent(t, cfg, nil)
			h.waitLines(t, 3)
			if reload {
				// Other formats around dovecot: the parser is rebuilt,
				// the source keeps running.
				next := sessionsConfig(t, dir, logPath, "postfix, dovecot")
				if err := h.a.Reload(context.Background(), next); err != nil {
					t.Fatal(err)
				}
				appendFile(t, logPath, summary)
				h.waitLines(t, 4)
				if got := h.decisions(); len(got) != 0 {
					t.Fatalf("the summary read after a reload counted its session again: %v", got)
				}
				cfg = next
			}
			h.stop()

			h = startSessionsAgent(t, cfg, nil)
			if !reload {
				appendFile(t, logPath, summary)
				h.waitLines(t, 1)
				if got := h.decisions(); len(got) != 0 {
					t.Fatalf("the summary read after a restart counted its session again: %v", got)
				}
			}
			// One more attempt, in a new session, reaches both thresholds
			// exactly: the counts were 3 for the address and 2 for the login.
			appendFile(t, logPath, strings.ReplaceAll(attempts[2], "Aa1Bb2Cc3Dd4Ee5F", "Zz9Yy8Xx7Ww6Vv5U"))
			got := h.rec.waitFor(t, 2)
			var ban, lock bool
			for _, d := range got {
				ban = ban || d.Action == rules.Ban && d.Prefix == netip.MustParsePrefix("203.0.113.70/32")
				lock = lock || d.Action == rules.Lock && d.Login == "info@example.test"
			}
			if !ban || !lock || len(got) != 2 {
				t.Fatalf("decisions %v, want a ban of 203.0.113.70 and a lock of info@example.test", got)
			}
		})
	}
}

// Saved session memory that does not decode, or belongs to a source no
// longer configured, does not keep mailban from starting: it is reported
// and not used.
func TestUnusableSessionMemory(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "mail.log")
	appendFile(t, logPath)
	cfg := sessionsConfig(t, dir, logPath, "dovecot")
	st, err := state.Open(state.Options{Path: cfg.State.Path}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = st.Commit([]state.Record{
		{Bucket: sessionsBucket, Key: []byte("mail"), Value: []byte{1, 1, 7, 'd', 'o', 'v', 'e', 'c', 'o', 't', 9}},
		{Bucket: sessionsBucket, Key: []byte("gone"), Value: []byte{1, 0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	var logs bytes.Buffer
	h := startSessionsAgent(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	h.stop()
	out := logs.String()
	for _, want := range []string{
		`msg="saved session memory is unreadable and is not used: attempts of sessions cut by the restart may count twice" source=mail error="decode sessions: format \"dovecot\": owner 0: address: record ends"`,
		`msg="saved session memory dropped: the source is no longer configured" source=gone`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	// The dropped record is deleted with the first checkpoint.
	st, err = state.Open(state.Options{Path: cfg.State.Path}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.Load(func(r state.Record) error {
		if r.Bucket == sessionsBucket && string(r.Key) == "gone" {
			t.Errorf("the record of a source no longer configured is still saved")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
