package examples

import (
	"bytes"
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/agent"
	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/rules"
)

var update = flag.Bool("update", false, "rewrite the sample.golden files")

// Each deployment in deploy/ is a directory with a README.md, a
// mailban.yaml meant for /etc/mailban, and a sample.log of what that setup
// logs. The configuration must load, fit the systemd unit's sandbox, and
// make of the sample what sample.golden says (mailban test --json). A
// deployment may offer variants, mailban-<variant>.yaml (a source whose
// input a replay cannot read, such as a webhook): they must load and fit
// the unit too.
func TestDeployments(t *testing.T) {
	dirs, err := filepath.Glob("deploy/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no deployments (%v)", err)
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			for _, f := range []string{"README.md", "mailban.yaml", "sample.log"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Fatalf("missing %s", f)
				}
			}
			cfg, err := config.Load(filepath.Join(dir, "mailban.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			checkFitsTheUnit(t, dir, cfg)
			variants, _ := filepath.Glob(filepath.Join(dir, "mailban-*.yaml"))
			for _, v := range variants {
				vcfg, err := config.Load(v)
				if err != nil {
					t.Error(err)
					continue
				}
				checkFitsTheUnit(t, dir, vcfg)
			}

			var out bytes.Buffer
			f, err := os.Open(filepath.Join(dir, "sample.log"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var formats []string
			for _, s := range cfg.Sources {
				formats = append(formats, s.Formats...)
			}
			sum, err := agent.Replay(context.Background(), agent.ReplayOptions{
				Config: cfg, Formats: formats, JSON: true, Out: &out,
				Now: time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC),
				// The samples' hosts keep UTC: times written without a zone
				// (Exim, journalctl -o short) read the same on every machine.
				Location:      time.UTC,
				HostAddresses: func() ([]netip.Prefix, error) { return nil, nil },
			}, []agent.ReplayInput{{Name: "sample.log", R: f}})
			if err != nil {
				t.Fatal(err)
			}
			bans := 0
			for _, d := range sum.Decisions {
				if d.Action == rules.Ban {
					bans++
				}
			}
			if bans == 0 {
				t.Errorf("the sample bans no one: it shows nothing of what the deployment is for")
			}
			golden := filepath.Join(dir, "sample.golden")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("replay of sample.log differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", golden, out.Bytes(), want)
			}
		})
	}
}

// checkFitsTheUnit fails for settings the systemd unit's sandbox would
// refuse: files and sockets to create outside its state and runtime
// directories, logs where the unit cannot see them (ProtectHome,
// PrivateTmp), and paths relative to the examples directory rather than
// the host's.
func checkFitsTheUnit(t *testing.T, dir string, cfg *config.Config) {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := unitDirectives(t, unitPath)
	stateDir := "/var/lib/" + strings.Join(d["StateDirectory"], "")
	runDir := "/run/" + strings.Join(d["RuntimeDirectory"], "")
	if filepath.Dir(cfg.State.Path) != stateDir {
		t.Errorf("state.path %s is outside the unit's StateDirectory %s", cfg.State.Path, stateDir)
	}
	if s := cfg.Control.Socket; s != "" && filepath.Dir(s) != runDir {
		t.Errorf("control.socket %s is outside the unit's RuntimeDirectory %s", s, runDir)
	}
	if h := cfg.Enforcers.Hook; h != nil {
		listen := map[string][]string{"native": h.Native.Listen}
		if h.Postfix != nil {
			listen["postfix"] = h.Postfix.Listen
		}
		if h.Dovecot != nil {
			listen["dovecot"] = h.Dovecot.Listen
		}
		if h.Nginx != nil {
			listen["nginx"] = h.Nginx.Listen
		}
		if h.Milter != nil {
			listen["milter"] = h.Milter.Listen
		}
		for proto, addrs := range listen {
			for _, a := range addrs {
				if strings.HasPrefix(a, "/") && filepath.Dir(a) != runDir {
					t.Errorf("enforcers.hook.%s listens on %s, outside the unit's RuntimeDirectory %s (ProtectSystem=strict: add a ReadWritePaths= for it)", proto, a, runDir)
				}
			}
		}
	}
	// Where the unit's own mount namespace shows something else than the
	// host's: empty directories (ProtectHome=yes hides /home, /root and
	// /run/user; PrivateTmp=yes gives the unit its own /tmp and /var/tmp).
	hidden := map[string][]string{
		"ProtectHome": {"/home", "/root", "/run/user"},
		"PrivateTmp":  {"/tmp", "/var/tmp"},
	}
	for _, s := range cfg.Sources {
		for _, p := range s.Paths {
			if strings.HasPrefix(p, abs) {
				t.Errorf("source %s reads %s: a path relative to the example, not the host's", s.Name, p)
			}
			for directive, dirs := range hidden {
				if strings.Join(d[directive], "") != "yes" {
					continue
				}
				for _, h := range dirs {
					if p == h || strings.HasPrefix(p, h+"/") {
						t.Errorf("source %s reads %s, which the unit's %s=yes hides", s.Name, p, directive)
					}
				}
			}
		}
	}
}
