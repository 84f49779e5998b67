// Package overlay builds the kernel side of a multi-node lab: the lab's
// underlay (one fabric bridge every node and every account router is plugged
// into) and, per account, a VXLAN segment that stretches the account's
// layer-2 network (the router's br0, 10.244.0.0/16) over the nodes that carry
// the account's pods.
//
//	fabric netns <lab>-fabric      bridge fabric0 (MTU 1500), ports n<N> (nodes), r<A> (routers)
//	   | veth                            | veth
//	node netns <lab>-n<N>             router netns (net/network's <lab>-r<A>)
//	   ul0 169.254.1.<N>/16              ul0 169.254.16.0+<A>/16
//	   b<A> bridge (MTU 1400)            br0 (the account's bridge)
//	     └ vx<A> VNI <A>, 4789             └ vx<A> VNI <A>, 4789
//	   pod veths (plugged by the caller into b<A>, hairpin on)
//
// Every member of account A's segment (its router and each node carrying A)
// has, on its vx<A>, one all-zero-MAC FDB entry per other member, as `bridge
// fdb append 00:00:00:00:00:00 dev vx<A> dst <peer>` makes: broadcasts and
// unknown unicast are replicated to every peer, as flannel's and Docker's
// overlays do without multicast. Two accounts never share a bridge or a VNI,
// so their identical addresses never meet.
//
// The router terminates VXLAN itself, so the datagrams cross its input hook:
// net/network's router table accepts `iifname "ul0" udp dport 4789`.
//
// Use (the daemon's order):
//
//	m, _ := overlay.New(overlay.Options{Lab: "pi"})
//	m.EnsureNode(1); m.EnsureNode(2)                      // netns pi-n1, pi-n2 on the fabric
//	acct, _ := network.EnsureAccount("alice", 7)          // router netns with br0
//	seg, _ := m.EnsureSegment(7, acct.RouterNetns, []int{1, 2}) // VNI 7, b7/vx7 on both nodes
//	nsPath, br := m.NodeBridge(2, 7)                      // plug alice's pod on node 2 here
//	m.StopNode(2); m.StartNode(2)                         // a dead host, and back
//	m.EnsureSegment(7, acct.RouterNetns, []int{1})        // node 2 left the segment (no pods there)
//	m.DeleteNode(2); m.DeleteSegment(7, acct.RouterNetns); m.Reset()
//
// Every call converges the kernel to the declared state and can be repeated.
// Kernel names come from indexes, never from user-chosen names. A link found
// under one of our names that is not what we would have made (wrong type,
// peer, VNI, address) is an error naming it: it is never adopted or deleted.
package overlay

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/net/nlink"
)

const (
	FabricBridge = "fabric0"
	UnderlayLink = network.UnderlayLink // a node's or a router's link into the fabric
	UnderlayMTU  = 1500
	VXLANPort    = network.VXLANPort // IANA's VXLAN port
	// VXLANOverhead is what encapsulation adds to an inner Ethernet frame's
	// payload: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
	VXLANOverhead = 50
	// VXLANMTU is the largest inner packet the underlay carries unfragmented;
	// the account bridges stay at network.MTU (1400) below it.
	VXLANMTU = UnderlayMTU - VXLANOverhead

	// MaxNodes: node N's pods take 10.244.N.0/24 (NodeBlock), so a lab has at
	// most 255 nodes in the account's /16 (10.244.0.0/24 is the platform's).
	MaxNodes = 255
	// MaxAccount is the largest account index (the registry hands out
	// 1..4095); it bounds the router underlay addresses and the VNIs.
	MaxAccount = 4095
)

// UnderlayCIDR is the address space of every lab's underlay. It is IPv4
// link-local space (RFC 3927) and exists only inside the lab's fabric, node
// and router namespaces, never in the host's. Link-local was chosen because
// routers never forward it: the routers hold an underlay address next to their
// Internet-side default route, and a connected route for, say, a 192.168/16
// underlay would shadow real destinations a pod might want on the Internet
// side; nothing legitimate beyond a router is link-local. It cannot clash with
// the pod network 10.244.0.0/16, Services 10.96.0.0/12, the transit space
// 100.64.0.0/10 or the FIP pool 198.18.0.0/15. Nodes take 169.254.1.0/24,
// routers 169.254.16.0/20; 169.254.0.0/24 and 169.254.255.0/24 stay unused
// as RFC 3927 reserves them.
var UnderlayCIDR = mustCIDR("169.254.0.0/16")

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// NodeBlock is the /24 of the account network that pods on node index take
// addresses from: 10.244.<index>.0/24, the layout of the Kubernetes lesson.
// Index 0 would be the platform's reserved block; indexes past 255 would
// leave the /16.
func NodeBlock(index int) (*net.IPNet, error) {
	if index < 1 || index > MaxNodes {
		return nil, fmt.Errorf("overlay: node index %d out of range 1..%d: node N's pods use 10.244.N.0/24 (0 is the platform's block, past %d leaves 10.244.0.0/16)", index, MaxNodes, MaxNodes)
	}
	base := network.PodCIDR.IP.To4()
	return &net.IPNet{IP: net.IPv4(base[0], base[1], byte(index), 0).To4(), Mask: net.CIDRMask(24, 32)}, nil
}

// VNI is the VXLAN network identifier of account index a: a itself. The
// underlay is per lab, so VNIs only need to be unique within the lab, as
// account indexes are; using the index keeps `bridge -d link`/tcpdump output
// readable (VNI 7 is account 7).
func VNI(account int) (int, error) {
	if err := checkAccount(account); err != nil {
		return 0, err
	}
	return account, nil
}

func checkAccount(a int) error {
	if a < 1 || a > MaxAccount {
		return fmt.Errorf("overlay: account index %d out of range 1..%d", a, MaxAccount)
	}
	return nil
}

