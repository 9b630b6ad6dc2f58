package rules

import (
	"fmt"
	"net/netip"
	"time"
)

// Clock tells the engine what time it is. Tests advance a fake one; replays
// drive one from the log's own timestamps.
type Clock interface {
	Now() time.Time
}

// Action is what a Decision asks enforcers to do.
type Action uint8

const (
	// Ban refuses an address or network until Until (forever when Until is zero).
	Ban Action = iota + 1
	// Unban lifts a ban before or at its expiry.
	Unban
	// Block refuses a network by configuration or by an operator, with no expiry.
	Block
	// Unblock lifts a Block.
	Unblock
	// Lock refuses a login from every address except those that recently
	// logged in as it successfully.
	Lock
	// Unlock lifts a Lock.
	Unlock
)

var actionNames = [...]string{Ban: "ban", Unban: "unban", Block: "block", Unblock: "unblock", Lock: "lock", Unlock: "unlock"}

func (a Action) String() string {
	if int(a) < len(actionNames) && actionNames[a] != "" {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// MarshalText writes the action's name.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Decision is one thing the rules decided, with why.
type Decision struct {
	Action   Action
	Prefix   netip.Prefix // Ban, Unban, Block, Unblock: a single address (/32, /128) or a network
	Login    string       // Lock, Unlock: the normalised login
	At       time.Time    // when it was decided, in the time of the event that caused it
	Until    time.Time    // Ban, Lock: when it ends; zero means permanent
	Reason   string       // one line for people: "10 failures in 1h0m0s (threshold 10/1h)"
	Evidence []string     // the log lines that led to it, oldest first; may be empty
}
