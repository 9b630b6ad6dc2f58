package fleet

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mailban/mailban/rules"
)

// ErrUnavailable is what Tally returns while Redis is unreachable: the
// engine counts in its own memory until Resync.
var ErrUnavailable = errors.New("fleet: redis unavailable")

// Config says how to reach Redis and who this host is.
type Config struct {
	Addr     string      // host:port
	Username string      // ACL user; "" for the default user
	Password string      // "" for none
	DB       int         // database number
	TLS      *tls.Config // nil: plain TCP
	// KeyPrefix starts every key, inside a hash tag ("{mailban}:..."), so
	// that Redis Cluster keeps a fleet's keys in one slot, as its scripts
	// need. Default "mailban"; braces are not allowed.
	KeyPrefix string
	// Host names this host in the decisions it announces and in its keys
	// (burst marker, read positions); a host skips the stream entries it
	// announced itself. Every host of a fleet needs its own. Required.
	Host string
	// Timeout bounds one round trip (a burst's tally). Past it, the burst
	// is counted locally and Redis is taken as down. Default 1s.
	Timeout time.Duration
	// Backoff is the first wait before trying a lost Redis again; it
	// doubles up to MaxBackoff. Defaults 250ms and 10s.
	Backoff, MaxBackoff time.Duration
	// Clock is the engine's clock, for expiries. Default: the wall clock.
	Clock rules.Clock
}

// keys are the Redis keys of one fleet (see docs/ARCHITECTURE.md).
type keys struct {
	epoch, holds, holdsExp, stream string
	addrPrefix, loginPrefix        string
	marker                         string // this host's last tallied burst
	positions                      string // this host's read positions, with seqField
}

// seqField is the positions hash's field for the burst sequence number
// (no read position's key starts with a NUL byte).
const seqField = "\x00seq"

func newKeys(prefix, host string) keys {
	tag := "{" + prefix + "}"
	return keys{
		marker:      tag + ":burst:" + host,
		positions:   tag + ":pos:" + host,
		epoch:       tag + ":epoch",
		holds:       tag + ":holds",
		holdsExp:    tag + ":holds:exp",
		stream:      tag + ":decisions",
		addrPrefix:  tag + ":a:",
		loginPrefix: tag + ":l:",
	}
}

// Store is a rules.Store in Redis, shared by every host of a fleet, plus
// the stream of decisions between them. Tally, Publish, Resync and Flush
// belong to the agent's pipeline goroutine (Publish to any); Run is its
// own goroutine.
type Store struct {
	cfg Config
	log *slog.Logger
	rdb *redis.Client
	k   keys
	m   *metrics

	up       atomic.Bool
	syncing  atomic.Bool   // Resync's own tallies may go through while down
	lost     chan struct{} // Tally or the reader saw Redis fail
	ready    chan struct{} // Redis answers again: the agent should Resync
	upped    chan struct{} // Resync finished
	kick     chan struct{} // Publish queued something
	received chan []rules.Decision

	mu       sync.Mutex // guards what follows
	rc       rules.Config
	tally    *redis.Script
	publish  *redis.Script
	catchUp  *redis.Script
	prune    *redis.Script
	sources  []string // of the scripts, for SCRIPT LOAD
	loaded   bool     // the scripts are known to be loaded in Redis
	outbox   []outItem
	outIndex map[string]int // field → index in outbox
	lastID   string         // the stream entry read last
	epoch    string

	// downAt (unix nanoseconds) and lastErr are when and why Redis was
	// last lost, for status; written by whichever goroutine saw it fail.
	downAt  atomic.Int64
	lastErr atomic.Pointer[string]

	// A burst whose reply was lost may or may not have been applied;
	// Resync asks the marker and makes the engine forget its own count of
	// the burst if it was.
	run         string // this process's part of burst marks
	seq         uint64
	pending     []rules.Op
	pendingMark string

	// Read positions to store with the next tally (SetPositions).
	stagedSeq uint64
	stagedPos map[string][]byte
}

