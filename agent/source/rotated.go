package source

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// isCompressed reports whether name looks like a rotated file that holds
// compressed text: its bytes never match a fingerprint of plain text, and a
// glob never follows it.
func isCompressed(name string) bool {
	for _, s := range [...]string{".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// maxSiblings bounds how many directory entries a search for a rotated file
// looks at, so that a huge log directory cannot stall a stream.
const maxSiblings = 4096

// rotatedFile is an open file found among a path's siblings.
type rotatedFile struct {
	f    *os.File
	name string
	id   fileID
	how  string // "renamed" (same inode) or "copied" (same first bytes)
}

// findRotated looks for the file that held the content of want among the
// siblings of path: files in the same directory whose name starts with the
// base name (mail.log.1, mail.log-20261125), compressed ones excepted. A file
// with want's inode and fingerprint is the old file renamed; failing that, a
// file of another inode than current whose first bytes match is a copy (what
// copytruncate leaves). Either must hold at least want.off bytes. It returns
// nil, nil when there is no such file.
func findRotated(path string, want position, current fileID) (*rotatedFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list siblings of %s: %w", path, err)
	}
	var copies []string
	seen := 0
	for _, e := range entries {
		name := e.Name()
		if name == base || !strings.HasPrefix(name, base) || isCompressed(name) {
			continue
		}
		if seen++; seen > maxSiblings {
			break
		}
		full := filepath.Join(dir, name)
		fi, err := os.Stat(full)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() < want.off {
			continue
		}
		id, ok := fileIDOf(fi)
		if !ok {
			continue
		}
		if id == want.id {
			if rf := openIfMatches(full, want, func(got fileID) bool { return got == want.id }); rf != nil {
				rf.how = "renamed"
				return rf, nil
			}
			continue
		}
		if id != current && want.fp.n > 0 {
			copies = append(copies, full)
		}
	}
	for _, full := range copies {
		if rf := openIfMatches(full, want, func(got fileID) bool { return got != current && got != want.id }); rf != nil {
			rf.how = "copied"
			return rf, nil
		}
	}
	return nil, nil
}

// openIfMatches opens name and keeps it open if, by its descriptor, it is an
// acceptable inode, starts with want's fingerprint and holds want.off bytes.
func openIfMatches(name string, want position, acceptable func(fileID) bool) *rotatedFile {
	f, err := os.Open(name)
	if err != nil {
		return nil
	}
	fi, err := f.Stat()
	if err == nil && fi.Mode().IsRegular() && fi.Size() >= want.off {
		if id, ok := fileIDOf(fi); ok && acceptable(id) && want.fp.matches(f) {
			return &rotatedFile{f: f, name: name, id: id}
		}
	}
	f.Close()
	return nil
}
