// Package fleet lets many mail hosts count failures and share bans, locks
// and blocks through one Redis (or Valkey): a rules.Store whose windows are
// exact and fleet-wide, and a stream of decisions that every host applies
// with its own enforcers. When Redis is down each host counts alone and
// queues its decisions; when Redis is back they are handed over.
package fleet
