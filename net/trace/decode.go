package trace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Attributes newer kernels add to NFT_MSG_TRACE (nf_tables.h, after
// NFTA_TRACE_PAD); golang.org/x/sys/unix does not name them yet.
const (
	attrCtID        = 18 // NFTA_TRACE_CT_ID: conntrack id (be32)
	attrCtDirection = 19 // NFTA_TRACE_CT_DIRECTION: 0 original, 1 reply (u8)
	attrCtStatus    = 20 // NFTA_TRACE_CT_STATUS: IPS_* bits (be32)
	attrCtState     = 21 // NFTA_TRACE_CT_STATE: NF_CT_STATE_* bits (be32)
)

// Netfilter verdicts (include/uapi/linux/netfilter.h).
const (
	NFDrop        = 0
	NFAccept      = 1
	nfStolen      = 2
	nfQueue       = 3
	nfRepeat      = 4
	nfStop        = 5
	nfVerdictMask = 0xff
)

// nfnetlink subsystem of nf_tables and the multicast group trace messages go to
// (include/uapi/linux/netfilter/nfnetlink.h).
const (
	subsysNFTables = 10 // NFNL_SUBSYS_NFTABLES
	groupNFTrace   = 9  // NFNLGRP_NFTRACE
)

// TraceType says why the kernel sent a trace message.
type TraceType uint32

// The kernel's nft_trace_types.
const (
	TypeUnspec TraceType = unix.NFT_TRACETYPE_UNSPEC
	// TypePolicy: the packet reached the end of a base chain; Policy decided.
	TypePolicy TraceType = unix.NFT_TRACETYPE_POLICY
	// TypeReturn: the packet left a regular chain (end reached or return).
	TypeReturn TraceType = unix.NFT_TRACETYPE_RETURN
	// TypeRule: a rule matched; Verdict is what it did.
	TypeRule TraceType = unix.NFT_TRACETYPE_RULE
)

func (t TraceType) String() string {
	switch t {
	case TypePolicy:
		return "policy"
	case TypeReturn:
		return "return"
	case TypeRule:
		return "rule"
	case TypeUnspec:
		return "unspec"
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// Verdict is a netfilter verdict as the kernel reports it: Code is one of
// NF_DROP.. NF_STOP (>= 0, queue verdicts carry the queue number in the upper
// bits) or NFT_CONTINUE.. NFT_RETURN (< 0); Chain is the target of a jump or goto.
type Verdict struct {
	Code  int32
	Chain string
}

func (v Verdict) String() string {
	var s string
	switch v.Code {
	case unix.NFT_CONTINUE:
		s = "continue"
	case unix.NFT_BREAK:
		s = "break"
	case unix.NFT_JUMP:
		s = "jump"
	case unix.NFT_GOTO:
		s = "goto"
	case unix.NFT_RETURN:
		s = "return"
	default:
		if v.Code < 0 {
			return fmt.Sprintf("verdict(%d)", v.Code)
		}
		switch uint32(v.Code) & nfVerdictMask {
		case NFDrop:
			s = "drop"
		case NFAccept:
			s = "accept"
		case nfStolen:
			s = "stolen"
		case nfQueue:
			s = fmt.Sprintf("queue %d", uint32(v.Code)>>16)
		case nfRepeat:
			s = "repeat"
		case nfStop:
			s = "stop"
		default:
			s = fmt.Sprintf("verdict(%d)", v.Code)
		}
	}
	if v.Chain != "" {
		s += " " + v.Chain
	}
	return s
}

// Packet is what the kernel copied of the traced packet's IPv4 and transport
// headers (up to 40 and 20 bytes): enough for addresses, ports, ICMP type and
// TCP flags. Proto is 0 when no network header was sent or it was not IPv4.
type Packet struct {
	Proto    uint8 // IPPROTO_*
	Src, Dst netip.Addr
	// SrcPort, DstPort for TCP and UDP (and SCTP/UDPLite: ports are at the same offsets).
	SrcPort, DstPort uint16
	// ICMP type, code and echo id.
	ICMPType, ICMPCode uint8
	ICMPID             uint16
	TCPFlags           uint8 // FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10
	Len                uint16
}

// ProtoName is "tcp", "udp", "icmp" or the protocol number.
func ProtoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_ICMP:
		return "icmp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto %d", p)
}

func (p Packet) String() string {
	if !p.Src.IsValid() {
		return "(no IPv4 header)"
	}
	switch p.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP:
		s := fmt.Sprintf("%s %s:%d → %s:%d", ProtoName(p.Proto), p.Src, p.SrcPort, p.Dst, p.DstPort)
		if p.Proto == unix.IPPROTO_TCP {
			s += " [" + tcpFlags(p.TCPFlags) + "]"
		}
		return s
	case unix.IPPROTO_ICMP:
		return fmt.Sprintf("icmp %s → %s type %d code %d id %d", p.Src, p.Dst, p.ICMPType, p.ICMPCode, p.ICMPID)
	}
	return fmt.Sprintf("%s %s → %s", ProtoName(p.Proto), p.Src, p.Dst)
}

