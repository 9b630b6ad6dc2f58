// Package config reads mailban's YAML configuration strictly and turns it
// into the typed settings of each part of the agent.
//
// It promises that a configuration it accepts is complete and consistent,
// and that one it refuses is refused with the file, the line and the key at
// fault: an unknown key, a bad duration, threshold or network is never
// ignored or guessed at.
package config
