package lb

import (
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Names of the fixed objects of the table. Per service port there is a chain
// svc-<service>-<proto>-<port> with its endpoint pick map pick-<same>, and per
// endpoint a chain ep-<service>-<proto>-<port>-<ip>-<port> (suffix -a and an
// affinity set aff-... with ClientIP affinity).
const (
	mapServiceIPs   = "service-ips"   // ip daddr . meta l4proto . th dport : goto svc-...
	setServiceAddrs = "service-addrs" // every ClusterIP / ExternalIP: rejected unless DNAT'd
	chainServices   = "services"
	chainReject     = "reject-service"
	chainNATPre     = "nat-prerouting"
	chainNATOut     = "nat-output"
	chainNATPost    = "nat-postrouting"
	chainFilterPre  = "filter-prerouting"
	chainFilterOut  = "filter-output"
	chainZone       = "zone" // a node's table: the account's packets into its conntrack zone
)

// filterAfterDNAT runs after the nat chains (dstnat = -100), so a packet still
// addressed to a service IP there was not DNAT'd: no endpoint or undeclared port.
const filterAfterDNAT nftables.ChainPriority = -90

var (
	keyServiceIPs = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	hookPre       = nftables.ChainHookPrerouting
	hookOut       = nftables.ChainHookOutput
	hookPost      = nftables.ChainHookPostrouting
)

// baseChain is a hooked chain, declared as data.
type baseChain struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority nftables.ChainPriority
	rules    func(s *Syncer) [][]expr.Any
}

// baseChains are the hooked chains of the table. nat-output only exists with
// WithRouterOutput: every base chain that reaches the services tree makes the
// kernel re-validate the whole tree on each commit (~6 ms per walk at 1,000
// services x 10 endpoints), and nothing in the router netns needs Services.
func (s *Syncer) baseChains() []baseChain {
	if s.nodeBridge != "" {
		// A node's table (WithNodeBridge): the zone before conntrack, then the Services, for the account's
		// bridge only.
		return []baseChain{
			{chainZone, nftables.ChainTypeFilter, hookPre, *nftables.ChainPriorityRaw, setZone},
			{chainNATPre, nftables.ChainTypeNAT, hookPre, *nftables.ChainPriorityNATDest, jumpServicesFromBridge},
		}
	}
	out := []baseChain{
		{chainNATPre, nftables.ChainTypeNAT, hookPre, *nftables.ChainPriorityNATDest, jumpServices},
		{chainNATPost, nftables.ChainTypeNAT, hookPost, *nftables.ChainPriorityNATSource, masqueradeMarked},
		{chainFilterPre, nftables.ChainTypeFilter, hookPre, filterAfterDNAT, rejectUnDNATed},
		// Without nat-output this rejects the router's own service traffic
		// instead of letting it leak to the WAN.
		{chainFilterOut, nftables.ChainTypeFilter, hookOut, filterAfterDNAT, rejectUnDNATed},
	}
	if s.routerOutput {
		out = append(out, baseChain{chainNATOut, nftables.ChainTypeNAT, hookOut, *nftables.ChainPriorityNATDest, jumpServicesLocal})
	}
	return out
}

func jumpServices(*Syncer) [][]expr.Any {
	return [][]expr.Any{{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainServices}}}
}

// setZone puts the packets of the account's bridge into the account's conntrack zone.
func setZone(s *Syncer) [][]expr.Any {
	return [][]expr.Any{append(matchIifname(s.nodeBridge, expr.CmpOpEq),
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint16(s.zone)},
		&expr.Ct{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true},
	)}
}

// jumpServicesFromBridge is jumpServices for the packets of the account's bridge only: the node's other
// bridges are other accounts', with the same Service IPs.
func jumpServicesFromBridge(s *Syncer) [][]expr.Any {
	return [][]expr.Any{
		append(matchIifname(s.nodeBridge, expr.CmpOpNeq), &expr.Verdict{Kind: expr.VerdictReturn}),
		{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainServices}},
	}
}

// matchIifname compares the input interface's name with name (op: equal or not).
func matchIifname(name string, op expr.CmpOp) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

// jumpServicesLocal dispatches the router's own connections, marked for
// masquerade so the endpoint sees the router's bridge address like for any
// client in the account, never the WAN address the route picked. DNAT is
// terminal, so the mark is only cleared again for connections no service took.
func jumpServicesLocal(*Syncer) [][]expr.Any {
	return [][]expr.Any{
		setMarkBit(true),
		{&expr.Verdict{Kind: expr.VerdictJump, Chain: chainServices}},
		setMarkBit(false),
	}
}