type outItem struct {
	field    string
	value    []byte
	offence  bool
	evidence bool   // only the evidence of a hold a tally made (rules.Announcement.EvidenceOnly)
	stateKey string // "" when the decision has no state key
}

// New makes a Store; it does not connect until Resync or Run.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if cfg.Addr == "" {
		return nil, errors.New("fleet: no redis address")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = "mailban"
	}
	if strings.ContainsAny(cfg.KeyPrefix, "{}") {
		return nil, fmt.Errorf("fleet: key prefix %q: braces are not allowed (mailban adds the hash tag)", cfg.KeyPrefix)
	}
	if cfg.Host == "" {
		return nil, errors.New("fleet: no host name")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.Backoff)
	}
	if cfg.Clock == nil {
		cfg.Clock = wallClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Store{
		cfg: cfg,
		log: log.With("redis", cfg.Addr),
		rdb: redis.NewClient(&redis.Options{
			Addr:      cfg.Addr,
			Username:  cfg.Username,
			Password:  cfg.Password,
			DB:        cfg.DB,
			TLSConfig: cfg.TLS,
			// A script must never run twice: no retries. A failure is
			// a fallback to local counting, and a resync later.
			MaxRetries:  -1,
			DialTimeout: cfg.Timeout,
			// One dial per try: a Redis that is down must cost a burst
			// one refused connection, not five dials 100ms apart.
			DialerRetries:         1,
			DialerRetryTimeout:    10 * time.Millisecond,
			ReadTimeout:           cfg.Timeout,
			WriteTimeout:          cfg.Timeout,
			ContextTimeoutEnabled: true,
			PoolSize:              4,
			DisableIdentity:       true,
		}),
		k:        newKeys(cfg.KeyPrefix, cfg.Host),
		run:      newEpoch(),
		m:        newMetrics(reg),
		lost:     make(chan struct{}, 1),
		ready:    make(chan struct{}, 1),
		upped:    make(chan struct{}, 1),
		kick:     make(chan struct{}, 1),
		received: make(chan []rules.Decision, 16),
		outIndex: map[string]int{},
	}
	s.downAt.Store(time.Now().UnixNano())
	s.catchUp = redis.NewScript(luaCatchUp)
	s.prune = redis.NewScript(luaPrune)
	return s, nil
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Close closes the connections.
func (s *Store) Close() error { return s.rdb.Close() }

// Stats says what the store did so far.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	outbox := len(s.outbox)
	s.mu.Unlock()
	st := Stats{
		Host:         s.cfg.Host,
		Addr:         s.cfg.Addr,
		Up:           s.up.Load(),
		RoundTrips:   s.m.roundTrips.value(),
		SharedEvents: s.m.redisOps.value(),
		LocalEvents:  s.m.localOps.value(),
		Errors:       s.m.errors.value(),
		Outbox:       outbox,
		Received:     s.m.received.value(),
		Resyncs:      s.m.resyncs.value(),
		LostReplies:  s.m.lostReplies.value(),
		BytesSent:    s.m.bytesSent.Load(),
		BytesRead:    s.m.bytesRead.Load(),
	}
	if !st.Up {
		st.DownSince = time.Unix(0, s.downAt.Load())
	}
	if e := s.lastErr.Load(); e != nil {
		st.LastError = *e
	}
	return st
}

// Up reports whether counting happens in Redis now.
func (s *Store) Up() bool { return s.up.Load() }

// Configure builds the scripts for rc (rules.Store).
func (s *Store) Configure(rc rules.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rc = rc
	tally, publish := buildScript(rc, s.k, s.cfg.Host, luaTally), buildScript(rc, s.k, s.cfg.Host, luaPublish)
	s.tally, s.publish = redis.NewScript(tally), redis.NewScript(publish)
	s.sources = []string{tally, publish, luaCatchUp, luaPrune}
	s.loaded = false
	return nil
}

