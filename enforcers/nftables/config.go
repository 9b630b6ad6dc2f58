package nftables

import (
	"time"

	"github.com/mailban/mailban/rules"
)

// Config says where the enforcer's table lives and what its chains drop.
type Config struct {
	// Table is the name of the inet table mailban owns. It never touches
	// any other table.
	Table string
	// Priority orders the input (and forward) chain among the hooks'
	// chains: lower runs earlier. The usual filter chains run at 0.
	Priority int32
	// Forward also drops in the forward hook: for mail servers in
	// containers or VMs that this host routes to.
	Forward bool
	// MailPortsOnly limits the drop to TCP packets for MailPorts. Off, a
	// banned address is cut off entirely, established connections included.
	MailPortsOnly bool
	MailPorts     []uint16
	// NetNS is the path of the network namespace to enforce in
	// (/run/netns/NAME, /proc/PID/ns/net); "" is mailban's own.
	NetNS string
	// Clock tells the time that decisions' Until is measured against; nil
	// is the wall clock.
	Clock rules.Clock
	// RetryInterval is how long after a failed update the enforcer first
	// tries again (reading the kernel afresh); it doubles up to a minute.
	// 0 means one second.
	RetryInterval time.Duration
}

// DefaultConfig is the configuration a bare `nftables: {}` block means.
func DefaultConfig() Config {
	return Config{Table: "mailban", Priority: -10, MailPorts: DefaultMailPorts()}
}

// DefaultMailPorts are SMTP (25, 465, 587), POP3 (110, 995), IMAP (143,
// 993), ManageSieve (4190) and HTTPS for webmail (443).
func DefaultMailPorts() []uint16 {
	return []uint16{25, 465, 587, 110, 995, 143, 993, 4190, 443}
}

// Names of what the enforcer creates in its table.
const (
	chainInput   = "input"
	chainForward = "forward"
)

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }
