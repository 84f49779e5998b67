package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/net/nlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	okTimeout   = 2 * time.Second
	failTimeout = 400 * time.Millisecond
)

func TestSameAccountReachability(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 0)
	p1 := e.pod(t, a, "p1", ip("10.244.1.1"))
	p2 := e.pod(t, a, "p2", ip("10.244.7.42"))
	serveTCP(t, p2, ":8080", "p2")
	serveTCP(t, a.RouterNetns, DNSIP.String()+":53", "dns")

	got, err := dialTCP(p1, "10.244.7.42:8080", okTimeout)
	if err != nil || got != "p2 10.244.1.1" {
		t.Fatalf("p1 -> p2 TCP: %q, %v (want the server to see the pod IP unchanged)", got, err)
	}
	for _, dst := range []string{"10.244.7.42", "10.244.0.1", "10.244.0.2"} {
		if ok, err := ping(p1, ip(dst), okTimeout); !ok || err != nil {
			t.Fatalf("p1 ping %s: %v %v", dst, ok, err)
		}
	}
	if got, err := dialTCP(p1, "10.244.0.2:53", okTimeout); err != nil || got != "dns 10.244.1.1" {
		t.Fatalf("p1 -> DNS address over TCP: %q %v", got, err)
	}
	// Other ports of the router are refused at once, not left hanging.
	serveTCP(t, a.RouterNetns, "0.0.0.0:8081", "router")
	start := time.Now()
	_, err = dialTCP(p1, "10.244.0.1:8081", okTimeout)
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
		t.Fatalf("p1 -> router:8081: err=%v after %v, want connection refused at once", err, time.Since(start))
	}
	// Pod settings as promised.
	h, err := netns.NewHandle(p1)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().MTU != 1400 || eth0.Attrs().HardwareAddr.String() != "0a:58:0a:f4:01:01" {
		t.Fatalf("eth0 mtu=%d mac=%s", eth0.Attrs().MTU, eth0.Attrs().HardwareAddr)
	}
	st := nsState(t, p1)
	for _, want := range []string{"addr eth0 10.244.1.1/16", "dst=0.0.0.0/0 gw=10.244.0.1 dev=eth0", "dst=10.244.0.0/16 gw=<nil> dev=eth0"} {
		if !strings.Contains(st, want) {
			t.Fatalf("pod netns lacks %q:\n%s", want, st)
		}
	}
	rst := nsState(t, a.RouterNetns)
	if strings.Count(rst, "master=br0 up=true") != 2 || strings.Count(rst, "hairpin=true") != 2 {
		t.Fatalf("router ports not attached with hairpin:\n%s", rst)
	}
}

