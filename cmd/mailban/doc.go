// Command mailban protects mail servers from password guessing: it reads
// their logs, counts failed logins per address and per login, and bans.
//
// Usage:
//
//	mailban run [--config FILE] [--fresh-state]
//	mailban check-config [--config FILE]
//	mailban test [--config FILE] [--format NAME[,NAME...]] [--json] [--explain] [--timezone ZONE] FILE...
//	mailban status | bans | locks | ban | unban | block | unblock | unlock | why | reload
//	mailban firewall remove [--config FILE]
//	mailban version
//
// Run `mailban help` for the control commands' arguments and exit codes.
package main
