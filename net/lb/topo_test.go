package lb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/net/network"

	"github.com/vishvananda/netlink"

	"github.com/pilab/pi/net/netns"
)

// topo is a stand-in for an account network: a router netns with bridge br0
// (10.244.0.1/16, hairpin on every port), pods with eth0 10.244.1.<10+i>/16
// and a default route via the router, and a "client" netns on the WAN side
// (198.51.100.2, documentation range, only ever inside these namespaces).
type topo struct {
	t       testing.TB
	prefix  string
	account string
	router  string
	client  string
	pods    []*pod
	names   []string
}

type pod struct {
	name string
	path string
	ip   net.IP
}

var (
	routerIP    = net.IPv4(10, 244, 0, 1)
	podMask     = net.CIDRMask(16, 32)
	wanRouterIP = net.IPv4(198, 51, 100, 1)
	wanClientIP = net.IPv4(198, 51, 100, 2)
	wanMask     = net.CIDRMask(24, 32)
)

func podIP(i int) net.IP { return net.IPv4(10, 244, 1, byte(10+i)) }

// newTopo builds an account with n pods. account distinguishes two accounts
// of one test (names of netns and links); pod IPs are identical across them.
// Like net/network's router, bridged frames stay out of the IP hooks and no
// ICMP redirects are sent; newTopoBrNF keeps br_netfilter on instead.
func newTopo(t testing.TB, prefix, account string, n int) *topo {
	return newTopoBrNF(t, prefix, account, n, false)
}

func newTopoBrNF(t testing.TB, prefix, account string, n int, brNetfilter bool) *topo {
	t.Helper()
	tp := &topo{t: t, prefix: prefix, account: account}
	t.Cleanup(tp.cleanup)
	tp.router = tp.netns("r")
	rh, err := netns.NewHandle(tp.router)
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", MTU: 1400}}
	must(t, rh.LinkAdd(br), "add br0")
	brl, err := rh.LinkByName("br0")
	must(t, err, "find br0")
	must(t, rh.AddrAdd(brl, &netlink.Addr{IPNet: &net.IPNet{IP: routerIP, Mask: podMask}}), "router address")
	must(t, rh.LinkSetUp(brl), "br0 up")
	must(t, sysctl(tp.router, "net/ipv4/ip_forward", "1"), "ip_forward")
	must(t, sysctl(tp.router, "net/ipv4/conf/all/send_redirects", "0"), "send_redirects")
	must(t, sysctl(tp.router, "net/ipv4/conf/default/send_redirects", "0"), "send_redirects")
	brnf := "0"
	if brNetfilter {
		brnf = "1"
	}
	must(t, sysctl(tp.router, "net/bridge/bridge-nf-call-iptables", brnf), "bridge-nf-call-iptables")

	for i := 0; i < n; i++ {
		p := &pod{name: fmt.Sprintf("%s-pod%d", account, i), path: tp.netns(fmt.Sprintf("p%d", i)), ip: podIP(i)}
		tp.pods = append(tp.pods, p)
		peer := fmt.Sprintf("%s%sp%d", prefix, account, i)
		tp.veth(p.path, peer, &net.IPNet{IP: p.ip, Mask: podMask}, routerIP)
		l, err := rh.LinkByName(peer)
		must(t, err, "find "+peer)
		must(t, rh.LinkSetMaster(l, brl), "attach "+peer)
		must(t, rh.LinkSetHairpin(l, true), "hairpin "+peer)
		bigTCP(rh, l)
		must(t, rh.LinkSetUp(l), peer+" up")
	}

	// Only now: an empty bridge's TSO limit (64 KiB) refuses BIG TCP; with ports it takes it.
	if brl, err = rh.LinkByName("br0"); err == nil {
		bigTCP(rh, brl)
	}

	tp.client = tp.netns("c")
	wan := prefix + account + "w"
	tp.veth(tp.client, wan, &net.IPNet{IP: wanClientIP, Mask: wanMask}, wanRouterIP)
	wl, err := rh.LinkByName(wan)
	must(t, err, "find "+wan)
	must(t, rh.AddrAdd(wl, &netlink.Addr{IPNet: &net.IPNet{IP: wanRouterIP, Mask: wanMask}}), "wan address")
	bigTCP(rh, wl)
	must(t, rh.LinkSetUp(wl), "wan up")
	// Like a real router: everything unknown goes out the WAN side.
	must(t, rh.RouteAdd(&netlink.Route{Gw: wanClientIP, LinkIndex: wl.Attrs().Index}), "router default route")

	// Carrier changes are applied by the kernel's linkwatch work, up to a
	// second later: until then the qdisc drops and the bridge port is not
	// forwarding, so a test's first SYN could vanish and cost a 1 s retry.
	waitOperUp(t, tp.router, "br0", wan)
	for i, p := range tp.pods {
		waitOperUp(t, tp.router, fmt.Sprintf("%s%sp%d", prefix, account, i))
		waitOperUp(t, p.path, "eth0")
	}
	waitOperUp(t, tp.client, "eth0")
	return tp
}

