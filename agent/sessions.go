package agent

import (
	"github.com/mailban/mailban/agent/state"
	"github.com/mailban/mailban/parsers"
)

// sessionsBucket holds each source's parser session memory
// (parsers.Parser.EncodeSessions), keyed by source name: what a server's
// earlier lines of a session counted, so that its summary read after a
// restart does not count them again. It is written in the checkpoint that
// saves the positions of the lines it reflects (parsing and checkpoints
// both run in the Run goroutine), so the two always match.
const sessionsBucket = "sessions"

// saveSessions queues the session memory of every parser whose memory
// changed since it was last queued. An idle parser costs nothing.
func (a *Agent) saveSessions() {
	for name, p := range a.parsers {
		if p.SessionsChanged() {
			a.queueSessions(name, p.EncodeSessions(nil))
		}
	}
}

// queueSessions puts a source's record (nil: delete it) among the pending
// changes, in place of one still pending for it: while commits fail, the
// newest record waits, not one per checkpoint.
func (a *Agent) queueSessions(name string, value []byte) {
	for i := range a.pending {
		if r := &a.pending[i]; r.Bucket == sessionsBucket && string(r.Key) == name {
			r.Value = value
			return
		}
	}
	a.pending = append(a.pending, state.Record{Bucket: sessionsBucket, Key: []byte(name), Value: value})
}

// restoreSessions gives a source's parser the session memory saved with
// the positions it resumes from.
//
// A record that does not decode loses only that memory: the sessions cut
// by the restart count twice, as before this was saved. That is a warning,
// not a refusal to start: refusing would leave the mail server unprotected,
// and the way out the state package offers for a damaged file
// (--fresh-state) would throw away every ban and counter for the sake of
// a record that only prevents double counts. The record is left as it is
// (the file is readable; nothing is deleted) and is replaced by the next
// checkpoint that saves this source's sessions.
func (a *Agent) restoreSessions(r state.Record) {
	name := string(r.Key)
	p := a.parsers[name]
	if p == nil {
		a.log.Info("saved session memory dropped: the source is no longer configured", "source", name)
		a.queueSessions(name, nil)
		return
	}
	if err := p.DecodeSessions(r.Value); err != nil {
		a.log.Warn("saved session memory is unreadable and is not used: attempts of sessions cut by the restart may count twice",
			"source", name, "error", err)
	}
}

// adoptSessions hands the running parsers' session memory to those a
// reload built, so that a session cut by the reload counts once, and
// deletes the memory of sources the reload removed.
func (a *Agent) adoptSessions(next map[string]*parsers.Parser) {
	for name, old := range a.parsers {
		p := next[name]
		if p == nil {
			a.queueSessions(name, nil)
			continue
		}
		p.AdoptSessions(old)
	}
}
