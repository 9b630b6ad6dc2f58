package control

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// The wire types. Times are RFC 3339; a nil time is absent.

// Status is what `mailban status` shows.
type Status struct {
	Version   string     `json:"version"`
	PID       int        `json:"pid"`
	Started   time.Time  `json:"started"`
	Config    string     `json:"config"` // the file the running configuration came from
	Reload    Reload     `json:"reload"`
	State     State      `json:"state"`
	Counts    Counts     `json:"counts"`
	Sources   []Source   `json:"sources"`
	Enforcers []Enforcer `json:"enforcers"`
	Fleet     *Fleet     `json:"fleet,omitempty"` // nil when this host is alone
}

// Fleet tells how this host shares counting and decisions through Redis.
type Fleet struct {
	Host      string     `json:"host"`
	Redis     string     `json:"redis"` // host:port
	Up        bool       `json:"up"`    // counting happens in Redis now
	DownSince *time.Time `json:"down_since,omitempty"`
	LastError string     `json:"last_error,omitempty"` // why Redis was last lost
	// SharedEvents were counted in Redis, LocalEvents on this host alone
	// while Redis was away (they are handed to Redis when it returns).
	SharedEvents int64 `json:"shared_events"`
	LocalEvents  int64 `json:"local_events"`
	Outbox       int   `json:"outbox"`   // decisions waiting to reach Redis
	Received     int64 `json:"received"` // decisions of other hosts applied here
	Errors       int64 `json:"errors"`   // failed round trips
	Resyncs      int64 `json:"resyncs"`
}

// Reload tells how the configuration was last loaded.
type Reload struct {
	At        time.Time  `json:"at"` // the last successful load (start or reload)
	OK        bool       `json:"ok"` // the last attempt succeeded
	Error     string     `json:"error,omitempty"`
	FailedAt  *time.Time `json:"failed_at,omitempty"`
	Successes int        `json:"successes"` // reloads since start, not counting the start
	Failures  int        `json:"failures"`
}

// State describes the state file.
type State struct {
	Path           string     `json:"path"`
	Bytes          int64      `json:"bytes"`
	LastCheckpoint *time.Time `json:"last_checkpoint,omitempty"`
	LastError      string     `json:"last_error,omitempty"` // of the last checkpoint, "" when it succeeded
}

// Counts are what the rules hold now.
type Counts struct {
	Bans             int `json:"bans"`
	Blocks           int `json:"blocks"`
	Locks            int `json:"locks"`
	TrackedAddresses int `json:"tracked_addresses"`
	TrackedLogins    int `json:"tracked_logins"`
	Offenders        int `json:"offenders"`
}

// Source is one configured source.
type Source struct {
	Name     string   `json:"name"`
	Type     string   `json:"type"`
	Running  bool     `json:"running"`
	LagBytes int64    `json:"lag_bytes"` // bytes written to its files and not yet read
	Lines    uint64   `json:"lines"`     // lines read since start
	Streams  []Stream `json:"streams,omitempty"`
}

// Stream is one followed file of a source.
type Stream struct {
	Path        string     `json:"path"`
	State       string     `json:"state"` // waiting, following, detached, error
	Mode        string     `json:"mode"`  // inotify or poll
	Offset      int64      `json:"offset"`
	Size        int64      `json:"size"`
	LagBytes    int64      `json:"lag_bytes"`
	LastRead    *time.Time `json:"last_read,omitempty"`
	Lines       uint64     `json:"lines"`
	Rotations   uint64     `json:"rotations"`
	Truncations uint64     `json:"truncations"`
	Errors      uint64     `json:"errors"`
	LastError   string     `json:"last_error,omitempty"`
}

