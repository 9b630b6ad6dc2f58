// Package source turns the places mail servers log to into one ordered stream
// of Lines per source, each Line carrying a Cursor from which the source can
// resume after a restart: no line lost, none delivered twice.
package source
