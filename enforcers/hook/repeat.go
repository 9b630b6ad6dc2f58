package hook

import (
	"sync"
	"time"
)

// maxRepeatEntries bounds the memory of repeated passwords: about 100
// bytes an entry. When full, the oldest entries go first; the worst that
// can happen then is that a stale password is counted twice in a window.
const maxRepeatEntries = 1 << 16

// repeatFilter remembers which (address, login, password hash) failures
// were counted recently, so that a device retrying one stale password
// counts once per window instead of locking its owner out.
type repeatFilter struct {
	mu    sync.Mutex
	seen  map[string]int64 // key → when it was counted (Unix ns)
	order []repeatEntry    // insertion order, oldest first, from head
	head  int
	max   int
}

type repeatEntry struct {
	key string
	at  int64
}

func newRepeatFilter(max int) *repeatFilter {
	return &repeatFilter{seen: map[string]int64{}, max: max}
}

// first reports whether key should be counted at now: it was not counted
// within window before. When it should, it is remembered from now.
func (f *repeatFilter) first(key string, now time.Time, window time.Duration) bool {
	t := now.UnixNano()
	f.mu.Lock()
	defer f.mu.Unlock()
	// Forget what has aged out, and the oldest beyond the cap.
	for f.head < len(f.order) {
		e := f.order[f.head]
		if t-e.at < int64(window) && len(f.order)-f.head < f.max {
			break
		}
		if f.seen[e.key] == e.at {
			delete(f.seen, e.key)
		}
		f.order[f.head] = repeatEntry{}
		f.head++
	}
	if f.head > len(f.order)/2 && f.head > 64 {
		f.order = append(f.order[:0], f.order[f.head:]...)
		f.head = 0
	}
	if at, ok := f.seen[key]; ok && t-at < int64(window) && t >= at {
		return false
	}
	f.seen[key] = t
	f.order = append(f.order, repeatEntry{key: key, at: t})
	return true
}
