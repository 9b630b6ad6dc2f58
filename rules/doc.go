// Package rules decides, from authentication events, which addresses to ban
// and which logins to lock.
//
// It is pure logic with an injected Clock: exact sliding windows per address
// (IPv6 grouped by prefix) and per normalised login, bans that grow for
// repeat offenders, an allowlist that is never counted or banned, static
// blocks, and the login lock that stops distributed guessing without locking
// out a login's real owner. It does no I/O; its state leaves and enters
// through Records that the agent persists.
//
// # Time
//
// Failures count at the event's own time (Event.Time), clamped to
// Clock.Now, so replaying a log decides as processing it live did. A
// failure at t counts at u if u-t < Period. A ban starts at the time of the
// event that caused it; a ban that has already ended by Clock.Now is still
// remembered as an offence (and keeps the address's lines from counting
// until its end, in event time) but is not returned as a Ban. Check, Expire
// and Active use Clock.Now. Expire forgets failures more than a Period
// before Now, so a line that arrives later than that, dated earlier, finds
// them gone.
//
// # Keys
//
// An IPv4 address (IPv4-mapped IPv6 included) counts alone and is banned
// as a /32; an IPv6 address counts and is banned with its Config.IPv6Prefix
// network. Changing IPv6Prefix leaves windows made under the old one to
// age out. Logins are counted as parsers.NormalizeLogin writes them.
//
// # Login locks
//
// When a login's failures reach Config.Login it is locked for LockFor.
// An address group that logged in successfully as the login within
// SuccessMemory is exempt: its failures against the login count only
// against itself, and Check lets it through. Any other address failing
// against a locked login is banned on that failure. An allowlisted address
// is exempt from everything.
//
// # Evidence
//
// Decisions carry up to EvidenceLines of the lines that led to them, oldest
// first. Lines live in one ring of EvidenceRing entries shared by every key,
// so on a busy server a decision lacks those of its lines that are older
// than the last EvidenceRing failures seen. The ring is not persisted:
// after a restart, a decision's evidence starts with the lines read since.
// Bans and locks keep their evidence, persisted with them.
//
// # Persistence
//
// TakeChanges returns the keys changed since it was last called, in
// buckets whose names start with BucketPrefix; Restore reads them back in
// any order before the first Observe. An engine restored from everything
// TakeChanges returned decides as the engine that wrote it would have
// (evidence aside, as above).
//
// # Stores
//
// The windows, login locks and successes, and offences are the engine's
// counting state. It lives in the engine's own maps unless UseStore gives
// it a Store shared with other engines (package fleet: Redis). Then
// ObserveBatch tallies each burst there in one call, decisions other
// engines made come in through ApplyShared, and the engine's own maps count
// only while the store fails (HandBack gives those counts to the store when
// it is back). Package rules/rulestest holds the behavioural tests every
// store passes.
//
// # Cost
//
// A million addresses with one failure each take about 90 bytes each
// (about 105 while their changes wait for TakeChanges); Observe takes well
// under 200ns for an address already known. Expire visits every key: call
// it every few seconds to a minute, not per event. See bench_test.go.
package rules
