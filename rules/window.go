package rules

// window is one key's failures that may still count: an exact sliding
// window. It is 16 bytes with no pointers, because a million keys with one
// failure each is the common case under a botnet and the garbage collector
// need not scan a map without pointers: the newest failure's time lives
// inline, and older ones in a ring from the engine's ringSlab, taken at the
// second failure.
//
// Times are Unix nanoseconds of the events' own times; 0 means "none".
type window struct {
	last int64  // the newest failure; 0: the window is empty
	ref  uint64 // refRing and refDirty flags, then an evidence sequence or a slab index
}

const (
	// refRing: the low bits of ref are the window's ring in the slab (which
	// holds the evidence sequence); otherwise they are the sequence itself.
	refRing = 1 << 63
	// refDirty: the key is already in the engine's list of changed keys.
	refDirty = 1 << 62
	refValue = refDirty - 1
)

// ringSlab holds the rings of every window with two or more failures,
// addressed by index so that windows hold no pointers.
type ringSlab struct {
	rings []stamps
	free  []uint32
}

// stamps is a ring of failure times kept in ascending order.
type stamps struct {
	buf  []int64
	off  uint32 // index of the oldest
	n    uint32
	head uint64 // evidence sequence of the window's newest line
}

func (s *ringSlab) take(size int) uint32 {
	var i uint32
	if n := len(s.free); n > 0 {
		i, s.free = s.free[n-1], s.free[:n-1]
	} else {
		i = uint32(len(s.rings))
		s.rings = append(s.rings, stamps{})
	}
	s.rings[i] = stamps{buf: make([]int64, size)}
	return i
}

func (s *ringSlab) give(i uint32) {
	s.rings[i] = stamps{}
	s.free = append(s.free, i)
}

// used counts the rings in use.
func (s *ringSlab) used() int { return len(s.rings) - len(s.free) }

func (w *window) ring(s *ringSlab) *stamps {
	if w.ref&refRing == 0 {
		return nil
	}
	return &s.rings[w.ref&refValue]
}

func (w *window) head(s *ringSlab) uint64 {
	if r := w.ring(s); r != nil {
		return r.head
	}
	return w.ref & refValue
}

func (w *window) setHead(s *ringSlab, seq uint64) {
	if r := w.ring(s); r != nil {
		r.head = seq
		return
	}
	w.ref = w.ref&^refValue | seq&refValue
}

func (w *window) dirty() bool { return w.ref&refDirty != 0 }

func (w *window) count(s *ringSlab) int {
	if r := w.ring(s); r != nil {
		return int(r.n)
	}
	if w.last != 0 {
		return 1
	}
	return 0
}

// release gives the window's ring back and empties the window, keeping only
// its dirty flag.
func (w *window) release(s *ringSlab) {
	if w.ref&refRing != 0 {
		s.give(uint32(w.ref & refValue))
	}
	*w = window{ref: w.ref & refDirty}
}

// trim drops the failures that no longer count at ref: those at least
// period old.
func (w *window) trim(s *ringSlab, ref, period int64) {
	r := w.ring(s)
	if r == nil {
		if w.last != 0 && ref-w.last >= period {
			w.last = 0
		}
		return
	}
	for r.n > 0 && ref-r.buf[r.off] >= period {
		r.off++
		if int(r.off) == len(r.buf) {
			r.off = 0
		}
		r.n--
	}
	if r.n == 0 {
		w.last = 0
	}
}

// add records a failures at t. The caller has checked that count()+a stays
// below the threshold's count, so at most keep times are ever held.
func (w *window) add(s *ringSlab, t int64, a, keep int) {
	r := w.ring(s)
	if r == nil {
		if w.last == 0 && a == 1 {
			w.last = t
			return
		}
		need := a
		if w.last != 0 {
			need++
		}
		i := s.take(min(max(need, 4), max(keep, need)))
		r = &s.rings[i]
		r.head = w.ref & refValue
		if w.last != 0 {
			r.insert(w.last, keep)
		}
		w.ref = w.ref&refDirty | refRing | uint64(i)
	}
	for range a {
		r.insert(t, keep)
	}
	w.last = r.newest()
}

// compact gives the ring back when at most one failure is left in it.
func (w *window) compact(s *ringSlab) {
	r := w.ring(s)
	if r == nil || r.n > 1 {
		return
	}
	last, head := int64(0), r.head
	if r.n == 1 {
		last = r.buf[r.off]
	}
	s.give(uint32(w.ref & refValue))
	w.last, w.ref = last, w.ref&refDirty|head&refValue
}

// appendTimes appends the failure times, oldest first.
func (w *window) appendTimes(s *ringSlab, dst []int64) []int64 {
	r := w.ring(s)
	if r == nil {
		if w.last != 0 {
			dst = append(dst, w.last)
		}
		return dst
	}
	for i := range r.n {
		dst = append(dst, r.at(i))
	}
	return dst
}

// setTimes replaces the window's failures with ts, which is sorted, and
// forgets its evidence.
func (w *window) setTimes(s *ringSlab, ts []int64) {
	w.release(s)
	switch len(ts) {
	case 0:
	case 1:
		w.last = ts[0]
	default:
		i := s.take(len(ts))
		r := &s.rings[i]
		copy(r.buf, ts)
		r.n = uint32(len(ts))
		w.last = ts[len(ts)-1]
		w.ref |= refRing | uint64(i)
	}
}

func (r *stamps) index(i uint32) uint32 {
	j := r.off + i
	if j >= uint32(len(r.buf)) {
		j -= uint32(len(r.buf))
	}
	return j
}

func (r *stamps) at(i uint32) int64 { return r.buf[r.index(i)] }

func (r *stamps) newest() int64 {
	if r.n == 0 {
		return 0
	}
	return r.at(r.n - 1)
}

// insert adds t in order (failures nearly always arrive in order, so the
// search from the newest end stops at once). A full ring grows, doubling,
// up to keep entries; one that is full at keep loses its oldest.
func (r *stamps) insert(t int64, keep int) {
	if int(r.n) == len(r.buf) {
		if len(r.buf) < keep {
			r.grow(min(2*len(r.buf), keep))
		} else {
			r.off = r.index(1)
			r.n--
		}
	}
	i := r.n
	for i > 0 && r.at(i-1) > t {
		r.buf[r.index(i)] = r.at(i - 1)
		i--
	}
	r.buf[r.index(i)] = t
	r.n++
}

func (r *stamps) grow(size int) {
	buf := make([]int64, size)
	for i := range r.n {
		buf[i] = r.at(i)
	}
	r.buf, r.off = buf, 0
}
