package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/agent/control"
	"github.com/mailban/mailban/rules"
)

// BenchmarkControl measures what an admin or a script waits for: a request
// over the real socket, answered by the socket's goroutine (version), by a
// round trip through the pipeline goroutine (status), and a ban and unban
// that are each enforced and checkpointed (an fsync) before the answer.
func BenchmarkControl(b *testing.B) {
	dir, err := os.MkdirTemp("", "mbbench")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "mailban.yaml")
	yaml := fmt.Sprintf("state: {path: %[1]s/state.db}\nallowlist: {host-addresses: false}\nmetrics: {listen: \"\"}\ncontrol: {socket: %[1]s/ctl.sock}\nenforcers: {}\n", dir)
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	a, err := New(cfg, Options{HostAddresses: noHostAddresses, Enforcers: []Enforcer{discard{}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-a.Ready()
	c := control.NewClient(filepath.Join(dir, "ctl.sock"))
	defer c.Close()

	b.Run("version", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Version(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("status", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Status(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ban+unban", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Ban(ctx, control.Request{Target: "203.0.113.7", For: "1h"}); err != nil {
				b.Fatal(err)
			}
			if _, err := c.Unban(ctx, control.Request{Target: "203.0.113.7"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// discard is an enforcer that applies nothing, so the benchmark measures
// mailban's own path (the log enforcer would measure the log).
type discard struct{}

func (discard) Name() string                                  { return "discard" }
func (discard) Apply(context.Context, []rules.Decision) error { return nil }
