package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/mailban/mailban/agent/config"
	"github.com/mailban/mailban/enforcers/nftables"
)

// firewall runs `mailban firewall remove`: the uninstall of the nftables
// enforcer's table. The configuration says which table (and namespace).
func firewall(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "remove" {
		return usageError{fmt.Errorf("want: mailban firewall remove [--config FILE]")}
	}
	fs := newFlags("firewall remove", stderr)
	path := fs.String("config", config.DefaultPath, "configuration `file` naming the table (enforcers.nftables.table)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	ncfg := nftables.DefaultConfig()
	if n := cfg.Enforcers.Nftables; n != nil {
		ncfg = n.Enforcer(nil)
	}
	r, err := nftables.Remove(ncfg)
	if err != nil {
		return err
	}
	if !r.Existed {
		fmt.Fprintf(stdout, "no table inet %s: nothing to remove\n", ncfg.Table)
		return nil
	}
	var held []string
	for _, set := range slices.Sorted(maps.Keys(r.Entries)) {
		held = append(held, fmt.Sprintf("%s %d", set, r.Entries[set]))
	}
	fmt.Fprintf(stdout, "removed table inet %s (%s); a running mailban creates it again at its next change\n",
		ncfg.Table, strings.Join(held, ", "))
	return nil
}
