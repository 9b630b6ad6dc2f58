package parsers

import "strings"

// litIndex finds which of many literals occur in a text in one pass over it,
// instead of one substring search per literal. Lines without a syslog header
// are offered to every plain format; with a dozen of them, searching each
// pattern's literals one by one would cost more than everything else a line
// costs.
//
// Every window of 4 bytes of the text is hashed into a bit set holding the
// first 4 bytes of each literal; only where a bit is set is the window
// looked up and the literal compared. Literals shorter than 4 bytes are
// searched for the ordinary way.
type litIndex struct {
	lits  []string
	bloom [1 << (bloomBits - 6)]uint64
	heads map[uint32][]int // first 4 bytes → literals starting with them
	short []int            // literals shorter than 4 bytes
}

const bloomBits = 14

// litSet is the set of literals found, by index; an index holds at most
// maxIndexed literals.
type litSet [4]uint64

const maxIndexed = len(litSet{}) * 64

func (s *litSet) add(i int)      { s[i>>6] |= 1 << (i & 63) }
func (s *litSet) has(i int) bool { return s[i>>6]&(1<<(i&63)) != 0 }
func window(s string) uint32 {
	return uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3])
}
func bloomSlot(w uint32) (int, uint64) {
	h := (w * 0x9E3779B1) >> (32 - bloomBits)
	return int(h >> 6), 1 << (h & 63)
}

// newLitIndex indexes lits (at most maxIndexed); literal i is reported as i.
func newLitIndex(lits []string) *litIndex {
	x := &litIndex{lits: lits, heads: make(map[uint32][]int)}
	for i, l := range lits {
		if len(l) < 4 {
			x.short = append(x.short, i)
			continue
		}
		w := window(l)
		word, bit := bloomSlot(w)
		x.bloom[word] |= bit
		x.heads[w] = append(x.heads[w], i)
	}
	return x
}

// scan adds to found every literal that occurs in s.
func (x *litIndex) scan(s string, found *litSet) {
	for _, i := range x.short {
		if strings.Contains(s, x.lits[i]) {
			found.add(i)
		}
	}
	if len(s) < 4 {
		return
	}
	w := window(s) >> 8
	for i := 3; i < len(s); i++ {
		w = w<<8 | uint32(s[i])
		word, bit := bloomSlot(w)
		if x.bloom[word]&bit == 0 {
			continue
		}
		for _, j := range x.heads[w] {
			if !found.has(j) && strings.HasPrefix(s[i-3:], x.lits[j]) {
				found.add(j)
			}
		}
	}
}
