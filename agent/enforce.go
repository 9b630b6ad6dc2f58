package agent

import (
	"context"

	"github.com/mailban/mailban/rules"
)

// Enforcer applies decisions outside mailban: logs them, puts addresses in
// kernel sets, tells mail servers. Apply is called from the agent's one
// pipeline goroutine with the decisions of one burst of lines, so an
// enforcer can batch them (one netlink flush, one message).
type Enforcer interface {
	Name() string
	Apply(ctx context.Context, batch []rules.Decision) error
}

// reconciler is an Enforcer that can be told, at start and after a reload,
// the complete set of bans, blocks and locks in force, so that it can add
// what it lacks and remove what it should no longer hold.
type reconciler interface {
	Reconcile(ctx context.Context, active []rules.Decision) error
}

// closer is an Enforcer with resources to release when the agent stops or a
// reload replaces it.
type closer interface {
	Close() error
}
