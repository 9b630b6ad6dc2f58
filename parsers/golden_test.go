package parsers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the .golden files under testdata/logs from the parser's output")

// logsDir holds the repository's golden logs.
const logsDir = "../testdata/logs"

// goldenArrival is when the golden logs are taken to have been read: RFC 3164
// years are inferred from it, and lines without a readable time get it.
var goldenArrival = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// goldenEvent is one line of a .golden file.
type goldenEvent struct {
	Line     int    `json:"line"`
	Time     string `json:"time"`
	Format   string `json:"format"`
	Kind     string `json:"kind"`
	Service  string `json:"service"`
	IP       string `json:"ip"`
	Login    string `json:"login"`
	Attempts int    `json:"attempts"`
}

// testPresets decodes the embedded presets once for all tests: decoding
// is most of what building a parser costs, and some tests build one for
// every line of a log.
var testPresets = sync.OnceValues(Presets)

func presetParser(t testing.TB, loc *time.Location, names ...string) *Parser {
	t.Helper()
	presets, err := testPresets()
	if err != nil {
		t.Fatalf("Presets: %v", err)
	}
	var specs []FormatSpec
	for _, n := range names {
		s, ok := presets[n]
		if !ok {
			t.Fatalf("no preset %q", n)
		}
		specs = append(specs, s)
	}
	p, err := Compile(specs, Options{Location: loc})
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

// TestGolden parses every testdata/logs/*.log with every preset, as a source
// does by default, and compares the events with the .golden file next to it.
func TestGolden(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join(logsDir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no golden logs in %s (%v)", logsDir, err)
	}
	for _, path := range logs {
		name := strings.TrimSuffix(filepath.Base(path), ".log")
		t.Run(name, func(t *testing.T) {
			p := presetParser(t, time.UTC, presetNames...)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			enc := json.NewEncoder(&got)
			enc.SetEscapeHTML(false) // logins hold <, > and &; keep them readable
			sc := bufio.NewScanner(bytes.NewReader(data))
			sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
			for n := 1; sc.Scan(); n++ {
				line := sc.Text()
				ev, ok := p.Parse(line, goldenArrival)
				if !ok {
					continue
				}
				if ev.Evidence != line {
					t.Errorf("line %d: Evidence = %q, want the line", n, ev.Evidence)
				}
				err := enc.Encode(goldenEvent{
					Line: n, Time: ev.Time.Format(time.RFC3339Nano), Format: ev.Format, Kind: ev.Kind.String(),
					Service: string(ev.Service), IP: ev.Addr.String(), Login: ev.Login, Attempts: ev.Attempts,
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(path, ".log") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./parsers -update to create it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("events differ from %s (go test ./parsers -update rewrites it):\n%s",
					golden, lineDiff(string(want), got.String()))
			}
		})
	}
}

// lineDiff lists the lines only in want (-) and only in got (+), in order.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	inW, inG := map[string]bool{}, map[string]bool{}
	for _, l := range w {
		inW[l] = true
	}
	for _, l := range g {
		inG[l] = true
	}
	var b strings.Builder
	for _, l := range w {
		if !inG[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range g {
		if !inW[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

// TestInjectionNeverFrames holds, apart from the golden file, the property
// injection.log is about: the addresses that attackers wrote into their
// logins (1.2.3.4, 1.1.1.1) never become an event's address.
func TestInjectionNeverFrames(t *testing.T) {
	p := presetParser(t, time.UTC, "postfix", "dovecot")
	data, err := os.ReadFile(filepath.Join(logsDir, "injection.log"))
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for n, line := range strings.Split(string(data), "\n") {
		ev, ok := p.Parse(line, goldenArrival)
		if !ok {
			continue
		}
		events++
		if a := ev.Addr.String(); a == "1.2.3.4" || a == "1.1.1.1" {
			t.Errorf("line %d: address %s comes from the login %q", n+1, a, ev.Login)
		}
	}
	if events < 20 {
		t.Errorf("only %d events from injection.log", events)
	}
}

// Every preset has golden lines: every pattern of every preset matches some
// line of testdata/logs/*.log, and every preset gives events in the .golden
// files.
func TestGoldenCoversEveryPreset(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join(logsDir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := presetParser(t, time.UTC, presetNames...)
	for _, path := range logs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			p.Parse(line, goldenArrival)
		}
	}
	for _, f := range p.Stats() {
		if f.Events == 0 {
			t.Errorf("preset %s gives no event in %s/*.log", f.Name, logsDir)
		}
		for _, pat := range f.Patterns {
			if pat.Matches == 0 {
				t.Errorf("pattern %s/%s matches no line of %s/*.log", f.Name, pat.Name, logsDir)
			}
		}
	}
}