func waitOperUp(t testing.TB, nsPath string, links ...string) {
	t.Helper()
	h, err := netns.NewHandle(nsPath)
	must(t, err, "handle")
	defer h.Close()
	deadline := time.Now().Add(5 * time.Second)
	for _, name := range links {
		for {
			l, err := h.LinkByName(name)
			must(t, err, "find "+name)
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("link %s in %s not operationally up after 5s (state %s)", name, nsPath, l.Attrs().OperState)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func (tp *topo) netns(role string) string {
	name := fmt.Sprintf("%s-%s-%s", tp.prefix, tp.account, role)
	path, err := netns.EnsureNamed(name)
	must(tp.t, err, "create netns "+name)
	tp.names = append(tp.names, name)
	return path
}

// veth creates eth0 inside nsPath with its peer placed straight into the
// router netns, addresses it and routes everything via gw.
func (tp *topo) veth(nsPath, peer string, addr *net.IPNet, gw net.IP) {
	t := tp.t
	rf, err := netns.Open(tp.router)
	must(t, err, "open router netns")
	defer rf.Close()
	h, err := netns.NewHandle(nsPath)
	must(t, err, "handle "+nsPath)
	defer h.Close()
	must(t, h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1400},
		PeerName: peer, PeerNamespace: netlink.NsFd(rf.Fd())}), "veth "+peer)
	l, err := h.LinkByName("eth0")
	must(t, err, "find eth0")
	must(t, h.AddrAdd(l, &netlink.Addr{IPNet: addr}), "address eth0")
	bigTCP(h, l)
	must(t, h.LinkSetUp(l), "eth0 up")
	must(t, h.RouteAdd(&netlink.Route{Gw: gw, LinkIndex: l.Attrs().Index}), "default route")
}

// bigTCP gives a link the IPv4 GSO/GRO limits net/network gives pilab's links, so the benchmarks here
// measure the path pods get.
func bigTCP(h *netlink.Handle, l netlink.Link) {
	h.LinkSetGSOIPv4MaxSize(l, network.BigTCPSize)
	h.LinkSetGROIPv4MaxSize(l, network.BigTCPSize)
}

func (tp *topo) cleanup() {
	for _, n := range tp.names {
		if err := netns.DeleteNamed(n); err != nil {
			tp.t.Errorf("cleanup: %v", err)
		}
	}
}

func must(t testing.TB, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func sysctl(nsPath, key, val string) error {
	return netns.Do(nsPath, func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(val), 0o644)
	})
}

// serveTCP answers every connection with "<name> <client ip>\n", so tests see
// which endpoint took a connection and which source address it saw.
func serveTCP(t testing.TB, nsPath, addr, name string) {
	t.Helper()
	var ln net.Listener
	must(t, netns.Do(nsPath, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}), "listen "+addr+" in "+nsPath)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s\n", name, host)
			c.Close()
		}
	}()
}

// serveUDP answers every datagram with "<name> <client ip>".
func serveUDP(t testing.TB, nsPath, addr, name string) {
	t.Helper()
	var pc net.PacketConn
	must(t, netns.Do(nsPath, func() (err error) {
		pc, err = net.ListenPacket("udp4", addr)
		return err
	}), "listen udp "+addr)
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			pc.WriteTo([]byte(name+" "+host), from)
		}
	}()
}

// ask connects from nsPath to addr and returns the server's answer line.
func ask(nsPath, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := netns.Do(nsPath, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// who is the endpoint name of an answer.
func who(answer string) string { return strings.Fields(answer + " ")[0] }

// dumpTable logs `nft list table` of the router when LB_DUMP=1 (inspection
// only; the rules themselves are programmed through netlink).
func dumpTable(t testing.TB, tp *topo, table string) {
	t.Helper()
	if os.Getenv("LB_DUMP") != "1" {
		return
	}
	name := tp.names[0]
	out, err := exec.Command("ip", "netns", "exec", name, "nft", "list", "table", "ip", table).CombinedOutput()
	t.Logf("nft list table ip %s (netns %s): %v\n%s", table, name, err, out)
}