func checkNode(n int) error {
	if n < 1 || n > MaxNodes {
		return fmt.Errorf("overlay: node index %d out of range 1..%d", n, MaxNodes)
	}
	return nil
}

// NodeUnderlayIP is node index's address on the underlay: 169.254.1.<index>.
func NodeUnderlayIP(index int) (net.IP, error) {
	if err := checkNode(index); err != nil {
		return nil, err
	}
	return net.IPv4(169, 254, 1, byte(index)).To4(), nil
}

// RouterUnderlayIP is account index a's router address on the underlay:
// 169.254.16.0 + a, inside 169.254.16.0/20.
func RouterUnderlayIP(account int) (net.IP, error) {
	if err := checkAccount(account); err != nil {
		return nil, err
	}
	return net.IPv4(169, 254, byte(16+account>>8), byte(account&0xff)).To4(), nil
}

// BridgeName is account a's bridge on a node.
func BridgeName(account int) string { return "b" + strconv.Itoa(account) }

// VXLANName is account a's VXLAN device, on nodes and in its router.
func VXLANName(account int) string { return "vx" + strconv.Itoa(account) }

// NodeBridge says where the pods of account a on node n plug in: the node's
// netns (path) and the account's bridge in it. Create a pod's veth from the
// pod netns with its peer placed straight into that netns, attach the peer to
// the bridge with hairpin on (as net/network does with the router's br0).
func (m *Manager) NodeBridge(node, account int) (netnsPath, bridge string) {
	return netns.Path(m.NodeNetnsName(node)), BridgeName(account)
}

func nodePort(index int) string     { return "n" + strconv.Itoa(index) }
func routerPort(account int) string { return "r" + strconv.Itoa(account) }

var labRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,5}$`)

// Options configure a Manager.
type Options struct {
	// Lab prefixes the fabric and node namespaces: the same 1-6 lowercase
	// letters/digits as net/network's, so the two never clash.
	Lab string
}

// Manager builds one lab's underlay and segments. Its methods are safe for
// concurrent use (they run one at a time).
type Manager struct {
	lab string
	mu  sync.Mutex
}

// New checks the options. Nothing is created until the first Ensure call.
func New(o Options) (*Manager, error) {
	if !labRE.MatchString(o.Lab) {
		return nil, fmt.Errorf("overlay: lab prefix %q invalid: want 1-6 lowercase letters/digits starting with a letter", o.Lab)
	}
	return &Manager{lab: o.Lab}, nil
}

// Lab returns the lab prefix.
func (m *Manager) Lab() string { return m.lab }

// FabricNetnsName is the named netns holding the lab's fabric bridge.
func (m *Manager) FabricNetnsName() string { return m.lab + "-fabric" }

// NodeNetnsName is the named netns of node index. net/network's names are
// <lab>-r<digits> (routers) and the controller's <lab>-p-<uid> (pods): never
// <lab>-n<digits>.
func (m *Manager) NodeNetnsName(index int) string { return m.lab + "-n" + strconv.Itoa(index) }

// nodeIndexes lists the nodes whose netns exists, sorted.
func (m *Manager) nodeIndexes() ([]int, error) {
	names, err := netns.ListNamed(m.lab + "-n")
	if err != nil {
		return nil, fmt.Errorf("list node namespaces of lab %s: %w", m.lab, err)
	}
	var out []int
	for _, n := range names {
		s := strings.TrimPrefix(n, m.lab+"-n")
		i, err := strconv.Atoi(s)
		if err != nil || strconv.Itoa(i) != s || checkNode(i) != nil {
			continue
		}
		out = append(out, i)
	}
	sort.Ints(out)
	return out, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// l2Sysctls: the fabric only switches frames. No IPv6 on its links (router
// solicitations and DAD would be flooded to every VTEP), and bridged frames
// stay out of the IP hooks if br_netfilter is loaded.
var l2Sysctls = []nlink.Sysctl{
	{Key: "net/ipv6/conf/default/disable_ipv6", Value: "1", Optional: true},
	{Key: "net/ipv6/conf/all/disable_ipv6", Value: "1", Optional: true},
	{Key: "net/bridge/bridge-nf-call-iptables", Value: "0", Optional: true},
	{Key: "net/bridge/bridge-nf-call-ip6tables", Value: "0", Optional: true},
	{Key: "net/bridge/bridge-nf-call-arptables", Value: "0", Optional: true},
}

// nodeSysctls: a node switches its accounts' frames too, but hands bridged
// IPv4 to the IP hooks (br_netfilter), where each account's Service rules DNAT
// its pods' connections on their own node (net/lb WithNodeBridge), as
// kube-proxy does. Without br_netfilter the router does it, one hop further.
var nodeSysctls = []nlink.Sysctl{
	{Key: "net/ipv6/conf/default/disable_ipv6", Value: "1", Optional: true},
	{Key: "net/ipv6/conf/all/disable_ipv6", Value: "1", Optional: true},
	{Key: "net/bridge/bridge-nf-call-iptables", Value: "1", Optional: true},
	{Key: "net/bridge/bridge-nf-call-ip6tables", Value: "0", Optional: true},
	{Key: "net/bridge/bridge-nf-call-arptables", Value: "0", Optional: true},
}

// ServiceRouteTable is account a's routing table in a node. br_netfilter
// routes a bridged packet that DNAT readdressed; the table sends the pod
// network back out of the account's bridge (its own, among the node's
// identical ones: the rule picks the table by input bridge) and nothing else
// anywhere (unreachable), so a pod never reaches the node's underlay.
func ServiceRouteTable(account int) int { return 0x10000 + account }

// serviceRulePref is the preference of the per-bridge rules: after the local
// table, before main.
const serviceRulePref = 100
