package overlay

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pilab/pi/net/lb"
	"github.com/pilab/pi/net/netns"
)

// serveName answers every TCP connection to addr inside the netns at path with name and the client's
// address as the server saw it.
func serveName(t testing.TB, path, addr, name string) {
	t.Helper()
	var l net.Listener
	if err := netns.Do(path, func() (err error) {
		l, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, path, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s", name, c.RemoteAddr())
			c.Close()
		}
	}()
}

// askTCP connects to addr from inside the netns at path and returns the answer.
func askTCP(path, addr string) (string, error) {
	var out []byte
	err := netns.Do(path, func() error {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		out, err = io.ReadAll(c)
		return err
	})
	return string(out), err
}

// TestNodeServiceDNAT: two accounts with the same addresses on two nodes, each with a Service 10.96.0.10:80
// whose one endpoint is its pod 10.244.2.5 on node 2, programmed as the daemon does in each node (net/lb
// WithNodeBridge, beside this package's routing for it). A client on node 1 reaches its own account's
// endpoint, never the other's, with the router stand-ins holding no rules at all: the client's node did the
// DNAT, and the endpoint saw the client's own address. The node's conntrack entries are in the accounts'
// own zones.
func TestNodeServiceDNAT(t *testing.T) {
	l := newTestLab(t)
	m := l.m
	for _, n := range []int{1, 2} {
		if _, err := m.EnsureNode(n); err != nil {
			t.Fatal(err)
		}
	}
	clients := map[int]string{}
	for _, a := range []int{1, 2} {
		if _, err := m.EnsureSegment(a, l.router(t, a), []int{1, 2}); err != nil {
			t.Fatal(err)
		}
		clients[a] = l.pod(t, 1, a, ip4("10.244.1.5"))
		serveName(t, l.pod(t, 2, a, ip4("10.244.2.5")), "10.244.2.5:8080", fmt.Sprintf("account-%d", a))
		svc := lb.Service{Name: "web", ClusterIP: ip4("10.96.0.10"), Ports: []lb.Port{{Protocol: "TCP", Port: 80,
			Endpoints: []lb.Endpoint{{IP: ip4("10.244.2.5"), Port: 8080}}}}}
		for _, n := range []int{1, 2} {
			s, err := lb.New(netns.Path(m.NodeNetnsName(n)), fmt.Sprintf("%s-svc-%d", l.lab, a), lb.WithNodeBridge(BridgeName(a), uint16(a)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			if _, err := s.Sync([]lb.Service{svc}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for round := 0; round < 3; round++ {
		for _, a := range []int{1, 2} {
			got, err := askTCP(clients[a], "10.96.0.10:80")
			if err != nil {
				t.Fatalf("account %d: 10.96.0.10:80 from node 1: %v", a, err)
			}
			if want := fmt.Sprintf("account-%d 10.244.1.5:", a); !strings.HasPrefix(got, want) {
				t.Errorf("account %d: answered %q, want %q... (its own endpoint, seeing the client's own address)", a, got, want)
			}
		}
	}
	// Node 1's conntrack has the connections, each in its account's zone, DNAT'd there.
	var h *netlink.Handle
	if err := netns.Do(netns.Path(m.NodeNetnsName(1)), func() (err error) {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	zones := map[uint16]int{}
	for _, f := range flows {
		if f.Forward.DstIP.Equal(ip4("10.96.0.10")) && f.Reverse.SrcIP.Equal(ip4("10.244.2.5")) {
			zones[f.Zone]++
		}
	}
	if zones[1] != 3 || zones[2] != 3 || len(zones) != 2 {
		t.Errorf("node 1's DNAT'd connections by conntrack zone: %v, want 3 in zone 1 and 3 in zone 2", zones)
	}
	// Each account's bridge has its own routing rule (the table br_netfilter routes a DNAT'd packet by).
	for _, a := range []int{1, 2} {
		rules, err := h.RuleList(netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range rules {
			found = found || r.IifName == BridgeName(a) && r.Table == ServiceRouteTable(a)
		}
		if !found {
			t.Errorf("node 1 has no rule iif %s lookup %d", BridgeName(a), ServiceRouteTable(a))
		}
	}
}
