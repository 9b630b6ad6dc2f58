package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nxadm/tail"
)

// Stream states, as StreamStatus.State reports them.
const (
	stateWaiting   = "waiting"   // the path does not exist (yet)
	stateFollowing = "following" // the path's file is being read
	stateDetached  = "detached"  // the path is gone; its last file is still read
	stateError     = "error"     // the path cannot be read
)

// errNotRegular is why a path that names a directory, a device or a socket
// is not followed.
var errNotRegular = errors.New("not a regular file")

// stream follows one path: the file that has that name now, the file that had
// it before (until it is drained and its grace has passed), and, once, the
// content a saved cursor points into. Only its own goroutine touches it, but
// for st.
type stream struct {
	src        *File
	path       string
	log        *slog.Logger
	out        chan<- Line
	saved      *position // the saved cursor, until the path is first opened
	searched   bool      // saved was looked for among rotated files
	startAtEnd bool      // first sight at start: begin after the last complete line
	fromGlob   bool      // found by a glob: ends when the path is gone
	newest     bool      // path is a pattern whose matches are read one after another (newest.go)
	target     string    // the file the last check found to read: path, or a match of the pattern
	after      string    // newest: the name of the last file opened
	gone       bool      // the last check found no file to read
	poll       bool
	stalled    bool // the watchdog restarted an inotify follower once
	lr         *lineReader
	scratch    [fingerprintSize]byte

	cur     *tracked   // the path's file, or its last one while detached
	retired []*tracked // rotated away: read for late lines until their grace ends

	startTimer *time.Timer // the start-up check's next look (startcheck.go)
	startArmed bool

	problemLogged string // the problem last logged, so that each is logged once
	waitLogged    bool
	cutLogged     bool

	mu sync.Mutex // guards st
	st StreamStatus
}

// tracked is one open file of a stream.
type tracked struct {
	f    *os.File
	name string // the name it was opened under
	id   fileID
	fp   fingerprint // of the first min(pos, fingerprintSize) bytes
	head []byte      // the bytes fp was taken from, when known
	pos  int64       // after the last line delivered from this file
	size int64       // at the last check
	tl   *tailer     // nil when not followed (detached, retired, or to be restarted)

	late       bool      // rotated away: its lines must not move the saved position
	until      time.Time // rotated away: when to stop reading it
	detachedAt time.Time // the path stopped naming it while it was current

	// The watchdog: a complete line unread since pendingSince (real time),
	// while the follower delivered nothing, means the follower is stuck.
	fromTail        uint64
	fromTailAtCheck uint64
	pendingSince    time.Time

	start startCheck // of tl, while it may have missed a write as it started
}

