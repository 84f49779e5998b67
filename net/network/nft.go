package network

import (
	"fmt"
	"net"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// A table is declared as data (chains with their rules, sets) and synced as a
// whole: ensureTable compares what the kernel has with the declaration by
// chain/set shape and rule comments, and only when they differ rebuilds the
// table in one batch. A re-run on an intact table therefore writes nothing.

type ruleSpec struct {
	comment string // unique within the chain; the identity used for comparison
	exprs   []expr.Any
}

type chainSpec struct {
	name   string
	hook   *nftables.ChainHook // nil: regular chain
	prio   *nftables.ChainPriority
	typ    nftables.ChainType
	policy *nftables.ChainPolicy
	rules  []ruleSpec
}

type setSpec struct {
	name    string
	keyType nftables.SetDatatype
	// keyOrder is recorded for the nft CLI only (it prints strings stored
	// without it reversed); the kernel ignores it.
	keyOrder binaryutil.ByteOrder
	comment  string
	// dynamic sets are filled at run time (by this package or by other
	// packages); a rebuild keeps their elements.
	dynamic bool
}

type tableSpec struct {
	name   string
	sets   []setSpec
	chains []chainSpec
}

func policyRef(p nftables.ChainPolicy) *nftables.ChainPolicy { return &p }

// nftConn opens an nftables connection to the namespace behind fd.
func nftConn(fd uintptr) (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(fd)))
	if err != nil {
		return nil, fmt.Errorf("nftables connection: %w", err)
	}
	return c, nil
}

func findTable(c *nftables.Conn, name string) (*nftables.Table, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nft tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, nil
}

func ruleComment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// tableMatches reports whether the kernel's table has exactly the declared
// chains (same hooks, priorities, policies), sets and rules (by comment).
func tableMatches(c *nftables.Conn, t *nftables.Table, spec tableSpec) (bool, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("list chains of %s: %w", spec.name, err)
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == spec.name {
			have[ch.Name] = ch
		}
	}
	if len(have) != len(spec.chains) {
		return false, nil
	}
	for _, cs := range spec.chains {
		ch, ok := have[cs.name]
		if !ok || (ch.Hooknum == nil) != (cs.hook == nil) {
			return false, nil
		}
		if cs.hook != nil {
			if *ch.Hooknum != *cs.hook || ch.Priority == nil || *ch.Priority != *cs.prio ||
				ch.Type != cs.typ || ch.Policy == nil || *ch.Policy != *cs.policy {
				return false, nil
			}
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return false, fmt.Errorf("list rules of %s/%s: %w", spec.name, cs.name, err)
		}
		if len(rules) != len(cs.rules) {
			return false, nil
		}
		for i, r := range rules {
			if ruleComment(r) != cs.rules[i].comment {
				return false, nil
			}
		}
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return false, fmt.Errorf("list sets of %s: %w", spec.name, err)
	}
	if len(sets) != len(spec.sets) {
		return false, nil
	}
	for _, ss := range spec.sets {
		i := slices.IndexFunc(sets, func(s *nftables.Set) bool { return s.Name == ss.name })
		if i < 0 || sets[i].KeyType.Name != ss.keyType.Name {
			return false, nil
		}
	}
	return true, nil
}

// ensureTable makes the table in c's namespace match spec. It returns whether
// it had to (re)build the table.
func ensureTable(c *nftables.Conn, spec tableSpec) (bool, error) {
	t, err := findTable(c, spec.name)
	if err != nil {
		return false, err
	}
	kept := map[string][]nftables.SetElement{}
	if t != nil {
		ok, err := tableMatches(c, t, spec)
		if err != nil {
			return false, err
		}
		if ok {
			return false, nil
		}
		for _, ss := range spec.sets {
			if !ss.dynamic {
				continue
			}
			s, err := c.GetSetByName(t, ss.name)
			if err != nil || s == nil {
				continue // set missing in the old table: nothing to keep
			}
			elems, err := c.GetSetElements(s)
			if err != nil {
				return false, fmt.Errorf("read set %s/%s before rebuild: %w", spec.name, ss.name, err)
			}
			kept[ss.name] = elems
		}
		c.DelTable(t)
	}
	if err := buildTable(c, spec, kept); err != nil {
		return false, err
	}
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("write nft table ip %s: %w", spec.name, err)
	}
	return true, nil
}

