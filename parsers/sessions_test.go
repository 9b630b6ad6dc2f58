package parsers

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// sessionStep is one line given to a session table: an attempt line, or a
// summary of n attempts (id "" for a summary that names no session).
type sessionStep struct {
	summary bool
	id      string
	addr    string
	login   string
	n       int
	want    int // attempts it must count
}

func TestSessionTable(t *testing.T) {
	att := func(id, addr, login string, want int) sessionStep {
		return sessionStep{id: id, addr: addr, login: login, n: 1, want: want}
	}
	sum := func(id, addr, login string, n, want int) sessionStep {
		return sessionStep{summary: true, id: id, addr: addr, login: login, n: n, want: want}
	}
	const a, b = "203.0.113.1", "203.0.113.2"
	tests := []struct {
		name  string
		max   int
		steps []sessionStep
	}{
		{"summary alone counts all", 8, []sessionStep{sum("s", a, "x", 3, 3)}},
		{"attempts then their summary", 8, []sessionStep{att("s", a, "x", 1), att("s", a, "x", 1), sum("s", a, "x", 2, 0)}},
		{"a summary larger than its attempt lines counts the rest", 8, []sessionStep{att("s", a, "x", 1), sum("s", a, "x", 3, 2)}},
		{"more attempt lines than the summary says", 8, []sessionStep{att("s", a, "x", 1), att("s", a, "x", 1), sum("s", a, "x", 1, 0)}},
		{"logins change within a session", 8, []sessionStep{att("s", a, "alice", 1), att("s", a, "bob", 1), sum("s", a, "bob", 2, 0)}},
		{"a summary first absorbs the attempt lines after it (sendmail)", 8, []sessionStep{
			att("q", a, "", 1), att("q", a, "", 1), att("q", a, "", 1), att("q", a, "", 1), sum("q", a, "", 5, 1), att("q", a, "", 0), att("q", a, "", 1)}},
		{"an unknown session takes over unclaimed attempts of its address and login", 8, []sessionStep{
			att("s1", a, "x", 1), att("s2", a, "x", 1), sum("s3", a, "x", 2, 0)}},
		{"but not those of another address", 8, []sessionStep{att("s1", a, "x", 1), sum("s2", b, "x", 1, 1)}},
		{"nor of another login", 8, []sessionStep{att("s1", a, "x", 1), sum("s2", a, "y", 1, 1)}},
		{"a summary without a session id", 8, []sessionStep{att("s1", a, "x", 1), sum("", a, "x", 2, 1)}},
		{"what another summary took over is counted again by its own session's summary", 8, []sessionStep{
			att("A", a, "x", 1), att("A", a, "x", 1), // A's two attempts
			sum("B", a, "x", 1, 0), // B's summary, session unknown, takes one of A's
			sum("A", a, "x", 2, 1), // A counts the one B took: 2 + 0 + 1 = 3 = 2 + 1
		}},
		{"a forgotten session's summary counts all again", 2, []sessionStep{
			att("s1", a, "x", 1), att("s2", a, "y", 1), att("s3", a, "z", 1), sum("s1", a, "x", 1, 1)}},
		{"a summary read twice counts twice, as any line read twice", 8, []sessionStep{
			att("s", a, "x", 1), sum("s", a, "x", 1, 0), sum("s", a, "x", 1, 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := newSessionTable(tt.max)
			for i, s := range tt.steps {
				addr := netip.MustParseAddr(s.addr)
				var out sessionOutcome
				if s.summary {
					out = tab.summary(s.id, s.id != "", addr, s.login, s.n)
				} else {
					out = tab.attempt(s.id, addr, s.login, s.n)
				}
				if out.counted != s.want {
					t.Errorf("step %d (%+v): counted %d, want %d", i, s, out.counted, s.want)
				}
			}
			if len(tab.byID) > tt.max {
				t.Errorf("%d sessions remembered, at most %d", len(tab.byID), tt.max)
			}
		})
	}
}

// The table stays within its bound and its pending counts stay consistent
// under a long run of sessions.
func TestSessionTableBounded(t *testing.T) {
	tab := newSessionTable(64)
	total, counted := 0, 0
	for i := range 10000 {
		id := fmt.Sprintf("s%d", i)
		addr := netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 7)})
		n := 1 + i%3
		for range n {
			counted += tab.attempt(id, addr, "x", 1).counted
		}
		counted += tab.summary(id, true, addr, "x", n).counted
		total += n
	}
	if counted != total {
		t.Errorf("counted %d attempts, want %d", counted, total)
	}
	if len(tab.byID) > 64 || len(tab.pending) > 64 {
		t.Errorf("%d sessions and %d owners remembered", len(tab.byID), len(tab.pending))
	}
	n := 0
	for s := tab.lru.next; s != &tab.lru; s = s.next {
		n++
	}
	if n != len(tab.byID) {
		t.Errorf("%d sessions in the recency ring, %d in the map", n, len(tab.byID))
	}
}

// Two goroutines feeding one parser interleaved sessions still count each
// attempt once in total (run with -race).
func TestSessionsConcurrent(t *testing.T) {
	p := presetParser(t, time.UTC, "dovecot")
	var wg sync.WaitGroup
	counts := make([]int, 4)
	for g := range counts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := fmt.Sprintf("g%dn%d", g, i)
				ip := fmt.Sprintf("203.0.113.%d", g+1)
				for range 2 {
					ev, ok := p.Parse(fmt.Sprintf("Nov 25 20:00:01 mail dovecot: auth: passwd-file(x,%s,<%s>): unknown user", ip, id), goldenArrival)
					if ok {
						counts[g] += ev.Attempts
					}
				}
				ev, ok := p.Parse(fmt.Sprintf("Nov 25 20:00:02 mail dovecot: imap-login: Disconnected (auth failed, 3 attempts in 2 secs): user=<x>, method=PLAIN, rip=%s, lip=192.0.2.1, session=<%s>", ip, id), goldenArrival)
				if ok {
					counts[g] += ev.Attempts
				}
			}
		}()
	}
	wg.Wait()
	for g, n := range counts {
		if n != 600 {
			t.Errorf("goroutine %d counted %d attempts, want 600", g, n)
		}
	}
}
