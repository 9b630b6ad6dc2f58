package source

import (
	"time"

	"github.com/mailban/mailban/parsers"
)

// Line is one complete log line as a source read it.
type Line struct {
	Source  string    // the configured name of the source that read it
	Text    string    // the line without its trailing newline
	Arrival time.Time // when mailban read it; the time of lines that carry none of their own
	Cursor  Cursor    // where reading resumes after this line
	// Time and Program are set by sources whose records come with the
	// syslog header already split off (the journal keeps a message's time
	// and program apart from its text): Text is then the message alone,
	// Time its time (never zero for such a line) and Program its program
	// tag ("" when it has none). The agent hands such a line to the parser
	// as it is instead of looking for a header in Text.
	Time    time.Time
	Program string
	// Event, when set, is what the line says, already known to the source
	// (a push feed that sends structured events, a hook's report): the agent
	// counts it as it is and does not parse Text, which is kept as evidence.
	Event *parsers.Event
}

// Cursor says where a line ended, in a form only its source understands.
// The agent stores the Cursor of the last line it has fully processed, together
// with the counters that line changed, and hands the stored cursors back to the
// source on start.
type Cursor struct {
	// Stream names the stream inside a source that the cursor belongs to
	// (a file source following a glob has one stream per path); "" for a
	// source with a single stream.
	Stream string
	// Value is opaque to all but the source. Nil means the line must not move
	// the saved position (a late line drained from an already rotated file).
	Value []byte
}
