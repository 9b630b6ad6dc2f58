// Package agent wires mailban together and owns its lifetime: it reads
// lines from the configured sources, parses them into events, lets the rules
// decide, hands decisions to the enforcers, and saves counters and read
// positions together so that a restart neither forgets nor double-counts.
//
// One goroutine (Run) owns the rules engine's writes, the read positions and
// the state store, so that a checkpoint is consistent by construction; sources
// run in goroutines of their own and feed it through one channel.
package agent
