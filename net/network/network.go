// Package network programs the per-account private networks of a lab: one
// "virtual router" network namespace per account holding the account's L2
// bridge (10.244.0.0/16, router 10.244.0.1, DNS 10.244.0.2), a transit veth to
// the host side ("the Internet") with a /30 from 100.64.0.0/10, egress NAT, and
// the pods' veths plugged into that bridge.
//
//	host netns ("Internet")      <lab>w<index> 100.64.x.1/30   table ip <lab>-edge
//	   | transit veth
//	router netns <lab>-r<index>  wan0 100.64.x.2/30, br0 10.244.0.1+.2/16   table ip <lab>-router
//	   | br0 ports p<hash(podID)>, hairpin on
//	pod netns (caller's)         eth0 10.244.x.y/16, MTU 1400, default via 10.244.0.1
//
// Accounts share no link, so identical pod IPs in two accounts never meet.
// Every call converges the kernel to the declared state and can be repeated;
// a pod's MAC is derived from its IP, so a pod rebuilt with the same IP looks
// the same to its neighbours. net/lb adds its own table to the router netns;
// Floating IPs enter through the edge set "fips" (SetFloatingIPs) and the
// router chain "fip-forward".
package network

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/nlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Fixed addressing and names of every account network.
var (
	PodCIDR      = mustCIDR("10.244.0.0/16")
	ReservedCIDR = mustCIDR("10.244.0.0/24") // the platform's block: router, DNS, room for more
	RouterIP     = net.IPv4(10, 244, 0, 1).To4()
	DNSIP        = net.IPv4(10, 244, 0, 2).To4()
	TransitRange = mustCIDR("100.64.0.0/10") // carrier-grade NAT space, never on a real LAN here
)

const (
	MTU        = 1400
	BridgeName = "br0"
	WANName    = "wan0" // router side of the transit link
	PodLink    = "eth0"

	// MaxBridgePorts is the kernel's limit of ports per bridge (BR_MAX_PORTS
	// 1024, port 0 unused): the hard ceiling of pods per account. Broadcasts
	// (ARP) start to get lost earlier, at about net.core.netdev_max_backlog
	// ports (default 1000): a bridge flood queues one copy per port at once.
	MaxBridgePorts = 1023
)

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// Options configure a Manager.
type Options struct {
	// Lab prefixes every netns, link and nft table created: 1-6 lowercase
	// letters/digits starting with a letter (link names are at most 15 bytes).
	Lab string
	// HostNetns is the "Internet" side the routers hang below: "" is the
	// process's own network namespace (the machine); otherwise the name of an
	// existing named netns (or a path to a netns file), leaving the machine's
	// own namespace exactly as it was.
	HostNetns string
	// GuardHost closes the host side itself to the lab's pods: no new
	// connection from a router reaches a service of the host (its API listener,
	// its sshd, anything), only what the host forwards (the Internet). A
	// workshop server sets it: the machine hosting the class is not the
	// learners' to reach.
	GuardHost bool
}

// Manager programs the account networks of one lab. Its methods are safe for
// concurrent use.
type Manager struct {
	lab      string
	hostName string   // named host netns ("" for the process's own)
	host     *os.File // kept open: peer namespace for transit veths, nft conn
	hostPath string   // path for netns.Do / handles (/proc/self/fd/N)
	// guardHost: Options.GuardHost, in the edge table's input chain.
	guardHost bool

	// mu: account-level changes (and Reset) exclude each other and pod
	// changes; pod changes of different pods run in parallel.
	mu sync.RWMutex
}

// Account describes an account's network as programmed.
type Account struct {
	Name        string
	Index       int
	RouterNetns string // path of the router netns
	RouterIP    net.IP // 10.244.0.1, the pods' gateway
	DNSIP       net.IP // 10.244.0.2, on the router's bridge
	WANIP       net.IP // router's Internet-side address (100.64.x.2)
	HostIP      net.IP // host side of the transit link (100.64.x.1): route Floating IPs via WANIP dev WANLink
	WANLink     string // host-side transit link name (<lab>w<index>)
}

var labRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,5}$`)

// New checks the options and opens the host namespace.
func New(o Options) (*Manager, error) {
	if !labRE.MatchString(o.Lab) {
		return nil, fmt.Errorf("network: lab prefix %q invalid: want 1-6 lowercase letters/digits starting with a letter", o.Lab)
	}
	m := &Manager{lab: o.Lab, guardHost: o.GuardHost}
	var err error
	if o.HostNetns == "" {
		m.host, err = openOwnNetns()
	} else {
		p := o.HostNetns
		if !strings.Contains(p, "/") {
			m.hostName = p
			p = netns.Path(p)
		}
		m.host, err = netns.Open(p)
		if err != nil {
			err = fmt.Errorf("%w (create the host netns first, e.g. netns.EnsureNamed)", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("network: host netns: %w", err)
	}
	m.hostPath = fmt.Sprintf("/proc/self/fd/%d", m.host.Fd())
	return m, nil
}

// openOwnNetns opens the process's network namespace from a thread that is
// certainly in it: a locked thread nobody else is switching.
func openOwnNetns() (*os.File, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return os.Open("/proc/thread-self/ns/net")
}

// Close releases the host namespace handle. The kernel state stays.
func (m *Manager) Close() error { return m.host.Close() }

// Lab returns the lab prefix.
func (m *Manager) Lab() string { return m.lab }

// RouterNetnsName is the named netns of the account with that index.
// Pod netns are named by the controller <lab>-p-<pod UID>, which never
// matches <lab>-r<digits>.
func (m *Manager) RouterNetnsName(index int) string { return m.lab + "-r" + strconv.Itoa(index) }

func (m *Manager) hostLinkName(index int) string { return m.lab + "w" + strconv.Itoa(index) }
func (m *Manager) routerTableName() string       { return m.lab + "-router" }
func (m *Manager) edgeTableName() string         { return m.lab + "-edge" }

func (m *Manager) checkAccount(name string, index int) error {
	if name == "" || len(name) > 253 || strings.ContainsAny(name, "\x00\n") {
		return fmt.Errorf("network: invalid account name %q", name)
	}
	if index < 0 || len(m.hostLinkName(index)) > 15 {
		return fmt.Errorf("network: account %s: index %d out of range for lab %q (link name %q must fit 15 bytes)", name, index, m.lab, m.hostLinkName(index))
	}
	return nil
}

// podPortName is the router-side name of a pod's veth: stable per pod, unique
// in the router, short enough for a link name. Its alias holds the pod ID.
func podPortName(podID string) string {
	sum := sha256.Sum256([]byte(podID))
	return "p" + hex.EncodeToString(sum[:])[:13]
}

// macFor derives a stable MAC from an IPv4 address (0a:58 + address, the
// scheme of CNI's hwaddr package): a pod rebuilt with the same IP keeps its
// MAC, so neighbours' ARP caches stay right; the bridge's fixed MAC keeps the
// gateway's entry right while ports come and go.
func macFor(ip net.IP) net.HardwareAddr {
	ip4 := ip.To4()
	return net.HardwareAddr{0x0a, 0x58, ip4[0], ip4[1], ip4[2], ip4[3]}
}

// ensureDefaultRoute makes "default via gw dev l" the only default route.
func ensureDefaultRoute(h *netlink.Handle, l netlink.Link, gw net.IP) error {
	routes, err := h.RouteList(nil, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	ok := false
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.LinkIndex == l.Attrs().Index && r.Gw.Equal(gw) && !ok {
			ok = true
			continue
		}
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove stray default route %s: %w", r, err)
		}
	}
	if ok {
		return nil
	}
	if err := h.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw, Scope: netlink.SCOPE_UNIVERSE}); err != nil {
		return fmt.Errorf("add default route via %s dev %s: %w", gw, l.Attrs().Name, err)
	}
	return nil
}

// EnsureAccount creates or repairs the account's router netns, bridge,
// transit link, NAT and filter tables, and the lab's host-side edge table.
// index must be unique per account in the lab and stable (it names the router
// netns and the host link, and seeds the transit /30).
func (m *Manager) EnsureAccount(name string, index int) (*Account, error) {
	if err := m.checkAccount(name, index); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a, err := m.ensureAccount(name, index)
	if err != nil {
		return nil, fmt.Errorf("network: ensure account %s (index %d, lab %s): %w", name, index, m.lab, err)
	}
	return a, nil
}

func (m *Manager) ensureAccount(name string, index int) (*Account, error) {
	hostLink := m.hostLinkName(index)
	if err := m.ensureEdge(hostLink); err != nil {
		return nil, err
	}
	rpath, err := netns.EnsureNamed(m.RouterNetnsName(index))
	if err != nil {
		return nil, err
	}
	if err := routerSysctls(rpath); err != nil {
		return nil, err
	}
	rf, err := netns.Open(rpath)
	if err != nil {
		return nil, err
	}
	defer rf.Close()
	rh, err := netns.NewHandle(rpath)
	if err != nil {
		return nil, err
	}
	defer rh.Close()
	if err := ensureBridge(rh, name, rpath); err != nil {
		return nil, err
	}
	hh, err := netns.NewHandle(m.hostPath)
	if err != nil {
		return nil, fmt.Errorf("host netns: %w", err)
	}
	defer hh.Close()
	subnet, err := m.ensureTransit(hh, rh, name, hostLink, index)
	if err != nil {
		return nil, err
	}
	nc, err := nftConn(rf.Fd())
	if err != nil {
		return nil, err
	}
	if _, err := ensureTable(nc, routerTable(m.routerTableName())); err != nil {
		return nil, fmt.Errorf("router %s: %w", rpath, err)
	}
	return &Account{
		Name: name, Index: index, RouterNetns: rpath,
		RouterIP: RouterIP, DNSIP: DNSIP,
		WANIP: addIP(subnet.IP, 2), HostIP: addIP(subnet.IP, 1), WANLink: hostLink,
	}, nil
}

// routerSysctls: the router forwards, filters spoofed sources, sends no ICMP
// redirects (Service DNAT sends traffic back out br0, a redirect would only
// confuse pods), does no IPv6 on its own links, and keeps bridged frames out
// of its IP hooks (br_netfilter may be built in: then bridged pod-to-pod
// frames would cross the NAT and filter chains).
func routerSysctls(path string) error {
	return nlink.SetSysctls(path, []nlink.Sysctl{
		{Key: "net/ipv6/conf/default/disable_ipv6", Value: "1", Optional: true},
		{Key: "net/ipv6/conf/all/disable_ipv6", Value: "1", Optional: true},
		{Key: "net/ipv4/ip_forward", Value: "1"},
		{Key: "net/ipv4/conf/all/rp_filter", Value: "1"},
		{Key: "net/ipv4/conf/default/rp_filter", Value: "1"},
		{Key: "net/ipv4/conf/all/send_redirects", Value: "0"},
		{Key: "net/ipv4/conf/default/send_redirects", Value: "0"},
		{Key: "net/bridge/bridge-nf-call-iptables", Value: "0", Optional: true},
		{Key: "net/bridge/bridge-nf-call-ip6tables", Value: "0", Optional: true},
		{Key: "net/bridge/bridge-nf-call-arptables", Value: "0", Optional: true},
	})
}

func ensureBridge(rh *netlink.Handle, account, rpath string) error {
	br, err := nlink.LinkByName(rh, BridgeName)
	if err != nil {
		return err
	}
	if br != nil && br.Type() != "bridge" {
		if err := nlink.DelLink(rh, br); err != nil {
			return err
		}
		br = nil
	}
	if br != nil && br.Attrs().Alias != "" && br.Attrs().Alias != account {
		return fmt.Errorf("router netns %s belongs to account %q (alias of %s), not %q: two accounts were given the same index", rpath, br.Attrs().Alias, BridgeName, account)
	}
	if br == nil {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU, la.HardwareAddr = BridgeName, MTU, macFor(RouterIP)
		if err := rh.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s in %s: %w", BridgeName, rpath, err)
		}
		if br, err = rh.LinkByName(BridgeName); err != nil {
			return fmt.Errorf("bridge %s in %s: %w", BridgeName, rpath, err)
		}
	}
	if br.Attrs().Alias != account {
		if err := rh.LinkSetAlias(br, account); err != nil {
			return fmt.Errorf("label %s with account: %w", BridgeName, err)
		}
	}
	if br.Attrs().MTU != MTU {
		if err := rh.LinkSetMTU(br, MTU); err != nil {
			return fmt.Errorf("set %s MTU: %w", BridgeName, err)
		}
	}
	// A fixed MAC: otherwise the bridge takes the lowest port MAC and the
	// pods' gateway entry goes stale whenever ports come and go.
	if br.Attrs().HardwareAddr.String() != macFor(RouterIP).String() {
		if err := rh.LinkSetHardwareAddr(br, macFor(RouterIP)); err != nil {
			return fmt.Errorf("set %s MAC: %w", BridgeName, err)
		}
	}
	if err := nlink.EnsureAddrs(rh, br, []*net.IPNet{
		{IP: RouterIP, Mask: PodCIDR.Mask}, {IP: DNSIP, Mask: PodCIDR.Mask},
	}); err != nil {
		return err
	}
	return nlink.SetUp(rh, br)
}

// transitCandidate derives the attempt-th candidate /30 for (lab, index):
// each lab starts at a hash-chosen /30 and numbers its accounts from there, so
// two labs in one host netns land far apart (and the host-route check below
// moves on if they do not).
func transitCandidate(lab string, index, attempt int) *net.IPNet {
	h := fnv.New32a()
	h.Write([]byte(lab))
	const slots = 1 << 20 // /30s in a /10
	slot := (uint64(h.Sum32()) + uint64(index) + uint64(attempt)*104729) % slots
	base := binary.BigEndian.Uint32(TransitRange.IP.To4()) + uint32(slot)*4
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, base)
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(30, 32)}
}

func addIP(ip net.IP, n uint32) net.IP {
	out := make(net.IP, 4)
	binary.BigEndian.PutUint32(out, binary.BigEndian.Uint32(ip.To4())+n)
	return out
}

func overlaps(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// transitConflict returns a description of a host route or address (not on
// the link own) that overlaps cand, or "".
func transitConflict(hh *netlink.Handle, cand *net.IPNet, own int) (string, error) {
	routes, err := hh.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex == own {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			continue // a default route overlaps everything and says nothing
		}
		if overlaps(r.Dst, cand) {
			return fmt.Sprintf("route %s (table %d)", r.Dst, r.Table), nil
		}
	}
	addrs, err := hh.AddrList(nil, unix.AF_INET)
	if err != nil {
		return "", fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range addrs {
		if a.LinkIndex != own && overlaps(a.IPNet, cand) {
			return fmt.Sprintf("address %s", a.IPNet), nil
		}
	}
	return "", nil
}

// ensureTransit makes the veth pair (router wan0 <-> host <lab>w<index>),
// created from the router netns with the peer placed straight into the host
// netns, addressed with a /30 from TransitRange, and the router's default
// route through it. The host link's alias names the account: a host link
// that is not peered with this router's wan0 is rebuilt only if it is an
// unlabelled leftover or this account's, never another account's. It
// returns the /30.
func (m *Manager) ensureTransit(hh, rh *netlink.Handle, account, hostLink string, index int) (*net.IPNet, error) {
	hl, err := nlink.LinkByName(hh, hostLink)
	if err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	wl, err := nlink.LinkByName(rh, WANName)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	if !nlink.VethPair(hl, wl) && hl != nil {
		// The router netns is this account's (ensureBridge checked its label), so its wan0 may go; the
		// host link lives in the shared host netns and must be checked first.
		if hl.Type() != "veth" {
			return nil, fmt.Errorf("host netns already has a link %s of type %s, not a transit veth: refusing to delete it; remove or rename it", hostLink, hl.Type())
		}
		if a := hl.Attrs().Alias; a != "" && a != account {
			return nil, fmt.Errorf("host link %s belongs to account %q (its alias), not %q: two accounts were given the same index", hostLink, a, account)
		}
	}
	if !nlink.VethPair(hl, wl) {
		for _, x := range []struct {
			h *netlink.Handle
			l netlink.Link
		}{{hh, hl}, {rh, wl}} {
			if x.l != nil {
				if err := nlink.DelLink(x.h, x.l); err != nil {
					return nil, err
				}
			}
		}
		la := netlink.NewLinkAttrs()
		la.Name = WANName
		v := &netlink.Veth{LinkAttrs: la, PeerName: hostLink, PeerNamespace: netlink.NsFd(m.host.Fd())}
		if err := rh.LinkAdd(v); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return nil, fmt.Errorf("create transit veth %s <-> host %s: %w: another account's link appeared under this name meanwhile; not adopting it", WANName, hostLink, err)
			}
			return nil, fmt.Errorf("create transit veth %s <-> host %s: %w", WANName, hostLink, err)
		}
		if hl, err = hh.LinkByName(hostLink); err != nil {
			return nil, fmt.Errorf("host side %s after creation: %w", hostLink, err)
		}
		if wl, err = rh.LinkByName(WANName); err != nil {
			return nil, fmt.Errorf("router side %s after creation: %w", WANName, err)
		}
		if !nlink.VethPair(hl, wl) {
			return nil, fmt.Errorf("host link %s after creation is not the peer of the router's %s", hostLink, WANName)
		}
	}
	// Transit links made before they carried the account's name get it now.
	if hl.Attrs().Alias != account {
		if err := hh.LinkSetAlias(hl, account); err != nil {
			return nil, fmt.Errorf("host: label %s with account: %w", hostLink, err)
		}
	}

	subnet, err := currentTransit(hh, rh, hl, wl)
	if err != nil {
		return nil, err
	}
	if subnet == nil {
		var last string
		for attempt := 0; attempt < 64 && subnet == nil; attempt++ {
			cand := transitCandidate(m.lab, index, attempt)
			why, err := transitConflict(hh, cand, hl.Attrs().Index)
			if err != nil {
				return nil, err
			}
			if why == "" {
				subnet = cand
			} else {
				last = fmt.Sprintf("%s overlaps %s", cand, why)
			}
		}
		if subnet == nil {
			return nil, fmt.Errorf("no free /30 in %s for the transit link: host routes overlap every candidate (last: %s); remove the overlapping routes", TransitRange, last)
		}
		if err := nlink.EnsureAddrs(hh, hl, []*net.IPNet{{IP: addIP(subnet.IP, 1), Mask: subnet.Mask}}); err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
		if err := nlink.EnsureAddrs(rh, wl, []*net.IPNet{{IP: addIP(subnet.IP, 2), Mask: subnet.Mask}}); err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
	}
	// The Internet side's connections to Floating IPs cross the router's IP stack too.
	ensureBigTCP(hh, hl)
	ensureBigTCP(rh, wl)
	if err := nlink.SetUp(hh, hl); err != nil {
		return nil, err
	}
	if err := nlink.SetUp(rh, wl); err != nil {
		return nil, err
	}
	if err := ensureDefaultRoute(rh, wl, addIP(subnet.IP, 1)); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	return subnet, nil
}

// currentTransit returns the /30 already configured consistently on both ends
// (host .1, router .2, nothing else), or nil.
func currentTransit(hh, rh *netlink.Handle, hl, wl netlink.Link) (*net.IPNet, error) {
	ha, err := hh.AddrList(hl, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", hl.Attrs().Name, err)
	}
	wa, err := rh.AddrList(wl, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", wl.Attrs().Name, err)
	}
	if len(ha) != 1 || len(wa) != 1 {
		return nil, nil
	}
	ones, bits := wa[0].Mask.Size()
	if ones != 30 || bits != 32 || !TransitRange.Contains(wa[0].IP) {
		return nil, nil
	}
	subnet := &net.IPNet{IP: wa[0].IP.Mask(wa[0].Mask), Mask: wa[0].Mask}
	if !wa[0].IP.Equal(addIP(subnet.IP, 2)) || ha[0].IPNet.String() != (&net.IPNet{IP: addIP(subnet.IP, 1), Mask: subnet.Mask}).String() {
		return nil, nil
	}
	return subnet, nil
}