// Three accounts with three pods each, all with the same IPs: no pod reaches
// anything of another account, every pod reaches its own account.
func TestCrossAccountIsolation(t *testing.T) {
	e := newEnv(t)
	alloc := NewAllocator(true)
	type podInfo struct {
		acct *Account
		name string
		path string
		ip   net.IP
	}
	var accts []*Account
	var pods []podInfo
	for i, name := range []string{"a", "b", "c"} {
		a := e.account(t, name, i)
		accts = append(accts, a)
		used := map[string]bool{}
		for j := 1; j <= 3; j++ {
			ip, err := alloc.Next(used)
			if err != nil {
				t.Fatal(err)
			}
			used[ip.String()] = true
			p := podInfo{acct: a, name: fmt.Sprintf("p%d", j), ip: ip}
			p.path = e.pod(t, a, p.name, ip)
			serveTCP(t, p.path, ":8080", name+"/"+p.name)
			pods = append(pods, p)
		}
		serveTCP(t, a.RouterNetns, "0.0.0.0:8081", "router/"+name)
		serveTCP(t, a.RouterNetns, DNSIP.String()+":53", "dns/"+name)
	}
	// The sequential allocator gave every account the same three addresses.
	for _, p := range pods {
		if p.ip.String() != pods[0].ip.String() && p.ip.String() != pods[1].ip.String() && p.ip.String() != pods[2].ip.String() {
			t.Fatalf("addresses differ between accounts: %v", p.ip)
		}
	}
	// A loopback-only service of the host (stand-in for the control plane).
	serveTCP(t, e.hostPath, "127.0.0.1:9000", "control")

	var mu sync.Mutex
	var wg sync.WaitGroup
	own, cross := 0, 0
	var failures []string
	fail := func(f string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(f, args...))
		mu.Unlock()
	}
	for _, src := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, dst := range pods[:3] { // the three distinct IPs
				got, err := dialTCP(src.path, dst.ip.String()+":8080", okTimeout)
				mu.Lock()
				switch {
				case err != nil:
					failures = append(failures, fmt.Sprintf("%s/%s -> %s: %v", src.acct.Name, src.name, dst.ip, err))
				case strings.HasPrefix(got, src.acct.Name+"/"):
					own++
				default:
					cross++
					failures = append(failures, fmt.Sprintf("%s/%s -> %s reached %q", src.acct.Name, src.name, dst.ip, got))
				}
				mu.Unlock()
			}
			if got, err := dialTCP(src.path, DNSIP.String()+":53", okTimeout); err != nil || !strings.HasPrefix(got, "dns/"+src.acct.Name+" ") {
				fail("%s/%s -> DNS: %q %v", src.acct.Name, src.name, got, err)
			}
			if ok, _ := ping(src.path, RouterIP, okTimeout); !ok {
				fail("%s/%s cannot ping its router", src.acct.Name, src.name)
			}
			for _, other := range accts {
				if other == src.acct {
					continue
				}
				for _, addr := range []net.IP{other.WANIP} {
					if got, err := dialTCP(src.path, addr.String()+":8081", failTimeout); err == nil {
						mu.Lock()
						cross++
						mu.Unlock()
						fail("%s/%s reached router of %s at %s: %q", src.acct.Name, src.name, other.Name, addr, got)
					}
					if ok, _ := ping(src.path, addr, failTimeout); ok {
						mu.Lock()
						cross++
						mu.Unlock()
						fail("%s/%s pinged router of %s at %s", src.acct.Name, src.name, other.Name, addr)
					}
				}
			}
			if got, err := dialTCP(src.path, src.acct.HostIP.String()+":9000", failTimeout); err == nil {
				fail("%s/%s reached the host's loopback-only service: %q", src.acct.Name, src.name, got)
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("own=%d cross=%d\n%s", own, cross, strings.Join(failures, "\n"))
	}
	if own != 27 || cross != 0 {
		t.Fatalf("own-account pairs reached = %d (want 27), cross-account = %d (want 0)", own, cross)
	}
	// The pods' own routers are what stopped the attempts on other routers (their WAN addresses are in
	// TransitRange, which pods never reach; the host edge would drop them next): 9 pods x 2 other routers x
	// (TCP SYN + ping), + 9 to the host's transit address.
	n := 0
	for _, a := range accts {
		n += dropCount(t, a.RouterNetns, e.lab+"-router", "pods never reach the transit links")
	}
	if n < 45 {
		t.Fatalf("router transit reject counters sum to %d, want >= 45", n)
	}
	t.Logf("9 pods: %d own-account pairs reachable, %d cross-account (incl. other routers' WAN and DNS)", own, cross)
}

