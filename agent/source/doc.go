// Package source turns the places mail servers log to into one ordered stream
// of Lines per source, each Line carrying a Cursor from which the source can
// resume after a restart: no line lost, none delivered twice.
//
// File follows log files by path or glob pattern, one stream per path. It
// reads with github.com/nxadm/tail, but pins the library to one inode (it is
// given /proc/self/fd/N of a descriptor File holds) and notices rotation
// itself: when the path names another file, or none, the old file is read to
// its end before the new one is read from its beginning, and then still read
// for late lines during a grace period. Copytruncate is noticed by the file
// shrinking or its first bytes changing; what the truncation took before it
// was read comes from the copy. A Cursor names the inode (device and number),
// a fingerprint of the file's first KiB, and the offset after the line, so a
// restart finds its place again in the file, in its renamed self, or in its
// copy, and an inode number reused by a new file is not taken for the old.
//
// nxadm/tail adds its inotify watch only once it has read to the end of the
// file, so a line written in between would wait for the next write: every
// follower start is checked for that and restarted at the last line
// delivered. A follower that stalls later (its watch lost) is restarted
// once, and the file polled (250ms) should it stall again.
//
// Limits: nxadm/tail reads a whole line into memory before File cuts it to
// MaxLineBytes (File's own reads never hold more than that); two sources (in
// one process) following one file with inotify end up polling it, because the
// library's process-wide inotify table keeps one name per inode.
package source
