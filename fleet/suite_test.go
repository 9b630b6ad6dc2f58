package fleet

import (
	"context"
	"fmt"
	"testing"

	"github.com/mailban/mailban/fleet/redistest"
	"github.com/mailban/mailban/rules"
	"github.com/mailban/mailban/rules/rulestest"
)

// newTestStore makes a Store on srv under its own key prefix, connected
// (Resync) and counting in Redis.
func newTestStore(t testing.TB, srv *redistest.Server, prefix, host string, clock rules.Clock) *Store {
	t.Helper()
	s, err := New(Config{Addr: srv.Addr(), KeyPrefix: prefix, Host: host, Clock: clock}, nil, nil)
	if err != nil {
		t.Fatalf("fleet.New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func connect(t testing.TB, s *Store, e *rules.Engine) {
	t.Helper()
	if err := e.UseStore(s); err != nil {
		t.Fatalf("UseStore: %v", err)
	}
	if _, err := s.Resync(context.Background(), e); err != nil {
		t.Fatalf("Resync: %v", err)
	}
	if !s.Up() {
		t.Fatal("store not up after Resync")
	}
}

// TestBehaviourInRedis runs the rules engine's behavioural suite with the
// counting in a real redis-server: every test on its own key prefix.
func TestBehaviourInRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := 0
	rulestest.Run(t, rulestest.Factory{
		Name: "redis",
		New: func(t testing.TB, cfg rules.Config, clock rules.Clock) *rules.Engine {
			n++
			e, err := rules.NewEngine(cfg, clock)
			if err != nil {
				t.Fatalf("NewEngine: %v", err)
			}
			s := newTestStore(t, srv, fmt.Sprintf("suite%d", n), "h1", clock)
			connect(t, s, e)
			// A store that failed would have let the engine count in its
			// own maps, and the test pass without Redis deciding anything.
			t.Cleanup(func() {
				if st := s.Stats(); !st.Up || st.LocalEvents != 0 || st.Errors != 0 {
					t.Errorf("the store failed during the test: %+v", st)
				}
			})
			return e
		},
	})
}
