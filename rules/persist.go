package rules

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mailban/mailban/parsers"
)

// Record is one key of one bucket of the engine's persisted state. A nil
// Value deletes the key. It has the same fields as the state store's
// Record, so the agent converts between the two directly.
type Record struct {
	Bucket string
	Key    []byte
	Value  []byte
}

// The buckets the engine's state lives in. Every name starts with
// BucketPrefix so that the agent can route records without a list.
const (
	BucketPrefix    = "rules."
	BucketAddrs     = BucketPrefix + "addrs"     // key: 16-byte address group; failure times
	BucketLogins    = BucketPrefix + "logins"    // key: login; failure times, lock end, successes
	BucketOffenders = BucketPrefix + "offenders" // key: 16-byte address group; ends of remembered bans
	BucketBans      = BucketPrefix + "bans"      // key: network; a ban with its reason and evidence
	BucketLocks     = BucketPrefix + "locks"     // key: login; a lock with its reason and evidence
	BucketBlocks    = BucketPrefix + "blocks"    // key: network; a manual block (static ones come from Config)
)

// OwnsBucket reports whether records of the named bucket belong to the
// engine (and should go to Restore).
func OwnsBucket(name string) bool { return strings.HasPrefix(name, BucketPrefix) }

// recordVersion is the first byte of every value; a value of another
// version is refused rather than misread.
const recordVersion = 1

// Limits on decoded values, so that a corrupt record cannot ask for a huge
// allocation.
const (
	maxEvidenceRecorded = 1000
	maxReasonLen        = 4096
	maxLineLen          = 1 << 20
)

// SetTracking turns the bookkeeping of changes for TakeChanges on or off.
// Off (for offline replays) keeps none at all and drops what was pending.
// Turning it on again marks everything held as changed, so that the next
// TakeChanges writes it all; keys forgotten while it was off are not
// deleted from the store.
func (e *Engine) SetTracking(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if on == e.tracking {
		return
	}
	e.setTracking(on)
	if on {
		for k, w := range e.addrs {
			w.ref |= refDirty
			e.addrs[k] = w
			e.changedAddrs = append(e.changedAddrs, k)
		}
		for k := range e.offenders {
			e.dirtyOffenders[k] = struct{}{}
		}
		for l := range e.logins {
			e.dirtyLogins[l] |= dirtyWindow
		}
		for l := range e.locks {
			e.dirtyLogins[l] |= dirtyLock
		}
		for p := range e.bans.all() {
			e.dirtyBans[p] = struct{}{}
		}
		for p := range e.blocks.all() {
			e.dirtyBlocks[p] = struct{}{}
		}
	}
}

func (e *Engine) setTracking(on bool) {
	e.tracking = on
	if on {
		e.changedAddrs = nil
		e.dirtyOffenders = make(map[groupKey]struct{})
		e.dirtyLogins = make(map[string]uint8)
		e.dirtyBans = make(map[netip.Prefix]struct{})
		e.dirtyBlocks = make(map[netip.Prefix]struct{})
	} else {
		e.changedAddrs, e.dirtyOffenders, e.dirtyLogins, e.dirtyBans, e.dirtyBlocks = nil, nil, nil, nil, nil
	}
}

