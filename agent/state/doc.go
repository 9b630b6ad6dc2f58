// Package state keeps mailban's memory across restarts in one embedded bbolt
// file: rule state and source positions are written in a single transaction,
// so a restart resumes reading exactly where the saved counters stop.
//
// It promises never to overwrite a state file it cannot read: a corrupt or
// foreign file is an error that says what to do, and it is moved aside (never
// deleted) only when the caller asks for a fresh start.
package state
