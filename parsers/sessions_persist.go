package parsers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
)

// sessionsVersion is the layout EncodeSessions writes and DecodeSessions
// reads. A record of another version is refused, never guessed at.
//
// Version 1, all numbers unsigned varints, strings a length then bytes:
//
//	version byte (1)
//	formats
//	per format, in the parser's order:
//	    name
//	    owners: per owner (address and login of sessions; in order of their
//	        oldest session): address length (0, 4 or 16), address bytes,
//	        login, attempts counted by attempt lines that no summary claimed
//	    sessions, oldest first: id, owner index, own, absorb
//
// That is everything counting reads: which sessions are remembered and in
// what order they are forgotten, what each one's lines counted (own) or a
// summary counted ahead of them (absorb), and per owner the unclaimed
// attempts that a summary of an unknown session takes over (not derivable
// from the sessions: such a summary takes from it without touching any
// session's own). Owners without sessions are never kept (forget drops them).
const sessionsVersion = 1

// maxSessionCount bounds a count read back: far above what any table counts
// (MaxAttempts per line), low enough that sums cannot overflow an int.
const maxSessionCount = math.MaxInt32

// AdoptSessions makes p go on with the session memory of old, the parser p
// replaces on a reload: every format of p with session rules takes the table
// of old's format of the same name, if that has session rules too. The two
// parsers then share those tables: lines either one parses count once. Call
// it before p parses its first line. It returns how many tables p adopted.
//
// A format whose session rules changed between old and p adopts too. The
// table holds attempts per session id and per address and login, in the
// units every rule of the format counts in; rules that now match other lines
// or capture ids differently find the old ids unknown, and then behave as a
// fresh table would (a summary counts all its attempts) except that it may
// take over unclaimed attempts of its own address and login, which were
// counted by that address and login: never a count moved between addresses,
// never more than a fresh table would count. Dropping the table instead would
// count every session cut by the reload twice.
func (p *Parser) AdoptSessions(old *Parser) int {
	if old == nil {
		return 0
	}
	n := 0
	for _, f := range p.formats {
		if f.sessions == nil {
			continue
		}
		for _, of := range old.formats {
			if of.name == f.name && of.sessions != nil {
				f.sessions = of.sessions
				n++
				break
			}
		}
	}
	if p.hasSessions() || old.hasSessions() {
		// The formats with tables may differ from the saved record's:
		// write it again even if no table changes.
		p.sessionsStale.Store(true)
	}
	return n
}

func (p *Parser) hasSessions() bool {
	for _, f := range p.formats {
		if f.sessions != nil {
			return true
		}
	}
	return false
}

// SessionsChanged reports whether the session memory changed since
// EncodeSessions last encoded it (or DecodeSessions restored it, or p was
// compiled): a cheap check, so that an idle table costs no write.
func (p *Parser) SessionsChanged() bool {
	if p.sessionsStale.Load() {
		return true
	}
	for _, f := range p.formats {
		if t := f.sessions; t != nil {
			t.mu.Lock()
			changed := t.gen != t.saved
			t.mu.Unlock()
			if changed {
				return true
			}
		}
	}
	return false
}

// EncodeSessions appends the session memory of every format with session
// rules to dst, for the state file, and marks it saved (SessionsChanged is
// false until the next line changes it). Each table is encoded under its own
// lock: the record matches the lines parsed so far when no line is parsed
// meanwhile (the agent parses and encodes in one goroutine). Equal memory
// encodes to equal bytes.
func (p *Parser) EncodeSessions(dst []byte) []byte {
	p.sessionsStale.Store(false)
	n := 0
	for _, f := range p.formats {
		if f.sessions != nil {
			n++
		}
	}
	dst = append(dst, sessionsVersion)
	dst = binary.AppendUvarint(dst, uint64(n))
	for _, f := range p.formats {
		if f.sessions != nil {
			dst = appendString(dst, f.name)
			dst = f.sessions.encode(dst)
		}
	}
	return dst
}