// TakeChanges appends a record for every key changed since the last call
// (its current value, or a deletion) and forgets the changes. Records come
// grouped by bucket, keys in byte order within a bucket. Nothing is
// appended while tracking is off.
func (e *Engine) TakeChanges(dst []Record) []Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.tracking {
		return dst
	}
	// Keys and values are carved from a few shared chunks rather than
	// allocated one by one; scratch is where values are encoded.
	var (
		chunks  arena
		scratch []byte
	)
	compareKeys := func(a, b groupKey) int { return bytes.Compare(a[:], b[:]) }
	if len(e.changedAddrs) > 0 {
		keys := e.changedAddrs
		slices.SortFunc(keys, compareKeys)
		keys = slices.Compact(keys)
		var times []int64
		for _, k := range keys {
			r := Record{Bucket: BucketAddrs, Key: chunks.copy(k[:])}
			if w, ok := e.addrs[k]; ok {
				if w.dirty() {
					w.ref &^= refDirty
					e.addrs[k] = w
				}
				times = w.appendTimes(&e.slab, times[:0])
				scratch = appendTimes(append(scratch[:0], recordVersion), times)
				r.Value = chunks.copy(scratch)
			}
			dst = append(dst, r)
		}
		// Keep the list's memory for the next batch, unless a burst made
		// it large.
		e.changedAddrs = e.changedAddrs[:0]
		if cap(e.changedAddrs) > 1<<14 {
			e.changedAddrs = nil
		}
	}
	if len(e.dirtyOffenders) > 0 {
		keys := make([]groupKey, 0, len(e.dirtyOffenders))
		for k := range e.dirtyOffenders {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareKeys)
		for _, k := range keys {
			r := Record{Bucket: BucketOffenders, Key: chunks.copy(k[:])}
			if ends, ok := e.offenders[k]; ok {
				scratch = appendTimes(append(scratch[:0], recordVersion), ends)
				r.Value = chunks.copy(scratch)
			}
			dst = append(dst, r)
		}
		clear(e.dirtyOffenders)
	}
	if len(e.dirtyLogins) > 0 {
		logins := make([]string, 0, len(e.dirtyLogins))
		for l := range e.dirtyLogins {
			logins = append(logins, l)
		}
		slices.Sort(logins)
		var times []int64
		for _, l := range logins {
			if e.dirtyLogins[l]&dirtyWindow == 0 {
				continue
			}
			r := Record{Bucket: BucketLogins, Key: chunks.copyString(l)}
			if ls, ok := e.logins[l]; ok {
				times = ls.win.appendTimes(&e.slab, times[:0])
				scratch = appendLogin(scratch[:0], ls, times)
				r.Value = chunks.copy(scratch)
			}
			dst = append(dst, r)
		}
		for _, l := range logins {
			if e.dirtyLogins[l]&dirtyLock == 0 {
				continue
			}
			r := Record{Bucket: BucketLocks, Key: []byte(l)}
			if h, ok := e.locks[l]; ok {
				r.Value = encodeHold(h)
			}
			dst = append(dst, r)
		}
		clear(e.dirtyLogins)
	}
	if len(e.dirtyBans) > 0 {
		start := len(dst)
		for p := range e.dirtyBans {
			r := Record{Bucket: BucketBans, Key: prefixBytes(p)}
			if h, ok := e.bans.get(p); ok {
				r.Value = encodeHold(h)
			}
			dst = append(dst, r)
		}
		sortRecords(dst[start:])
		clear(e.dirtyBans)
	}
	if len(e.dirtyBlocks) > 0 {
		start := len(dst)
		for p := range e.dirtyBlocks {
			r := Record{Bucket: BucketBlocks, Key: prefixBytes(p)}
			if b, ok := e.blocks.get(p); ok && b.manual {
				r.Value = encodeBlock(b)
			}
			dst = append(dst, r)
		}
		sortRecords(dst[start:])
		clear(e.dirtyBlocks)
	}
	return dst
}

// arena hands out copies carved from shared chunks, so that a batch of
// records costs a few allocations, not two per record. A chunk is never
// written again once handed out.
type arena struct{ chunk []byte }

func (a *arena) copy(b []byte) []byte {
	if cap(a.chunk)-len(a.chunk) < len(b) {
		a.chunk = make([]byte, 0, max(len(b), 32<<10))
	}
	start := len(a.chunk)
	a.chunk = append(a.chunk, b...)
	return a.chunk[start:len(a.chunk):len(a.chunk)]
}

func (a *arena) copyString(s string) []byte {
	if cap(a.chunk)-len(a.chunk) < len(s) {
		a.chunk = make([]byte, 0, max(len(s), 32<<10))
	}
	start := len(a.chunk)
	a.chunk = append(a.chunk, s...)
	return a.chunk[start:len(a.chunk):len(a.chunk)]
}

func sortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int { return bytes.Compare(a.Key, b.Key) })
}

// Restore loads one record written by TakeChanges into an engine that has
// not observed anything yet. Bans and counters of addresses that the
// current Config allowlists are dropped (and marked for deletion); bans and
// locks that have run out stay until the next Expire lifts them, as they
// would have in the engine that saved them. A record that cannot be read is
// an error naming its bucket and key, and leaves the engine as it was. The
// record's slices are not kept.
func (e *Engine) Restore(r Record) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.restore(r); err != nil {
		return fmt.Errorf("restore %s key %s: %w", r.Bucket, keyText(r.Bucket, r.Key), err)
	}
	return nil
}

func keyText(bucket string, key []byte) string {
	if (bucket == BucketLogins || bucket == BucketLocks) && utf8.Valid(key) {
		return fmt.Sprintf("%q", key)
	}
	return fmt.Sprintf("%x", key)
}

