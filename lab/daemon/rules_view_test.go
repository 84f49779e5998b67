package daemon

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// rulesFixture is an account router's Service table with Service web (10.96.0.10:80 → two endpoints)
// and other (10.96.0.20:53/udp → 10.244.9.9), its router table and the edge table, as readNftTable
// gives them.
func rulesFixture() (svc, router, edge *nftSnap) {
	rules := func(rs ...RuleView) chainSnap { return chainSnap{rules: rs} }
	svc = &nftSnap{netns: "pt-r0", family: "ip", name: "pt-svc", chains: map[string]chainSnap{
		"nat-prerouting":                {header: "type nat hook prerouting priority -100; policy accept;", rules: []RuleView{{Handle: 3, Text: "jump services"}}},
		"services":                      rules(RuleView{Handle: 4, Text: "ip daddr . meta l4proto . th dport vmap @service-ips"}),
		"svc-web-tcp-80":                rules(RuleView{Handle: 10, Text: "numgen random mod 2 vmap @pick-web-tcp-80"}),
		"ep-web-tcp-80-10.244.1.1-8080": rules(RuleView{Handle: 11, Text: "dnat to 10.244.1.1:8080"}),
		"ep-web-tcp-80-10.244.1.2-8080": rules(RuleView{Handle: 12, Text: "dnat to 10.244.1.2:8080"}),
		"svc-other-udp-53":              rules(RuleView{Handle: 20, Text: "numgen random mod 1 vmap @pick-other-udp-53"}),
		"ep-other-udp-53-10.244.9.9-53": rules(RuleView{Handle: 21, Text: "dnat to 10.244.9.9:53"}),
		"nat-postrouting":               rules(RuleView{Handle: 5, Text: "meta mark & 0x00004000 0 return"}),
		"filter-prerouting":             rules(RuleView{Handle: 6, Text: "ip daddr @service-addrs goto reject-service"}),
		"reject-service":                rules(RuleView{Handle: 7, Text: "meta l4proto tcp reject"}),
	}, sets: map[string]setSnap{
		"service-ips": {isMap: true, elems: []elemSnap{
			{text: "10.96.0.10 . tcp . 80 : goto svc-web-tcp-80", addr: netip.MustParseAddr("10.96.0.10"), chain: "svc-web-tcp-80"},
			{text: "10.96.0.20 . udp . 53 : goto svc-other-udp-53", addr: netip.MustParseAddr("10.96.0.20"), chain: "svc-other-udp-53"},
		}},
		"pick-web-tcp-80": {isMap: true, elems: []elemSnap{ // as the kernel lists them: in hash order
			{text: "1 : goto ep-web-tcp-80-10.244.1.2-8080", chain: "ep-web-tcp-80-10.244.1.2-8080"},
			{text: "0 : goto ep-web-tcp-80-10.244.1.1-8080", chain: "ep-web-tcp-80-10.244.1.1-8080"},
		}},
		"pick-other-udp-53": {isMap: true, elems: []elemSnap{{text: "0 : goto ep-other-udp-53-10.244.9.9-53", chain: "ep-other-udp-53-10.244.9.9-53"}}},
		"service-addrs": {elems: []elemSnap{
			{text: "10.96.0.10", addr: netip.MustParseAddr("10.96.0.10")},
			{text: "10.96.0.20", addr: netip.MustParseAddr("10.96.0.20")},
		}},
	}}
	router = &nftSnap{netns: "pt-r0", family: "ip", name: "pt-router", chains: map[string]chainSnap{
		"input": rules(RuleView{Handle: 1, Text: "ct state established,related accept", Comment: "replies"},
			RuleView{Handle: 2, Text: `iifname "br0" meta l4proto icmp accept`, Comment: "pods ping the router"}),
		"forward": rules(RuleView{Handle: 10, Text: "ct state established,related accept", Comment: "replies"},
			RuleView{Handle: 11, Text: `iifname "br0" oifname "br0" accept`, Comment: "pod to pod"},
			RuleView{Handle: 12, Text: `iifname "wan0" oifname "br0" jump fip-forward`, Comment: "Internet to pods only via fip-forward"},
			RuleView{Handle: 13, Text: "counter drop", Comment: "everything else"}),
		"fip-forward": rules(RuleView{Handle: 20, Text: "ct status & 0x00000020 != 0 accept", Comment: "DNAT'd by a Service's Floating IP"}),
		"postrouting": rules(RuleView{Handle: 30, Text: `oifname "wan0" ip saddr 10.244.0.0/16 masquerade`, Comment: "pods leave behind the WAN address"}),
	}, sets: map[string]setSnap{}}
	edge = &nftSnap{netns: "inet-pt", family: "ip", name: "pt-edge", chains: map[string]chainSnap{
		"forward": rules(RuleView{Handle: 2, Text: `oifname @transit ip daddr @fips accept`, Comment: "Floating IPs"}),
	}, sets: map[string]setSnap{"fips": {elems: []elemSnap{
		{text: "198.18.0.1", addr: netip.MustParseAddr("198.18.0.1")}, {text: "198.18.0.2", addr: netip.MustParseAddr("198.18.0.2")}}}}}
	return svc, router, edge
}

