package lb

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
)

var clusterIP = net.IPv4(10, 96, 0, 10)

func ep(ip net.IP, port uint16) Endpoint { return Endpoint{IP: ip, Port: port} }

func tcpSvc(name string, cip net.IP, port uint16, eps ...Endpoint) Service {
	return Service{Name: name, ClusterIP: cip, Ports: []Port{{Name: "http", Protocol: "TCP", Port: port, Endpoints: eps}}}
}

// account is a topology with TCP servers on :8080 and UDP servers on :5353
// in pods 1..n-1 (pod 0 is a client only) and a Syncer for its router.
type account struct {
	*topo
	lb *Syncer
}

func newAccount(t testing.TB, prefix, name string, pods int, opts ...Option) *account {
	return newAccountBrNF(t, prefix, name, pods, false, opts...)
}

func newAccountBrNF(t testing.TB, prefix, name string, pods int, brNetfilter bool, opts ...Option) *account {
	t.Helper()
	tp := newTopoBrNF(t, prefix, name, pods, brNetfilter)
	for i, p := range tp.pods {
		if i == 0 {
			continue
		}
		serveTCP(t, p.path, ":8080", p.name)
		serveUDP(t, p.path, ":5353", p.name)
	}
	s, err := New(tp.router, prefix+"-lb", opts...)
	must(t, err, "lb.New")
	// Registered after the topology, so it runs before the netns go away.
	t.Cleanup(func() {
		if err := s.Delete(); err != nil {
			t.Errorf("Delete: %v", err)
		}
	})
	return &account{topo: tp, lb: s}
}

func (a *account) sync(t testing.TB, svcs ...Service) Stats {
	t.Helper()
	st, err := a.lb.Sync(svcs)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return st
}

func (a *account) podEP(i int) Endpoint { return ep(a.pods[i].ip, 8080) }

// count asks n times from nsPath and counts answers per endpoint name.
func count(t testing.TB, nsPath, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		a, err := ask(nsPath, addr, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", i, addr, err)
		}
		got[who(a)]++
	}
	return got
}

func TestSpreadHairpinAndMasquerade(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	// net/network keeps bridged frames out of the IP hooks; the rules must
	// also hold if br_netfilter hands them to nftables.
	for _, brnf := range []bool{false, true} {
		t.Run(fmt.Sprintf("br_netfilter=%v", brnf), func(t *testing.T) {
			testSpreadHairpinAndMasquerade(t, newAccountBrNF(t, netnstest.Lab(), "a", 4, brnf))
		})
	}
}

func testSpreadHairpinAndMasquerade(t *testing.T, a *account) {
	st := a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2), a.podEP(3)))
	if !st.Full {
		t.Errorf("first Sync: Full = false, want a full build")
	}
	got := count(t, a.pods[0].path, "10.96.0.10:80", 300)
	for i := 1; i <= 3; i++ {
		// Expected 100 each; 50 is more than 6 standard deviations away.
		if n := got[a.pods[i].name]; n < 50 {
			t.Errorf("endpoint %s took %d of 300 connections, want a fair share (~100): %v", a.pods[i].name, n, got)
		}
	}

	// The client is on the same bridge: the endpoint must see the router,
	// or its reply would go straight back and be dropped by the client.
	ans, err := ask(a.pods[0].path, "10.96.0.10:80", 2*time.Second)
	must(t, err, "ask")
	if !strings.HasSuffix(ans, " "+routerIP.String()) {
		t.Errorf("pod client answer %q: want source masqueraded to %s", ans, routerIP)
	}

	// Hairpin: pod 1 reaches itself through its own service.
	a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2), a.podEP(3)),
		tcpSvc("self", net.IPv4(10, 96, 0, 11), 80, a.podEP(1)))
	for i := 0; i < 5; i++ {
		ans, err := ask(a.pods[1].path, "10.96.0.11:80", 2*time.Second)
		if err != nil {
			t.Fatalf("hairpin: pod 1 -> its own service: %v", err)
		}
		if who(ans) != a.pods[1].name {
			t.Fatalf("hairpin answer %q, want %s", ans, a.pods[1].name)
		}
	}
}