func (e *Engine) restore(r Record) error {
	switch r.Bucket {
	case BucketAddrs, BucketOffenders:
		if len(r.Key) != 16 {
			return fmt.Errorf("key is %d bytes, want 16", len(r.Key))
		}
		k := groupKey(r.Key)
		windows := r.Bucket == BucketAddrs
		var times []int64
		if r.Value != nil {
			d := decoder{b: r.Value}
			d.version()
			times = d.times(MaxRemembered + MaxCount)
			d.end()
			if d.err != nil {
				return fmt.Errorf("decode: %w", d.err)
			}
		}
		_, allowed := e.allow.overlapping(keyPrefix(k, e.cfg.IPv6Prefix))
		if windows {
			w, ok := e.addrs[k]
			switch {
			case ok && (len(times) == 0 || allowed):
				e.dropAddr(k, w)
			case len(times) == 0:
			case allowed:
				if e.tracking {
					e.changedAddrs = append(e.changedAddrs, k) // to delete it
				}
			default:
				w.setTimes(&e.slab, times)
				e.addrs[k] = w
			}
			return nil
		}
		switch {
		case len(times) == 0:
			delete(e.offenders, k)
		case allowed:
			delete(e.offenders, k)
			e.touchOffender(k)
		default:
			e.offenders[k] = times
		}
	case BucketLogins:
		login, err := restoredLogin(r.Key)
		if err != nil {
			return err
		}
		old := e.logins[login]
		if r.Value == nil {
			if old != nil {
				old.win.release(&e.slab)
				delete(e.logins, login)
			}
			return nil
		}
		ls, times, err := decodeLogin(r.Value)
		if err != nil {
			return fmt.Errorf("decode login state: %w", err)
		}
		if old != nil {
			old.win.release(&e.slab)
		}
		ls.win.setTimes(&e.slab, times)
		e.logins[login] = ls
	case BucketLocks:
		login, err := restoredLogin(r.Key)
		if err != nil {
			return err
		}
		if r.Value == nil {
			delete(e.locks, login)
			return nil
		}
		h, err := decodeHold(r.Value)
		if err != nil {
			return fmt.Errorf("decode lock: %w", err)
		}
		if h.until == 0 {
			return errors.New("decode lock: a lock without end")
		}
		e.locks[login] = h
	case BucketBans, BucketBlocks:
		p, err := parsePrefixBytes(r.Key)
		if err != nil {
			return err
		}
		if r.Bucket == BucketBlocks {
			return e.restoreBlock(p, r.Value)
		}
		if r.Value == nil {
			e.bans.delete(p)
			return nil
		}
		h, err := decodeHold(r.Value)
		if err != nil {
			return fmt.Errorf("decode ban: %w", err)
		}
		if _, allowed := e.allow.overlapping(p); allowed {
			e.touchBan(p)
			return nil
		}
		e.bans.set(p, h)
	default:
		return errors.New("not a bucket of the rules engine")
	}
	return nil
}

func (e *Engine) restoreBlock(p netip.Prefix, value []byte) error {
	b, ok := e.blocks.get(p)
	if value == nil {
		if ok && b.manual {
			b.manual = false
			if !b.static {
				e.blocks.delete(p)
			}
		}
		return nil
	}
	d := decoder{b: value}
	d.version()
	at := d.varint()
	reason := d.str(maxReasonLen)
	d.end()
	if d.err != nil {
		return fmt.Errorf("decode block: %w", d.err)
	}
	if !ok {
		b = &block{}
		e.blocks.set(p, b)
	}
	b.manual, b.manualAt, b.manualReason = true, at, reason
	return nil
}

func restoredLogin(key []byte) (string, error) {
	login := string(key)
	if login == "" || parsers.NormalizeLogin(login) != login {
		return "", errors.New("key is not a normalised login")
	}
	return login, nil
}

// Value encodings (after the version byte). Times are Unix nanoseconds:
// a sorted list is a count, the first time as a varint and each next one as
// an unsigned delta. Strings are a length and bytes.
//
//	addrs, offenders: times
//	logins:           failure times, lock end (varint), count of successes,
//	                  each a 16-byte address group and a varint time
//	bans, locks:      flags (1: manual), at, until (0: forever), reason,
//	                  count of evidence lines, each a string
//	blocks:           at, reason

