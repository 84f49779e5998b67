// Package trace is the kernel half of `pi trace`: it shows which nftables
// rules a flow's packets really took, in each network namespace they cross,
// and what conntrack made of the flow (the DNAT to an endpoint, an SNAT or a
// masquerade). Observed, not inferred: every hop comes from the kernel.
//
// Start(ctx, flow, namespaces) does three things in each namespace:
//
//   - it joins the NFNLGRP_NFTRACE multicast group of NETLINK_NETFILTER and
//     decodes each NFT_MSG_TRACE message (DecodeTrace: table, chain, rule
//     handle, rule/return/policy, verdict, iif/oif, the IPv4 and TCP/UDP/ICMP
//     headers), naming the interfaces and mapping the handle back to the rule,
//     its comment (the userdata TLV pilab writes) and a short rendering;
//   - it listens for conntrack NEW/UPDATE/DESTROY events of the flow
//     (github.com/ti-mo/conntrack) and reports both tuples, so a caller sees
//     the DNAT'd endpoint and the SNAT'd source;
//   - then it adds table ip pi-trace-<session id> with chains on prerouting
//     and output at priority raw-1 (-301), whose only rules set
//     `meta nftrace set 1` on the flow's packets and their replies.
//
// Events arrive on Session.Events, each labelled with the namespace's name.
// Session.Stop (or the end of ctx) deletes every trace table, checks that
// none is left, and closes the channel.
//
// Why per-namespace sockets: netfilter state is per network namespace. Trace
// messages are multicast only to listeners in the namespace where the packet
// was traced, conntrack tables and their events are per namespace, and the
// kernel clears a packet's nftrace bit when it crosses a veth into another
// namespace, so each namespace needs both its own trace rule and its own
// listeners. The sockets are created inside the namespace (netns.Do) and stay
// bound to it.
//
// Why a separate table: pilab's own tables are declared and rebuilt as a whole
// by net/network and net/lb; a rule added to them would be seen as drift and
// would change what untraced packets execute. A table of the trace's own, at a
// priority before every pilab chain, leaves pilab's ruleset untouched (the
// `nft list ruleset` output minus the trace table is identical during and after
// the trace), its chains accept everything, and deleting it is one atomic
// operation. Untraced packets pass two rules that do not match them; traced
// packets additionally pay for the trace messages. The table name carries the
// session id, so concurrent traces never share or delete each other's tables,
// and TraceTables/DeleteTraceTables find ones a killed process left behind.
//
// Following a flow through NAT: the trace rule matches header fields, and a
// DNAT (or masquerade) upstream rewrites some of them. A Flow's zero fields
// match anything, and a Namespace can carry its own Match, so the caller
// selects the packets by what survives: typically the protocol and the client's
// source port, which `pi trace` picks itself when it makes the request. Within
// one namespace, the kernel gives all messages about one packet the same
// pseudo id; the session keeps a packet once its first message (which carries
// the headers) matched, so its later hooks, after a NAT rewrote it, stay in
// the trace.
//
// Order: events of one namespace arrive in the kernel's order. Namespaces are
// read by separate goroutines, so across namespaces the channel order is only
// approximately the packet's; a caller orders hops by the path it knows.
package trace
