package hook

import (
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailban/mailban/rules"
)

// A WATCH stream is JSON lines, one object per decision:
//
//	{"action":"ban","prefix":"203.0.113.7/32","until":"2026-11-25T11:00:03Z","reason":"..."}
//	{"action":"ban","prefix":"2001:db8::/64","permanent":true,"reason":"..."}
//	{"action":"block","prefix":"198.51.100.0/24","reason":"..."}
//	{"action":"lock","login":"alice@example.test","until":"...","reason":"..."}
//	{"action":"unban","prefix":"203.0.113.7/32"}   (also unblock, unlock)
//
// It begins with everything in force, then {"action":"synced","count":N},
// then each change as the rules decide it. A change may repeat what the
// list already said (a ban decided while the list was being written);
// applying a line twice is harmless. A client that falls behind gets
// {"action":"overflow"} and the stream ends: reconnect and start over.
// Clients should ignore actions and fields they do not know.

// watchLine is one line of a WATCH stream.
type watchLine struct {
	Action    string     `json:"action"`
	Prefix    string     `json:"prefix,omitempty"`
	Login     string     `json:"login,omitempty"`
	Until     *time.Time `json:"until,omitempty"`
	Permanent bool       `json:"permanent,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	Count     *int       `json:"count,omitempty"`
}

func appendDecision(buf []byte, d *rules.Decision) []byte {
	l := watchLine{Action: d.Action.String(), Reason: d.Reason}
	if d.Prefix.IsValid() {
		l.Prefix = d.Prefix.String()
	}
	l.Login = d.Login
	switch d.Action {
	case rules.Ban, rules.Lock:
		if d.Until.IsZero() {
			l.Permanent = true
		} else {
			u := d.Until.UTC()
			l.Until = &u
		}
	case rules.Unban, rules.Unblock, rules.Unlock:
		l.Reason = ""
	}
	b, err := json.Marshal(l)
	if err != nil { // a watchLine always marshals; keep the stream whole regardless
		return buf
	}
	buf = append(buf, b...)
	return append(buf, '\n')
}

// hub fans batches of decisions out to WATCH subscribers without ever
// making the publisher wait.
type hub struct {
	m    *metrics
	mu   sync.Mutex
	subs map[*watcher]struct{}
	n    atomic.Int32
}

type watcher struct {
	ch   chan []byte   // encoded batches
	gone chan struct{} // closed when dropped for falling behind
}

func newHub(m *metrics) *hub {
	return &hub{m: m, subs: map[*watcher]struct{}{}}
}

func (h *hub) subscribe(queue int) *watcher {
	w := &watcher{ch: make(chan []byte, queue), gone: make(chan struct{})}
	h.mu.Lock()
	h.subs[w] = struct{}{}
	h.n.Add(1)
	h.mu.Unlock()
	h.m.watchers.Inc()
	return w
}

func (h *hub) unsubscribe(w *watcher) {
	h.mu.Lock()
	if _, ok := h.subs[w]; ok {
		delete(h.subs, w)
		h.n.Add(-1)
	}
	h.mu.Unlock()
	h.m.watchers.Dec()
}

// publish encodes a batch once and queues it for every subscriber; a
// subscriber whose queue is full is dropped.
func (h *hub) publish(batch []rules.Decision) {
	if h.n.Load() == 0 || len(batch) == 0 {
		return
	}
	var data []byte
	for i := range batch {
		data = appendDecision(data, &batch[i])
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.subs {
		select {
		case w.ch <- data:
		default:
			delete(h.subs, w)
			h.n.Add(-1)
			close(w.gone)
			h.m.watchDrops.Inc()
		}
	}
}

// watch turns a native connection into a WATCH stream until the client
// closes it, falls behind, or the server closes.
func (s *Server) watch(lc *lineConn) {
	w := s.hub.subscribe(lc.lim.WatchQueue)
	defer s.hub.unsubscribe(w)
	// Subscribed first, listed second: a change decided in between is in
	// the list, in the stream, or both, never in neither.
	active := s.deps.Checker.Active()
	var buf []byte
	for i := range active {
		buf = appendDecision(buf, &active[i])
		if len(buf) >= 64<<10 {
			if _, err := lc.w.Write(buf); err != nil {
				return
			}
			buf = buf[:0]
		}
	}
	n := len(active)
	synced, _ := json.Marshal(watchLine{Action: "synced", Count: &n})
	buf = append(append(buf, synced...), '\n')
	if _, err := lc.w.Write(buf); err != nil || lc.flush() != nil {
		return
	}

	// The client has nothing more to say; reading only notices it leave.
	lc.SetReadDeadline(time.Time{})
	left := make(chan struct{})
	s.wg.Go(func() {
		io.Copy(io.Discard, lc.r)
		close(left)
	})
	for {
		select {
		case data := <-w.ch:
			if _, err := lc.w.Write(data); err != nil || lc.flush() != nil {
				return
			}
		case <-w.gone:
			lc.w.WriteString(`{"action":"overflow"}` + "\n")
			lc.flush()
			return
		case <-left:
			return
		case <-s.ctx.Done():
			return
		}
	}
}
