package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/net/nlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Segment is an account's layer-2 segment as programmed.
type Segment struct {
	Account  int
	VNI      int
	Bridge   string // the account's bridge on each node: plug its pods' veths here (hairpin on)
	RouterIP net.IP // the router's underlay address
	Nodes    []int  // the nodes that carry the segment, sorted
}

// zeroMAC is the FDB key of a VXLAN device's default destinations: frames to
// any MAC without an entry of its own (broadcast, unknown unicast) go to
// every all-zero entry's dst, as `bridge fdb append 00:00:00:00:00:00 dst X`.
var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// EnsureSegment creates or repairs account a's segment: the bridge b<a> and
// VXLAN device vx<a> (VNI a) on each node in nodes, a VXLAN device vx<a> in
// the account's router (the netns at routerNetns, whose bridge br0 net/network
// made) with its own underlay link, and the flood entries so that each member
// reaches every other. The member set is nodes plus the router: a node no
// longer listed loses the segment (refused while pods are still plugged into
// its b<a>), and every remaining member loses its entry toward it. Each node
// must exist (EnsureNode).
//
// The VXLAN devices learn: a frame received from a peer teaches the device
// which VTEP the source MAC sits behind, so after the first exchange unicast
// goes to one peer instead of being replicated to all (flannel programs
// per-MAC entries from its control plane instead; pilab's pods keep their MAC
// with their IP, and this package does not know the pods). Learned entries age
// out after the kernel's default 300 s; a pod recreated on another node with
// the same IP (so the same MAC) corrects them with its first frame.
func (m *Manager) EnsureSegment(account int, routerNetns string, nodes []int) (*Segment, error) {
	rip, err := RouterUnderlayIP(account)
	if err != nil {
		return nil, err
	}
	set := map[int]bool{}
	for _, n := range nodes {
		if err := checkNode(n); err != nil {
			return nil, err
		}
		set[n] = true
	}
	if routerNetns == "" {
		return nil, fmt.Errorf("overlay: segment of account %d: no router netns given", account)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seg, err := m.ensureSegment(account, rip, routerNetns, set)
	if err != nil {
		return nil, fmt.Errorf("overlay: ensure segment of account %d (router %s, nodes %v, lab %s): %w", account, routerNetns, nodes, m.lab, err)
	}
	return seg, nil
}

func (m *Manager) ensureSegment(a int, rip net.IP, routerNetns string, set map[int]bool) (*Segment, error) {
	if !exists(routerNetns) {
		return nil, fmt.Errorf("router netns %s does not exist: make the account's network first (network.EnsureAccount)", routerNetns)
	}
	existing, err := m.nodeIndexes()
	if err != nil {
		return nil, err
	}
	have := map[int]bool{}
	for _, i := range existing {
		have[i] = true
	}
	var list []int
	for n := range set {
		if !have[n] {
			return nil, fmt.Errorf("node %d does not exist (no netns %s): EnsureNode(%d) first", n, m.NodeNetnsName(n), n)
		}
		list = append(list, n)
	}
	sort.Ints(list)

	fb, err := m.ensureFabric()
	if err != nil {
		return nil, err
	}
	defer fb.close()

	// Nodes dropped from the segment first: their entries must not survive
	// into the new member set.
	for _, n := range existing {
		if set[n] {
			continue
		}
		if err := m.withNode(n, func(h *netlink.Handle, path string) error {
			return removeNodeSegment(h, path, a, false)
		}); err != nil {
			return nil, err
		}
	}

	// The router side.
	rh, err := netns.NewHandle(routerNetns)
	if err != nil {
		return nil, err
	}
	defer rh.Close()
	br, err := nlink.LinkByName(rh, network.BridgeName)
	if err != nil {
		return nil, fmt.Errorf("router netns %s: %w", routerNetns, err)
	}
	if br == nil || br.Type() != "bridge" {
		return nil, fmt.Errorf("router netns %s has no bridge %s: make the account's network first (network.EnsureAccount)", routerNetns, network.BridgeName)
	}
	ul, err := ensureUnderlay(fb, rh, routerNetns, routerPort(a), routerNetns, rip, true)
	if err != nil {
		return nil, err
	}
	if _, err := ensureVXLAN(rh, routerNetns, a, rip, ul, br); err != nil {
		return nil, err
	}

	// The node side.
	members := []net.IP{rip}
	for _, n := range list {
		nip, _ := NodeUnderlayIP(n)
		members = append(members, nip)
		if err := m.withNode(n, func(h *netlink.Handle, path string) error {
			ul, err := nlink.LinkByName(h, UnderlayLink)
			if err != nil {
				return fmt.Errorf("node %d: %w", n, err)
			}
			if ul == nil {
				return fmt.Errorf("node %d has no underlay link %s: EnsureNode(%d) repairs it", n, UnderlayLink, n)
			}
			b, err := ensureBridge(h, path, BridgeName(a), network.MTU)
			if err != nil {
				return err
			}
			if b.Attrs().Alias != "account "+strconv.Itoa(a) {
				if err := h.LinkSetAlias(b, "account "+strconv.Itoa(a)); err != nil {
					return fmt.Errorf("netns %s: label %s: %w", path, b.Attrs().Name, err)
				}
			}
			if _, err = ensureVXLAN(h, path, a, nip, ul, b); err != nil {
				return err
			}
			return ensureServiceRouting(h, path, a, b)
		}); err != nil {
			return nil, err
		}
	}

	// Flood entries: each member toward every other member, nothing else.
	err = m.eachVTEP(a, func(v *vtep) error {
		var want []net.IP
		for _, ip := range members {
			if !ip.Equal(v.local) {
				want = append(want, ip)
			}
		}
		return v.syncFlood(func(dst net.IP) bool { return containsIP(want, dst) }, want)
	})
	if err != nil {
		return nil, err
	}
	return &Segment{Account: a, VNI: a, Bridge: BridgeName(a), RouterIP: rip, Nodes: list}, nil
}

func containsIP(list []net.IP, ip net.IP) bool {
	for _, x := range list {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

// withNode runs fn with a handle in node n's netns.
func (m *Manager) withNode(n int, fn func(h *netlink.Handle, path string) error) error {
	path := netns.Path(m.NodeNetnsName(n))
	h, err := netns.NewHandle(path)
	if err != nil {
		return fmt.Errorf("node %d: %w", n, err)
	}
	defer h.Close()
	return fn(h, path)
}

// notOurVXLAN says why l cannot be account a's VXLAN device with that local
// address, or "".
func notOurVXLAN(l netlink.Link, a int, local net.IP) string {
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return "type " + l.Type()
	}
	var why []string
	if vx.VxlanId != a {
		why = append(why, fmt.Sprintf("VNI %d, want %d", vx.VxlanId, a))
	}
	if local != nil && !vx.SrcAddr.Equal(local) {
		why = append(why, fmt.Sprintf("local %v, want %v", vx.SrcAddr, local))
	}
	if vx.Port != VXLANPort {
		why = append(why, fmt.Sprintf("dstport %d, want %d", vx.Port, VXLANPort))
	}
	if !vx.Learning {
		why = append(why, "learning off")
	}
	return strings.Join(why, ", ")
}

// ensureVXLAN makes vx<a> (VNI a, local, dstport 4789, learning, bound to ul,
// MTU 1450) a port of master, up, and pins master's MTU to network.MTU.
func ensureVXLAN(h *netlink.Handle, path string, a int, local net.IP, ul, master netlink.Link) (netlink.Link, error) {
	name := VXLANName(a)
	l, err := nlink.LinkByName(h, name)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	if l != nil {
		if why := notOurVXLAN(l, a, local); why != "" {
			return nil, fmt.Errorf("netns %s already has a link %s that is not account %d's VXLAN device (%s): not ours, refusing to adopt or delete it; remove it by hand", path, name, a, why)
		}
	} else {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = name, VXLANMTU
		vx := &netlink.Vxlan{LinkAttrs: la, VxlanId: a, VtepDevIndex: ul.Attrs().Index, SrcAddr: local, Port: VXLANPort, Learning: true}
		if err := h.LinkAdd(vx); err != nil {
			return nil, fmt.Errorf("create VXLAN device %s (VNI %d, local %v) in %s: %w", name, a, local, path, err)
		}
		if l, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("VXLAN device %s in %s after creation: %w", name, path, err)
		}
	}
	if err := ensureMTU(h, l, VXLANMTU); err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	if l.Attrs().MasterIndex != master.Attrs().Index {
		if err := h.LinkSetMaster(l, master); err != nil {
			return nil, fmt.Errorf("netns %s: attach %s to %s: %w", path, name, master.Attrs().Name, err)
		}
	}
	if err := nlink.SetUp(h, l); err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	// Joining the bridge may have raised the bridge's MTU to its smallest
	// port's, 1450, while it had no other port: pin it back (see ensureMTU).
	br, err := h.LinkByIndex(master.Attrs().Index)
	if err != nil {
		return nil, fmt.Errorf("netns %s: bridge %s: %w", path, master.Attrs().Name, err)
	}
	if err := ensureMTU(h, br, network.MTU); err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	return l, nil
}

// ensureServiceRouting lets br_netfilter send a DNAT'd packet of account a's
// bridge b back out of b: forwarding on b (the bridge has no address; its
// neighbour entries come from ARP it sends itself), and the rule and table of
// ServiceRouteTable.
func ensureServiceRouting(h *netlink.Handle, path string, a int, b netlink.Link) error {
	name := b.Attrs().Name
	if err := nlink.SetSysctls(path, []nlink.Sysctl{{Key: "net/ipv4/conf/" + name + "/forwarding", Value: "1"}}); err != nil {
		return err
	}
	table := ServiceRouteTable(a)
	routes := []*netlink.Route{
		{LinkIndex: b.Attrs().Index, Dst: network.PodCIDR, Scope: netlink.SCOPE_LINK, Table: table},
		unreachableDefault(table),
	}
	for _, r := range routes {
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("netns %s: route %s in table %d for %s: %w", path, r.Dst, table, name, err)
		}
	}
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("netns %s: list rules: %w", path, err)
	}
	for _, r := range rules {
		if r.IifName == name && r.Table == table {
			return nil
		}
	}
	r := netlink.NewRule()
	r.IifName, r.Table, r.Priority, r.Family = name, table, serviceRulePref, netlink.FAMILY_V4
	if err := h.RuleAdd(r); err != nil {
		return fmt.Errorf("netns %s: rule iif %s lookup %d: %w", path, name, table, err)
	}
	return nil
}

