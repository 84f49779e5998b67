// Package nlink holds the small kernel-object helpers that the packages programming network namespaces
// (net/network: account routers and pods; net/overlay: nodes and VXLAN segments) share: links looked up,
// deleted and set up idempotently, veth ends recognised, a link's addresses converged, and sysctls of a
// namespace set.
package nlink

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/pilab/pi/net/netns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IsNotFound reports whether err says a link (or what was asked of it) does not exist.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// LinkByName returns nil, nil when the link does not exist.
func LinkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up link %s: %w", name, err)
	}
	return l, nil
}

// DelLink deletes l; a link already gone is no error.
func DelLink(h *netlink.Handle, l netlink.Link) error {
	if err := h.LinkDel(l); err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete link %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// SetUp sets l up unless it is.
func SetUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// VethPair reports whether a and b (in two namespaces) are the two ends of one veth.
func VethPair(a, b netlink.Link) bool {
	return a != nil && b != nil && a.Type() == "veth" && b.Type() == "veth" &&
		a.Attrs().ParentIndex == b.Attrs().Index && b.Attrs().ParentIndex == a.Attrs().Index
}

// EnsureAddrs makes exactly want (in order: the first is primary) the IPv4
// addresses of l.
func EnsureAddrs(h *netlink.Handle, l netlink.Link, want []*net.IPNet) error {
	have, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	same := len(have) == len(want)
	for i := 0; same && i < len(want); i++ {
		j := -1
		for k := range have {
			if have[k].IPNet.String() == want[i].String() {
				j = k
			}
		}
		// The first wanted address must be the primary one (source of replies).
		if j < 0 || (i == 0 && have[j].Flags&unix.IFA_F_SECONDARY != 0) {
			same = false
		}
	}
	if same {
		return nil
	}
	for _, a := range have {
		if err := h.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from %s: %w", a.IPNet, l.Attrs().Name, err)
		}
	}
	for _, w := range want {
		if err := h.AddrReplace(l, &netlink.Addr{IPNet: w}); err != nil {
			return fmt.Errorf("add address %s to %s: %w", w, l.Attrs().Name, err)
		}
	}
	return nil
}

// Sysctl is one value of a namespace's /proc/sys.
type Sysctl struct {
	Key      string // below /proc/sys
	Value    string
	Optional bool // absent when the feature is not built (IPv6, bridge netfilter)
}

// SetSysctls writes the values inside the netns at path. /proc/sys/net shows
// the namespace of the thread that opens the file, hence netns.Do.
func SetSysctls(path string, list []Sysctl) error {
	return netns.Do(path, func() error {
		for _, s := range list {
			p := "/proc/sys/" + s.Key
			cur, err := os.ReadFile(p)
			if err != nil {
				if s.Optional && errors.Is(err, os.ErrNotExist) {
					continue
				}
				return fmt.Errorf("read sysctl %s in %s: %w", s.Key, path, err)
			}
			if strings.TrimSpace(string(cur)) == s.Value {
				continue
			}
			if err := os.WriteFile(p, []byte(s.Value), 0o644); err != nil {
				return fmt.Errorf("set sysctl %s=%s in %s: %w", s.Key, s.Value, path, err)
			}
		}
		return nil
	})
}
