package fleet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailban/mailban/rules"
)

// Engine is what Resync needs of the rules engine.
type Engine interface {
	Forget(ops []rules.Op)
	HandBack() ([]rules.Decision, error)
	ApplyShared(d rules.Decision) bool
	Active() []rules.Decision
}

// Decisions delivers the decisions other hosts announce, in order. The
// agent applies them (Engine.ApplyShared) and hands those that changed
// something to its enforcers.
func (s *Store) Decisions() <-chan []rules.Decision { return s.received }

// Ready tells the agent that Redis answers again (or for the first time):
// it should call Resync from its pipeline goroutine.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Resync brings this host and Redis together, in this order, and then
// counts in Redis again:
//
//  1. If Redis lost its data (its epoch changed), the bans, locks and
//     blocks this host holds are announced again.
//  2. The decisions queued while Redis was away are recorded and announced.
//  3. The failures and successes counted on this host alone are tallied in
//     Redis (e.HandBack), which may ban or lock.
//  4. The holds in Redis are taken in (e.ApplyShared), and holds of this
//     host that Redis no longer has are lifted: they were lifted elsewhere.
//
// It returns the decisions that changed something here, for enforcers. On
// an error Redis stays down and Run tries again later.
func (s *Store) Resync(ctx context.Context, e Engine) ([]rules.Decision, error) {
	s.syncing.Store(true)
	defer s.syncing.Store(false)
	out, err := s.resync(ctx, e)
	if err != nil {
		s.m.errors.Inc()
		s.mu.Lock()
		s.loaded = false
		s.mu.Unlock()
		s.markDown(err)
		return out, err
	}
	s.up.Store(true)
	s.m.up.Set(1)
	s.m.resyncs.Inc()
	select {
	case s.upped <- struct{}{}:
	default:
	}
	return out, nil
}

func (s *Store) resync(ctx context.Context, e Engine) ([]rules.Decision, error) {
	s.mu.Lock()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	err := s.loadScripts(cctx)
	var epoch string
	if err == nil {
		epoch, _, _, err = s.readHolds(cctx)
	}
	cancel()
	known := s.epoch
	down := time.Since(time.Unix(0, s.downAt.Load()))
	first := s.m.resyncs.value() == 0
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if known != "" && epoch != known {
		// Redis came back empty (no persistence, or a new server): what
		// this host holds must be there again.
		var as []rules.Announcement
		for _, d := range e.Active() {
			as = append(as, rules.Announcement{Decision: d, Offence: d.Action == rules.Ban && !isManualReason(d.Reason)})
		}
		s.log.Warn("fleet: redis lost its data; announcing this host's bans, locks and blocks again", "holds", len(as))
		s.Publish(as)
	}
	if err := s.settlePending(ctx, e); err != nil {
		return nil, err
	}
	if err := s.Flush(ctx); err != nil {
		return nil, err
	}
	out, err := e.HandBack()
	if err != nil {
		return nil, fmt.Errorf("hand back local counts: %w", err)
	}

	s.mu.Lock()
	cctx, cancel = context.WithTimeout(ctx, s.cfg.Timeout)
	epoch, lastID, held, err := s.readHolds(cctx)
	cancel()
	if err == nil {
		s.epoch, s.lastID = epoch, lastID
	}
	rc := s.rc
	s.mu.Unlock()
	if err != nil {
		return out, err
	}
	now := s.cfg.Clock.Now()
	inRedis := map[string]bool{}
	for field, v := range held {
		d, _, err := decodeHold(field, []byte(v), rc)
		if err != nil {
			s.log.Warn("fleet: unreadable hold in redis, ignored", "error", err)
			continue
		}
		if !d.Until.IsZero() && !d.Until.After(now) {
			continue
		}
		inRedis[field] = true
		if e.ApplyShared(d) {
			out = append(out, d)
		}
	}
	for _, d := range e.Active() {
		var field string
		var lift rules.Action
		switch d.Action {
		case rules.Ban:
			field, lift = "b:"+d.Prefix.String(), rules.Unban
		case rules.Block:
			field, lift = "k:"+d.Prefix.String(), rules.Unblock
		case rules.Lock:
			field, lift = "l:"+d.Login, rules.Unlock
		}
		if inRedis[field] {
			continue
		}
		u := rules.Decision{Action: lift, Prefix: d.Prefix, Login: d.Login, At: now, Reason: "lifted in the fleet"}
		if e.ApplyShared(u) {
			out = append(out, u)
		}
	}
	if first {
		s.log.Info("fleet: counting in redis", "host", s.cfg.Host, "holds", len(inRedis), "decisions", len(out))
	} else {
		s.log.Info("fleet: redis is back; counting in redis again", "down_for", down.Round(time.Millisecond), "holds", len(inRedis), "decisions", len(out))
	}
	return out, nil
}

