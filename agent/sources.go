package agent

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/source"
)

type runningSource struct {
	cfg    config.SourceConfig
	src    Source
	cancel context.CancelFunc
	done   chan struct{}
}

func (a *Agent) newSource(s config.SourceConfig) (Source, error) {
	saved := map[string][]byte{}
	prefix := s.Name + "\x00"
	for key, v := range a.positions {
		if stream, ok := cutPrefix(key, prefix); ok {
			saved[stream] = v
		}
	}
	build := func(saved map[string][]byte) (Source, error) {
		switch s.Type {
		case "file":
			return source.NewFile(s.FileSource(), saved, a.log)
		case "journald":
			return source.NewJournal(s.JournalSource(), saved, a.log, a.srcM)
		case "command":
			return source.NewCommand(s.CommandSource(), saved, a.log, a.srcM)
		case "stdin":
			if a.opt.Stdin == nil {
				return nil, errors.New("no standard input to read")
			}
			return source.NewStdin(s.StdinSource(), a.opt.Stdin, saved, a.log, a.srcM)
		case "webhook":
			wc := s.WebhookSource()
			// A delivery waits for the checkpoint that saves its events.
			wc.AckTimeout = max(source.DefaultAckTimeout, 3*time.Duration(a.cfg.State.CheckpointInterval))
			return source.NewWebhook(wc, saved, a.log, a.srcM)
		}
		return nil, fmt.Errorf("unknown source type %q", s.Type)
	}
	src, err := build(saved)
	if errors.Is(err, source.ErrBadCursor) {
		// A saved position that cannot be read must not keep the source
		// down: start it as if it were new, and say what that means.
		a.log.Warn("saved read positions are unreadable; reading as if for the first time (start-at applies)",
			"source", s.Name, "error", err)
		return build(nil)
	}
	return src, err
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return "", false
}

func (a *Agent) startSource(ctx context.Context, s config.SourceConfig) error {
	src, err := a.newSource(s)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	a.m.linesRead.WithLabelValues(s.Name) // from 0, before the first line
	rs := &runningSource{cfg: s, src: src, cancel: cancel, done: make(chan struct{})}
	a.sources[s.Name] = rs
	if st, ok := src.(statuser); ok {
		a.srcStat.set(s.Name, st)
	}
	go func() {
		defer close(rs.done)
		if err := src.Run(sctx, a.lines); err != nil && sctx.Err() == nil {
			a.log.Error("source stopped", "source", s.Name, "error", err)
		}
	}()
	return nil
}

// stopSources stops sources and processes every line they had already
// sent, so that their saved positions are those of the last line counted
// and a restarted source neither skips nor repeats a line.
func (a *Agent) stopSources(ctx context.Context, names []string) {
	for _, n := range names {
		if rs := a.sources[n]; rs != nil {
			rs.cancel()
		}
	}
	for _, n := range names {
		rs := a.sources[n]
		if rs == nil {
			continue
		}
		for waiting := true; waiting; {
			select {
			case l := <-a.lines:
				a.process(l)
			case <-rs.done:
				waiting = false
			}
		}
		delete(a.sources, n)
		a.srcStat.set(n, nil)
	}
	a.processQueued(cap(a.lines))
	a.observeBatch()
	a.enforce(ctx)
}

func (a *Agent) sourceNames() []string {
	names := make([]string, 0, len(a.sources))
	for n := range a.sources {
		names = append(names, n)
	}
	return names
}

// sameSource reports whether a running source can go on under b: every
// setting but those of its parser (formats, time zone) is unchanged.
func sameSource(a, b config.SourceConfig) bool {
	a.Formats, b.Formats = nil, nil
	a.Timezone, b.Timezone = config.Location{}, config.Location{}
	return reflect.DeepEqual(a, b)
}
