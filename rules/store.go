package rules

import (
	"fmt"
	"net/netip"
	"time"
)

// Store keeps the counting state that several engines share: address and
// login windows, login locks and the successes that exempt from them, and
// remembered offences. An engine without a Store keeps that state in its
// own maps (the in-memory store, the default); with one (UseStore), every
// failure and success is tallied there, in the order observed, and the
// engine's maps serve only when the store fails.
//
// A Store must decide exactly as the in-memory store does: package
// rules/rulestest holds the behavioural tests that every Store passes.
type Store interface {
	// Configure makes the store count by cfg (with defaults filled in)
	// from now on.
	Configure(cfg Config) error
	// Tally applies ops in order, each as one atomic step against the
	// shared state, and appends one Outcome per op to out. An error means
	// no op may be taken as applied; the engine then counts them itself.
	Tally(ops []Op, out []Outcome) ([]Outcome, error)
	// Publish hands the store decisions it did not make in Tally: an
	// operator's, and those the engine made while the store was failing;
	// and the evidence of those it did make (Announcement.EvidenceOnly).
	// The store records them (a pardon also forgets offences; a lock
	// applies to the login's state) before the next Tally and announces
	// them to the other engines. It must not lose them when it fails: it
	// keeps them until they are recorded.
	Publish(as []Announcement)
}

// OpKind says what an Op tallies.
type OpKind uint8

const (
	// OpFailure is a failed login: Attempts failures at Time.
	OpFailure OpKind = iota + 1
	// OpSuccess is a successful login of Group as Login at Time.
	OpSuccess
)

// Op is one event for a Store to tally.
type Op struct {
	Kind OpKind
	// Group is the address group the event counts against (a /32 or an
	// IPv6 network of Config.IPv6Prefix); invalid when the event has no
	// address.
	Group netip.Prefix
	// Login is the normalised login; "" when the event has none or logins
	// are not counted.
	Login    string
	Time     int64 // the event's time, Unix nanoseconds, clamped to Now
	Now      int64 // the engine's clock, Unix nanoseconds
	Attempts int   // failures, at least 1
	// Refused says the engine already refuses the address at Time (a ban
	// or block it holds): the failure counts against the login only.
	Refused bool
}

// Outcome is what a Store's tally of one Op did. The engine turns it into
// decisions, with their reasons and evidence.
type Outcome struct {
	Refused      bool  // the store refuses the address at Time (an offence still in force)
	LoginCounted bool  // the failure counted against the login
	LoginCount   int   // failures in the login's window, this one's included, when counted
	LoginRef     int64 // the login window's newest failure when counted
	Locked       bool  // the login reached its threshold and is locked until LockUntil
	LockUntil    int64
	LockBan      bool  // the login was locked and the address is not exempt: it is banned
	AddrCounted  bool  // the failure counted against the address group
	AddrCount    int   // failures in the group's window, this one's included, when counted
	AddrRef      int64 // the group's window's newest failure when counted or LockBan
	Banned       bool  // the address group was banned (LockBan, or its threshold)
	BanPrev      int   // offences remembered before this one
	BanUntil     int64 // 0: permanent
}

// Announcement is a decision for Store.Publish.
type Announcement struct {
	Decision
	// Offence marks a Ban the engine made from failures (not an
	// operator's): it counts as an offence of its address group.
	Offence bool
	// EvidenceOnly marks a Ban or Lock that the store itself made in
	// Tally, handed back for its evidence lines, which only the engine
	// has. The store attaches them to the hold it keeps, if it still
	// keeps that very decision (same action, start and end, made by this
	// engine), and lets the other engines know, without counting an
	// offence or changing anything else.
	EvidenceOnly bool
}

// BanLength is the length of an address group's ban after prev remembered
// offences, as the engine computes it; permanent is true for a ban without
// end. Stores that count ban growth themselves use it.
func (c Config) BanLength(prev int) (length time.Duration, permanent bool) {
	if c.BanFactor == 0 {
		c.BanFactor = 1
	}
	e := Engine{cfg: c}
	return e.banLength(prev)
}

// OffenceSuffix is what a ban's reason adds for a repeat or permanent
// offence ("; 2nd offence: banned for 2h"), or "" for a first offence.
func OffenceSuffix(prev int, length time.Duration, permanent bool) string {
	switch {
	case permanent:
		return fmt.Sprintf("; %s offence: banned permanently", ordinal(prev+1))
	case prev > 0:
		return fmt.Sprintf("; %s offence: banned for %s", ordinal(prev+1), FormatDuration(length))
	}
	return ""
}

// ThresholdBanReason, LockBanReason and LockReason are the reasons of the
// engine's own decisions, without the offence suffix. Stores use them to
// describe decisions they announce.
func ThresholdBanReason(count int, t Threshold) string {
	return fmt.Sprintf("%d failures in %s (threshold %s)", count, FormatDuration(t.Period), t)
}

// LockBanReason is why an address failing against a locked login is banned.
func LockBanReason(login string) string {
	return fmt.Sprintf("failed login as %q, which is locked", login)
}

// LockReason is why a login is locked.
func LockReason(count int, t Threshold) string {
	return fmt.Sprintf("%d failed logins in %s (threshold %s)", count, FormatDuration(t.Period), t)
}

// GroupOf returns the address group an address counts against under cfg
// (a /32, or its IPv6 network of cfg.IPv6Prefix, 64 when 0).
func GroupOf(a netip.Addr, cfg Config) netip.Prefix {
	bits := cfg.IPv6Prefix
	if bits == 0 {
		bits = DefaultIPv6Prefix
	}
	_, p := group(a.Unmap().WithZone(""), bits)
	return p
}