// sameContent reports whether c's file still starts with the bytes its
// fingerprint was taken from: false once it was truncated, or truncated and
// written again past where we read. scratch holds fingerprintSize bytes.
func (c *tracked) sameContent(scratch []byte) (bool, error) {
	if c.fp.n == 0 {
		return true, nil
	}
	if len(c.head) != c.fp.n {
		return c.fp.check(c.f)
	}
	got, err := c.f.ReadAt(scratch[:c.fp.n], 0)
	if got < c.fp.n {
		if err == nil || errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	return bytes.Equal(scratch[:got], c.head), nil
}

// growHead makes the fingerprint cover the first min(pos, fingerprintSize)
// bytes, provided the file still starts with the bytes it covers: new content
// written in place must not lend its bytes to the old content's fingerprint.
func (c *tracked) growHead() {
	n := int(min(c.pos, fingerprintSize))
	if n <= c.fp.n {
		return
	}
	buf := make([]byte, n)
	if got, _ := c.f.ReadAt(buf, 0); got < n {
		return
	}
	known := buf[:c.fp.n]
	if len(c.head) == c.fp.n && !bytes.Equal(known, c.head) || len(c.head) != c.fp.n && fingerprintOf(known) != c.fp {
		return
	}
	c.head, c.fp = buf, fingerprintOf(buf)
}

// resetHead is for content that starts again at 0.
func (c *tracked) resetHead() {
	c.head, c.fp = nil, fingerprintOf(nil)
}

func (f *File) newStream(path string, fromGlob, initial bool, out chan<- Line) *stream {
	s := &stream{
		src:        f,
		path:       path,
		log:        f.logger.With("path", path),
		out:        out,
		startAtEnd: initial && f.cfg.StartAtEnd,
		fromGlob:   fromGlob,
		newest:     f.cfg.FollowNewest && isGlob(path),
		target:     path,
		poll:       f.poll,
		lr:         newLineReader(f.cfg.MaxLineBytes),
	}
	if p, ok := f.saved[path]; ok {
		s.saved = &p
	}
	s.st = StreamStatus{Stream: path, State: stateWaiting, Mode: modeName(s.poll)}
	f.mu.Lock()
	f.streams[path] = s
	f.mu.Unlock()
	return s
}

func modeName(poll bool) string {
	if poll {
		return "poll"
	}
	return "inotify"
}

// run follows the path until ctx is done or, for a glob match, the path is
// gone and nothing of it is left to read. Every error other than ctx's is
// handled (logged, reported in Status) where it occurs.
func (s *stream) run(ctx context.Context) {
	defer s.closeAll()
	defer s.stopStartTimer()
	t := time.NewTicker(s.src.cfg.PollInterval)
	defer t.Stop()
	if s.check(ctx) != nil || s.finished() {
		return
	}
	for {
		var lines <-chan *tail.Line
		if s.cur != nil && s.cur.tl != nil {
			lines = s.cur.tl.lines()
		}
		var err error
		select {
		case <-ctx.Done():
			return
		case l, ok := <-lines:
			if ok {
				err = s.fromTail(ctx, l)
			} else {
				err = s.tailEnded(ctx)
			}
		case <-t.C:
			err = s.check(ctx)
		case <-s.startTimerC():
			s.checkStart()
		}
		if err != nil || s.finished() {
			return
		}
	}
}

func (s *stream) finished() bool {
	return s.fromGlob && s.gone && s.cur == nil && len(s.retired) == 0
}

// check looks at the path and the open files, and acts on what changed:
// a path that appeared, a rotation, a truncation, a stuck follower, late lines
// in rotated files. It returns an error only when ctx is done.
func (s *stream) check(ctx context.Context) error {
	var id fileID
	var perr error
	if s.newest {
		s.target, id, perr = s.nextMatch()
	} else {
		id, perr = statPath(s.path)
		if s.cur == nil && perr != nil && errors.Is(perr, fs.ErrNotExist) {
			s.adoptSaved()
		}
	}
	var err error
	switch c := s.cur; {
	case c == nil:
		s.gone = perr != nil
		if perr != nil {
			// StartAtEnd is for files there at start; one that
			// appears later is new, and read from its beginning.
			s.startAtEnd = false
			s.unavailable(perr)
		} else {
			err = s.open(ctx)
		}
	case perr == nil && id == c.id:
		err = s.followCurrent(ctx, c)
	default:
		err = s.leave(ctx, c, id, perr)
	}
	if err != nil {
		return err
	}
	s.update(func(st *StreamStatus) { st.checked = true })
	return s.readRetired(ctx)
}

// statPath returns the identity of the regular file path names.
func statPath(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	if !fi.Mode().IsRegular() {
		return fileID{}, fmt.Errorf("%s: %w (%s)", path, errNotRegular, describeType(fi.Mode()))
	}
	id, ok := fileIDOf(fi)
	if !ok {
		return fileID{}, fmt.Errorf("%s: no device and inode", path)
	}
	return id, nil
}

// describeType names what a path that is not a regular file is.
func describeType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "type " + m.Type().String()
	}
}

