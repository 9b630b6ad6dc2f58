package parsers

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// The index finds exactly the literals strings.Contains finds.
func TestLitIndex(t *testing.T) {
	presets, err := Presets()
	if err != nil {
		t.Fatal(err)
	}
	var lits []string
	for _, s := range presets {
		for _, p := range s.Patterns {
			lits = append(lits, p.Contains...)
		}
	}
	lits = append(lits, "a", "ab", "abc", "abca", "aaaa", "aaaaa", "\x00\x00\x00\x00")
	if len(lits) > maxIndexed {
		lits = lits[:maxIndexed]
	}
	x := newLitIndex(lits)
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "abc :[]()<>=.\x00"
	for i := range 20000 {
		var b strings.Builder
		for range rng.IntN(40) {
			if rng.IntN(4) == 0 {
				b.WriteString(lits[rng.IntN(len(lits))])
			} else {
				b.WriteByte(alphabet[rng.IntN(len(alphabet))])
			}
		}
		text := b.String()
		if i%3 == 0 && len(text) > 2 {
			text = text[rng.IntN(len(text)):] // cut literals at any byte
		}
		var found litSet
		x.scan(text, &found)
		for j, l := range lits {
			if found.has(j) != strings.Contains(text, l) {
				t.Fatalf("literal %q in %q: index says %v", l, text, found.has(j))
			}
		}
	}
}

func BenchmarkLitIndex(b *testing.B) {
	p := presetParser(b, nil, presetNames...)
	line := "2026-11-25 20:44:02 1xWJnd-0000Tc-3n <= carol@example.net H=mx.example.net [192.0.2.77] P=esmtp S=2048 id=ghi@example.net"
	var found litSet
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		found = litSet{}
		p.plainIdx.scan(line, &found)
	}
}
