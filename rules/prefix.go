package rules

import (
	"iter"
	"math/bits"
	"net/netip"
)

// prefixMap holds values by network and finds the networks that contain an
// address with one map lookup per prefix length in use (bans are nearly all
// /32 and /64, so that is one or two lookups), longest prefix first.
type prefixMap[V any] struct {
	m     map[netip.Prefix]V
	count [33 + 129]int32 // entries per length: IPv4 0-32, then IPv6 0-128
	used4 uint64          // bit n: some IPv4 entry has length n
	used6 [3]uint64       // bit n: some IPv6 entry has length n
}

func newPrefixMap[V any]() prefixMap[V] {
	return prefixMap[V]{m: make(map[netip.Prefix]V)}
}

func lengthSlot(p netip.Prefix) int {
	if p.Addr().Is4() {
		return p.Bits()
	}
	return 33 + p.Bits()
}

func (x *prefixMap[V]) len() int { return len(x.m) }

func (x *prefixMap[V]) get(p netip.Prefix) (V, bool) {
	v, ok := x.m[p]
	return v, ok
}

// set stores v under p, which must be canonical (see canonicalPrefix).
func (x *prefixMap[V]) set(p netip.Prefix, v V) {
	if _, ok := x.m[p]; !ok {
		s := lengthSlot(p)
		x.count[s]++
		if p.Addr().Is4() {
			x.used4 |= 1 << p.Bits()
		} else {
			x.used6[p.Bits()/64] |= 1 << (p.Bits() % 64)
		}
	}
	x.m[p] = v
}

func (x *prefixMap[V]) delete(p netip.Prefix) {
	if _, ok := x.m[p]; !ok {
		return
	}
	delete(x.m, p)
	s := lengthSlot(p)
	x.count[s]--
	if x.count[s] == 0 {
		if p.Addr().Is4() {
			x.used4 &^= 1 << p.Bits()
		} else {
			x.used6[p.Bits()/64] &^= 1 << (p.Bits() % 64)
		}
	}
}

// containing yields the stored networks that contain a (which must be
// unmapped and zoneless), longest first.
func (x *prefixMap[V]) containing(a netip.Addr) iter.Seq2[netip.Prefix, V] {
	return func(yield func(netip.Prefix, V) bool) {
		if len(x.m) == 0 {
			return
		}
		if a.Is4() {
			for used := x.used4; used != 0; {
				n := bits.Len64(used) - 1
				used &^= 1 << n
				p, _ := a.Prefix(n)
				if v, ok := x.m[p]; ok && !yield(p, v) {
					return
				}
			}
			return
		}
		for w := 2; w >= 0; w-- {
			for used := x.used6[w]; used != 0; {
				b := bits.Len64(used) - 1
				used &^= 1 << b
				p, _ := a.Prefix(w*64 + b)
				if v, ok := x.m[p]; ok && !yield(p, v) {
					return
				}
			}
		}
	}
}

// all yields every entry in no particular order.
func (x *prefixMap[V]) all() iter.Seq2[netip.Prefix, V] {
	return func(yield func(netip.Prefix, V) bool) {
		for p, v := range x.m {
			if !yield(p, v) {
				return
			}
		}
	}
}

// allowList answers "is this address allowlisted?" for every event, so it
// scans a short list (the usual loopback and host addresses) and falls back
// to a prefixMap when the list is long.
type allowList struct {
	small []netip.Prefix
	large prefixMap[struct{}]
}

const allowScanMax = 16

func newAllowList(ps []netip.Prefix) allowList {
	if len(ps) <= allowScanMax {
		return allowList{small: ps}
	}
	l := allowList{large: newPrefixMap[struct{}]()}
	for _, p := range ps {
		l.large.set(p, struct{}{})
	}
	return l
}

func (l *allowList) contains(a netip.Addr) bool {
	if l.large.m == nil {
		for _, p := range l.small {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for range l.large.containing(a) {
		return true
	}
	return false
}

// overlapping returns an allowlisted network that overlaps p.
func (l *allowList) overlapping(p netip.Prefix) (netip.Prefix, bool) {
	if l.large.m == nil {
		for _, q := range l.small {
			if q.Overlaps(p) {
				return q, true
			}
		}
		return netip.Prefix{}, false
	}
	for q := range l.large.m {
		if q.Overlaps(p) {
			return q, true
		}
	}
	return netip.Prefix{}, false
}

// groupKey is the 16-byte form of the address group a failure counts
// against: an IPv4 address (as ::ffff:a.b.c.d) or an IPv6 network's first
// address. Keys of the two families cannot collide.
type groupKey = [16]byte

// group returns the key and network that a (unmapped, zoneless) counts as.
func group(a netip.Addr, v6bits int) (groupKey, netip.Prefix) {
	if a.Is4() {
		return a.As16(), netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(v6bits)
	return p.Addr().As16(), p
}

// keyPrefix turns a key back into its network.
func keyPrefix(k groupKey, v6bits int) netip.Prefix {
	a := netip.AddrFrom16(k)
	if a.Is4In6() {
		return netip.PrefixFrom(a.Unmap(), 32)
	}
	return netip.PrefixFrom(a, v6bits)
}

// prefixKey is the key of an auto-ban network (/32 or /v6bits), if p is one.
func prefixKey(p netip.Prefix, v6bits int) (groupKey, bool) {
	if p.Addr().Is4() {
		return p.Addr().As16(), p.Bits() == 32
	}
	return p.Addr().As16(), p.Bits() == v6bits
}