func chainNames(v *RulesView) []string {
	var out []string
	for _, t := range v.Tables {
		for _, c := range t.Chains {
			out = append(out, t.Name+"/"+c.Name)
		}
	}
	return out
}

func flow(src, dst string, sport, dport uint16, rsrc, rdst string, rsport, rdport uint16) conntrack.Flow {
	f := conntrack.NewFlow(6, 0, netip.MustParseAddr(src), netip.MustParseAddr(dst), sport, dport, 60, 0)
	f.TupleReply.IP.SourceAddress, f.TupleReply.IP.DestinationAddress = netip.MustParseAddr(rsrc), netip.MustParseAddr(rdst)
	f.TupleReply.Proto.SourcePort, f.TupleReply.Proto.DestinationPort = rsport, rdport
	return f
}

func TestSelectRules(t *testing.T) {
	svc, router, edge := rulesFixture()
	flows := []conntrack.Flow{
		// client → web's ClusterIP, DNAT'd to 10.244.1.2 and masqueraded behind the router.
		flow("10.244.3.3", "10.96.0.10", 40000, 80, "10.244.1.2", "10.244.0.1", 8080, 40000),
		// someone → other, not about web.
		flow("10.244.3.3", "10.96.0.20", 40001, 53, "10.244.9.9", "10.244.0.1", 53, 40001),
	}
	for _, tc := range []struct {
		name       string
		in         rulesInputs
		wantChains string
		wantSets   []string
		wantCT     int
		notes      string
	}{
		{
			name: "service",
			in:   rulesInputs{kind: "service", name: "web", addrs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, svcTable: svc, router: router, flows: flows},
			wantChains: "pt-svc/nat-prerouting pt-svc/services pt-svc/svc-web-tcp-80 pt-svc/ep-web-tcp-80-10.244.1.1-8080 " +
				"pt-svc/ep-web-tcp-80-10.244.1.2-8080 pt-svc/nat-postrouting pt-svc/filter-prerouting pt-svc/reject-service",
			wantSets: []string{"service-ips: 10.96.0.10 . tcp . 80 : goto svc-web-tcp-80", "pick-web-tcp-80: 0 : goto ep-web-tcp-80-10.244.1.1-8080",
				"service-addrs: 10.96.0.10"},
			wantCT: 1,
		},
		{
			name:       "service without endpoints",
			in:         rulesInputs{kind: "service", name: "idle", addrs: []netip.Addr{netip.MustParseAddr("10.96.0.30")}, svcTable: svc, router: router},
			wantChains: "pt-svc/filter-prerouting pt-svc/reject-service",
			notes:      "the dispatch map has no entry for 10.96.0.30: no ready endpoint",
		},
		{
			name:       "pod",
			in:         rulesInputs{kind: "pod", name: "web-2", addrs: []netip.Addr{netip.MustParseAddr("10.244.1.2")}, svcTable: svc, router: router, flows: flows},
			wantChains: "pt-svc/ep-web-tcp-80-10.244.1.2-8080 pt-svc/nat-postrouting pt-router/input pt-router/forward pt-router/postrouting",
			wantSets:   []string{"pick-web-tcp-80: 1 : goto ep-web-tcp-80-10.244.1.2-8080"},
			wantCT:     1,
		},
		{
			name: "fip",
			in: rulesInputs{kind: "fip", name: "198.18.0.1", addrs: []netip.Addr{netip.MustParseAddr("198.18.0.1")},
				svcTable: svc, router: router, edge: edge},
			wantChains: "pt-svc/filter-prerouting pt-svc/reject-service pt-router/forward pt-router/fip-forward pt-edge/forward",
			wantSets:   []string{"fips: 198.18.0.1"},
			notes:      "no ready endpoint",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &RulesView{Account: "default", Kind: tc.in.kind, Name: tc.in.name, Netns: "pt-r0"}
			for _, a := range tc.in.addrs {
				v.Addresses = append(v.Addresses, a.String())
			}
			selectRules(tc.in, v)
			if got := strings.Join(chainNames(v), " "); got != tc.wantChains {
				t.Errorf("chains\n got %s\nwant %s", got, tc.wantChains)
			}
			var sets []string
			for _, tb := range v.Tables {
				for _, s := range tb.Sets {
					for _, e := range s.Elements {
						sets = append(sets, s.Name+": "+e)
					}
				}
			}
			for _, w := range tc.wantSets {
				if !strings.Contains(strings.Join(sets, "\n"), w) {
					t.Errorf("no element %q in %q", w, sets)
				}
			}
			for _, s := range sets {
				if strings.Contains(s, "other") || strings.Contains(s, "198.18.0.2") {
					t.Errorf("element of another object shown: %s", s)
				}
			}
			if len(v.Conntrack) != tc.wantCT {
				t.Errorf("conntrack %+v, want %d entries", v.Conntrack, tc.wantCT)
			}
			if !strings.Contains(strings.Join(v.Notes, "\n"), tc.notes) {
				t.Errorf("notes %q, want %q", v.Notes, tc.notes)
			}
			// The pod's view of the router keeps only the rules about pods.
			if tc.in.kind == "pod" {
				for _, tb := range v.Tables {
					for _, c := range tb.Chains {
						for _, r := range c.Rules {
							if tb.Name == "pt-router" && !strings.Contains(r.Comment, "pod") {
								t.Errorf("router rule %q (%q) is not about pods", r.Text, r.Comment)
							}
						}
					}
				}
			}
		})
	}
}

