package rules

// window is one key's failures that may still count: an exact sliding
// window. It is kept small because a million keys with one failure each is
// the common case under a botnet: the newest failure's time lives inline
// and the ring of older ones is allocated only at the second failure.
//
// Times are Unix nanoseconds of the events' own times; 0 means "none".
type window struct {
	last int64   // the newest failure; 0: the window is empty
	head uint64  // evidence sequence of this key's newest line; 0: none
	more *stamps // every failure, oldest first, once there have been two
}

// stamps is a ring of failure times kept in ascending order.
type stamps struct {
	buf []int64
	off uint32 // index of the oldest
	n   uint32
}

func (w *window) count() int {
	if w.more != nil {
		return int(w.more.n)
	}
	if w.last != 0 {
		return 1
	}
	return 0
}

// trim drops the failures that no longer count at ref: those at least
// period old.
func (w *window) trim(ref, period int64) {
	if w.more == nil {
		if w.last != 0 && ref-w.last >= period {
			w.last = 0
		}
		return
	}
	s := w.more
	for s.n > 0 && ref-s.buf[s.off] >= period {
		s.off++
		if int(s.off) == len(s.buf) {
			s.off = 0
		}
		s.n--
	}
	if s.n == 0 {
		w.last = 0
	}
}

// add records a failures at t. The caller has checked that count()+a stays
// below the threshold's count, so at most keep times are ever held.
func (w *window) add(t int64, a, keep int) {
	if w.more == nil {
		if w.last == 0 && a == 1 {
			w.last = t
			return
		}
		need := a
		if w.last != 0 {
			need++
		}
		size := max(need, 4)
		size = min(size, max(keep, need))
		s := &stamps{buf: make([]int64, size)}
		if w.last != 0 {
			s.insert(w.last, keep)
		}
		w.more = s
	}
	for range a {
		w.more.insert(t, keep)
	}
	w.last = w.more.newest()
}

// compact frees the ring when at most one failure is left in it.
func (w *window) compact() {
	if w.more != nil && w.more.n <= 1 {
		w.last = 0
		if w.more.n == 1 {
			w.last = w.more.buf[w.more.off]
		}
		w.more = nil
	}
}

// appendTimes appends the failure times, oldest first.
func (w *window) appendTimes(dst []int64) []int64 {
	if w.more == nil {
		if w.last != 0 {
			dst = append(dst, w.last)
		}
		return dst
	}
	for i := range w.more.n {
		dst = append(dst, w.more.at(i))
	}
	return dst
}

// setTimes replaces the window's failures with ts, which is sorted.
func (w *window) setTimes(ts []int64) {
	w.more = nil
	w.last = 0
	switch len(ts) {
	case 0:
	case 1:
		w.last = ts[0]
	default:
		s := &stamps{buf: make([]int64, len(ts)), n: uint32(len(ts))}
		copy(s.buf, ts)
		w.more = s
		w.last = ts[len(ts)-1]
	}
}

func (s *stamps) index(i uint32) uint32 {
	j := s.off + i
	if j >= uint32(len(s.buf)) {
		j -= uint32(len(s.buf))
	}
	return j
}

func (s *stamps) at(i uint32) int64 { return s.buf[s.index(i)] }

func (s *stamps) newest() int64 {
	if s.n == 0 {
		return 0
	}
	return s.at(s.n - 1)
}

// insert adds t in order (failures nearly always arrive in order, so the
// search from the newest end stops at once). A full ring grows, doubling,
// up to keep entries; one that is full at keep loses its oldest.
func (s *stamps) insert(t int64, keep int) {
	if int(s.n) == len(s.buf) {
		if len(s.buf) < keep {
			s.grow(min(2*len(s.buf), keep))
		} else {
			s.off = s.index(1)
			s.n--
		}
	}
	i := s.n
	for i > 0 && s.at(i-1) > t {
		s.buf[s.index(i)] = s.at(i - 1)
		i--
	}
	s.buf[s.index(i)] = t
	s.n++
}

func (s *stamps) grow(size int) {
	buf := make([]int64, size)
	for i := range s.n {
		buf[i] = s.at(i)
	}
	s.buf, s.off = buf, 0
}