// Pods reach the host as the Internet: a server on the host sees the router's
// WAN address; a server beyond the host sees the host. Nothing from the
// Internet side reaches a pod or a router.
func TestEgressNATAndNoIngress(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 3)
	p := e.pod(t, a, "web", ip("10.244.3.3"))
	serveTCP(t, p, ":8080", "pod")
	serveTCP(t, a.RouterNetns, "0.0.0.0:8081", "router")

	hh, err := netns.NewHandle(e.hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	lo, _ := hh.LinkByName("lo")
	if err := hh.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: ip("198.51.100.10"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	serveTCP(t, e.hostPath, "198.51.100.10:80", "host")
	got, err := dialTCP(p, "198.51.100.10:80", okTimeout)
	if err != nil || got != "host "+a.WANIP.String() {
		t.Fatalf("pod -> host server: %q %v, want it to see the router WAN IP %s", got, err, a.WANIP)
	}

	// An "outside" network behind the host.
	inetPath, ih := e.outside(t, hh)
	serveTCP(t, inetPath, "203.0.113.1:80", "inet")
	got, err = dialTCP(p, "203.0.113.1:80", okTimeout)
	if err != nil || got != "inet 203.0.113.2" {
		t.Fatalf("pod -> outside server: %q %v, want it to see the host 203.0.113.2", got, err)
	}

	// Ingress attempts. Routes into the account are injected on purpose to
	// show that it is the filtering, not a missing route, that stops them.
	for _, r := range []*net.IPNet{PodCIDR, TransitRange} {
		if err := ih.RouteAdd(&netlink.Route{Dst: r, Gw: ip("203.0.113.2")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dialTCP(e.hostPath, "10.244.3.3:8080", failTimeout); err == nil {
		t.Fatal("host reached a pod IP without any route")
	}
	if err := hh.RouteAdd(&netlink.Route{Dst: PodCIDR, Gw: a.WANIP}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, to string }{
		{e.hostPath, "10.244.3.3:8080"}, {e.hostPath, a.WANIP.String() + ":8081"},
		{inetPath, "10.244.3.3:8080"}, {inetPath, a.WANIP.String() + ":8081"},
	} {
		if got, err := dialTCP(c.from, c.to, failTimeout); err == nil {
			t.Fatalf("%s reached %s: %q", c.from, c.to, got)
		}
	}
	for _, from := range []string{e.hostPath, inetPath} {
		for _, dst := range []net.IP{a.WANIP, ip("10.244.3.3")} {
			if ok, _ := ping(from, dst, failTimeout); ok {
				t.Fatalf("%s pinged %s", from, dst)
			}
		}
	}
	// Both layers worked: the router itself dropped what the host sent it
	// directly, the edge dropped what the host forwarded from outside.
	if n := dropCount(t, a.RouterNetns, e.lab+"-router", "nothing from the Internet"); n == 0 {
		t.Fatal("router input drop counter is 0")
	}
	if n := dropCount(t, a.RouterNetns, e.lab+"-router", "everything else"); n == 0 {
		t.Fatal("router forward drop counter is 0")
	}
	if n := dropCount(t, e.hostPath, e.lab+"-edge", "no new connection into a router"); n == 0 {
		t.Fatal("edge drop counter is 0")
	}
	// The pod is still fine after all that.
	if _, err := dialTCP(p, "203.0.113.1:80", okTimeout); err != nil {
		t.Fatal(err)
	}
}

func TestIdempotent(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 1)
	p1 := e.pod(t, a, "p1", ip("10.244.1.1"))
	p2 := e.pod(t, a, "p2", ip("10.244.1.2"))
	paths := []string{e.hostPath, a.RouterNetns, p1, p2}
	before := make([]string, len(paths))
	for i, p := range paths {
		before[i] = nsState(t, p)
	}
	for range 2 {
		a2, err := e.m.EnsureAccount("alice", 1)
		if err != nil {
			t.Fatal(err)
		}
		if a2.WANIP.String() != a.WANIP.String() || a2.RouterNetns != a.RouterNetns {
			t.Fatalf("second EnsureAccount changed the account: %+v vs %+v", a2, a)
		}
		e.pod(t, a, "p1", ip("10.244.1.1"))
		e.pod(t, a, "p2", ip("10.244.1.2"))
	}
	for i, p := range paths {
		if after := nsState(t, p); after != before[i] {
			t.Fatalf("state of %s changed on re-run:\n%s", p, diffLines(before[i], after))
		}
	}
	if n := strings.Count(before[1], "\t\tiifname"); n == 0 {
		t.Fatalf("router ruleset looks empty:\n%s", before[1])
	}
	if !strings.Contains(before[0], "table ip "+e.lab+"-edge") || !strings.Contains(before[1], "table ip "+e.lab+"-router") {
		t.Fatalf("tables missing:\n%s\n%s", before[0], before[1])
	}
	// Another account may not take an index that is in use.
	if _, err := e.m.EnsureAccount("mallory", 1); err == nil || !strings.Contains(err.Error(), "same index") {
		t.Fatalf("EnsureAccount with a taken index: %v", err)
	}
	// Repair: a deleted piece comes back on the next Ensure.
	rh, _ := netns.NewHandle(a.RouterNetns)
	defer rh.Close()
	br, _ := rh.LinkByName(BridgeName)
	rh.AddrDel(br, &netlink.Addr{IPNet: &net.IPNet{IP: DNSIP, Mask: PodCIDR.Mask}})
	e.account(t, "alice", 1)
	if after := nsState(t, a.RouterNetns); after != before[1] {
		t.Fatalf("EnsureAccount did not repair the router:\n%s", diffLines(before[1], after))
	}
}

func TestPodNetnsRecreated(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 0)
	p1 := e.pod(t, a, "p1", ip("10.244.1.1"))
	p2 := e.pod(t, a, "p2", ip("10.244.1.2"))
	serveTCP(t, p1, ":8080", "old")
	if _, err := dialTCP(p2, "10.244.1.1:8080", okTimeout); err != nil {
		t.Fatal(err)
	}
	// "Reboot" of p1: its netns is deleted and made anew under the same name.
	name := e.lab + "-alice-p1"
	if err := netns.DeleteNamed(name); err != nil {
		t.Fatal(err)
	}
	np1, err := netns.EnsureNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.EnsurePod("alice", 0, np1, ip("10.244.1.1"), "alice/p1"); err != nil {
		t.Fatal(err)
	}
	serveTCP(t, np1, ":8080", "new")
	got, err := dialTCP(p2, "10.244.1.1:8080", okTimeout)
	if err != nil || got != "new 10.244.1.2" {
		t.Fatalf("after rebuild p2 -> p1: %q %v", got, err)
	}
	if st := nsState(t, a.RouterNetns); strings.Count(st, "master=br0") != 2 {
		t.Fatalf("want exactly 2 bridge ports after the rebuild:\n%s", st)
	}
	// The pod's IP changes (caller's decision): the link follows.
	if err := e.m.EnsurePod("alice", 0, np1, ip("10.244.1.9"), "alice/p1"); err != nil {
		t.Fatal(err)
	}
	if got, err := dialTCP(p2, "10.244.1.9:8080", okTimeout); err != nil || got != "new 10.244.1.2" {
		t.Fatalf("after IP change: %q %v", got, err)
	}
	if st := nsState(t, np1); strings.Contains(st, "10.244.1.1/16") {
		t.Fatalf("old address left on the pod:\n%s", st)
	}
}

func TestDeleteLeavesNothing(t *testing.T) {
	e := newEnv(t)
	baseline := nsState(t, e.hostPath)
	fwd0, _ := getSysctl(e.hostPath, ipForwardKey)

	a := e.account(t, "alice", 0)
	b := e.account(t, "bob", 1)
	pa := e.pod(t, a, "p1", ip("10.244.1.1"))
	pb := e.pod(t, b, "p1", ip("10.244.1.1"))
	if fwd, _ := getSysctl(e.hostPath, ipForwardKey); fwd != "1" {
		t.Fatalf("host ip_forward = %s after EnsureAccount", fwd)
	}

	for range 2 {
		if err := e.m.DeletePod("alice", 0, "alice/p1"); err != nil {
			t.Fatal(err)
		}
	}
	if st := nsState(t, pa); strings.Contains(st, "eth0") {
		t.Fatalf("pod eth0 left after DeletePod:\n%s", st)
	}
	if st := nsState(t, a.RouterNetns); strings.Contains(st, "master=br0") {
		t.Fatalf("router port left after DeletePod:\n%s", st)
	}
	for range 2 {
		if err := e.m.DeleteAccount("alice", 0); err != nil {
			t.Fatal(err)
		}
	}
	if st := nsState(t, e.hostPath); !strings.Contains(st, e.lab+"-edge") || strings.Contains(st, e.lab+"w0") {
		t.Fatalf("after deleting one of two accounts the host has:\n%s", st)
	}
	for range 2 {
		if err := e.m.DeleteAccount("bob", 1); err != nil {
			t.Fatal(err)
		}
	}
	if after := nsState(t, e.hostPath); after != baseline {
		t.Fatalf("host netns differs after deleting all accounts:\n%s", diffLines(baseline, after))
	}
	if st := nsState(t, pb); strings.Contains(st, "eth0") {
		t.Fatalf("DeleteAccount left the pod's eth0:\n%s", st)
	}
	if fwd, _ := getSysctl(e.hostPath, ipForwardKey); fwd != fwd0 {
		t.Fatalf("host ip_forward = %s, was %s", fwd, fwd0)
	}
	for _, n := range labNetns(t, e.lab, e.hostName) {
		if strings.HasPrefix(n, e.lab+"-r") {
			t.Fatalf("router netns %s left", n)
		}
	}
}

func TestResetLeavesNothing(t *testing.T) {
	e := newEnv(t)
	baseline := nsState(t, e.hostPath)
	fwd0, _ := getSysctl(e.hostPath, ipForwardKey)
	for i, name := range []string{"a", "b"} {
		a := e.account(t, name, i)
		e.pod(t, a, "p1", ip("10.244.1.1"))
		e.pod(t, a, "p2", ip("10.244.1.2"))
	}
	// A new Manager (a later run) cleans up what an earlier one left.
	m2, err := New(Options{Lab: e.lab, HostNetns: e.hostName})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	done, err := m2.Reset()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Reset removed:\n%s", strings.Join(done, "\n"))
	if len(done) != 2+2+4+2 { // 2 transit links, 2 routers, 4 pod netns, edge table + ip_forward
		t.Fatalf("Reset reported %d items:\n%s", len(done), strings.Join(done, "\n"))
	}
	if left := labNetns(t, e.lab, e.hostName); len(left) != 0 {
		t.Fatalf("netns left: %v", left)
	}
	if after := nsState(t, e.hostPath); after != baseline {
		t.Fatalf("host netns differs after Reset:\n%s", diffLines(baseline, after))
	}
	if fwd, _ := getSysctl(e.hostPath, ipForwardKey); fwd != fwd0 {
		t.Fatalf("host ip_forward = %s, was %s", fwd, fwd0)
	}
	if done, err := m2.Reset(); err != nil || len(done) != 0 {
		t.Fatalf("second Reset: %v %v", done, err)
	}
}

// Two labs below one host netns: distinct transit subnets, both work, neither
// reaches the other's routers; and a host route in the way is avoided.
func TestTwoLabsAndTransitOverlap(t *testing.T) {
	e1 := newEnv(t)
	lab2 := netnstest.Lab()
	// Occupy lab2's first candidate with a host route.
	blocked := transitCandidate(lab2, 0, 0)
	hh, err := netns.NewHandle(e1.hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	lo, _ := hh.LinkByName("lo")
	if err := hh.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: blocked.IP.Mask(net.CIDRMask(28, 32)), Mask: net.CIDRMask(28, 32)}, LinkIndex: lo.Attrs().Index, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	e2 := addLab(t, lab2, e1.hostName, e1.hostPath)

	a1 := e1.account(t, "x", 0)
	a2 := e2.account(t, "x", 0)
	if a1.WANIP.Equal(a2.WANIP) || transitCandidate(lab2, 0, 0).Contains(a2.WANIP) {
		t.Fatalf("transit: lab1 %s, lab2 %s (blocked %s)", a1.WANIP, a2.WANIP, blocked)
	}
	p1 := e1.pod(t, a1, "p", ip("10.244.1.1"))
	p2 := e2.pod(t, a2, "p", ip("10.244.1.1"))
	serveTCP(t, a1.RouterNetns, "0.0.0.0:8081", "r1")
	serveTCP(t, a2.RouterNetns, "0.0.0.0:8081", "r2")
	// The host's server on an address of its own beyond the transit links (those pods never reach).
	if err := hh.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: ip("198.51.100.20"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	serveTCP(t, e1.hostPath, "198.51.100.20:80", "host")
	for _, c := range []struct {
		from string
		a    *Account
	}{{p1, a1}, {p2, a2}} {
		got, err := dialTCP(c.from, "198.51.100.20:80", okTimeout)
		if err != nil || got != "host "+c.a.WANIP.String() {
			t.Fatalf("egress: %q %v", got, err)
		}
	}
	if got, err := dialTCP(p1, a2.WANIP.String()+":8081", failTimeout); err == nil {
		t.Fatalf("lab1 pod reached lab2's router: %q", got)
	}
	if got, err := dialTCP(p2, a1.WANIP.String()+":8081", failTimeout); err == nil {
		t.Fatalf("lab2 pod reached lab1's router: %q", got)
	}
	// Resetting one lab leaves the other intact.
	if _, err := e2.m.Reset(); err != nil {
		t.Fatal(err)
	}
	if _, err := dialTCP(p1, "198.51.100.20:80", okTimeout); err != nil {
		t.Fatalf("lab1 broken by lab2's reset: %v", err)
	}
	if fwd, _ := getSysctl(e1.hostPath, ipForwardKey); fwd != "1" {
		t.Fatalf("lab2's reset switched ip_forward off under lab1")
	}
}

// br_netfilter may hand bridged frames to the IP hooks: the router switches
// that off, and even when it is switched on again pod-to-pod traffic passes.
func TestBridgeNetfilter(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 0)
	p1 := e.pod(t, a, "p1", ip("10.244.1.1"))
	p2 := e.pod(t, a, "p2", ip("10.244.1.2"))
	serveTCP(t, p2, ":8080", "p2")
	v, err := getSysctl(a.RouterNetns, "net/bridge/bridge-nf-call-iptables")
	if err != nil {
		netnstest.Missing(t, fmt.Sprintf("kernel without bridge netfilter sysctls: %v", err))
	}
	if v != "0" {
		t.Fatalf("router bridge-nf-call-iptables = %s", v)
	}
	if err := nlink.SetSysctls(a.RouterNetns, []nlink.Sysctl{{Key: "net/bridge/bridge-nf-call-iptables", Value: "1"}}); err != nil {
		t.Fatal(err)
	}
	if got, err := dialTCP(p1, "10.244.1.2:8080", okTimeout); err != nil || got != "p2 10.244.1.1" {
		t.Fatalf("with br_netfilter on: %q %v", got, err)
	}
}

func TestEnsurePodErrors(t *testing.T) {
	e := newEnv(t)
	path, err := netns.EnsureNamed(e.lab + "-nobody-p")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.EnsurePod("nobody", 5, path, ip("10.244.1.1"), "x"); err == nil || !strings.Contains(err.Error(), "EnsureAccount first") {
		t.Fatalf("EnsurePod without account: %v", err)
	}
	a := e.account(t, "alice", 0)
	for _, bad := range []string{"10.244.0.9", "10.245.0.1", "10.244.255.255"} {
		if err := e.m.EnsurePod(a.Name, a.Index, path, ip(bad), "x"); err == nil {
			t.Fatalf("EnsurePod accepted %s", bad)
		}
	}
	if _, err := New(Options{Lab: "toolong7"}); err == nil {
		t.Fatal("New accepted a 7-char lab")
	}
	if _, err := New(Options{Lab: "ok", HostNetns: e.lab + "-missing"}); err == nil {
		t.Fatal("New accepted a missing host netns")
	}
}

// The place left for Floating IPs works end to end: a DNAT in the router (as
// net/lb will program it) plus the FIP in the edge set lets an outside client
// in, with its address kept; without the FIP in the set the edge drops it.
func TestFloatingIPPath(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 0)
	b := e.account(t, "bob", 1)
	p := e.pod(t, a, "web", ip("10.244.3.3"))
	pb := e.pod(t, b, "client", ip("10.244.3.3"))
	serveTCP(t, p, ":8080", "web")
	fip := ip("198.51.100.77")

	hh, err := netns.NewHandle(e.hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	inetPath, ih := e.outside(t, hh)
	if err := ih.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: fip, Mask: net.CIDRMask(32, 32)}, Gw: ip("203.0.113.2")}); err != nil {
		t.Fatal(err)
	}
	if err := hh.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: fip, Mask: net.CIDRMask(32, 32)}, Gw: a.WANIP}); err != nil {
		t.Fatal(err)
	}
	dnatInRouter(t, a.RouterNetns, e.lab+"-fiptest", fip, 80, ip("10.244.3.3"), 8080)

	if got, err := dialTCP(inetPath, "198.51.100.77:80", failTimeout); err == nil {
		t.Fatalf("FIP reachable before it was allowed at the edge: %q", got)
	}
	if err := e.m.SetFloatingIPs([]net.IP{fip}); err != nil {
		t.Fatal(err)
	}
	if got, err := dialTCP(inetPath, "198.51.100.77:80", okTimeout); err != nil || got != "web 203.0.113.1" {
		t.Fatalf("outside -> FIP: %q %v (want the client address kept)", got, err)
	}
	// Another account reaches it too, as anyone on the Internet would.
	if got, err := dialTCP(pb, "198.51.100.77:80", okTimeout); err != nil || got != "web "+b.WANIP.String() {
		t.Fatalf("other account -> FIP: %q %v", got, err)
	}
	// Only the declared port: the same FIP on another port stays closed.
	if got, err := dialTCP(inetPath, "198.51.100.77:81", failTimeout); err == nil {
		t.Fatalf("undeclared FIP port reachable: %q", got)
	}
	// Rebuilding the edge table (here: after someone removed a rule) keeps the FIPs.
	nc, _ := nftConn(e.m.host.Fd())
	tb := &nftables.Table{Name: e.lab + "-edge", Family: nftables.TableFamilyIPv4}
	rules, err := nc.GetRules(tb, &nftables.Chain{Name: "forward", Table: tb})
	if err != nil || len(rules) == 0 {
		t.Fatal(rules, err)
	}
	if err := nc.DelRule(rules[len(rules)-1]); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	e.account(t, "alice", 0)
	if got, err := dialTCP(inetPath, "198.51.100.77:80", okTimeout); err != nil {
		t.Fatalf("after edge rebuild: %q %v", got, err)
	}
	if n := strings.Count(nftRuleset(t, e.hostPath), "comment \"no new connection into a router\""); n != 1 {
		t.Fatalf("edge rebuild: drop rule count %d", n)
	}
	if err := e.m.SetFloatingIPs(nil); err != nil {
		t.Fatal(err)
	}
	if got, err := dialTCP(inetPath, "198.51.100.77:80", failTimeout); err == nil {
		t.Fatalf("FIP still reachable after removal: %q", got)
	}
}

