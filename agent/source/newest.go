package source

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
)

// A stream of a glob pattern in FollowNewest mode reads the pattern's
// matches one after another, in name order, which for dated logs
// (stalwart.log.2026-01-10, stalwart.log.2026-01-10T08) is the order they
// were written in. It stays on a file while no later name matches; when one
// does, the current file is read to its end and kept for late lines during
// the grace period (as a rotated file is), and the next name is read from its
// beginning. After a stop, its saved cursor names the file it was in: that
// file is found among the matches by identity, finished, and every later
// match is read in turn, so a restart days later reads the days between.
//
// Everything else (truncation, the follower, late lines, the cursor's
// encoding) is the plain path's machinery: nextMatch only says which file
// the pattern stands for at each check.

// match is one regular file a pattern matches.
type match struct {
	name string
	id   fileID
}

// matches lists the pattern's regular, uncompressed matches in name order.
func (s *stream) matches() []match {
	names, err := filepath.Glob(s.path)
	if err != nil { // only ErrBadPattern, which withDefaults ruled out
		s.problem("evaluate glob", err)
		return nil
	}
	sort.Strings(names)
	out := make([]match, 0, len(names))
	for _, n := range names {
		if isCompressed(n) {
			continue
		}
		id, err := statPath(n)
		if err != nil {
			continue
		}
		out = append(out, match{name: n, id: id})
	}
	return out
}

// nextMatch says which file the pattern stands for now: with a current file,
// the first match named after it, or the current file's own name while there
// is none; without one, the file a saved cursor points into, or else the
// first match named after the last file read (the newest match on a first
// start). The error is fs.ErrNotExist when no file qualifies.
func (s *stream) nextMatch() (string, fileID, error) {
	all := s.matches()
	if c := s.cur; c != nil {
		for _, m := range all {
			if m.name > c.name && m.id != c.id {
				return m.name, m.id, nil
			}
		}
		id, err := statPath(c.name)
		return c.name, id, err
	}
	if s.saved != nil && !s.searched {
		s.searched = true
		for _, m := range all {
			if m.id == s.saved.id {
				// startPosition checks the fingerprint: an inode
				// number reused by another file is read from 0.
				return m.name, m.id, nil
			}
		}
		// startPosition warns that the saved file is gone.
	}
	if s.after != "" {
		for _, m := range all {
			if m.name >= s.after {
				return m.name, m.id, nil
			}
		}
		return "", fileID{}, fmt.Errorf("no file after %s matches %s: %w", s.after, s.path, fs.ErrNotExist)
	}
	if len(all) == 0 {
		return "", fileID{}, fmt.Errorf("no file matches %s: %w", s.path, fs.ErrNotExist)
	}
	newest := all[len(all)-1]
	return newest.name, newest.id, nil
}
