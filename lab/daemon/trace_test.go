package daemon

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/pilab/pi/net/trace"
)

func TestParseTraceTarget(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    traceTarget
		wantErr string
	}{
		{"http://podinfo:9898/", traceTarget{scheme: "http", host: "podinfo", port: 9898, url: "http://podinfo:9898/"}, ""},
		{"http://10.96.0.10/healthz", traceTarget{scheme: "http", host: "10.96.0.10", port: 80, url: "http://10.96.0.10/healthz"}, ""},
		{"tcp://10.244.0.7:9898", traceTarget{scheme: "tcp", host: "10.244.0.7", port: 9898}, ""},
		{"10.244.0.7:80", traceTarget{scheme: "tcp", host: "10.244.0.7", port: 80}, ""},
		{"", traceTarget{}, "no target"},
		{"tcp://10.244.0.7", traceTarget{}, "has no port"},
		{"udp://10.244.0.2:53", traceTarget{scheme: "udp", host: "10.244.0.2", port: 53}, ""},
		{"udp://10.244.0.2", traceTarget{}, "has no port"},
		{"icmp://10.244.0.7", traceTarget{scheme: "icmp", host: "10.244.0.7"}, ""},
		{"icmp://10.244.0.7:80", traceTarget{}, "a ping has no port"},
		{"icmp://", traceTarget{}, "has no host"},
		{"sctp://10.244.0.7:80", traceTarget{}, `scheme "sctp" not traced`},
		{"http://:80/", traceTarget{}, "has no host"},
		{"http://podinfo:0/", traceTarget{}, "is not 1-65535"},
		{"http://podinfo:70000/", traceTarget{}, "is not 1-65535"},
	} {
		got, err := parseTraceTarget(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseTraceTarget(%q) = %+v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseTraceTarget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestClassifyTarget(t *testing.T) {
	a := netip.MustParseAddr
	l := labAddrs{
		account:  "default",
		pods:     map[netip.Addr]string{a("10.244.3.7"): "nginx"},
		others:   map[netip.Addr]string{a("10.244.9.9"): "bob/web"},
		services: map[netip.Addr]*corev1.Service{a("10.96.0.10"): {}},
		fips:     map[netip.Addr]string{a("198.18.0.1"): "default"},
		internet: map[netip.Addr]bool{a("203.0.113.80"): true},
	}
	for _, tc := range []struct {
		ip           string
		fromInternet bool
		want         string
		wantErr      string
	}{
		{"10.244.3.7", false, targetPod, ""},
		{"10.244.0.1", false, targetRouter, ""},
		{"10.244.0.2", false, targetRouter, ""},
		{"10.96.0.10", false, targetService, ""},
		{"198.18.0.1", true, targetFIP, ""},
		{"10.244.9.9", false, "", "pod bob/web of another account has it in its own network): accounts share no link"},
		{"10.244.5.5", false, "", "no pod of account default has address 10.244.5.5"},
		{"10.96.0.11", false, "", "not the ClusterIP of a Service of account default"},
		{"198.18.0.1", false, "", "trace it from the Internet side, with --from internet"},
		{"192.0.2.1", false, "", "192.0.2.1 is outside the lab"},
		{"203.0.113.80", false, targetInternet, ""},
		{"203.0.113.80", true, "", "not one of the lab's Floating IPs"},
		{"10.244.3.7", true, "", "not one of the lab's Floating IPs"},
		{"8.8.8.8", true, "", "not one of the lab's Floating IPs"},
	} {
		got, err := classifyTarget(a(tc.ip), tc.fromInternet, l)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("classifyTarget(%s, internet=%v) = %q, %v; want an error with %q", tc.ip, tc.fromInternet, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("classifyTarget(%s, internet=%v) = %q, %v; want %q", tc.ip, tc.fromInternet, got, err, tc.want)
		}
	}
}

func TestChainNote(t *testing.T) {
	for _, tc := range []struct{ table, chain, want string }{
		{"pi-svc", "svc-podinfo-tcp-9898", "Service podinfo, port 9898/tcp: pick one of its endpoints"},
		{"pi-svc", "svc-podinfo-lb-tcp-8080", "Service podinfo-lb, port 8080/tcp: pick one of its endpoints"},
		{"pi-svc", "ep-podinfo-tcp-9898-10.244.3.215-9898", "endpoint 10.244.3.215:9898 of Service podinfo"},
		{"pi-svc", "ep-my-web-udp-53-10.244.1.2-5353-a", "endpoint 10.244.1.2:5353 of Service my-web"},
		{"pi-svc", "services", "Service IP . protocol . port → that Service port's chain"},
		{"pi-router", "forward", ""}, // pilab's router rules carry comments of their own
		{"pi-svc", "mystery", ""},
	} {
		if got := chainNote(tc.table, tc.chain); got != tc.want {
			t.Errorf("chainNote(%s, %s) = %q, want %q", tc.table, tc.chain, got, tc.want)
		}
	}
}

// pkt is a packet as a trace message carries it.
type pkt struct {
	src, dst     string
	sport, dport uint16
	flags        uint8
	len          uint16
}

// traceEvent builds a trace event the way the kernel sends it, through trace.DecodeTrace.
func traceEvent(t *testing.T, ns string, id uint32, table, chain string, typ uint32, verdict int32, vchain string, p *pkt) trace.Event {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_TRACE_TABLE, table)
	ae.String(unix.NFTA_TRACE_CHAIN, chain)
	ae.Uint32(unix.NFTA_TRACE_TYPE, typ)
	idb := make([]byte, 4)
	binary.NativeEndian.PutUint32(idb, id)
	ae.Bytes(unix.NFTA_TRACE_ID, idb)
	if typ == unix.NFT_TRACETYPE_POLICY {
		ae.Uint32(unix.NFTA_TRACE_POLICY, uint32(verdict))
	} else {
		ae.Uint64(unix.NFTA_TRACE_RULE_HANDLE, 7)
		ae.Nested(unix.NFTA_TRACE_VERDICT, func(nae *netlink.AttributeEncoder) error {
			nae.ByteOrder = binary.BigEndian
			nae.Uint32(unix.NFTA_VERDICT_CODE, uint32(verdict))
			if vchain != "" {
				nae.String(unix.NFTA_VERDICT_CHAIN, vchain)
			}
			return nil
		})
	}
	if p != nil {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], p.len)
		h[9] = unix.IPPROTO_TCP
		s, d := netip.MustParseAddr(p.src).As4(), netip.MustParseAddr(p.dst).As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, h)
		th := make([]byte, 20)
		binary.BigEndian.PutUint16(th[0:], p.sport)
		binary.BigEndian.PutUint16(th[2:], p.dport)
		th[13] = p.flags
		ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, th)
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m := netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_TRACE)},
		Data: append([]byte{unix.NFPROTO_IPV4, 0, 0, 0}, b...)}
	tr, err := trace.DecodeTrace(m)
	if err != nil {
		t.Fatal(err)
	}
	return trace.Event{Netns: ns, Trace: tr, Rule: &trace.Rule{Handle: 7, Text: chain + " rule"}}
}