func (t *sessionTable) encode(dst []byte) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.saved = t.gen
	owners := make(map[ownerKey]int, len(t.pending))
	var order []ownerKey
	for s := t.lru.prev; s != &t.lru; s = s.prev {
		if _, ok := owners[s.owner]; !ok {
			owners[s.owner] = len(order)
			order = append(order, s.owner)
		}
	}
	dst = binary.AppendUvarint(dst, uint64(len(order)))
	for _, o := range order {
		a := o.addr.AsSlice() // no zone: events carry none
		dst = append(dst, byte(len(a)))
		dst = append(dst, a...)
		dst = appendString(dst, o.login)
		dst = binary.AppendUvarint(dst, uint64(t.pending[o].attempts))
	}
	dst = binary.AppendUvarint(dst, uint64(len(t.byID)))
	for s := t.lru.prev; s != &t.lru; s = s.prev {
		dst = appendString(dst, s.id)
		dst = binary.AppendUvarint(dst, uint64(owners[s.owner]))
		dst = binary.AppendUvarint(dst, uint64(s.own))
		dst = binary.AppendUvarint(dst, uint64(s.absorb))
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeSessions replaces p's session memory with what EncodeSessions wrote,
// for a parser of the same formats (after a restart). A saved format that p
// does not have, or that has no session rules in p, is skipped: the
// configuration changed. Formats of p that the record lacks start empty.
// Bytes that are not such a record are an error naming what is wrong, and p
// is left unchanged.
func (p *Parser) DecodeSessions(data []byte) error {
	d := decoder{data: data}
	v, ok := d.byte()
	switch {
	case !ok:
		return errors.New("decode sessions: empty record")
	case v != sessionsVersion:
		return fmt.Errorf("decode sessions: version %d, this mailban reads version %d", v, sessionsVersion)
	}
	n, err := d.count("formats", len(data))
	if err != nil {
		return fmt.Errorf("decode sessions: %w", err)
	}
	tables := make(map[string]*sessionTable, n)
	for i := range n {
		name, err := d.string("format name")
		if err != nil {
			return fmt.Errorf("decode sessions: format %d: %w", i, err)
		}
		if _, dup := tables[name]; dup {
			return fmt.Errorf("decode sessions: format %q is given twice", name)
		}
		t := newSessionTable(maxSessions)
		if err := t.decode(&d); err != nil {
			return fmt.Errorf("decode sessions: format %q: %w", name, err)
		}
		tables[name] = t
	}
	if len(d.data) > 0 {
		return fmt.Errorf("decode sessions: %d bytes after the last format", len(d.data))
	}
	for _, f := range p.formats {
		if f.sessions == nil {
			continue
		}
		t := tables[f.name]
		if t == nil {
			t = newSessionTable(f.sessions.max)
		}
		f.sessions.replace(t)
	}
	p.sessionsStale.Store(false)
	return nil
}

// decode reads one table (after its format's name) into the empty table t.
func (t *sessionTable) decode(d *decoder) error {
	nOwners, err := d.count("owners", t.max)
	if err != nil {
		return err
	}
	type savedOwner struct {
		key      ownerKey
		attempts int
		used     bool
	}
	owners := make([]savedOwner, nOwners)
	seen := make(map[ownerKey]bool, nOwners)
	for i := range owners {
		o := &owners[i]
		alen, ok := d.byte()
		if !ok {
			return fmt.Errorf("owner %d: address: record ends", i)
		}
		if alen != 4 && alen != 16 {
			return fmt.Errorf("owner %d: address is %d bytes, want 4 or 16", i, alen)
		}
		b, ok := d.take(int(alen))
		if !ok {
			return fmt.Errorf("owner %d: address: record ends", i)
		}
		o.key.addr, _ = netip.AddrFromSlice(b)
		if o.key.login, err = d.string("login"); err != nil {
			return fmt.Errorf("owner %d: %w", i, err)
		}
		if NormalizeLogin(o.key.login) != o.key.login {
			return fmt.Errorf("owner %d: login %q is not normalised", i, o.key.login)
		}
		if o.attempts, err = d.number("unclaimed attempts"); err != nil {
			return fmt.Errorf("owner %d: %w", i, err)
		}
		if seen[o.key] {
			return fmt.Errorf("owner %d (%s, %q) is given twice", i, o.key.addr, o.key.login)
		}
		seen[o.key] = true
	}
	nSessions, err := d.count("sessions", t.max)
	if err != nil {
		return err
	}
	for i := range nSessions {
		id, err := d.string("id")
		if err != nil {
			return fmt.Errorf("session %d: %w", i, err)
		}
		if _, dup := t.byID[id]; dup {
			return fmt.Errorf("session %d: id %q is given twice", i, id)
		}
		oi, err := d.number("owner")
		if err != nil {
			return fmt.Errorf("session %d: %w", i, err)
		}
		if oi >= len(owners) {
			return fmt.Errorf("session %d: owner %d, but there are %d owners", i, oi, len(owners))
		}
		owners[oi].used = true
		// Oldest first: each add makes its session the newest, so the
		// ring, and the order sessions are forgotten in, is the saved one.
		s := t.add(id, owners[oi].key)
		if s.own, err = d.number("own"); err != nil {
			return fmt.Errorf("session %d: %w", i, err)
		}
		if s.absorb, err = d.number("absorb"); err != nil {
			return fmt.Errorf("session %d: %w", i, err)
		}
	}
	for i, o := range owners {
		if !o.used {
			return fmt.Errorf("owner %d (%s, %q) has no session", i, o.key.addr, o.key.login)
		}
		t.pending[o.key].attempts = o.attempts
	}
	return nil
}

// replace makes t hold what from holds (from is not used afterwards) and
// marks it saved.
func (t *sessionTable) replace(from *sessionTable) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID, t.pending = from.byID, from.pending
	if from.lru.next == &from.lru {
		t.lru.next, t.lru.prev = &t.lru, &t.lru
	} else {
		// Move the ring onto t's sentinel.
		t.lru.next, t.lru.prev = from.lru.next, from.lru.prev
		t.lru.next.prev, t.lru.prev.next = &t.lru, &t.lru
	}
	t.gen++
	t.saved = t.gen
}

