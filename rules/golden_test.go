package rules

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestWorkloadGolden writes every decision of a deterministic mixed
// workload (see workload) in a form people can read, and compares it with
// testdata/workload.golden: any change in what the engine decides, or in
// how it explains itself, shows up as a diff there. Refresh it with
// go test ./rules -run WorkloadGolden -update, and read the diff.
func TestWorkloadGolden(t *testing.T) {
	cfg := workloadConfig()
	clock := newFakeClock(t0)
	e := newTestEngine(t, cfg, clock)
	var b strings.Builder
	fmt.Fprintf(&b, "# config: ip %s, login %s, ban %s ×%g (max %s, permanent at offence %d, memory %s), lock %s, successes %s\n",
		cfg.IP, cfg.Login, FormatDuration(cfg.BanFor), cfg.BanFactor, FormatDuration(cfg.BanMax), cfg.PermanentAfter,
		FormatDuration(cfg.OffenderMemory), FormatDuration(cfg.LockFor), FormatDuration(cfg.SuccessMemory))
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

	path := filepath.Join("testdata", "workload.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs at line %d:\n got %s\nwant %s\n(run with -update to accept, then read the diff)", path, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s: got %d lines, want %d (run with -update to accept)", path, len(gl), len(wl))
	}
}
