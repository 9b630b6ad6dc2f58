// Package rules decides, from authentication events, which addresses to ban
// and which logins to lock.
//
// It is pure logic with an injected Clock: exact sliding windows per address
// (IPv6 grouped by prefix) and per normalised login, bans that grow for
// repeat offenders, an allowlist that is never counted or banned, static
// blocks, and the login lock that stops distributed guessing without locking
// out a login's real owner. It does no I/O; its state leaves and enters
// through Records that the agent persists.
package rules
