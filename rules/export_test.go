package rules

import "testing"

// CheckInvariants lets the behavioural suite (package rules_test) check
// the in-memory store's bookkeeping after its steps.
func CheckInvariants(t testing.TB, e *Engine) { checkInvariants(t, e) }
