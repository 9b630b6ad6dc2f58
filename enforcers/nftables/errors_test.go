package nftables

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// What netlink answers when something is missing becomes an error that
// says what, and how to provide it.
func TestClassify(t *testing.T) {
	cases := []struct {
		err  error
		want error
	}{
		{fmt.Errorf("list tables: %w", unix.EPERM), ErrPermission},
		{unix.EPROTONOSUPPORT, ErrUnavailable}, // no nfnetlink
		{fmt.Errorf("receive: %w", unix.EINVAL), ErrUnavailable},
		{unix.EOPNOTSUPP, ErrUnavailable},
		{unix.ENOENT, nil},
	}
	for _, tc := range cases {
		got := classify(tc.err)
		if tc.want == nil {
			if got != tc.err {
				t.Errorf("classify(%v) = %v, want it unchanged", tc.err, got)
			}
			continue
		}
		if !errors.Is(got, tc.want) || !errors.Is(got, tc.err) {
			t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