// Enforcer is one enforcer and how its last attempts went.
type Enforcer struct {
	Name        string     `json:"name"`
	Healthy     bool       `json:"healthy"` // the last attempt to apply decisions succeeded
	Errors      uint64     `json:"errors"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	LastApplied *time.Time `json:"last_applied,omitempty"`
}

// Entry is a ban, block or lock in force.
type Entry struct {
	Type     string     `json:"type"`              // ban, block or lock
	Network  string     `json:"network,omitempty"` // ban, block: 203.0.113.7/32, 2001:db8:1:2::/64
	Login    string     `json:"login,omitempty"`   // lock
	Since    time.Time  `json:"since"`
	Until    *time.Time `json:"until,omitempty"` // nil: no end (a block or a permanent ban)
	Reason   string     `json:"reason"`
	Evidence []string   `json:"evidence,omitempty"` // only from Why
}

// Filter narrows a listing.
type Filter struct {
	Type      string       // ban or block; "" both (List of bans), ignored for locks
	Network   netip.Prefix // entries overlapping it; invalid: all
	Login     string       // locks whose login contains it
	Reason    string       // entries whose reason contains it, ignoring case
	Permanent bool         // only entries without end
	Limit     int          // at most this many; 0: all
}

// Request is the body of every command that changes something. Each
// command reads the fields it needs.
type Request struct {
	Target string `json:"target"`           // ban, unban, block, unblock: address or CIDR; unlock: login
	For    string `json:"for,omitempty"`    // ban: duration ("90m", "1d") or "permanent"; "": the configured rules.ban.for
	Reason string `json:"reason,omitempty"` // ban, block
	Force  bool   `json:"force,omitempty"`  // ban, block: see Order.Force
	Inside bool   `json:"inside,omitempty"` // unban, unblock: also lift what lies inside Target
}

// Order is a Request the server has checked: what the Backend executes.
type Order struct {
	Network   netip.Prefix
	Login     string
	For       time.Duration // ban: 0 means the configured length
	Permanent bool
	Reason    string
	// Force bans or blocks a network that contains allowlisted addresses
	// (they stay allowed: the rest of the network is refused) or every
	// address (/0).
	Force  bool
	Inside bool
}

// Result says what a change did.
type Result struct {
	Message string  `json:"message"`           // one line for people
	Entries []Entry `json:"entries,omitempty"` // what is now in force (ban, block) or was lifted
}

// Why explains whether and why an address, network or login is refused.
type Why struct {
	Subject     string   `json:"subject"`
	Kind        string   `json:"kind"` // address, network or login
	Refused     bool     `json:"refused"`
	Verdict     string   `json:"verdict"`               // one line: what a connection meets now
	Allowlisted []string `json:"allowlisted,omitempty"` // allowlisted networks that contain (or overlap) it
	Entries     []Entry  `json:"entries,omitempty"`     // the bans, blocks or lock in force, with their evidence
}

// Version is the daemon's version.
type Version struct {
	Version string `json:"version"`
	PID     int    `json:"pid"`
}

// Error codes, in the JSON body of every failed request. The CLI turns
// them into exit codes.
const (
	CodeInvalid     = "invalid"     // the request itself is wrong (HTTP 400)
	CodeNotFound    = "not_found"   // nothing to do: not banned, not locked (404)
	CodeRefused     = "refused"     // allowed only with force, or never (409)
	CodeFailed      = "failed"      // the daemon tried and failed (500)
	CodeUnavailable = "unavailable" // the client could not reach the daemon
)

// Sentinels for errors.Is: errors.Is(err, ErrNotFound) holds for every
// error of code not_found.
var (
	ErrInvalid  = &Error{Code: CodeInvalid}
	ErrNotFound = &Error{Code: CodeNotFound}
	ErrRefused  = &Error{Code: CodeRefused}
)

// Invalidf, NotFoundf and Refusedf make the errors a Backend returns to say
// which code its failure has; any other error is CodeFailed. The message
// should say what to do.
func Invalidf(format string, args ...any) error { return newError(CodeInvalid, format, args...) }

// NotFoundf: see Invalidf.
func NotFoundf(format string, args ...any) error { return newError(CodeNotFound, format, args...) }

// Refusedf: see Invalidf.
func Refusedf(format string, args ...any) error { return newError(CodeRefused, format, args...) }

func newError(code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Error is a failed request as the client sees it.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"error"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Message
}

// Is matches errors of the same code, so that errors.Is(err, ErrNotFound)
// holds for a not_found answer.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// CodeOf returns the code of err: that of an *Error in its chain, or
// CodeFailed.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeFailed
}
