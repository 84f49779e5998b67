package overlay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/nlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Node is a node as programmed.
type Node struct {
	Index      int
	Netns      string // path of the node's netns
	UnderlayIP net.IP // on ul0, 169.254.1.<Index>/16
	Up         bool   // ul0 administratively up (false after StopNode)
}

// fabric is an open view of the lab's fabric netns.
type fabric struct {
	path string
	f    *os.File // peer namespace for underlay veths
	h    *netlink.Handle
	br   netlink.Link
}

func (fb *fabric) close() {
	fb.h.Close()
	fb.f.Close()
}

// ensureFabric creates or repairs the fabric netns and its bridge.
func (m *Manager) ensureFabric() (*fabric, error) {
	path, err := netns.EnsureNamed(m.FabricNetnsName())
	if err != nil {
		return nil, err
	}
	if err := nlink.SetSysctls(path, l2Sysctls); err != nil {
		return nil, err
	}
	f, h, err := netns.OpenWithHandle(path)
	if err != nil {
		return nil, err
	}
	fb := &fabric{path: path, f: f, h: h}
	if fb.br, err = ensureBridge(h, path, FabricBridge, UnderlayMTU); err != nil {
		fb.close()
		return nil, err
	}
	return fb, nil
}

// openFabric opens the fabric if it exists (nil, nil if not).
func (m *Manager) openFabric() (*fabric, error) {
	path := netns.Path(m.FabricNetnsName())
	if !exists(path) {
		return nil, nil
	}
	f, h, err := netns.OpenWithHandle(path)
	if err != nil {
		return nil, err
	}
	return &fabric{path: path, f: f, h: h}, nil
}

// ensureBridge makes a bridge name with that MTU exist and be up in the netns
// at path; a link of that name of another type is not ours: an error.
func ensureBridge(h *netlink.Handle, path, name string, mtu int) (netlink.Link, error) {
	br, err := nlink.LinkByName(h, name)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	if br != nil && br.Type() != "bridge" {
		return nil, fmt.Errorf("netns %s already has a link %s of type %s, not a bridge: not ours, refusing to adopt or delete it; remove it by hand", path, name, br.Type())
	}
	if br == nil {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = name, mtu
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s in %s: %w", name, path, err)
		}
		if br, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("bridge %s in %s after creation: %w", name, path, err)
		}
	}
	if err := ensureMTU(h, br, mtu); err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	if err := nlink.SetUp(h, br); err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	return br, nil
}

// ensureMTU sets l's MTU. On a bridge an MTU set this way sticks (the kernel
// marks it set by the user) instead of following its smallest port: the
// 1450-byte VXLAN port must not raise an account bridge above 1400.
func ensureMTU(h *netlink.Handle, l netlink.Link, mtu int) error {
	if l.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set MTU %d on %s: %w", mtu, l.Attrs().Name, err)
	}
	return nil
}

// ensureUnderlay makes ul0 in the netns at path (handle h) one end of a veth
// whose other end, port, is a port of the fabric bridge, with address ip/16.
// A ul0 or a fabric port of that name that is not part of this pair is not
// ours: an error. alias labels the fabric port (who it belongs to). up says
// whether a ul0 that already exists is brought up (a stopped node stays
// down until StartNode); a new one always comes up.
func ensureUnderlay(fb *fabric, h *netlink.Handle, path, port, alias string, ip net.IP, up bool) (netlink.Link, error) {
	ul, err := nlink.LinkByName(h, UnderlayLink)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	fp, err := nlink.LinkByName(fb.h, port)
	if err != nil {
		return nil, fmt.Errorf("fabric: %w", err)
	}
	if !nlink.VethPair(ul, fp) {
		if ul != nil {
			return nil, fmt.Errorf("netns %s already has a link %s (type %s) that is not the peer of fabric port %s: not ours, refusing to adopt or delete it; remove it by hand", path, UnderlayLink, ul.Type(), port)
		}
		if fp != nil {
			return nil, fmt.Errorf("fabric netns %s already has a port %s (type %s, alias %q) that is not peered with %s in %s: another netns holds this place on the underlay; delete that one first", fb.path, port, fp.Type(), fp.Attrs().Alias, UnderlayLink, path)
		}
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = UnderlayLink, UnderlayMTU
		v := &netlink.Veth{LinkAttrs: la, PeerName: port, PeerNamespace: netlink.NsFd(fb.f.Fd())}
		if err := h.LinkAdd(v); err != nil {
			return nil, fmt.Errorf("create underlay veth %s in %s <-> fabric %s: %w", UnderlayLink, path, port, err)
		}
		if ul, err = h.LinkByName(UnderlayLink); err != nil {
			return nil, fmt.Errorf("underlay %s in %s after creation: %w", UnderlayLink, path, err)
		}
		if fp, err = fb.h.LinkByName(port); err != nil {
			return nil, fmt.Errorf("fabric port %s after creation: %w", port, err)
		}
		if !nlink.VethPair(ul, fp) {
			return nil, fmt.Errorf("fabric port %s after creation is not the peer of %s in %s", port, UnderlayLink, path)
		}
		up = true
	}
	if fp.Attrs().Alias != alias {
		if err := fb.h.LinkSetAlias(fp, alias); err != nil {
			return nil, fmt.Errorf("fabric: label port %s: %w", port, err)
		}
	}
	if fp.Attrs().MasterIndex != fb.br.Attrs().Index {
		if err := fb.h.LinkSetMaster(fp, fb.br); err != nil {
			return nil, fmt.Errorf("fabric: attach %s to %s: %w", port, FabricBridge, err)
		}
	}
	for _, x := range []struct {
		h *netlink.Handle
		l netlink.Link
	}{{fb.h, fp}, {h, ul}} {
		if err := ensureMTU(x.h, x.l, UnderlayMTU); err != nil {
			return nil, err
		}
	}
	if err := nlink.SetUp(fb.h, fp); err != nil {
		return nil, fmt.Errorf("fabric: %w", err)
	}
	if err := nlink.EnsureAddrs(h, ul, []*net.IPNet{{IP: ip, Mask: UnderlayCIDR.Mask}}); err != nil {
		return nil, fmt.Errorf("netns %s: %w", path, err)
	}
	if up {
		if err := nlink.SetUp(h, ul); err != nil {
			return nil, fmt.Errorf("netns %s: %w", path, err)
		}
	}
	return h.LinkByName(UnderlayLink)
}

