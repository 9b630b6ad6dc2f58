// Package parsers turns mail-server log lines into authentication events.
//
// It promises pure text-to-Event work: no I/O, no clock, no globals. Formats are
// data (YAML documents in the same schema for the embedded presets and for
// users' own formats; see SCHEMA.md), compiled once into a Parser that is safe
// for concurrent use and rejects most lines on a literal before any regular
// expression runs.
package parsers
