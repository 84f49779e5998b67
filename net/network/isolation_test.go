package network

import (
	"net"
	"strings"
	"testing"

	"github.com/pilab/pi/net/netns"
	"github.com/vishvananda/netlink"
)

// Issue 9, defect 1: account "x" pod "y-z" and account "x-y" pod "z" were given one netns (the controller
// joined the names). Whatever the caller's naming, the second pod must not take the first pod's eth0 over,
// and deleting the second must leave the first pod's link alone.
func TestCollidingPodCannotTakeOverLink(t *testing.T) {
	e := newEnv(t)
	x := e.account(t, "x", 0)
	xy := e.account(t, "x-y", 1)
	shared := e.pod(t, x, "y-z", ip("10.244.1.1")) // netns <lab>-x-y-z, pod ID "x/y-z"
	client := e.pod(t, x, "client", ip("10.244.1.2"))
	serveTCP(t, shared, ":80", "x-nginx")
	before := nsState(t, shared)

	err := e.m.EnsurePod(xy.Name, xy.Index, shared, ip("10.244.1.1"), "x-y/z")
	if err == nil {
		t.Fatal("EnsurePod of a second pod in the first pod's netns succeeded: it took the first pod's eth0 over")
	}
	for _, want := range []string{PodLink, shared, "x-y/z", "x/y-z"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if err := e.m.DeletePod(xy.Name, xy.Index, "x-y/z"); err != nil {
		t.Fatal(err)
	}
	if after := nsState(t, shared); after != before {
		t.Fatalf("the first pod's netns changed:\n%s", diffLines(before, after))
	}
	if got, err := dialTCP(client, "10.244.1.1:80", okTimeout); err != nil || got != "x-nginx 10.244.1.2" {
		t.Fatalf("x's pod no longer answers on its eth0: %q %v", got, err)
	}

	// A router port under a pod's port name that names another pod (a name collision of ports) is neither
	// adopted nor deleted.
	rh, err := netns.NewHandle(x.RouterNetns)
	if err != nil {
		t.Fatal(err)
	}
	defer rh.Close()
	other, err := netns.EnsureNamed(e.lab + "-other")
	if err != nil {
		t.Fatal(err)
	}
	of, err := netns.Open(other)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	la := netlink.NewLinkAttrs()
	la.Name = podPortName("x/victim")
	if err := rh.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(of.Fd())}); err != nil {
		t.Fatal(err)
	}
	setAlias(t, rh, la.Name, portAlias(ip("10.244.1.7"), "x/someone-else"))
	victim, err := netns.EnsureNamed(e.lab + "-victim")
	if err != nil {
		t.Fatal(err)
	}
	err = e.m.EnsurePod(x.Name, x.Index, victim, ip("10.244.1.7"), "x/victim")
	if err == nil || !strings.Contains(err.Error(), la.Name) || !strings.Contains(err.Error(), "x/someone-else") {
		t.Fatalf("EnsurePod with another pod's port under its port name: %v, want an error naming %s and its owner", err, la.Name)
	}
	if err := e.m.DeletePod(x.Name, x.Index, "x/victim"); err == nil {
		t.Fatal("DeletePod deleted (or ignored) a port that names another pod")
	}
	if _, err := rh.LinkByName(la.Name); err != nil {
		t.Fatalf("the other pod's port is gone: %v", err)
	}
}

// A host link under an account's transit name that is not this account's is neither adopted nor deleted.
func TestTransitLinkNotTakenOver(t *testing.T) {
	e := newEnv(t)
	hh, err := netns.NewHandle(e.hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	other, err := netns.EnsureNamed(e.lab + "-other")
	if err != nil {
		t.Fatal(err)
	}
	of, err := netns.Open(other)
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	la := netlink.NewLinkAttrs()
	la.Name = e.m.hostLinkName(1)
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: WANName, PeerNamespace: netlink.NsFd(of.Fd())}); err != nil {
		t.Fatal(err)
	}
	setAlias(t, hh, la.Name, "mallory")
	if _, err := e.m.EnsureAccount("bob", 1); err == nil || !strings.Contains(err.Error(), "mallory") {
		t.Fatalf("EnsureAccount over another account's transit link: %v", err)
	}
	d := netlink.NewLinkAttrs()
	d.Name = e.m.hostLinkName(2)
	if err := hh.LinkAdd(&netlink.Bridge{LinkAttrs: d}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := hh.LinkByName(d.Name); err == nil {
			hh.LinkDel(l)
		}
	})
	if _, err := e.m.EnsureAccount("carol", 2); err == nil || !strings.Contains(err.Error(), "bridge") {
		t.Fatalf("EnsureAccount over a bridge with its transit name: %v", err)
	}
	for _, n := range []string{la.Name, d.Name} {
		if _, err := hh.LinkByName(n); err != nil {
			t.Fatalf("%s was deleted: %v", n, err)
		}
	}
	// The account's own transit link (labelled with its name) is repaired as before.
	a := e.account(t, "alice", 0)
	wan, err := hh.LinkByName(a.WANLink)
	if err != nil || wan.Attrs().Alias != "alice" {
		t.Fatalf("transit link %s: %v, alias %q, want alice", a.WANLink, err, wan.Attrs().Alias)
	}
}

// Issue 9, defect 12 (network half): a server bound to 0.0.0.0 on the host side answered pods on the
// host's transit address. Pods reach the host on its other addresses only.
func TestPodsNeverReachTransitAddresses(t *testing.T) {
	e := newEnv(t)
	a := e.account(t, "alice", 0)
	b := e.account(t, "bob", 1)
	p := e.pod(t, a, "p", ip("10.244.1.1"))

	hh, err := netns.NewHandle(e.hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	lo, _ := hh.LinkByName("lo")
	if err := hh.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	if err := hh.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: ip("198.51.100.10"), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	serveTCP(t, e.hostPath, "0.0.0.0:8090", "host")
	serveTCP(t, b.RouterNetns, "0.0.0.0:8091", "bob-router")

	if got, err := dialTCP(p, "198.51.100.10:8090", okTimeout); err != nil || got != "host "+a.WANIP.String() {
		t.Fatalf("pod -> host beyond the transit link: %q %v, want an answer", got, err)
	}
	for _, to := range []string{
		a.HostIP.String() + ":8090", // the host's end of this account's transit link
		b.HostIP.String() + ":8090", // the host's end of another account's
		b.WANIP.String() + ":8091",  // another account's router
	} {
		if got, err := dialTCP(p, to, failTimeout); err == nil {
			t.Fatalf("pod reached transit address %s: %q", to, got)
		}
	}
	if ok, _ := ping(p, a.HostIP, failTimeout); ok {
		t.Fatalf("pod pinged the host's transit address %s", a.HostIP)
	}
	if n := dropCount(t, a.RouterNetns, e.lab+"-router", "pods never reach the transit links"); n == 0 {
		t.Fatal("the router's transit reject counter is 0: something else stopped the traffic")
	}
	// Egress beyond the host still works after all that.
	if _, err := dialTCP(p, "198.51.100.10:8090", okTimeout); err != nil {
		t.Fatal(err)
	}
}

func setAlias(t *testing.T, h *netlink.Handle, name, alias string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetAlias(l, alias); err != nil {
		t.Fatal(err)
	}
}
