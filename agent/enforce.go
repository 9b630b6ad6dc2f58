package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/enforcers/dryrun"
	"github.com/mailban/mailban/enforcers/hook"
	"github.com/mailban/mailban/enforcers/nftables"
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

// enforcerHealth is how an enforcer's attempts to apply decisions went.
type enforcerHealth struct {
	healthy     bool
	errors      uint64
	lastError   string
	lastErrorAt time.Time
	lastApplied time.Time
}

// buildEnforcers makes the enforcers cfg names, then adds Options'
// own; with none at all, the log enforcer. The hook is kept across
// reloads; an nftables enforcer that cannot start is an error only when
// it is required.
func (a *Agent) buildEnforcers(cfg *config.Config) ([]Enforcer, error) {
	var out []Enforcer
	if e := cfg.Enforcers.Log; e != nil {
		out = append(out, dryrun.New(dryrun.Config{Evidence: e.Evidence}, a.log))
	}
	if n := cfg.Enforcers.Nftables; n != nil {
		e, err := nftables.New(n.Enforcer(a.clock), a.log, a.reg)
		switch {
		case err == nil:
			out = append(out, e)
		case n.IsRequired():
			a.closeEnforcers(out)
			return nil, fmt.Errorf("start the nftables enforcer (enforcers.nftables.required: false runs mailban without it): %w", err)
		default:
			a.m.enforcerErrors.WithLabelValues("nftables").Inc()
			a.log.Error("nftables enforcer not started; mailban runs without it (enforcers.nftables.required is false), a reload tries again", "error", err)
		}
	}
	if cfg.Enforcers.Hook != nil {
		// The running hook stays across a reload (its listeners and its
		// clients' connections with it); applyConfig gives it the new
		// settings once the reload cannot fail any more.
		h := a.hook
		if h == nil {
			var err error
			h, err = hook.New(cfg.HookConfig(), hook.Deps{Checker: a.engine, Reporter: a, Clock: a.clock}, a.log, a.reg)
			if err != nil {
				return nil, err
			}
		}
		warnDoubleCounting(a.log, cfg)
		out = append(out, h)
	}
	out = append(out, a.opt.Enforcers...)
	if len(out) == 0 {
		a.log.Warn("no enforcer configured: decisions are only logged (enforcers: {log: {}})")
		out = append(out, dryrun.New(dryrun.Config{}, a.log))
	}
	return out, nil
}

// enforce hands the pending decisions to every enforcer. A failing enforcer
// is logged and counted; it does not hold up the others, and the decision
// stays in the rules engine (and the state) to be reconciled.
func (a *Agent) enforce(ctx context.Context) {
	if len(a.decided) == 0 {
		return
	}
	for _, d := range a.decided {
		a.m.decisions.WithLabelValues(d.Action.String()).Inc()
	}
	for _, e := range a.enforcers {
		start := time.Now()
		err := e.Apply(ctx, a.decided)
		a.m.enforcerApply.WithLabelValues(e.Name()).Observe(time.Since(start).Seconds())
		a.noteEnforcer(e.Name(), err)
		if err != nil {
			a.log.Error("enforcer failed to apply decisions", "enforcer", e.Name(), "decisions", len(a.decided), "error", err)
		}
	}
	clear(a.decided)
	a.decided = a.decided[:0]
}

// reconcile gives every enforcer the complete set of decisions in force
// (at start and after a reload), so each can add what it lacks and drop
// what no longer holds.
func (a *Agent) reconcile(ctx context.Context) {
	active := a.engine.Active()
	for _, e := range a.enforcers {
		r, ok := e.(reconciler)
		var err error
		if ok {
			err = r.Reconcile(ctx, active)
		} else {
			err = e.Apply(ctx, active)
		}
		a.noteEnforcer(e.Name(), err)
		if err != nil {
			a.log.Error("enforcer failed to take the bans in force", "enforcer", e.Name(), "error", err)
		}
	}
	a.updateGauges()
}

// forgetEnforcers drops the health of enforcers a reload removed, so that
// status and metrics show only those in use.
func (a *Agent) forgetEnforcers(old []Enforcer) {
	current := map[string]bool{}
	for _, e := range a.enforcers {
		current[e.Name()] = true
	}
	for _, e := range old {
		if name := e.Name(); !current[name] {
			delete(a.health, name)
			a.m.enforcerHealthy.DeleteLabelValues(name)
		}
	}
}

// noteEnforcer records how an enforcer's attempt went, for status and
// metrics.
func (a *Agent) noteEnforcer(name string, err error) {
	h := a.health[name]
	if h == nil {
		h = &enforcerHealth{}
		a.health[name] = h
		a.m.enforcerErrors.WithLabelValues(name)
	}
	h.healthy = err == nil
	if err != nil {
		h.errors++
		h.lastError, h.lastErrorAt = err.Error(), time.Now()
		a.m.enforcerErrors.WithLabelValues(name).Inc()
		a.m.enforcerHealthy.WithLabelValues(name).Set(0)
		return
	}
	h.lastApplied = time.Now()
	a.m.enforcerHealthy.WithLabelValues(name).Set(1)
}

// enforcerNames are the running enforcers' names, for the log.
func (a *Agent) enforcerNames() []string {
	names := make([]string, len(a.enforcers))
	for i, e := range a.enforcers {
		names[i] = e.Name()
	}
	return names
}

// closeEnforcers closes those of es that hold resources, logging failures.
func (a *Agent) closeEnforcers(es []Enforcer) {
	for _, e := range es {
		if c, ok := e.(closer); ok {
			if err := c.Close(); err != nil {
				a.log.Warn("closing enforcer", "enforcer", e.Name(), "error", err)
			}
		}
	}
}

// without lists the enforcers of es that are not in keep.
func without(es, keep []Enforcer) []Enforcer {
	var out []Enforcer
	for _, e := range es {
		if !slices.Contains(keep, e) {
			out = append(out, e)
		}
	}
	return out
}

// hookIn finds the hook among the enforcers.
func hookIn(es []Enforcer) *hook.Server {
	for _, e := range es {
		if h, ok := e.(*hook.Server); ok {
			return h
		}
	}
	return nil
}