// unreachableDefault is a table's last word: nothing else is reachable through it.
func unreachableDefault(table int) *netlink.Route {
	return &netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Type: unix.RTN_UNREACHABLE, Table: table}
}

// removeServiceRouting deletes account a's rule in a node (its table's routes go with the bridge, and the
// unreachable default with the table's last user: it is deleted here too).
func removeServiceRouting(h *netlink.Handle, path string, a int) error {
	table := ServiceRouteTable(a)
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("netns %s: list rules: %w", path, err)
	}
	for _, r := range rules {
		if r.Table == table && r.IifName == BridgeName(a) {
			r := r
			if err := h.RuleDel(&r); err != nil {
				return fmt.Errorf("netns %s: delete rule iif %s lookup %d: %w", path, r.IifName, table, err)
			}
		}
	}
	if err := h.RouteDel(unreachableDefault(table)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("netns %s: delete the unreachable default of table %d: %w", path, table, err)
	}
	return nil
}

// removeNodeSegment deletes vx<a> and b<a> from a node. Unless force, a b<a>
// with ports besides vx<a> (pods still plugged in) is refused.
func removeNodeSegment(h *netlink.Handle, path string, a int, force bool) error {
	vx, err := nlink.LinkByName(h, VXLANName(a))
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	if vx != nil {
		if why := notOurVXLAN(vx, a, nil); why != "" {
			return fmt.Errorf("netns %s has a link %s that is not account %d's VXLAN device (%s): not ours, refusing to delete it", path, vx.Attrs().Name, a, why)
		}
	}
	b, err := nlink.LinkByName(h, BridgeName(a))
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	if b != nil && b.Type() != "bridge" {
		return fmt.Errorf("netns %s has a link %s of type %s, not account %d's bridge: not ours, refusing to delete it", path, b.Attrs().Name, b.Type(), a)
	}
	if b != nil && !force {
		links, err := h.LinkList()
		if err != nil {
			return fmt.Errorf("netns %s: list links: %w", path, err)
		}
		var ports []string
		for _, l := range links {
			if l.Attrs().MasterIndex == b.Attrs().Index && l.Attrs().Name != VXLANName(a) {
				ports = append(ports, l.Attrs().Name)
			}
		}
		if len(ports) > 0 {
			return fmt.Errorf("netns %s: account %d's bridge %s still has ports %v (pods of the account on this node): delete those pods first, or keep the node in the segment", path, a, b.Attrs().Name, ports)
		}
	}
	for _, l := range []netlink.Link{vx, b} {
		if l != nil {
			if err := nlink.DelLink(h, l); err != nil {
				return fmt.Errorf("netns %s: %w", path, err)
			}
		}
	}
	return removeServiceRouting(h, path, a)
}

