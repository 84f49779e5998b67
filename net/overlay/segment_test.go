package overlay

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/net/network"
	"github.com/vishvananda/netlink"
)

// testLab is one overlay lab with the test's own router stand-ins and pods.
type testLab struct {
	lab string
	m   *Manager
}

func newTestLab(t testing.TB) *testLab {
	t.Helper()
	netnstest.RequireRoot(t, "network namespaces, bridges, VXLAN devices, nftables")
	lab := netnstest.Lab()
	m, err := New(Options{Lab: lab})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Reset(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		names, _ := netns.ListNamed(lab + "-")
		for _, n := range names {
			netns.DeleteNamed(n)
		}
	})
	return &testLab{lab: lab, m: m}
}

// router makes a stand-in for net/network's router netns of account a: a
// netns with bridge br0 (MTU 1400) holding 10.244.0.1/16.
func (l *testLab) router(t testing.TB, a int) string {
	t.Helper()
	path, err := netns.EnsureNamed(l.lab + "-r" + strconv.Itoa(a))
	if err != nil {
		t.Fatal(err)
	}
	h, err := netns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.HardwareAddr = network.BridgeName, network.MTU, net.HardwareAddr{0x0a, 0x58, 10, 244, 0, 1}
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	br, err := h.LinkByName(network.BridgeName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: network.RouterIP, Mask: network.PodCIDR.Mask}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	return path
}

// pod makes a pod netns for account a on node n with address ip: eth0 (MTU
// 1400, default via the router) whose peer is a hairpin port of the node's
// b<a>, as the daemon will plug pods.
func (l *testLab) pod(t testing.TB, n, a int, ip net.IP) string {
	t.Helper()
	path, err := netns.EnsureNamed(fmt.Sprintf("%s-pod%d-%d-%d", l.lab, a, n, ip.To4()[3]))
	if err != nil {
		t.Fatal(err)
	}
	ph, err := netns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	nodePath := netns.Path(l.m.NodeNetnsName(n))
	nf, err := netns.Open(nodePath)
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	nh, err := netns.NewHandle(nodePath)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	port := fmt.Sprintf("p%d-%d", a, ip.To4()[3])
	la := netlink.NewLinkAttrs()
	ip4 := ip.To4()
	la.Name, la.MTU, la.HardwareAddr = "eth0", network.MTU, net.HardwareAddr{0x0a, 0x58, ip4[0], ip4[1], ip4[2], ip4[3]}
	if err := ph.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: port, PeerNamespace: netlink.NsFd(nf.Fd())}); err != nil {
		t.Fatal(err)
	}
	eth, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ph.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: network.PodCIDR.Mask}}); err != nil {
		t.Fatal(err)
	}
	if err := ph.LinkSetUp(eth); err != nil {
		t.Fatal(err)
	}
	if err := ph.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: network.RouterIP}); err != nil {
		t.Fatal(err)
	}
	p, err := nh.LinkByName(port)
	if err != nil {
		t.Fatal(err)
	}
	br, err := nh.LinkByName(BridgeName(a))
	if err != nil {
		t.Fatalf("node %d has no bridge for account %d: %v", n, a, err)
	}
	if err := nh.LinkSetMaster(p, br); err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetHairpin(p, true); err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetUp(p); err != nil {
		t.Fatal(err)
	}
	return path
}

var pingSeq atomic.Uint32