// loadScripts makes sure Redis has the scripts, so that a pipeline of
// EVALSHA never meets NOSCRIPT halfway.
func (s *Store) loadScripts(ctx context.Context) error {
	if s.loaded {
		return nil
	}
	pipe := s.rdb.Pipeline()
	for _, src := range s.sources {
		// Not redis.Script.Load: in a pipeline it would take the empty
		// reply as the script's SHA.
		pipe.ScriptLoad(ctx, src)
	}
	s.m.roundTrips.Inc()
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("load scripts: %w", err)
	}
	s.loaded = true
	return nil
}

func timeBytes(t int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(t))
	return b[:]
}

// Tally counts a burst in Redis: one round trip, one script call (and
// the queued announcements before it). See rules.Store.
func (s *Store) Tally(ops []rules.Op, out []rules.Outcome) ([]rules.Outcome, error) {
	if !s.up.Load() && !s.syncing.Load() {
		s.m.localOps.Add(float64(len(ops)))
		return out, ErrUnavailable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if err := s.loadScripts(ctx); err != nil {
		return out, s.fail(err, len(ops))
	}

	keys := []string{s.k.holds, s.k.holdsExp, s.k.stream, s.k.marker, s.k.positions}
	s.seq++
	mark := s.run + ":" + strconv.FormatUint(s.seq, 10)
	index := make(map[string]uint16, 2*len(ops))
	keyIndex := func(k string) uint16 {
		if i, ok := index[k]; ok {
			return i
		}
		keys = append(keys, k)
		i := uint16(len(keys)) // Lua's KEYS count from 1
		index[k] = i
		return i
	}
	buf := make([]byte, 0, len(ops)*opLen)
	var now int64
	for _, op := range ops {
		now = op.Now
		var flags byte
		var ai, li uint16
		var grp [16]byte
		if op.Refused {
			flags |= 1
		}
		if op.Group.IsValid() {
			flags |= 2
			ai = keyIndex(s.k.addrPrefix + op.Group.String())
			grp = op.Group.Addr().As16()
		}
		if op.Login != "" {
			flags |= 4
			li = keyIndex(s.k.loginPrefix + op.Login)
		}
		kind := byte(1)
		if op.Kind == rules.OpSuccess {
			kind = 2
		}
		buf = append(buf, kind, flags)
		buf = binary.BigEndian.AppendUint64(buf, uint64(op.Time))
		buf = binary.BigEndian.AppendUint32(buf, uint32(min(op.Attempts, 1<<30)))
		buf = binary.BigEndian.AppendUint16(buf, ai)
		buf = binary.BigEndian.AppendUint16(buf, li)
		buf = append(buf, grp[:]...)
	}
	if len(keys) > 60000 {
		return out, s.fail(errors.New("burst too large"), len(ops))
	}

	pipe := s.rdb.Pipeline()
	pub, flushed := s.queuePublish(ctx, pipe, now)
	args := []any{timeBytes(now), buf, mark}
	staged := len(s.stagedPos)
	if staged > 0 {
		args = append(args, seqField, strconv.FormatUint(s.stagedSeq, 10))
		for k, v := range s.stagedPos {
			args = append(args, k, v)
		}
	}
	tc := pipe.EvalSha(ctx, s.tally.Hash(), keys, args...)
	start := time.Now()
	_, err := pipe.Exec(ctx)
	s.m.roundTrips.Inc()
	s.m.roundTripSeconds.Observe(time.Since(start).Seconds())
	if pub != nil && pub.Err() == nil {
		s.dropFlushed(flushed)
	}
	if err != nil {
		s.pending, s.pendingMark = append(s.pending[:0], ops...), mark
		return out, s.fail(fmt.Errorf("tally: %w", err), len(ops))
	}
	res, err := tc.Text()
	if err != nil || len(res) != len(ops)*outcomeLen {
		return out, s.fail(fmt.Errorf("tally: unexpected reply (%d bytes for %d ops): %v", len(res), len(ops), err), len(ops))
	}
	s.m.redisOps.Add(float64(len(ops)))
	if staged > 0 {
		clear(s.stagedPos)
	}
	sent := len(buf) + 8
	for _, k := range keys {
		sent += len(k)
	}
	s.m.bytesSent.Add(int64(sent))
	s.m.bytesRead.Add(int64(len(res)))
	for i := range ops {
		out = append(out, decodeOutcome(res[i*outcomeLen:(i+1)*outcomeLen]))
	}
	return out, nil
}

func decodeOutcome(b string) rules.Outcome {
	u32 := func(i int) int { return int(binary.BigEndian.Uint32([]byte(b[i : i+4]))) }
	i64 := func(i int) int64 { return int64(binary.BigEndian.Uint64([]byte(b[i : i+8]))) }
	f := b[0]
	return rules.Outcome{
		Refused:      f&1 != 0,
		LoginCounted: f&2 != 0,
		Locked:       f&4 != 0,
		LockBan:      f&8 != 0,
		AddrCounted:  f&16 != 0,
		Banned:       f&32 != 0,
		LoginCount:   u32(1),
		LoginRef:     i64(5),
		LockUntil:    i64(13),
		AddrCount:    u32(21),
		AddrRef:      i64(25),
		BanPrev:      int(binary.BigEndian.Uint16([]byte(b[33:35]))),
		BanUntil:     i64(35),
	}
}

// fail takes Redis as down after an error of the pipeline and says so.
func (s *Store) fail(err error, ops int) error {
	s.loaded = false
	s.m.errors.Inc()
	s.m.localOps.Add(float64(ops))
	s.markDown(err)
	return err
}

func (s *Store) markDown(err error) {
	msg := err.Error()
	s.lastErr.Store(&msg)
	if s.up.CompareAndSwap(true, false) {
		s.m.up.Set(0)
		s.downAt.Store(time.Now().UnixNano())
		s.log.Error("fleet: redis lost; counting on this host alone until it is back", "error", err)
	}
	select {
	case s.lost <- struct{}{}:
	default:
	}
}

// SetPositions gives the store read positions to keep in Redis with the
// next tally, atomically with the counts of the lines before them, and the
// sequence number of the burst they end. After a crash, a host resumes
// from them (Positions) when they are newer than its own checkpoint, so
// that lines already counted in Redis are not counted again. Positions of
// several calls accumulate until a tally takes them.
func (s *Store) SetPositions(seq uint64, pos map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stagedPos == nil {
		s.stagedPos = make(map[string][]byte, len(pos))
	}
	for k, v := range pos {
		s.stagedPos[k] = v
	}
	s.stagedSeq = seq
}

// Positions returns the burst sequence number and read positions Redis
// keeps for this host (0 and none when it keeps none).
func (s *Store) Positions(ctx context.Context) (uint64, map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	s.m.roundTrips.Inc()
	m, err := s.rdb.HGetAll(ctx, s.k.positions).Result()
	if err != nil {
		return 0, nil, fmt.Errorf("read positions: %w", err)
	}
	var seq uint64
	pos := make(map[string][]byte, len(m))
	for k, v := range m {
		if k == seqField {
			if seq, err = strconv.ParseUint(v, 10, 64); err != nil {
				return 0, nil, fmt.Errorf("read positions: bad sequence number %q", v)
			}
			continue
		}
		pos[k] = []byte(v)
	}
	if seq == 0 {
		return 0, nil, nil
	}
	return seq, pos, nil
}

// Publish queues announcements; they are recorded and announced before
// the next tally, or by Flush (rules.Store). Later announcements of the
// same ban, lock or block replace earlier ones still queued.
func (s *Store) Publish(as []rules.Announcement) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Clock.Now().UnixNano()
	for _, a := range as {
		it, ok := s.outItem(a, now)
		if !ok {
			continue
		}
		if i, ok := s.outIndex[it.field]; ok {
			// A decision queued since the tally that made this one's
			// hold is newer: the evidence is of the hold it replaces.
			if it.evidence && !s.outbox[i].evidence {
				continue
			}
			s.outbox[i] = it
			continue
		}
		s.outIndex[it.field] = len(s.outbox)
		s.outbox = append(s.outbox, it)
	}
	s.m.outbox.Set(float64(len(s.outbox)))
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Store) outItem(a rules.Announcement, now int64) (outItem, bool) {
	d := a.Decision
	it := outItem{offence: a.Offence && d.Action == rules.Ban && !a.EvidenceOnly, evidence: a.EvidenceOnly}
	if it.evidence && (d.Action != rules.Ban && d.Action != rules.Lock || len(d.Evidence) == 0) {
		return it, false
	}
	switch d.Action {
	case rules.Ban, rules.Unban, rules.Block, rules.Unblock:
		if !d.Prefix.IsValid() {
			return it, false
		}
		p := d.Prefix.Masked()
		if d.Action == rules.Block || d.Action == rules.Unblock {
			it.field = "k:" + p.String()
		} else {
			it.field = "b:" + p.String()
			if rules.GroupOf(p.Addr(), s.rc) == p {
				it.stateKey = s.k.addrPrefix + p.String()
			}
		}
	case rules.Lock, rules.Unlock:
		if d.Login == "" {
			return it, false
		}
		it.field = "l:" + d.Login
		it.stateKey = s.k.loginPrefix + d.Login
	default:
		return it, false
	}
	it.value = encodeHold(d, s.cfg.Host, it.offence)
	return it, true
}