// TestBuildHops: the hops of a pod → Service trace in path order, from events as the session delivers
// them (namespaces interleaved); the kernel's packet id reused by a later packet does not mix it into the
// first packet's hops; an endpoint DNAT did not pick is left out; a silent namespace with rules is said
// so, marked inferred.
func TestBuildHops(t *testing.T) {
	const sport = 40329
	const (
		rule   = unix.NFT_TRACETYPE_RULE
		policy = unix.NFT_TRACETYPE_POLICY
	)
	syn := &pkt{"10.244.3.7", "10.96.0.10", sport, 9898, 0x02, 60}
	synNAT := &pkt{"10.244.0.1", "10.244.9.1", 50423, 9898, 0x02, 60}
	synackNAT := &pkt{"10.96.0.10", "10.244.3.7", 9898, sport, 0x12, 60}
	ack := &pkt{"10.244.3.7", "10.96.0.10", sport, 9898, 0x10, 52}
	r := "router default"
	events := []trace.Event{
		traceEvent(t, r, 1, "pi-svc", "nat-prerouting", rule, -3 /* jump */, "services", syn),
		traceEvent(t, r, 1, "pi-svc", "services", rule, -4 /* goto */, "svc-podinfo-tcp-9898", nil),
		traceEvent(t, r, 1, "pi-svc", "ep-podinfo-tcp-9898-10.244.9.1-9898", rule, trace.NFAccept, "", nil),
		{Netns: r, Conntrack: &trace.Conntrack{Type: "new",
			Orig:  trace.Tuple{Proto: 6, Src: netip.MustParseAddr("10.244.3.7"), Dst: netip.MustParseAddr("10.96.0.10"), SrcPort: sport, DstPort: 9898},
			Reply: trace.Tuple{Proto: 6, Src: netip.MustParseAddr("10.244.9.1"), Dst: netip.MustParseAddr("10.244.0.1"), SrcPort: 9898, DstPort: 50423}}},
		// Another namespace's events arrive in between.
		traceEvent(t, r, 1, "pi-router", "forward", rule, trace.NFAccept, "", synNAT),
		// The same rule again for id 1 without headers: not the SYN (it passed there already), a later packet.
		traceEvent(t, r, 1, "pi-router", "forward", rule, trace.NFAccept, "", nil),
		// The reply, arriving from the endpoint, un-NATed on its way out.
		traceEvent(t, r, 2, "pi-router", "forward", rule, trace.NFAccept, "", synackNAT),
		// The ACK reuses the SYN's packet id (the same buffer address): a later packet, not the SYN.
		traceEvent(t, r, 1, "pi-svc", "filter-prerouting", policy, trace.NFAccept, "", ack),
		traceEvent(t, r, 1, "pi-router", "forward", rule, trace.NFAccept, "", nil),
	}
	plan := []traceNS{
		{label: "pod nginx", role: "client", ip: netip.MustParseAddr("10.244.3.7")},
		{label: r, role: "router", rules: true},
		{label: "pod podinfo-a", role: "endpoint", ip: netip.MustParseAddr("10.244.9.1")},
		// The other endpoint, not picked: left out.
		{label: "pod podinfo-b", role: "endpoint", ip: netip.MustParseAddr("10.244.9.2")},
	}
	route := TraceHop{Netns: "pod nginx", Kind: "route", Via: "10.244.0.1", Text: "from 10.244.3.7 out eth0 via 10.244.0.1"}
	names := map[netip.Addr]string{netip.MustParseAddr("10.244.9.1"): "podinfo-a", netip.MustParseAddr("10.244.9.2"): "podinfo-b"}
	hops, ep := buildHops(plan, route, directionOf(unix.IPPROTO_TCP, sport), events, names)
	var got []string
	for _, h := range hops {
		got = append(got, h.Netns+" | "+h.Kind+" | "+h.Direction+" | "+h.Text)
	}
	want := []string{
		"pod nginx | route |  | from 10.244.3.7 out eth0 via 10.244.0.1",
		"router default | rule | request | pi-svc/nat-prerouting: nat-prerouting rule → jump services (every new connection goes through the Service map)",
		"router default | rule | request | pi-svc/services: services rule → goto svc-podinfo-tcp-9898 (Service IP . protocol . port → that Service port's chain)",
		"router default | rule | request | pi-svc/ep-podinfo-tcp-9898-10.244.9.1-9898: ep-podinfo-tcp-9898-10.244.9.1-9898 rule → accept (endpoint 10.244.9.1:9898 of Service podinfo)",
		"router default | rule | request | pi-router/forward: forward rule → accept",
		"router default | nat |  | conntrack: dnat to 10.244.9.1:9898 (podinfo-a); source rewritten to 10.244.0.1:50423 (snat/masquerade: the server answers 10.244.0.1)",
		"router default | rule | reply | pi-router/forward: forward rule → accept",
		"router default | more |  | the connection's later packets (ACKs, data, FIN) passed here too: 3 more trace messages",
		"pod podinfo-a | endpoint |  | to 10.244.9.1; this namespace has no nftables rules, so the kernel has nothing to report here",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("hops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if ep != netip.MustParseAddrPort("10.244.9.1:9898") {
		t.Errorf("endpoint %v, want 10.244.9.1:9898", ep)
	}

	// No DNAT seen (refused before it): the Service's endpoints were never reached and are left out.
	hops, ep = buildHops(plan, route, directionOf(unix.IPPROTO_TCP, sport), events[:2], names)
	for _, h := range hops {
		if strings.HasPrefix(h.Netns, "pod podinfo") {
			t.Errorf("endpoint hop without a DNAT: %+v", h)
		}
	}
	if ep.IsValid() {
		t.Errorf("endpoint %v without a DNAT", ep)
	}

	// Nothing from the router, which has rules: the trace says so and marks the reason inferred.
	hops, _ = buildHops(plan[:2], route, directionOf(unix.IPPROTO_TCP, sport), nil, names)
	if len(hops) != 2 || hops[1].Kind != "silent" || !hops[1].Inferred || !strings.Contains(hops[1].Text, "the kernel reported nothing here") {
		t.Errorf("silent router: %+v", hops)
	}
	if s := stoppedAt(hops); s != "the kernel reported nothing after pod nginx" {
		t.Errorf("stoppedAt = %q", s)
	}
	if !strings.Contains(hops[1].Text, "never reached this namespace") {
		t.Errorf("silent router behind a gateway route: %q", hops[1].Text)
	}
	// On-link (pod to pod): the router bridges the frames, below its IP rules.
	route.Via = ""
	hops, _ = buildHops(plan[:2], route, directionOf(unix.IPPROTO_TCP, sport), nil, names)
	if len(hops) != 2 || !hops[1].Inferred || !strings.Contains(hops[1].Text, "bridges the frames at layer 2") {
		t.Errorf("silent router, on-link client: %+v", hops)
	}
}

func TestStoppedAtNamesTheRefusingRule(t *testing.T) {
	hops := []TraceHop{
		{Netns: "pod nginx", Kind: "route"},
		// The jump to a rejecting chain comes first, the rule that refused it second: that one is named.
		{Netns: "router default", Kind: "rule", Direction: "request", Table: "pi-svc", Chain: "filter-output",
			Rule: "ip daddr @service-addrs goto reject-service", Verdict: "goto reject-service"},
		{Netns: "router default", Kind: "rule", Direction: "request", Table: "pi-router", Chain: "input",
			Rule: `iifname "br0" meta l4proto tcp reject`, Comment: "refuse other TCP from pods fast", Verdict: "drop"},
	}
	want := `router default: pi-router/input iifname "br0" meta l4proto tcp reject ("refuse other TCP from pods fast")`
	if got := stoppedAt(hops); got != want {
		t.Errorf("stoppedAt = %q, want %q", got, want)
	}
	r := &TraceResult{Error: "connection refused", StoppedAt: want}
	if got := summary(r); got != "connection refused; stopped at "+want {
		t.Errorf("summary = %q", got)
	}
	if got := summary(&TraceResult{HTTPStatus: 200, Ms: 3.14, AnsweredBy: "podinfo-a"}); got != "HTTP 200 in 3.1 ms, answered by podinfo-a" {
		t.Errorf("summary = %q", got)
	}
}
