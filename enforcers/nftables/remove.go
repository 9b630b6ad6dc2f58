package nftables

import (
	"fmt"
	"os"

	"github.com/google/nftables"
)

// Removed says what Remove found and deleted.
type Removed struct {
	Existed bool
	// Entries counts the intervals each of our sets held, by set name.
	Entries map[string]int
}

// Remove deletes the enforcer's table, with its sets and chains, and
// nothing else: the uninstall. A running mailban would create the table
// again at its next change, so stop it first.
func Remove(cfg Config) (Removed, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultConfig().Table
	}
	var opts []nftables.ConnOption
	if cfg.NetNS != "" {
		f, err := os.Open(cfg.NetNS)
		if err != nil {
			return Removed{}, fmt.Errorf("open network namespace: %w", err)
		}
		defer f.Close()
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return Removed{}, fmt.Errorf("nftables: %w", classify(err))
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return Removed{}, fmt.Errorf("nftables: list tables: %w", classify(err))
	}
	var table *nftables.Table
	for _, t := range tables {
		if t.Name == cfg.Table {
			table = t
		}
	}
	if table == nil {
		return Removed{}, nil
	}
	r := Removed{Existed: true, Entries: map[string]int{}}
	if sets, err := c.GetSets(table); err == nil {
		for _, s := range sets {
			if anonymous(s.Name) {
				continue
			}
			if elems, err := c.GetSetElements(s); err == nil {
				r.Entries[s.Name] = len(entriesOf(elems, wallClock{}.Now()))
			}
		}
	}
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return Removed{}, fmt.Errorf("delete table inet %s: %w", cfg.Table, describe(err))
	}
	return r, nil
}