func appendTimes(b []byte, ts []int64) []byte {
	b = binary.AppendUvarint(b, uint64(len(ts)))
	for i, t := range ts {
		if i == 0 {
			b = binary.AppendVarint(b, t)
		} else {
			b = binary.AppendUvarint(b, uint64(t-ts[i-1]))
		}
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendLogin(b []byte, ls *loginState, times []int64) []byte {
	b = appendTimes(append(b, recordVersion), times)
	b = binary.AppendVarint(b, ls.lockedUntil)
	b = binary.AppendUvarint(b, uint64(len(ls.successes)))
	for _, s := range ls.successes {
		b = append(b, s.key[:]...)
		b = binary.AppendVarint(b, s.t)
	}
	return b
}

func decodeLogin(v []byte) (*loginState, []int64, error) {
	d := decoder{b: v}
	d.version()
	times := d.times(MaxCount)
	ls := &loginState{lockedUntil: d.varint()}
	n := d.count(maxSuccesses)
	for range n {
		var s success
		copy(s.key[:], d.bytes(16))
		s.t = d.varint()
		if d.err == nil && s.t <= 0 {
			d.fail("success time %d is not positive", s.t)
		}
		ls.successes = append(ls.successes, s)
	}
	d.end()
	if d.err == nil && ls.lockedUntil < 0 {
		d.fail("lock end %d is negative", ls.lockedUntil)
	}
	if d.err != nil {
		return nil, nil, d.err
	}
	return ls, times, nil
}

func encodeHold(h *hold) []byte {
	var flags byte
	if h.manual {
		flags |= 1
	}
	b := []byte{recordVersion, flags}
	b = binary.AppendVarint(b, h.at)
	b = binary.AppendVarint(b, h.until)
	b = appendString(b, h.reason)
	b = binary.AppendUvarint(b, uint64(len(h.evidence)))
	for _, l := range h.evidence {
		b = appendString(b, l)
	}
	return b
}

func decodeHold(v []byte) (*hold, error) {
	d := decoder{b: v}
	d.version()
	flags := d.byte()
	h := &hold{manual: flags&1 != 0, at: d.varint(), until: d.varint(), reason: d.str(maxReasonLen)}
	n := d.count(maxEvidenceRecorded)
	for range n {
		h.evidence = append(h.evidence, d.str(maxLineLen))
	}
	d.end()
	if d.err == nil && flags&^1 != 0 {
		d.err = fmt.Errorf("unknown flags %#x", flags)
	}
	if d.err == nil && h.until != 0 && h.until < h.at {
		d.err = errors.New("ends before it starts")
	}
	if d.err != nil {
		return nil, d.err
	}
	return h, nil
}

func encodeBlock(b *block) []byte {
	v := binary.AppendVarint([]byte{recordVersion}, b.manualAt)
	return appendString(v, b.manualReason)
}

// prefixBytes is a network as a key: the address's 4 or 16 bytes, then the
// prefix length.
func prefixBytes(p netip.Prefix) []byte {
	return append(p.Addr().AsSlice(), byte(p.Bits()))
}

func parsePrefixBytes(k []byte) (netip.Prefix, error) {
	var a netip.Addr
	switch len(k) {
	case 5:
		a = netip.AddrFrom4([4]byte(k[:4]))
	case 17:
		a = netip.AddrFrom16([16]byte(k[:16]))
	default:
		return netip.Prefix{}, fmt.Errorf("key is %d bytes, want 5 or 17", len(k))
	}
	p := netip.PrefixFrom(a, int(k[len(k)-1]))
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("key has prefix length %d, too long for %s", k[len(k)-1], a)
	}
	if c, _ := canonicalPrefix(p); c != p {
		return netip.Prefix{}, fmt.Errorf("key %s is not in canonical form %s", p, c)
	}
	return p, nil
}

// decoder reads a value, remembering the first error; after an error every
// read returns a zero value.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) version() {
	if len(d.b) == 0 {
		d.fail("empty value")
		return
	}
	if d.b[0] != recordVersion {
		d.fail("unknown record version %d (this mailban reads %d)", d.b[0], recordVersion)
		return
	}
	d.b = d.b[1:]
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items that each take at least one byte.
func (d *decoder) count(limit int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) || n > uint64(len(d.b)) {
		d.fail("count %d is out of range", n)
		return 0
	}
	return int(n)
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return make([]byte, n)
	}
	if len(d.b) < n {
		d.fail("truncated")
		return make([]byte, n)
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) str(limit int) string {
	n := d.count(limit)
	return string(d.bytes(n))
}

// times reads a sorted list of positive times.
func (d *decoder) times(limit int) []int64 {
	n := d.count(limit)
	if n == 0 {
		return nil
	}
	ts := make([]int64, 0, n)
	t := d.varint()
	for i := 0; d.err == nil; i++ {
		if t <= 0 {
			d.fail("time %d is not positive", t)
			break
		}
		ts = append(ts, t)
		if i+1 == n {
			break
		}
		delta := d.uvarint()
		if delta > uint64(math.MaxInt64-t) {
			d.fail("time overflows")
			break
		}
		t += int64(delta)
	}
	return ts
}

func (d *decoder) end() {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d unexpected bytes at the end", len(d.b))
	}
}
