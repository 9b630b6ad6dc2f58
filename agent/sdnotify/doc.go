// Package sdnotify tells systemd how the daemon is doing (ready, reloading,
// stopping, alive) over $NOTIFY_SOCKET, and does nothing when systemd did not
// start it that way.
package sdnotify