// setMarkBit sets (or clears) MasqueradeMark in the packet mark.
func setMarkBit(on bool) []expr.Any {
	xor := uint32(0)
	if on {
		xor = MasqueradeMark
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^MasqueradeMark), Xor: binaryutil.NativeEndian.PutUint32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// masqueradeMarked is kube-proxy's mark-based masquerade: only connections a
// service chain marked (client inside the pod network) are masqueraded, so
// bridged pod-to-pod traffic (br_netfilter) and FIP clients keep their address.
func masqueradeMarked(*Syncer) [][]expr.Any {
	return [][]expr.Any{
		{
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(MasqueradeMark), Xor: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Verdict{Kind: expr.VerdictReturn},
		},
		{
			// Clear the bit again so it does not leak to other mark users.
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(0xffffffff), Xor: binaryutil.NativeEndian.PutUint32(MasqueradeMark)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
			&expr.Masq{FullyRandom: true},
		},
	}
}

func rejectUnDNATed(s *Syncer) [][]expr.Any {
	return [][]expr.Any{
		{
			loadDaddr(1),
			&expr.Lookup{SourceRegister: 1, SetName: setServiceAddrs},
			&expr.Verdict{Kind: expr.VerdictGoto, Chain: chainReject},
		},
		append(matchNet(loadDaddr(1), s.svcNet), &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainReject}),
	}
}

// matchNet compares the address loaded by load (into register 1) with n.
func matchNet(load *expr.Payload, n *net.IPNet) []expr.Any {
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(n.Mask), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(n.IP.To4())},
	}
}

func serviceDispatchRule() []expr.Any {
	return []expr.Any{
		loadDaddr(1),
		// Concatenation registers: 32-bit registers 8.. (reg 1 = 8..11).
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: mapServiceIPs, DestRegister: 0, IsDestRegSet: true},
	}
}

// rejectRules answer at once instead of letting the client time out.
func rejectRules() [][]expr.Any {
	return [][]expr.Any{
		{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
		},
		{
			&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3 /* port unreachable */},
		},
	}
}

func loadDaddr(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

func loadSaddr(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

// markForMasquerade marks connections from the pod network: after DNAT to a
// pod on the same bridge, the reply would otherwise bypass the router.
func markForMasquerade(podNet *net.IPNet) []expr.Any {
	return append(matchNet(loadSaddr(1), podNet), setMarkBit(true)...)
}

// selfPick sends a client that is endpoint e to itself (SetSelfPicks).
func selfPick(e epChain) []expr.Any {
	return fromEndpoint(e, &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.name})
}

// fromEndpoint is `ip saddr <e's address> <verdict>`: a client that is endpoint e itself.
func fromEndpoint(e epChain, v *expr.Verdict) []expr.Any {
	return []expr.Any{
		loadSaddr(1),
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: append([]byte(nil), e.addr[:]...)},
		v,
	}
}

func affinityLookup(set, chain string) []expr.Any {
	return []expr.Any{
		loadSaddr(1),
		&expr.Lookup{SourceRegister: 1, SetName: set},
		&expr.Verdict{Kind: expr.VerdictGoto, Chain: chain},
	}
}

// numgenDispatch is `numgen random mod N vmap @pick-...` whose elements are
// { 0 : goto ep-..., 1 : goto ep-..., ... }.
func numgenDispatch(n int, pickMap string) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: uint32(n), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: 1, SetName: pickMap, DestRegister: 0, IsDestRegSet: true},
	}
}

// endpointRules DNAT to the endpoint. In a node's table a client that picked itself returns first: the
// packet goes on, still addressed to the Service, to the router, whose masquerade makes the hairpin work
// (without it the pod would get its own packet back from its own address).
func (s *Syncer) endpointRules(e epChain) [][]expr.Any {
	var rules [][]expr.Any
	if s.nodeBridge != "" {
		rules = append(rules, fromEndpoint(e, &expr.Verdict{Kind: expr.VerdictReturn}))
	}
	if e.affSet != "" {
		rules = append(rules, []expr.Any{
			loadSaddr(1),
			&expr.Dynset{SrcRegKey: 1, SetName: e.affSet, Operation: uint32(unix.NFT_DYNSET_OP_UPDATE)},
		})
	}
	rules = append(rules, []expr.Any{
		&expr.Immediate{Register: 1, Data: append([]byte(nil), e.addr[:]...)},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(e.port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	})
	return rules
}

func dispatchElement(k dispatchKey, chain string) nftables.SetElement {
	key := make([]byte, 12) // each concatenated field padded to 4 bytes
	copy(key[0:4], k.addr[:])
	key[4] = k.proto
	copy(key[8:10], binaryutil.BigEndian.PutUint16(k.port))
	return nftables.SetElement{Key: key, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}}
}