// ping sends one ICMP echo with size bytes of data (the IP packet is size+28
// bytes), Don't Fragment set, from inside the netns at path; it reports
// whether dst answered within timeout and the round trip time.
func ping(path string, dst net.IP, size int, timeout time.Duration) (bool, time.Duration, error) {
	seq := uint16(pingSeq.Add(1))
	id := uint16(os.Getpid())
	var ok bool
	var rtt time.Duration
	err := netns.Do(path, func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		// ping -M do: never fragment locally, so an MTU too small shows as a failure.
		rc, err := c.(*net.IPConn).SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO)
		}); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		msg := make([]byte, 8+size)
		msg[0] = 8
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], seq)
		for i := 8; i < len(msg); i++ {
			msg[i] = byte(i)
		}
		binary.BigEndian.PutUint16(msg[2:], csum(msg))
		start := time.Now()
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst}); err != nil {
			return nil // e.g. EMSGSIZE or unreachable: no answer
		}
		deadline := start.Add(timeout)
		c.SetReadDeadline(deadline)
		buf := make([]byte, 9000)
		for time.Now().Before(deadline) {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return nil
			}
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id &&
				binary.BigEndian.Uint16(buf[6:]) == seq && from.(*net.IPAddr).IP.Equal(dst) {
				ok, rtt = n == 8+size, time.Since(start)
				return nil
			}
		}
		return nil
	})
	return ok, rtt, err
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// reach pings until an answer or the deadline (the first ping waits for ARP).
func reach(t testing.TB, path string, dst net.IP, size int, within time.Duration) bool {
	t.Helper()
	end := time.Now().Add(within)
	for {
		ok, _, err := ping(path, dst, size, 500*time.Millisecond)
		if err != nil {
			t.Fatalf("ping %v from %s: %v", dst, path, err)
		}
		if ok {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}

// udpCounter listens on UDP port inside the netns at path and counts the
// datagrams that carry tag.
func udpCounter(t testing.TB, path string, port int, tag string) func() int {
	t.Helper()
	var c net.PacketConn
	if err := netns.Do(path, func() error {
		var err error
		c, err = net.ListenPacket("udp4", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		t.Fatalf("listen udp %d in %s: %v", port, path, err)
	}
	t.Cleanup(func() { c.Close() })
	var mu sync.Mutex
	n := 0
	go func() {
		buf := make([]byte, 2048)
		for {
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:k]), tag) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}
	}()
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// sendUDP sends count datagrams carrying tag to dst from inside the netns at path.
func sendUDP(t testing.TB, path string, dst *net.UDPAddr, tag string, count int) {
	t.Helper()
	if err := netns.Do(path, func() error {
		c, err := net.DialUDP("udp4", nil, dst)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < count; i++ {
			c.Write([]byte(tag)) // errors (ICMP unreachable echoes) do not matter: the counters decide
			time.Sleep(10 * time.Millisecond)
		}
		return nil
	}); err != nil {
		t.Fatalf("send udp to %v from %s: %v", dst, path, err)
	}
}

func run(t testing.TB, nsPath string, args ...string) string {
	t.Helper()
	var out []byte
	err := netns.Do(nsPath, func() error {
		var err error
		out, err = exec.Command(args[0], args[1:]...).CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("%v in %s: %v: %s", args, nsPath, err, out)
	}
	return string(out)
}

// floodDstsOf lists, as `bridge fdb show` prints them, the dst of the
// all-zero entries of dev in the netns at path.
func floodDstsOf(t testing.TB, path, dev string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(run(t, path, "bridge", "fdb", "show", "dev", dev), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "00:00:00:00:00:00" && f[1] == "dst" {
			out = append(out, f[2])
		}
	}
	sort.Strings(out)
	return out
}

func ip4(s string) net.IP { return net.ParseIP(s).To4() }

// TestTwoNodesTwoAccounts is issue 13's first slice against real namespaces:
// two nodes, two accounts with identical pod addresses on every node, a
// router stand-in per account; then a stopped node, a third node, and the
// deletion of everything.
func TestTwoNodesTwoAccounts(t *testing.T) {
	l := newTestLab(t)
	m := l.m
	for _, n := range []int{1, 2} {
		if _, err := m.EnsureNode(n); err != nil {
			t.Fatal(err)
		}
	}
	routers := map[int]string{1: l.router(t, 1), 2: l.router(t, 2)}
	for a, r := range routers {
		seg, err := m.EnsureSegment(a, r, []int{1, 2})
		if err != nil {
			t.Fatal(err)
		}
		if seg.VNI != a || seg.Bridge != BridgeName(a) {
			t.Fatalf("segment %+v", seg)
		}
	}
	fabricPath := netns.Path(m.FabricNetnsName())
	// Count VXLAN datagrams crossing the fabric (the test may inspect with nft).
	run(t, fabricPath, "nft", "add table bridge t; add chain bridge t c { type filter hook forward priority 0; }; add rule bridge t c udp dport 4789 counter")

	pods := map[[2]int]string{} // {account, node} -> netns path
	for _, a := range []int{1, 2} {
		for _, n := range []int{1, 2} {
			pods[[2]int{a, n}] = l.pod(t, n, a, ip4(fmt.Sprintf("10.244.%d.5", n)))
		}
	}
	// Re-running changes nothing.
	before := state(t, l, routers)
	for _, n := range []int{1, 2} {
		if _, err := m.EnsureNode(n); err != nil {
			t.Fatal(err)
		}
	}
	for a, r := range routers {
		if _, err := m.EnsureSegment(a, r, []int{1, 2}); err != nil {
			t.Fatal(err)
		}
	}
	if after := state(t, l, routers); after != before {
		t.Errorf("second Ensure changed the kernel state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, want := range []string{"mtu 1400", "vxlan id 1 local 169.254.1.1", "dstport 4789"} {
		if !strings.Contains(before, want) {
			t.Errorf("state lacks %q:\n%s", want, before)
		}
	}

	// MTUs: the account bridges stay at 1400 although their VXLAN port is 1450.
	for _, c := range []struct {
		path, link string
		mtu        int
	}{
		{netns.Path(m.NodeNetnsName(1)), BridgeName(1), 1400},
		{netns.Path(m.NodeNetnsName(2)), BridgeName(2), 1400},
		{netns.Path(m.NodeNetnsName(1)), VXLANName(1), 1450},
		{netns.Path(m.NodeNetnsName(1)), UnderlayLink, 1500},
		{routers[1], network.BridgeName, 1400},
		{routers[1], VXLANName(1), 1450},
	} {
		if got := linkMTU(t, c.path, c.link); got != c.mtu {
			t.Errorf("%s in %s: MTU %d, want %d", c.link, c.path, got, c.mtu)
		}
	}
	// A VXLAN device lost (deleted by hand) is rebuilt with its flood entries.
	run(t, netns.Path(m.NodeNetnsName(2)), "ip", "link", "del", VXLANName(1))
	if _, err := m.EnsureSegment(1, routers[1], []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	if got := floodDstsOf(t, netns.Path(m.NodeNetnsName(2)), VXLANName(1)); strings.Join(got, " ") != "169.254.1.1 169.254.16.1" {
		t.Errorf("rebuilt vx1 on node 2 floods to %v", got)
	}

	// Within an account: node 1's pod reaches node 2's pod and the router.
	for _, a := range []int{1, 2} {
		p1 := pods[[2]int{a, 1}]
		if !reach(t, p1, ip4("10.244.2.5"), 56, 5*time.Second) {
			t.Fatalf("account %d: pod on node 1 cannot reach 10.244.2.5 on node 2", a)
		}
		if !reach(t, p1, network.RouterIP, 56, 5*time.Second) {
			t.Fatalf("account %d: pod on node 1 cannot reach the router", a)
		}
		if !reach(t, pods[[2]int{a, 2}], network.RouterIP, 56, 5*time.Second) {
			t.Fatalf("account %d: pod on node 2 cannot reach the router", a)
		}
		// MTU: 1400-byte packets with DF cross nodes; 1401 do not fit the pods' link.
		if ok, _, _ := ping(p1, ip4("10.244.2.5"), 1372, 2*time.Second); !ok {
			t.Errorf("account %d: ping -M do -s 1372 (1400 bytes) across nodes failed", a)
		}
		if ok, _, _ := ping(p1, ip4("10.244.2.5"), 1373, time.Second); ok {
			t.Errorf("account %d: a 1401-byte DF packet crossed a 1400 MTU", a)
		}
	}
	out := run(t, fabricPath, "nft", "list", "chain", "bridge", "t", "c")
	if mm := regexp.MustCompile(`packets (\d+)`).FindStringSubmatch(out); mm == nil || mm[1] == "0" {
		t.Errorf("no UDP 4789 on the fabric:\n%s", out)
	} else {
		t.Logf("fabric forwarded %s VXLAN datagrams", mm[1])
	}

	// Across accounts nothing arrives: the same address in account 2 on node 2 counts what it gets.
	got1 := udpCounter(t, pods[[2]int{1, 2}], 7000, "from-account-1")
	got2 := udpCounter(t, pods[[2]int{2, 2}], 7000, "from-account-1")
	sendUDP(t, pods[[2]int{1, 1}], &net.UDPAddr{IP: ip4("10.244.2.5"), Port: 7000}, "from-account-1", 20)
	time.Sleep(300 * time.Millisecond)
	if got1() == 0 {
		t.Errorf("account 1's pod on node 2 received nothing: the test proves nothing")
	}
	if got2() != 0 {
		t.Errorf("account 2's pod on node 2 received %d datagrams sent in account 1", got2())
	}
	t.Logf("cross-node UDP: account 1 received %d/20, account 2 (same IP) %d", got1(), got2())

	// RTT across nodes vs on one node's bridge.
	local := l.pod(t, 1, 1, ip4("10.244.1.6"))
	reach(t, pods[[2]int{1, 1}], ip4("10.244.1.6"), 56, 5*time.Second)
	t.Logf("RTT p50: same node %v, across nodes %v",
		rttP50(t, pods[[2]int{1, 1}], ip4("10.244.1.6")), rttP50(t, pods[[2]int{1, 1}], ip4("10.244.2.5")))
	_ = local

	// A dead node.
	if err := m.StopNode(2); err != nil {
		t.Fatal(err)
	}
	if reach(t, pods[[2]int{1, 1}], ip4("10.244.2.5"), 56, time.Second) {
		t.Errorf("node 2 stopped, yet its pod answers")
	}
	if !reach(t, pods[[2]int{1, 1}], network.RouterIP, 56, 2*time.Second) {
		t.Errorf("node 2 stopped, and node 1's pod lost its router too")
	}
	if ns, err := m.Nodes(); err != nil || len(ns) != 2 || ns[1].Up {
		t.Errorf("Nodes() after StopNode(2) = %+v, %v", ns, err)
	}
	if _, err := m.EnsureNode(2); err != nil {
		t.Fatal(err)
	}
	if reach(t, pods[[2]int{1, 1}], ip4("10.244.2.5"), 56, time.Second) {
		t.Errorf("EnsureNode revived a stopped node")
	}
	if err := m.StartNode(2); err != nil {
		t.Fatal(err)
	}
	if !reach(t, pods[[2]int{1, 1}], ip4("10.244.2.5"), 56, 5*time.Second) {
		t.Errorf("node 2 started, its pod does not answer")
	}

	// A third node joins account 1: the other members learn of it.
	t0 := time.Now()
	if _, err := m.EnsureNode(3); err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureSegment(1, routers[1], []int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	t.Logf("node 3 added and account 1's segment converged in %v", time.Since(t0))
	if got := floodDstsOf(t, netns.Path(m.NodeNetnsName(1)), VXLANName(1)); strings.Join(got, " ") != "169.254.1.2 169.254.1.3 169.254.16.1" {
		t.Errorf("node 1's vx1 floods to %v", got)
	}
	if got := floodDstsOf(t, routers[1], VXLANName(1)); strings.Join(got, " ") != "169.254.1.1 169.254.1.2 169.254.1.3" {
		t.Errorf("router 1's vx1 floods to %v", got)
	}
	if got := floodDstsOf(t, netns.Path(m.NodeNetnsName(1)), VXLANName(2)); strings.Join(got, " ") != "169.254.1.2 169.254.16.2" {
		t.Errorf("account 2 (not on node 3) changed: node 1's vx2 floods to %v", got)
	}
	p3 := l.pod(t, 3, 1, ip4("10.244.3.5"))
	if !reach(t, pods[[2]int{1, 1}], ip4("10.244.3.5"), 56, 5*time.Second) {
		t.Errorf("node 1's pod cannot reach the new pod on node 3")
	}
	if !reach(t, p3, network.RouterIP, 56, 5*time.Second) {
		t.Errorf("node 3's pod cannot reach the router")
	}

	// Dropping a node that still has pods of the account is refused, naming the ports.
	if _, err := m.EnsureSegment(1, routers[1], []int{1, 3}); err == nil || !strings.Contains(err.Error(), "still has ports") {
		t.Errorf("dropping node 2 from account 1 with a pod on it: %v", err)
	}

	// DeleteNode(3): its flood entries go from every other member.
	for _, p := range []string{netns.Path(m.NodeNetnsName(1)), routers[1]} {
		if got := run(t, p, "bridge", "fdb", "show", "dev", VXLANName(1)); !regexp.MustCompile(`0a:58:0a:f4:03:05 dst 169.254.1.3 self\s*\n`).MatchString(got) {
			t.Errorf("%s has not learned node 3's pod MAC behind 169.254.1.3 (the check below would prove nothing):\n%s", p, got)
		}
	}
	if err := m.DeleteNode(3); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{netns.Path(m.NodeNetnsName(1)), netns.Path(m.NodeNetnsName(2)), routers[1]} {
		if got := run(t, p, "bridge", "fdb", "show"); strings.Contains(got, "169.254.1.3") {
			t.Errorf("after DeleteNode(3), %s keeps fdb entries toward it:\n%s", p, got)
		}
	}
	if got := floodDstsOf(t, routers[1], VXLANName(1)); strings.Join(got, " ") != "169.254.1.1 169.254.1.2" {
		t.Errorf("after DeleteNode(3), router 1's vx1 floods to %v", got)
	}
	if !reach(t, pods[[2]int{1, 1}], ip4("10.244.2.5"), 56, 5*time.Second) {
		t.Errorf("after DeleteNode(3), node 1's pod lost node 2's")
	}

	// Delete everything.
	for a, r := range routers {
		if err := m.DeleteSegment(a, r); err != nil {
			t.Fatal(err)
		}
		if got := run(t, r, "bridge", "fdb", "show"); strings.Contains(got, " dst ") {
			t.Errorf("router %d keeps fdb entries with a dst:\n%s", a, got)
		}
		if got := run(t, r, "ip", "-o", "link"); strings.Contains(got, "vx") || strings.Contains(got, UnderlayLink) {
			t.Errorf("router %d keeps overlay links:\n%s", a, got)
		}
	}
	for _, n := range []int{1, 2} {
		if err := m.DeleteNode(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Reset(); err != nil {
		t.Fatal(err)
	}
	// The test's own pods and routers go too; then nothing of the prefix is left.
	names, _ := netns.ListNamed(l.lab + "-")
	for _, n := range names {
		if err := netns.DeleteNamed(n); err != nil {
			t.Fatal(err)
		}
	}
	out = string(must(exec.Command("ip", "netns", "list").CombinedOutput()))
	if strings.Contains(out, l.lab) {
		t.Errorf("ip netns list still shows the lab %s:\n%s", l.lab, out)
	}
}

// TestNotOurs: links under our names that we did not make are errors naming
// them, never adopted or deleted.
func TestNotOurs(t *testing.T) {
	l := newTestLab(t)
	m := l.m
	if _, err := m.EnsureNode(1); err != nil {
		t.Fatal(err)
	}
	r := l.router(t, 3)
	nodePath := netns.Path(m.NodeNetnsName(1))
	// A VXLAN device vx3 with the wrong VNI on node 1.
	h, err := netns.NewHandle(nodePath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	la := netlink.NewLinkAttrs()
	la.Name = VXLANName(3)
	if err := h.LinkAdd(&netlink.Vxlan{LinkAttrs: la, VxlanId: 99, Port: VXLANPort, Learning: true}); err != nil {
		t.Fatal(err)
	}
	_, err = m.EnsureSegment(3, r, []int{1})
	if err == nil || !strings.Contains(err.Error(), "vx3") || !strings.Contains(err.Error(), "VNI 99") {
		t.Fatalf("EnsureSegment over a foreign vx3: %v", err)
	}
	t.Logf("foreign vx3: %v", err)
	if l, err := h.LinkByName(VXLANName(3)); err != nil || l.(*netlink.Vxlan).VxlanId != 99 {
		t.Fatalf("the foreign vx3 was touched: %v", err)
	}
	if err := h.LinkDel(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: VXLANName(3)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureSegment(3, r, []int{1}); err != nil {
		t.Fatalf("after removing the foreign vx3: %v", err)
	}
	// A node that does not exist, a router without br0.
	if _, err := m.EnsureSegment(3, r, []int{1, 2}); err == nil || !strings.Contains(err.Error(), "EnsureNode(2)") {
		t.Errorf("segment on a missing node: %v", err)
	}
	empty, err := netns.EnsureNamed(l.lab + "-empty")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureSegment(4, empty, []int{1}); err == nil || !strings.Contains(err.Error(), "no bridge br0") {
		t.Errorf("segment with a router lacking br0: %v", err)
	}
	// A ul0 that is not ours in a router.
	eh, err := netns.NewHandle(empty)
	if err != nil {
		t.Fatal(err)
	}
	defer eh.Close()
	la = netlink.NewLinkAttrs()
	la.Name = UnderlayLink
	if err := eh.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "x0"}); err != nil {
		t.Fatal(err)
	}
	la = netlink.NewLinkAttrs()
	la.Name = network.BridgeName
	if err := eh.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.EnsureSegment(4, empty, []int{1}); err == nil || !strings.Contains(err.Error(), "ul0 (type veth) that is not the peer of fabric port r4") {
		t.Errorf("segment with a foreign ul0 in the router: %v", err)
	}
	// Two accounts given the same router netns.
	if _, err := m.EnsureSegment(5, r, []int{1}); err == nil || !strings.Contains(err.Error(), "not the peer of fabric port r5") {
		t.Errorf("account 5 on account 3's router: %v", err)
	}
	if err := m.StopNode(7); err == nil || !strings.Contains(err.Error(), "EnsureNode(7)") {
		t.Errorf("StopNode of a missing node: %v", err)
	}
	if err := m.DeleteSegment(3, r); err != nil {
		t.Fatal(err)
	}
}

func rttP50(t testing.TB, path string, dst net.IP) time.Duration {
	t.Helper()
	var rtts []time.Duration
	for i := 0; i < 21; i++ {
		ok, rtt, err := ping(path, dst, 56, time.Second)
		if err != nil || !ok {
			t.Fatalf("ping %v: %v %v", dst, ok, err)
		}
		rtts = append(rtts, rtt)
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	return rtts[len(rtts)/2]
}

// state describes the overlay's kernel state: links with details, fdb, per netns.
func state(t testing.TB, l *testLab, routers map[int]string) string {
	t.Helper()
	paths := []string{netns.Path(l.m.FabricNetnsName())}
	idx, err := l.m.nodeIndexes()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range idx {
		paths = append(paths, netns.Path(l.m.NodeNetnsName(n)))
	}
	var as []int
	for a := range routers {
		as = append(as, a)
	}
	sort.Ints(as)
	for _, a := range as {
		paths = append(paths, routers[a])
	}
	var b strings.Builder
	for _, p := range paths {
		// Bridge timers tick between two reads: not state.
		links := timerRE.ReplaceAllString(run(t, p, "ip", "-d", "-o", "link"), "")
		// Static state only: learned fdb entries come and go with traffic.
		fmt.Fprintf(&b, "== %s\n%s%s", p, links, run(t, p, "ip", "-o", "-4", "addr"))
		for _, line := range strings.Split(run(t, p, "bridge", "fdb", "show"), "\n") {
			if strings.Contains(line, " dst ") && strings.Contains(line, "permanent") {
				fmt.Fprintln(&b, line)
			}
		}
	}
	return b.String()
}

func linkMTU(t testing.TB, path, name string) int {
	t.Helper()
	h, err := netns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, path, err)
	}
	return l.Attrs().MTU
}

var timerRE = regexp.MustCompile(`\w+_timer\s+[0-9.]+`)

func must(b []byte, err error) []byte {
	if err != nil {
		panic(fmt.Sprintf("%v: %s", err, b))
	}
	return b
}
