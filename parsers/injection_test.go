package parsers

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// injectionDir holds lines that attackers shaped, each with its expected
// result (see its README.md).
const injectionDir = logsDir + "/injection"

// injectionWant is a `#>` line: "none", or the event a line must give.
type injectionWant struct {
	Kind     string  `json:"kind"`
	IP       string  `json:"ip"`
	Login    *string `json:"login"`
	Attempts int     `json:"attempts"`
}

// attackerAddrs are the addresses the corpus's attackers write; no event may
// carry them.
var attackerAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.66"), netip.MustParseAddr("198.51.100.66")}

// TestInjectionCorpus requires of every line of the injection corpus exactly
// the result written above it, with every preset enabled.
func TestInjectionCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(injectionDir, "*.log"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no injection corpus in %s (%v)", injectionDir, err)
	}
	total := 0
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			p := presetParser(t, nil, presetNames...)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var want *string
			sc := bufio.NewScanner(f)
			for n := 1; sc.Scan(); n++ {
				line := sc.Text()
				if rest, ok := strings.CutPrefix(line, "#> "); ok {
					want = &rest
					continue
				}
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				if want == nil {
					t.Fatalf("line %d has no #> expectation above it", n)
				}
				total++
				checkInjection(t, p, n, line, *want)
				want = nil
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if total < 80 {
		t.Errorf("only %d lines in the injection corpus", total)
	}
}

func checkInjection(t *testing.T, p *Parser, n int, line, wantText string) {
	t.Helper()
	x := p.Explain(line, goldenArrival)
	for _, bad := range attackerAddrs {
		if x.OK && x.Event.Addr == bad {
			t.Errorf("line %d: event for the attacker's address %v\n\t%s", n, bad, line)
		}
	}
	if wantText == "none" {
		if x.OK {
			t.Errorf("line %d: event %+v, want none\n\t%s\n\t%s", n, x.Event, line, explainText(x))
		}
		return
	}
	var w injectionWant
	if err := json.Unmarshal([]byte(wantText), &w); err != nil || w.Kind == "" || w.IP == "" {
		t.Fatalf("line %d: bad expectation %q (%v)", n-1, wantText, err)
	}
	if !x.OK {
		t.Errorf("line %d: no event, want %s\n\t%s\n\t%s", n, wantText, line, explainText(x))
		return
	}
	ev := x.Event
	if ev.Kind.String() != w.Kind || ev.Addr.String() != w.IP {
		t.Errorf("line %d: %v from %v, want %s from %s\n\t%s", n, ev.Kind, ev.Addr, w.Kind, w.IP, line)
	}
	if w.Login != nil && ev.Login != *w.Login {
		t.Errorf("line %d: login %q, want %q", n, ev.Login, *w.Login)
	}
	if w.Attempts != 0 && ev.Attempts != w.Attempts {
		t.Errorf("line %d: %d attempts, want %d", n, ev.Attempts, w.Attempts)
	}
}
