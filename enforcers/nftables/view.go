package nftables

import (
	"net/netip"
	"slices"
	"time"
)

// setID names one of the four sets the enforcer keeps.
type setID int

const (
	ban4 setID = iota
	ban6
	block4
	block6
	numSets
)

var setNames = [numSets]string{ban4: "ban4", ban6: "ban6", block4: "block4", block6: "block6"}

func (s setID) String() string { return setNames[s] }

// timed sets carry a timeout per element: the kernel expires bans itself.
func (s setID) timed() bool { return s == ban4 || s == ban6 }

func (s setID) v6() bool { return s == ban6 || s == block6 }

// entry is one interval the kernel holds: addresses lo to hi, both
// included, until a time (zero: for good). Entries of one set never overlap.
type entry struct {
	lo, hi netip.Addr
	until  time.Time
}

type span struct{ lo, hi netip.Addr }

func (e entry) span() span { return span{e.lo, e.hi} }

// decided is a prefix as the rules decided it, with when it ends.
type decided struct {
	p     netip.Prefix
	until time.Time
}

// setView is what the enforcer knows about one set: what the rules decided
// (prefixes, which may nest: a /64 ban and a /48 block, a /32 inside a
// banned /24) and what it put in the kernel (disjoint entries, grouped by
// the outermost prefix they were computed from). Routine updates read and
// change only the group a decision falls in, never the kernel.
type setView struct {
	decided map[netip.Prefix]time.Time
	dlen    [129]int32 // decided prefixes per prefix length
	groups  map[netip.Prefix][]entry
	glen    [129]int32 // groups per outer prefix length
	entries int        // kernel entries in all groups
}

func newSetView() *setView {
	return &setView{decided: map[netip.Prefix]time.Time{}, groups: map[netip.Prefix][]entry{}}
}

// decide records a ban or block (remove false) or its end, and returns the
// region whose kernel entries may have to change: the outermost prefix,
// decided or already in the kernel, that contains p.
func (v *setView) decide(p netip.Prefix, until time.Time, remove bool) netip.Prefix {
	r := v.outermost(p)
	old, had := v.decided[p]
	switch {
	case remove && had:
		delete(v.decided, p)
		v.dlen[p.Bits()]--
	case !remove && !had:
		v.decided[p] = until
		v.dlen[p.Bits()]++
	case !remove && !old.Equal(until):
		v.decided[p] = until
	}
	return r
}

// outermost is the shortest prefix containing p among the decided prefixes
// and the groups, or p itself. Only prefix lengths in use are looked up, so
// with one length per set (the common case) it costs a few array reads.
func (v *setView) outermost(p netip.Prefix) netip.Prefix {
	for b := 0; b < p.Bits(); b++ {
		if v.dlen[b] == 0 && v.glen[b] == 0 {
			continue
		}
		q := netip.PrefixFrom(p.Addr(), b).Masked()
		if _, ok := v.decided[q]; ok {
			return q
		}
		if _, ok := v.groups[q]; ok {
			return q
		}
	}
	return p
}

func longer(counts *[129]int32, bits int) bool {
	for b := bits + 1; b < len(counts); b++ {
		if counts[b] != 0 {
			return true
		}
	}
	return false
}

// decidedIn lists the decided prefixes inside r that are still in force.
// It walks all of them only when some are longer than r.
func (v *setView) decidedIn(r netip.Prefix, now time.Time) []decided {
	var out []decided
	if !longer(&v.dlen, r.Bits()) {
		if u, ok := v.decided[r]; ok && live(u, now) {
			out = append(out, decided{r, u})
		}
		return out
	}
	for p, u := range v.decided {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) && live(u, now) {
			out = append(out, decided{p, u})
		}
	}
	return out
}

// groupsIn lists the outer prefixes of the groups inside r.
func (v *setView) groupsIn(r netip.Prefix) []netip.Prefix {
	if !longer(&v.glen, r.Bits()) {
		if _, ok := v.groups[r]; ok {
			return []netip.Prefix{r}
		}
		return nil
	}
	var out []netip.Prefix
	for g := range v.groups {
		if r.Bits() <= g.Bits() && r.Contains(g.Addr()) {
			out = append(out, g)
		}
	}
	return out
}

// live says whether a ban ending at until is still in force at now.
func live(until, now time.Time) bool { return until.IsZero() || until.After(now) }

// change is what one update does to one set: entries to take out of the
// kernel and to put in, and the groups that replace the old ones after
// the kernel has accepted it.
type change struct {
	del, add []entry
	drop     []netip.Prefix // groups replaced
	put      []group
	full     bool // put replaces every group
}

func (c *change) empty() bool { return len(c.del) == 0 && len(c.add) == 0 }

// planRegion computes what changes in the kernel for region r.
func (v *setView) planRegion(r netip.Prefix, now time.Time, c *change) {
	var old []entry
	for _, g := range v.groupsIn(r) {
		old = append(old, v.groups[g]...)
		c.drop = append(c.drop, g)
	}
	gs := groupsOf(v.decidedIn(r, now))
	var want []entry
	for _, g := range gs {
		want = append(want, g.entries...)
	}
	del, add := diff(old, want, 0)
	c.del = append(c.del, del...)
	c.add = append(c.add, add...)
	c.put = append(c.put, gs...)
}

