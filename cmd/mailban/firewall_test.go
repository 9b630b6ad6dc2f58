package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailban/mailban/internal/netnstest"
)

// `mailban firewall remove` deletes the table the configuration names,
// in the namespace it names, and leaves every other table alone.
func TestFirewallRemove(t *testing.T) {
	ns := netnstest.New(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mailban.yaml")
	cfg := fmt.Sprintf("state: {path: %s/state.db}\nenforcers:\n  nftables:\n    table: mb_test\n    netns: %s\n", dir, ns.Path)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ruleset := filepath.Join(dir, "ruleset.nft")
	if err := os.WriteFile(ruleset, []byte(`table inet mb_test {
	set ban4 { type ipv4_addr; flags interval,timeout; elements = { 203.0.113.7 timeout 1h, 203.0.113.8 timeout 1h } }
	set block4 { type ipv4_addr; flags interval; elements = { 198.51.100.0/24 } }
}
table inet mailban { }
table inet filter {
	chain input { type filter hook input priority 0; policy accept; }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.MustExec(t, "nft", "-f", ruleset)

	remove := func() (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"firewall", "remove", "--config", cfgPath}, nil, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	code, out := remove()
	if code != exitOK || !strings.HasPrefix(out, "removed table inet mb_test (ban4 2, block4 1)") {
		t.Errorf("first remove: exit %d, %q", code, out)
	}
	tables := ns.MustExec(t, "nft", "list", "tables")
	if strings.Contains(tables, "mb_test") || !strings.Contains(tables, "table inet mailban") || !strings.Contains(tables, "table inet filter") {
		t.Errorf("tables after remove:\n%s", tables)
	}
	if code, out := remove(); code != exitOK || out != "no table inet mb_test: nothing to remove\n" {
		t.Errorf("second remove: exit %d, %q", code, out)
	}
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"firewall"}, nil, &bytes.Buffer{}, &stderr); code != exitUsage {
		t.Errorf("mailban firewall: exit %d (%s), want %d", code, stderr.String(), exitUsage)
	}
}
