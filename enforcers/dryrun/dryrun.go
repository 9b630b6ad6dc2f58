package dryrun

import (
	"context"
	"log/slog"
	"time"

	"github.com/mailban/mailban/rules"
)

// Config says how much of each decision to log.
type Config struct {
	// Evidence logs the lines that led to a decision, one log record each.
	Evidence bool
}

// Enforcer logs decisions.
type Enforcer struct {
	cfg Config
	log *slog.Logger
}

// New returns a log enforcer writing to logger.
func New(cfg Config, logger *slog.Logger) *Enforcer {
	return &Enforcer{cfg: cfg, log: logger.With("enforcer", "log")}
}

// Name is "log", the enforcer's key in the configuration.
func (e *Enforcer) Name() string { return "log" }

// Apply logs each decision at info level.
func (e *Enforcer) Apply(ctx context.Context, batch []rules.Decision) error {
	for i := range batch {
		e.logDecision(ctx, "decision", &batch[i])
	}
	return nil
}

// Reconcile logs how many bans, blocks and locks are in force; a real
// enforcer would now make its own view match them.
func (e *Enforcer) Reconcile(ctx context.Context, active []rules.Decision) error {
	counts := map[rules.Action]int{}
	for _, d := range active {
		counts[d.Action]++
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, "in force",
		slog.Int("bans", counts[rules.Ban]), slog.Int("blocks", counts[rules.Block]), slog.Int("locks", counts[rules.Lock]))
	return nil
}

func (e *Enforcer) logDecision(ctx context.Context, msg string, d *rules.Decision) {
	attrs := []slog.Attr{slog.String("action", d.Action.String())}
	if d.Login != "" {
		attrs = append(attrs, slog.String("login", d.Login))
	}
	if d.Prefix.IsValid() {
		attrs = append(attrs, slog.String("prefix", d.Prefix.String()))
	}
	switch d.Action {
	case rules.Ban, rules.Lock:
		if d.Until.IsZero() {
			attrs = append(attrs, slog.String("until", "permanent"))
		} else {
			attrs = append(attrs, slog.Time("until", d.Until), slog.String("for", rules.FormatDuration(d.Until.Sub(d.At).Round(time.Second))))
		}
	}
	if d.Reason != "" {
		attrs = append(attrs, slog.String("reason", d.Reason))
	}
	e.log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
	if e.cfg.Evidence {
		for _, line := range d.Evidence {
			e.log.LogAttrs(ctx, slog.LevelInfo, "evidence", slog.String("action", d.Action.String()), slog.String("line", line))
		}
	}
}
