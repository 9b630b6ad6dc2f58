package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mailban/mailban/fleet/redistest"
	"github.com/mailban/mailban/parsers"
	"github.com/mailban/mailban/rules"
	"github.com/mailban/mailban/rules/rulestest"
)

// The evidence of a ban and a lock that a tally decides reaches the other
// hosts after the decision: a host reading the stream takes it in without
// a second change for its enforcers, a host starting later finds it in
// the holds, and recording it counts no offence and moves no counter.
func TestTallyEvidenceReachesOtherHosts(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	clock := rulestest.NewFakeClock(rulestest.T0)
	cfg := rules.Config{IP: rules.Threshold{Count: 3, Period: time.Hour}, BanFor: time.Hour, BanFactor: 2,
		OffenderMemory: rules.Week, Login: rules.Threshold{Count: 4, Period: time.Hour}, LockFor: time.Hour}
	newEngine := func(host string) (*rules.Engine, *Store) {
		e, err := rules.NewEngine(cfg, clock)
		if err != nil {
			t.Fatal(err)
		}
		s := newTestStore(t, srv, "ev", host, clock)
		connect(t, s, e)
		return e, s
	}
	ea, sa := newEngine("h1")
	eb, sb := newEngine("h2")
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); sb.Run(ctx) }()
	defer func() { cancel(); <-runDone }()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for range 500 {
			if ok() {
				return
			}
			time.Sleep(10 * time.Millisecond) // waits for the reader, not for time windows
		}
		t.Fatalf("timed out waiting until %s", what)
	}
	waitFor("h2 reads the stream", func() bool {
		sb.mu.Lock()
		defer sb.mu.Unlock()
		return sb.lastID != ""
	})

	fail := func(addr, login string) []rules.Decision {
		t.Helper()
		ev := &parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Time: clock.Now(), Addr: netip.MustParseAddr(addr), Login: login,
			Evidence: fmt.Sprintf("fail %s %s", addr, login)}
		ds, err := ea.ObserveBatch([]*parsers.Event{ev}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ds
	}
	// Three failures ban 203.0.113.7; four failed logins from as many
	// addresses lock carol.
	var decided []rules.Decision
	for range 3 {
		decided = append(decided, fail("203.0.113.7", "")...)
	}
	for i := range 4 {
		decided = append(decided, fail(fmt.Sprintf("198.51.100.%d", i+1), "carol")...)
	}
	if len(decided) != 2 || decided[0].Action != rules.Ban || decided[1].Action != rules.Lock ||
		len(decided[0].Evidence) != 3 || len(decided[1].Evidence) != 4 {
		t.Fatalf("h1 decided %v", decided)
	}
	stateKeys := []string{"{ev}:a:203.0.113.7/32", "{ev}:l:carol"}
	state := func() []string {
		vs, err := sa.rdb.MGet(context.Background(), stateKeys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		return []string{fmt.Sprint(vs[0]), fmt.Sprint(vs[1])}
	}
	stateBefore := state()
	// The evidence goes out with the next burst, or at once when Run's
	// flusher is told; here, Flush.
	if err := sa.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if stateAfter := state(); !slices.Equal(stateAfter, stateBefore) {
		t.Errorf("recording the evidence changed the counting state: %q, then %q", stateBefore, stateAfter)
	}

	// h2 takes in both decisions, and then their evidence, which is no
	// further change for its enforcers.
	changed := 0
	want := map[string][]string{"ban": decided[0].Evidence, "lock": decided[1].Evidence}
	evidenceOf := func(e *rules.Engine) map[string][]string {
		got := map[string][]string{}
		for _, d := range e.Active() {
			got[d.Action.String()] = d.Evidence
		}
		return got
	}
	waitFor("h2 holds the evidence", func() bool {
		select {
		case ds := <-sb.Decisions():
			for _, d := range ds {
				if eb.ApplyShared(d) {
					changed++
				}
			}
		default:
		}
		got := evidenceOf(eb)
		return slices.Equal(got["ban"], want["ban"]) && slices.Equal(got["lock"], want["lock"])
	})
	if changed != 2 {
		t.Errorf("h2's enforcers would have been told %d times, want 2 (the ban and the lock, once each)", changed)
	}
	for _, d := range eb.Active() {
		if d.Action == rules.Ban && d.Reason != "3 failures in 1h (threshold 3/1h) (decided on h1)" {
			t.Errorf("h2's ban: %q", d.Reason)
		}
	}

	// A host that starts later finds the evidence in the holds.
	ec, _ := newEngine("h3")
	if got := evidenceOf(ec); !slices.Equal(got["ban"], want["ban"]) || !slices.Equal(got["lock"], want["lock"]) {
		t.Errorf("the late host holds evidence %q, want %q", got, want)
	}

	// The evidence counted no offence: the next ban is a second offence,
	// not a third.
	clock.Advance(2 * time.Hour)
	for range 3 {
		decided = append(decided, fail("203.0.113.7", "")...)
	}
	if last := decided[len(decided)-1]; last.Action != rules.Ban || last.Until.Sub(last.At) != 2*time.Hour {
		t.Errorf("after the first ban ended: %v", rulestest.Summary(last))
	}
}

// Evidence of a hold that was lifted (or replaced) before it was recorded
// is dropped: it never brings a hold back.
func TestLateEvidenceLeavesLiftedHoldsAlone(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	clock := rulestest.NewFakeClock(rulestest.T0)
	e, err := rules.NewEngine(rules.Config{IP: rules.Threshold{Count: 2, Period: time.Hour}, BanFor: time.Hour}, clock)
	if err != nil {
		t.Fatal(err)
	}
	s := newTestStore(t, srv, "late", "h1", clock)
	connect(t, s, e)
	var ban rules.Decision
	for range 2 {
		ev := &parsers.Event{Kind: parsers.AuthFailure, Attempts: 1, Time: clock.Now(), Addr: netip.MustParseAddr("203.0.113.9"), Evidence: "fail"}
		ds, err := e.ObserveBatch([]*parsers.Event{ev}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 1 {
			ban = ds[0]
		}
	}
	if ban.Action != rules.Ban {
		t.Fatal("no ban")
	}
	// Another host lifts the ban before this one's evidence is recorded
	// (written straight into the holds, as its publish script would).
	if _, err := srv.Do("HDEL", "{late}:holds", "b:203.0.113.9/32"); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.Do("HEXISTS", "{late}:holds", "b:203.0.113.9/32"); got != ":0" {
		t.Errorf("the evidence brought a lifted ban back: HEXISTS says %q", got)
	}
	if n, _ := srv.Do("XLEN", "{late}:decisions"); n != ":1" {
		t.Errorf("the stream has %s entries, want the ban's alone", n)
	}
}
