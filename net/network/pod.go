package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/nlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// router is an open account router namespace.
type router struct {
	path string
	f    *os.File
	h    *netlink.Handle
	br   netlink.Link
}

func (r *router) close() {
	r.h.Close()
	r.f.Close()
}

// openRouter opens the account's router netns and checks it belongs to the
// account. It returns nil, nil when the router netns does not exist.
func (m *Manager) openRouter(account string, index int) (*router, error) {
	r, err := openNetns(netns.Path(m.RouterNetnsName(index)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	br, err := nlink.LinkByName(r.h, BridgeName)
	if err == nil && br != nil && br.Attrs().Alias != "" && br.Attrs().Alias != account {
		err = fmt.Errorf("router netns %s belongs to account %q, not %q", r.path, br.Attrs().Alias, account)
	}
	if err != nil {
		r.close()
		return nil, err
	}
	r.br = br
	return r, nil
}

func checkPodIP(ip net.IP) (net.IP, error) {
	ip4 := ip.To4()
	switch {
	case ip4 == nil || !PodCIDR.Contains(ip4):
		return nil, fmt.Errorf("pod IP %s is not in %s", ip, PodCIDR)
	case ReservedCIDR.Contains(ip4):
		return nil, fmt.Errorf("pod IP %s is in the platform's reserved block %s", ip, ReservedCIDR)
	case ip4.Equal(net.IPv4(10, 244, 255, 255)):
		return nil, fmt.Errorf("pod IP %s is the broadcast address of %s", ip, PodCIDR)
	}
	return ip4, nil
}

// Bridge says where a pod's port is plugged: a bridge in a network namespace
// other than the account's router, such as the account's bridge on a node of
// a multi-node lab (net/overlay's NodeBridge). The zero Bridge is the router's
// own br0, the single-node layout.
type Bridge struct {
	Netns string // path of the namespace holding the bridge
	Name  string // the bridge's name in it
}

func (b Bridge) onRouter() bool { return b.Netns == "" }

// openBridge opens where the pod's port goes: the router (checked to be the
// account's, as openRouter does) or another namespace's bridge, which must
// exist already (the overlay builds it).
func (m *Manager) openBridge(account string, index int, b Bridge) (*router, error) {
	if b.onRouter() {
		r, err := m.openRouter(account, index)
		if err != nil {
			return nil, err
		}
		if r == nil || r.br == nil {
			if r != nil {
				r.close()
			}
			return nil, fmt.Errorf("router netns %s of the account is missing or has no %s: EnsureAccount first", m.RouterNetnsName(index), BridgeName)
		}
		return r, nil
	}
	r, err := openNetns(b.Netns)
	if err != nil {
		return nil, err
	}
	br, err := nlink.LinkByName(r.h, b.Name)
	if err == nil && (br == nil || br.Type() != "bridge") {
		err = fmt.Errorf("netns %s has no bridge %s for the account's pods: the node's segment of the account is not built (overlay EnsureSegment first)", b.Netns, b.Name)
	}
	if err != nil {
		r.close()
		return nil, err
	}
	r.br = br
	return r, nil
}

// openNetns opens a namespace that holds pod ports (a router's or a node's).
func openNetns(path string) (*router, error) {
	f, h, err := netns.OpenWithHandle(path)
	if err != nil {
		return nil, err
	}
	return &router{path: path, f: f, h: h}, nil
}

// EnsurePod plugs the pod's network namespace into the account's bridge:
// eth0 (MTU 1400, ip/16, MAC derived from ip, default via 10.244.0.1) is
// created from inside the pod netns with its peer placed straight into the
// router netns, where it is looked up by name, attached to br0 with hairpin
// on. A pod netns that was recreated (reboot, sandbox rebuilt) gets its link
// rebuilt with the same IP; the stale router port is removed. Repeating the
// call changes nothing.
func (m *Manager) EnsurePod(account string, index int, podNetnsPath string, ip net.IP, podID string) error {
	return m.EnsurePodOn(account, index, podNetnsPath, ip, podID, Bridge{})
}

// EnsurePodOn is EnsurePod with the pod's port on bridge b instead of the
// router's br0: the pod still lives in the account's one layer-2 network
// (10.244.0.0/16, gateway 10.244.0.1), which the overlay stretches to b.
func (m *Manager) EnsurePodOn(account string, index int, podNetnsPath string, ip net.IP, podID string, b Bridge) error {
	if err := m.ensurePod(account, index, podNetnsPath, ip, podID, b); err != nil {
		return fmt.Errorf("network: ensure pod %s (%s, account %s, netns %s): %w", podID, ip, account, podNetnsPath, err)
	}
	return nil
}

func (m *Manager) ensurePod(account string, index int, podNetnsPath string, ip net.IP, podID string, b Bridge) (err error) {
	if err := m.checkAccount(account, index); err != nil {
		return err
	}
	if podID == "" {
		return errors.New("empty pod ID")
	}
	ip4, err := checkPodIP(ip)
	if err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()

	r, err := m.openBridge(account, index, b)
	if err != nil {
		return err
	}
	defer r.close()
	ph, err := netns.NewHandle(podNetnsPath)
	if err != nil {
		return err
	}
	defer ph.Close()

	portName := podPortName(podID)
	mac := macFor(ip4)
	eth0, err := nlink.LinkByName(ph, PodLink)
	if err != nil {
		return fmt.Errorf("pod: %w", err)
	}
	port, err := nlink.LinkByName(r.h, portName)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if !nlink.VethPair(eth0, port) {
		// Whatever exists under our names must be ours before it is rebuilt: a netns or a port name two
		// pods were given by mistake must fail here, not take the other pod's link away.
		if eth0 != nil {
			if owner := podLinkOwner(eth0); owner != podID {
				return fmt.Errorf("pod netns %s already has a %s (%s, %s) that is not this pod's link: "+
					"refusing to take it over; two pods were given one network namespace", podNetnsPath, PodLink, eth0.Type(), ownerText(owner))
			}
			// Our own link, no longer peered with this router's port (the port was rebuilt or the account's
			// router was): rebuild. Deleting it also deletes its peer, wherever that is.
			if err := nlink.DelLink(ph, eth0); err != nil {
				return fmt.Errorf("pod: %w", err)
			}
			eth0 = nil
			if port, err = nlink.LinkByName(r.h, portName); err != nil {
				return fmt.Errorf("router: %w", err)
			}
		}
		if port != nil {
			if owner, labelled := portOwner(port); port.Type() != "veth" || (labelled && owner != podID) {
				return fmt.Errorf("netns %s already has a link %s (%s, %s) that is not this pod's port: "+
					"refusing to take it over or delete it", r.path, portName, port.Type(), ownerText(owner))
			}
			// This pod's port whose peer was in the pod's previous netns, which is gone or going (its
			// veth is destroyed asynchronously): drop the stale port now. An unlabelled one is ours too:
			// only this function creates links under this pod's port name, and labels them in the same call.
			if err := nlink.DelLink(r.h, port); err != nil {
				return fmt.Errorf("router: stale port: %w", err)
			}
			port = nil
		}
	}
	if eth0 == nil {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU, la.HardwareAddr = PodLink, MTU, mac
		v := &netlink.Veth{LinkAttrs: la, PeerName: portName, PeerNamespace: netlink.NsFd(r.f.Fd())}
		if err := ph.LinkAdd(v); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("create veth %s (pod) <-> %s (router %s): %w: a link of another pod appeared under one of these names meanwhile; not adopting it",
					PodLink, portName, r.path, err)
			}
			return fmt.Errorf("create veth %s (pod) <-> %s (router %s): %w", PodLink, portName, r.path, err)
		}
		// A half-plugged pod is removed again so a retry starts clean.
		defer func() {
			if err != nil {
				if l, e := ph.LinkByName(PodLink); e == nil {
					nlink.DelLink(ph, l)
				}
			}
		}()
		if eth0, err = ph.LinkByName(PodLink); err != nil {
			return fmt.Errorf("pod: %s after creation: %w", PodLink, err)
		}
		if port, err = r.h.LinkByName(portName); err != nil {
			return fmt.Errorf("router: %s after creation: %w", portName, err)
		}
		if !nlink.VethPair(eth0, port) {
			return fmt.Errorf("router: %s after creation is not the peer of the pod's %s", portName, PodLink)
		}
	}
	// Labelled right after creation (the kernel ignores an alias in the creating message), and pods
	// plugged in before eth0 carried the pod's ID get it now. An eth0 left unlabelled by a crash in
	// between is still peered with this pod's port, so it is recognised as ours by the pair.
	if eth0.Attrs().Alias != podLinkAlias(podID) {
		if err := ph.LinkSetAlias(eth0, podLinkAlias(podID)); err != nil {
			return fmt.Errorf("pod: label %s: %w", PodLink, err)
		}
	}

	// Router side, all but the bridge.
	if alias := portAlias(ip4, podID); port.Attrs().Alias != alias {
		if err := r.h.LinkSetAlias(port, alias); err != nil {
			return fmt.Errorf("router: label %s: %w", portName, err)
		}
	}
	if port.Attrs().MTU != MTU {
		if err := r.h.LinkSetMTU(port, MTU); err != nil {
			return fmt.Errorf("router: %s MTU: %w", portName, err)
		}
	}
	// BIG TCP only where the frames stay in the host's stack: a node's bridge forwards to its VXLAN device,
	// which takes at most 64 KiB GSO packets, so larger ones from the pod would be cut up in software on
	// every cross-node packet (a fifth of the throughput, measured).
	bigTCP := b.onRouter()
	if bigTCP {
		ensureBigTCP(r.h, port)
	}

	// Pod side. IPv6 is off on eth0 (the pod network is IPv4): otherwise
	// every pod's DAD, router and MLD multicasts flood all bridge ports.
	if err := nlink.SetSysctls(podNetnsPath, []nlink.Sysctl{{Key: "net/ipv6/conf/" + PodLink + "/disable_ipv6", Value: "1", Optional: true}}); err != nil {
		return fmt.Errorf("pod: %w", err)
	}
	if eth0.Attrs().MTU != MTU {
		if err := ph.LinkSetMTU(eth0, MTU); err != nil {
			return fmt.Errorf("pod: %s MTU: %w", PodLink, err)
		}
	}
	if bigTCP {
		ensureBigTCP(ph, eth0)
	}
	if eth0.Attrs().HardwareAddr.String() != mac.String() {
		if err := ph.LinkSetHardwareAddr(eth0, mac); err != nil {
			return fmt.Errorf("pod: %s MAC: %w", PodLink, err)
		}
	}
	if err := nlink.EnsureAddrs(ph, eth0, []*net.IPNet{{IP: ip4, Mask: PodCIDR.Mask}}); err != nil {
		return fmt.Errorf("pod: %w", err)
	}
	if err := nlink.SetUp(ph, eth0); err != nil {
		return fmt.Errorf("pod: %w", err)
	}
	if lo, err := ph.LinkByName("lo"); err == nil {
		if err := nlink.SetUp(ph, lo); err != nil {
			return fmt.Errorf("pod: %w", err)
		}
	}
	if err := ensureDefaultRoute(ph, eth0, RouterIP); err != nil {
		return fmt.Errorf("pod: %w", err)
	}

	// Bridge last, and only return once both ends are operationally up.
	// The kernel's link watcher acts on a carrier change asynchronously:
	// until it has, the pod's eth0 still has no transmit queue and the bridge
	// port is disabled, and the pod's first packet (its ARP request) is lost:
	// a 1 s stall on the pod's first connection. A port that is up when it
	// joins the bridge forwards at once.
	if err := nlink.SetUp(r.h, port); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if port.Attrs().MasterIndex != r.br.Attrs().Index {
		waitOperUp(r.h, portName, 2*time.Second)
		if err := r.h.LinkSetMaster(port, r.br); err != nil {
			if errors.Is(err, unix.EXFULL) {
				return fmt.Errorf("bridge %s of the account is full: at most %d pods per account (kernel limit of bridge ports)", BridgeName, MaxBridgePorts)
			}
			return fmt.Errorf("router: attach %s to %s: %w", portName, BridgeName, err)
		}
		// An empty bridge cannot take BIG TCP (its TSO limit comes from its ports); once it has a port it
		// can, and it must: packets the router forwards out of br0 beyond br0's limit are cut up in software.
		if br, err := r.h.LinkByName(BridgeName); err == nil {
			if bigTCP {
				ensureBigTCP(r.h, br)
			}
		}
	}
	pi, err := r.h.LinkGetProtinfo(port)
	if err != nil || !pi.Hairpin {
		// Hairpin: a pod reaching itself through its Service gets the
		// DNAT'd frame back out of its own port.
		if err := r.h.LinkSetHairpin(port, true); err != nil {
			return fmt.Errorf("router: hairpin on %s: %w", portName, err)
		}
	}
	waitOperUp(ph, PodLink, 2*time.Second)
	return nil
}

