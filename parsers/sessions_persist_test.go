package parsers

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// sessionLogs are the golden inputs whose counts depend on session memory:
// Dovecot with auth_verbose=yes (attempt lines, then the summary) and
// sendmail (the summary before the last attempt's line).
var sessionLogs = []string{"dovecot-verbose.log", "sendmail.log"}

func readLogLines(t testing.TB, name string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(logsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

// parsedEvent is what of an event the split test compares.
type parsedEvent struct {
	line     int
	format   string
	kind     Kind
	addr     netip.Addr
	login    string
	attempts int
	time     time.Time
}

func parseFrom(p *Parser, lines []string, first int, out []parsedEvent) []parsedEvent {
	for i, l := range lines {
		if ev, ok := p.Parse(l, goldenArrival); ok {
			out = append(out, parsedEvent{first + i, ev.Format, ev.Kind, ev.Addr, ev.Login, ev.Attempts, ev.Time})
		}
	}
	return out
}

// Splitting a log anywhere (a restart), saving the session memory and
// restoring it into a freshly compiled parser gives exactly the events and
// attempt counts of one uninterrupted parse.
func TestSessionsSurviveASplitAnywhere(t *testing.T) {
	for _, name := range sessionLogs {
		t.Run(name, func(t *testing.T) {
			lines := readLogLines(t, name)
			want := parseFrom(presetParser(t, time.UTC, presetNames...), lines, 0, nil)
			differs := 0 // split points where forgetting the sessions would count differently
			for k := 0; k <= len(lines); k++ {
				before := presetParser(t, time.UTC, presetNames...)
				got := parseFrom(before, lines[:k], 0, nil)
				record := before.EncodeSessions(nil)

				after := presetParser(t, time.UTC, presetNames...)
				if err := after.DecodeSessions(record); err != nil {
					t.Fatalf("split at line %d: %v", k+1, err)
				}
				if again := after.EncodeSessions(nil); !bytes.Equal(again, record) {
					t.Fatalf("split at line %d: the restored memory encodes differently:\n%x\n%x", k+1, record, again)
				}
				got = parseFrom(after, lines[k:], k, got)
				if !slices.Equal(got, want) {
					t.Fatalf("split after line %d: events differ from one parse:\ngot  %v\nwant %v", k, got, want)
				}

				forgetful := parseFrom(presetParser(t, time.UTC, presetNames...), lines[k:], k, parseFrom(presetParser(t, time.UTC, presetNames...), lines[:k], 0, nil))
				if !slices.Equal(forgetful, want) {
					differs++
				}
			}
			// The test can fail: without the saved memory some split
			// points count a session twice.
			if differs == 0 {
				t.Errorf("no split point of %s depends on session memory", name)
			}
		})
	}
}

// A reload hands the tables to the new parser: a summary parsed by it
// counts only what the old parser's attempt lines did not.
func TestAdoptSessions(t *testing.T) {
	lines := readLogLines(t, "dovecot-verbose.log")
	want := parseFrom(presetParser(t, time.UTC, presetNames...), lines, 0, nil)
	for k := 0; k <= len(lines); k++ {
		old := presetParser(t, time.UTC, presetNames...)
		got := parseFrom(old, lines[:k], 0, nil)
		// The new configuration has other formats around dovecot, in
		// another order: tables go by format name.
		next := presetParser(t, time.UTC, "sendmail-auth", "dovecot", "postfix")
		if n := next.AdoptSessions(old); n != 2 {
			t.Fatalf("adopted %d tables, want 2 (dovecot, sendmail-auth)", n)
		}
		if !next.SessionsChanged() {
			t.Fatal("an adopting parser does not ask to be saved")
		}
		got = parseFrom(next, lines[k:], k, got)
		if !slices.Equal(got, want) {
			t.Fatalf("reload after line %d: events differ from one parse:\ngot  %v\nwant %v", k, got, want)
		}
	}
	if n := presetParser(t, time.UTC, "postfix").AdoptSessions(presetParser(t, time.UTC, "dovecot")); n != 0 {
		t.Errorf("a parser without session rules adopted %d tables", n)
	}
}

// Only a line that changes session memory makes it worth writing.
func TestSessionsChanged(t *testing.T) {
	p := presetParser(t, time.UTC, presetNames...)
	steps := []struct {
		do   func()
		want bool
	}{
		{func() {}, false},
		{func() {
			p.Parse("Nov 25 19:45:24 mail postfix/submission/smtpd[19780]: warning: unknown[203.0.113.9]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice@example.test", goldenArrival)
		}, false},
		{func() {
			p.Parse("Nov 25 20:00:01 mail dovecot: auth: passwd-file(admin@example.test,203.0.113.70,<Aa1Bb2Cc3Dd4Ee5F>): unknown user", goldenArrival)
		}, true},
		{func() { p.EncodeSessions(nil) }, false},
		{func() {
			p.Parse("Nov 25 20:00:06 mail dovecot: imap-login: Disconnected: Connection closed (auth failed, 1 attempts in 6 secs): user=<admin@example.test>, method=PLAIN, rip=203.0.113.70, lip=192.0.2.10, TLS, session=<Aa1Bb2Cc3Dd4Ee5F>", goldenArrival)
		}, true},
		{func() {
			if err := p.DecodeSessions(p.EncodeSessions(nil)); err != nil {
				t.Fatal(err)
			}
		}, false},
		{func() { p.AdoptSessions(presetParser(t, time.UTC, "dovecot")) }, true},
	}
	for i, s := range steps {
		s.do()
		if got := p.SessionsChanged(); got != s.want {
			t.Errorf("step %d: SessionsChanged = %v, want %v", i, got, s.want)
		}
	}
}

// ringIDs lists a table's session ids, newest first.
func ringIDs(t *sessionTable) []string {
	var ids []string
	for s := t.lru.next; s != &t.lru; s = s.next {
		ids = append(ids, s.id)
	}
	return ids
}

// A restored table forgets its sessions in the order the saved one would
// have, and counts as it would have from there on.
func TestRestoredTableKeepsItsBoundAndOrder(t *testing.T) {
	const max = 8
	step := func(tab *sessionTable, i int) sessionOutcome {
		id := fmt.Sprintf("s%d", (i*7)%13) // revisits sessions, out of order
		addr := netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 3)})
		login := []string{"alice", "bob"}[i%2]
		switch i % 4 {
		case 3:
			return tab.summary(id, i%8 != 7, addr, login, 1+i%3)
		default:
			return tab.attempt(id, addr, login, 1)
		}
	}
	for split := 0; split < 60; split += 7 {
		orig := newSessionTable(max)
		for i := range split {
			step(orig, i)
		}
		record := orig.encode(nil)
		restored := newSessionTable(max)
		if err := restored.decode(&decoder{data: record}); err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
		for i := split; i < split+60; i++ {
			if a, b := step(orig, i), step(restored, i); a != b {
				t.Fatalf("split %d, step %d: restored table made %+v, the original %+v", split, i, b, a)
			}
			if a, b := ringIDs(orig), ringIDs(restored); !slices.Equal(a, b) {
				t.Fatalf("split %d, step %d: recency order %v, the original's %v", split, i, b, a)
			}
			if len(restored.byID) > max {
				t.Fatalf("split %d: %d sessions, bound %d", split, len(restored.byID), max)
			}
		}
		if !bytes.Equal(orig.encode(nil), restored.encode(nil)) {
			t.Errorf("split %d: the tables differ after the same lines", split)
		}
	}
}

