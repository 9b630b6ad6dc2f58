package nftables

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Netlink limits the batches are cut to. One attribute holds at most 64 KiB,
// so a message carries at most entriesPerMessage intervals (two elements
// each, about 110 bytes for IPv6); a batch is one sendmsg, which the socket's
// send buffer must hold, so one flush carries at most flushBudget bytes.
const (
	entriesPerMessage = 256
	bytesPerEntry     = 112
	socketBuffer      = 8 << 20
	smallFlushBudget  = 160 << 10 // when the buffer could not be raised
)

// dial opens a lasting netlink connection in the configured namespace and
// raises its buffers so that a large reconciliation goes in few batches.
func dial(netns int) (*nftables.Conn, int, error) {
	budget := socketBuffer / 2
	opts := []nftables.ConnOption{
		nftables.AsLasting(),
		nftables.WithSockOptions(func(c *netlink.Conn) error {
			// Acks carry no copy of the request: one refused 40 KiB
			// message must not overflow the receive buffer.
			if err := c.SetOption(netlink.CapAcknowledge, true); err != nil {
				return fmt.Errorf("set NETLINK_CAP_ACK: %w", err)
			}
			if err := forceBuffers(c, socketBuffer); err != nil {
				budget = smallFlushBudget
			}
			return nil
		}),
	}
	if netns > 0 {
		opts = append(opts, nftables.WithNetNSFd(netns))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, 0, err
	}
	return c, budget, nil
}

// forceBuffers sets the socket's buffers past net.core.wmem_max, which
// CAP_NET_ADMIN allows (nft does the same for large batches).
func forceBuffers(c *netlink.Conn, size int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = errors.Join(
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size))
	})
	return errors.Join(err, serr)
}

// tableFlagOwner is NFT_TABLE_F_OWNER (Linux 5.12): the table belongs to
// the netlink socket that created it.
const tableFlagOwner = 0x2

// tableFlags are a table's flags. google/nftables v0.3.0 reads them in
// host byte order where the kernel writes network order; the flags the
// kernel knows (NFT_TABLE_F_MASK, 0x7) tell which happened.
func tableFlags(t *nftables.Table) uint32 {
	if f := t.Flags; f&^0x7 != 0 {
		return bits.ReverseBytes32(f)
	}
	return t.Flags
}

// kernelState is what the kernel holds in our table.
type kernelState struct {
	table   *nftables.Table // nil: no table
	sets    []*nftables.Set // every set in the table, ours or not
	chains  []*nftables.Chain
	keep    [numSets]bool // the set exists as we define it: its elements stay
	entries [numSets][]entry
}

// findTable looks for our table; nil when there is none. A table another
// program owns is an error: only that program may change it.
func (e *Enforcer) findTable() (*nftables.Table, error) {
	tables, err := e.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name != e.cfg.Table {
			continue
		}
		if tableFlags(t)&tableFlagOwner != 0 {
			return nil, ownedError(e.cfg.Table)
		}
		return t, nil
	}
	return nil, nil
}

// readKernel reads our table: its sets, chains and the elements of the
// sets it keeps.
func (e *Enforcer) readKernel(now time.Time) (*kernelState, error) {
	ks := &kernelState{}
	var err error
	if ks.table, err = e.findTable(); err != nil {
		return nil, err
	}
	if ks.table == nil {
		return ks, nil
	}
	if ks.sets, err = e.conn.GetSets(ks.table); err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	chains, err := e.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == e.cfg.Table {
			ks.chains = append(ks.chains, c)
		}
	}
	for _, s := range ks.sets {
		for id := range numSets {
			if s.Name != id.String() || !e.layout.sameSet(id, s) {
				continue
			}
			elems, err := e.conn.GetSetElements(e.layout.sets[id])
			if err != nil {
				return nil, fmt.Errorf("list elements of set %s: %w", s.Name, err)
			}
			ks.keep[id] = true
			ks.entries[id] = entriesOf(elems, now)
		}
	}
	return ks, nil
}

func ownedError(table string) error {
	return fmt.Errorf("%w: table inet %s has the nftables owner flag: it belongs to the program that "+
		"created it and only that program may change it; choose another enforcers.nftables.table", ErrTableOwned, table)
}

