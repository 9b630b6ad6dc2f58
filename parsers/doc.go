// Package parsers turns mail-server log lines into authentication events.
//
// It promises text-to-Event work: no I/O, no clock, no globals. Formats are
// data (YAML documents in the same schema for the embedded presets and for
// users' own formats; see SCHEMA.md), compiled once into a Parser that is safe
// for concurrent use and rejects most lines on a literal before any regular
// expression runs. Its only memory of past lines is a bounded table of
// sessions, so that an attempt a server logs on several lines counts once;
// the table can be saved and restored, or handed to the parser a reload
// builds, so that it does so across restarts and reloads too.
package parsers
