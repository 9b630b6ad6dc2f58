package source

import (
	"encoding/binary"
	"fmt"
)

// A command's output or standard input cannot be reopened at an offset: a
// restarted command prints what it prints. Some print only what is new
// (`tail -n0 -F`, `docker logs -f --since 0s`), others their whole history
// again (`docker logs -f`, `kubectl logs -f`, a file piped in again). To
// count neither twice, the cursor of a piped line says how many lines of the
// producer's output came before it and with what content (outputPos); when
// the producer starts again and its output begins with the same lines as the
// last one, it is a replay, and the lines already read are skipped.
//
// "Begins with the same lines" means its first line, and its first
// headLines lines (or as many as the last output had, if fewer) hash as the
// last output's did: a banner line alone proves nothing. Since a replay
// prints its history in one burst, the lines after a matching first line are
// held back only until headLines have come or replayQuiet passes without
// one; then they are either a replay (dropped, and skipping goes on to the
// saved count) or new output (delivered). Once the count is reached, the
// hash of all lines skipped is checked: a mismatch is logged, as the skipped
// lines then were not all a replay.

// headLines is how many leading lines identify an output.
const headLines = 16

// outputVersion1 marks the first encoding of an outputPos.
const outputVersion1 = 1

// FNV-64a, kept as running state.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	h ^= '\n'
	return h * fnvPrime
}

// outputPos is where reading of a producer's output stands.
type outputPos struct {
	n     uint64 // lines of this output read (delivered or skipped)
	first uint64 // hash of line 1
	head  uint64 // hash of the first min(n, headLines) lines
	all   uint64 // hash of all n lines
}

// next is the position after line text.
func (p outputPos) next(text []byte) outputPos {
	if p.n == 0 {
		p.first, p.head, p.all = fnvAdd(fnvOffset, text), fnvOffset, fnvOffset
	}
	if p.n < headLines {
		p.head = fnvAdd(p.head, text)
	}
	p.all = fnvAdd(p.all, text)
	p.n++
	return p
}

// encode writes p as: version, uvarint n, then first, head and all as
// 8 bytes each.
func (p outputPos) encode() []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+24)
	b = append(b, outputVersion1)
	b = binary.AppendUvarint(b, p.n)
	b = binary.BigEndian.AppendUint64(b, p.first)
	b = binary.BigEndian.AppendUint64(b, p.head)
	return binary.BigEndian.AppendUint64(b, p.all)
}

func decodeOutputPos(b []byte) (outputPos, error) {
	if len(b) == 0 {
		return outputPos{}, fmt.Errorf("%w: empty", ErrBadCursor)
	}
	if b[0] != outputVersion1 {
		return outputPos{}, fmt.Errorf("%w: unknown version %d", ErrBadCursor, b[0])
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 {
		return outputPos{}, fmt.Errorf("%w: truncated or overlong line count", ErrBadCursor)
	}
	rest := b[1+k:]
	if len(rest) != 24 {
		return outputPos{}, fmt.Errorf("%w: hashes are %d bytes, want 24", ErrBadCursor, len(rest))
	}
	return outputPos{
		n:     n,
		first: binary.BigEndian.Uint64(rest),
		head:  binary.BigEndian.Uint64(rest[8:]),
		all:   binary.BigEndian.Uint64(rest[16:]),
	}, nil
}

// Phases of a replayFilter.
const (
	phaseDeciding   = iota // the first line matched the last output's; holding lines
	phaseSkipping          // a replay: dropping lines up to the last output's count
	phaseDelivering        // new lines
)

// pipeLine is one line of a producer's output.
type pipeLine struct {
	text string
	cut  bool // longer than the limit, delivered cut
}

// positioned is a line with the position after it.
type positioned struct {
	pipeLine
	pos outputPos
}

// replayFilter decides, line by line, what of one run of a producer's output
// is new. last is the output read before (n == 0: none).
type replayFilter struct {
	last  outputPos
	cur   outputPos
	phase int
	held  []positioned
}

func newReplayFilter(last outputPos) *replayFilter {
	f := &replayFilter{last: last, phase: phaseDelivering}
	if last.n > 0 {
		f.phase = phaseDeciding
	}
	return f
}

// replay events, for the caller to log.
const (
	verdictNone     = iota
	verdictNew      // the output is not the last one again: held lines go out
	verdictReplay   // the output repeats the last one; skipping
	verdictReplayed // all of the last output was skipped, and it matched
	verdictDiffered // all of the last output was skipped, but it did not match
)

// add takes the next line and returns the lines to deliver now, and what
// was decided, if anything.
func (f *replayFilter) add(l pipeLine) ([]positioned, int) {
	f.cur = f.cur.next([]byte(l.text))
	p := positioned{l, f.cur}
	switch f.phase {
	case phaseDelivering:
		return []positioned{p}, verdictNone
	case phaseSkipping:
		return nil, f.skipped()
	}
	if f.cur.n == 1 && f.cur.first != f.last.first {
		f.phase = phaseDelivering
		return []positioned{p}, verdictNew
	}
	f.held = append(f.held, p)
	if f.cur.n < min(f.last.n, headLines) {
		return nil, verdictNone
	}
	if f.cur.head != f.last.head {
		return f.release(), verdictNew
	}
	f.held = nil
	f.phase = phaseSkipping
	if v := f.skipped(); v != verdictNone {
		return nil, v
	}
	return nil, verdictReplay
}

// skipped checks, while skipping, whether the last output's count is
// reached.
func (f *replayFilter) skipped() int {
	if f.cur.n < f.last.n {
		return verdictNone
	}
	f.phase = phaseDelivering
	if f.cur.all != f.last.all {
		return verdictDiffered
	}
	return verdictReplayed
}

// quiet is called when no line came for replayQuiet while lines are held:
// a replay comes in a burst, so this is new output.
func (f *replayFilter) quiet() []positioned {
	if f.phase != phaseDeciding || len(f.held) == 0 {
		return nil
	}
	return f.release()
}

func (f *replayFilter) release() []positioned {
	out := f.held
	f.held = nil
	f.phase = phaseDelivering
	return out
}

// holding reports whether lines wait for a decision.
func (f *replayFilter) holding() bool { return f.phase == phaseDeciding && len(f.held) > 0 }

// end is called when the output ended; it returns the output the next run
// is compared with. An output that ended while it was being compared with
// the last one, having repeated its beginning so far, was a replay cut
// short: the last output stays the one to compare with.
func (f *replayFilter) end() outputPos {
	if f.phase != phaseDelivering || f.cur.n == 0 {
		f.held = nil
		return f.last
	}
	return f.cur
}