// vtep is one VXLAN device of the lab, in a node or a router.
type vtep struct {
	where   string // for messages
	account int
	local   net.IP
	h       *netlink.Handle
	vx      netlink.Link
}

// eachVTEP calls fn for every vx<A> device of the lab (only account A's if
// only > 0): on every node and in every router attached to the fabric.
func (m *Manager) eachVTEP(only int, fn func(v *vtep) error) error {
	idx, err := m.nodeIndexes()
	if err != nil {
		return err
	}
	for _, n := range idx {
		nip, _ := NodeUnderlayIP(n)
		if err := m.withNode(n, func(h *netlink.Handle, path string) error {
			links, err := h.LinkList()
			if err != nil {
				return fmt.Errorf("netns %s: list links: %w", path, err)
			}
			for _, l := range links {
				a, ok := vxlanAccount(l)
				if !ok || (only > 0 && a != only) {
					continue
				}
				if err := fn(&vtep{where: fmt.Sprintf("node %d (%s)", n, path), account: a, local: nip, h: h, vx: l}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	routers, err := m.routers()
	if err != nil {
		return err
	}
	for a, path := range routers {
		if !exists(path) || (only > 0 && a != only) {
			continue
		}
		h, err := netns.NewHandle(path)
		if err != nil {
			return err
		}
		l, err := nlink.LinkByName(h, VXLANName(a))
		if err == nil && l != nil {
			if _, ok := vxlanAccount(l); ok {
				rip, _ := RouterUnderlayIP(a)
				err = fn(&vtep{where: fmt.Sprintf("router of account %d (%s)", a, path), account: a, local: rip, h: h, vx: l})
			}
		}
		h.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// vxlanAccount returns A for a VXLAN device vx<A> with VNI A.
func vxlanAccount(l netlink.Link) (int, bool) {
	vx, ok := l.(*netlink.Vxlan)
	if !ok || !strings.HasPrefix(vx.Name, "vx") {
		return 0, false
	}
	a, err := strconv.Atoi(strings.TrimPrefix(vx.Name, "vx"))
	if err != nil || a != vx.VxlanId || checkAccount(a) != nil {
		return 0, false
	}
	return a, true
}

// routers maps account index to router netns path for every router port
// r<A> of the fabric (its alias holds the path).
func (m *Manager) routers() (map[int]string, error) {
	out := map[int]string{}
	fb, err := m.openFabric()
	if err != nil || fb == nil {
		return out, err
	}
	defer fb.close()
	links, err := fb.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("fabric: list links: %w", err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() != "veth" || !strings.HasPrefix(name, "r") {
			continue
		}
		a, err := strconv.Atoi(name[1:])
		if err != nil || checkAccount(a) != nil || l.Attrs().Alias == "" {
			continue
		}
		out[a] = l.Attrs().Alias
	}
	return out, nil
}

// remotes lists v's FDB entries that point at a remote VTEP: the all-zero
// flood entries and the learned ones.
func (v *vtep) remotes() ([]netlink.Neigh, error) {
	neighs, err := v.h.NeighList(v.vx.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("%s: list fdb of %s: %w", v.where, v.vx.Attrs().Name, err)
	}
	var out []netlink.Neigh
	for _, n := range neighs {
		if n.LinkIndex == v.vx.Attrs().Index && n.IP != nil && len(n.HardwareAddr) == 6 {
			out = append(out, n)
		}
	}
	return out, nil
}

// floodDsts lists the destinations of v's all-zero FDB entries.
func (v *vtep) floodDsts() ([]net.IP, error) {
	all, err := v.remotes()
	if err != nil {
		return nil, err
	}
	var out []net.IP
	for _, n := range all {
		if bytes.Equal(n.HardwareAddr, zeroMAC) {
			out = append(out, n.IP)
		}
	}
	return out, nil
}

// forget deletes every FDB entry of v toward dst, flood and learned: a
// learned entry would keep sending a MAC's frames to a VTEP that is gone
// until it ages out (300 s).
func (v *vtep) forget(dst net.IP) error {
	all, err := v.remotes()
	if err != nil {
		return err
	}
	for _, n := range all {
		if !n.IP.Equal(dst) {
			continue
		}
		err := v.h.NeighDel(&netlink.Neigh{LinkIndex: v.vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, IP: dst, HardwareAddr: n.HardwareAddr})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: delete fdb %s dst %v on %s: %w", v.where, n.HardwareAddr, dst, v.vx.Attrs().Name, err)
		}
	}
	return nil
}

// syncFlood deletes v's flood entries whose dst keep rejects and appends one
// toward each of add that is missing.
func (v *vtep) syncFlood(keep func(net.IP) bool, add []net.IP) error {
	have, err := v.floodDsts()
	if err != nil {
		return err
	}
	for _, dst := range have {
		if keep(dst) {
			continue
		}
		err := v.h.NeighDel(&netlink.Neigh{LinkIndex: v.vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, IP: dst, HardwareAddr: zeroMAC})
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: delete fdb 00:00:00:00:00:00 dst %v on %s: %w", v.where, dst, v.vx.Attrs().Name, err)
		}
	}
	for _, dst := range add {
		if containsIP(have, dst) {
			continue
		}
		// Append, not set: all-zero entries toward several dsts coexist, one per peer.
		err := v.h.NeighAppend(&netlink.Neigh{LinkIndex: v.vx.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			State: netlink.NUD_PERMANENT | netlink.NUD_NOARP, IP: dst, HardwareAddr: zeroMAC})
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s: append fdb 00:00:00:00:00:00 dst %v on %s: %w", v.where, dst, v.vx.Attrs().Name, err)
		}
	}
	return nil
}

// fdbRefs describes every FDB entry of the lab toward ip.
func (m *Manager) fdbRefs(ip net.IP) ([]string, error) {
	var out []string
	err := m.eachVTEP(0, func(v *vtep) error {
		all, err := v.remotes()
		if err != nil {
			return err
		}
		for _, n := range all {
			if n.IP.Equal(ip) {
				out = append(out, fmt.Sprintf("fdb %s dst %v on %s in %s", n.HardwareAddr, ip, v.vx.Attrs().Name, v.where))
			}
		}
		return nil
	})
	return out, err
}

// DeleteSegment removes account a's segment: b<a> and vx<a> from every node
// (pods still plugged in lose their link), vx<a> and the underlay link from
// the router (routerNetns; "" means the one the fabric knows for a). The
// router's netns and br0 stay. It returns only after checking that no device
// of the segment, no fabric port and no flood entry toward the router is left.
func (m *Manager) DeleteSegment(account int, routerNetns string) error {
	rip, err := RouterUnderlayIP(account)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.deleteSegment(account, rip, routerNetns); err != nil {
		return fmt.Errorf("overlay: delete segment of account %d (lab %s): %w", account, m.lab, err)
	}
	return nil
}

func (m *Manager) deleteSegment(a int, rip net.IP, routerNetns string) error {
	if routerNetns == "" {
		routers, err := m.routers()
		if err != nil {
			return err
		}
		routerNetns = routers[a]
	}
	idx, err := m.nodeIndexes()
	if err != nil {
		return err
	}
	for _, n := range idx {
		if err := m.withNode(n, func(h *netlink.Handle, path string) error {
			return removeNodeSegment(h, path, a, true)
		}); err != nil {
			return err
		}
	}
	if err := m.deleteRouterSide(a, routerNetns); err != nil {
		return err
	}
	// Proof.
	var left []string
	for _, n := range idx {
		if err := m.withNode(n, func(h *netlink.Handle, path string) error {
			for _, name := range []string{VXLANName(a), BridgeName(a)} {
				l, err := nlink.LinkByName(h, name)
				if err != nil {
					return fmt.Errorf("netns %s: %w", path, err)
				}
				if l != nil {
					left = append(left, fmt.Sprintf("%s on node %d", name, n))
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	l, err := m.routerLeftovers(a, routerNetns)
	if err != nil {
		return err
	}
	left = append(left, l...)
	refs, err := m.fdbRefs(rip)
	if err != nil {
		return err
	}
	left = append(left, refs...)
	if len(left) > 0 {
		return fmt.Errorf("still present after deletion: %v", left)
	}
	return nil
}

// deleteRouterSide removes vx<a> and ul0 from the router netns at path (if
// any) and the fabric port r<a>.
func (m *Manager) deleteRouterSide(a int, path string) error {
	fb, err := m.openFabric()
	if err != nil {
		return err
	}
	var fp netlink.Link
	if fb != nil {
		defer fb.close()
		if fp, err = nlink.LinkByName(fb.h, routerPort(a)); err != nil {
			return fmt.Errorf("fabric: %w", err)
		}
	}
	if path != "" && exists(path) {
		h, err := netns.NewHandle(path)
		if err != nil {
			return err
		}
		defer h.Close()
		vx, err := nlink.LinkByName(h, VXLANName(a))
		if err != nil {
			return fmt.Errorf("router netns %s: %w", path, err)
		}
		if vx != nil {
			if why := notOurVXLAN(vx, a, nil); why != "" {
				return fmt.Errorf("router netns %s has a link %s that is not account %d's VXLAN device (%s): not ours, refusing to delete it", path, vx.Attrs().Name, a, why)
			}
			if err := nlink.DelLink(h, vx); err != nil {
				return fmt.Errorf("router netns %s: %w", path, err)
			}
		}
		ul, err := nlink.LinkByName(h, UnderlayLink)
		if err != nil {
			return fmt.Errorf("router netns %s: %w", path, err)
		}
		if ul != nil {
			if !nlink.VethPair(ul, fp) {
				return fmt.Errorf("router netns %s has a link %s (type %s) that is not peered with the fabric's %s: not ours, refusing to delete it", path, UnderlayLink, ul.Type(), routerPort(a))
			}
			if err := nlink.DelLink(h, ul); err != nil {
				return fmt.Errorf("router netns %s: %w", path, err)
			}
			fp = nil // gone with its peer
		}
	}
	if fp != nil {
		// The fabric is wholly ours: a router port whose router is gone or unknown goes.
		if err := nlink.DelLink(fb.h, fp); err != nil {
			return fmt.Errorf("fabric: %w", err)
		}
	}
	return nil
}

// routerLeftovers lists what of account a's segment is left in its router
// netns (path) and the fabric.
func (m *Manager) routerLeftovers(a int, path string) ([]string, error) {
	var left []string
	if path != "" && exists(path) {
		h, err := netns.NewHandle(path)
		if err != nil {
			return nil, err
		}
		defer h.Close()
		for _, name := range []string{VXLANName(a), UnderlayLink} {
			l, err := nlink.LinkByName(h, name)
			if err != nil {
				return nil, fmt.Errorf("router netns %s: %w", path, err)
			}
			if l != nil {
				left = append(left, fmt.Sprintf("%s in router netns %s", name, path))
			}
		}
	}
	fb, err := m.openFabric()
	if err != nil {
		return nil, err
	}
	if fb != nil {
		defer fb.close()
		l, err := nlink.LinkByName(fb.h, routerPort(a))
		if err != nil {
			return nil, fmt.Errorf("fabric: %w", err)
		}
		if l != nil {
			left = append(left, "fabric port "+routerPort(a))
		}
	}
	return left, nil
}
