package nftables

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// What can keep the enforcer from starting. The errors New returns wrap
// one of these, with what to do about it.
var (
	// ErrPermission: mailban lacks CAP_NET_ADMIN in the network namespace.
	ErrPermission = errors.New("permission denied")
	// ErrUnavailable: the kernel has no nf_tables (or no inet family).
	ErrUnavailable = errors.New("nftables is not available in this kernel")
	// ErrTableOwned: another program holds the table with the owner flag.
	ErrTableOwned = errors.New("table is owned by another program")
)

// classify turns what netlink says when mailban first talks to nftables
// into an error that says what is missing and how to provide it.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, os.ErrPermission), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: mailban needs CAP_NET_ADMIN to manage its nftables table "+
			"(run it as root, or grant the capability, e.g. AmbientCapabilities=CAP_NET_ADMIN "+
			"and CapabilityBoundingSet=CAP_NET_ADMIN in its systemd unit): %w", ErrPermission, err)
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT),
		errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		// A kernel without nfnetlink refuses the socket (EPROTONOSUPPORT);
		// one without nf_tables refuses its messages (EINVAL, EOPNOTSUPP).
		return fmt.Errorf("%w: load the module (modprobe nf_tables) or use a kernel built with "+
			"CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET: %w", ErrUnavailable, err)
	}
	return err
}
