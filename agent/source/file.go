package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for the zero values of FileConfig's durations and sizes.
const (
	DefaultPollInterval   = 250 * time.Millisecond
	DefaultRescanInterval = 10 * time.Second
	DefaultRotatedGrace   = 10 * time.Second
	DefaultMaxLineBytes   = 64 << 10
)

// FileConfig says which files a File source follows and how.
type FileConfig struct {
	Name  string   // source name (Line.Source)
	Paths []string // absolute paths or glob patterns (path/filepath.Match syntax)
	// StartAtEnd applies on the first sight, at start, of a file without a
	// saved cursor: read from its end (after its last complete line) instead of
	// its beginning. Files that appear later are always read from their
	// beginning, so that nothing written to a new log is missed.
	StartAtEnd bool
	// FollowNewest makes each glob pattern one stream (Cursor.Stream is the
	// pattern) that reads the pattern's matches one after another in name
	// order and stays on the last: for logs that start a new dated file
	// (stalwart.log.2026-01-10) instead of rotating one name. Without it,
	// every match is a stream of its own, followed at the same time.
	FollowNewest bool
	// Poll makes the follower stat files for growth instead of using inotify
	// (for file systems where inotify says nothing, such as NFS).
	Poll bool
	// PollInterval is how often each stream checks its path and file itself:
	// rotation, truncation, a path that appears, late writes to a rotated
	// file. nxadm/tail's own stat loop in Poll mode runs every 250ms whatever
	// this says. Zero means DefaultPollInterval.
	PollInterval time.Duration
	// RescanInterval is how often glob patterns are evaluated again for new
	// files. Zero means DefaultRescanInterval.
	RescanInterval time.Duration
	// RotatedGrace is how long a file that was rotated away is still read for
	// lines its writer adds before it reopens the path. Zero means
	// DefaultRotatedGrace.
	RotatedGrace time.Duration
	// MaxLineBytes cuts longer lines (the rest, up to the newline, is
	// dropped). Zero means DefaultMaxLineBytes.
	MaxLineBytes int
}

// withDefaults checks cfg and fills its zero values.
func (cfg FileConfig) withDefaults() (FileConfig, error) {
	if cfg.Name == "" {
		return cfg, errors.New("name is empty")
	}
	if len(cfg.Paths) == 0 {
		return cfg, errors.New("no paths")
	}
	for _, p := range cfg.Paths {
		if !filepath.IsAbs(p) {
			return cfg, fmt.Errorf("path %q is not absolute", p)
		}
		if _, err := filepath.Match(p, ""); err != nil {
			return cfg, fmt.Errorf("path %q: %w", p, err)
		}
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"poll interval", &cfg.PollInterval, DefaultPollInterval},
		{"rescan interval", &cfg.RescanInterval, DefaultRescanInterval},
		{"rotated grace", &cfg.RotatedGrace, DefaultRotatedGrace},
	}
	for _, d := range durations {
		switch {
		case *d.d < 0:
			return cfg, fmt.Errorf("%s %v is negative", d.name, *d.d)
		case *d.d == 0:
			*d.d = d.def
		}
	}
	switch {
	case cfg.MaxLineBytes < 0:
		return cfg, fmt.Errorf("max line bytes %d is negative", cfg.MaxLineBytes)
	case cfg.MaxLineBytes == 0:
		cfg.MaxLineBytes = DefaultMaxLineBytes
	}
	return cfg, nil
}

// File follows log files by path or glob: across rename rotation and
// copytruncate, and from a saved Cursor after a restart.
//
// Each path (each glob match) is one stream; Cursor.Stream is the path.
type File struct {
	cfg    FileConfig
	saved  map[string]position
	logger *slog.Logger
	poll   bool             // cfg.Poll, or inotify is unusable here
	now    func() time.Time // Line.Arrival, rotated files' grace; tests replace it

	ran atomic.Bool // Run was called

	mu      sync.Mutex
	streams map[string]*stream // by path, for Status
	held    map[fileID]string  // inodes a stream has open, and which stream
	known   map[fileID]knownEnd
}

// knownEnd is where this source stopped reading an inode it let go of; a
// glob that later matches the inode under another name resumes there.
type knownEnd struct {
	pos position
	at  time.Time
}

// maxKnown bounds the memory of inodes let go of.
const maxKnown = 1024

