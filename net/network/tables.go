package network

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Chain and set names other packages may rely on.
const (
	// FIPForwardChain is the regular chain of the router table that decides
	// which traffic from the WAN may enter the account's bridge. It accepts
	// connections that the router DNAT'd (Services' Floating IPs, programmed
	// by net/lb in its own table); everything else from the Internet side is
	// dropped by the forward policy.
	FIPForwardChain = "fip-forward"
	// EdgeFIPSet is the set (type ipv4_addr) of the host edge table listing
	// the Floating IPs routed to this lab's routers: forwarded traffic into a
	// transit link is dropped unless it is a reply or goes to one of them.
	EdgeFIPSet = "fips"
	// EdgeTransitSet lists (type ifname) the host-side transit links of this lab.
	EdgeTransitSet = "transit"
	// recordChain exists in the edge table when this lab switched the host's
	// net.ipv4.ip_forward from 0 to 1, so the last cleanup can put it back.
	recordChain = "host-ip_forward-was-0"

	// UnderlayLink is a router's link into its lab's underlay (net/overlay
	// plugs it in a multi-node lab) and VXLANPort the port the account's
	// VXLAN device listens on there.
	UnderlayLink = "ul0"
	VXLANPort    = 4789
)

// routerTable declares the account router's filter + NAT table.
//
//	input:   replies, lo, from br0 ICMP + DNS on the DNS address, other br0
//	         traffic refused at once (reset / port unreachable), VXLAN from
//	         the underlay (ul0, multi-node labs), WAN dropped
//	forward: replies; br0<->br0 (pod to pod, also bridged frames when
//	         br_netfilter hands them to IP hooks); pods never to TransitRange
//	         (the host's and other routers' transit addresses); pods
//	         (10.244/16 only, no spoofing) out to the WAN; WAN->br0 only via
//	         fip-forward
//	postrouting: masquerade the pod network behind the WAN address
func routerTable(name string) tableSpec {
	filter := nftables.ChainTypeFilter
	return tableSpec{
		name: name,
		chains: []chainSpec{
			{
				name: "input", hook: nftables.ChainHookInput, prio: nftables.ChainPriorityFilter,
				typ: filter, policy: policyRef(nftables.ChainPolicyDrop),
				rules: []ruleSpec{
					rule("replies", establishedRelated(), accept()),
					rule("loopback", iifname("lo"), accept()),
					rule("pods ping the router", iifname(BridgeName), l4proto(unix.IPPROTO_ICMP), accept()),
					rule("pods query DNS over UDP", iifname(BridgeName), daddr(DNSIP), l4proto(unix.IPPROTO_UDP), dport(53), accept()),
					rule("pods query DNS over TCP", iifname(BridgeName), daddr(DNSIP), l4proto(unix.IPPROTO_TCP), dport(53), accept()),
					rule("refuse other TCP from pods fast", iifname(BridgeName), l4proto(unix.IPPROTO_TCP),
						&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}),
					rule("refuse the rest from pods fast", iifname(BridgeName),
						&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3 /* port unreachable */}),
					// A multi-node lab stretches br0 to its nodes by VXLAN (net/overlay); the router
					// terminates the tunnel itself, so the datagrams from the lab's underlay cross input.
					rule("VXLAN from the lab's nodes", iifname(UnderlayLink), l4proto(unix.IPPROTO_UDP), dport(VXLANPort), accept()),
					rule("nothing from the Internet", counter(), drop()),
				},
			},
			{
				name: "forward", hook: nftables.ChainHookForward, prio: nftables.ChainPriorityFilter,
				typ: filter, policy: policyRef(nftables.ChainPolicyDrop),
				rules: []ruleSpec{
					rule("replies", establishedRelated(), accept()),
					rule("pod to pod", iifname(BridgeName), oifname(BridgeName), accept()),
					// The transit links are the lab's plumbing, not the Internet: without this a server
					// bound to 0.0.0.0 on the host side answers pods on the host's transit address
					// (this account's 100.64.x.1 or another account's). The whole TransitRange is
					// refused, so every account's and every lab's transit addresses are covered by one
					// static rule; addresses beyond the host stay reachable.
					rule("pods never reach the transit links", iifname(BridgeName), daddrNet(TransitRange), counter(),
						&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 13 /* administratively prohibited */}),
					rule("pods to the Internet", iifname(BridgeName), oifname(WANName), saddrNet(PodCIDR), accept()),
					rule("Internet to pods only via fip-forward", iifname(WANName), oifname(BridgeName), jump(FIPForwardChain)),
					rule("everything else", counter(), drop()),
				},
			},
			{
				name: FIPForwardChain,
				rules: []ruleSpec{
					rule("DNAT'd by a Service's Floating IP", ctStatusDNAT(), accept()),
				},
			},
			{
				name: "postrouting", hook: nftables.ChainHookPostrouting, prio: nftables.ChainPriorityNATSource,
				typ: nftables.ChainTypeNAT, policy: policyRef(nftables.ChainPolicyAccept),
				rules: []ruleSpec{
					rule("pods leave behind the WAN address", oifname(WANName), saddrNet(PodCIDR), &expr.Masq{}),
				},
			},
		},
	}
}