func TestEndpointChangesIncremental(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	a := newAccount(t, netnstest.Lab(), "a", 4)
	other := tcpSvc("other", net.IPv4(10, 96, 0, 20), 80, a.podEP(1))
	st := a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2)), other)
	if !st.Full {
		t.Fatalf("first Sync not full: %+v", st)
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 40); got[a.pods[3].name] != 0 {
		t.Fatalf("pod 3 is no endpoint yet but got %d connections", got[a.pods[3].name])
	}

	// Nothing changed: nothing is sent.
	st = a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2)), other)
	if st.Full || st.Ops != 0 {
		t.Errorf("unchanged Sync: %+v, want Full=false Ops=0", st)
	}

	// Added endpoint joins: endpoint chain + its DNAT rule; service chain
	// and its pick map flushed, refilled with one element per endpoint (3),
	// mark rule + numgen rule.
	st = a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2), a.podEP(3)), other)
	if st.Full || st.Ops != 2+2+3+2 {
		t.Errorf("one endpoint added: %+v, want an incremental Sync of 9 ops", st)
	}
	t.Logf("endpoint added: %+v", st)
	deadline := time.Now().Add(time.Second)
	for {
		a, err := ask(a.pods[0].path, "10.96.0.10:80", 2*time.Second)
		must(t, err, "ask")
		if who(a) == "a-pod3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("added endpoint pod 3 got no connection within 1s of Sync")
		}
	}

	// Removed endpoint: no new connection may reach it once Sync returned.
	// Endpoint chain deleted + the same rewrite with 2 elements.
	st = a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2)), other)
	if st.Full || st.Ops != 1+2+2+2 {
		t.Errorf("one endpoint removed: %+v, want an incremental Sync of 7 ops", st)
	}
	t.Logf("endpoint removed: %+v", st)
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 100); got[a.pods[3].name] != 0 {
		t.Errorf("removed endpoint pod 3 still got %d of 100 new connections", got[a.pods[3].name])
	}
	// The untouched service still works.
	if got := count(t, a.pods[0].path, "10.96.0.20:80", 5); got[a.pods[1].name] != 5 {
		t.Errorf("untouched service: %v", got)
	}

	// Service removed: its ClusterIP now rejects.
	st = a.sync(t, other)
	t.Logf("service removed: %+v", st)
	if _, err := ask(a.pods[0].path, "10.96.0.10:80", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("removed service: got %v, want connection refused", err)
	}
}

func TestRejectsFast(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	a := newAccount(t, netnstest.Lab(), "a", 2)
	a.sync(t,
		tcpSvc("empty", clusterIP, 80),
		Service{Name: "dns", ClusterIP: net.IPv4(10, 96, 0, 12), Ports: []Port{{Protocol: "UDP", Port: 53}}},
		tcpSvc("web", net.IPv4(10, 96, 0, 11), 80, a.podEP(1)))
	cases := []struct{ what, addr string }{
		{"service without endpoints", "10.96.0.10:80"},
		{"undeclared port of a ClusterIP", "10.96.0.11:81"},
	}
	for _, c := range cases {
		start := time.Now()
		_, err := ask(a.pods[0].path, c.addr, 3*time.Second)
		took := time.Since(start)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s: got %v, want connection refused", c.what, err)
		}
		if took > time.Second {
			t.Errorf("%s: refused after %v, want < 1s", c.what, took)
		}
	}
	// UDP: ICMP port unreachable surfaces as ECONNREFUSED on a connected socket.
	var c net.Conn
	must(t, netns.Do(a.pods[0].path, func() (err error) {
		c, err = net.Dial("udp4", "10.96.0.12:53")
		return err
	}), "dial udp")
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	c.Write([]byte("q"))
	_, err := c.Read(make([]byte, 64))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("UDP service without endpoints: read got %v, want connection refused (ICMP port unreachable)", err)
	}
}