// outboxBatch bounds the announcements of one publish script: twice a
// burst's bound (1024 failures, each of which may ban and lock), so that
// the evidence of a burst's decisions goes out with the next burst whole.
const outboxBatch = 2048

// queuePublish adds the queued announcements (up to a bound) to pipe.
func (s *Store) queuePublish(ctx context.Context, pipe redis.Pipeliner, now int64) (*redis.Cmd, int) {
	n := min(len(s.outbox), outboxBatch)
	if n == 0 {
		return nil, 0
	}
	keys := []string{s.k.holds, s.k.holdsExp, s.k.stream}
	args := []any{timeBytes(now)}
	for _, it := range s.outbox[:n] {
		ki := 1 // the holds key: no state
		if it.stateKey != "" && !it.evidence {
			keys = append(keys, it.stateKey)
			ki = len(keys)
		}
		flags := 0
		if it.offence {
			flags = 1
		}
		if it.evidence {
			flags = 2
		}
		args = append(args, it.field, it.value, flags, ki)
	}
	return pipe.EvalSha(ctx, s.publish.Hash(), keys, args...), n
}

func (s *Store) dropFlushed(n int) {
	s.outbox = s.outbox[n:]
	clear(s.outIndex)
	for i, it := range s.outbox {
		s.outIndex[it.field] = i
	}
	if len(s.outbox) == 0 {
		s.outbox = nil
	}
	s.m.outbox.Set(float64(len(s.outbox)))
}

