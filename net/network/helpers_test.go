package network

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/pilab/pi/net/nlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// testEnv is one lab hanging below a host netns the test made (its "Internet").
type testEnv struct {
	lab      string
	hostName string
	hostPath string
	m        *Manager
}

// newEnv makes a host netns and a Manager; everything is removed at the end.
func newEnv(t testing.TB) *testEnv {
	t.Helper()
	netnstest.RequireRoot(t, "network namespaces, links and nftables")
	lab := netnstest.Lab()
	hostName := lab + "-host"
	hostPath, err := netns.EnsureNamed(hostName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(hostName); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	// A new netns copies ip_forward from the machine's (devconf_inherit_init_net 0), which another
	// test or a lab may have switched on: start from a host that does not forward, so the tests see the
	// lab switch it on and its last cleanup switch it back.
	if err := nlink.SetSysctls(hostPath, []nlink.Sysctl{{Key: ipForwardKey, Value: "0"}}); err != nil {
		t.Fatal(err)
	}
	return addLab(t, lab, hostName, hostPath)
}

// addLab adds another lab below an existing host netns.
func addLab(t testing.TB, lab, hostName, hostPath string) *testEnv {
	t.Helper()
	m, err := New(Options{Lab: lab, HostNetns: hostName})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := m.Reset(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		m.Close()
		// Whatever the lab left (e.g. test netns) goes too.
		names, _ := netns.ListNamed(lab + "-")
		for _, n := range names {
			if n != hostName {
				netns.DeleteNamed(n)
			}
		}
	})
	return &testEnv{lab: lab, hostName: hostName, hostPath: hostPath, m: m}
}

func (e *testEnv) account(t testing.TB, name string, index int) *Account {
	t.Helper()
	a, err := e.m.EnsureAccount(name, index)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// pod makes the pod's netns (as the controller would) and plugs it in.
func (e *testEnv) pod(t testing.TB, a *Account, pod string, ip net.IP) string {
	t.Helper()
	path, err := netns.EnsureNamed(e.lab + "-" + a.Name + "-" + pod)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.EnsurePod(a.Name, a.Index, path, ip, a.Name+"/"+pod); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveTCP listens on addr inside the netns at path and answers every
// connection with "<id> <client IP>".
func serveTCP(t testing.TB, path, addr, id string) {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(path, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, path, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s", id, host)
			c.Close()
		}
	}()
}

// dialTCP connects from inside the netns at path and returns the answer.
func dialTCP(path, addr string, timeout time.Duration) (string, error) {
	var out string
	err := netns.Do(path, func() error {
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		b, err := io.ReadAll(c)
		out = string(b)
		return err
	})
	return out, err
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

var pingSeq struct {
	sync.Mutex
	n uint16
}

// ping sends one ICMP echo from inside the netns at path and reports whether
// dst answered within timeout.
func ping(path string, dst net.IP, timeout time.Duration) (bool, error) {
	pingSeq.Lock()
	pingSeq.n++
	seq := pingSeq.n
	pingSeq.Unlock()
	// A distinct ICMP id for every echo: concurrent pings from pods of one account to one address would
	// otherwise share a conntrack tuple once the router masquerades them, and the kernel drops the loser
	// of that insert race before it ever reaches the edge.
	id := uint16(os.Getpid()) + seq
	var ok bool
	err := netns.Do(path, func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		msg := make([]byte, 16)
		msg[0] = 8 // echo request
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], seq)
		copy(msg[8:], "pilab!!!")
		binary.BigEndian.PutUint16(msg[2:], csum(msg))
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst}); err != nil {
			return nil // e.g. network unreachable: no answer
		}
		deadline := time.Now().Add(timeout)
		c.SetReadDeadline(deadline)
		buf := make([]byte, 1500)
		for time.Now().Before(deadline) {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return nil
			}
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id &&
				binary.BigEndian.Uint16(buf[6:]) == seq && from.(*net.IPAddr).IP.Equal(dst) {
				ok = true
				return nil
			}
		}
		return nil
	})
	return ok, err
}

