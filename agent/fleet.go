package agent

import (
	"context"
	"fmt"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/fleet"
)

// joinFleet makes the engine count in the fleet's Redis. Connecting waits
// for Run: a Redis that is down does not keep mailban from starting.
func (a *Agent) joinFleet(fc *config.FleetConfig) error {
	fo, err := fc.Options()
	if err != nil {
		return err
	}
	fo.Clock = a.clock
	a.fleet, err = fleet.New(fo, a.log, a.reg)
	if err != nil {
		return err
	}
	if err := a.engine.UseStore(a.fleet); err != nil {
		a.fleet.Close()
		return fmt.Errorf("join fleet: %w", err)
	}
	return nil
}

// Fleet is the fleet store, or nil when this host is alone.
func (a *Agent) Fleet() *fleet.Store { return a.fleet }

// resyncFleet hands the fleet what this host did alone while Redis was
// away and takes in what the fleet holds (fleet.Store.Resync).
func (a *Agent) resyncFleet(ctx context.Context) {
	// Every position goes with the counts handed back, so that Redis's
	// positions are whole again after a time this host counted alone.
	a.fleet.SetPositions(a.seq, a.positions)
	ds, err := a.fleet.Resync(ctx, a.engine)
	a.decided = append(a.decided, ds...)
	if err != nil {
		a.log.Error("fleet: redis unavailable; counting on this host alone and trying again", "error", err)
		return
	}
	// The counts handed back are no longer this host's: save that now.
	a.checkpoint()
}

// adoptFleetPositions resumes from the read positions Redis keeps for
// this host when they are at least as new as the state file's: the host
// stopped (crashed) after Redis had counted lines its last checkpoint did
// not cover. Its own windows are then counts Redis already has.
func (a *Agent) adoptFleetPositions(ctx context.Context) {
	seq, pos, err := a.fleet.Positions(ctx)
	if err != nil {
		a.log.Warn("fleet: could not read this host's positions in redis; resuming from the state file", "error", err)
		return
	}
	if seq == 0 || seq < a.seq {
		return
	}
	for k, v := range pos {
		a.positions[k] = v
		a.dirtyPos[k] = struct{}{}
	}
	dropped := a.engine.DrainCounts()
	a.log.Info("fleet: resuming after the lines already counted in redis", "burst", seq, "state_file_burst", a.seq, "positions", len(pos), "local_counts_dropped", len(dropped))
	a.seq = seq
	a.dirtyPos[seqKey] = struct{}{}
}