// Flush records and announces queued decisions now, if Redis is up.
func (s *Store) Flush(ctx context.Context) error {
	if !s.up.Load() && !s.syncing.Load() {
		return ErrUnavailable
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.outbox) > 0 {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err := s.loadScripts(ctx)
		if err == nil {
			pipe := s.rdb.Pipeline()
			pub, n := s.queuePublish(ctx, pipe, s.cfg.Clock.Now().UnixNano())
			_, err = pipe.Exec(ctx)
			s.m.roundTrips.Inc()
			if err == nil && pub.Err() == nil {
				s.dropFlushed(n)
			}
		}
		cancel()
		if err != nil {
			s.loaded = false
			s.m.errors.Inc()
			s.markDown(err)
			return fmt.Errorf("publish decisions: %w", err)
		}
	}
	return nil
}

// Hold values, in the holds hash and the stream (scripts.go's holdValue
// writes the same): version 1, action, at and until (8 bytes each, Unix
// nanoseconds; until 0: none or forever), kind, count (4), offences before
// (2), the deciding host (2-byte length, bytes), a text (2-byte length,
// bytes: an operator's reason, or the login of a lock ban), the evidence
// (2-byte count, each line a 4-byte length and bytes).
func encodeHold(d rules.Decision, host string, auto bool) []byte {
	b := []byte{1, byte(d.Action)}
	b = binary.BigEndian.AppendUint64(b, uint64(nanos(d.At)))
	b = binary.BigEndian.AppendUint64(b, uint64(nanos(d.Until)))
	kind := byte(kindManual)
	if auto {
		kind = kindAuto
	}
	b = append(b, kind)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = appendString16(b, host)
	reason := d.Reason
	if len(reason) > 4096 {
		reason = reason[:4096]
	}
	b = appendString16(b, reason)
	ev := d.Evidence
	if len(ev) > 100 {
		ev = ev[len(ev)-100:]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(ev)))
	for _, l := range ev {
		b = binary.BigEndian.AppendUint32(b, uint32(len(l)))
		b = append(b, l...)
	}
	return b
}