func TestUDPConntrackFlush(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	a := newAccount(t, netnstest.Lab(), "a", 3)
	udp := func(eps ...Endpoint) Service {
		return Service{Name: "dns", ClusterIP: clusterIP, Ports: []Port{{Name: "dns", Protocol: "UDP", Port: 53, Endpoints: eps}}}
	}
	a.sync(t, udp(ep(a.pods[1].ip, 5353)))

	// One client socket = one conntrack entry for the whole test.
	var c net.Conn
	must(t, netns.Do(a.pods[0].path, func() (err error) {
		c, err = net.Dial("udp4", "10.96.0.10:53")
		return err
	}), "dial udp")
	defer c.Close()
	query := func() string {
		t.Helper()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatalf("udp write: %v", err)
		}
		buf := make([]byte, 128)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("udp read: %v", err)
		}
		return who(string(buf[:n]))
	}
	if got := query(); got != a.pods[1].name {
		t.Fatalf("udp answer from %s, want %s", got, a.pods[1].name)
	}
	// Adding an endpoint leaves running flows where they are.
	st := a.sync(t, udp(ep(a.pods[1].ip, 5353), ep(a.pods[2].ip, 5353)))
	if st.ConntrackDeleted != 0 {
		t.Errorf("endpoint added: %d conntrack entries deleted, want 0", st.ConntrackDeleted)
	}
	for i := 0; i < 5; i++ {
		if got := query(); got != a.pods[1].name {
			t.Fatalf("after adding pod 2 the flow moved to %s; running flows must stay", got)
		}
	}
	// pod 1 stays up but stops being an endpoint: the same flow must move.
	st = a.sync(t, udp(ep(a.pods[2].ip, 5353)))
	if st.ConntrackDeleted < 1 {
		t.Errorf("endpoint removed: ConntrackDeleted = %d, want the stale UDP entry deleted", st.ConntrackDeleted)
	}
	if got := query(); got != a.pods[2].name {
		t.Errorf("after endpoint change the flow still reaches %s, want %s (stale conntrack entry)", got, a.pods[2].name)
	}
}

func TestClientIPAffinity(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	a := newAccount(t, netnstest.Lab(), "a", 4)
	s := tcpSvc("sticky", clusterIP, 80, a.podEP(1), a.podEP(2), a.podEP(3))
	s.SessionAffinity = true
	a.sync(t, s)
	dumpTable(t, a.topo, a.prefix+"-lb")
	for _, client := range []string{a.pods[0].path, a.client} {
		got := count(t, client, "10.96.0.10:80", 30)
		if len(got) != 1 {
			t.Errorf("ClientIP affinity: 30 connections from one client spread over %v, want one endpoint", got)
		}
	}
	// Turning affinity off replaces the chains; connections spread again.
	s.SessionAffinity = false
	st := a.sync(t, s)
	if st.Full {
		t.Errorf("affinity toggle rebuilt the table: %+v", st)
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 60); len(got) < 2 {
		t.Errorf("affinity off: 60 connections all went to %v", got)
	}
}

func TestExternalIPKeepsClientAddress(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	a := newAccount(t, netnstest.Lab(), "a", 2)
	fip := net.IPv4(203, 0, 113, 10)
	s := tcpSvc("web", clusterIP, 80, a.podEP(1))
	s.ExternalIPs = []net.IP{fip}
	a.sync(t, s)

	dumpTable(t, a.topo, a.prefix+"-lb")
	ans, err := ask(a.client, "203.0.113.10:80", 2*time.Second)
	must(t, err, "client -> FIP")
	if want := a.pods[1].name + " " + wanClientIP.String(); ans != want {
		t.Errorf("FIP answer %q, want %q (client address preserved)", ans, want)
	}
	// A pod using the FIP is on the bridge: masqueraded like ClusterIP traffic.
	ans, err = ask(a.pods[0].path, "203.0.113.10:80", 2*time.Second)
	must(t, err, "pod -> FIP")
	if want := a.pods[1].name + " " + routerIP.String(); ans != want {
		t.Errorf("pod via FIP answer %q, want %q", ans, want)
	}
	// Undeclared FIP port is refused, not forwarded.
	if _, err := ask(a.client, "203.0.113.10:22", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("FIP undeclared port: %v, want connection refused", err)
	}
}

