package agent

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mailban/mailban/agent/state"
	"github.com/mailban/mailban/rules"
)

// positionsBucket holds each source stream's last processed Cursor, keyed
// by source name, a NUL byte and the stream name.
const positionsBucket = "positions"

// seqKey is the positions bucket's key for the number of the last burst
// (no source is named "": it cannot be a source's key).
const seqKey = "\x00fleet-seq"

// restore loads positions and rule state saved by the last run.
func (a *Agent) restore() error {
	n := 0
	err := a.store.Load(func(r state.Record) error {
		n++
		switch {
		case r.Bucket == positionsBucket && string(r.Key) == seqKey:
			if len(r.Value) != 8 {
				return fmt.Errorf("burst number is %d bytes, want 8", len(r.Value))
			}
			a.seq = binary.BigEndian.Uint64(r.Value)
			return nil
		case r.Bucket == positionsBucket:
			a.positions[string(r.Key)] = slices.Clone(r.Value)
			return nil
		case rules.OwnsBucket(r.Bucket):
			return a.engine.Restore(rules.Record{Bucket: r.Bucket, Key: r.Key, Value: r.Value})
		case r.Bucket == sessionsBucket:
			a.restoreSessions(r)
			return nil
		}
		return fmt.Errorf("unknown bucket (written by another program or a newer mailban?)")
	})
	if err != nil {
		return fmt.Errorf("restore state: %w (start with --fresh-state to move the file aside and start empty)", err)
	}
	// What Restore changed (state of addresses the configuration now
	// allowlists is dropped) goes out with the first checkpoint.
	st := a.engine.Stats()
	a.log.Info("state restored", "path", a.store.Path(), "records", n, "positions", len(a.positions),
		"bans", st.Bans, "locks", st.Locks, "blocks", st.Blocks, "tracked_addresses", st.Addresses, "tracked_logins", st.Logins)
	return nil
}

// checkpoint saves the rules' changes and the positions of the lines that
// caused them in one transaction. A failed commit keeps the changes and
// tries again next time: nothing is dropped.
func (a *Agent) checkpoint() {
	for _, r := range a.engine.TakeChanges(nil) {
		a.pending = append(a.pending, state.Record{Bucket: r.Bucket, Key: r.Key, Value: r.Value})
	}
	for key := range a.dirtyPos {
		v := a.positions[key]
		if key == seqKey {
			v = binary.BigEndian.AppendUint64(nil, a.seq)
		}
		a.pending = append(a.pending, state.Record{Bucket: positionsBucket, Key: []byte(key), Value: v})
	}
	clear(a.dirtyPos)
	a.saveSessions()
	if len(a.pending) == 0 {
		return
	}
	if err := a.store.Commit(a.pending); err != nil {
		a.m.stateCommitErrors.Inc()
		a.stateSt.LastError = err.Error()
		a.log.Error("checkpoint failed; will retry", "records", len(a.pending), "error", err)
		return
	}
	a.m.stateCommits.Inc()
	size := a.store.Size()
	a.m.stateSize.Set(float64(size))
	now := time.Now()
	a.stateSt.Bytes, a.stateSt.LastCheckpoint, a.stateSt.LastError = size, &now, ""
	a.notifyCommitted(a.pending)
	clear(a.pending)
	a.pending = a.pending[:0]
}

// notifyCommitted tells the running sources that want to know which of
// their cursors are now saved.
func (a *Agent) notifyCommitted(records []state.Record) {
	for _, r := range records {
		if r.Bucket != positionsBucket {
			continue
		}
		name, stream, ok := strings.Cut(string(r.Key), "\x00")
		if !ok {
			continue
		}
		if rs := a.sources[name]; rs != nil {
			if w, ok := rs.src.(committedWatcher); ok {
				w.Committed(stream, r.Value)
			}
		}
	}
}