// Bytes that are not a session record are an error that says what is
// wrong, and leave the parser's memory as it was.
func TestDecodeSessionsRejectsCorruptRecords(t *testing.T) {
	owner := []byte{4, 203, 0, 113, 1, 1, 'x', 0} // 203.0.113.1, login x, 0 unclaimed
	rec := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	dovecot := []byte{7, 'd', 'o', 'v', 'e', 'c', 'o', 't'}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty record"},
		{"newer version", []byte{2, 0}, "version 2"},
		{"no format count", []byte{1}, "formats: record ends"},
		{"format count past the data", []byte{1, 9}, "9 formats"},
		{"name past the data", []byte{1, 1, 40, 'd'}, "format name: 40 bytes, but only 1 are left"},
		{"owner count past the bound", rec([]byte{1, 1}, dovecot, []byte{0xff, 0xff, 0x01}), "owners, at most 4096"},
		{"bad address length", rec([]byte{1, 1}, dovecot, []byte{1, 5}), "address is 5 bytes"},
		{"login not normalised", rec([]byte{1, 1}, dovecot, []byte{1, 4, 203, 0, 113, 1, 1, 'X', 0, 0}), `login "X" is not normalised`},
		{"owner without session", rec([]byte{1, 1}, dovecot, []byte{1}, owner, []byte{0}), "has no session"},
		{"owner index out of range", rec([]byte{1, 1}, dovecot, []byte{1}, owner, []byte{1, 1, 's', 3, 0, 0}), "owner 3, but there are 1 owners"},
		{"duplicate session", rec([]byte{1, 1}, dovecot, []byte{1}, owner, []byte{2, 1, 's', 0, 0, 0, 1, 's', 0, 0, 0}), `id "s" is given twice`},
		{"count out of range", rec([]byte{1, 1}, dovecot, []byte{1}, owner, []byte{1, 1, 's', 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0}), "own: 4294967295 is out of range"},
		{"varint overflow", rec([]byte{1, 1}, dovecot, []byte{1}, owner, []byte{1, 1, 's', 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}), "own: number too large"},
		{"cut short", rec([]byte{1, 1}, dovecot, []byte{1}, owner, []byte{1, 1, 's', 0, 0}), "absorb: record ends"},
		{"trailing bytes", rec([]byte{1, 1}, dovecot, []byte{1}, owner, []byte{1, 1, 's', 0, 0, 0, 9}), "1 bytes after the last format"},
		{"format twice", rec([]byte{1, 2}, dovecot, []byte{0, 0}, dovecot, []byte{0, 0}), `format "dovecot" is given twice`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := presetParser(t, time.UTC, "dovecot")
			p.Parse("Nov 25 20:00:01 mail dovecot: auth: passwd-file(admin@example.test,203.0.113.70,<Aa1Bb2Cc3Dd4Ee5F>): unknown user", goldenArrival)
			before := p.EncodeSessions(nil)
			err := p.DecodeSessions(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if after := p.EncodeSessions(nil); !bytes.Equal(before, after) {
				t.Errorf("a rejected record changed the memory")
			}
		})
	}
	// A well-formed record of the same shape is accepted: the cases above
	// fail for the reason they name.
	ok := rec([]byte{1, 1}, dovecot, []byte{1}, owner, []byte{1, 1, 's', 0, 2, 0})
	if err := presetParser(t, time.UTC, "dovecot").DecodeSessions(ok); err != nil {
		t.Errorf("a good record: %v", err)
	}
}