// nsState is a comparable description of a namespace: links with their
// settings, addresses, routes, nft ruleset.
func nsState(t testing.TB, path string) string {
	t.Helper()
	h, err := netns.NewHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var lines []string
	for _, l := range links {
		a := l.Attrs()
		line := fmt.Sprintf("link %s type=%s mtu=%d master=%s up=%v mac=%s alias=%q", a.Name, l.Type(), a.MTU,
			names[a.MasterIndex], a.Flags&net.FlagUp != 0, a.HardwareAddr, a.Alias)
		if a.MasterIndex != 0 {
			pi, err := h.LinkGetProtinfo(l)
			if err == nil {
				line += fmt.Sprintf(" hairpin=%v", pi.Hairpin)
			}
		}
		lines = append(lines, line)
		addrs, _ := h.AddrList(l, unix.AF_INET)
		for _, ad := range addrs {
			lines = append(lines, fmt.Sprintf("addr %s %s flags=%d", a.Name, ad.IPNet, ad.Flags))
		}
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		lines = append(lines, fmt.Sprintf("route table=%d dst=%v gw=%v dev=%s src=%v", r.Table, r.Dst, r.Gw, names[r.LinkIndex], r.Src))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n" + nftRuleset(t, path)
}

// nftRuleset inspects with the nft CLI (tests may inspect with it).
func nftRuleset(t testing.TB, path string) string {
	t.Helper()
	var out []byte
	err := netns.Do(path, func() error {
		var err error
		out, err = exec.Command("nft", "list", "ruleset").CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("nft list ruleset in %s: %v\n%s", path, err, out)
	}
	return string(out)
}

func diffLines(a, b string) string {
	as, bs := strings.Split(a, "\n"), strings.Split(b, "\n")
	in := func(l []string, s string) bool {
		for _, x := range l {
			if x == s {
				return true
			}
		}
		return false
	}
	var d []string
	for _, s := range as {
		if !in(bs, s) {
			d = append(d, "- "+s)
		}
	}
	for _, s := range bs {
		if !in(as, s) {
			d = append(d, "+ "+s)
		}
	}
	return strings.Join(d, "\n")
}

func labNetns(t testing.TB, lab, except string) []string {
	t.Helper()
	names, err := netns.ListNamed(lab + "-")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if n != except {
			out = append(out, n)
		}
	}
	return out
}

func ip(s string) net.IP { return net.ParseIP(s).To4() }

var counterRE = regexp.MustCompile(`counter packets (\d+) bytes \d+ .*comment "([^"]*)"`)

// dropCount reads the packet counter of the rule with that comment.
func dropCount(t testing.TB, path, table, comment string) int {
	t.Helper()
	for _, m := range counterRE.FindAllStringSubmatch(nftRuleset(t, path), -1) {
		if m[2] == comment {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	t.Fatalf("no counted rule %q in %s", comment, path)
	return 0
}

// outside makes a netns "<lab>-inet" behind the host netns: host 203.0.113.2/24
// on link <lab>up0, the outside 203.0.113.1/24 on its eth0.
func (e *testEnv) outside(t testing.TB, hh *netlink.Handle) (string, *netlink.Handle) {
	t.Helper()
	inetPath, err := netns.EnsureNamed(e.lab + "-inet")
	if err != nil {
		t.Fatal(err)
	}
	inetF, err := netns.Open(inetPath)
	if err != nil {
		t.Fatal(err)
	}
	defer inetF.Close()
	la := netlink.NewLinkAttrs()
	la.Name = e.lab + "up0"
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(inetF.Fd())}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := hh.LinkByName(la.Name); err == nil {
			hh.LinkDel(l)
		}
	})
	up, err := hh.LinkByName(la.Name)
	if err != nil {
		t.Fatal(err)
	}
	ih, err := netns.NewHandle(inetPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ih.Close)
	ie, err := ih.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		h  *netlink.Handle
		l  netlink.Link
		ip string
	}{{hh, up, "203.0.113.2"}, {ih, ie, "203.0.113.1"}} {
		if err := x.h.AddrAdd(x.l, &netlink.Addr{IPNet: &net.IPNet{IP: ip(x.ip), Mask: net.CIDRMask(24, 32)}}); err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(x.l); err != nil {
			t.Fatal(err)
		}
	}
	return inetPath, ih
}