// unavailable reports a path that cannot be opened: logged once while the
// cause stays the same.
func (s *stream) unavailable(err error) {
	if errors.Is(err, fs.ErrNotExist) {
		if !s.waitLogged && !s.fromGlob {
			if s.newest {
				s.log.Info("waiting for a file to match the pattern")
			} else {
				s.log.Info("waiting for the file to appear")
			}
			s.waitLogged = true
		}
		s.update(func(st *StreamStatus) { st.State = stateWaiting; st.Offset, st.Size = 0, 0 })
		return
	}
	s.problem("open file", err)
}

// adoptSaved handles a saved cursor whose path is gone: the file it points
// into may have been renamed while mailban was stopped, and is read as the
// stream's detached file until a new file takes the path.
func (s *stream) adoptSaved() {
	if s.saved == nil || s.searched {
		return
	}
	s.searched = true
	sv := *s.saved
	rf, err := findRotated(s.path, sv, fileID{})
	if err != nil {
		s.problem("look for rotated file", err)
		return
	}
	if rf == nil || rf.how != "renamed" {
		if rf != nil {
			rf.f.Close()
		}
		return
	}
	s.saved = nil
	s.log.Info("path gone; resuming in the file it was renamed to", "file", rf.name, "offset", sv.off)
	s.cur = &tracked{f: rf.f, name: rf.name, id: rf.id, fp: sv.fp, pos: sv.off}
	s.src.hold(rf.id, s.path)
}

// open makes the path's file the stream's current file and starts following
// it from where the cursor, the start rules or an earlier reading say.
func (s *stream) open(ctx context.Context) error {
	f, err := os.Open(s.target)
	if err != nil {
		s.gone = true
		s.unavailable(err)
		return nil
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: %w (%s)", s.target, errNotRegular, describeType(fi.Mode()))
	}
	var id fileID
	if err == nil {
		var ok bool
		if id, ok = fileIDOf(fi); !ok {
			err = fmt.Errorf("%s: no device and inode", s.target)
		}
	}
	if err != nil {
		f.Close()
		s.gone = true
		s.problem("open file", err)
		return nil
	}
	if holder, other := s.src.heldByOther(id, s.path); other && s.fromGlob {
		f.Close()
		s.gone = true
		s.log.Debug("file is being read as another path", "as", holder)
		return nil
	}
	s.gone = false
	s.waitLogged = false
	s.clearProblem()
	c := &tracked{f: f, name: s.target, id: id, size: fi.Size()}
	s.after = s.target
	s.src.hold(id, s.path)
	atEnd := s.startAtEnd
	s.startAtEnd = false
	pos, err := s.startPosition(ctx, c, atEnd)
	if err != nil {
		s.closeTracked(c)
		return err
	}
	c.pos = pos
	c.resetHead()
	c.growHead()
	s.cur = c
	s.update(func(st *StreamStatus) {
		st.State, st.Offset, st.Size = stateFollowing, c.pos, c.size
	})
	s.startTail(c)
	return nil
}