func appendString16(b []byte, s string) []byte {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func unixTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// decodeHold reads a hold value stored under field, with the reasons of
// the scripts' decisions written by rc.
func decodeHold(field string, v []byte, rc rules.Config) (rules.Decision, string, error) {
	var d rules.Decision
	r := reader{b: v}
	if r.byte() != 1 {
		return d, "", fmt.Errorf("hold %q: unknown version", field)
	}
	d.Action = rules.Action(r.byte())
	at, until := int64(r.u64()), int64(r.u64())
	kind := r.byte()
	count := int(r.u32())
	prev := int(r.u16())
	host := string(r.bytes(int(r.u16())))
	text := string(r.bytes(int(r.u16())))
	n := int(r.u16())
	for range n {
		d.Evidence = append(d.Evidence, string(r.bytes(int(r.u32()))))
	}
	if r.bad || len(r.b) != 0 {
		return d, "", fmt.Errorf("hold %q: malformed value", field)
	}
	d.At, d.Until = unixTime(at), unixTime(until)
	what, key, _ := strings.Cut(field, ":")
	switch what {
	case "b", "k":
		p, err := netip.ParsePrefix(key)
		if err != nil {
			return d, "", fmt.Errorf("hold %q: %w", field, err)
		}
		d.Prefix = p
	case "l":
		d.Login = key
	default:
		return d, "", fmt.Errorf("hold %q: unknown kind of key", field)
	}
	switch d.Action {
	case rules.Ban, rules.Unban, rules.Block, rules.Unblock:
		if d.Prefix == (netip.Prefix{}) {
			return d, "", fmt.Errorf("hold %q: %s of a login", field, d.Action)
		}
	case rules.Lock, rules.Unlock:
		if d.Login == "" {
			return d, "", fmt.Errorf("hold %q: %s of a network", field, d.Action)
		}
	default:
		return d, "", fmt.Errorf("hold %q: unknown action %d", field, d.Action)
	}
	length, permanent := rc.BanLength(prev)
	switch kind {
	case kindManual, kindAuto:
		d.Reason = text
	case kindIP:
		d.Reason = rules.ThresholdBanReason(count, rc.IP) + rules.OffenceSuffix(prev, length, permanent && until == 0)
	case kindLockBan:
		d.Reason = rules.LockBanReason(text) + rules.OffenceSuffix(prev, length, permanent && until == 0)
	case kindLock:
		d.Reason = rules.LockReason(count, rc.Login)
	}
	if host != "" {
		d.Reason += " (decided on " + host + ")"
	}
	return d, host, nil
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || len(r.b) < n {
		r.bad = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}
func (r *reader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}
func (r *reader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}
func (r *reader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
