package trace

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TablePrefix starts the name of every trace table; the rest is the session id.
const TablePrefix = "pi-trace-"

// tracePriority runs the trace chains before everything else on the hook:
// before conntrack (-200), pilab's NAT (-100) and filter (0) chains, and one
// below raw (-300) so that even a raw-priority chain is traced.
const tracePriority nftables.ChainPriority = -301

// Flow selects the packets to trace. A zero field matches anything, so a flow
// can be narrowed to what survives a NAT: after a DNAT the destination
// changes and after a masquerade the source address does, but the client's
// source port stays (unless it clashes), so {Proto, SrcPort} follows one
// connection through every namespace when the caller picked that port.
// Replies (the same fields swapped) are traced too.
type Flow struct {
	Proto            uint8 // unix.IPPROTO_TCP, _UDP or _ICMP; required
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // TCP and UDP only
}

func (f Flow) String() string {
	addr := func(a netip.Addr, port uint16) string {
		s := "*"
		if a.IsValid() {
			s = a.String()
		}
		if f.Proto == unix.IPPROTO_TCP || f.Proto == unix.IPPROTO_UDP {
			p := "*"
			if port != 0 {
				p = fmt.Sprint(port)
			}
			s += ":" + p
		}
		return s
	}
	return fmt.Sprintf("%s %s → %s", ProtoName(f.Proto), addr(f.Src, f.SrcPort), addr(f.Dst, f.DstPort))
}

func (f Flow) hasPorts() bool { return f.Proto == unix.IPPROTO_TCP || f.Proto == unix.IPPROTO_UDP }

func (f Flow) validate() error {
	switch f.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
	case unix.IPPROTO_ICMP:
		if f.SrcPort != 0 || f.DstPort != 0 {
			return fmt.Errorf("flow %s: icmp has no ports; leave SrcPort and DstPort zero", f)
		}
	default:
		return fmt.Errorf("flow %s: protocol %d not traceable; use tcp, udp or icmp", f, f.Proto)
	}
	for _, a := range []netip.Addr{f.Src, f.Dst} {
		if a.IsValid() && !a.Is4() {
			return fmt.Errorf("flow %s: only IPv4 addresses are traced (pilab's networks are IPv4)", f)
		}
	}
	if !f.Src.IsValid() && !f.Dst.IsValid() && f.SrcPort == 0 && f.DstPort == 0 {
		return fmt.Errorf("flow %s matches every %s packet; give an address or a port", f, ProtoName(f.Proto))
	}
	return nil
}

func (f Flow) reverse() Flow {
	return Flow{Proto: f.Proto, Src: f.Dst, Dst: f.Src, SrcPort: f.DstPort, DstPort: f.SrcPort}
}

// matches reports whether a packet belongs to the flow in its forward direction.
func (f Flow) matches(p Packet) bool {
	if p.Proto != f.Proto {
		return false
	}
	if f.Src.IsValid() && p.Src != f.Src || f.Dst.IsValid() && p.Dst != f.Dst {
		return false
	}
	if f.hasPorts() && (f.SrcPort != 0 && p.SrcPort != f.SrcPort || f.DstPort != 0 && p.DstPort != f.DstPort) {
		return false
	}
	return true
}

// matchesEither is what the trace rules select: the flow or its replies.
func (f Flow) matchesEither(p Packet) bool { return f.matches(p) || f.reverse().matches(p) }

// matchExprs are the rule expressions that select the flow's packets.
func (f Flow) matchExprs() []expr.Any {
	cmp := func(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		cmp([]byte{f.Proto}),
	}
	if f.Src.IsValid() {
		b := f.Src.As4()
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, cmp(b[:]))
	}
	if f.Dst.IsValid() {
		b := f.Dst.As4()
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, cmp(b[:]))
	}
	if f.hasPorts() && f.SrcPort != 0 {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			cmp(binaryutil.BigEndian.PutUint16(f.SrcPort)))
	}
	if f.hasPorts() && f.DstPort != 0 {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			cmp(binaryutil.BigEndian.PutUint16(f.DstPort)))
	}
	// meta nftrace set 1
	return append(e,
		&expr.Immediate{Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: 1})
}

// addTraceTable adds, in one batch, table ip pi-trace-<id> with a prerouting
// chain (packets arriving on a link) and an output chain (packets the
// namespace sends itself), each holding a rule for the flow and one for its
// replies. Nothing else is matched or changed: the chains accept everything,
// so untraced packets take the same path as before.
func addTraceTable(c *nftables.Conn, name string, f Flow) error {
	t := c.AddTable(&nftables.Table{Name: name, Family: nftables.TableFamilyIPv4})
	accept := nftables.ChainPolicyAccept
	for _, h := range []struct {
		chain string
		hook  *nftables.ChainHook
	}{{"prerouting", nftables.ChainHookPrerouting}, {"output", nftables.ChainHookOutput}} {
		ch := c.AddChain(&nftables.Chain{Name: h.chain, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: h.hook, Priority: nftables.ChainPriorityRef(tracePriority), Policy: &accept})
		for _, dir := range []struct {
			what string
			f    Flow
		}{{"flow", f}, {"reply", f.reverse()}} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: dir.f.matchExprs(),
				UserData: userdata.AppendString(nil, userdata.TypeComment, "pi trace "+dir.what+": "+dir.f.String())})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("add nft table %s tracing %s: %w", name, f, err)
	}
	return nil
}

// TraceTables lists the trace tables in the namespace c talks to: those of
// running sessions and any a killed process left behind (remove those with
// DeleteTraceTables).
func TraceTables(c *nftables.Conn) ([]string, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nft tables: %w", err)
	}
	var names []string
	for _, t := range tables {
		if strings.HasPrefix(t.Name, TablePrefix) {
			names = append(names, t.Name)
		}
	}
	return names, nil
}

// deleteTable removes one trace table; a table already gone is fine.
func deleteTable(c *nftables.Conn, name string) error {
	names, err := TraceTables(c)
	if err != nil {
		return err
	}
	for _, n := range names {
		if n == name {
			c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyIPv4})
			if err := c.Flush(); err != nil {
				return fmt.Errorf("delete nft table %s: %w", name, err)
			}
		}
	}
	return nil
}