// startPosition says where reading of c, the path's file just opened, begins.
// When a saved cursor points into a rotated file, that file is read first.
func (s *stream) startPosition(ctx context.Context, c *tracked, atEnd bool) (int64, error) {
	if s.saved != nil {
		sv := *s.saved
		s.saved = nil
		if sv.id == c.id && c.size >= sv.off && sv.fp.matches(c.f) {
			s.log.Info("resuming at the saved position", "offset", sv.off)
			return sv.off, nil
		}
		var rf *rotatedFile
		var err error
		if !s.newest { // nextMatch looked for the saved file among the matches
			rf, err = findRotated(s.path, sv, c.id)
		}
		if err != nil {
			s.problem("look for rotated file", err)
		}
		if rf == nil {
			s.log.Warn("the file changed while stopped and no rotated file holds the saved position; reading it from its beginning, lines may be missing",
				"saved_offset", sv.off)
			return 0, nil
		}
		s.log.Info("the file was rotated while stopped; reading the rest of the old one first",
			"old", rf.name, "how", rf.how, "offset", sv.off)
		s.update(func(st *StreamStatus) { st.Rotations++ })
		old := &tracked{f: rf.f, name: rf.name, id: rf.id, fp: sv.fp, pos: sv.off}
		s.src.hold(old.id, s.path)
		if rf.how == "renamed" {
			// Its writer may not have reopened the path yet: read it now,
			// then for late lines during the grace period.
			if err := s.drain(ctx, old, false); err != nil {
				s.closeTracked(old)
				return 0, err
			}
			s.retire(old)
			return 0, nil
		}
		// A copy does not grow: read all of it, the unfinished last line too.
		err = s.drain(ctx, old, true)
		s.closeTracked(old)
		return 0, err
	}
	if k, ok := s.src.takeKnown(c.id); ok && c.size >= k.off && k.fp.matches(c.f) {
		s.log.Debug("resuming where this file was left under another name", "offset", k.off)
		return k.off, nil
	}
	if atEnd {
		return endOfLines(c.f, c.size)
	}
	return 0, nil
}

// endOfLines returns the offset after the last newline among the last
// readChunk bytes of f (size long), so that a line being written when reading
// starts at the end is delivered whole. Without a newline there, a file that
// short is read from 0, a longer one from its end.
func endOfLines(f io.ReaderAt, size int64) (int64, error) {
	from := max(0, size-readChunk)
	buf := make([]byte, size-from)
	if _, err := f.ReadAt(buf, from); err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("read end of file: %w", err)
	}
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		return from + int64(i) + 1, nil
	}
	if from == 0 {
		return 0, nil
	}
	return size, nil
}

// followCurrent checks the current file while the path still names it.
func (s *stream) followCurrent(ctx context.Context, c *tracked) error {
	c.detachedAt = time.Time{}
	fi, err := c.f.Stat()
	if err != nil {
		s.problem("stat file", err)
		return nil
	}
	size := fi.Size()
	same, err := c.sameContent(s.scratch[:])
	if err != nil {
		s.problem("read file", err)
		return nil
	}
	if size < c.pos || !same {
		err := s.truncated(ctx, c, true)
		c.size = size
		return err
	}
	c.size = size
	s.update(func(st *StreamStatus) { st.State, st.Size = stateFollowing, size })
	if c.tl == nil {
		s.startTail(c)
		return nil
	}
	s.watchdog(c)
	return nil
}

// stallAfter is how long a complete line may wait while the follower
// delivers nothing before the follower is restarted. nxadm/tail keeps one
// process-wide inotify table keyed by name, where a watch can be lost (a
// descriptor number reused before the old watch is removed; two sources on
// one inode): the watchdog makes such a loss a delay, not a stop. The first
// stall of an inotify follower restarts it (stop waits until the old entry
// is gone, so the new follower gets a watch of its own); a second one means
// the loss is likely to recur, and the stream polls from then on. In Poll
// mode the library looks every 250ms, well within the minimum.
func (s *stream) stallAfter() time.Duration {
	return max(4*s.src.cfg.PollInterval, time.Second)
}

func (s *stream) watchdog(c *tracked) {
	progressed := c.fromTail != c.fromTailAtCheck
	c.fromTailAtCheck = c.fromTail
	if c.size <= c.pos {
		c.pendingSince = time.Time{}
		return
	}
	complete, err := hasNewline(c.f, c.pos, min(c.size-c.pos, int64(s.src.cfg.MaxLineBytes)+1))
	if err != nil || !complete {
		c.pendingSince = time.Time{}
		return
	}
	if progressed || c.pendingSince.IsZero() {
		c.pendingSince = time.Now()
		return
	}
	if waited := time.Since(c.pendingSince); waited >= s.stallAfter() {
		s.stopTail(c)
		s.update(func(st *StreamStatus) { st.Restarts++ })
		switch {
		case s.poll:
			s.log.Warn("follower delivered nothing while lines waited; restarting it", "offset", c.pos, "waited", waited)
		case !s.stalled:
			s.stalled = true
			s.log.Warn("follower delivered nothing while lines waited; restarting it, and polling should it stall again",
				"offset", c.pos, "waited", waited)
		default:
			// Polling does not use the library's inotify table.
			s.log.Warn("follower delivered nothing while lines waited, again; polling this file from now on", "offset", c.pos, "waited", waited)
			s.poll = true
			s.update(func(st *StreamStatus) { st.Mode = modeName(true) })
		}
		s.startTail(c)
	}
}