// planAll computes what changes to make the kernel's entries, as read
// from it, what the decided prefixes say. Untils within tolerance of each
// other are the same: the kernel counts in milliseconds of jiffies.
func (v *setView) planAll(kernel []entry, now time.Time, tolerance time.Duration) change {
	ds := make([]decided, 0, len(v.decided))
	for p, u := range v.decided {
		if live(u, now) {
			ds = append(ds, decided{p, u})
		}
	}
	gs := groupsOf(ds)
	n := 0
	for _, g := range gs {
		n += len(g.entries)
	}
	want := make([]entry, 0, n)
	for _, g := range gs {
		want = append(want, g.entries...)
	}
	del, add := diff(kernel, want, tolerance)
	return change{del: del, add: add, put: gs, full: true}
}

// commit records that the kernel accepted c.
func (v *setView) commit(c *change) {
	if c.full {
		clear(v.groups)
		v.glen = [129]int32{}
		v.entries = 0
	}
	for _, g := range c.drop {
		if es, ok := v.groups[g]; ok {
			v.entries -= len(es)
			delete(v.groups, g)
			v.glen[g.Bits()]--
		}
	}
	for _, g := range c.put {
		if _, ok := v.groups[g.outer]; !ok {
			v.glen[g.outer.Bits()]++
		} else {
			v.entries -= len(v.groups[g.outer])
		}
		v.groups[g.outer] = g.entries
		v.entries += len(g.entries)
	}
}

// reset forgets what the rules decided; the kernel entries stay known.
func (v *setView) resetDecided() {
	clear(v.decided)
	v.dlen = [129]int32{}
}

// group is a set of nested prefixes and the disjoint entries that hold
// them in the kernel.
type group struct {
	outer   netip.Prefix
	entries []entry
}

// groupsOf sorts the prefixes, splits them into groups of nested ones and
// turns each group into disjoint entries. A lone prefix is one entry; in a
// group, every address is held until the latest end of the prefixes that
// contain it, so that no ban is cut short by another.
func groupsOf(ds []decided) []group {
	slices.SortFunc(ds, func(a, b decided) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		return a.p.Bits() - b.p.Bits()
	})
	out := make([]group, 0, len(ds))
	for i := 0; i < len(ds); {
		outer := ds[i].p
		j := i + 1
		for j < len(ds) && outer.Contains(ds[j].p.Addr()) {
			j++
		}
		out = append(out, group{outer: outer, entries: flatten(outer, ds[i:j])})
		i = j
	}
	return out
}

// flatten turns nested prefixes, the first of which contains the others,
// into disjoint entries.
func flatten(outer netip.Prefix, members []decided) []entry {
	last := lastAddr(outer)
	if len(members) == 1 {
		return []entry{{lo: outer.Addr(), hi: last, until: members[0].until}}
	}
	bounds := make([]netip.Addr, 0, 2*len(members))
	for _, m := range members {
		bounds = append(bounds, m.p.Addr())
		if hi := lastAddr(m.p); hi != last {
			bounds = append(bounds, hi.Next())
		}
	}
	slices.SortFunc(bounds, netip.Addr.Compare)
	bounds = slices.Compact(bounds)
	var out []entry
	for i, b := range bounds {
		hi := last
		if i+1 < len(bounds) {
			hi = bounds[i+1].Prev()
		}
		var until time.Time
		first := true
		for _, m := range members {
			if m.p.Contains(b) {
				if first {
					until, first = m.until, false
				} else {
					until = later(until, m.until)
				}
			}
		}
		if n := len(out); n > 0 && out[n-1].until.Equal(until) {
			out[n-1].hi = hi
			continue
		}
		out = append(out, entry{lo: b, hi: hi, until: until})
	}
	return out
}

// later is the later of two ends; zero, for good, is the latest.
func later(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.After(b) {
		return a
	}
	return b
}

// diff says which of the old entries to delete and which of the wanted to
// add. An entry with the same addresses but another end is replaced.
func diff(old, want []entry, tolerance time.Duration) (del, add []entry) {
	have := make(map[span]time.Time, len(old))
	for _, e := range old {
		have[e.span()] = e.until
	}
	for _, w := range want {
		if u, ok := have[w.span()]; ok && sameEnd(u, w.until, tolerance) {
			delete(have, w.span())
			continue
		}
		add = append(add, w)
	}
	for _, e := range old {
		if _, ok := have[e.span()]; ok {
			del = append(del, e)
		}
	}
	return del, add
}

func sameEnd(a, b time.Time, tolerance time.Duration) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() && b.IsZero()
	}
	d := a.Sub(b)
	return d <= tolerance && -d <= tolerance
}

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		setHostBits(b[:], p.Bits())
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	setHostBits(b[:], p.Bits())
	return netip.AddrFrom16(b)
}

func setHostBits(b []byte, bits int) {
	for i := range b {
		switch n := bits - 8*i; {
		case n <= 0:
			b[i] = 0xff
		case n < 8:
			b[i] |= 0xff >> n
		}
	}
}

// rangePrefixes splits lo..hi into the fewest prefixes that cover it.
func rangePrefixes(lo, hi netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for range 2 * 128 {
		bits := lo.BitLen()
		for b := 0; b < lo.BitLen(); b++ {
			p := netip.PrefixFrom(lo, b)
			if p.Masked().Addr() == lo && lastAddr(p).Compare(hi) <= 0 {
				bits = b
				break
			}
		}
		p := netip.PrefixFrom(lo, bits)
		out = append(out, p)
		end := lastAddr(p)
		if end.Compare(hi) >= 0 || !end.Next().IsValid() {
			break
		}
		lo = end.Next()
	}
	return out
}
