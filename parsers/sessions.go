package parsers

import (
	"net/netip"
	"strings"
	"sync"
)

// maxSessions bounds the sessions a format remembers at once. A session is
// forgotten when this many newer ones have been seen; Dovecot's login
// process logs a session's summary when the connection closes, normally
// seconds after its attempts.
const maxSessions = 4096

// sessionTable lets a server that logs one attempt on several lines count
// it once (one attempt, one count). Some lines report single attempts of a
// session (Dovecot's auth process with auth_verbose=yes: one line per
// attempt, naming its login); another reports the session's total (the
// login process's "auth failed, N attempts" when the connection closes).
//
//   - An attempt line counts its attempt, unless a summary of its session
//     already counted it (a summary can come first: sendmail).
//   - A summary of N attempts counts only those its session's attempt lines
//     did not: N minus what they counted, nothing when that is N or more. A
//     line read twice counts twice, as any other line does.
//   - A summary whose session was never seen (or that names none) takes
//     over, as its own, attempts that attempt lines of the same address and
//     login counted and that no summary has claimed yet. Real servers name
//     the same session in both lines; this keeps the count exact where the
//     ids do not match (gen-maillog.py writes unrelated ids), and never
//     moves a count from one address to another.
//
// The table holds maxSessions sessions; a forgotten session's summary counts
// all its attempts again (counting twice, never missing one). It is safe for
// concurrent use. It is saved with the read positions and handed to the
// parser a reload compiles (sessions_persist.go), so that neither a restart
// nor a reload between a session's lines counts its attempts twice.
type sessionTable struct {
	mu      sync.Mutex
	max     int
	byID    map[string]*session
	lru     session // sentinel of a ring: lru.next is the newest session
	pending map[ownerKey]*pendingCount
	gen     uint64 // changes so far: every attempt and summary is one
	saved   uint64 // gen when the table was last encoded (sessions_persist.go)
}

// session is what the table remembers of one session.
type session struct {
	id         string
	owner      ownerKey // address and login of its first line
	own        int      // attempts its attempt lines counted that no summary has claimed
	absorb     int      // attempts a summary counted ahead of its attempt lines
	prev, next *session
}

// ownerKey groups sessions for summaries that do not find their own.
type ownerKey struct {
	addr  netip.Addr
	login string
}

// pendingCount is, for one owner, the attempts counted by attempt lines and
// not yet claimed by a summary, and how many remembered sessions it has.
type pendingCount struct {
	attempts int
	sessions int
}

func newSessionTable(max int) *sessionTable {
	t := &sessionTable{max: max, byID: make(map[string]*session), pending: make(map[ownerKey]*pendingCount)}
	t.lru.next, t.lru.prev = &t.lru, &t.lru
	return t
}

// sessionOutcome says what the table made of a line, for Explain.
type sessionOutcome struct {
	counted int  // attempts this line counts
	before  int  // attempts other lines had counted that this line accounts for
	known   bool // the session had been seen before
}

// attempt records n attempts of session id from addr as login and returns
// how many of them count.
func (t *sessionTable) attempt(id string, addr netip.Addr, login string, n int) sessionOutcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	s, known := t.byID[id]
	if known {
		t.touch(s)
	} else {
		s = t.add(id, ownerKey{addr, login})
	}
	out := sessionOutcome{known: known}
	absorbed := min(s.absorb, n)
	s.absorb -= absorbed
	out.before = absorbed
	out.counted = n - absorbed
	if out.counted > 0 {
		s.own += out.counted
		t.pending[s.owner].attempts += out.counted
	}
	return out
}

// summary records that session id (none when hasID is false) of addr as
// login had n attempts in all and returns how many of them count.
func (t *sessionTable) summary(id string, hasID bool, addr netip.Addr, login string, n int) sessionOutcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	var s *session
	if hasID {
		s = t.byID[id]
	}
	var out sessionOutcome
	if s != nil {
		// Its own attempt lines, as far as no summary of another session
		// has claimed them for itself.
		out.known = true
		p := t.pending[s.owner]
		take := min(s.own, p.attempts)
		p.attempts -= take
		s.own = 0
		out.before = min(take, n)
		t.touch(s)
	} else {
		owner := ownerKey{addr, login}
		if p := t.pending[owner]; p != nil {
			out.before = min(p.attempts, n)
			p.attempts -= out.before
		}
		if hasID {
			s = t.add(id, owner)
		}
	}
	out.counted = n - out.before
	if s != nil {
		// Attempt lines of this session that come later were counted now.
		s.absorb += out.counted
	}
	return out
}

// add remembers a new session, forgetting the oldest when the table is full.
func (t *sessionTable) add(id string, owner ownerKey) *session {
	if len(t.byID) >= t.max {
		t.forget(t.lru.prev)
	}
	s := &session{id: strings.Clone(id), owner: ownerKey{owner.addr, strings.Clone(owner.login)}}
	t.byID[s.id] = s
	p := t.pending[s.owner]
	if p == nil {
		p = &pendingCount{}
		t.pending[s.owner] = p
	}
	p.sessions++
	s.next, s.prev = t.lru.next, &t.lru
	t.lru.next.prev = s
	t.lru.next = s
	return s
}

func (t *sessionTable) forget(s *session) {
	s.prev.next, s.next.prev = s.next, s.prev
	delete(t.byID, s.id)
	if p := t.pending[s.owner]; p != nil {
		if p.sessions--; p.sessions <= 0 {
			delete(t.pending, s.owner)
		}
	}
}

// touch makes a remembered session the newest.
func (t *sessionTable) touch(s *session) {
	if t.lru.next == s {
		return
	}
	s.prev.next, s.next.prev = s.next, s.prev
	s.next, s.prev = t.lru.next, &t.lru
	t.lru.next.prev = s
	t.lru.next = s
}