func TestTwoAccountsSameClusterIP(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	prefix := netnstest.Lab()
	a := newAccount(t, prefix, "a", 2)
	b := newAccount(t, prefix, "b", 2)
	a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1)))
	b.sync(t, tcpSvc("web", clusterIP, 80, b.podEP(1)))
	for _, acc := range []*account{a, b} {
		got := count(t, acc.pods[0].path, "10.96.0.10:80", 20)
		if got[acc.pods[1].name] != 20 {
			t.Errorf("account %s: answers %v, want all 20 from its own %s", acc.account, got, acc.pods[1].name)
		}
	}
	// Emptying one account's service leaves the other untouched.
	a.sync(t, tcpSvc("web", clusterIP, 80))
	if _, err := ask(a.pods[0].path, "10.96.0.10:80", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("account a without endpoints: %v, want refused", err)
	}
	if got := count(t, b.pods[0].path, "10.96.0.10:80", 5); got[b.pods[1].name] != 5 {
		t.Errorf("account b after a changed: %v", got)
	}
}

func tableExists(t testing.TB, nsPath, name string) bool {
	t.Helper()
	f, err := netns.Open(nsPath)
	must(t, err, "open netns")
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	must(t, err, "nftables conn")
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	must(t, err, "list tables")
	for _, tb := range tables {
		if tb.Name == name {
			return true
		}
	}
	return false
}

func TestFailureRebuildsAndDeleteCleansUp(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	prefix := netnstest.Lab()
	a := newAccount(t, prefix, "a", 3)
	table := prefix + "-lb"
	a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1)))

	// Someone deletes the table behind our back: the next incremental Sync
	// fails, the one after rebuilds it whole.
	f, err := netns.Open(a.router)
	must(t, err, "open router")
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	must(t, err, "conn")
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: table})
	must(t, c.Flush(), "delete table externally")
	f.Close()
	if _, err := a.lb.Sync([]Service{tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2))}); err == nil {
		t.Fatal("Sync against a vanished table succeeded; want an error")
	}
	st := a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2)))
	if !st.Full {
		t.Errorf("Sync after a failure: %+v, want a full rebuild", st)
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 40); len(got) != 2 {
		t.Errorf("after rebuild: %v, want both endpoints", got)
	}
	a.lb.ForceFullSync()
	if st := a.sync(t, tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2))); !st.Full {
		t.Errorf("Sync after ForceFullSync: %+v, want full", st)
	}

	// A restarted daemon (new Syncer) replaces the table atomically.
	s2, err := New(a.router, table)
	must(t, err, "New")
	st, err = s2.Sync([]Service{tcpSvc("web", clusterIP, 80, a.podEP(2))})
	must(t, err, "restart Sync")
	if !st.Full {
		t.Errorf("first Sync of a new Syncer: %+v, want full", st)
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 20); got[a.pods[2].name] != 20 {
		t.Errorf("after restart: %v, want only pod 2 (old rules replaced, not duplicated)", got)
	}
	must(t, s2.Close(), "Close")
	if !tableExists(t, a.router, table) {
		t.Fatal("Close removed the table; only Delete should")
	}

	must(t, a.lb.Delete(), "Delete")
	if tableExists(t, a.router, table) {
		t.Errorf("table %s still present after Delete", table)
	}
	must(t, a.lb.Delete(), "second Delete")
	if _, err := a.lb.Sync(nil); err == nil {
		t.Error("Sync after Delete succeeded; want an error")
	}
}

