package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailban/mailban/parsers"
)

func TestSuccessListIsBounded(t *testing.T) {
	cfg := baseConfig()
	e := newTestEngine(t, cfg, newFakeClock(t0.Add(time.Hour)))
	for i := range 20 {
		e.Observe(successEvent(fmt.Sprintf("192.0.2.%d", i), "dave", t0.Add(time.Duration(i)*time.Minute)))
	}
	e.Observe(successEvent("192.0.2.13", "dave", t0)) // older than what is known: stays
	ls := e.logins["dave"]
	if len(ls.successes) != maxSuccesses {
		t.Fatalf("kept %d successes, want %d", len(ls.successes), maxSuccesses)
	}
	for i, s := range ls.successes {
		want := netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", 19-i)).As16()
		if s.key != want {
			t.Errorf("success %d is %v, want the newest first", i, netip.AddrFrom16(s.key))
		}
	}
}

func TestExpireForgets(t *testing.T) {
	cfg := baseConfig()
	cfg.IP = Threshold{Count: 5, Period: 10 * time.Minute}
	cfg.Login = Threshold{Count: 5, Period: 20 * time.Minute}
	cfg.BanFactor, cfg.OffenderMemory = 2, Day
	clock := newFakeClock(t0.Add(5 * time.Minute))
	e := newTestEngine(t, cfg, clock)
	for i := range 100 {
		e.Observe(failure(fmt.Sprintf("192.0.2.%d", i), fmt.Sprintf("user%d", i), t0, 1))
	}
	e.Observe(failure("198.51.100.1", "", t0.Add(5*time.Minute), 2))
	e.Observe(successEvent("198.51.100.2", "owner", t0))
	for range 5 {
		e.Observe(failure("198.51.100.3", "", t0, 1)) // banned 1h
	}
	want := Stats{Addresses: 101, Logins: 101, Offenders: 1, Bans: 1}
	if s := e.Stats(); s != want {
		t.Fatalf("before: %+v, want %+v", s, want)
	}
	clock.Set(t0.Add(10 * time.Minute))
	e.Expire()
	if s := e.Stats(); s.Addresses != 1 || s.Logins != 101 {
		t.Fatalf("after 10m: %+v, want one address window left (the later one) and logins kept (20m)", s)
	}
	clock.Set(t0.Add(20 * time.Minute))
	e.Expire()
	if s := e.Stats(); s.Addresses != 0 || s.Logins != 1 {
		t.Fatalf("after 20m: %+v, want only the success remembered", s)
	}
	clock.Set(t0.Add(time.Hour))
	if got := summaries(e.Expire()); !slices.Equal(got, []string{"unban 198.51.100.3/32 at 2026-11-25 13:00:00"}) {
		t.Fatalf("Expire at the ban's end: %v", got)
	}
	checkInvariants(t, e)
	clock.Set(t0.Add(Day + time.Hour))
	e.Expire()
	if s := e.Stats(); s != (Stats{}) {
		t.Fatalf("a day later: %+v, want nothing left", s)
	}
	if n := e.slab.used(); n != 0 {
		t.Fatalf("%d rings still in use with nothing left", n)
	}
}

func TestNormalizeLoginAgreesWithParsers(t *testing.T) {
	long := strings.Repeat("a", parsers.MaxLoginLen+10)
	for _, s := range []string{"", "alice", "Alice", " alice", "alice ", "al ice", "al\tice", "ÉTÉ", "été", "a\xffb",
		"user@example.com", "USER@EXAMPLE.COM", long, long[:parsers.MaxLoginLen], "x\x7f", "\u00a0bob", "bob\u0085"} {
		if got, want := normalizeLogin(s), parsers.NormalizeLogin(s); got != want {
			t.Errorf("normalizeLogin(%q) = %q, parsers.NormalizeLogin says %q", s, got, want)
		}
	}
}

// An operator's longest reason, with the prefix a block adds, still fits
// what the state decoder reads back.
func TestManualReasonFitsTheDecoder(t *testing.T) {
	if len("manual block: ")+MaxManualReason > maxReasonLen {
		t.Fatalf("MaxManualReason %d does not fit the decoder's %d", MaxManualReason, maxReasonLen)
	}
}