// EnsureNode creates or repairs node index: its netns <lab>-n<index> and its
// underlay link ul0 (169.254.1.<index>/16) into the fabric, which it creates
// on first use. A node stopped by StopNode stays stopped.
func (m *Manager) EnsureNode(index int) (*Node, error) {
	ip, err := NodeUnderlayIP(index)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.ensureNode(index, ip)
	if err != nil {
		return nil, fmt.Errorf("overlay: ensure node %d (lab %s): %w", index, m.lab, err)
	}
	return n, nil
}

func (m *Manager) ensureNode(index int, ip net.IP) (*Node, error) {
	fb, err := m.ensureFabric()
	if err != nil {
		return nil, err
	}
	defer fb.close()
	path, err := netns.EnsureNamed(m.NodeNetnsName(index))
	if err != nil {
		return nil, err
	}
	if err := nlink.SetSysctls(path, nodeSysctls); err != nil {
		return nil, err
	}
	h, err := netns.NewHandle(path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	ul, err := ensureUnderlay(fb, h, path, nodePort(index), m.NodeNetnsName(index), ip, false)
	if err != nil {
		return nil, err
	}
	return &Node{Index: index, Netns: path, UnderlayIP: ip, Up: ul.Attrs().Flags&net.FlagUp != 0}, nil
}

// Nodes lists the lab's nodes as they are in the kernel.
func (m *Manager) Nodes() ([]Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	idx, err := m.nodeIndexes()
	if err != nil {
		return nil, err
	}
	var out []Node
	for _, i := range idx {
		n := Node{Index: i, Netns: netns.Path(m.NodeNetnsName(i))}
		n.UnderlayIP, _ = NodeUnderlayIP(i)
		h, err := netns.NewHandle(n.Netns)
		if err != nil {
			return nil, err
		}
		ul, err := nlink.LinkByName(h, UnderlayLink)
		h.Close()
		if err != nil {
			return nil, fmt.Errorf("overlay: node %d: %w", i, err)
		}
		n.Up = ul != nil && ul.Attrs().Flags&net.FlagUp != 0
		out = append(out, n)
	}
	return out, nil
}

// StopNode takes node index's underlay link down: the node is a dead host,
// nothing reaches its pods across the overlay and its pods reach nothing
// beyond it. Its bridges, pods and FDB entries stay as they were.
func (m *Manager) StopNode(index int) error { return m.setNodeUp(index, false) }

// StartNode brings node index's underlay link back up.
func (m *Manager) StartNode(index int) error { return m.setNodeUp(index, true) }

func (m *Manager) setNodeUp(index int, up bool) error {
	verb := map[bool]string{true: "start", false: "stop"}[up]
	if err := checkNode(index); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	path := netns.Path(m.NodeNetnsName(index))
	if !exists(path) {
		return fmt.Errorf("overlay: %s node %d: netns %s does not exist: EnsureNode(%d) first", verb, index, path, index)
	}
	h, err := netns.NewHandle(path)
	if err != nil {
		return fmt.Errorf("overlay: %s node %d: %w", verb, index, err)
	}
	defer h.Close()
	ul, err := nlink.LinkByName(h, UnderlayLink)
	if err != nil || ul == nil {
		return fmt.Errorf("overlay: %s node %d: no underlay link %s in %s (%v): EnsureNode(%d) repairs it", verb, index, UnderlayLink, path, err, index)
	}
	if up {
		err = h.LinkSetUp(ul)
	} else {
		err = h.LinkSetDown(ul)
	}
	if err != nil {
		return fmt.Errorf("overlay: %s node %d: set %s in %s %s: %w", verb, index, UnderlayLink, path, map[bool]string{true: "up", false: "down"}[up], err)
	}
	return nil
}

// DeleteNode removes node index: the FDB entries toward it (flood and
// learned) on every other member of every segment, then its netns (with its bridges, VXLAN devices,
// the node side of its pods' veths and its underlay veth). It returns only
// after checking that neither the netns, nor its fabric port, nor an FDB
// entry toward its address is left. Deleting a node that does not exist is
// not an error.
func (m *Manager) DeleteNode(index int) error {
	ip, err := NodeUnderlayIP(index)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.deleteNode(index, ip); err != nil {
		return fmt.Errorf("overlay: delete node %d (lab %s): %w", index, m.lab, err)
	}
	return nil
}

func (m *Manager) deleteNode(index int, ip net.IP) error {
	// The node's own devices go with its netns; the others must forget it, after it is gone: while it is on
	// the underlay a frame of it (an ARP, a neighbour probe) teaches the learning VTEPs its address again.
	if err := deleteNetns(m.NodeNetnsName(index)); err != nil {
		return err
	}
	err := m.eachVTEP(0, func(v *vtep) error {
		if v.local.Equal(ip) {
			return nil
		}
		return v.forget(ip)
	})
	if err != nil {
		return err
	}
	return m.checkNodeGone(index, ip)
}

// checkNodeGone proves that nothing of node index is left.
func (m *Manager) checkNodeGone(index int, ip net.IP) error {
	var left []string
	if exists(netns.Path(m.NodeNetnsName(index))) {
		left = append(left, "netns "+m.NodeNetnsName(index))
	}
	fb, err := m.openFabric()
	if err != nil {
		return err
	}
	if fb != nil {
		defer fb.close()
		if l, err := nlink.LinkByName(fb.h, nodePort(index)); err != nil {
			return fmt.Errorf("fabric: %w", err)
		} else if l != nil {
			left = append(left, "fabric port "+nodePort(index))
		}
	}
	refs, err := m.fdbRefs(ip)
	if err != nil {
		return err
	}
	left = append(left, refs...)
	if len(left) > 0 {
		return fmt.Errorf("still present after deletion: %v", left)
	}
	return nil
}

// Reset removes the lab's whole overlay: every segment's devices in the
// routers, every node, the fabric. The routers' own netns and br0 stay (they
// are net/network's). It checks that nothing is left.
func (m *Manager) Reset() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.reset(); err != nil {
		return fmt.Errorf("overlay: reset lab %s: %w", m.lab, err)
	}
	return nil
}

