package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/d--j/go-milter"
	"github.com/redis/go-redis/v9"

	"github.com/mailban/mailban/agent"
	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/sdnotify"
)

func runDaemon(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) error {
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

	if cfg.Fleet != nil {
		// go-redis logs through a process-wide logger of its own (to
		// stderr by default). The fleet store reports what matters itself;
		// the client's own lines go to mailban's log, at debug level.
		redis.SetLogger(redisLog{logger})
	}
	if h := cfg.Enforcers.Hook; h != nil && h.Milter != nil {
		// go-milter's warnings (a mail server's odd negotiation) go to the
		// standard library's logger unless this process-wide hook says
		// otherwise: into mailban's log, so that JSON logs stay JSON.
		milter.LogWarning = func(format string, v ...any) {
			logger.Warn("milter library: " + fmt.Sprintf(format, v...))
		}
	}
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
	a, err = agent.New(cfg, agent.Options{Logger: logger, FreshState: *fresh, Version: version, Reload: reload, Stdin: interruptible(stdin)})
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

// redisLog passes go-redis's log lines to mailban's log.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
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
	if f := cfg.Fleet; f != nil {
		host := f.Host
		if host == "" {
			host = "this host's name"
		}
		fmt.Fprintf(stdout, "  fleet:     counts with other hosts in redis %s (keys {%s}:*), as %s\n", f.Redis.Address, f.Redis.KeyPrefix, host)
	}
	for _, s := range cfg.Sources {
		formats := "all formats"
		if len(s.Formats) > 0 {
			formats = fmt.Sprint(s.Formats)
		}
		fmt.Fprintf(stdout, "  source %s: %s, %s\n", s.Name, describeSource(s), formats)
	}
	return nil
}

// interruptible returns standard input in a form whose pending read a
// stopping source can end: a pipe or socket is put in non-blocking mode,
// which Go's runtime then polls (and a read deadline interrupts). Anything
// else (a terminal, a file, /dev/null) is returned as it is; a terminal is
// left alone because the shell shares its mode.
func interruptible(r io.Reader) io.Reader {
	f, ok := r.(*os.File)
	if !ok {
		return r
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&(fs.ModeNamedPipe|fs.ModeSocket) == 0 {
		return r
	}
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		return r
	}
	return os.NewFile(uintptr(fd), f.Name())
}

// describeSource says in a few words what a source reads.
func describeSource(s config.SourceConfig) string {
	switch s.Type {
	case "journald":
		if len(s.Matches) == 0 {
			return "the whole journal"
		}
		return "journal entries matching " + strings.Join(s.Matches, " or ")
	case "command":
		return "the output of " + strings.Join(s.Command, " ")
	case "stdin":
		return "standard input"
	case "webhook":
		signed := "unsigned"
		if s.SignatureKey != "" || s.SignatureKeyFile != "" {
			signed = "signed"
		}
		return fmt.Sprintf("%s webhooks at http://%s%s", signed, s.Listen, s.URLPath)
	}
	how := ""
	if s.Follow == "newest" {
		how = " (newest match)"
	}
	return fmt.Sprintf("files %v%s", s.Paths, how)
}
