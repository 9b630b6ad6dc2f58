// Package nftables is the firewall enforcer: it keeps mailban's bans and
// blocks in kernel sets of its own nftables table, each timed ban carrying
// its remaining time so that the kernel drops the attacker's packets, and
// lets them go, even while mailban is not running.
package nftables