func tcpFlags(f uint8) string {
	names := []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}
	var out []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// Trace is one decoded NFT_MSG_TRACE message: the packet passed a rule, left a
// chain or met a base chain's policy.
type Trace struct {
	// ID is the kernel's pseudo id of the packet (the same for every message
	// about one packet in one namespace: `nft monitor trace` groups by it).
	ID uint32
	// Family is the table family (NFPROTO_IPV4, NFPROTO_INET, ...).
	Family uint8
	Table  string
	Chain  string
	// Handle is the rule's handle; 0 for policy and implicit-return messages.
	Handle  uint64
	Type    TraceType
	Verdict *Verdict // rule and return messages
	Policy  *uint32  // policy messages: NF_ACCEPT or NF_DROP
	// NFProto is the protocol the hook runs for (NFPROTO_IPV4 for an inet table seeing IPv4).
	NFProto uint32
	// IIF, OIF: interface indexes in the namespace (0: none at this hook).
	IIF, OIF         uint32
	IIFType, OIFType uint16
	Mark             uint32
	// Network and transport headers as the kernel copied them; Packet is their decoding.
	NetworkHeader, TransportHeader, LLHeader []byte
	Packet                                   Packet
	// Conntrack view of the packet (kernels that send it: CtID != 0).
	CtID        uint32
	CtDirection uint8
	CtStatus    uint32
	CtState     uint32
	hasPacket   bool
}

// HasPacket reports whether this message carried the packet's headers: the
// kernel sends them once per packet and chain walk, with the first message.
func (t *Trace) HasPacket() bool { return t.hasPacket }

var errNotTrace = errors.New("not an nf_tables trace message")

// DecodeTrace decodes a netlink message from the NFNLGRP_NFTRACE group. It
// fails on anything that is not an NFT_MSG_TRACE or is malformed, never panics.
func DecodeTrace(m netlink.Message) (*Trace, error) {
	if want := netlink.HeaderType(subsysNFTables<<8 | unix.NFT_MSG_TRACE); m.Header.Type != want {
		return nil, fmt.Errorf("message type %#x: %w", uint16(m.Header.Type), errNotTrace)
	}
	return decodeTraceData(m.Data)
}

