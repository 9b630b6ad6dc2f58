package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultMaxEntryBytes bounds one journal entry as journalctl prints it.
const DefaultMaxEntryBytes = 1 << 20

// JournalConfig says which entries of the systemd journal a Journal source
// reads.
type JournalConfig struct {
	Name string // source name (Line.Source)
	// Matches select entries, as journalctl's matches do: each element is
	// one alternative (entries matching any are read); within an element,
	// FIELD=value terms separated by spaces must all hold (journalctl ORs
	// terms of one field). None: every entry.
	// E.g. "_SYSTEMD_UNIT=postfix@-.service", "SYSLOG_IDENTIFIER=dovecot".
	Matches []string
	// Journalctl is the program to run; "" means journalctl from PATH.
	Journalctl string
	// Directory makes journalctl read the journal files in this directory
	// (--directory) instead of the system journal.
	Directory string
	// StartAtEnd applies when there is no saved cursor: read only entries
	// written from now on, instead of every matching entry in the journal.
	StartAtEnd bool
	// RestartDelay, MaxRestartDelay and StopTimeout are as for a command.
	RestartDelay    time.Duration
	MaxRestartDelay time.Duration
	StopTimeout     time.Duration
	// MaxEntryBytes skips entries whose JSON is longer (counted as errors).
	// Zero means DefaultMaxEntryBytes.
	MaxEntryBytes int
}

// journalMatch is one journalctl match term.
var journalMatch = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`)

// ParseJournalMatches checks matches and returns journalctl's arguments
// for them: the terms of each alternative, with "+" between alternatives.
func ParseJournalMatches(matches []string) ([]string, error) {
	var args []string
	for i, m := range matches {
		terms := strings.Fields(m)
		if len(terms) == 0 {
			return nil, fmt.Errorf("match %d is empty", i+1)
		}
		for _, t := range terms {
			if !journalMatch.MatchString(t) {
				return nil, fmt.Errorf("%q is not a journal match (FIELD=value, the field in capitals, e.g. _SYSTEMD_UNIT=postfix@-.service)", t)
			}
		}
		if i > 0 {
			args = append(args, "+")
		}
		args = append(args, terms...)
	}
	return args, nil
}

func (cfg JournalConfig) withDefaults() (JournalConfig, []string, error) {
	if cfg.Name == "" {
		return cfg, nil, errors.New("name is empty")
	}
	matches, err := ParseJournalMatches(cfg.Matches)
	if err != nil {
		return cfg, nil, err
	}
	if cfg.Journalctl == "" {
		cfg.Journalctl = "journalctl"
	}
	if err := defaultDurations(&cfg.RestartDelay, &cfg.MaxRestartDelay, &cfg.StopTimeout); err != nil {
		return cfg, nil, err
	}
	switch {
	case cfg.MaxEntryBytes < 0:
		return cfg, nil, fmt.Errorf("max entry bytes %d is negative", cfg.MaxEntryBytes)
	case cfg.MaxEntryBytes == 0:
		cfg.MaxEntryBytes = DefaultMaxEntryBytes
	}
	return cfg, matches, nil
}

// journalFields are the fields journalctl is asked for: the message, its
// program, and the fields of Stalwart's journald tracer. (__CURSOR and
// __REALTIME_TIMESTAMP come always.)
const journalFields = "MESSAGE,SYSLOG_IDENTIFIER,_COMM,REMOTEIP,ACCOUNTNAME,LISTENERID,LOCALPORT,DETAILS,REASON"

// Journal reads the systemd journal through `journalctl --follow
// --output=json`. A line's Time is the entry's __REALTIME_TIMESTAMP, its
// Program SYSLOG_IDENTIFIER (else _COMM), its Text MESSAGE, and its Cursor
// the entry's __CURSOR, after which a restart resumes, in every boot the
// journal holds (runOnce).
// Stalwart's entries, whose fields say what happened (REMOTEIP,
// ACCOUNTNAME, ...), carry their Event instead (stalwart.go).
//
// journalctl is started again, with a growing delay, whenever it ends; a
// journalctl that cannot be found or a journal that cannot be read is an
// error in the log and the status, and tried again.
type Journal struct {
	cfg     JournalConfig
	matches []string
	after   string // the cursor of the last entry delivered (or the saved one)
	log     *slog.Logger
	health  *health
	now     func() time.Time
	ran     atomic.Bool

	// journalDirs are where the system journal's files are looked for
	// before journalctl is started (it does not notice files that appear
	// after it started while there were none).
	journalDirs    []string
	entryErrLogged bool
}