// settlePending finds out whether the burst whose reply was lost was
// applied, and if so makes the engine forget its own count of it.
func (s *Store) settlePending(ctx context.Context, e Engine) error {
	s.mu.Lock()
	pending, mark := s.pending, s.pendingMark
	s.mu.Unlock()
	if pending == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	s.m.roundTrips.Inc()
	got, err := s.rdb.Get(cctx, s.k.marker).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read burst marker: %w", err)
	}
	if got == mark {
		s.log.Info("fleet: the burst whose reply was lost had been counted in redis; not handing it back", "events", len(pending))
		e.Forget(pending) // not under s.mu: the engine calls the store under its own lock
		s.m.lostReplies.Inc()
	}
	s.mu.Lock()
	s.pending, s.pendingMark = nil, ""
	s.mu.Unlock()
	return nil
}

func isManualReason(r string) bool { return len(r) >= 6 && r[:6] == "manual" }

// readHolds runs the catch-up script: the epoch, the stream's last ID and
// every hold.
func (s *Store) readHolds(ctx context.Context) (epoch, lastID string, holds map[string]string, err error) {
	s.m.roundTrips.Inc()
	res, err := s.catchUp.Run(ctx, s.rdb, []string{s.k.epoch, s.k.stream, s.k.holds}, newEpoch()).Slice()
	if err != nil {
		return "", "", nil, fmt.Errorf("catch up: %w", err)
	}
	if len(res) != 3 {
		return "", "", nil, errors.New("catch up: unexpected reply")
	}
	epoch, _ = res[0].(string)
	lastID, _ = res[1].(string)
	kv, _ := res[2].([]any)
	holds = make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		v, _ := kv[i+1].(string)
		holds[k] = v
	}
	return epoch, lastID, holds, nil
}

// Run keeps the link: while Redis is up it reads the decisions stream and
// now and then forgets holds that ran out; while it is down it tries again
// with growing pauses and, when Redis answers, asks the agent for a Resync.
// It returns when ctx is done.
func (s *Store) Run(ctx context.Context) {
	// Decisions queued between bursts (an operator's) go out at once
	// rather than with the next burst.
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.kick:
				if s.up.Load() {
					_ = s.Flush(ctx)
				}
			}
		}
	}()
	backoff := s.cfg.Backoff
	lastPrune := time.Time{}
	for ctx.Err() == nil {
		if s.up.Load() {
			backoff = s.cfg.Backoff
			if time.Since(lastPrune) > 30*time.Second {
				s.pruneHolds(ctx)
				lastPrune = time.Now()
			}
			s.readStream(ctx)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err := s.rdb.Ping(pctx).Err()
		cancel()
		if err != nil {
			s.log.Debug("fleet: redis still unavailable", "retry_in", backoff, "error", err)
			backoff = min(2*backoff, s.cfg.MaxBackoff)
			continue
		}
		select {
		case s.ready <- struct{}{}:
		default:
		}
		// Wait for the agent's Resync; if it fails, Redis is marked
		// down again and this loop goes on trying.
		select {
		case <-ctx.Done():
			return
		case <-s.upped:
		case <-s.lost:
		case <-time.After(s.cfg.MaxBackoff):
		}
	}
}

func (s *Store) readStream(ctx context.Context) {
	s.mu.Lock()
	start, rc := s.lastID, s.rc
	s.mu.Unlock()
	id := start
	if id == "" {
		id = "$"
	}
	res, err := s.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{s.k.stream, id}, Count: 1000, Block: time.Second}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return
	case err != nil:
		if ctx.Err() == nil {
			s.m.errors.Inc()
			s.markDown(fmt.Errorf("read decisions: %w", err))
		}
		return
	}
	var ds []rules.Decision
	for _, st := range res {
		for _, msg := range st.Messages {
			id = msg.ID
			f, _ := msg.Values["f"].(string)
			v, _ := msg.Values["v"].(string)
			d, host, err := decodeHold(f, []byte(v), rc)
			if err != nil {
				s.log.Warn("fleet: unreadable decision in the stream, ignored", "id", msg.ID, "error", err)
				continue
			}
			if host == s.cfg.Host {
				continue
			}
			ds = append(ds, d)
		}
	}
	s.mu.Lock()
	if s.lastID == start && id != "$" { // a Resync meanwhile knows better
		s.lastID = id
	}
	s.mu.Unlock()
	if len(ds) == 0 {
		return
	}
	s.m.received.Add(float64(len(ds)))
	select {
	case s.received <- ds:
	case <-ctx.Done():
	}
}

func (s *Store) pruneHolds(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	nowMs := strconv.FormatInt(s.cfg.Clock.Now().UnixMilli(), 10)
	s.m.roundTrips.Inc()
	if err := s.prune.Run(pctx, s.rdb, []string{s.k.holds, s.k.holdsExp}, nowMs, 10000).Err(); err != nil && ctx.Err() == nil {
		s.log.Warn("fleet: could not forget expired holds", "error", err)
	}
}
