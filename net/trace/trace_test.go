package trace

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
)

// topo is pod → router → server, three namespaces the test made: the router
// DNATs the "Service" 10.96.0.10:80 to the server's 10.99.1.2:8080 with a
// commented rule, like pilab's load balancer, and counts forwarded packets.
type topo struct {
	pod, rtr, srv string // netns paths
}

var (
	podIP = netip.MustParseAddr("10.99.0.2")
	srvIP = netip.MustParseAddr("10.99.1.2")
	vip   = netip.MustParseAddr("10.96.0.10")
)

const dnatComment = "svc-web: 10.96.0.10:80 → 10.99.1.2:8080"

func run(t testing.TB, ns string, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s %v: %v\n%s", ns, args, err, out)
	}
	return string(out)
}

func newTopo(t testing.TB) *topo {
	netnstest.RequireRoot(t, "network namespaces, veths and nftables")
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			netnstest.Missing(t, bin+" not installed (make deps)")
		}
	}
	lab := netnstest.Lab()
	names := []string{lab + "-pod", lab + "-rtr", lab + "-srv"}
	var paths []string
	for _, n := range names {
		p, err := netns.EnsureNamed(n)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := netns.DeleteNamed(n); err != nil {
				t.Error(err)
			}
		})
		paths = append(paths, p)
	}
	tp := &topo{pod: paths[0], rtr: paths[1], srv: paths[2]}
	veth := func(nsA, nameA, addrA, nsB, nameB, addrB string) {
		ha, err := netns.NewHandle(nsA)
		if err != nil {
			t.Fatal(err)
		}
		defer ha.Close()
		hb, err := netns.NewHandle(nsB)
		if err != nil {
			t.Fatal(err)
		}
		defer hb.Close()
		fb, err := netns.Open(nsB)
		if err != nil {
			t.Fatal(err)
		}
		defer fb.Close()
		if err := ha.LinkAdd(&vnl.Veth{LinkAttrs: vnl.LinkAttrs{Name: nameA}, PeerName: nameB,
			PeerNamespace: vnl.NsFd(int(fb.Fd()))}); err != nil {
			t.Fatalf("add veth %s/%s: %v", nameA, nameB, err)
		}
		for _, x := range []struct {
			h    *vnl.Handle
			name string
			addr string
		}{{ha, nameA, addrA}, {hb, nameB, addrB}} {
			l, err := x.h.LinkByName(x.name)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := vnl.ParseAddr(x.addr)
			if err := x.h.AddrAdd(l, a); err != nil {
				t.Fatal(err)
			}
			if err := x.h.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	veth(tp.pod, "eth0", "10.99.0.2/24", tp.rtr, "r-pod", "10.99.0.1/24")
	veth(tp.srv, "eth0", "10.99.1.2/24", tp.rtr, "r-srv", "10.99.1.1/24")
	run(t, names[0], "", "ip", "route", "add", "default", "via", "10.99.0.1")
	run(t, names[2], "", "ip", "route", "add", "default", "via", "10.99.1.1")
	run(t, names[1], "", "sysctl", "-qw", "net.ipv4.ip_forward=1")
	run(t, names[1], `
table ip svc {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.10 tcp dport 80 dnat to 10.99.1.2:8080 comment "`+dnatComment+`"
	}
}
table ip filter {
	chain forward {
		type filter hook forward priority filter; policy accept;
		counter comment "count forwarded"
	}
}
`, "nft", "-f", "-")
	run(t, names[2], `
table ip filter {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 8080 accept comment "server: accept web"
	}
}
`, "nft", "-f", "-")

	// The server: a Go listener inside the server namespace that answers "hi".
	var ln net.Listener
	if err := netns.Do(tp.srv, func() error {
		var err error
		ln, err = net.Listen("tcp", "10.99.1.2:8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	return tp
}

// request connects from the pod to the Service address with a chosen source
// port, as `pi trace` does so it can follow the flow through NAT.
func (tp *topo) request(t *testing.T, sport int) {
	t.Helper()
	var c net.Conn
	err := netns.Do(tp.pod, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: podIP.AsSlice(), Port: sport}, Timeout: 5 * time.Second}
		var err error
		c, err = d.Dial("tcp", "10.96.0.10:80")
		return err
	})
	if err != nil {
		t.Fatalf("connect from pod port %d to 10.96.0.10:80: %v", sport, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hi" {
		t.Fatalf("read from 10.96.0.10:80: %q, %v", b, err)
	}
}

// ruleset is the namespace's ruleset without counter values (the traced
// packets count as any others).
func ruleset(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+path, "nft", "--stateless", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset in %s: %v\n%s", path, err, out)
	}
	return string(out)
}

// collect reads events until none came for quiet.
func collect(s *Session, quiet time.Duration) []Event {
	var evs []Event
	for {
		select {
		case ev, ok := <-s.Events:
			if !ok {
				return evs
			}
			evs = append(evs, ev)
		case <-time.After(quiet):
			return evs
		}
	}
}

func TestTraceThroughDNAT(t *testing.T) {
	tp := newTopo(t)
	before := map[string]string{}
	for _, p := range []string{tp.pod, tp.rtr, tp.srv} {
		before[p] = ruleset(t, p)
	}
	sport := 40000 + int(time.Now().UnixNano()%10000)
	flow := Flow{Proto: unix.IPPROTO_TCP, Src: podIP, SrcPort: uint16(sport), Dst: vip, DstPort: 80}
	s, err := Start(context.Background(), flow, []Namespace{
		{Name: "pod", Path: tp.pod},
		{Name: "router", Path: tp.rtr},
		// Behind the router's DNAT the destination is the endpoint; the
		// client's address and port stay.
		{Name: "server", Path: tp.srv, Match: &Flow{Proto: unix.IPPROTO_TCP, Src: podIP, SrcPort: uint16(sport)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	for _, p := range []string{tp.pod, tp.rtr, tp.srv} {
		if !strings.Contains(ruleset(t, p), "table ip "+TablePrefix+s.ID) {
			t.Fatalf("no trace table %s%s in %s while tracing", TablePrefix, s.ID, p)
		}
	}

	tp.request(t, sport+1) // not the traced flow: must give no event
	tp.request(t, sport)
	evs := collect(s, 700*time.Millisecond)
	for _, ev := range evs {
		t.Log(ev)
	}

	var router, server []Event
	var ctNew *Conntrack
	for _, ev := range evs {
		if ev.Err != nil {
			t.Errorf("listener error: %v", ev)
		}
		if ev.Trace != nil {
			if ev.Trace.HasPacket() && ev.Trace.Packet.SrcPort != uint16(sport) && ev.Trace.Packet.DstPort != uint16(sport) {
				t.Errorf("event for a packet not of the traced flow: %v", ev)
			}
			if ev.Trace.Table == TablePrefix+s.ID {
				t.Errorf("event from the session's own trace table: %v", ev)
			}
			switch ev.Netns {
			case "router":
				router = append(router, ev)
			case "server":
				server = append(server, ev)
			default:
				t.Errorf("trace event in %s, which has no rules but the trace table: %v", ev.Netns, ev)
			}
		}
		if c := ev.Conntrack; c != nil {
			if c.Orig.SrcPort != uint16(sport) {
				t.Errorf("conntrack event of another flow: %v", ev)
			}
			if c.Type == "new" && ev.Netns == "router" {
				ctNew = c
			}
		}
	}

	// The router: the SYN hits the DNAT rule first, then the forward chain
	// (its counter rule, then the policy), all events of one packet id.
	if len(router) < 3 {
		t.Fatalf("router: %d trace events, want the DNAT rule, the forward rule and the forward policy", len(router))
	}
	syn := router[0].Trace
	if syn.Table != "svc" || syn.Chain != "prerouting" || syn.Type != TypeRule || syn.Handle == 0 {
		t.Errorf("router event 1: %v, want the svc prerouting DNAT rule", router[0])
	}
	if router[0].Rule == nil || router[0].Rule.Comment != dnatComment {
		t.Errorf("router event 1: rule %+v (lookup error %v), want comment %q", router[0].Rule, router[0].RuleErr, dnatComment)
	} else if !strings.Contains(router[0].Rule.Text, "dnat to 10.99.1.2:8080") ||
		!strings.Contains(router[0].Rule.Text, "ip daddr 10.96.0.10") {
		t.Errorf("router event 1: rule text %q, want the daddr match and the dnat target", router[0].Rule.Text)
	}
	if syn.Verdict == nil || syn.Verdict.Code != NFAccept {
		t.Errorf("router event 1: verdict %v, want accept", syn.Verdict)
	}
	if router[0].IIFName != "r-pod" || router[0].OIFName != "" {
		t.Errorf("router event 1: iif %q oif %q, want iif r-pod and no oif at prerouting", router[0].IIFName, router[0].OIFName)
	}
	wantPkt := Packet{Proto: unix.IPPROTO_TCP, Src: podIP, Dst: vip, SrcPort: uint16(sport), DstPort: 80}
	if p := syn.Packet; p.Proto != wantPkt.Proto || p.Src != wantPkt.Src || p.Dst != wantPkt.Dst ||
		p.SrcPort != wantPkt.SrcPort || p.DstPort != wantPkt.DstPort || p.TCPFlags&0x02 == 0 {
		t.Errorf("router event 1: packet %v, want the SYN %v", p, wantPkt)
	}
	fwd, pol := router[1], router[2]
	if fwd.Trace.Table != "filter" || fwd.Trace.Chain != "forward" || fwd.Trace.Type != TypeRule ||
		fwd.Rule == nil || fwd.Rule.Comment != "count forwarded" || fwd.Trace.Verdict == nil ||
		fwd.Trace.Verdict.Code != unix.NFT_CONTINUE || fwd.Trace.ID != syn.ID {
		t.Errorf("router event 2: %v, want the forward counter rule (continue) for packet %08x", fwd, syn.ID)
	}
	if fwd.IIFName != "r-pod" || fwd.OIFName != "r-srv" {
		t.Errorf("router event 2: iif %q oif %q, want r-pod → r-srv", fwd.IIFName, fwd.OIFName)
	}
	if p := fwd.Trace.Packet; p.Dst != srvIP || p.DstPort != 8080 || p.Src != podIP {
		t.Errorf("router event 2: packet %v, want it DNAT'd to 10.99.1.2:8080", p)
	}
	if pol.Trace.Type != TypePolicy || pol.Trace.Chain != "forward" || pol.Trace.Policy == nil || *pol.Trace.Policy != NFAccept {
		t.Errorf("router event 3: %v, want the forward chain's policy accept", pol)
	}

	// The server: its input rule accepted the DNAT'd SYN.
	if len(server) == 0 {
		t.Fatal("server: no trace event")
	}
	in := server[0]
	if in.Trace.Chain != "input" || in.Rule == nil || in.Rule.Comment != "server: accept web" ||
		in.Trace.Verdict == nil || in.Trace.Verdict.Code != NFAccept || in.IIFName != "eth0" {
		t.Errorf("server event 1: %v, want the input rule accepting on eth0", in)
	}
	if p := in.Trace.Packet; p.Src != podIP || p.Dst != srvIP || p.DstPort != 8080 || p.SrcPort != uint16(sport) {
		t.Errorf("server event 1: packet %v", p)
	}

	// The router's conntrack entry shows the DNAT in its reply tuple.
	if ctNew == nil {
		t.Fatal("router: no conntrack new event for the flow")
	}
	if to, ok := ctNew.DNAT(); !ok || to != netip.AddrPortFrom(srvIP, 8080) {
		t.Errorf("conntrack %v: DNAT %v %v, want to 10.99.1.2:8080", ctNew, to, ok)
	}
	if _, ok := ctNew.SNAT(); ok {
		t.Errorf("conntrack %v: reports an SNAT, there is none", ctNew)
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tp.pod, tp.rtr, tp.srv} {
		if after := ruleset(t, p); after != before[p] {
			t.Errorf("ruleset of %s changed by the trace:\nbefore:\n%s\nafter:\n%s", p, before[p], after)
		}
		left, err := DeleteTraceTables(p)
		if err != nil || len(left) != 0 {
			t.Errorf("trace tables left in %s: %v %v", p, left, err)
		}
	}
	if _, ok := <-s.Events; ok {
		t.Error("Events still open after Stop")
	}
}

func TestStartRejectsBroadFlow(t *testing.T) {
	for _, f := range []Flow{
		{Proto: unix.IPPROTO_TCP},
		{Proto: 47, Dst: vip},
		{Proto: unix.IPPROTO_ICMP, Dst: vip, DstPort: 1},
		{Proto: unix.IPPROTO_UDP, Dst: netip.MustParseAddr("fd00::1")},
	} {
		if _, err := Start(context.Background(), f, []Namespace{{Name: "x", Path: "/nonexistent"}}); err == nil {
			t.Errorf("Start(%v) accepted", f)
		}
	}
}