// waitOperUp waits (bounded) until the link's operational state is up. Not
// getting there is no error: the bridge then enables the port when it is.
func waitOperUp(h *netlink.Handle, name string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 20*time.Millisecond) {
		l, err := h.LinkByName(name)
		if err != nil || l.Attrs().OperState == netlink.OperUp || time.Now().After(deadline) {
			return
		}
		time.Sleep(delay)
	}
}

// DeletePod removes the pod's veth (both ends: the router port and the pod's
// eth0). Missing router, port or pod netns are fine.
func (m *Manager) DeletePod(account string, index int, podID string) error {
	return m.DeletePodOn(account, index, podID, Bridge{})
}

// DeletePodOn is DeletePod for a pod plugged into bridge b (EnsurePodOn). A
// missing namespace of b is fine too.
func (m *Manager) DeletePodOn(account string, index int, podID string, b Bridge) error {
	if err := m.checkAccount(account, index); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	var r *router
	var err error
	if b.onRouter() {
		r, err = m.openRouter(account, index)
	} else if r, err = openNetns(b.Netns); err != nil && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("network: delete pod %s: %w", podID, err)
	}
	if r == nil {
		return nil
	}
	defer r.close()
	port, err := nlink.LinkByName(r.h, podPortName(podID))
	if err != nil || port == nil {
		return err
	}
	if owner, labelled := portOwner(port); port.Type() != "veth" || (labelled && owner != podID) {
		return fmt.Errorf("network: delete pod %s (account %s): router netns %s has a link %s (%s, %s) that is not this pod's port: not deleting it",
			podID, account, r.path, port.Attrs().Name, port.Type(), ownerText(owner))
	}
	if err := nlink.DelLink(r.h, port); err != nil {
		return fmt.Errorf("network: delete pod %s (account %s): %w", podID, account, err)
	}
	return nil
}

// portAlias labels a router port with the pod's IP and ID (`ip link` in the
// router netns then tells which pod is behind which port). It is also the
// port's identity: EnsurePod and DeletePod touch an existing port only if it
// names their pod.
func portAlias(ip net.IP, podID string) string { return ip.String() + " " + podID }

// portOwner returns the pod ID a router port's alias names; labelled is false
// for a port without alias.
func portOwner(port netlink.Link) (owner string, labelled bool) {
	a := port.Attrs().Alias
	if a == "" {
		return "", false
	}
	_, id, _ := strings.Cut(a, " ")
	return id, true
}

// podLinkAlias labels a pod's eth0 with the pod's ID: the identity EnsurePod
// checks before it rebuilds an eth0 that is not peered with the pod's port.
func podLinkAlias(podID string) string { return "pod " + podID }

// podLinkOwner returns the pod ID an eth0's alias names ("" if none).
func podLinkOwner(l netlink.Link) string {
	id, _ := strings.CutPrefix(l.Attrs().Alias, "pod ")
	if id == l.Attrs().Alias {
		return ""
	}
	return id
}

func ownerText(owner string) string {
	if owner == "" {
		return "no pod named in its alias"
	}
	return "alias names pod " + owner
}
