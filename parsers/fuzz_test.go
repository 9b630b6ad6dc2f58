package parsers

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary lines to a parser with every preset: it must
// never panic, and an event must be well formed and name an address the
// line actually contains. The seed corpus is every line under
// testdata/logs; `go test` replays it, `-fuzz FuzzParse` explores from it:
//
//	go test ./parsers -run '^$' -fuzz '^FuzzParse$' -fuzztime 30s
func FuzzParse(f *testing.F) {
	for _, line := range seedLines(f) {
		f.Add(line)
	}
	p := presetParser(f, time.UTC, presetNames...)
	arrival := goldenArrival
	f.Fuzz(func(t *testing.T, line string) {
		ev, ok := p.Parse(line, arrival)
		if !ok {
			if ev != (Event{}) {
				t.Fatalf("no event, but %+v", ev)
			}
			return
		}
		checkEvent(t, ev)
		if ev.Evidence != line {
			t.Fatalf("Evidence %q, want the line", ev.Evidence)
		}
		if !lineHasAddr(line, ev.Addr) {
			t.Fatalf("address %v is not written in %q", ev.Addr, line)
		}
		x := p.Explain(line, arrival) // sessions may count differently the second time; nothing may break
		if x.OK {
			checkEvent(t, x.Event)
		}
	})
}

// FuzzParseMessage is FuzzParse for structured sources (the journal), which
// give the program tag apart.
func FuzzParseMessage(f *testing.F) {
	f.Add("postfix/smtpd", "warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: x")
	f.Add("dovecot", "imap-login: Disconnected (auth failed, 3 attempts in 2 secs): user=<x>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, session=<S>")
	f.Add("", "2026-11-25 20:34:44 dovecot_plain authenticator failed for (x) [203.0.113.6]: 535 Incorrect authentication data (set_id=a)")
	f.Add("sm-mta", "06I02CNi016764: client.example.com [203.0.113.50]: possible SMTP attack: command=AUTH, count=5")
	p := presetParser(f, time.UTC, presetNames...)
	at := goldenArrival
	f.Fuzz(func(t *testing.T, program, message string) {
		ev, ok := p.ParseMessage(at, program, message)
		if !ok {
			return
		}
		checkEvent(t, ev)
		if !ev.Time.Equal(at) && ev.Time.IsZero() {
			t.Fatalf("no time")
		}
		if !lineHasAddr(message, ev.Addr) {
			t.Fatalf("address %v is not written in %q", ev.Addr, message)
		}
	})
}

func checkEvent(t *testing.T, ev Event) {
	t.Helper()
	switch {
	case !ev.Addr.IsValid() || ev.Addr.IsUnspecified() || ev.Addr.Zone() != "" || ev.Addr.Is4In6():
		t.Fatalf("address %v", ev.Addr)
	case ev.Kind != AuthFailure && ev.Kind != AuthSuccess && ev.Kind != Abuse:
		t.Fatalf("kind %v", ev.Kind)
	case ev.Attempts < 1 || ev.Attempts > MaxAttempts:
		t.Fatalf("%d attempts", ev.Attempts)
	case !slices.Contains(presetNames, ev.Format):
		t.Fatalf("format %q", ev.Format)
	case ev.Login != NormalizeLogin(ev.Login):
		t.Fatalf("login %q is not normalised", ev.Login)
	case ev.Time.IsZero():
		t.Fatalf("no time")
	}
}

// lineHasAddr reports whether some run of address characters in line, cut
// at a colon or a dot or not (a port, an "IPv6:" tag, a full stop), is addr.
func lineHasAddr(line string, addr netip.Addr) bool {
	isAddrByte := func(c byte) bool {
		return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':'
	}
	for i := 0; i < len(line); {
		if !isAddrByte(line[i]) {
			i++
			continue
		}
		j := i
		for j < len(line) && isAddrByte(line[j]) {
			j++
		}
		run := line[i:j]
		i = j
		for a := 0; a <= len(run); a++ {
			if a > 0 && run[a-1] != ':' && run[a-1] != '.' {
				continue
			}
			for b := len(run); b > a; b-- {
				if b < len(run) && run[b] != ':' && run[b] != '.' {
					continue
				}
				if got, err := netip.ParseAddr(run[a:b]); err == nil && got.Unmap() == addr {
					return true
				}
			}
		}
	}
	return false
}

// seedLines are the lines of every log under testdata/logs (comments too:
// they are lines a parser may meet), at most 200 from each generated log.
func seedLines(f *testing.F) []string {
	f.Helper()
	var paths []string
	for _, glob := range []string{"*.log", "injection/*.log", "gen/*.log", "fail2ban/*"} {
		m, err := filepath.Glob(filepath.Join(logsDir, glob))
		if err != nil {
			f.Fatal(err)
		}
		paths = append(paths, m...)
	}
	var lines []string
	for _, path := range paths {
		if strings.HasSuffix(path, ".md") || strings.HasSuffix(path, ".tsv") {
			continue
		}
		file, err := os.Open(path)
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(file)
		sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
		n := 0
		for sc.Scan() && (n < 200 || !strings.Contains(path, "/gen/")) {
			lines = append(lines, sc.Text())
			n++
		}
		file.Close()
		if err := sc.Err(); err != nil {
			f.Fatal(err)
		}
	}
	if len(lines) < 1000 {
		f.Fatalf("only %d seed lines", len(lines))
	}
	return lines
}