// decoder reads a session record, front to back.
type decoder struct {
	data []byte
}

func (d *decoder) byte() (byte, bool) {
	if len(d.data) == 0 {
		return 0, false
	}
	b := d.data[0]
	d.data = d.data[1:]
	return b, true
}

func (d *decoder) take(n int) ([]byte, bool) {
	if n < 0 || n > len(d.data) {
		return nil, false
	}
	b := d.data[:n]
	d.data = d.data[n:]
	return b, true
}

func (d *decoder) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(d.data)
	switch {
	case n == 0:
		return 0, fmt.Errorf("%s: record ends", what)
	case n < 0:
		return 0, fmt.Errorf("%s: number too large", what)
	}
	d.data = d.data[n:]
	return v, nil
}

// number reads a count that must fit maxSessionCount.
func (d *decoder) number(what string) (int, error) {
	v, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if v > maxSessionCount {
		return 0, fmt.Errorf("%s: %d is out of range", what, v)
	}
	return int(v), nil
}

// count reads how many items follow, at most limit.
func (d *decoder) count(what string, limit int) (int, error) {
	v, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if v > uint64(limit) {
		return 0, fmt.Errorf("%d %s, at most %d fit", v, what, limit)
	}
	return int(v), nil
}

func (d *decoder) string(what string) (string, error) {
	n, err := d.uvarint(what)
	if err != nil {
		return "", err
	}
	if n > uint64(len(d.data)) {
		return "", fmt.Errorf("%s: %d bytes, but only %d are left", what, n, len(d.data))
	}
	b, _ := d.take(int(n))
	return string(b), nil
}