// checkTable verifies what counting relies on: map and ring hold the same
// sessions within the bound, and every owner with sessions has its pending
// count with the right number of them.
func checkTable(t *testing.T, tab *sessionTable) {
	t.Helper()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	perOwner := map[ownerKey]int{}
	n := 0
	for s := tab.lru.next; s != &tab.lru; s = s.next {
		if n++; n > tab.max {
			t.Fatalf("more than %d sessions in the ring", tab.max)
		}
		if tab.byID[s.id] != s {
			t.Fatalf("session %q is in the ring but not the map", s.id)
		}
		if s.next.prev != s {
			t.Fatalf("ring broken at %q", s.id)
		}
		perOwner[s.owner]++
	}
	if n != len(tab.byID) {
		t.Fatalf("%d sessions in the ring, %d in the map", n, len(tab.byID))
	}
	if len(perOwner) != len(tab.pending) {
		t.Fatalf("%d owners with sessions, %d pending counts", len(perOwner), len(tab.pending))
	}
	for o, c := range perOwner {
		if p := tab.pending[o]; p == nil || p.sessions != c || p.attempts < 0 {
			t.Fatalf("owner %v: %d sessions, pending %+v", o, c, p)
		}
	}
}

func FuzzDecodeSessions(f *testing.F) {
	var corpus [][]string
	for _, name := range sessionLogs {
		corpus = append(corpus, readLogLines(f, name))
	}
	for _, lines := range corpus {
		p := presetParser(f, time.UTC, presetNames...)
		for i, l := range lines {
			p.Parse(l, goldenArrival)
			if i%4 == 0 {
				f.Add(p.EncodeSessions(nil))
			}
		}
	}
	// Decoding replaces all of a parser's session memory: two parsers
	// serve every input.
	p := presetParser(f, time.UTC, "dovecot", "sendmail-auth", "postfix")
	q := presetParser(f, time.UTC, "dovecot", "sendmail-auth", "postfix")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := p.DecodeSessions(data); err != nil {
			return
		}
		// Whatever was accepted is a consistent table that encodes to a
		// record read back as the same memory, and counts on.
		for _, fm := range p.formats {
			if fm.sessions != nil {
				checkTable(t, fm.sessions)
			}
		}
		record := p.EncodeSessions(nil)
		if err := q.DecodeSessions(record); err != nil {
			t.Fatalf("re-encoded record rejected: %v", err)
		}
		if again := q.EncodeSessions(nil); !bytes.Equal(again, record) {
			t.Fatalf("re-encoding differs")
		}
		for _, lines := range corpus {
			parseFrom(p, lines, 0, nil)
		}
		for _, fm := range p.formats {
			if fm.sessions != nil {
				checkTable(t, fm.sessions)
			}
		}
	})
}