// entriesOf pairs interval start and end elements into entries. An
// interval without an end reaches the last address; an end without a
// start (nft adds one at 0.0.0.0 to some sets) is no interval.
func entriesOf(elems []nftables.SetElement, now time.Time) []entry {
	type point struct {
		a     netip.Addr
		end   bool
		until time.Time
	}
	pts := make([]point, 0, len(elems))
	for _, el := range elems {
		a, ok := netip.AddrFromSlice(el.Key)
		if !ok {
			continue
		}
		p := point{a: a, end: el.IntervalEnd}
		if !el.IntervalEnd && el.Timeout != 0 {
			p.until = now.Add(el.Expires)
		}
		pts = append(pts, p)
	}
	// The kernel lists intervals from the highest; an end sorts before a
	// start at the same address (where one interval ends, the next begins).
	slices.SortFunc(pts, func(x, y point) int {
		if c := x.a.Compare(y.a); c != 0 {
			return c
		}
		switch {
		case x.end == y.end:
			return 0
		case x.end:
			return -1
		}
		return 1
	})
	var out []entry
	var open *point
	for i := range pts {
		p := &pts[i]
		switch {
		case !p.end && open == nil:
			open = p
		case !p.end:
			out = append(out, entry{lo: open.a, hi: p.a.Prev(), until: open.until})
			open = p
		case open != nil:
			out = append(out, entry{lo: open.a, hi: p.a.Prev(), until: open.until})
			open = nil
		}
	}
	if open != nil {
		last := netip.IPv6Unspecified()
		if open.a.Is4() {
			last = netip.AddrFrom4([4]byte{})
		}
		out = append(out, entry{lo: open.a, hi: lastAddr(netip.PrefixFrom(last, 0)), until: open.until})
	}
	return out
}

// elementMode says what elements are for.
type elementMode int

const (
	forAdd    elementMode = iota // with each interval's remaining time
	forEnsure                    // a placeholder so that a delete cannot miss
	forDelete                    // keys only
)

// elements turns entries into set elements: a start, and an end marker
// just past the last address unless the interval reaches the top.
func elements(dst []nftables.SetElement, es []entry, timed bool, mode elementMode, now time.Time) []nftables.SetElement {
	for _, e := range es {
		start := nftables.SetElement{Key: e.lo.AsSlice()}
		if timed {
			switch {
			case mode == forAdd && !e.until.IsZero():
				start.Timeout = ceilMillis(e.until.Sub(now))
			case mode == forEnsure:
				start.Timeout = time.Minute
			}
		}
		dst = append(dst, start)
		if next := e.hi.Next(); next.IsValid() {
			dst = append(dst, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return dst
}

// ceilMillis rounds up to the kernel's millisecond, so that a ban is never
// let go before its end; at least one millisecond.
func ceilMillis(d time.Duration) time.Duration {
	d = (d + time.Millisecond - 1).Truncate(time.Millisecond)
	return max(d, time.Millisecond)
}

// batch queues commands on the connection and flushes whenever the queue
// reaches the budget, so that a large reconciliation goes in as few
// transactions as the socket allows and a routine update in one.
type batch struct {
	e      *Enforcer
	queued int
	elems  []nftables.SetElement
}

func (b *batch) setElements(s *nftables.Set, timed bool, es []entry, mode elementMode, now time.Time) error {
	for len(es) > 0 {
		n := min(len(es), entriesPerMessage)
		b.elems = elements(b.elems[:0], es[:n], timed, mode, now)
		var err error
		if mode == forDelete {
			err = b.e.conn.SetDeleteElements(s, b.elems)
		} else {
			err = b.e.conn.SetAddElements(s, b.elems)
		}
		if err != nil {
			return fmt.Errorf("encode elements of set %s: %w", s.Name, err)
		}
		b.queued += n * bytesPerEntry
		es = es[n:]
		if b.queued >= b.e.flushBudget {
			if err := b.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// changes queues one change per set: placeholders for what is deleted (a
// delete of an element the kernel has already expired would fail the whole
// batch; adding it first makes the delete certain), the deletes, then the
// additions.
func (b *batch) changes(cs *[numSets]change, now time.Time) error {
	for id := range numSets {
		c := &cs[id]
		s := b.e.layout.sets[id]
		if err := b.setElements(s, id.timed(), c.del, forEnsure, now); err != nil {
			return err
		}
		if err := b.setElements(s, id.timed(), c.del, forDelete, now); err != nil {
			return err
		}
	}
	for id := range numSets {
		if err := b.setElements(b.e.layout.sets[id], id.timed(), cs[id].add, forAdd, now); err != nil {
			return err
		}
	}
	return nil
}

// flush sends what is queued as one transaction.
func (b *batch) flush() error {
	b.queued = 0
	start := time.Now()
	err := b.e.conn.Flush()
	b.e.m.flushSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		b.e.m.flushErrors.Inc()
		return fmt.Errorf("send changes to the kernel: %w", describe(err))
	}
	b.e.m.flushes.Inc()
	return nil
}

// describe adds what a few errnos mean here.
func describe(err error) error {
	switch {
	case errors.Is(err, syscall.ENOBUFS):
		return fmt.Errorf("%w (the kernel's answers overflowed the socket buffer)", err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (CAP_NET_ADMIN lost, or the table has become another program's)", err)
	}
	return err
}
