package daemon

// GET /x/network: `pi network` — an account's network as a map: its router namespace, the bridge and its
// ports, each pod with its address, MAC and port, the Services with their endpoints, the Floating IPs and
// the transit link. The store says what should exist; the kernel (links, addresses, the Service dispatch
// map, host routes) says what does, and every field below comes from one of them as its comment says. The
// answer is data (NetworkView, stable JSON), so the CLI and the TUI draw the same map; the text and dot
// renderings are here too, for the same reason.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/controller"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/net/overlay"
	"golang.org/x/sys/unix"
)

// NetworkView is the answer of GET /x/network: one account's network. Field names are stable.
type NetworkView struct {
	Account string `json:"account"`
	Lab     string `json:"lab"`
	// Node is the machine the lab runs on (every pod runs there).
	Node string `json:"node"`
	// Ready and Message are the account's network status (store).
	Ready   bool   `json:"ready"`
	Message string `json:"message,omitempty"`
	// Network is the account's pod network (store).
	Network  string        `json:"network"`
	Router   RouterView    `json:"router"`
	Transit  TransitView   `json:"transit"`
	Pods     []PodView     `json:"pods"`
	Services []ServiceView `json:"services"`
	FIPs     []FIPView     `json:"fips"`
	// Nodes are the lab's nodes in a multi-node lab (`pi up --nodes N`), each with the account's bridge and
	// VXLAN device on it and the pods placed there; empty in a single-node lab, where every pod is on br0.
	Nodes []NodeView `json:"nodes,omitempty"`
	// Warnings name what the store and the kernel disagree on (a pod without a port on the bridge, a port
	// no pod owns, a Service with endpoints but no dispatch entry), or what could not be read.
	Warnings []string `json:"warnings,omitempty"`
}

// RouterView is the account's router: a network namespace with the bridge, the transit link and the
// nftables tables.
type RouterView struct {
	// Netns is the router's named network namespace; Exec the command that runs a tool inside it.
	Netns string `json:"netns"`
	Exec  string `json:"exec"`
	// IP is the pods' gateway (on br0), DNSIP the account's DNS server (store).
	IP     string     `json:"ip"`
	DNSIP  string     `json:"dnsIP"`
	Bridge BridgeView `json:"bridge"`
	// Tables are the nftables tables in the namespace ("ip pi-router", ...) (kernel).
	Tables []string `json:"tables"`
	// VXLAN is the router's end of the account's segment in a multi-node lab (kernel): the port of br0
	// that carries the frames to and from the nodes.
	VXLAN *VXLANView `json:"vxlan,omitempty"`
}

// NodeView is one node of a multi-node lab as the account sees it: the store's node (name, index, Ready)
// and, in the node's network namespace, its underlay link and the account's bridge and VXLAN device
// (kernel). Pods are the names of the account's pods placed on it (store), the bridge's ports theirs.
type NodeView struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	Ready bool   `json:"ready"`
	Netns string `json:"netns"`
	// Underlay is ul0's address on the lab's fabric, UnderlayState its state ("down" after pi node stop).
	Underlay      string     `json:"underlay,omitempty"`
	UnderlayState string     `json:"underlayState,omitempty"`
	Bridge        BridgeView `json:"bridge"`
	// VXLAN is absent when the node carries none of the account's pods (the segment does not reach it).
	VXLAN *VXLANView `json:"vxlan,omitempty"`
	Pods  []string   `json:"pods"`
	// ServiceTable is the account's nftables table in the node: its pods' connections to a Service are
	// DNAT'd on their own node, as kube-proxy does.
	ServiceTable string `json:"serviceTable,omitempty"`
}

// VXLANView is a VXLAN device of the account's segment (kernel): its VNI, the underlay address it sends
// from, and the peers its all-zero forwarding entries flood broadcasts and unknown MACs to, each named
// ("node worker2", "router") by its underlay address.
type VXLANView struct {
	Name  string   `json:"name"`
	VNI   int      `json:"vni"`
	Local string   `json:"local,omitempty"`
	State string   `json:"state"`
	Peers []string `json:"peers"`
}

// BridgeView is br0 in the router namespace (kernel).
type BridgeView struct {
	Name      string           `json:"name"`
	MAC       string           `json:"mac"`
	MTU       int              `json:"mtu"`
	State     string           `json:"state"`
	Addresses []string         `json:"addresses"`
	Ports     []BridgePortView `json:"ports"`
}

// BridgePortView is a link enslaved to br0: the router-side end of a pod's veth (kernel). Its alias, which
// pilab writes, names the pod's IP and UID; Pod is the pod of that UID in the store.
type BridgePortView struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Alias string `json:"alias,omitempty"`
	Pod   string `json:"pod,omitempty"`
	IP    string `json:"ip,omitempty"`
	// VXLAN marks the router's VXLAN device on br0 (a multi-node lab): the port toward the nodes.
	VXLAN bool `json:"vxlan,omitempty"`
}

// TransitView is the veth pair between the router (wan0) and the lab's Internet side (kernel).
type TransitView struct {
	RouterLink string `json:"routerLink"`
	// WANAddress is the router's Internet-side address with its prefix: the source address pods' traffic
	// leaves with (masquerade), and the next hop of the Floating IPs' host routes.
	WANAddress  string `json:"wanAddress"`
	HostLink    string `json:"hostLink"`
	HostAddress string `json:"hostAddress"`
	// HostNetns is the namespace that plays the Internet: "" for the machine's own.
	HostNetns string `json:"hostNetns,omitempty"`
	// InternetAddresses are the Internet side's own addresses that pods reach through the router's NAT
	// (the laptop's, or the --host-netns's): where `pi trace POD icmp://ADDR` shows the way out. The transit
	// links' addresses are not among them: the router never lets pods reach those.
	InternetAddresses []string `json:"internetAddresses,omitempty"`
}