func TestBuildValidation(t *testing.T) {
	ok := tcpSvc("ok", clusterIP, 80, ep(podIP(1), 8080))
	cases := []struct {
		name string
		svcs []Service
		want string
	}{
		{"duplicate address and port", []Service{ok, tcpSvc("dup", clusterIP, 80)}, `"ok" and "dup" both claim`},
		{"bad protocol", []Service{{Name: "x", ClusterIP: clusterIP, Ports: []Port{{Protocol: "ICMP", Port: 1}}}}, "not supported"},
		{"ipv6", []Service{{Name: "x", ClusterIP: net.ParseIP("fd00::1")}}, "not an IPv4"},
		{"listed twice", []Service{ok, ok}, "listed twice"},
		{"port 0 endpoint", []Service{tcpSvc("x", clusterIP, 81, ep(podIP(1), 0))}, "target port 0"},
	}
	for _, c := range cases {
		st, err := build(c.svcs, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
		if st == nil {
			t.Errorf("%s: no state; valid services must still be programmed", c.name)
		}
	}
	// Valid services survive a bad neighbour.
	st, _ := build([]Service{ok, tcpSvc("dup", clusterIP, 80)}, nil)
	if len(st.parts) != 1 || st.parts["ok"] == nil {
		t.Errorf("valid service dropped with an invalid one: %v", st.parts)
	}
	// Headless services produce no rules.
	st, err := build([]Service{{Name: "headless", Ports: []Port{{Port: 80, Endpoints: []Endpoint{ep(podIP(1), 80)}}}}}, nil)
	if p := st.parts["headless"]; err != nil || p == nil || len(p.dispatch)+len(p.addrs)+len(p.svcChains) != 0 {
		t.Errorf("headless: %v %+v, want no rules", err, p)
	}
	// Endpoint order does not matter (no rewrite when only the order changes).
	s1, _ := build([]Service{tcpSvc("x", clusterIP, 80, ep(podIP(1), 1), ep(podIP(2), 1))}, nil)
	s2, _ := build([]Service{tcpSvc("x", clusterIP, 80, ep(podIP(2), 1), ep(podIP(1), 1))}, nil)
	if fmt.Sprint(s1.parts["x"].svcChains) != fmt.Sprint(s2.parts["x"].svcChains) {
		t.Errorf("endpoint order changed the chain: %v vs %v", s1.parts["x"].svcChains, s2.parts["x"].svcChains)
	}
	// Unchanged services reuse their part; the caller mutating its input
	// afterwards does not alter the cached copy.
	in := []Service{tcpSvc("x", clusterIP, 80, ep(podIP(1), 1))}
	s3, _ := build(in, nil)
	in[0].Ports[0].Endpoints[0].Port = 2
	s4, _ := build(in, s3)
	if s4.parts["x"] == s3.parts["x"] {
		t.Error("changed endpoint port reused the old part")
	}
	s5, _ := build([]Service{tcpSvc("x", clusterIP, 80, ep(podIP(1), 2))}, s4)
	if s5.parts["x"] != s4.parts["x"] {
		t.Error("equal service was rebuilt instead of reused")
	}
}

func TestServicesShareAndMoveAddresses(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	a := newAccount(t, netnstest.Lab(), "a", 3)
	fip := net.IPv4(203, 0, 113, 20)
	web := tcpSvc("web", clusterIP, 80, a.podEP(1))
	web.ExternalIPs = []net.IP{fip}
	api := Service{Name: "api", ClusterIP: net.IPv4(10, 96, 0, 11), ExternalIPs: []net.IP{fip},
		Ports: []Port{{Protocol: "TCP", Port: 8080, Endpoints: []Endpoint{a.podEP(2)}}}}
	a.sync(t, web, api)
	// One Floating IP, two services on different ports.
	for addr, want := range map[string]string{"203.0.113.20:80": a.pods[1].name, "203.0.113.20:8080": a.pods[2].name} {
		ans, err := ask(a.client, addr, 2*time.Second)
		if err != nil || who(ans) != want {
			t.Errorf("FIP %s: %q %v, want %s", addr, ans, err, want)
		}
	}
	// Removing one service keeps the shared FIP working for the other.
	a.sync(t, api)
	if ans, err := ask(a.client, "203.0.113.20:8080", 2*time.Second); err != nil || who(ans) != a.pods[2].name {
		t.Errorf("shared FIP after removing web: %q %v", ans, err)
	}
	if _, err := ask(a.client, "203.0.113.20:80", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("removed service's FIP port: %v, want refused", err)
	}
	// In one Sync a ClusterIP:port moves from one service to another.
	a.sync(t, api, tcpSvc("old", clusterIP, 80, a.podEP(1)))
	st := a.sync(t, api, tcpSvc("new", clusterIP, 80, a.podEP(2)))
	if st.Full {
		t.Errorf("moving a ClusterIP between services rebuilt the table: %+v", st)
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 10); got[a.pods[2].name] != 10 {
		t.Errorf("after the move: %v, want all on %s", got, a.pods[2].name)
	}
}

// TestLargeTable programs 1,000 services x 10 endpoints (the benchmark size):
// big batches must not overflow netlink attributes or socket buffers.
func TestLargeTable(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	a := newAccount(t, netnstest.Lab(), "a", 3)
	svcs := append(fillerServices(999, 10), tcpSvc("web", clusterIP, 80, a.podEP(1)))
	st := a.sync(t, svcs...)
	if !st.Full || st.Ops < 30000 {
		t.Errorf("full Sync of 1,000 x 10: %+v", st)
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 5); got[a.pods[1].name] != 5 {
		t.Errorf("probe service in the big table: %v", got)
	}
	svcs[len(svcs)-1] = tcpSvc("web", clusterIP, 80, a.podEP(2))
	st = a.sync(t, svcs...)
	// ep chain + rule + delete old ep chain + chain/map flush + 1 element
	// + mark + numgen: independent of the 999 other services.
	if st.Full || st.Ops != 2+1+2+1+2 {
		t.Errorf("one endpoint changed in a 1,000-service table: %+v, want 8 ops", st)
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 5); got[a.pods[2].name] != 5 {
		t.Errorf("after the change: %v", got)
	}
}

func TestRouterOutput(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	prefix := netnstest.Lab()
	a := newAccount(t, prefix, "a", 2)
	svc := tcpSvc("web", clusterIP, 80, a.podEP(1))
	a.sync(t, svc)
	// By default the router's own connections to a ClusterIP are refused
	// (and never leak to the WAN side).
	if _, err := ask(a.router, "10.96.0.10:80", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("router -> ClusterIP without WithRouterOutput: %v, want refused", err)
	}
	s, err := New(a.router, prefix+"-lb", WithRouterOutput())
	must(t, err, "New")
	defer s.Close()
	if _, err := s.Sync([]Service{svc}); err != nil {
		t.Fatal(err)
	}
	ans, err := ask(a.router, "10.96.0.10:80", time.Second)
	if want := a.pods[1].name + " " + routerIP.String(); err != nil || ans != want {
		t.Errorf("router -> ClusterIP with WithRouterOutput: %q %v, want %q (masqueraded to the bridge address)", ans, err, want)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Option{WithPodCIDR("10.244.0.0"), WithPodCIDR("fd00::/64"), WithServiceCIDR("nope")} {
		if _, err := New("", "x", o); err == nil {
			t.Errorf("invalid option accepted")
		}
	}
	if _, err := New("", ""); err == nil {
		t.Error("empty table name accepted")
	}
}

// TestSelfPicks: the router of a multi-node lab (SetSelfPicks) gives a client that is an endpoint itself,
// every time (its node sends the router only the connections that picked it), masqueraded as any hairpin;
// a client that is no endpoint is spread as before; turning it off rebuilds the table without it.
func TestSelfPicks(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces and nftables")
	a := newAccount(t, netnstest.Lab(), "a", 4)
	a.lb.SetSelfPicks(true)
	web := tcpSvc("web", clusterIP, 80, a.podEP(1), a.podEP(2), a.podEP(3))
	if st := a.sync(t, web); !st.Full {
		t.Errorf("first Sync: Full = false")
	}
	for _, i := range []int{1, 2, 3} {
		got := count(t, a.pods[i].path, "10.96.0.10:80", 20)
		if got[a.pods[i].name] != 20 {
			t.Errorf("endpoint %s as a client got %v, want itself 20 times", a.pods[i].name, got)
		}
	}
	if got := count(t, a.pods[0].path, "10.96.0.10:80", 60); len(got) != 3 {
		t.Errorf("a client that is no endpoint got %v, want all three endpoints", got)
	}
	a.lb.SetSelfPicks(false)
	if st := a.sync(t, web); !st.Full {
		t.Errorf("Sync after SetSelfPicks(false): Full = false, want a rebuild")
	}
	if got := count(t, a.pods[1].path, "10.96.0.10:80", 60); len(got) != 3 {
		t.Errorf("without self picks endpoint %s as a client got %v, want all three endpoints", a.pods[1].name, got)
	}
}