// fullSessionParser is a dovecot parser whose table holds maxSessions
// sessions, each of one attempt line, from 1024 addresses and 4 logins.
func fullSessionParser(b *testing.B) *Parser {
	p := presetParser(b, time.UTC, "dovecot")
	for i := range maxSessions + 100 {
		line := fmt.Sprintf("Nov 25 20:00:01 mail dovecot: auth: passwd-file(user%d@example.test,198.51.%d.%d,<%016x>): Password mismatch",
			i%4, 100+(i/256)%4, i%256, uint64(i)*0x9e3779b97f4a7c15)
		if _, ok := p.Parse(line, goldenArrival); !ok {
			b.Fatalf("no event from %q", line)
		}
	}
	if n := len(p.formats[0].sessions.byID); n != maxSessions {
		b.Fatalf("%d sessions, want %d", n, maxSessions)
	}
	return p
}

// BenchmarkSessions measures saving and restoring a full session table
// (4096 sessions), what a checkpoint and a start cost at most per source.
// Run: go test ./parsers -run '^$' -bench Sessions -benchmem
func BenchmarkSessions(b *testing.B) {
	p := fullSessionParser(b)
	record := p.EncodeSessions(nil)
	b.Run("encode-4096", func(b *testing.B) {
		buf := make([]byte, 0, len(record))
		b.ReportAllocs()
		for b.Loop() {
			buf = p.EncodeSessions(buf[:0])
		}
		b.ReportMetric(float64(len(record)), "record-bytes")
	})
	b.Run("decode-4096", func(b *testing.B) {
		q := presetParser(b, time.UTC, "dovecot")
		b.ReportAllocs()
		for b.Loop() {
			if err := q.DecodeSessions(record); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(record)), "record-bytes")
	})
	b.Run("changed-idle", func(b *testing.B) {
		p.EncodeSessions(nil)
		for b.Loop() {
			if p.SessionsChanged() {
				b.Fatal("changed")
			}
		}
	})
}
