package network

import (
	"fmt"
	"net"
	"regexp"
	"slices"

	"github.com/google/nftables"
	"github.com/pilab/pi/net/nlink"
	"github.com/vishvananda/netlink"
)

const ipForwardKey = "net/ipv4/ip_forward"

// ensureEdge makes the lab's host-side table and registers hostLink as one of
// its transit links. The host must forward (ip_forward=1, the only host sysctl
// pilab changes); if it did not, that is recorded in the table so the lab's
// last cleanup can restore it.
func (m *Manager) ensureEdge(hostLink string) error {
	nc, err := nftConn(m.host.Fd())
	if err != nil {
		return err
	}
	recorded, err := m.edgeRecord(nc)
	if err != nil {
		return err
	}
	fwd, err := getSysctl(m.hostPath, ipForwardKey)
	if err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if _, err := ensureTable(nc, edgeTable(m.edgeTableName(), recorded || fwd == "0", m.guardHost)); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if fwd != "1" {
		if err := nlink.SetSysctls(m.hostPath, []nlink.Sysctl{{Key: ipForwardKey, Value: "1"}}); err != nil {
			return fmt.Errorf("host: %w", err)
		}
	}
	t := &nftables.Table{Name: m.edgeTableName(), Family: nftables.TableFamilyIPv4}
	s, err := nc.GetSetByName(t, EdgeTransitSet)
	if err != nil {
		return fmt.Errorf("host: nft set %s/%s: %w", t.Name, EdgeTransitSet, err)
	}
	if err := nc.SetAddElements(s, []nftables.SetElement{{Key: ifnameData(hostLink)}}); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("host: add %s to nft set %s/%s: %w", hostLink, t.Name, EdgeTransitSet, err)
	}
	return nil
}

// edgeRecord reports whether the lab's edge table records that the host's
// ip_forward was 0 before the lab switched it on.
func (m *Manager) edgeRecord(nc *nftables.Conn) (bool, error) {
	chains, err := nc.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("host: list nft chains: %w", err)
	}
	return slices.ContainsFunc(chains, func(c *nftables.Chain) bool {
		return c.Table.Name == m.edgeTableName() && c.Name == recordChain
	}), nil
}

// hostLinkRE matches this lab's host-side transit links (also ones of older runs).
func (m *Manager) hostLinkRE() *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(m.lab) + `w[0-9]+$`)
}

// IsHostLink reports whether a link of the host namespace is one of this lab's transit links, the
// `<lab>w<index>` names only: a prefix match would also take another lab's (lab "pi" vs lab "piw").
func (m *Manager) IsHostLink(name string) bool { return m.hostLinkRE().MatchString(name) }

