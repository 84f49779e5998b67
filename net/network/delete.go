package network

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/nlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// DeleteAccount removes the account's router netns (with everything in it,
// so the pods' eth0 go too), its transit link and its entry in the host edge
// table; the lab's last account also takes the edge table with it. Missing
// pieces are fine.
func (m *Manager) DeleteAccount(name string, index int) error {
	if err := m.checkAccount(name, index); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.deleteAccount(name, index); err != nil {
		return fmt.Errorf("network: delete account %s (index %d, lab %s): %w", name, index, m.lab, err)
	}
	return nil
}

func (m *Manager) deleteAccount(name string, index int) ([]string, error) {
	var done []string
	r, err := m.openRouter(name, index)
	if err != nil {
		return nil, err
	}
	if r != nil {
		r.close()
		d, err := m.removeRouter(m.RouterNetnsName(index))
		done = append(done, d...)
		if err != nil {
			return done, err
		}
	}
	hh, err := netns.NewHandle(m.hostPath)
	if err != nil {
		return done, fmt.Errorf("host netns: %w", err)
	}
	defer hh.Close()
	hostLink := m.hostLinkName(index)
	l, err := nlink.LinkByName(hh, hostLink)
	if err != nil {
		return done, err
	}
	if l != nil {
		if err := nlink.DelLink(hh, l); err != nil {
			return done, err
		}
		done = append(done, m.where("link "+hostLink))
	}
	d, err := m.releaseEdge(hh, hostLink, false)
	return append(done, d...), err
}

// removeRouter empties a router netns before unmounting it: a namespace
// lives on while anything holds it (a DNS server's sockets, an `ip netns exec`
// shell), and its links and NAT must not outlive the account in that case.
func (m *Manager) removeRouter(name string) ([]string, error) {
	path := netns.Path(name)
	var errs []error
	if f, err := netns.Open(path); err == nil {
		errs = append(errs, deleteAllLinks(path))
		if nc, err := nftConn(f.Fd()); err == nil {
			tables, err := nc.ListTables()
			errs = append(errs, err)
			for _, t := range tables {
				nc.DelTable(t)
			}
			if len(tables) > 0 {
				errs = append(errs, nc.Flush())
			}
		} else {
			errs = append(errs, err)
		}
		f.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("empty router netns %s: %w", name, err)
	}
	if err := netns.DeleteNamed(name); err != nil {
		return nil, err
	}
	return []string{"netns " + name + " (account router)"}, nil
}

// Reset removes everything of this lab, also what older runs left behind:
// every netns named <lab>-... (routers and pods; not the host netns given in
// Options), the host-side transit links, the edge table, and the host's
// ip_forward if the lab had switched it on. It returns what it removed.
func (m *Manager) Reset() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var done []string
	var errs []error
	hh, err := netns.NewHandle(m.hostPath)
	if err != nil {
		errs = append(errs, fmt.Errorf("host netns: %w", err))
		return done, fmt.Errorf("network: reset lab %s: %w", m.lab, errors.Join(errs...))
	}
	defer hh.Close()
	links, err := hh.LinkList()
	errs = append(errs, err)
	re := m.hostLinkRE()
	for _, l := range links {
		if re.MatchString(l.Attrs().Name) {
			if err := nlink.DelLink(hh, l); err != nil {
				errs = append(errs, err)
				continue
			}
			done = append(done, m.where("link "+l.Attrs().Name))
		}
	}
	names, err := netns.ListNamed(m.lab + "-")
	errs = append(errs, err)
	routerRE := regexp.MustCompile(`^` + regexp.QuoteMeta(m.lab) + `-r[0-9]+$`)
	// Routers first: removing their ports also removes the pods' eth0.
	for _, n := range names {
		if routerRE.MatchString(n) && n != m.hostName {
			d, err := m.removeRouter(n)
			done = append(done, d...)
			errs = append(errs, err)
		}
	}
	for _, n := range names {
		if !routerRE.MatchString(n) && n != m.hostName {
			if err := netns.DeleteNamed(n); err != nil {
				errs = append(errs, err)
				continue
			}
			done = append(done, "netns "+n)
		}
	}
	d, err := m.releaseEdge(hh, "", true)
	done = append(done, d...)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return done, fmt.Errorf("network: reset lab %s: %w", m.lab, err)
	}
	return done, nil
}

// deleteGroup is the link group removeRouter moves a router's links into so
// that one RTM_DELLINK removes them all: the kernel then unregisters them in
// one batch (one RCU grace period instead of one per link, which made removing
// a 1000-pod router take ~25 s).
const deleteGroup = 0x7069 // "pi"

// deleteAllLinks removes every link but lo from the netns at path, together
// with the veth peers in other namespaces (the pods' eth0, the host's
// transit link).
func deleteAllLinks(path string) error {
	h, err := netns.NewHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	n := 0
	for _, l := range links {
		if l.Attrs().Name == "lo" {
			continue
		}
		if err := h.LinkSetGroup(l, deleteGroup); err != nil && !nlink.IsNotFound(err) {
			return fmt.Errorf("mark link %s for deletion: %w", l.Attrs().Name, err)
		}
		n++
	}
	if n == 0 {
		return nil
	}
	return netns.Do(path, func() error {
		req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
		req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
		req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(deleteGroup)))
		if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !nlink.IsNotFound(err) {
			return fmt.Errorf("delete %d links (group %#x): %w", n, deleteGroup, err)
		}
		return nil
	})
}
