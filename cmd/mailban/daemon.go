package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/mailban/mailban/agent"
	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/sdnotify"
)

func runDaemon(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	path := fs.String("config", config.DefaultPath, "configuration `file`")
	fresh := fs.Bool("fresh-state", false, "if the state file is corrupt, move it aside and start with empty state")
	cfg, err := parseConfigFlags(fs, args, path)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(slog.Level(cfg.Log.Level))
	logger := newLogger(stderr, cfg.Log.Format, level)

	sd, err := sdnotify.FromEnv(os.Getenv)
	if err != nil {
		logger.Warn("systemd notifications off", "error", err)
	}
	var a *agent.Agent
	// reload is what SIGHUP and `mailban reload` both do: systemd sees the
	// reload begin and end, and a broken file leaves the running
	// configuration in force.
	reload := func(ctx context.Context) error {
		notify(logger, sd.Reloading())
		defer func() { notify(logger, sd.Ready("")) }()
		next, err := a.ReloadFile(ctx, *path)
		if err != nil {
			logger.Error("configuration not reloaded; the running one stays in force", "error", err)
			return err
		}
		level.Set(slog.Level(next.Log.Level))
		return nil
	}
	a, err = agent.New(cfg, agent.Options{Logger: logger, FreshState: *fresh, Version: version, Reload: reload})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan error, 1)
	wg.Go(func() { done <- a.Run(ctx) })
	ready := a.Ready()
	for {
		select {
		case <-ready:
			ready = nil
			notify(logger, sd.Ready(fmt.Sprintf("watching %d sources", len(cfg.Sources))))
			if interval, ok, err := sdnotify.WatchdogInterval(os.Getenv, os.Getpid()); err != nil {
				logger.Warn("systemd watchdog off", "error", err)
			} else if ok {
				wg.Go(func() { keepalive(ctx, sd, a, interval, logger) })
			}
		case <-hup:
			logger.Info("SIGHUP: reloading configuration", "file", *path)
			_ = reload(ctx) // logged by reload
		case <-ctx.Done():
			notify(logger, sd.Stopping())
			return finish(logger, <-done)
		case err := <-done:
			return finish(logger, err)
		}
	}
}

func finish(logger *slog.Logger, err error) error {
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	logger.Info("mailban stopped")
	return nil
}

func notify(logger *slog.Logger, err error) {
	if err != nil {
		logger.Warn("systemd notification not sent", "error", err)
	}
}

// keepalive feeds systemd's watchdog twice per interval, each time only
// after the agent's main loop has answered: a daemon that stopped handling
// lines is restarted, not kept alive by a timer.
func keepalive(ctx context.Context, sd *sdnotify.Notifier, a *agent.Agent, interval time.Duration, logger *slog.Logger) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	sd.Keepalive(ctx, t.C, interval/2, a.Ping, func(err error) {
		logger.Warn("watchdog not fed: the main loop did not answer in time", "error", err)
	})
}

// parseConfigFlags parses a command's flags, which take no arguments, and
// loads the configuration file its --config flag names.
func parseConfigFlags(fs *flag.FlagSet, args []string, path *string) (*config.Config, error) {
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return config.Load(*path)
}

func newLogger(w io.Writer, format config.LogFormat, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func checkConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check-config", stderr)
	path := fs.String("config", config.DefaultPath, "configuration `file`")
	cfg, err := parseConfigFlags(fs, args, path)
	if err != nil {
		return err
	}
	rc, err := cfg.RulesConfig(func() ([]netip.Prefix, error) { return nil, nil })
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK\n", *path)
	fmt.Fprintf(stdout, "  addresses: ban after %s, for %s (x%g per repeat, at most %s)\n",
		rc.IP, rc.BanFor, rc.BanFactor, rc.BanMax)
	fmt.Fprintf(stdout, "  logins:    lock after %s, for %s\n", rc.Login, rc.LockFor)
	for _, s := range cfg.Sources {
		formats := "all formats"
		if len(s.Formats) > 0 {
			formats = fmt.Sprint(s.Formats)
		}
		fmt.Fprintf(stdout, "  source %s: %s %v, %s\n", s.Name, s.Type, s.Paths, formats)
	}
	return nil
}