func TestWriteRulesText(t *testing.T) {
	svc, router, _ := rulesFixture()
	v := &RulesView{Account: "default", Kind: "service", Name: "web", Addresses: []string{"10.96.0.10"}, Netns: "pt-r0"}
	selectRules(rulesInputs{kind: "service", addrs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, svcTable: svc, router: router,
		flows: []conntrack.Flow{flow("10.244.3.3", "10.96.0.10", 40000, 80, "10.244.1.2", "10.244.0.1", 8080, 40000)}}, v)
	v.Conntrack[0].State = "ESTABLISHED"
	var buf bytes.Buffer
	WriteRulesText(&buf, v)
	out := buf.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"# service web of account default (10.96.0.10); router netns pt-r0\n",
		"table ip pt-svc {   # in netns pt-r0\n",
		"\tmap service-ips {   # the dispatch map: address . protocol . port → the Service port's chain\n\t\telements = { 10.96.0.10 . tcp . 80 : goto svc-web-tcp-80 }\n\t}\n",
		"\tchain nat-prerouting {   # every new connection entering the router goes through the Service map\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tjump services # handle 3\n\t}\n",
		"\tchain svc-web-tcp-80 {   # Service web, port 80/tcp: pick one of its endpoints\n",
		"\t\tdnat to 10.244.1.2:8080 # handle 12\n",
		"# conntrack entries in netns pt-r0: 1\ntcp 10.244.3.3:40000 → 10.96.0.10:80 ESTABLISHED  reply 10.244.1.2:8080 → 10.244.0.1:40000 dnat→10.244.1.2:8080 snat→10.244.0.1:40000  (60s left)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q", want)
		}
	}
	// Comments print the way nft prints them.
	v = &RulesView{Kind: "fip"}
	selectRules(rulesInputs{kind: "fip", addrs: []netip.Addr{netip.MustParseAddr("198.18.0.1")}, router: router}, v)
	buf.Reset()
	WriteRulesText(&buf, v)
	if !strings.Contains(buf.String(), "\t\tct status & 0x00000020 != 0 accept comment \"DNAT'd by a Service's Floating IP\" # handle 20\n") {
		t.Errorf("no commented rule in\n%s", buf.String())
	}
}