func (m *Manager) reset() error {
	routers, err := m.routers()
	if err != nil {
		return err
	}
	for a, path := range routers {
		if err := m.deleteRouterSide(a, path); err != nil {
			return err
		}
	}
	idx, err := m.nodeIndexes()
	if err != nil {
		return err
	}
	for _, i := range idx {
		if err := deleteNetns(m.NodeNetnsName(i)); err != nil {
			return err
		}
	}
	if err := deleteNetns(m.FabricNetnsName()); err != nil {
		return err
	}
	var left []string
	if idx, err := m.nodeIndexes(); err != nil {
		return err
	} else if len(idx) > 0 {
		left = append(left, fmt.Sprintf("nodes %v", idx))
	}
	if exists(netns.Path(m.FabricNetnsName())) {
		left = append(left, "netns "+m.FabricNetnsName())
	}
	for a, path := range routers {
		if l, err := m.routerLeftovers(a, path); err != nil {
			return err
		} else {
			left = append(left, l...)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("still present after reset: %v", left)
	}
	return nil
}

// deleteNetns deletes every link of the named netns, then the netns. The
// kernel tears a namespace down asynchronously once its mount and last
// reference are gone, and its veths (with their peers in the fabric, pods or
// routers) only then: deleting the links first makes the deletion complete
// when this returns. A netns that does not exist is not an error.
func deleteNetns(name string) error {
	path := netns.Path(name)
	if !exists(path) {
		return nil
	}
	h, err := netns.NewHandle(path)
	if err != nil {
		return err
	}
	links, err := h.LinkList()
	if err != nil {
		h.Close()
		return fmt.Errorf("netns %s: list links: %w", name, err)
	}
	// VXLAN devices first (they hang on ul0), then the rest; lo stays.
	sort.SliceStable(links, func(i, j int) bool { return links[i].Type() == "vxlan" && links[j].Type() != "vxlan" })
	for _, l := range links {
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		if err := nlink.DelLink(h, l); err != nil {
			h.Close()
			return fmt.Errorf("netns %s: %w", name, err)
		}
	}
	h.Close()
	return netns.DeleteNamed(name)
}