// hasNewline reports whether the n bytes of r at off hold a newline.
func hasNewline(r io.ReaderAt, off, n int64) (bool, error) {
	var buf [4096]byte
	for n > 0 {
		b := buf[:min(n, int64(len(buf)))]
		got, err := r.ReadAt(b, off)
		if bytes.IndexByte(b[:got], '\n') >= 0 {
			return true, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return false, nil
			}
			return false, err
		}
		off += int64(got)
		n -= int64(got)
	}
	return false, nil
}

// truncated handles c shrinking or being rewritten in place (copytruncate,
// or `> file`): lines after the last delivered one that the truncation took
// away are read from the copy if there is one, and c is read again from 0.
// restart says whether the follower must be restarted (it has not noticed,
// or noticed differently).
func (s *stream) truncated(ctx context.Context, c *tracked, restart bool) error {
	oldPos, oldFP, lastSize := c.pos, c.fp, c.size
	if restart {
		s.stopTail(c)
	}
	s.update(func(st *StreamStatus) { st.Truncations++ })
	c.pos, c.pendingSince = 0, time.Time{}
	c.resetHead()
	siblingsOf := s.path
	if s.newest {
		siblingsOf = c.name
	}
	rf, err := findRotated(siblingsOf, position{id: c.id, fp: oldFP, off: oldPos}, c.id)
	if err != nil {
		s.problem("look for the copy of a truncated file", err)
	}
	switch {
	case rf != nil:
		s.log.Info("file truncated; reading the lines it lost from its copy", "copy", rf.name, "offset", oldPos)
		cp := &tracked{f: rf.f, name: rf.name, id: rf.id, fp: oldFP, pos: oldPos}
		s.src.hold(cp.id, s.path)
		err := s.drain(ctx, cp, true)
		s.closeTracked(cp)
		if err != nil {
			return err
		}
	case lastSize > oldPos:
		s.log.Warn("file truncated before it was read to its end, and no copy found; lines may be missing",
			"unread_bytes", lastSize-oldPos)
	default:
		s.log.Info("file truncated; reading it from its beginning")
	}
	if restart {
		s.startTail(c)
	}
	return nil
}

// leave handles the path no longer naming the current file c: it was renamed
// or removed (perr is set), or another file took its name (id). c is read to
// its end first; if no file took its place yet, c goes on being read while
// the writer may still use it.
func (s *stream) leave(ctx context.Context, c *tracked, id fileID, perr error) error {
	s.stopTail(c)
	if err := s.drain(ctx, c, false); err != nil {
		return err
	}
	if perr != nil {
		now := s.src.now()
		if c.detachedAt.IsZero() {
			c.detachedAt = now
			s.log.Info("path gone; still reading the file it named", "offset", c.pos)
			if !errors.Is(perr, fs.ErrNotExist) {
				s.problem("stat path", perr)
			}
			s.update(func(st *StreamStatus) { st.State = stateDetached })
			return nil
		}
		if now.Before(c.detachedAt.Add(s.src.cfg.RotatedGrace)) {
			return nil
		}
		s.log.Info("path still gone after the grace period; done with the file it named", "offset", c.pos)
		err := s.drain(ctx, c, true)
		s.closeTracked(c)
		s.cur = nil
		s.gone = true
		s.update(func(st *StreamStatus) { st.State = stateWaiting })
		return err
	}
	s.update(func(st *StreamStatus) { st.Rotations++ })
	for i, r := range s.retired {
		if r.id == id {
			// The old file is back under its name (renamed back): go on
			// where it was left.
			s.retired = append(s.retired[:i], s.retired[i+1:]...)
			s.retire(c) // reports the count
			r.late, r.until = false, time.Time{}
			s.cur = r
			s.log.Info("path names an earlier file again; resuming it", "offset", r.pos)
			s.startTail(r)
			return nil
		}
	}
	if s.newest {
		s.log.Info("a later file matches; following it after the current one", "old", c.name, "old_offset", c.pos, "new", s.target)
	} else {
		s.log.Info("file rotated; following the new one", "old_offset", c.pos)
	}
	s.retire(c)
	s.cur = nil
	return s.open(ctx)
}

