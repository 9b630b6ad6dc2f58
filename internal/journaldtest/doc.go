// Package journaldtest gives tests a systemd-journald to write to: the
// system's when one runs, or else one the test starts itself (as root) with
// volatile storage, and stops and cleans up after it.
package journaldtest