func TestDecodeElem(t *testing.T) {
	dispatch := &nftables.Set{Name: "service-ips", IsMap: true, Concatenation: true}
	// The verdict as the kernel sends it, which google/nftables leaves undecoded in Val.
	code := make([]byte, 4)
	goto_ := int32(expr.VerdictGoto)
	binary.BigEndian.PutUint32(code, uint32(goto_))
	val, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_VERDICT_CODE, Data: code},
		{Type: unix.NFTA_VERDICT_CHAIN, Data: []byte("svc-dns-udp-53\x00")}})
	if err != nil {
		t.Fatal(err)
	}
	e := decodeElem(dispatch, nftables.SetElement{Key: []byte{10, 96, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0}, Val: val})
	if e.text != "10.96.0.10 . udp . 53 : goto svc-dns-udp-53" || e.chain != "svc-dns-udp-53" || e.addr.String() != "10.96.0.10" {
		t.Errorf("dispatch element %+v", e)
	}
	pick := &nftables.Set{Name: "pick-dns-udp-53", IsMap: true}
	if e := decodeElem(pick, nftables.SetElement{Key: []byte{1, 0, 0, 0}, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: "ep-x"}}); e.text != "1 : goto ep-x" && e.text != "16777216 : goto ep-x" {
		t.Errorf("pick element %+v", e)
	}
	ifs := &nftables.Set{Name: "transit", KeyType: nftables.TypeIFName}
	if e := decodeElem(ifs, nftables.SetElement{Key: append([]byte("ptw0"), make([]byte, 12)...)}); e.text != `"ptw0"` {
		t.Errorf("ifname element %+v", e)
	}
	addrs := &nftables.Set{Name: "fips", KeyType: nftables.TypeIPAddr}
	if e := decodeElem(addrs, nftables.SetElement{Key: []byte{198, 18, 0, 1}}); e.text != "198.18.0.1" {
		t.Errorf("address element %+v", e)
	}
}

func TestChainHeader(t *testing.T) {
	hook, prio, pol := nftables.ChainHookForward, nftables.ChainPriorityFilter, nftables.ChainPolicyDrop
	ch := &nftables.Chain{Name: "forward", Type: nftables.ChainTypeFilter, Hooknum: hook, Priority: prio, Policy: &pol}
	if got := chainHeader(ch); got != "type filter hook forward priority 0; policy drop;" {
		t.Errorf("header %q", got)
	}
	if got := chainHeader(&nftables.Chain{Name: "fip-forward"}); got != "" {
		t.Errorf("regular chain header %q", got)
	}
}
