package parsers

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Logs written by gen-maillog.py, with the truth file of every attempt in them.
const genDir = logsDir + "/gen"

// genStart and genEnd bound the generated logs' times.
var (
	genStart = time.Unix(1764000000, 0).UTC()
	genEnd   = genStart.Add(48 * time.Hour) // 20000 lines run past --span: sessions, not lines, are spread over it
)

// tally is what the truth and the parser must agree on: failed attempts and
// successful logins, per service, client and normalised login.
type tallyKey struct {
	outcome string // fail or success
	service Service
	addr    netip.Addr
	login   string
}

// readTruth tallies a truth file; without perService failures are tallied
// per address and login only.
func readTruth(t testing.TB, path string, perService bool) map[tallyKey]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(rows) < 2 || rows[0] != "service\tsource_ip\tlogin\toutcome\tunix_time" {
		t.Fatalf("%s: not a truth file", path)
	}
	out := map[tallyKey]int{}
	for i, row := range rows[1:] {
		cols := strings.Split(row, "\t")
		if len(cols) != 5 {
			t.Fatalf("%s:%d: %d columns", path, i+2, len(cols))
		}
		svc, ok := ParseService(cols[0])
		addr, err := netip.ParseAddr(cols[1])
		if !ok || err != nil {
			t.Fatalf("%s:%d: service %q or address %q", path, i+2, cols[0], cols[1])
		}
		if !perService && cols[3] == "fail" {
			svc = ServiceUnknown
		}
		out[tallyKey{cols[3], svc, addr, NormalizeLogin(cols[2])}]++
	}
	return out
}

// TestReplayTruth replays generated logs through every preset and requires
// the events to add up, per service, address and login, to exactly the
// attempts the generator wrote: one attempt, one count, also when Dovecot's
// auth process logs every attempt a second time (verbose.log) and when
// logins imitate rip= or [IP]. Dovecot's auth process does not say which
// service an attempt was on, so in verbose.log failures are compared per
// address and login; that is what the rules count.
func TestReplayTruth(t *testing.T) {
	for _, name := range []string{"default", "verbose"} {
		t.Run(name, func(t *testing.T) {
			p := presetParser(t, time.UTC, presetNames...)
			perService := name != "verbose"
			want := readTruth(t, filepath.Join(genDir, name+".truth.tsv"), perService)
			f, err := os.Open(filepath.Join(genDir, name+".log"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := map[tallyKey]int{}
			arrival := genEnd.Add(time.Hour)
			sc := bufio.NewScanner(f)
			lines, abuse := 0, 0
			for sc.Scan() {
				lines++
				ev, ok := p.Parse(sc.Text(), arrival)
				if !ok {
					continue
				}
				// Every generated line has a readable time inside the log's span.
				if ev.Time.Before(genStart) || ev.Time.After(genEnd) || ev.Time.Equal(arrival) {
					t.Errorf("line %d: time %v outside the log's span", lines, ev.Time)
				}
				outcome := "fail"
				switch ev.Kind {
				case AuthSuccess:
					outcome = "success"
				case Abuse:
					abuse++
					continue // Postfix's relay rejections: not in the truth, which lists attempts
				}
				svc := ev.Service
				if !perService && outcome == "fail" {
					svc = ServiceUnknown
				}
				got[tallyKey{outcome, svc, ev.Addr, ev.Login}] += ev.Attempts
			}
			if err := sc.Err(); err != nil {
				t.Fatal(err)
			}
			if lines < 20000 {
				t.Fatalf("only %d lines", lines)
			}
			var diffs []string
			for k, n := range want {
				if got[k] != n {
					diffs = append(diffs, fmt.Sprintf("%s %s %v %q: got %d, truth %d", k.outcome, k.service, k.addr, k.login, got[k], n))
				}
			}
			for k, n := range got {
				if _, ok := want[k]; !ok {
					diffs = append(diffs, fmt.Sprintf("%s %s %v %q: got %d, truth none", k.outcome, k.service, k.addr, k.login, n))
				}
			}
			slices.Sort(diffs)
			if len(diffs) > 0 {
				t.Errorf("%d keys differ from the truth, first ones:\n%s", len(diffs), strings.Join(diffs[:min(20, len(diffs))], "\n"))
			}
			var fails, successes int
			for k, n := range want {
				if k.outcome == "fail" {
					fails += n
				} else {
					successes += n
				}
			}
			if fails == 0 || successes == 0 {
				t.Fatalf("the truth has %d failures and %d successes: not a useful sample", fails, successes)
			}
			if abuse == 0 {
				t.Errorf("no abuse events: the generator writes relay rejections")
			}
			t.Logf("%d lines: %d failed attempts and %d logins under %d keys agree with the truth (and %d abuse events)", lines, fails, successes, len(want), abuse)
		})
	}
}