// releaseEdge drops hostLink from the edge table; once the lab has no transit
// link left it removes the table and, if the lab had switched ip_forward on
// and no other lab's edge table remains, switches it back off. It returns what
// it removed.
func (m *Manager) releaseEdge(hh *netlink.Handle, hostLink string, force bool) ([]string, error) {
	var done []string
	nc, err := nftConn(m.host.Fd())
	if err != nil {
		return nil, err
	}
	t, err := findTable(nc, m.edgeTableName())
	if err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	if t == nil {
		return nil, nil
	}
	s, err := nc.GetSetByName(t, EdgeTransitSet)
	if err != nil {
		return nil, fmt.Errorf("host: nft set %s/%s: %w", t.Name, EdgeTransitSet, err)
	}
	elems, err := nc.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("host: read nft set %s/%s: %w", t.Name, EdgeTransitSet, err)
	}
	left := 0
	for _, e := range elems {
		if string(e.Key) == string(ifnameData(hostLink)) {
			if err := nc.SetDeleteElements(s, []nftables.SetElement{{Key: e.Key}}); err != nil {
				return nil, err
			}
			if err := nc.Flush(); err != nil {
				return nil, fmt.Errorf("host: remove %s from nft set %s/%s: %w", hostLink, t.Name, EdgeTransitSet, err)
			}
			continue
		}
		left++
	}
	if !force {
		links, err := hh.LinkList()
		if err != nil {
			return nil, fmt.Errorf("host: list links: %w", err)
		}
		re := m.hostLinkRE()
		for _, l := range links {
			if re.MatchString(l.Attrs().Name) && l.Attrs().Name != hostLink {
				left++
			}
		}
		if left > 0 {
			return nil, nil
		}
	}
	recorded, err := m.edgeRecord(nc)
	if err != nil {
		return nil, err
	}
	if _, err := deleteTable(nc, t.Name); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	done = append(done, m.where("nft table ip "+t.Name))
	if recorded {
		others, err := nc.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			return done, fmt.Errorf("host: list nft tables: %w", err)
		}
		var users []string
		edgeRE := regexp.MustCompile(`^[a-z][a-z0-9]{0,5}-edge$`)
		for _, o := range others {
			if edgeRE.MatchString(o.Name) {
				users = append(users, o.Name)
			}
		}
		if len(users) == 0 {
			if err := nlink.SetSysctls(m.hostPath, []nlink.Sysctl{{Key: ipForwardKey, Value: "0"}}); err != nil {
				return done, fmt.Errorf("host: %w", err)
			}
			done = append(done, m.where("sysctl net.ipv4.ip_forward restored to 0"))
		} else {
			done = append(done, m.where(fmt.Sprintf("sysctl net.ipv4.ip_forward left at 1: still used by %v", users)))
		}
	}
	return done, nil
}

// where names the host side in messages.
func (m *Manager) where(what string) string {
	if m.hostName != "" {
		return what + " (host netns " + m.hostName + ")"
	}
	return what + " (host)"
}

// SetFloatingIPs makes ips the Floating IPs that may enter this lab's routers
// from the host side (set fips of the edge table; routing them to a router's
// WANIP is the caller's part). The edge table exists once an account does.
func (m *Manager) SetFloatingIPs(ips []net.IP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.setFloatingIPs(ips); err != nil {
		return fmt.Errorf("network: set Floating IPs of lab %s: %w", m.lab, err)
	}
	return nil
}

func (m *Manager) setFloatingIPs(ips []net.IP) error {
	want := map[string]bool{}
	for _, ip := range ips {
		ip4 := ip.To4()
		if ip4 == nil {
			return fmt.Errorf("Floating IP %s is not IPv4", ip)
		}
		want[string(ip4)] = true
	}
	nc, err := nftConn(m.host.Fd())
	if err != nil {
		return err
	}
	t, err := findTable(nc, m.edgeTableName())
	if err != nil {
		return err
	}
	if t == nil {
		return fmt.Errorf("host has no nft table ip %s: EnsureAccount first", m.edgeTableName())
	}
	s, err := nc.GetSetByName(t, EdgeFIPSet)
	if err != nil {
		return fmt.Errorf("nft set %s/%s: %w", t.Name, EdgeFIPSet, err)
	}
	have, err := nc.GetSetElements(s)
	if err != nil {
		return fmt.Errorf("read nft set %s/%s: %w", t.Name, EdgeFIPSet, err)
	}
	var add, del []nftables.SetElement
	for _, e := range have {
		if !want[string(e.Key)] {
			del = append(del, nftables.SetElement{Key: e.Key})
		}
		delete(want, string(e.Key))
	}
	for k := range want {
		add = append(add, nftables.SetElement{Key: []byte(k)})
	}
	if len(add) == 0 && len(del) == 0 {
		return nil
	}
	if len(del) > 0 {
		if err := nc.SetDeleteElements(s, del); err != nil {
			return err
		}
	}
	if len(add) > 0 {
		if err := nc.SetAddElements(s, add); err != nil {
			return err
		}
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("update nft set %s/%s: %w", t.Name, EdgeFIPSet, err)
	}
	return nil
}