// NewJournal checks cfg and makes a Journal source. saved holds the cursor
// last delivered (and processed) in an earlier run under the stream "".
func NewJournal(cfg JournalConfig, saved map[string][]byte, logger *slog.Logger, m *Metrics) (*Journal, error) {
	cfg, matches, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("configure journald source %q: %w", cfg.Name, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("source", cfg.Name)
	h := newHealth(cfg.Name, "journald", logger, m)
	h.update(func(st *StreamStatus) { st.Stream = "journal " + strings.Join(cfg.Matches, " + ") })
	j := &Journal{
		cfg:         cfg,
		matches:     matches,
		log:         logger,
		health:      h,
		now:         time.Now,
		journalDirs: []string{"/run/log/journal", "/var/log/journal"},
	}
	if v := saved[""]; v != nil {
		if !validJournalCursor(string(v)) {
			logger.Warn("saved journal position is unreadable; reading as if for the first time (start-at applies)", "cursor", string(v))
		} else {
			j.after = string(v)
		}
	}
	return j, nil
}

// validJournalCursor accepts what journalctl prints as __CURSOR:
// semicolon-separated key=value pairs (s=...;i=...;b=...).
func validJournalCursor(c string) bool {
	if c == "" || len(c) > 1024 || strings.ContainsAny(c, "\x00\n") {
		return false
	}
	for _, kv := range strings.Split(c, ";") {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return false
		}
	}
	return true
}

// Name is the source's configured name.
func (j *Journal) Name() string { return j.cfg.Name }

// Status reports what the source is doing: State "running" while
// journalctl runs, "restarting" between runs, "error" when the journal
// cannot be found; LastError says why.
func (j *Journal) Status() []StreamStatus { return j.health.status() }

// errNoJournal says that no journal files were found.
var errNoJournal = errors.New("no journal files found")

// Run reads the journal until ctx is done and returns nil then. Run may be
// called once.
func (j *Journal) Run(ctx context.Context, out chan<- Line) error {
	if !j.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("run journald source %q: Run called twice", j.cfg.Name)
	}
	r := restarter{min: j.cfg.RestartDelay, max: j.cfg.MaxRestartDelay, health: j.health, what: "read the journal", program: "journalctl",
		waiting: func(err error) string {
			if errors.Is(err, errNoJournal) || errors.Is(err, os.ErrNotExist) {
				return stateError // not a hiccup: nothing to read until someone acts
			}
			return stateRestarting
		}}
	r.run(ctx, func(ctx context.Context) (int, error) { return j.runOnce(ctx, out) })
	return nil
}

// journalFilesIn reports whether dir, or a directory in it, holds journal
// files.
func journalFilesIn(dir string) bool {
	for _, p := range []string{"*.journal", "*/*.journal", "*.journal~", "*/*.journal~"} {
		if m, _ := filepath.Glob(filepath.Join(dir, p)); len(m) > 0 {
			return true
		}
	}
	return false
}

// args are journalctl's arguments for a run that reads from where the
// source stands.
func (j *Journal) args(extra ...string) []string {
	args := []string{j.cfg.Journalctl, "--output=json", "--all", "--no-pager", "--output-fields=" + journalFields}
	if j.cfg.Directory != "" {
		args = append(args, "--directory="+j.cfg.Directory)
	}
	args = append(args, extra...)
	return append(args, j.matches...)
}

// findEnd sets after to the cursor of the last matching entry, so that
// following starts after it: a start at the end that journalctl's own
// "--lines=0" would make, but one that a restart can resume exactly.
// Without matching entries, every entry to come is new: after stays "".
func (j *Journal) findEnd(ctx context.Context) error {
	stderr := &stderrLog{log: j.log, report: func(line string) { j.health.problem("journalctl", errors.New(line)) }}
	ch, err := startChild(j.args("--lines=1"), false, stderr, j.cfg.StopTimeout)
	if err != nil {
		return err
	}
	stopWatch := context.AfterFunc(ctx, func() { ch.stop() })
	defer stopWatch()
	var last []byte
	lines := make(chan pipeLine, 4)
	readErr := make(chan error, 1)
	go func() { readErr <- readLines(ctx, ch.out, j.cfg.MaxEntryBytes, lines); close(lines) }()
	for l := range lines {
		last = []byte(l.text)
	}
	err = <-readErr
	if _, werr := ch.wait(); werr != nil && ctx.Err() == nil {
		return stderr.explain(j.cfg.Journalctl, werr)
	}
	if err != nil || ctx.Err() != nil {
		return err
	}
	if len(last) == 0 {
		return nil
	}
	var e journalEntry
	if err := json.Unmarshal(last, &e); err != nil || e.Cursor == "" {
		return fmt.Errorf("read the journal's last entry: %v", err)
	}
	j.after = e.Cursor
	return nil
}

