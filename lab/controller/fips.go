package controller

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/net/netns"
	"github.com/vishvananda/netlink"
)

// fipMu serializes edge updates: they read every account's Floating IPs and write one host route table.
var fipMu sync.Mutex

// edgeFIPs routes every Floating IP in use by a Service to its account's router (a host route through the
// router's WAN address) and lets it through the lab's edge; addresses no longer in use lose both at once.
func (m *Manager) edgeFIPs() error {
	fipMu.Lock()
	defer fipMu.Unlock()
	accounts, err := m.Store.List(kindAccount, "")
	if err != nil {
		return err
	}
	wan := map[string]net.IP{}
	for _, o := range accounts {
		a := o.(*api.Account)
		if a.Status.WANIP != "" && a.DeletionTimestamp == nil {
			wan[a.Name] = net.ParseIP(a.Status.WANIP)
		}
	}
	fips, err := m.Store.List(kindFIP, "")
	if err != nil {
		return err
	}
	want := map[string]net.IP{} // FIP -> next hop
	var allowed []net.IP
	for _, o := range fips {
		f := o.(*api.FloatingIP)
		gw := wan[api.AccountOf(f)]
		if len(f.Status.Services) == 0 || gw == nil {
			continue
		}
		want[f.Name] = gw
		allowed = append(allowed, net.ParseIP(f.Name))
	}
	h, err := netns.HostHandle(m.HostNetns)
	if err != nil {
		return fmt.Errorf("edge: open the host namespace: %w", err)
	}
	defer h.Close()
	var errs []error
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("edge: list host routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || !m.isFIPRoute(h, r) {
			continue
		}
		ip := r.Dst.IP.String()
		if gw, ok := want[ip]; ok && gw.Equal(r.Gw) {
			delete(want, ip)
			continue
		}
		if err := h.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("remove route to fip %s: %w", ip, err))
		}
	}
	for ip, gw := range want {
		r := &netlink.Route{Dst: &net.IPNet{IP: net.ParseIP(ip).To4(), Mask: net.CIDRMask(32, 32)}, Gw: gw}
		if err := h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route fip %s via router %s: %w", ip, gw, err))
		}
	}
	if len(accounts) > 0 {
		if err := m.Network.SetFloatingIPs(allowed); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// isFIPRoute tells the lab's Floating IP routes: a /32 in the pool through one of the lab's transit links.
func (m *Manager) isFIPRoute(h *netlink.Handle, r netlink.Route) bool {
	if m.FIPPool == nil || !m.FIPPool.Contains(r.Dst.IP) {
		return false
	}
	if ones, _ := r.Dst.Mask.Size(); ones != 32 {
		return false
	}
	l, err := h.LinkByIndex(r.LinkIndex)
	return err == nil && m.Network.IsHostLink(l.Attrs().Name)
}