// dnatInRouter plays net/lb: iifname wan0 ip daddr fip tcp dport port dnat to to:toPort.
func dnatInRouter(t *testing.T, routerPath, table string, fip net.IP, port uint16, to net.IP, toPort uint16) {
	f, err := netns.Open(routerPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nc, err := nftConn(f.Fd())
	if err != nil {
		t.Fatal(err)
	}
	tb := nc.AddTable(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4})
	ch := nc.AddChain(&nftables.Chain{Name: "prerouting", Table: tb, Hooknum: nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityNATDest, Type: nftables.ChainTypeNAT})
	exprs := append(append(append(iifname(WANName), daddr(fip)...), l4proto(6)...), dport(port)...)
	exprs = append(exprs,
		&expr.Immediate{Register: 1, Data: to.To4()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(toPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
	)
	nc.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: exprs})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// A pod can talk as soon as EnsurePod returns: its first packet is not lost
// while the kernel is still activating the new link (that showed up as a 1 s
// ARP retry on a pod's first connection).
func TestFirstPacketNotLost(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 0)
	p0 := e.pod(t, a, "p0", ip("10.244.1.1"))
	serveTCP(t, p0, ":8080", "p0")
	for j := 1; j <= 40; j++ {
		pip := ip(fmt.Sprintf("10.244.2.%d", j))
		path := e.pod(t, a, fmt.Sprintf("p%d", j), pip)
		if got, err := dialTCP(path, "10.244.1.1:8080", okTimeout); err != nil || got != "p0 "+pip.String() {
			t.Fatalf("pod %d: %q %v", j, got, err)
		}
		h, err := netns.NewHandle(path)
		if err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName("eth0")
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		if s := l.Attrs().Statistics; s == nil || s.TxDropped != 0 {
			t.Fatalf("pod %d: eth0 dropped its first packets: %+v", j, s)
		}
	}
}

// Pods of two accounts plugged in concurrently (the controllers do that).
func TestConcurrentPods(t *testing.T) {
	e := newEnv(t)
	accts := []*Account{e.account(t, "a", 0), e.account(t, "b", 1)}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	paths := make([][]string, 2)
	for i, a := range accts {
		paths[i] = make([]string, 20)
		for j := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				path, err := netns.EnsureNamed(fmt.Sprintf("%s-%s-p%d", e.lab, a.Name, j))
				if err == nil {
					err = e.m.EnsurePod(a.Name, a.Index, path, ip(fmt.Sprintf("10.244.1.%d", j+1)), fmt.Sprintf("%s/p%d", a.Name, j))
				}
				paths[i][j] = path
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, a := range accts {
		serveTCP(t, paths[i][0], ":8080", a.Name)
		for j := 1; j < 20; j++ {
			if got, err := dialTCP(paths[i][j], "10.244.1.1:8080", okTimeout); err != nil || !strings.HasPrefix(got, a.Name+" ") {
				t.Fatalf("%s p%d -> p0: %q %v", a.Name, j, got, err)
			}
		}
		if st := nsState(t, a.RouterNetns); strings.Count(st, "master=br0") != 20 {
			t.Fatalf("%s: want 20 ports:\n%s", a.Name, st)
		}
	}
}

// HostNetns "" means the process's own netns. The test process must not
// touch the machine's, so it re-runs itself in a fresh network namespace of
// its own and checks the whole cycle there.
func TestOwnNetnsAsHost(t *testing.T) {
	netnstest.RequireRoot(t, "network namespaces, links and nftables")
	if os.Getenv("PI_NETWORK_OWN_NETNS_CHILD") == "1" {
		ownNetnsChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOwnNetnsAsHost$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "PI_NETWORK_OWN_NETNS_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "own-netns cycle ok") {
		t.Fatalf("child in its own netns: %v\n%s", err, out)
	}
}

func ownNetnsChild(t *testing.T) {
	lab := netnstest.Lab()
	self := "/proc/thread-self/ns/net"
	// This process's netns is fresh: bring lo up and give it a "server" address.
	h, err := netns.NewHandle(self)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, _ := h.LinkByName("lo")
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: ip("198.51.100.10"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	before := nsState(t, self)
	fwd0, _ := getSysctl(self, ipForwardKey)
	m, err := New(Options{Lab: lab})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer m.Reset()
	a, err := m.EnsureAccount("own", 0)
	if err != nil {
		t.Fatal(err)
	}
	path, err := netns.EnsureNamed(lab + "-own-p")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.EnsurePod("own", 0, path, ip("10.244.1.1"), "own/p"); err != nil {
		t.Fatal(err)
	}
	serveTCP(t, self, "198.51.100.10:80", "server")
	got, err := dialTCP(path, "198.51.100.10:80", okTimeout)
	if err != nil || got != "server "+a.WANIP.String() {
		t.Fatalf("pod -> own-netns server: %q %v, want %q", got, err, "server "+a.WANIP.String())
	}
	if _, err := m.Reset(); err != nil {
		t.Fatal(err)
	}
	if after := nsState(t, self); after != before {
		t.Fatalf("own netns differs after Reset:\n%s", diffLines(before, after))
	}
	if left, _ := netns.ListNamed(lab + "-"); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
	if fwd, _ := getSysctl(self, ipForwardKey); fwd != fwd0 {
		t.Fatalf("ip_forward %s, was %s", fwd, fwd0)
	}
	t.Log("own-netns cycle ok")
}

// TestBigTCP: every link on a pod's paths (its eth0, its router port, br0 once it has ports, both ends of
// the transit link) takes BIG TCP. One link left at 64 KiB on the router's way out makes the kernel cut
// every bigger packet up in software: a Service's throughput fell to a third when br0 was missed.
func TestBigTCP(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 0)
	p1 := e.pod(t, a, "p1", ip("10.244.1.1"))
	e.pod(t, a, "p2", ip("10.244.1.2"))

	ph, err := netns.NewHandle(p1)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	eth0, err := ph.LinkByName(PodLink)
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().GSOIPv4MaxSize != BigTCPSize {
		// Either this kernel has no BIG TCP for IPv4 (then nothing is asked of pilab), or pilab missed it.
		if err := ph.LinkSetGSOIPv4MaxSize(eth0, BigTCPSize); err != nil {
			t.Skipf("this kernel takes no BIG TCP for IPv4 (%v); links keep 64 KiB", err)
		}
		t.Fatalf("pod eth0: gso_ipv4_max_size %d, want %d", eth0.Attrs().GSOIPv4MaxSize, BigTCPSize)
	}
	check := func(where string, h *netlink.Handle, names ...string) {
		t.Helper()
		for _, n := range names {
			l, err := h.LinkByName(n)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if g, r := l.Attrs().GSOIPv4MaxSize, l.Attrs().GROIPv4MaxSize; g != BigTCPSize || r != BigTCPSize {
				t.Errorf("%s %s: gso_ipv4_max_size %d gro_ipv4_max_size %d, want %d", where, n, g, r, BigTCPSize)
			}
		}
	}
	check("pod", ph, PodLink)
	rh, err := netns.NewHandle(a.RouterNetns)
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	links, err := rh.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex != 0 {
			ports = append(ports, l.Attrs().Name)
		}
	}
	if len(ports) != 2 {
		t.Fatalf("router ports %v, want 2", ports)
	}
	check("router", rh, append(ports, BridgeName, WANName)...)
	hh, err := netns.NewHandle(e.hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	check("host", hh, a.WANLink)
}
