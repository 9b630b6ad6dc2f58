package agent

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/mailban/mailban/agent/config"
)

type reloadRequest struct {
	cfg     *config.Config
	loadErr error // the file did not load: a failed reload to record
	errc    chan error
}

// Reload swaps in a new configuration: it keeps counters, bans and read
// positions, restarts only the sources whose settings changed and applies
// the difference in blocked networks. An error leaves the old
// configuration running.
func (a *Agent) Reload(ctx context.Context, cfg *config.Config) error {
	return a.sendReload(ctx, reloadRequest{cfg: cfg, errc: make(chan error, 1)})
}

// ReloadFile reads the configuration file at path and swaps it in as
// Reload does. A file that does not load is a failed reload like one that
// does not apply: counted in metrics, shown by status, and the running
// configuration stays.
func (a *Agent) ReloadFile(ctx context.Context, path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err := a.sendReload(ctx, reloadRequest{cfg: cfg, loadErr: err, errc: make(chan error, 1)}); err != nil {
		return nil, err
	}
	return cfg, nil
}

// sendReload hands req to the pipeline goroutine and waits for its answer.
func (a *Agent) sendReload(ctx context.Context, req reloadRequest) error {
	select {
	case a.reloads <- req:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.errc:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reload applies a new configuration from the Run goroutine. Everything
// that can fail is built before anything is swapped.
func (a *Agent) reload(ctx context.Context, cfg *config.Config, loadErr error) error {
	err := loadErr
	if err == nil {
		err = a.applyConfig(ctx, cfg)
	}
	now := time.Now()
	if err != nil {
		a.m.reloadSuccess.Set(0)
		a.m.reloads.WithLabelValues("failure").Inc()
		a.reloadSt.OK, a.reloadSt.Error, a.reloadSt.FailedAt = false, err.Error(), &now
		a.reloadSt.Failures++
		return err
	}
	a.m.reloadSuccess.Set(1)
	a.m.reloads.WithLabelValues("success").Inc()
	a.m.reloadTime.Set(float64(now.Unix()))
	a.reloadSt.At, a.reloadSt.OK, a.reloadSt.Error = now, true, ""
	a.reloadSt.Successes++
	return nil
}

// applyConfig builds everything cfg needs first, so that a failure leaves
// the running configuration untouched, then swaps it in: rules, parsers
// (keeping their session memory), enforcers, and the sources whose
// reading settings changed.
func (a *Agent) applyConfig(ctx context.Context, cfg *config.Config) error {
	rc, err := a.rulesConfig(cfg)
	if err != nil {
		return err
	}
	ps, err := buildParsers(cfg)
	if err != nil {
		return err
	}
	enfs, err := a.buildEnforcers(cfg)
	if err != nil {
		return err
	}
	ds, err := a.engine.Reconfigure(rc)
	if err != nil {
		a.closeEnforcers(without(enfs, a.enforcers))
		return fmt.Errorf("reconfigure rules: %w", err)
	}
	if cfg.State.Path != a.cfg.State.Path {
		a.log.Warn("state.path changed: it takes effect at the next start", "running", a.cfg.State.Path, "configured", cfg.State.Path)
	}
	if !reflect.DeepEqual(cfg.Fleet, a.cfg.Fleet) {
		a.log.Warn("fleet settings changed: they take effect at the next start")
	}
	if cfg.Metrics.Listen != a.cfg.Metrics.Listen {
		a.log.Warn("metrics.listen changed: it takes effect at the next start", "running", a.cfg.Metrics.Listen, "configured", cfg.Metrics.Listen)
	}
	if cfg.Control != a.cfg.Control {
		a.log.Warn("control changed: it takes effect at the next start", "running", a.cfg.Control, "configured", cfg.Control)
	}

	// Sources whose settings changed, or that are gone, stop first (their
	// lines in flight are processed with the old parsers).
	newSources := map[string]config.SourceConfig{}
	for _, s := range cfg.Sources {
		newSources[s.Name] = s
	}
	var stop []string
	for name, rs := range a.sources {
		if s, ok := newSources[name]; !ok || !sameSource(rs.cfg, s) {
			stop = append(stop, name)
		}
	}
	a.stopSources(ctx, stop)
	// Save what the stopped sources delivered before they start again
	// from it: a push source takes its saved cursor as saved, and answers
	// retries of its events at once.
	a.checkpoint()

	old := a.enforcers
	a.adoptSessions(ps)
	a.parsers, a.enforcers = ps, enfs
	a.allow = canonical(rc.Allow)
	gone := without(old, enfs)
	a.closeEnforcers(gone)
	a.forgetEnforcers(gone)
	if a.hook = hookIn(enfs); a.hook != nil {
		if err := a.hook.Update(cfg.HookConfig()); err != nil {
			a.log.Error("hook settings not changed", "error", err) // checked with the configuration: not expected
		}
	}
	a.reconcile(ctx)
	a.decided = append(a.decided, ds...)
	a.enforce(ctx)
	a.cfg = cfg
	for _, s := range cfg.Sources {
		if _, running := a.sources[s.Name]; running {
			a.sources[s.Name].cfg = s
			continue
		}
		if err := a.startSource(ctx, s); err != nil {
			a.log.Error("source not started", "source", s.Name, "error", err)
		}
	}
	a.log.Info("configuration reloaded", "file", cfg.File, "sources", len(cfg.Sources), "enforcers", a.enforcerNames())
	return nil
}

// warnDoubleCounting says when Dovecot's reports to the hook and a log
// source with the dovecot format would both count the same attempts.
func warnDoubleCounting(log *slog.Logger, cfg *config.Config) {
	if d := cfg.Enforcers.Hook.Dovecot; d == nil || !d.Report {
		return
	}
	for _, s := range cfg.Sources {
		if len(s.Formats) == 0 || slices.Contains(s.Formats, "dovecot") {
			log.Warn("Dovecot's reports to the hook and this source's dovecot format count the same attempts twice: "+
				"drop dovecot from the source's formats, or set enforcers.hook.dovecot.report: false", "source", s.Name)
		}
		// Postfix and Exim log the SMTP AUTH attempts that Dovecot reports
		// when they authenticate through Dovecot SASL, which mailban cannot
		// see from here: say it as a condition.
		for _, f := range []string{"postfix", "exim"} {
			if slices.Contains(s.Formats, f) {
				log.Warn("if "+f+" authenticates through Dovecot SASL, Dovecot's reports to the hook and this source's "+f+
					" format count its SMTP AUTH attempts twice: drop "+f+" from the source's formats, or set enforcers.hook.dovecot.report: false",
					"source", s.Name)
			}
		}
	}
}