// PodView is one pod: store (name, phase, IP) and kernel (MAC of its eth0, its port on br0).
type PodView struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	IP    string `json:"ip,omitempty"`
	// MAC is the pod's eth0 address, read in the pod's namespace.
	MAC string `json:"mac,omitempty"`
	// Port is the bridge-side veth of the pod: its port on br0, or in a multi-node lab on its account's
	// bridge on its node.
	Port   string            `json:"port,omitempty"`
	Node   string            `json:"node"`
	Netns  string            `json:"netns,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// ServiceView is a Service (store) and how the router dispatches it (kernel).
type ServiceView struct {
	Name      string            `json:"name"`
	Type      string            `json:"type"`
	ClusterIP string            `json:"clusterIP"`
	FIP       string            `json:"fip,omitempty"` // a LoadBalancer's Floating IP
	Selector  map[string]string `json:"selector,omitempty"`
	Ports     []ServicePortView `json:"ports"`
}

// ServicePortView is one port of a Service.
type ServicePortView struct {
	Name       string `json:"name,omitempty"`
	Protocol   string `json:"protocol"`
	Port       int32  `json:"port"`
	TargetPort string `json:"targetPort"`
	// Chain is the router's chain the dispatch map sends the ClusterIP's port to (kernel); "" when the map
	// has no entry (no ready endpoint: the router refuses the port).
	Chain string `json:"chain,omitempty"`
	// Endpoints are the Service's Endpoints for this port (store).
	Endpoints []EndpointView `json:"endpoints"`
}

// EndpointView is one endpoint of a Service port.
type EndpointView struct {
	Pod   string `json:"pod"`
	IP    string `json:"ip"`
	Port  int32  `json:"port"`
	Ready bool   `json:"ready"`
}

// FIPView is a Floating IP the account holds (store) and its host route (kernel).
type FIPView struct {
	IP          string   `json:"ip"`
	DisplayName string   `json:"displayName,omitempty"`
	Services    []string `json:"services"`
	// Route is the Internet side's route to the address ("via 100.64.0.2 dev piw0"); "" when none (no
	// Service uses it).
	Route string `json:"route,omitempty"`
}

func (d *Daemon) networkView(w http.ResponseWriter, r *http.Request) {
	v, err := d.buildNetwork(server.Account(r))
	if err != nil {
		server.WriteError(w, err)
		return
	}
	server.WriteJSON(w, 200, v)
}

// accountFor reads an account; an unknown one is a NotFound that says how to create it.
func (d *Daemon) accountFor(account string) (*api.Account, error) {
	o, err := d.store.Get(kindAccount, "", account)
	if store.IsNotFound(err) {
		return nil, fmt.Errorf("account %q not found (pi account list shows the accounts; create it with `pi account create %s`): %w", account, account, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("account %q: %w", account, err)
	}
	return o.(*api.Account), nil
}

// netInputs is what a NetworkView is made of: the store's objects and what was read from the kernel.
type netInputs struct {
	lab, node   string
	account     *api.Account
	routerNetns string
	hostNetns   string
	pods        []*corev1.Pod
	services    []*corev1.Service
	endpoints   map[string]*corev1.Endpoints
	fips        []*api.FloatingIP
	// nodes are the lab's nodes of a multi-node lab, by index (empty in a single-node lab).
	nodes []*corev1.Node
	k     kernelNet
}

// kernelNet is what the kernel has of an account's network.
type kernelNet struct {
	bridge   *linkInfo
	ports    []linkInfo
	wan      *linkInfo
	hostLink *linkInfo
	// internet are the Internet side's own addresses a pod's traffic may reach (not the transit links').
	internet []string
	podMACs  map[string]string // pod UID → eth0 MAC
	// dispatch is the Service table's dispatch map: "ip proto port" → chain.
	dispatch map[string]string
	tables   []string
	// fipRoutes: Floating IP → the Internet side's route to it.
	fipRoutes map[string]string
	// routerVX is the router's VXLAN device and nodes each node's side, by node index (multi-node lab).
	routerVX *vxInfo
	nodes    map[int]*nodeNet
	errs     []string
}

type linkInfo struct {
	name, mac, state, alias string
	mtu                     int
	addrs                   []string
	vxlan                   bool
}

// nodeNet is what one node's namespace has of the account's segment.
type nodeNet struct {
	ul     *linkInfo
	bridge *linkInfo
	ports  []linkInfo
	vx     *vxInfo
	// table is the account's Service table in the node ("" if it has none): its pods' connections to a
	// Service are DNAT'd there.
	table string
}

type vxInfo struct {
	name, state, local string
	vni                int
	peers              []string // underlay addresses of the all-zero FDB entries
}

func dispatchKeyOf(ip, proto string, port int32) string {
	return fmt.Sprintf("%s %s %d", ip, strings.ToLower(proto), port)
}

func (d *Daemon) buildNetwork(account string) (*NetworkView, error) {
	acct, err := d.accountFor(account)
	if err != nil {
		return nil, err
	}
	in := netInputs{lab: d.cfg.Lab, account: acct, hostNetns: d.cfg.HostNetns, endpoints: map[string]*corev1.Endpoints{}}
	in.node, _ = os.Hostname()
	list := func(k api.Kind) []metav1.Object {
		objs, err := d.store.List(k, account)
		if err != nil {
			in.k.errs = append(in.k.errs, fmt.Sprintf("list %s: %v", k.Plural, err))
		}
		return objs
	}
	for _, o := range list(kindPod) {
		in.pods = append(in.pods, o.(*corev1.Pod))
	}
	for _, o := range list(kindService) {
		in.services = append(in.services, o.(*corev1.Service))
	}
	for _, o := range list(kindEndpointsView) {
		in.endpoints[o.GetName()] = o.(*corev1.Endpoints)
	}
	for _, o := range list(kindFIP) {
		in.fips = append(in.fips, o.(*api.FloatingIP))
	}
	if objs, err := d.store.List(kindNode, ""); err == nil {
		for _, o := range objs {
			if n := o.(*corev1.Node); api.NodeIndex(n) > 0 {
				in.nodes = append(in.nodes, n)
			}
		}
		sort.Slice(in.nodes, func(i, j int) bool { return api.NodeIndex(in.nodes[i]) < api.NodeIndex(in.nodes[j]) })
	}
	if acct.Status.Ready || acct.Status.WANIP != "" {
		in.routerNetns = d.network.RouterNetnsName(acct.Status.Index)
		in.k = d.readKernelNet(in.routerNetns, in.pods, in.fips)
		if len(in.nodes) > 0 && d.overlay != nil {
			d.readNodesNet(&in.k, acct.Status.Index, in.nodes)
		}
	}
	v := buildNetworkView(in)
	return &v, nil
}

var kindEndpointsView, _ = api.LookupKind("Endpoints")

// readKernelNet reads the account's links, addresses, dispatch map and routes. What cannot be read is
// said in errs and left empty; the map still shows the rest.
func (d *Daemon) readKernelNet(routerNetns string, pods []*corev1.Pod, fips []*api.FloatingIP) kernelNet {
	k := kernelNet{podMACs: map[string]string{}, dispatch: map[string]string{}, fipRoutes: map[string]string{}}
	path := netns.Path(routerNetns)
	rh, err := netns.NewHandle(path)
	if err != nil {
		k.errs = append(k.errs, fmt.Sprintf("router netns %s: %v (is the daemon's network set up? pi get accounts)", routerNetns, err))
		return k
	}
	defer rh.Close()
	links, err := rh.LinkList()
	if err != nil {
		k.errs = append(k.errs, fmt.Sprintf("list links in %s: %v", routerNetns, err))
	}
	var brIndex, wanPeer int
	for _, l := range links {
		if l.Attrs().Name == network.BridgeName {
			brIndex = l.Attrs().Index
		}
	}
	for _, l := range links {
		a := l.Attrs()
		li := linkInfo{name: a.Name, mac: a.HardwareAddr.String(), state: a.OperState.String(), alias: a.Alias, mtu: a.MTU}
		if vx, ok := l.(*netlink.Vxlan); ok {
			li.vxlan = true
			k.routerVX = readVXLAN(rh, vx, &k.errs)
		}
		switch {
		case a.Name == network.BridgeName || a.Name == network.WANName:
			if addrs, err := rh.AddrList(l, netlink.FAMILY_V4); err == nil {
				for _, ad := range addrs {
					li.addrs = append(li.addrs, ad.IPNet.String())
				}
			}
			if a.Name == network.BridgeName {
				k.bridge = &li
			} else {
				k.wan = &li
				wanPeer = a.ParentIndex // a veth's IFLA_LINK: its peer's index, in the host namespace
			}
		case brIndex != 0 && a.MasterIndex == brIndex:
			k.ports = append(k.ports, li)
		}
	}
	sort.Slice(k.ports, func(i, j int) bool { return k.ports[i].name < k.ports[j].name })

	// The host side: the transit link's peer and the Floating IPs' routes.
	hh, err := d.hostHandle()
	if err != nil {
		k.errs = append(k.errs, fmt.Sprintf("the Internet side's namespace: %v", err))
	} else {
		defer hh.Close()
		if wanPeer != 0 {
			if l, err := hh.LinkByIndex(wanPeer); err == nil {
				a := l.Attrs()
				li := linkInfo{name: a.Name, mac: a.HardwareAddr.String(), state: a.OperState.String(), alias: a.Alias, mtu: a.MTU}
				if addrs, err := hh.AddrList(l, netlink.FAMILY_V4); err == nil {
					for _, ad := range addrs {
						li.addrs = append(li.addrs, ad.IPNet.String())
					}
				}
				k.hostLink = &li
			} else {
				k.errs = append(k.errs, fmt.Sprintf("host side of the transit link (index %d): %v", wanPeer, err))
			}
		}
		if addrs, err := hh.AddrList(nil, netlink.FAMILY_V4); err == nil {
			k.internet = internetAddrs(addrs)
		} else {
			k.errs = append(k.errs, fmt.Sprintf("the Internet side's addresses: %v", err))
		}
		if routes, err := hh.RouteList(nil, netlink.FAMILY_V4); err == nil {
			want := map[string]bool{}
			for _, f := range fips {
				want[f.Name] = true
			}
			for _, rt := range routes {
				if rt.Dst == nil || rt.Gw == nil {
					continue
				}
				if ones, _ := rt.Dst.Mask.Size(); ones != 32 || !want[rt.Dst.IP.String()] {
					continue
				}
				dev := ""
				if l, err := hh.LinkByIndex(rt.LinkIndex); err == nil {
					dev = " dev " + l.Attrs().Name
				}
				k.fipRoutes[rt.Dst.IP.String()] = "via " + rt.Gw.String() + dev
			}
		}
	}

	// Each pod's eth0, in its own namespace.
	for _, p := range pods {
		if p.Status.PodIP == "" {
			continue
		}
		ph, err := netns.NewHandle(netns.Path(controller.PodNetnsName(d.cfg.Lab, p.UID)))
		if err != nil {
			continue // not started yet, or gone: the pod's phase says which
		}
		if l, err := ph.LinkByName(network.PodLink); err == nil {
			k.podMACs[string(p.UID)] = l.Attrs().HardwareAddr.String()
		}
		ph.Close()
	}

	// The nftables tables and the Service dispatch map.
	c, closeNS, err := nftIn(path)
	if err != nil {
		k.errs = append(k.errs, fmt.Sprintf("nftables in %s: %v", routerNetns, err))
		return k
	}
	defer closeNS()
	tables, err := c.ListTables()
	if err != nil {
		k.errs = append(k.errs, fmt.Sprintf("list nftables tables in %s: %v", routerNetns, err))
	}
	for _, t := range tables {
		k.tables = append(k.tables, familyName(t.Family)+" "+t.Name)
		if t.Name != d.svcTable() {
			continue
		}
		elems, err := mapElements(c, t, svcDispatchMap)
		if err != nil {
			k.errs = append(k.errs, fmt.Sprintf("read %s/%s: %v", t.Name, svcDispatchMap, err))
		}
		for _, e := range elems {
			if ip, proto, port, ok := dispatchKeyParts(e.Key); ok {
				if v := elemVerdict(e); v != nil {
					k.dispatch[dispatchKeyOf(ip.String(), proto, int32(port))] = v.Chain
				}
			}
		}
	}
	sort.Strings(k.tables)
	return k
}

// readVXLAN reads a VXLAN device of the account's segment: its VNI, local address and flood peers.
func readVXLAN(h *netlink.Handle, vx *netlink.Vxlan, errs *[]string) *vxInfo {
	// A VXLAN device's operational state is "unknown" (it has no carrier of its own); whether it is up is
	// what tells.
	v := &vxInfo{name: vx.Attrs().Name, state: "down", vni: vx.VxlanId, peers: []string{}}
	if vx.Attrs().Flags&net.FlagUp != 0 {
		v.state = "up"
	}
	if vx.SrcAddr != nil {
		v.local = vx.SrcAddr.String()
	}
	fdb, err := h.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		*errs = append(*errs, fmt.Sprintf("read the forwarding entries of %s: %v", v.name, err))
		return v
	}
	for _, e := range fdb {
		if e.IP != nil && e.HardwareAddr.String() == "00:00:00:00:00:00" {
			v.peers = append(v.peers, e.IP.String())
		}
	}
	sort.Slice(v.peers, func(i, j int) bool { return ipLess(v.peers[i], v.peers[j]) })
	return v
}

// readNodesNet reads, in each node's namespace, its underlay link and the account's bridge b<A> (with its
// ports) and VXLAN device vx<A> (net/overlay's names). A node that does not carry the account has neither.
func (d *Daemon) readNodesNet(k *kernelNet, acctIndex int, nodes []*corev1.Node) {
	k.nodes = map[int]*nodeNet{}
	for _, n := range nodes {
		i := api.NodeIndex(n)
		nsName := d.overlay.NodeNetnsName(i)
		h, err := netns.NewHandle(netns.Path(nsName))
		if err != nil {
			k.errs = append(k.errs, fmt.Sprintf("node %s: netns %s: %v", n.Name, nsName, err))
			continue
		}
		links, err := h.LinkList()
		if err != nil {
			k.errs = append(k.errs, fmt.Sprintf("node %s: list links in %s: %v", n.Name, nsName, err))
		}
		nn := &nodeNet{}
		brIndex := 0
		for _, l := range links {
			if l.Attrs().Name == overlay.BridgeName(acctIndex) {
				brIndex = l.Attrs().Index
			}
		}
		for _, l := range links {
			a := l.Attrs()
			li := linkInfo{name: a.Name, mac: a.HardwareAddr.String(), state: a.OperState.String(), alias: a.Alias, mtu: a.MTU}
			switch {
			case a.Name == network.UnderlayLink:
				if addrs, err := h.AddrList(l, netlink.FAMILY_V4); err == nil {
					for _, ad := range addrs {
						li.addrs = append(li.addrs, ad.IPNet.String())
					}
				}
				nn.ul = &li
			case brIndex != 0 && a.Index == brIndex:
				nn.bridge = &li
			case brIndex != 0 && a.MasterIndex == brIndex:
				if vx, ok := l.(*netlink.Vxlan); ok {
					nn.vx = readVXLAN(h, vx, &k.errs)
					continue
				}
				nn.ports = append(nn.ports, li)
			}
		}
		sort.Slice(nn.ports, func(i, j int) bool { return nn.ports[i].name < nn.ports[j].name })
		h.Close()
		if c, closeNS, err := nftIn(netns.Path(nsName)); err == nil {
			if t, err := c.ListTableOfFamily(controller.NodeServiceTable(d.cfg.Lab, acctIndex), nftables.TableFamilyIPv4); err == nil {
				nn.table = "ip " + t.Name
			}
			closeNS()
		}
		k.nodes[i] = nn
	}
}

// hostHandle opens the namespace that plays the Internet.
func (d *Daemon) hostHandle() (*netlink.Handle, error) {
	return netns.NewHandle(d.hostNetnsPath())
}

// svcTable is the name of the Service table (net/lb) the controller gives every router.
func (d *Daemon) svcTable() string { return d.cfg.Lab + "-svc" }

// routerTable is the name of the router's own table (net/network).
func (d *Daemon) routerTable() string { return d.cfg.Lab + "-router" }

// svcDispatchMap is net/lb's map "ip daddr . meta l4proto . th dport : goto svc-...".
const svcDispatchMap = "service-ips"

// nftIn opens an nftables connection to the namespace at path.
func nftIn(path string) (*nftables.Conn, func(), error) {
	f, err := netns.Open(path)
	if err != nil {
		return nil, nil, err
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return c, func() { f.Close() }, nil
}

func mapElements(c *nftables.Conn, t *nftables.Table, name string) ([]nftables.SetElement, error) {
	s, err := c.GetSetByName(t, name)
	if err != nil {
		return nil, err
	}
	return c.GetSetElements(s)
}

// dispatchKeyParts decodes a dispatch map key: address, protocol and port, each padded to 4 bytes.
func dispatchKeyParts(key []byte) (netip.Addr, string, uint16, bool) {
	if len(key) < 10 {
		return netip.Addr{}, "", 0, false
	}
	ip := netip.AddrFrom4([4]byte(key[0:4]))
	return ip, protoName(key[4]), uint16(key[8])<<8 | uint16(key[9]), true
}

func protoName(p byte) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 132:
		return "sctp"
	case 1:
		return "icmp"
	}
	return strconv.Itoa(int(p))
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return strconv.Itoa(int(f))
}

// buildNetworkView puts the store's objects and the kernel's links together. It is pure: what it shows
// is what in holds.
func buildNetworkView(in netInputs) NetworkView {
	a := in.account
	v := NetworkView{Account: a.Name, Lab: in.lab, Node: in.node, Ready: a.Status.Ready, Message: a.Status.Message,
		Network: a.Status.Network, Pods: []PodView{}, Services: []ServiceView{}, FIPs: []FIPView{}}
	v.Warnings = append(v.Warnings, in.k.errs...)
	v.Router = RouterView{Netns: in.routerNetns, IP: a.Status.RouterIP, DNSIP: a.Status.DNSIP, Tables: in.k.tables}
	if in.routerNetns != "" {
		v.Router.Exec = "ip netns exec " + in.routerNetns
	}
	if v.Router.Tables == nil {
		v.Router.Tables = []string{}
	}
	v.Router.Bridge = BridgeView{Name: network.BridgeName, Addresses: []string{}, Ports: []BridgePortView{}}
	if b := in.k.bridge; b != nil {
		v.Router.Bridge.MAC, v.Router.Bridge.MTU, v.Router.Bridge.State = b.mac, b.mtu, b.state
		v.Router.Bridge.Addresses = append(v.Router.Bridge.Addresses, b.addrs...)
	} else if in.routerNetns != "" && len(in.k.errs) == 0 {
		v.Warnings = append(v.Warnings, fmt.Sprintf("no bridge %s in the router netns %s", network.BridgeName, in.routerNetns))
	}

	// Ports by the pod UID their alias names ("<ip> <uid>", written by net/network).
	podByUID := map[string]*corev1.Pod{}
	for _, p := range in.pods {
		podByUID[string(p.UID)] = p
	}
	portOf := map[string]string{} // pod UID → port name
	for _, l := range in.k.ports {
		pv := BridgePortView{Name: l.name, State: l.state, Alias: l.alias}
		if l.vxlan {
			pv.VXLAN = true
			v.Router.Bridge.Ports = append(v.Router.Bridge.Ports, pv)
			continue
		}
		ip, uid, _ := strings.Cut(l.alias, " ")
		pv.IP = ip
		if p := podByUID[uid]; p != nil && uid != "" {
			pv.Pod = p.Name
			portOf[uid] = l.name
		} else {
			v.Warnings = append(v.Warnings, fmt.Sprintf("br0 port %s (alias %q) belongs to no pod of account %s", l.name, l.alias, a.Name))
		}
		v.Router.Bridge.Ports = append(v.Router.Bridge.Ports, pv)
	}

	sortPorts(v.Router.Bridge.Ports)

	// A multi-node lab: the account's segment as the nodes carry it.
	peerName := map[string]string{}
	if ip, err := overlay.RouterUnderlayIP(a.Status.Index); err == nil && len(in.nodes) > 0 {
		peerName[ip.String()] = "router"
	}
	for _, n := range in.nodes {
		if ip, err := overlay.NodeUnderlayIP(api.NodeIndex(n)); err == nil {
			peerName[ip.String()] = "node " + n.Name
		}
	}
	v.Router.VXLAN = vxlanView(in.k.routerVX, peerName)
	podBridge := map[string]string{} // node name → the account's bridge there, when it has one
	for _, n := range in.nodes {
		i := api.NodeIndex(n)
		nv := NodeView{Name: n.Name, Index: i, Ready: api.NodeReady(n), Pods: []string{},
			Bridge: BridgeView{Name: overlay.BridgeName(a.Status.Index), Addresses: []string{}, Ports: []BridgePortView{}}}
		if in.lab != "" {
			nv.Netns = in.lab + "-n" + strconv.Itoa(i)
		}
		for _, p := range in.pods {
			if p.Spec.NodeName == n.Name {
				nv.Pods = append(nv.Pods, p.Name)
			}
		}
		sort.Strings(nv.Pods)
		if k := in.k.nodes[i]; k != nil {
			if k.ul != nil {
				nv.UnderlayState = k.ul.state
				if len(k.ul.addrs) > 0 {
					nv.Underlay = k.ul.addrs[0]
				}
			}
			if b := k.bridge; b != nil {
				nv.Bridge.MAC, nv.Bridge.MTU, nv.Bridge.State = b.mac, b.mtu, b.state
				podBridge[n.Name] = b.name
			}
			nv.VXLAN = vxlanView(k.vx, peerName)
			nv.ServiceTable = k.table
			for _, l := range k.ports {
				pv := BridgePortView{Name: l.name, State: l.state, Alias: l.alias}
				ip, uid, _ := strings.Cut(l.alias, " ")
				pv.IP = ip
				if p := podByUID[uid]; p != nil && uid != "" {
					pv.Pod = p.Name
					portOf[uid] = l.name
				} else {
					v.Warnings = append(v.Warnings, fmt.Sprintf("node %s: %s port %s (alias %q) belongs to no pod of account %s", n.Name, nv.Bridge.Name, l.name, l.alias, a.Name))
				}
				nv.Bridge.Ports = append(nv.Bridge.Ports, pv)
			}
			sortPorts(nv.Bridge.Ports)
		}
		v.Nodes = append(v.Nodes, nv)
	}

	pods := append([]*corev1.Pod(nil), in.pods...)
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	for _, p := range pods {
		pv := PodView{Name: p.Name, Phase: string(p.Status.Phase), IP: p.Status.PodIP, Node: in.node,
			MAC: in.k.podMACs[string(p.UID)], Port: portOf[string(p.UID)], Labels: p.Labels}
		if len(in.nodes) > 0 {
			pv.Node = p.Spec.NodeName
		}
		if p.UID != "" {
			pv.Netns = controller.PodNetnsName(in.lab, p.UID)
		}
		switch {
		case pv.IP == "" || pv.Port != "" || p.DeletionTimestamp != nil:
		case len(in.nodes) == 0 && in.k.bridge != nil:
			v.Warnings = append(v.Warnings, fmt.Sprintf("pod %s has address %s but no port on br0", p.Name, pv.IP))
		case podBridge[pv.Node] != "":
			v.Warnings = append(v.Warnings, fmt.Sprintf("pod %s has address %s but no port on node %s's bridge %s", p.Name, pv.IP, pv.Node, podBridge[pv.Node]))
		}
		v.Pods = append(v.Pods, pv)
	}

	svcs := append([]*corev1.Service(nil), in.services...)
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	for _, s := range svcs {
		sv := ServiceView{Name: s.Name, Type: string(s.Spec.Type), ClusterIP: s.Spec.ClusterIP, Selector: s.Spec.Selector, Ports: []ServicePortView{}}
		if sv.Type == "" {
			sv.Type = string(corev1.ServiceTypeClusterIP)
		}
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
			sv.FIP = s.Spec.LoadBalancerIP
		}
		for _, sp := range s.Spec.Ports {
			proto := string(sp.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			pv := ServicePortView{Name: sp.Name, Protocol: proto, Port: sp.Port, TargetPort: sp.TargetPort.String(),
				Endpoints: endpointsOf(in.endpoints[s.Name], sp.Name)}
			if pv.TargetPort == "0" || pv.TargetPort == "" {
				pv.TargetPort = strconv.Itoa(int(sp.Port))
			}
			pv.Chain = in.k.dispatch[dispatchKeyOf(s.Spec.ClusterIP, proto, sp.Port)]
			ready := 0
			for _, e := range pv.Endpoints {
				if e.Ready {
					ready++
				}
			}
			if ready > 0 && pv.Chain == "" && in.k.bridge != nil && s.Spec.ClusterIP != corev1.ClusterIPNone {
				v.Warnings = append(v.Warnings, fmt.Sprintf("service %s port %d/%s has %d ready endpoints but no entry in the router's %s map (yet?)",
					s.Name, sp.Port, strings.ToLower(proto), ready, svcDispatchMap))
			}
			sv.Ports = append(sv.Ports, pv)
		}
		v.Services = append(v.Services, sv)
	}

	fips := append([]*api.FloatingIP(nil), in.fips...)
	sort.Slice(fips, func(i, j int) bool { return fips[i].Name < fips[j].Name })
	for _, f := range fips {
		fv := FIPView{IP: f.Name, DisplayName: f.Spec.DisplayName, Services: append([]string{}, f.Status.Services...), Route: in.k.fipRoutes[f.Name]}
		v.FIPs = append(v.FIPs, fv)
	}

	v.Transit = TransitView{RouterLink: network.WANName, HostNetns: in.hostNetns, InternetAddresses: in.k.internet}
	if w := in.k.wan; w != nil && len(w.addrs) > 0 {
		v.Transit.WANAddress = w.addrs[0]
	} else if a.Status.WANIP != "" {
		v.Transit.WANAddress = a.Status.WANIP
	}
	if h := in.k.hostLink; h != nil {
		v.Transit.HostLink = h.name
		if len(h.addrs) > 0 {
			v.Transit.HostAddress = h.addrs[0]
		}
	}
	return v
}

// sortPorts orders a bridge's ports by their pods' names, the way a learner looks them up; the VXLAN port
// and unowned ports last.
func sortPorts(ports []BridgePortView) {
	sort.SliceStable(ports, func(i, j int) bool {
		a, b := ports[i], ports[j]
		if (a.Pod == "") != (b.Pod == "") {
			return a.Pod != ""
		}
		return a.Pod < b.Pod
	})
}

// vxlanView names a VXLAN device's peers by their underlay addresses ("169.254.1.2 (node worker2)").
func vxlanView(k *vxInfo, peerName map[string]string) *VXLANView {
	if k == nil {
		return nil
	}
	v := &VXLANView{Name: k.name, VNI: k.vni, Local: k.local, State: k.state, Peers: []string{}}
	for _, p := range k.peers {
		if n := peerName[p]; n != "" {
			p += " (" + n + ")"
		}
		v.Peers = append(v.Peers, p)
	}
	return v
}

// endpointsOf lists the endpoints of one Service port from its Endpoints object, ready ones first as
// Kubernetes orders them, then by address.
func endpointsOf(ep *corev1.Endpoints, portName string) []EndpointView {
	out := []EndpointView{}
	if ep == nil {
		return out
	}
	for _, ss := range ep.Subsets {
		var port int32 = -1
		for _, p := range ss.Ports {
			if p.Name == portName {
				port = p.Port
			}
		}
		if port < 0 {
			continue
		}
		add := func(addrs []corev1.EndpointAddress, ready bool) {
			for _, a := range addrs {
				e := EndpointView{IP: a.IP, Port: port, Ready: ready}
				if a.TargetRef != nil {
					e.Pod = a.TargetRef.Name
				}
				out = append(out, e)
			}
		}
		add(ss.Addresses, true)
		add(ss.NotReadyAddresses, false)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Ready != out[j].Ready {
			return out[i].Ready
		}
		return ipLess(out[i].IP, out[j].IP)
	})
	return out
}

func ipLess(a, b string) bool {
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	if err1 != nil || err2 != nil {
		return a < b
	}
	return x.Less(y)
}

// WriteNetworkText draws the account's network as a tree for people learning what is where.
func WriteNetworkText(w io.Writer, v *NetworkView) {
	state := "ready"
	if !v.Ready {
		state = "not ready"
		if v.Message != "" {
			state += ": " + v.Message
		}
	}
	if len(v.Nodes) > 0 {
		fmt.Fprintf(w, "account %s (lab %s, %d nodes) — network %s, %s\n", v.Account, v.Lab, len(v.Nodes), orDash(v.Network), state)
	} else {
		fmt.Fprintf(w, "account %s (lab %s, node %s) — network %s, %s\n", v.Account, v.Lab, v.Node, orDash(v.Network), state)
	}
	if v.Router.Netns == "" {
		fmt.Fprintln(w, "  no router yet: the account's network is not set up")
	} else {
		r := v.Router
		fmt.Fprintf(w, "└─ router  netns %s   (look inside: %s nft list ruleset)\n", r.Netns, r.Exec)
		b := r.Bridge
		fmt.Fprintf(w, "   ├─ %s  %s  mac %s  mtu %d  %s   (the pods' gateway %s; account DNS %s)\n",
			b.Name, strings.Join(b.Addresses, ","), orDash(b.MAC), b.MTU, strings.ToLower(orDash(b.State)), orDash(r.IP), orDash(r.DNSIP))
		pods := map[string]PodView{}
		for _, p := range v.Pods {
			pods[p.Name] = p
		}
		nw, iw := 3, 2
		for _, port := range b.Ports {
			if p, ok := pods[port.Pod]; ok {
				nw, iw = max(nw, len(p.Name)), max(iw, len(p.IP))
			}
		}
		for i, port := range b.Ports {
			branch := "├─"
			if i == len(b.Ports)-1 {
				branch = "└─"
			}
			if p, ok := pods[port.Pod]; ok && port.Pod != "" {
				fmt.Fprintf(w, "   │  %s port %s ── pod %-*s  %-*s  mac %s  (eth0; %s on %s)\n", branch, port.Name, nw, p.Name, iw, p.IP,
					orDash(p.MAC), strings.ToLower(p.Phase), p.Node)
			} else if port.VXLAN {
				fmt.Fprintf(w, "   │  %s port %s ── %s   (the account's segment: the pods are on the nodes below)\n", branch, port.Name, vxlanText(r.VXLAN))
			} else {
				fmt.Fprintf(w, "   │  %s port %s ── (no pod: alias %q)\n", branch, port.Name, port.Alias)
			}
		}
		if len(b.Ports) == 0 {
			fmt.Fprintln(w, "   │  (no ports: no pod is attached)")
		}
		t := v.Transit
		fmt.Fprintf(w, "   ├─ %s  %s ══ transit link ══ %s  %s on the Internet side%s\n", t.RouterLink, orDash(t.WANAddress),
			orDash(t.HostLink), orDash(t.HostAddress), hostNetnsText(t.HostNetns))
		fmt.Fprintf(w, "   │     (pods reach the Internet masqueraded behind %s)\n", strings.Split(orDash(t.WANAddress), "/")[0])
		if len(t.InternetAddresses) > 0 {
			fmt.Fprintf(w, "   │     (the Internet side answers pods on %s: pi trace POD icmp://%s shows the way out)\n",
				strings.Join(t.InternetAddresses, ", "), t.InternetAddresses[0])
		}
		fmt.Fprintf(w, "   └─ nftables  %s\n", strings.Join(r.Tables, ", "))
	}
	writeNodesText(w, v)
	var unattached []string
	for _, p := range v.Pods {
		if p.Port == "" {
			unattached = append(unattached, fmt.Sprintf("%s (%s)", p.Name, strings.ToLower(p.Phase)))
		}
	}
	if len(unattached) > 0 {
		fmt.Fprintf(w, "pods without a port: %s\n", strings.Join(unattached, ", "))
	}
	fmt.Fprintln(w, "services")
	if len(v.Services) == 0 {
		fmt.Fprintln(w, "   (none)")
	}
	for _, s := range v.Services {
		extra := ""
		if s.FIP != "" {
			extra = ", Floating IP " + s.FIP
		}
		fmt.Fprintf(w, "   %s  %s %s%s\n", s.Name, s.Type, s.ClusterIP, extra)
		if s.ClusterIP == string(corev1.ClusterIPNone) {
			fmt.Fprintln(w, "   └─ headless: no Service IP and no router rules; the account's DNS answers the name with the pods' addresses")
			continue
		}
		for _, p := range s.Ports {
			chain := "no dispatch entry: the router refuses it (no ready endpoint)"
			if p.Chain != "" {
				chain = "chain " + p.Chain
			}
			fmt.Fprintf(w, "   └─ %s:%d/%s → target %s   (%s)\n", s.ClusterIP, p.Port, strings.ToLower(p.Protocol), p.TargetPort, chain)
			for i, e := range p.Endpoints {
				branch := "├─"
				if i == len(p.Endpoints)-1 {
					branch = "└─"
				}
				ready := ""
				if !e.Ready {
					ready = "  (not ready)"
				}
				fmt.Fprintf(w, "      %s %s:%d  pod %s%s\n", branch, e.IP, e.Port, orDash(e.Pod), ready)
			}
			if len(p.Endpoints) == 0 {
				fmt.Fprintln(w, "      (no endpoints)")
			}
		}
	}
	fmt.Fprintln(w, "floating IPs")
	if len(v.FIPs) == 0 {
		fmt.Fprintln(w, "   (none)")
	}
	for _, f := range v.FIPs {
		name := ""
		if f.DisplayName != "" {
			name = " (" + f.DisplayName + ")"
		}
		to := "unused"
		if len(f.Services) > 0 {
			to = "→ service " + strings.Join(f.Services, ", ")
		}
		route := "no route (nothing uses it)"
		if f.Route != "" {
			route = "Internet side routes it " + f.Route
		}
		fmt.Fprintf(w, "   %s%s %s   (%s)\n", f.IP, name, to, route)
	}
	for _, warn := range v.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

// writeNodesText draws a multi-node lab's nodes: each node's underlay link, the account's bridge there with
// its pods' ports, and its VXLAN device with the peers it floods to.
func writeNodesText(w io.Writer, v *NetworkView) {
	if len(v.Nodes) == 0 {
		return
	}
	vni := ""
	if v.Router.VXLAN != nil {
		vni = fmt.Sprintf(" by VXLAN VNI %d", v.Router.VXLAN.VNI)
	}
	fmt.Fprintf(w, "nodes   (the account's network %s is one layer-2 segment over the router and the nodes%s)\n", orDash(v.Network), vni)
	pods := map[string]PodView{}
	nw, iw := 3, 2
	for _, p := range v.Pods {
		pods[p.Name] = p
		nw, iw = max(nw, len(p.Name)), max(iw, len(p.IP))
	}
	for i, n := range v.Nodes {
		branch, bar := "├─", "│"
		if i == len(v.Nodes)-1 {
			branch, bar = "└─", " "
		}
		ready := "ready"
		if !n.Ready {
			ready = "not ready"
		}
		fmt.Fprintf(w, "%s node %s  %s  netns %s  underlay ul0 %s %s   (look inside: ip netns exec %s bridge fdb show)\n",
			branch, n.Name, ready, orDash(n.Netns), orDash(n.Underlay), strings.ToLower(orDash(n.UnderlayState)), orDash(n.Netns))
		if n.Bridge.State == "" && n.VXLAN == nil {
			fmt.Fprintf(w, "%s  └─ (no %s: no pod of account %s runs here, the segment does not reach this node)\n", bar, n.Bridge.Name, v.Account)
			continue
		}
		fmt.Fprintf(w, "%s  ├─ %s  mac %s  mtu %d  %s   (the account's bridge on this node)\n", bar, n.Bridge.Name, orDash(n.Bridge.MAC), n.Bridge.MTU, strings.ToLower(orDash(n.Bridge.State)))
		for j, port := range n.Bridge.Ports {
			pb := "├─"
			if j == len(n.Bridge.Ports)-1 {
				pb = "└─"
			}
			if p, ok := pods[port.Pod]; ok && port.Pod != "" {
				fmt.Fprintf(w, "%s  │  %s port %s ── pod %-*s  %-*s  mac %s  (eth0; %s)\n", bar, pb, port.Name, nw, p.Name, iw, p.IP, orDash(p.MAC), strings.ToLower(p.Phase))
			} else {
				fmt.Fprintf(w, "%s  │  %s port %s ── (no pod: alias %q)\n", bar, pb, port.Name, port.Alias)
			}
		}
		if len(n.Bridge.Ports) == 0 {
			fmt.Fprintf(w, "%s  │  (no ports: no pod of the account is attached here)\n", bar)
		}
		name := "vx?"
		if n.VXLAN != nil {
			name = n.VXLAN.Name
		}
		last := "└─"
		if n.ServiceTable != "" {
			last = "├─"
		}
		fmt.Fprintf(w, "%s  %s %s  %s\n", bar, last, name, vxlanText(n.VXLAN))
		if n.ServiceTable != "" {
			fmt.Fprintf(w, "%s  └─ nftables  %s   (the account's Services: its pods' connections are DNAT'd on this node)\n", bar, n.ServiceTable)
		}
	}
}

// vxlanText says what a VXLAN device of the segment is and where it floods.
func vxlanText(x *VXLANView) string {
	if x == nil {
		return "VXLAN device not found"
	}
	return fmt.Sprintf("VXLAN VNI %d from %s  %s → %s", x.VNI, orDash(x.Local), strings.ToLower(orDash(x.State)), strings.Join(x.Peers, ", "))
}

func hostNetnsText(ns string) string {
	if ns == "" {
		return " (this machine)"
	}
	return " (netns " + ns + ")"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteNetworkDot draws the account's network as a Graphviz graph: the router (a cluster with br0, wan0
// and its ports), the pods, the Services pointing to their endpoints, the Floating IPs pointing to their
// Services, and the Internet side.
func WriteNetworkDot(w io.Writer, v *NetworkView) {
	q := strconv.Quote
	fmt.Fprintf(w, "digraph %s {\n", q("pi network "+v.Account))
	fmt.Fprintln(w, "  rankdir=LR;")
	fmt.Fprintln(w, `  node [shape=box, fontname="monospace", fontsize=10];`)
	fmt.Fprintf(w, "  label=%s;\n", q(fmt.Sprintf("account %s (lab %s) — network %s", v.Account, v.Lab, v.Network)))
	internet := "internet"
	fmt.Fprintf(w, "  %s [label=%s, shape=ellipse];\n", q(internet), q("Internet side\n"+v.Transit.HostLink+" "+v.Transit.HostAddress))
	if v.Router.Netns != "" {
		fmt.Fprintf(w, "  subgraph %s {\n", q("cluster_router"))
		fmt.Fprintf(w, "    label=%s;\n", q("router netns "+v.Router.Netns))
		fmt.Fprintf(w, "    %s [label=%s];\n", q("br0"), q(fmt.Sprintf("br0\n%s\n%s", strings.Join(v.Router.Bridge.Addresses, ","), v.Router.Bridge.MAC)))
		fmt.Fprintf(w, "    %s [label=%s];\n", q("wan0"), q(fmt.Sprintf("%s\n%s", v.Transit.RouterLink, v.Transit.WANAddress)))
		for _, p := range v.Router.Bridge.Ports {
			fmt.Fprintf(w, "    %s [label=%s, shape=cds];\n", q("port:"+p.Name), q(p.Name))
		}
		fmt.Fprintln(w, "  }")
		fmt.Fprintf(w, "  %s -> %s [label=%s, dir=both];\n", q("wan0"), q(internet), q("transit"))
		for _, p := range v.Router.Bridge.Ports {
			fmt.Fprintf(w, "  %s -> %s [dir=none];\n", q("br0"), q("port:"+p.Name))
			if p.Pod != "" {
				fmt.Fprintf(w, "  %s -> %s [dir=none, label=%s];\n", q("port:"+p.Name), q("pod:"+p.Pod), q("veth"))
			}
		}
	}
	for _, n := range v.Nodes {
		// A node: the account's bridge with its pods' ports, joined to the router's br0 over VXLAN.
		id := "node:" + n.Name
		fmt.Fprintf(w, "  subgraph %s {\n", q("cluster_"+id))
		fmt.Fprintf(w, "    label=%s;\n", q(fmt.Sprintf("node %s netns %s\nul0 %s", n.Name, n.Netns, n.Underlay)))
		fmt.Fprintf(w, "    %s [label=%s];\n", q(id+":"+n.Bridge.Name), q(n.Bridge.Name))
		for _, p := range n.Bridge.Ports {
			fmt.Fprintf(w, "    %s [label=%s, shape=cds];\n", q(id+":port:"+p.Name), q(p.Name))
		}
		fmt.Fprintln(w, "  }")
		if n.VXLAN != nil && v.Router.Netns != "" {
			fmt.Fprintf(w, "  %s -> %s [dir=both, style=bold, label=%s];\n", q("br0"), q(id+":"+n.Bridge.Name), q(fmt.Sprintf("VXLAN VNI %d", n.VXLAN.VNI)))
		}
		for _, p := range n.Bridge.Ports {
			fmt.Fprintf(w, "  %s -> %s [dir=none];\n", q(id+":"+n.Bridge.Name), q(id+":port:"+p.Name))
			if p.Pod != "" {
				fmt.Fprintf(w, "  %s -> %s [dir=none, label=%s];\n", q(id+":port:"+p.Name), q("pod:"+p.Pod), q("veth"))
			}
		}
	}
	for _, p := range v.Pods {
		fmt.Fprintf(w, "  %s [label=%s, shape=component];\n", q("pod:"+p.Name), q(fmt.Sprintf("pod %s\n%s\n%s", p.Name, p.IP, p.MAC)))
	}
	for _, s := range v.Services {
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%d/%s", p.Port, strings.ToLower(p.Protocol)))
		}
		fmt.Fprintf(w, "  %s [label=%s, shape=hexagon];\n", q("svc:"+s.Name), q(fmt.Sprintf("service %s\n%s %s", s.Name, s.ClusterIP, strings.Join(ports, ","))))
		if v.Router.Netns != "" {
			fmt.Fprintf(w, "  %s -> %s [style=dotted, label=%s];\n", q("br0"), q("svc:"+s.Name), q("dnat"))
		}
		for _, p := range s.Ports {
			for _, e := range p.Endpoints {
				style := ""
				if !e.Ready {
					style = ", style=dashed"
				}
				to := "pod:" + e.Pod
				if e.Pod == "" {
					to = "ip:" + e.IP
				}
				fmt.Fprintf(w, "  %s -> %s [label=%s%s];\n", q("svc:"+s.Name), q(to), q(fmt.Sprintf("%d→%s:%d", p.Port, e.IP, e.Port)), style)
			}
		}
	}
	for _, f := range v.FIPs {
		fmt.Fprintf(w, "  %s [label=%s, shape=octagon];\n", q("fip:"+f.IP), q("floating IP\n"+f.IP))
		fmt.Fprintf(w, "  %s -> %s [style=dotted];\n", q(internet), q("fip:"+f.IP))
		for _, s := range f.Services {
			fmt.Fprintf(w, "  %s -> %s;\n", q("fip:"+f.IP), q("svc:"+s))
		}
	}
	fmt.Fprintln(w, "}")
}

// internetAddrs are the addresses of the Internet side's namespace that a pod's traffic may reach: global
// unicast, not loopback, not in the transit range (the router rejects pods' traffic to any transit link,
// its own account's included) and not in the pod network (a pod would look for it on its own bridge), in
// the kernel's order.
func internetAddrs(addrs []netlink.Addr) []string {
	var out []string
	for _, a := range addrs {
		ip := a.IP.To4()
		if ip == nil || !ip.IsGlobalUnicast() || ip.IsLoopback() || network.TransitRange.Contains(ip) || network.PodCIDR.Contains(ip) {
			continue
		}
		out = append(out, ip.String())
	}
	return out
}
