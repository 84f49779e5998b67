package network

import (
	"fmt"
	"math/rand/v2"
	"net"
)

// Allocator picks pod IPs from 10.244.0.0/16 outside the reserved
// 10.244.0.0/24 and never 10.244.255.255. It touches no kernel state and keeps
// none: the caller persists each pod's IP and passes the ones in use.
type Allocator struct {
	sequential bool
}

// NewAllocator returns an allocator choosing at random (the default: freed
// addresses are not reused right away), or, when sequential, always the
// lowest free address (a test hook: two accounts then get the same IPs).
func NewAllocator(sequential bool) *Allocator { return &Allocator{sequential: sequential} }

// AllocatableIPs is how many pod IPs an account network has: 10.244.1-255.1-254.
// Addresses ending in .0 or .255 are valid in a /16 but skipped: some
// software mistakes them for network or broadcast addresses.
const AllocatableIPs = 255 * 254

// Next returns a free address; used holds the addresses in use as
// net.IP.String() keys.
func (a *Allocator) Next(used map[string]bool) (net.IP, error) {
	const n = AllocatableIPs
	start := uint32(0)
	if !a.sequential {
		start = rand.Uint32N(n)
	}
	for i := uint32(0); i < n; i++ {
		k := (start + i) % n
		ip := net.IPv4(10, 244, byte(1+k/254), byte(1+k%254)).To4()
		if !used[ip.String()] {
			return ip, nil
		}
	}
	return nil, fmt.Errorf("network: pod network %s is full: all %d addresses outside %s are in use; delete pods to free some", PodCIDR, n, ReservedCIDR)
}

// NextInBlock returns a free address of the /24 10.244.<block>.0/24 (1..255):
// the block a node of a multi-node lab gives its pods, so a pod's address says
// which node it is on, as in the Kubernetes lesson. Random or lowest-first as
// Next.
func (a *Allocator) NextInBlock(block int, used map[string]bool) (net.IP, error) {
	if block < 1 || block > 255 {
		return nil, fmt.Errorf("network: block %d out of range 1..255 (10.244.0.0/24 is the platform's)", block)
	}
	const n = 254
	start := uint32(0)
	if !a.sequential {
		start = rand.Uint32N(n)
	}
	for i := uint32(0); i < n; i++ {
		ip := net.IPv4(10, 244, byte(block), byte(1+(start+i)%n)).To4()
		if !used[ip.String()] {
			return ip, nil
		}
	}
	return nil, fmt.Errorf("network: block 10.244.%d.0/24 is full: all %d addresses are in use; delete pods on that node or add a node", block, n)
}