// edgeTable declares the host-side table of a lab.
//
//	forward:     into a transit link only replies and Floating IPs: no new
//	             connection from the host's other links, from another account's
//	             router or from another lab reaches a router's WAN address
//	postrouting: transit traffic that leaves through a non-transit link is
//	             masqueraded (the outside sees the host); traffic to the host's
//	             own addresses never passes here, so local servers see the
//	             router's WAN address
//	input:       (with guardHost) the host's own services, the lab's API
//	             listener among them, are not for its pods: a pod reaches the
//	             Internet through the host, not the server that hosts the class;
//	             replies to the host's own connections (a Floating IP opened
//	             from the host) still come in
func edgeTable(name string, recordIPForward bool, guardHost bool) tableSpec {
	spec := tableSpec{
		name: name,
		sets: []setSpec{
			{name: EdgeTransitSet, keyType: nftables.TypeIFName, keyOrder: binaryutil.NativeEndian, dynamic: true,
				comment: "host-side transit links of this lab's account routers"},
			{name: EdgeFIPSet, keyType: nftables.TypeIPAddr, keyOrder: binaryutil.BigEndian, dynamic: true,
				comment: "Floating IPs routed to this lab's routers"},
		},
		chains: []chainSpec{
			{
				name: "forward", hook: nftables.ChainHookForward, prio: nftables.ChainPriorityFilter,
				typ: nftables.ChainTypeFilter, policy: policyRef(nftables.ChainPolicyAccept),
				rules: []ruleSpec{
					rule("replies into routers", ifnameInSet(expr.MetaKeyOIFNAME, EdgeTransitSet, false), establishedRelated(), accept()),
					rule("Floating IPs", ifnameInSet(expr.MetaKeyOIFNAME, EdgeTransitSet, false), daddrInSet(EdgeFIPSet), accept()),
					rule("no new connection into a router", ifnameInSet(expr.MetaKeyOIFNAME, EdgeTransitSet, false), counter(), drop()),
				},
			},
			{
				name: "postrouting", hook: nftables.ChainHookPostrouting, prio: nftables.ChainPriorityNATSource,
				typ: nftables.ChainTypeNAT, policy: policyRef(nftables.ChainPolicyAccept),
				rules: []ruleSpec{
					rule("routers leave behind the host",
						ifnameInSet(expr.MetaKeyIIFNAME, EdgeTransitSet, false),
						ifnameInSet(expr.MetaKeyOIFNAME, EdgeTransitSet, true),
						&expr.Masq{}),
				},
			},
		},
	}
	if guardHost {
		spec.chains = append(spec.chains, chainSpec{name: "input", hook: nftables.ChainHookInput, prio: nftables.ChainPriorityFilter,
			typ: nftables.ChainTypeFilter, policy: policyRef(nftables.ChainPolicyAccept),
			rules: []ruleSpec{
				rule("replies to the host", ifnameInSet(expr.MetaKeyIIFNAME, EdgeTransitSet, false), establishedRelated(), accept()),
				rule("pods reach none of the host's own services", ifnameInSet(expr.MetaKeyIIFNAME, EdgeTransitSet, false), counter(), drop()),
			}})
	}
	if recordIPForward {
		spec.chains = append(spec.chains, chainSpec{name: recordChain})
	}
	return spec
}
