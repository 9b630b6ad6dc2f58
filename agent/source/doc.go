// Package source turns the places mail servers log to (files, the journal, a
// command's output, standard input, Stalwart's webhooks) into one ordered
// stream of Lines per source, each Line carrying a Cursor from which the
// source can resume after a restart: no line lost, none delivered twice.
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
// With FollowNewest, a glob pattern is one stream that reads its matches one
// after another in name order (dated logs), each finished before the next
// (newest.go).
//
// Journal reads the systemd journal through journalctl; its Cursor is the
// journal's own. Command runs a program and Stdin reads standard input:
// output without offsets, whose Cursor records how many lines of the current
// output were read and their hashes, so that a producer that prints its
// history again is skipped up to where reading stopped (replay.go). Webhook
// receives Stalwart's event deliveries and answers each only once the agent
// has saved its events (Committed); its Cursor remembers the digests of the
// events last counted, so that a delivery retried after its answer was lost
// is not counted twice. Stalwart's structured events, from webhooks or
// journald fields, become Events without a text format (stalwart.go).
//
// Limits: nxadm/tail reads a whole line into memory before File cuts it to
// MaxLineBytes (File's own reads never hold more than that); two sources (in
// one process) following one file with inotify end up polling it, because the
// library's process-wide inotify table keeps one name per inode.
// A Webhook counts two events alike in every field (type, second, address,
// port, account) but delivered in different requests once. A command whose
// output starts with the same 16 lines as before but then differs is read
// as a replay up to the old line count (logged as such).
package source
