// Package dryrun is the log enforcer: it writes every decision to mailban's
// log and changes nothing else, so that thresholds can be tried on a live
// server before anything is refused.
package dryrun
