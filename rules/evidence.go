package rules

import "slices"

// evidenceRing keeps the most recent failure lines of every key in one
// bounded ring, so that memory does not grow with the number of keys. Each
// entry links back to the previous entry of the same address and of the
// same login; a key remembers only the sequence number of its newest entry.
// A link is followed only while the entry it names has not been
// overwritten, so a decision's evidence lacks lines that have left the ring
// (on a busy server, lines older than the last EvidenceRing failures).
type evidenceRing struct {
	entries []evidenceEntry // a power of two long
	next    uint64          // sequence number of the next entry; 0 is "none"
}

type evidenceEntry struct {
	seq       uint64 // which line this slot holds now
	t         int64  // the event's time, Unix nanoseconds
	line      string
	prevAddr  uint64 // the same address's previous entry, 0: none
	prevLogin uint64 // the same login's previous entry, 0: none
}

func newEvidenceRing(size int) evidenceRing {
	n := 1
	for n < size {
		n <<= 1
	}
	return evidenceRing{entries: make([]evidenceEntry, n), next: 1}
}

func (r *evidenceRing) push(line string, t int64, prevAddr, prevLogin uint64) uint64 {
	seq := r.next
	r.next++
	r.entries[seq&uint64(len(r.entries)-1)] = evidenceEntry{seq: seq, t: t, line: line, prevAddr: prevAddr, prevLogin: prevLogin}
	return seq
}

func (r *evidenceRing) get(seq uint64) *evidenceEntry {
	if seq == 0 {
		return nil
	}
	e := &r.entries[seq&uint64(len(r.entries)-1)]
	if e.seq != seq {
		return nil // overwritten
	}
	return e
}

// lines walks back from head along the address (or login) links and
// returns up to limit lines newer than after, oldest first.
func (r *evidenceRing) lines(head uint64, byLogin bool, after int64, limit int) []string {
	var out []string
	for seq := head; len(out) < limit; {
		e := r.get(seq)
		if e == nil || e.t <= after {
			break
		}
		out = append(out, e.line)
		if byLogin {
			seq = e.prevLogin
		} else {
			seq = e.prevAddr
		}
	}
	slices.Reverse(out)
	return out
}