// NewFile checks cfg and makes a File source. saved maps Cursor.Stream to
// Cursor.Value as last delivered (and processed) in an earlier run; an entry
// that cannot be decoded is an error wrapping ErrBadCursor.
func NewFile(cfg FileConfig, saved map[string][]byte, logger *slog.Logger) (*File, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("configure file source %q: %w", cfg.Name, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("source", cfg.Name)
	if err := checkProcFD(); err != nil {
		return nil, fmt.Errorf("configure file source %q: %w", cfg.Name, err)
	}
	f := &File{
		cfg:     cfg,
		saved:   make(map[string]position, len(saved)),
		logger:  logger,
		poll:    cfg.Poll,
		now:     time.Now,
		streams: make(map[string]*stream),
		held:    make(map[fileID]string),
		known:   make(map[fileID]knownEnd),
	}
	for stream, value := range saved {
		if value == nil {
			continue
		}
		p, err := decodeCursor(value)
		if err != nil {
			return nil, fmt.Errorf("configure file source %q: saved cursor of %s: %w", cfg.Name, stream, err)
		}
		f.saved[stream] = p
	}
	if !f.poll {
		if err := canUseInotify(); err != nil {
			logger.Warn("inotify unusable; polling files instead", "err", err)
			f.poll = true
		}
	}
	return f, nil
}

// Name is the source's configured name.
func (f *File) Name() string { return f.cfg.Name }

// Run follows the configured files until ctx is done, sending every line, in
// order per stream, to out. It returns nil when ctx is done; paths that do not
// exist yet or cannot be read are logged and waited for, not errors. Run may
// be called once: a later run needs a new File with the cursors delivered.
func (f *File) Run(ctx context.Context, out chan<- Line) error {
	// The saved cursors describe the state before the first Run only.
	if !f.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("run file source %q: Run called twice", f.cfg.Name)
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	active := make(map[string]bool)
	ended := make(chan string)
	start := func(path string, fromGlob, initial bool) {
		active[path] = true
		s := f.newStream(path, fromGlob, initial, out)
		wg.Go(func() {
			s.run(ctx)
			f.mu.Lock()
			delete(f.streams, path)
			f.mu.Unlock()
			select {
			case ended <- path:
			case <-ctx.Done():
			}
		})
	}

	globs := f.discover(true, active, start)
	var rescan <-chan time.Time
	if globs {
		t := time.NewTicker(f.cfg.RescanInterval)
		defer t.Stop()
		rescan = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case path := <-ended:
			delete(active, path)
		case <-rescan:
			f.discover(false, active, start)
		}
	}
}

// discover starts a stream for each configured path and glob match that has
// none. It reports whether any pattern is a glob (and needs rescanning).
func (f *File) discover(initial bool, active map[string]bool, start func(path string, fromGlob, initial bool)) bool {
	globs := false
	for _, p := range f.cfg.Paths {
		if !isGlob(p) {
			if !active[p] {
				start(p, false, initial)
			}
			continue
		}
		globs = true
		if f.cfg.FollowNewest {
			if !active[p] {
				start(p, false, initial)
			}
			continue
		}
		matches, err := filepath.Glob(p)
		if err != nil { // only ErrBadPattern, which withDefaults ruled out
			f.logger.Error("evaluate glob", "pattern", p, "err", err)
			continue
		}
		sort.Strings(matches)
		if initial && len(matches) == 0 {
			f.logger.Info("no file matches the pattern yet", "pattern", p)
		}
		for _, m := range matches {
			if active[m] || isCompressed(m) {
				continue
			}
			fi, err := os.Stat(m)
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if id, ok := fileIDOf(fi); ok {
				f.mu.Lock()
				holder, isHeld := f.held[id]
				f.mu.Unlock()
				if isHeld {
					// A file another stream still reads, under its old name
					// (mail.log.1 matched by mail.log*): once that stream lets
					// go of it, a rescan resumes it where that stream stopped.
					f.logger.Debug("glob match is being read as another path", "path", m, "as", holder)
					continue
				}
			}
			start(m, true, initial)
		}
	}
	return globs
}

func isGlob(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// hold records that the stream of path has inode id open.
func (f *File) hold(id fileID, path string) {
	f.mu.Lock()
	f.held[id] = path
	f.mu.Unlock()
}

// release records that the stream of path closed inode id after reading it
// up to end.
func (f *File) release(id fileID, path string, end position) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held[id] == path {
		delete(f.held, id)
	}
	if len(f.known) >= maxKnown {
		var oldest fileID
		var oldestAt time.Time
		for k, v := range f.known {
			if oldestAt.IsZero() || v.at.Before(oldestAt) {
				oldest, oldestAt = k, v.at
			}
		}
		delete(f.known, oldest)
	}
	f.known[id] = knownEnd{pos: end, at: f.now()}
}

// takeKnown returns and forgets where this source stopped reading inode id.
func (f *File) takeKnown(id fileID) (position, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.known[id]
	delete(f.known, id)
	return k.pos, ok
}

// heldByOther reports which other stream has inode id open, if any.
func (f *File) heldByOther(id fileID, path string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	holder, ok := f.held[id]
	return holder, ok && holder != path
}

// StreamStatus is what a stream of a File source is doing, for operators.
type StreamStatus struct {
	Stream      string    // Cursor.Stream: the path
	State       string    // "waiting", "following", "detached" (path gone, old file still read), "error"
	Mode        string    // "inotify" or "poll"
	Offset      int64     // in the current file, after the last line delivered
	Size        int64     // of the current file at the last check
	LastRead    time.Time // when the last line was delivered; zero if none yet
	Lines       uint64    // lines delivered
	Rotations   uint64    // times the path changed to another file
	Truncations uint64    // times the current file shrank or was rewritten
	CutLines    uint64    // lines longer than MaxLineBytes, delivered cut
	Rotated     int       // files rotated away, still read for late lines
	Errors      uint64    // problems met (open, stat, read, the follower)
	LastError   string    // the latest problem; "" once resolved
	Restarts    uint64    // times the follower delivered nothing while lines waited, and was started again (see startcheck.go)

	follower string // the name nxadm/tail follows, for tests
	watching bool   // the follower is past its start-up check, for tests
	checked  bool   // the path was looked at at least once, for tests
}

// Status reports each stream's state, sorted by path.
func (f *File) Status() []StreamStatus {
	f.mu.Lock()
	streams := make([]*stream, 0, len(f.streams))
	for _, s := range f.streams {
		streams = append(streams, s)
	}
	f.mu.Unlock()
	out := make([]StreamStatus, 0, len(streams))
	for _, s := range streams {
		out = append(out, s.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
	return out
}