func buildTable(c *nftables.Conn, spec tableSpec, kept map[string][]nftables.SetElement) error {
	t := c.AddTable(&nftables.Table{Name: spec.name, Family: nftables.TableFamilyIPv4})
	sets := map[string]*nftables.Set{}
	for _, ss := range spec.sets {
		s := &nftables.Set{Table: t, Name: ss.name, KeyType: ss.keyType, KeyByteOrder: ss.keyOrder, Comment: ss.comment}
		if err := c.AddSet(s, kept[ss.name]); err != nil {
			return fmt.Errorf("nft set %s/%s: %w", spec.name, ss.name, err)
		}
		sets[ss.name] = s
	}
	chains := map[string]*nftables.Chain{}
	for _, cs := range spec.chains {
		ch := &nftables.Chain{Name: cs.name, Table: t}
		if cs.hook != nil {
			ch.Hooknum, ch.Priority, ch.Type, ch.Policy = cs.hook, cs.prio, cs.typ, cs.policy
		}
		chains[cs.name] = c.AddChain(ch)
	}
	for _, cs := range spec.chains {
		for _, rs := range cs.rules {
			exprs := make([]expr.Any, 0, len(rs.exprs))
			for _, e := range rs.exprs {
				// Lookups name their set; bind the set's batch ID too.
				if l, ok := e.(*expr.Lookup); ok {
					s, ok := sets[l.SetName]
					if !ok {
						return fmt.Errorf("rule %q looks up undeclared set %s", rs.comment, l.SetName)
					}
					l2 := *l
					l2.SetID = s.ID
					e = &l2
				}
				exprs = append(exprs, e)
			}
			c.AddRule(&nftables.Rule{
				Table:    t,
				Chain:    chains[cs.name],
				Exprs:    exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, rs.comment),
			})
		}
	}
	return nil
}

// deleteTable removes the table if present; it reports whether it did.
func deleteTable(c *nftables.Conn, name string) (bool, error) {
	t, err := findTable(c, name)
	if err != nil || t == nil {
		return false, err
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("delete nft table ip %s: %w", name, err)
	}
	return true, nil
}

// --- expression helpers (what `nft` compiles its syntax to) ---

func ifnameData(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func iifname(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameData(name)},
	}
}

func oifname(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameData(name)},
	}
}

// ifnameInSet matches `iifname @set` / `oifname @set` (negated with invert).
func ifnameInSet(key expr.MetaKey, set string, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set, Invert: invert},
	}
}

func daddrInSet(set string) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set},
	}
}

func ipNet(off uint32, n *net.IPNet) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(n.Mask), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.IP.To4()},
	}
}

func saddrNet(n *net.IPNet) []expr.Any { return ipNet(12, n) }
func daddrNet(n *net.IPNet) []expr.Any { return ipNet(16, n) }

func daddr(ip net.IP) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip.To4()},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

func dport(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

func ctStateIn(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// ipsDstNat is IPS_DST_NAT of include/uapi/linux/netfilter/nf_conntrack_common.h.
const ipsDstNat = 1 << 5

func ctStatusDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNat), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func establishedRelated() []expr.Any {
	return ctStateIn(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }
func drop() expr.Any   { return &expr.Verdict{Kind: expr.VerdictDrop} }
func jump(chain string) expr.Any {
	return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
}
func counter() expr.Any { return &expr.Counter{} }

func rule(comment string, parts ...any) ruleSpec {
	var exprs []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case expr.Any:
			exprs = append(exprs, v)
		case []expr.Any:
			exprs = append(exprs, v...)
		default:
			panic(fmt.Sprintf("rule %q: unexpected part %T", comment, p))
		}
	}
	return ruleSpec{comment: comment, exprs: exprs}
}