// runOnce runs journalctl and delivers what it prints; it returns how many
// entries it delivered and why journalctl is not running any more.
//
// journalctl --follow reads only the current boot (it adds --boot unless
// told --merge, which would mix in the journals of other machines that a
// log collector stores), so it comes second: a first journalctl without
// --follow reads every boot from where the source stands to the journal's
// end (after a reboot, the last entries of the boot before), and the one
// that follows starts after the last entry the first printed, where only
// entries of the current boot can come.
func (j *Journal) runOnce(ctx context.Context, out chan<- Line) (int, error) {
	if j.cfg.Directory == "" {
		found := false
		for _, d := range j.journalDirs {
			found = found || journalFilesIn(d)
		}
		if !found {
			return 0, fmt.Errorf("%w in %s (is systemd-journald running?)", errNoJournal, strings.Join(j.journalDirs, " or "))
		}
	} else if !journalFilesIn(j.cfg.Directory) {
		return 0, fmt.Errorf("%w in %s", errNoJournal, j.cfg.Directory)
	}
	if j.after == "" && j.cfg.StartAtEnd {
		if err := j.findEnd(ctx); err != nil {
			return 0, err
		}
	}
	caughtUp, err := j.read(ctx, out, false)
	if err != nil || ctx.Err() != nil {
		return caughtUp, err
	}
	followed, err := j.read(ctx, out, true)
	return caughtUp + followed, err
}

// read runs journalctl once from where the source stands, following the
// journal or reading to its end, and delivers what it prints; it returns
// how many entries it delivered and why journalctl ended (nil: it ended
// normally, or was stopped).
//
// journalctl starts at the entry of the cursor itself (--cursor), which is
// passed over here, rather than after it (--after-cursor): journalctl of
// systemd 252 (Debian 12) takes --after-cursor as "step two entries", so
// that when the cursor's entry is not among those it reads (of an earlier
// boot, with --follow's boot restriction) the first entry of the current
// boot is skipped.
func (j *Journal) read(ctx context.Context, out chan<- Line, follow bool) (int, error) {
	resumed := j.after
	var extra []string
	if resumed != "" {
		extra = []string{"--cursor=" + resumed}
	} else {
		extra = []string{"--lines=all"}
	}
	if follow {
		extra = append(extra, "--follow")
	}
	stderr := &stderrLog{log: j.log, report: func(line string) { j.health.problem("journalctl", errors.New(line)) }}
	ch, err := startChild(j.args(extra...), false, stderr, j.cfg.StopTimeout)
	if err != nil {
		return 0, err
	}
	j.health.update(func(st *StreamStatus) { st.State = stateRunning })
	if follow {
		j.log.Info("reading the journal", "pid", ch.pid, "after_cursor", resumed != "")
	} else {
		j.log.Debug("reading the journal to its end, every boot", "pid", ch.pid, "after_cursor", resumed != "")
	}

	lines := make(chan pipeLine, 64)
	readErr := make(chan error, 1)
	readCtx, stopReading := context.WithCancel(context.Background())
	defer stopReading()
	go func() { readErr <- readLines(readCtx, ch.out, j.cfg.MaxEntryBytes, lines); close(lines) }()
	delivered := 0
	first := true
	var derr error
	for derr == nil {
		select {
		case l, ok := <-lines:
			if !ok {
				derr = errEndOfOutput
				break
			}
			if first && resumed != "" && entryCursor(l.text) == resumed {
				first = false
				continue // delivered before: the entry of the cursor
			}
			first = false
			var sent bool
			sent, derr = j.entry(ctx, []byte(l.text), l.cut, out)
			if sent {
				if delivered == 0 {
					j.health.recovered()
				}
				delivered++
			}
		case <-ctx.Done():
			derr = ctx.Err()
		}
	}
	if derr != errEndOfOutput {
		stopReading()
		ch.stop()
		for range lines { // the reader stops sending once readCtx is done
		}
	}
	<-readErr
	stopped, werr := ch.wait()
	if stopped || ctx.Err() != nil {
		return delivered, nil
	}
	if werr == nil {
		return delivered, nil
	}
	if delivered == 0 && resumed != "" && strings.Contains(stderr.lastLine(), "cursor") {
		// journalctl refuses the saved cursor (a journal from another
		// machine, a mangled state): start over as the configuration says.
		j.log.Warn("journalctl cannot resume at the saved position; reading as if for the first time (start-at applies)",
			"cursor", resumed, "journalctl", stderr.lastLine())
		j.after = ""
	}
	return delivered, stderr.explain(j.cfg.Journalctl, werr)
}

// entryCursor is the __CURSOR of an entry as journalctl prints it, or ""
// when text is not an entry.
func entryCursor(text string) string {
	var e struct {
		Cursor string `json:"__CURSOR"`
	}
	if json.Unmarshal([]byte(text), &e) != nil {
		return ""
	}
	return e.Cursor
}

// errEndOfOutput is journalctl's output ending.
var errEndOfOutput = errors.New("end of output")

// journalEntry is what a Journal reads of an entry.
type journalEntry struct {
	Cursor    string       `json:"__CURSOR"`
	Realtime  string       `json:"__REALTIME_TIMESTAMP"`
	Message   journalField `json:"MESSAGE"`
	Ident     journalField `json:"SYSLOG_IDENTIFIER"`
	Comm      journalField `json:"_COMM"`
	RemoteIP  journalField `json:"REMOTEIP"`
	Account   journalField `json:"ACCOUNTNAME"`
	Listener  journalField `json:"LISTENERID"`
	LocalPort journalField `json:"LOCALPORT"`
	Details   journalField `json:"DETAILS"`
	Reason    journalField `json:"REASON"`
}

// journalField is the text of a field as journalctl prints it: a string;
// an array of byte values (not valid UTF-8 text, or with control
// characters); or, for a field given more than once, an array of either, of
// which the first is taken. Invalid UTF-8 is replaced.
type journalField string

// UnmarshalJSON reads a field value; what is none of the above reads as "".
func (f *journalField) UnmarshalJSON(raw []byte) error {
	*f = journalField(journalValue(raw))
	return nil
}

func journalValue(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		// Most values need no unescaping.
		if len(raw) >= 2 && raw[len(raw)-1] == '"' && bytes.IndexByte(raw, '\\') < 0 {
			return strings.ToValidUTF8(string(raw[1:len(raw)-1]), "\uFFFD")
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case '[':
		var nums []int
		if json.Unmarshal(raw, &nums) == nil {
			bs := make([]byte, 0, len(nums))
			for _, n := range nums {
				if n < 0 || n > 255 {
					return ""
				}
				bs = append(bs, byte(n))
			}
			return strings.ToValidUTF8(string(bs), "\uFFFD")
		}
		var many []json.RawMessage
		if json.Unmarshal(raw, &many) == nil && len(many) > 0 {
			return journalValue(many[0])
		}
	}
	return ""
}

// entry turns one printed entry into a Line and delivers it; a line that
// is not an entry is logged (once) and counted, not delivered. It reports
// whether it delivered a line.
func (j *Journal) entry(ctx context.Context, text []byte, cut bool, out chan<- Line) (bool, error) {
	var e journalEntry
	err := json.Unmarshal(text, &e)
	if err == nil && cut {
		err = fmt.Errorf("entry longer than %d bytes", j.cfg.MaxEntryBytes)
	}
	var usec int64
	if err == nil {
		if e.Cursor == "" {
			err = errors.New("no __CURSOR")
		} else if usec, err = strconv.ParseInt(e.Realtime, 10, 64); err != nil {
			err = fmt.Errorf("__REALTIME_TIMESTAMP %q: %w", e.Realtime, err)
		}
	}
	if err != nil {
		j.health.m.problem(j.cfg.Name)
		j.health.update(func(st *StreamStatus) { st.Errors++; st.CutLines += boolCount(cut) })
		if !j.entryErrLogged {
			j.entryErrLogged = true
			j.log.Warn("skipping what journalctl printed: not a journal entry; further ones are counted, not logged", "err", err)
		}
		if e.Cursor != "" && validJournalCursor(e.Cursor) {
			j.after = e.Cursor // skip it for good
		}
		return false, nil
	}
	t := time.UnixMicro(usec)
	program := string(e.Ident)
	if program == "" {
		program = string(e.Comm)
	}
	msg := string(e.Message)
	line := Line{Source: j.cfg.Name, Text: msg, Arrival: j.now(), Time: t, Program: program,
		Cursor: Cursor{Value: []byte(e.Cursor)}}
	if ip := string(e.RemoteIP); ip != "" {
		if typ, ok := stalwartTypeOf(msg); ok {
			f := stalwartFields{
				typ:       typ,
				remoteIP:  ip,
				account:   string(e.Account),
				listener:  string(e.Listener),
				localPort: string(e.LocalPort),
				details:   string(e.Details),
				reason:    string(e.Reason),
			}
			evidence := capEvidence(fmt.Sprintf("%s: %s (REMOTEIP=%s ACCOUNTNAME=%q LISTENERID=%s)", program, msg, f.remoteIP, f.account, f.listener))
			if ev, outcome := stalwartEvent(f, t, FormatStalwartJournal, evidence); outcome == outcomeCounted {
				line.Event = &ev
				line.Text = evidence
			}
		}
	}
	select {
	case out <- line:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	j.after = e.Cursor
	now := line.Arrival
	j.health.update(func(st *StreamStatus) { st.Lines++; st.LastRead = now })
	return true, nil
}

func boolCount(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}
