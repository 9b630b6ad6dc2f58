package rulestest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/rules"
)

// testWorkloadGolden runs package rules' mixed workload and compares every
// decision, reason and evidence line with rules/testdata/workload.golden,
// which the in-memory engine wrote (go test ./rules -run
// TestBehaviour/WorkloadGolden -update refreshes it; read the diff).
func testWorkloadGolden(t *testing.T, f Factory) {
	cfg := workloadConfig()
	clock := newFakeClock(t0)
	e := f.engine(t, cfg, clock)
	var b strings.Builder
	fmt.Fprintf(&b, "# config: ip %s, login %s, ban %s ×%g (max %s, permanent at offence %d, memory %s), lock %s, successes %s\n",
		cfg.IP, cfg.Login, rules.FormatDuration(cfg.BanFor), cfg.BanFactor, rules.FormatDuration(cfg.BanMax), cfg.PermanentAfter,
		rules.FormatDuration(cfg.OffenderMemory), rules.FormatDuration(cfg.LockFor), rules.FormatDuration(cfg.SuccessMemory))
	for _, o := range workload(11, 1200) {
		clock.Set(o.at)
		ds := o.do(e)
		if len(ds) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", o.at.Format(time.TimeOnly), o.name)
		for _, d := range ds {
			fmt.Fprintf(&b, "  %s: %s\n", summary(d), d.Reason)
			for _, l := range d.Evidence {
				fmt.Fprintf(&b, "    | %s\n", l)
			}
		}
	}
	fmt.Fprintf(&b, "# in force at %s:\n", clock.Now().Format(time.DateTime))
	for _, d := range e.Active() {
		fmt.Fprintf(&b, "  %s\n", summary(d))
	}
	got := b.String()

	_, self, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(self), "..", "testdata", "workload.golden")
	if f.UpdateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file: %v", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs at line %d:\n got %s\nwant %s\n(run with -update to accept, then read the diff)", path, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s: got %d lines, want %d", path, len(gl), len(wl))
	}
}

// op is one thing that happens to an engine: an event, an Expire, or an
// operator's command. It returns what the engine decided.
type op struct {
	at   time.Time
	name string
	do   func(e *rules.Engine) []rules.Decision
}

// workload makes a deterministic mix of attackers (single addresses, a
// rotating IPv6 /64, a distributed guess at a few logins), real users with
// successes and typos, expiries and operator commands.
func workload(seed uint64, n int) []op {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var addrs []string
	for i := range 30 {
		addrs = append(addrs, fmt.Sprintf("203.0.113.%d", i))
	}
	for i := range 10 {
		addrs = append(addrs, fmt.Sprintf("2001:db8:%d::%x", i%3, r.Uint32()&0xffff))
	}
	addrs = append(addrs, "::ffff:198.51.100.9", "198.51.100.9", "127.0.0.1")
	logins := []string{"alice", "bob", "carol", "admin", "info", "test", ""}
	at := t0
	var ops []op
	for i := range n {
		at = at.Add(time.Duration(r.IntN(90)) * time.Second)
		a, l := addrs[r.IntN(len(addrs))], logins[r.IntN(len(logins))]
		switch k := r.IntN(100); {
		case k < 75:
			ev := failure(a, l, at.Add(-time.Duration(r.IntN(5))*time.Second), 1+r.IntN(3)*r.IntN(2))
			ev.Evidence = fmt.Sprintf("line %d", i)
			ops = append(ops, op{at, "fail " + a + " " + l, func(e *rules.Engine) []rules.Decision { return e.Observe(ev) }})
		case k < 85:
			ev := successEvent(a, l, at)
			ops = append(ops, op{at, "success " + a + " " + l, func(e *rules.Engine) []rules.Decision { return e.Observe(ev) }})
		case k < 93:
			ops = append(ops, op{at, "expire", func(e *rules.Engine) []rules.Decision { return e.Expire() }})
		case k < 95:
			p := netip.PrefixFrom(netip.MustParseAddr(a).Unmap(), 24+r.IntN(9))
			d := time.Duration(r.IntN(3)) * 30 * time.Minute
			ops = append(ops, op{at, "ban " + p.String(), func(e *rules.Engine) []rules.Decision {
				if d, err := e.BanManual(p, d, "op"); err == nil {
					return []rules.Decision{d}
				}
				return nil
			}})
		case k < 97:
			p := netip.PrefixFrom(netip.MustParseAddr(a).Unmap(), 32)
			if netip.MustParseAddr(a).Is6() && !netip.MustParseAddr(a).Is4In6() {
				p, _ = netip.MustParseAddr(a).Prefix(64)
			}
			ops = append(ops, op{at, "unban " + p.String(), func(e *rules.Engine) []rules.Decision {
				if d, ok := e.Unban(p); ok {
					return []rules.Decision{d}
				}
				return nil
			}})
		case k < 98:
			p := netip.PrefixFrom(netip.MustParseAddr(a).Unmap(), 28).Masked()
			ops = append(ops, op{at, "block " + p.String(), func(e *rules.Engine) []rules.Decision {
				if r.IntN(2) == 0 {
					if d, ok := e.UnblockManual(p); ok {
						return []rules.Decision{d}
					}
					return nil
				}
				if d, err := e.BlockManual(p, "op"); err == nil {
					return []rules.Decision{d}
				}
				return nil
			}})
		default:
			ops = append(ops, op{at, "unlock " + l, func(e *rules.Engine) []rules.Decision {
				if d, ok := e.Unlock(l); ok {
					return []rules.Decision{d}
				}
				return nil
			}})
		}
	}
	return ops
}

func workloadConfig() rules.Config {
	return rules.Config{
		IP:             rules.Threshold{Count: 4, Period: 10 * time.Minute},
		Login:          rules.Threshold{Count: 5, Period: 15 * time.Minute},
		BanFor:         10 * time.Minute,
		BanFactor:      2,
		BanMax:         2 * time.Hour,
		PermanentAfter: 6,
		OffenderMemory: 6 * time.Hour,
		LockFor:        20 * time.Minute,
		SuccessMemory:  2 * time.Hour,
		Allow:          []netip.Prefix{mustPrefix("127.0.0.0/8")},
		Blocked:        []netip.Prefix{mustPrefix("203.0.113.16/30")},
		EvidenceLines:  4,
	}
}
