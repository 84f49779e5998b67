package trace

import (
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
)

// Tuple is one direction of a conntrack entry.
type Tuple struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

func (t Tuple) String() string {
	if t.Proto == 6 || t.Proto == 17 {
		return fmt.Sprintf("%s %s:%d → %s:%d", ProtoName(t.Proto), t.Src, t.SrcPort, t.Dst, t.DstPort)
	}
	return fmt.Sprintf("%s %s → %s", ProtoName(t.Proto), t.Src, t.Dst)
}

// Conntrack is a conntrack event about the traced flow: the kernel created,
// updated or destroyed the entry. Orig is the tuple as the first packet had
// it; Reply is the tuple replies are expected with, which shows the NAT.
type Conntrack struct {
	Type        string // "new", "update" or "destroy"
	ID          uint32
	Orig, Reply Tuple
	Status      uint32 // IPS_* bits
	// TCPState is the TCP state (e.g. "SYN_SENT", "ESTABLISHED"); "" for UDP and ICMP.
	TCPState string
	Mark     uint32
}

// DNAT reports where the destination was rewritten to: the reply comes from
// there instead of from the original destination.
func (c Conntrack) DNAT() (netip.AddrPort, bool) {
	if c.Reply.Src != c.Orig.Dst || c.Reply.SrcPort != c.Orig.DstPort {
		return netip.AddrPortFrom(c.Reply.Src, c.Reply.SrcPort), true
	}
	return netip.AddrPort{}, false
}

// SNAT reports the source the packets left with (an SNAT or masquerade): the
// reply goes there instead of to the original source.
func (c Conntrack) SNAT() (netip.AddrPort, bool) {
	if c.Reply.Dst != c.Orig.Src || c.Reply.DstPort != c.Orig.SrcPort {
		return netip.AddrPortFrom(c.Reply.Dst, c.Reply.DstPort), true
	}
	return netip.AddrPort{}, false
}

func (c Conntrack) String() string {
	s := fmt.Sprintf("conntrack %s %s", c.Type, c.Orig)
	if to, ok := c.DNAT(); ok {
		s += fmt.Sprintf(" dnat→%s", to)
	}
	if from, ok := c.SNAT(); ok {
		s += fmt.Sprintf(" snat→%s", from)
	}
	if c.TCPState != "" {
		s += " " + c.TCPState
	}
	return s
}

// tcpStates are the kernel's tcp_conntrack values (TCP_CONNTRACK_*).
var tcpStates = []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
	"LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

func tupleOf(t conntrack.Tuple) Tuple {
	out := Tuple{Proto: t.Proto.Protocol, Src: t.IP.SourceAddress.Unmap(), Dst: t.IP.DestinationAddress.Unmap()}
	if out.Proto == 6 || out.Proto == 17 {
		out.SrcPort, out.DstPort = t.Proto.SourcePort, t.Proto.DestinationPort
	}
	return out
}

// conntrackOf converts a ti-mo/conntrack event; ok is false for events that
// are not about a flow (expectations).
func conntrackOf(ev conntrack.Event) (Conntrack, bool) {
	if ev.Flow == nil {
		return Conntrack{}, false
	}
	c := Conntrack{ID: ev.Flow.ID, Orig: tupleOf(ev.Flow.TupleOrig), Reply: tupleOf(ev.Flow.TupleReply),
		Status: uint32(ev.Flow.Status), Mark: ev.Flow.Mark}
	switch ev.Type {
	case conntrack.EventNew:
		c.Type = "new"
	case conntrack.EventUpdate:
		c.Type = "update"
	case conntrack.EventDestroy:
		c.Type = "destroy"
	default:
		return Conntrack{}, false
	}
	if tcp := ev.Flow.ProtoInfo.TCP; tcp != nil && int(tcp.State) < len(tcpStates) {
		c.TCPState = tcpStates[tcp.State]
	}
	return c, true
}

// matchesConntrack: the entry's original tuple is the flow (the first packet
// created it in the flow's direction) or its reverse (the first packet seen
// here was a reply, e.g. when the entry was created before the trace began).
func (f Flow) matchesConntrack(c Conntrack) bool {
	p := Packet{Proto: c.Orig.Proto, Src: c.Orig.Src, Dst: c.Orig.Dst, SrcPort: c.Orig.SrcPort, DstPort: c.Orig.DstPort}
	return f.matchesEither(p)
}
