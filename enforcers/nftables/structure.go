package nftables

import (
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// layout is what the enforcer's table should contain. The sets' IDs let
// rules and elements in one batch refer to sets created in it; they are
// ours, so that google/nftables' process-wide ID counter is never touched.
type layout struct {
	table  *nftables.Table
	sets   [numSets]*nftables.Set
	chains []*nftables.Chain
	cfg    Config
	nextID uint32 // for the anonymous port sets
}

var setComments = [numSets]string{
	ban4:   "mailban: banned IPv4 addresses; each expires in the kernel",
	ban6:   "mailban: banned IPv6 networks; each expires in the kernel",
	block4: "mailban: blocked IPv4 networks",
	block6: "mailban: blocked IPv6 networks",
}

func newLayout(cfg Config) *layout {
	l := &layout{cfg: cfg, table: &nftables.Table{Family: nftables.TableFamilyINet, Name: cfg.Table}}
	for id := range numSets {
		kt := nftables.TypeIPAddr
		if id.v6() {
			kt = nftables.TypeIP6Addr
		}
		l.sets[id] = &nftables.Set{
			Table:      l.table,
			ID:         uint32(id) + 1,
			Name:       id.String(),
			KeyType:    kt,
			Interval:   true,
			HasTimeout: id.timed(),
			Comment:    setComments[id],
		}
	}
	l.nextID = uint32(numSets) + 1
	hooks := []struct {
		name string
		hook *nftables.ChainHook
	}{{chainInput, nftables.ChainHookInput}}
	if cfg.Forward {
		hooks = append(hooks, struct {
			name string
			hook *nftables.ChainHook
		}{chainForward, nftables.ChainHookForward})
	}
	accept := nftables.ChainPolicyAccept
	for _, h := range hooks {
		l.chains = append(l.chains, &nftables.Chain{
			Name:     h.name,
			Table:    l.table,
			Hooknum:  h.hook,
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(cfg.Priority)),
			Type:     nftables.ChainTypeFilter,
			Policy:   &accept,
		})
	}
	return l
}

// sameSet says whether a set found in the kernel is one of ours as we
// would create it, so that its elements can be kept.
func (l *layout) sameSet(id setID, s *nftables.Set) bool {
	want := l.sets[id]
	return s.KeyType.GetNFTMagic() == want.KeyType.GetNFTMagic() && s.KeyType.Bytes == want.KeyType.Bytes &&
		s.Interval && s.HasTimeout == want.HasTimeout && s.Timeout == 0 &&
		!s.IsMap && !s.Constant && !s.Concatenation && !s.Anonymous
}

// wantedChain returns our definition of a chain found in the kernel, nil
// when we do not want it or it differs in hook, priority or type (a base
// chain cannot be changed in place).
func (l *layout) wantedChain(c *nftables.Chain) *nftables.Chain {
	for _, w := range l.chains {
		if c.Name != w.Name {
			continue
		}
		if c.Hooknum == nil || *c.Hooknum != *w.Hooknum || c.Priority == nil || *c.Priority != *w.Priority ||
			c.Type != w.Type || (c.Policy != nil && *c.Policy != nftables.ChainPolicyAccept) {
			return nil
		}
		return w
	}
	return nil
}

func anonymous(name string) bool { return strings.HasPrefix(name, "__") }

// rules are the rules of one base chain:
//
//	meta l4proto != tcp return             (only with MailPortsOnly)
//	th dport != { 25, 465, ... } return     (only with MailPortsOnly)
//	ip saddr @ban4 counter drop
//	ip6 saddr @ban6 counter drop
//	ip saddr @block4 counter drop
//	ip6 saddr @block6 counter drop
//
// Return in a base chain ends this chain only: the packet goes on to the
// host's own chains.
func (l *layout) addRules(c *nftables.Conn, ch *nftables.Chain) error {
	if l.cfg.MailPortsOnly {
		c.AddRule(&nftables.Rule{Table: l.table, Chain: ch, UserData: comment("mailban: only TCP is limited to mail ports"), Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
		ports := &nftables.Set{
			Table: l.table, ID: l.nextID, Name: "__set%d",
			Anonymous: true, Constant: true, KeyType: nftables.TypeInetService,
		}
		l.nextID++
		elems := make([]nftables.SetElement, len(l.cfg.MailPorts))
		for i, p := range l.cfg.MailPorts {
			elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
		}
		if err := c.AddSet(ports, elems); err != nil {
			return err
		}
		c.AddRule(&nftables.Rule{Table: l.table, Chain: ch, UserData: comment("mailban: other ports are not refused"), Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID, Invert: true},
			&expr.Verdict{Kind: expr.VerdictReturn},
		}})
	}
	for id := range numSets {
		proto, offset, length := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
		if id.v6() {
			proto, offset, length = unix.NFPROTO_IPV6, 8, 16
		}
		s := l.sets[id]
		c.AddRule(&nftables.Rule{Table: l.table, Chain: ch, UserData: comment("mailban: " + s.Name), Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	return nil
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }
