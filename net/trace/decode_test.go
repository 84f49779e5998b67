package trace

import (
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Messages recorded from the kernel (Linux 6.18) in TestTraceThroughDNAT: the
// body of NFT_MSG_TRACE (nfgenmsg + attributes) as received on NFNLGRP_NFTRACE.
const (
	// Router, table svc chain prerouting: the DNAT rule (handle 2) accepted
	// the SYN 10.99.0.2:41124 → 10.96.0.10:80 arriving on ifindex 2; with
	// the conntrack attributes this kernel adds (new, DNAT'd).
	capturedDNAT = "0200000008000f0000000002080004000000000308000600cb21f1190f000200707265726f7574696e67000008000100737663000c00030000000000000000020c000500080001000000000108000a000000000206000b0000010000180008004500003c229340004006035b0a6300020a60000a18000900a0a400508bf5d3db00000000a002faf014fd0000120007003e56ccc1af0c2e73e050ca07080000000800150000000008050013000000000008001200f78f19870800140000000120"
	// Router, table filter chain forward: the counter rule (handle 2) let the
	// DNAT'd SYN continue from ifindex 2 to ifindex 3.
	capturedForward = "0200000008000f0000000002080004000000000308000600cb21f1190c000200666f7277617264000b00010066696c74657200000c00030000000000000000020c00050008000100ffffffff08000a000000000206000b000001000008000c000000000306000d0000010000180008004500003c229340003f0603600a6300020a63010218000900a0a41f908bf5d3db00000000a002faf015f80000120007003e56ccc1af0c2e73e050ca07080000000800150000000008050013000000000008001200f78f19870800140000000120"
)

func mustHex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encodeTrace builds a trace message body the way nf_tables_trace.c does.
func encodeTrace(t testing.TB, family uint8, build func(ae *netlink.AttributeEncoder)) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	build(ae)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{family, 0, 0, 0}, b...)
}

func ipv4Header(proto uint8, src, dst string) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], 60)
	h[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return h
}

func TestDecodeTrace(t *testing.T) {
	u32 := func(v uint32) *uint32 { return &v }
	hostID := func(b ...byte) uint32 { return binary.NativeEndian.Uint32(b) }
	for _, tc := range []struct {
		name    string
		data    []byte
		want    Trace // compared field by field below
		verdict *Verdict
		policy  *uint32
		pkt     string
		wantErr bool
	}{{
		name: "captured DNAT rule",
		data: mustHex(t, capturedDNAT),
		want: Trace{ID: hostID(0xcb, 0x21, 0xf1, 0x19), Family: unix.NFPROTO_IPV4, Table: "svc", Chain: "prerouting",
			Handle: 2, Type: TypeRule, NFProto: unix.NFPROTO_IPV4, IIF: 2, IIFType: 1,
			CtID: 0xf78f1987, CtDirection: 0, CtStatus: 0x120, CtState: 8},
		verdict: &Verdict{Code: NFAccept},
		pkt:     "tcp 10.99.0.2:41124 → 10.96.0.10:80 [SYN]",
	}, {
		name: "captured forward rule",
		data: mustHex(t, capturedForward),
		want: Trace{ID: hostID(0xcb, 0x21, 0xf1, 0x19), Family: unix.NFPROTO_IPV4, Table: "filter", Chain: "forward",
			Handle: 2, Type: TypeRule, NFProto: unix.NFPROTO_IPV4, IIF: 2, IIFType: 1, OIF: 3, OIFType: 1,
			CtID: 0xf78f1987, CtStatus: 0x120, CtState: 8},
		verdict: &Verdict{Code: unix.NFT_CONTINUE},
		pkt:     "tcp 10.99.0.2:41124 → 10.99.1.2:8080 [SYN]",
	}, {
		name: "policy drop with mark, no packet",
		data: encodeTrace(t, unix.NFPROTO_INET, func(ae *netlink.AttributeEncoder) {
			ae.Uint32(unix.NFTA_TRACE_NFPROTO, unix.NFPROTO_IPV4)
			ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_POLICY)
			ae.Bytes(unix.NFTA_TRACE_ID, binary.NativeEndian.AppendUint32(nil, 7))
			ae.String(unix.NFTA_TRACE_CHAIN, "forward")
			ae.String(unix.NFTA_TRACE_TABLE, "pi-filter")
			ae.Uint32(unix.NFTA_TRACE_POLICY, NFDrop)
			ae.Uint32(unix.NFTA_TRACE_MARK, 0x4000)
		}),
		want:   Trace{ID: 7, Family: unix.NFPROTO_INET, Table: "pi-filter", Chain: "forward", Type: TypePolicy, NFProto: unix.NFPROTO_IPV4, Mark: 0x4000},
		policy: u32(NFDrop),
		pkt:    "(no IPv4 header)",
	}, {
		name: "jump with target chain, icmp echo",
		data: encodeTrace(t, unix.NFPROTO_IPV4, func(ae *netlink.AttributeEncoder) {
			ae.Uint32(unix.NFTA_TRACE_TYPE, unix.NFT_TRACETYPE_RULE)
			ae.String(unix.NFTA_TRACE_CHAIN, "services")
			ae.String(unix.NFTA_TRACE_TABLE, "pi-svc")
			ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 42)
			ae.Nested(unix.NFTA_TRACE_VERDICT, func(nae *netlink.AttributeEncoder) error {
				nae.Int32(unix.NFTA_VERDICT_CODE, unix.NFT_JUMP)
				nae.String(unix.NFTA_VERDICT_CHAIN, "svc-podinfo-9898")
				return nil
			})
			ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv4Header(unix.IPPROTO_ICMP, "10.244.3.7", "10.96.0.10"))
			ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, []byte{8, 0, 0xab, 0xcd, 0x12, 0x34, 0, 1})
		}),
		want:    Trace{Family: unix.NFPROTO_IPV4, Table: "pi-svc", Chain: "services", Handle: 42, Type: TypeRule},
		verdict: &Verdict{Code: unix.NFT_JUMP, Chain: "svc-podinfo-9898"},
		pkt:     "icmp 10.244.3.7 → 10.96.0.10 type 8 code 0 id 4660",
	}, {
		name: "udp, transport header cut short: no ports",
		data: encodeTrace(t, unix.NFPROTO_IPV4, func(ae *netlink.AttributeEncoder) {
			ae.String(unix.NFTA_TRACE_CHAIN, "c")
			ae.String(unix.NFTA_TRACE_TABLE, "t")
			ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, ipv4Header(unix.IPPROTO_UDP, "10.0.0.1", "10.0.0.2"))
			ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, []byte{0, 53})
		}),
		want: Trace{Family: unix.NFPROTO_IPV4, Table: "t", Chain: "c"},
		pkt:  "udp 10.0.0.1:0 → 10.0.0.2:0",
	}, {
		name:    "no table",
		data:    encodeTrace(t, 2, func(ae *netlink.AttributeEncoder) { ae.String(unix.NFTA_TRACE_CHAIN, "c") }),
		wantErr: true,
	}, {
		name:    "shorter than nfgenmsg",
		data:    []byte{2, 0},
		wantErr: true,
	}, {
		name:    "attribute length past the end",
		data:    []byte{2, 0, 0, 0, 0x20, 0, 1, 0, 'x'},
		wantErr: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeTrace(netlink.Message{
				Header: netlink.Header{Type: netlink.HeaderType(subsysNFTables<<8 | unix.NFT_MSG_TRACE)},
				Data:   tc.data})
			if tc.wantErr {
				if err == nil {
					t.Fatalf("decoded %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w := tc.want
			if got.ID != w.ID || got.Family != w.Family || got.Table != w.Table || got.Chain != w.Chain ||
				got.Handle != w.Handle || got.Type != w.Type || got.NFProto != w.NFProto || got.IIF != w.IIF ||
				got.IIFType != w.IIFType || got.OIF != w.OIF || got.OIFType != w.OIFType || got.Mark != w.Mark ||
				got.CtID != w.CtID || got.CtDirection != w.CtDirection || got.CtStatus != w.CtStatus || got.CtState != w.CtState {
				t.Errorf("decoded\n%+v\nwant\n%+v", *got, w)
			}
			if (got.Verdict == nil) != (tc.verdict == nil) || got.Verdict != nil && *got.Verdict != *tc.verdict {
				t.Errorf("verdict %v, want %v", got.Verdict, tc.verdict)
			}
			if (got.Policy == nil) != (tc.policy == nil) || got.Policy != nil && *got.Policy != *tc.policy {
				t.Errorf("policy %v, want %v", got.Policy, tc.policy)
			}
			if s := got.Packet.String(); s != tc.pkt {
				t.Errorf("packet %q, want %q", s, tc.pkt)
			}
		})
	}
}

func TestDecodeTraceRejectsOtherMessages(t *testing.T) {
	_, err := DecodeTrace(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(subsysNFTables<<8 | unix.NFT_MSG_NEWRULE)},
		Data: mustHex(t, capturedDNAT)})
	if err == nil {
		t.Fatal("NFT_MSG_NEWRULE decoded as a trace message")
	}
}

func TestVerdictString(t *testing.T) {
	for _, tc := range []struct {
		v    Verdict
		want string
	}{
		{Verdict{Code: NFAccept}, "accept"},
		{Verdict{Code: NFDrop}, "drop"},
		{Verdict{Code: unix.NFT_CONTINUE}, "continue"},
		{Verdict{Code: unix.NFT_GOTO, Chain: "svc-a"}, "goto svc-a"},
		{Verdict{Code: 3 | 5<<16}, "queue 5"},
		{Verdict{Code: -9}, "verdict(-9)"},
	} {
		if got := tc.v.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.v, got, tc.want)
		}
	}
}

// The trace rule the session installs reads back as what it is meant to match.
func TestTraceRuleRendering(t *testing.T) {
	f := Flow{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddr("10.244.3.7"), SrcPort: 40001,
		Dst: netip.MustParseAddr("10.96.0.10"), DstPort: 9898}
	want := map[Flow]string{
		f:                                      "meta l4proto tcp ip saddr 10.244.3.7 ip daddr 10.96.0.10 th sport 40001 th dport 9898 meta nftrace set 1",
		f.reverse():                            "meta l4proto tcp ip saddr 10.96.0.10 ip daddr 10.244.3.7 th sport 9898 th dport 40001 meta nftrace set 1",
		{Proto: unix.IPPROTO_ICMP, Dst: f.Dst}: "meta l4proto icmp ip daddr 10.96.0.10 meta nftrace set 1",
	}
	for fl, w := range want {
		if got := RenderRule(&nftables.Rule{Exprs: fl.matchExprs()}); got != w {
			t.Errorf("%v:\n got %s\nwant %s", fl, got, w)
		}
	}
}

func TestFlowMatches(t *testing.T) {
	f := Flow{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000}
	pkt := func(src string, sport uint16, dst string, dport uint16) Packet {
		return Packet{Proto: unix.IPPROTO_TCP, Src: netip.MustParseAddr(src), SrcPort: sport, Dst: netip.MustParseAddr(dst), DstPort: dport}
	}
	for _, tc := range []struct {
		p    Packet
		want bool
	}{
		{pkt("10.0.0.2", 40000, "10.96.0.10", 80), true},  // forward, any destination
		{pkt("10.1.0.9", 8080, "10.0.0.2", 40000), true},  // reply from the DNAT'd endpoint
		{pkt("10.0.0.2", 40001, "10.96.0.10", 80), false}, // another connection
		{pkt("10.0.0.3", 40000, "10.96.0.10", 80), false}, // another client
	} {
		if got := f.matchesEither(tc.p); got != tc.want {
			t.Errorf("%v matches %v: %v, want %v", f, tc.p, got, tc.want)
		}
	}
	if udp := (Packet{Proto: unix.IPPROTO_UDP, Src: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000}); f.matchesEither(udp) {
		t.Errorf("tcp flow matched %v", udp)
	}
}

func TestConntrackNAT(t *testing.T) {
	a := netip.MustParseAddr
	c := Conntrack{
		Orig:  Tuple{Proto: 6, Src: a("10.244.3.7"), SrcPort: 40000, Dst: a("10.96.0.10"), DstPort: 9898},
		Reply: Tuple{Proto: 6, Src: a("10.244.9.1"), SrcPort: 9898, Dst: a("10.244.0.1"), DstPort: 40000},
	}
	if to, ok := c.DNAT(); !ok || to.String() != "10.244.9.1:9898" {
		t.Errorf("DNAT %v %v", to, ok)
	}
	if from, ok := c.SNAT(); !ok || from.String() != "10.244.0.1:40000" {
		t.Errorf("SNAT (masquerade) %v %v", from, ok)
	}
	plain := Conntrack{Orig: c.Orig, Reply: Tuple{Proto: 6, Src: c.Orig.Dst, SrcPort: 9898, Dst: c.Orig.Src, DstPort: 40000}}
	if _, ok := plain.DNAT(); ok {
		t.Error("DNAT reported for an untranslated entry")
	}
	if _, ok := plain.SNAT(); ok {
		t.Error("SNAT reported for an untranslated entry")
	}
}

// Rules of the shapes net/lb writes: a masked source address (a prefix match) and a mark set from a
// register read back as one operand each, not as the register's history.
func TestRenderMaskedAndRegisterSet(t *testing.T) {
	masked := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{10, 244, 0, 0}},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 255, 255}, Xor: []byte{0, 0, 64, 0}},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
	got := RenderRule(&nftables.Rule{Exprs: masked})
	want := "ip saddr != 10.244.0.0/16 meta mark set meta mark & 0xffffffff ^ 0x00004000"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	markTest := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0, 0, 0x40, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}
	if got, want := RenderRule(&nftables.Rule{Exprs: markTest}), "meta mark & 0x00004000 == 0x00000000 return"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestRenderCtState: the router's "replies" rule reads as nft prints it, not as a hex mask.
func TestRenderCtState(t *testing.T) {
	bits := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	for _, c := range []struct {
		op   expr.CmpOp
		data []byte
		want string
	}{
		{expr.CmpOpNeq, bits(0), "ct state established,related accept"},
		{expr.CmpOpEq, bits(0), "ct state & (established,related) == 0 accept"},
		{expr.CmpOpEq, bits(expr.CtStateBitESTABLISHED), "ct state & (established,related) == established accept"},
	} {
		rule := []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: bits(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: bits(0)},
			&expr.Cmp{Op: c.op, Register: 1, Data: c.data},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}
		if got := RenderRule(&nftables.Rule{Exprs: rule}); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}

// TestRenderCtZoneSet: a node's zone rule (net/lb WithNodeBridge) reads as nft prints it, both as written and
// as google/nftables reads it back from the kernel (no source register).
func TestRenderCtZoneSet(t *testing.T) {
	ifname := make([]byte, 16)
	copy(ifname, "b3")
	for _, ct := range []*expr.Ct{
		{Key: expr.CtKeyZONE, Register: 1, SourceRegister: true},
		{Key: expr.CtKeyZONE},
	} {
		rule := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
			&expr.Immediate{Register: 1, Data: binary.NativeEndian.AppendUint16(nil, 3)},
			ct,
		}
		if got, want := RenderRule(&nftables.Rule{Exprs: rule}), `iifname "b3" ct zone set 3`; got != want {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	}
}
