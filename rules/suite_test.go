package rules_test

import (
	"flag"
	"testing"

	"github.com/mailban/mailban/rules"
	"github.com/mailban/mailban/rules/rulestest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestBehaviour runs the behavioural suite against the engine's own maps,
// the in-memory store. Package fleet runs the same suite against Redis.
func TestBehaviour(t *testing.T) {
	rulestest.Run(t, rulestest.Factory{
		Name: "memory",
		New: func(t testing.TB, cfg rules.Config, clock rules.Clock) *rules.Engine {
			e, err := rules.NewEngine(cfg, clock)
			if err != nil {
				t.Fatalf("NewEngine: %v", err)
			}
			return e
		},
		Local:        true,
		Invariants:   rules.CheckInvariants,
		UpdateGolden: *update,
	})
}
