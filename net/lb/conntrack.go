package lb

import (
	"fmt"

	"github.com/google/nftables/binaryutil"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func nativeU32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// staleUDP matches UDP conntrack entries addressed to a service address whose
// backend is no longer an endpoint of that service port. A UDP "connection"
// never ends on its own while the client keeps sending, so without this a
// client would keep talking to a removed endpoint. Entries that were never
// DNAT'd (sent while the port had no endpoint) are stale too.
type staleUDP struct {
	addrs map[ip4]bool
	udp   map[dispatchKey]map[ip4port]bool
	// zone: in a node's table only the account's own conntrack zone is looked at (the node's other
	// accounts have the same Service IPs, with endpoints of their own).
	zone uint16
}

func (f *staleUDP) MatchConntrackFlow(fl *netlink.ConntrackFlow) bool {
	if fl.Forward.Protocol != unix.IPPROTO_UDP || fl.Zone != f.zone {
		return false
	}
	dst, ok := toIP4(fl.Forward.DstIP)
	if !ok || !f.addrs[dst] {
		return false
	}
	backend, ok := toIP4(fl.Reverse.SrcIP)
	if !ok {
		return true
	}
	eps := f.udp[dispatchKey{dst, unix.IPPROTO_UDP, fl.Forward.DstPort}]
	return !eps[ip4port{backend, fl.Reverse.SrcPort}]
}

// flushStaleUDP deletes stale UDP conntrack entries after the table changed.
// It only dumps the conntrack table when a UDP endpoint went away (or after a
// rebuild, when the previous state is unknown): the dump walks the whole
// conntrack hash (~9 ms with 262,144 buckets) even for an empty netns.
func (s *Syncer) flushStaleUDP(old, want *state) (int, error) {
	addrs := map[ip4]bool{}
	for a := range s.ctPending {
		addrs[a] = true
	}
	if old == nil {
		for _, p := range want.parts {
			for k := range p.udp {
				addrs[k.addr] = true
			}
		}
	} else {
		// Only a removed endpoint leaves stale entries behind: while a port
		// has no endpoint its packets are rejected before conntrack
		// confirms them, so no un-DNAT'd entry survives to be reused.
		for _, c := range changes(old, want) {
			for k, eps := range c.have.udp {
				now := c.want.udp[k]
				for ep := range eps {
					if !now[ep] {
						addrs[k.addr] = true
						break
					}
				}
			}
		}
	}
	if len(addrs) == 0 {
		return 0, nil
	}
	udp := map[dispatchKey]map[ip4port]bool{}
	for _, p := range want.parts {
		for k, eps := range p.udp {
			udp[k] = eps
		}
	}
	n, err := s.ct.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, &staleUDP{addrs: addrs, udp: udp, zone: s.zone})
	if err != nil {
		s.ctPending = addrs
		return int(n), fmt.Errorf("lb: flush stale UDP conntrack entries in netns %s: %w (retried on the next Sync)", s.nsPath, err)
	}
	s.ctPending = map[ip4]bool{}
	return int(n), nil
}