// decodeTraceData decodes the body of an NFT_MSG_TRACE: the nfgenmsg header
// (family, version, resource id) followed by NFTA_TRACE_* attributes. Byte
// orders follow net/netfilter/nf_tables_trace.c: everything is big endian
// except NFTA_TRACE_ID, which the kernel puts in host order.
func decodeTraceData(b []byte) (*Trace, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("trace message of %d bytes: shorter than its nfgenmsg header", len(b))
	}
	t := &Trace{Family: b[0]}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return nil, fmt.Errorf("trace message attributes: %w", err)
	}
	ad.ByteOrder = binary.BigEndian
	need := func(n int) bool {
		if len(ad.Bytes()) < n {
			return false
		}
		return true
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TRACE_TABLE:
			t.Table = ad.String()
		case unix.NFTA_TRACE_CHAIN:
			t.Chain = ad.String()
		case unix.NFTA_TRACE_RULE_HANDLE:
			if need(8) {
				t.Handle = ad.Uint64()
			}
		case unix.NFTA_TRACE_TYPE:
			if need(4) {
				t.Type = TraceType(ad.Uint32())
			}
		case unix.NFTA_TRACE_VERDICT:
			v := &Verdict{}
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				nad.ByteOrder = binary.BigEndian
				for nad.Next() {
					switch nad.Type() {
					case unix.NFTA_VERDICT_CODE:
						if len(nad.Bytes()) >= 4 {
							v.Code = int32(nad.Uint32())
						}
					case unix.NFTA_VERDICT_CHAIN:
						v.Chain = nad.String()
					}
				}
				return nil
			})
			t.Verdict = v
		case unix.NFTA_TRACE_ID:
			if need(4) {
				t.ID = binary.NativeEndian.Uint32(ad.Bytes())
			}
		case unix.NFTA_TRACE_LL_HEADER:
			t.LLHeader = ad.Bytes()
		case unix.NFTA_TRACE_NETWORK_HEADER:
			t.NetworkHeader = ad.Bytes()
			t.hasPacket = true
		case unix.NFTA_TRACE_TRANSPORT_HEADER:
			t.TransportHeader = ad.Bytes()
		case unix.NFTA_TRACE_IIF:
			if need(4) {
				t.IIF = ad.Uint32()
			}
		case unix.NFTA_TRACE_IIFTYPE:
			if need(2) {
				t.IIFType = ad.Uint16()
			}
		case unix.NFTA_TRACE_OIF:
			if need(4) {
				t.OIF = ad.Uint32()
			}
		case unix.NFTA_TRACE_OIFTYPE:
			if need(2) {
				t.OIFType = ad.Uint16()
			}
		case unix.NFTA_TRACE_MARK:
			if need(4) {
				t.Mark = ad.Uint32()
			}
		case unix.NFTA_TRACE_NFPROTO:
			if need(4) {
				t.NFProto = ad.Uint32()
			}
		case unix.NFTA_TRACE_POLICY:
			if need(4) {
				p := ad.Uint32()
				t.Policy = &p
			}
		case attrCtID:
			if need(4) {
				t.CtID = ad.Uint32()
			}
		case attrCtDirection:
			if need(1) {
				t.CtDirection = ad.Bytes()[0]
			}
		case attrCtStatus:
			if need(4) {
				t.CtStatus = ad.Uint32()
			}
		case attrCtState:
			if need(4) {
				t.CtState = ad.Uint32()
			}
		}
	}
	if err := ad.Err(); err != nil {
		return nil, fmt.Errorf("trace message attributes: %w", err)
	}
	if t.Table == "" || t.Chain == "" {
		return nil, fmt.Errorf("trace message without table or chain (table %q, chain %q): %w", t.Table, t.Chain, errNotTrace)
	}
	t.Packet = decodePacket(t.NetworkHeader, t.TransportHeader)
	return t, nil
}

// decodePacket reads an IPv4 header and, when the kernel sent one, the
// transport header. Anything too short or not IPv4 leaves fields zero.
func decodePacket(nh, th []byte) Packet {
	var p Packet
	if len(nh) < 20 || nh[0]>>4 != 4 {
		return p
	}
	p.Proto = nh[9]
	p.Len = binary.BigEndian.Uint16(nh[2:4])
	p.Src = netip.AddrFrom4([4]byte(nh[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(nh[16:20]))
	switch p.Proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP, unix.IPPROTO_UDPLITE:
		if len(th) >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(th[0:2])
			p.DstPort = binary.BigEndian.Uint16(th[2:4])
		}
		if p.Proto == unix.IPPROTO_TCP && len(th) >= 14 {
			p.TCPFlags = th[13]
		}
	case unix.IPPROTO_ICMP:
		if len(th) >= 2 {
			p.ICMPType, p.ICMPCode = th[0], th[1]
		}
		if len(th) >= 6 {
			p.ICMPID = binary.BigEndian.Uint16(th[4:6])
		}
	}
	return p
}