// retire moves c, rotated away and read to its end, to the files read only
// for late lines until the grace period ends.
func (s *stream) retire(c *tracked) {
	s.stopTail(c)
	c.late = true
	c.until = s.src.now().Add(s.src.cfg.RotatedGrace)
	s.retired = append(s.retired, c)
	s.setRotated()
}

// readRetired delivers late lines of rotated files and closes those whose
// grace has ended, delivering an unfinished last line too.
func (s *stream) readRetired(ctx context.Context) error {
	if len(s.retired) == 0 {
		return nil
	}
	now := s.src.now()
	kept := s.retired[:0]
	for i, r := range s.retired {
		final := !now.Before(r.until)
		if err := s.drain(ctx, r, final); err != nil {
			s.retired = append(kept, s.retired[i:]...)
			return err
		}
		if final {
			s.closeTracked(r)
			continue
		}
		kept = append(kept, r)
	}
	clear(s.retired[len(kept):])
	s.retired = kept
	s.setRotated()
	return nil
}

// tailEnded handles the follower's line channel closing.
func (s *stream) tailEnded(ctx context.Context) error {
	c := s.cur
	err := c.tl.wait()
	c.tl = nil
	if err != nil {
		s.problem("follow file", err)
		if !s.poll {
			s.poll = true
			s.log.Warn("following by inotify failed; polling this file instead")
			s.update(func(st *StreamStatus) { st.Mode = modeName(true) })
		}
		return nil // the next check starts it again
	}
	// It stops when the file is renamed: see where the path leads now.
	return s.check(ctx)
}

// fromTail delivers a line the follower read from the current file.
func (s *stream) fromTail(ctx context.Context, l *tail.Line) error {
	c := s.cur
	c.fromTail++
	if l.Err != nil { // only the library's rate limiter makes these, and it is not used
		s.problem("follow file", l.Err)
		return nil
	}
	text, end := l.Text, l.SeekInfo.Offset
	start := end - int64(len(text)) - 1
	if start != c.pos && start != 0 {
		s.log.Warn("follower out of step; following again from the last line delivered",
			"offset", c.pos, "line_start", start)
		s.stopTail(c)
		s.startTail(c)
		return nil
	}
	// The line was read before this check. If the file still holds what
	// was delivered from it, the line is from that content; if not, the
	// file was truncated and perhaps written again past our offset, where
	// the library would read the new content as if it were the old.
	same, err := c.sameContent(s.scratch[:])
	if err != nil {
		s.problem("read file", err)
	}
	if err == nil && !same {
		// The line may be old content or new: drop it, and read the old
		// content's rest from its copy and the new from 0.
		return s.truncated(ctx, c, true)
	}
	if start != c.pos {
		// The library reopened the file at 0: it saw it shrink, and the
		// new content starts like the old.
		if err := s.truncated(ctx, c, false); err != nil {
			return err
		}
	}
	cut := false
	if len(text) > s.src.cfg.MaxLineBytes {
		text, cut = strings.Clone(text[:s.src.cfg.MaxLineBytes]), true
	}
	return s.deliver(ctx, c, text, end, cut)
}

// drain delivers the lines of c from its position to its end (its last,
// unfinished line too when final).
func (s *stream) drain(ctx context.Context, c *tracked, final bool) error {
	_, err := s.lr.read(c.f, c.pos, final, func(b []byte, end int64, cut bool) error {
		return s.deliver(ctx, c, string(b), end, cut)
	})
	if err != nil && ctx.Err() == nil {
		s.problem("read file", err)
		return nil
	}
	return err
}

// deliver sends one line of c, which ends at end, with the cursor after it.
func (s *stream) deliver(ctx context.Context, c *tracked, text string, end int64, cut bool) error {
	if cut {
		s.noteCut()
	}
	c.pos = end
	var value []byte
	if !c.late {
		if c.fp.n < fingerprintSize && c.pos > int64(c.fp.n) {
			c.growHead()
		}
		value = encodeCursor(position{id: c.id, fp: c.fp, off: c.pos})
	}
	now := s.src.now()
	line := Line{Source: s.src.cfg.Name, Text: text, Arrival: now, Cursor: Cursor{Stream: s.path, Value: value}}
	select {
	case s.out <- line:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.update(func(st *StreamStatus) {
		st.Lines++
		st.LastRead = now
		if c == s.cur {
			st.Offset = c.pos
			st.Size = max(st.Size, c.pos)
		}
	})
	return nil
}

func (s *stream) noteCut() {
	s.update(func(st *StreamStatus) { st.CutLines++ })
	if !s.cutLogged {
		s.cutLogged = true
		s.log.Warn("line longer than the limit delivered cut; further ones are counted, not logged",
			"max_line_bytes", s.src.cfg.MaxLineBytes)
	}
}

func (s *stream) startTail(c *tracked) {
	tl, err := startTailer(c.f, c.pos, s.poll)
	if err != nil {
		s.problem("follow file", err)
		return
	}
	c.tl = tl
	c.fromTailAtCheck = c.fromTail
	c.pendingSince = time.Time{}
	s.update(func(st *StreamStatus) { st.follower = tl.name })
	s.armStartCheck(c)
}

func (s *stream) stopTail(c *tracked) {
	if c.tl == nil {
		return
	}
	if err := c.tl.stop(); err != nil {
		s.log.Debug("follower had stopped with an error", "err", err)
	}
	c.tl = nil
}

// closeTracked stops reading c and remembers where it was left.
func (s *stream) closeTracked(c *tracked) {
	s.stopTail(c)
	if err := c.f.Close(); err != nil {
		s.log.Debug("close file", "err", err)
	}
	s.src.release(c.id, s.path, position{id: c.id, fp: c.fp, off: c.pos})
}

func (s *stream) closeAll() {
	if s.cur != nil {
		s.closeTracked(s.cur)
		s.cur = nil
	}
	for _, r := range s.retired {
		s.closeTracked(r)
	}
	s.retired = nil
}

// problem records a problem and logs it unless it is the one logged last.
func (s *stream) problem(what string, err error) {
	msg := what + ": " + err.Error()
	s.update(func(st *StreamStatus) {
		st.Errors++
		st.LastError = msg
		if s.cur == nil {
			st.State = stateError
		}
	})
	if msg != s.problemLogged {
		s.problemLogged = msg
		s.log.Error(what, "err", err)
	}
}

func (s *stream) clearProblem() {
	s.problemLogged = ""
	s.update(func(st *StreamStatus) { st.LastError = "" })
}

func (s *stream) update(fn func(st *StreamStatus)) {
	s.mu.Lock()
	fn(&s.st)
	s.mu.Unlock()
}

func (s *stream) status() StreamStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// setRotated reports how many rotated files are still read.
func (s *stream) setRotated() {
	n := len(s.retired)
	s.update(func(st *StreamStatus) { st.Rotated = n })
}
