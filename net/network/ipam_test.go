package network

import (
	"net"
	"strings"
	"testing"
)

func TestAllocatorSequential(t *testing.T) {
	a := NewAllocator(true)
	used := map[string]bool{}
	var got []string
	for range 3 {
		ip, err := a.Next(used)
		if err != nil {
			t.Fatal(err)
		}
		used[ip.String()] = true
		got = append(got, ip.String())
	}
	if strings.Join(got, " ") != "10.244.1.1 10.244.1.2 10.244.1.3" {
		t.Fatalf("sequential: %v", got)
	}
	// A second account with its own used set gets the same addresses.
	ip, _ := NewAllocator(true).Next(map[string]bool{})
	if ip.String() != "10.244.1.1" {
		t.Fatalf("second account starts at %s", ip)
	}
	// A freed address is the next one handed out.
	delete(used, "10.244.1.2")
	if ip, _ := a.Next(used); ip.String() != "10.244.1.2" {
		t.Fatalf("after free: %s", ip)
	}
}

func TestAllocatorRandomFillsEverythingValid(t *testing.T) {
	for _, seq := range []bool{false, true} {
		a := NewAllocator(seq)
		used := map[string]bool{}
		for i := 0; i < AllocatableIPs; i++ {
			ip, err := a.Next(used)
			if err != nil {
				t.Fatalf("sequential=%v: after %d: %v", seq, i, err)
			}
			if used[ip.String()] {
				t.Fatalf("handed out %s twice", ip)
			}
			if _, err := checkPodIP(ip); err != nil {
				t.Fatalf("handed out invalid %s: %v", ip, err)
			}
			if ip[3] == 0 || ip[3] == 255 {
				t.Fatalf("handed out %s", ip)
			}
			used[ip.String()] = true
		}
		_, err := a.Next(used)
		if err == nil || !strings.Contains(err.Error(), "full") {
			t.Fatalf("full network: %v", err)
		}
	}
}

func TestAllocatorRandomSpreads(t *testing.T) {
	a := NewAllocator(false)
	seen := map[string]bool{}
	for range 50 {
		ip, err := a.Next(map[string]bool{})
		if err != nil {
			t.Fatal(err)
		}
		if !PodCIDR.Contains(ip) || ReservedCIDR.Contains(ip) || ip.Equal(net.IPv4(10, 244, 255, 255)) {
			t.Fatalf("bad %s", ip)
		}
		seen[ip.String()] = true
	}
	if len(seen) < 45 {
		t.Fatalf("random allocator repeats itself: %d distinct of 50", len(seen))
	}
}

func TestTransitCandidates(t *testing.T) {
	seen := map[string]string{}
	for _, lab := range []string{"pi", "t3f9a", "ab", "ba"} {
		for idx := 0; idx < 50; idx++ {
			c := transitCandidate(lab, idx, 0)
			if !TransitRange.Contains(c.IP) || !TransitRange.Contains(addIP(c.IP, 3)) {
				t.Fatalf("%s/%d: %s outside %s", lab, idx, c, TransitRange)
			}
			if c.IP[3]%4 != 0 {
				t.Fatalf("%s not aligned", c)
			}
			if prev, ok := seen[c.String()]; ok {
				t.Fatalf("%s/%d and %s share %s", lab, idx, prev, c)
			}
			seen[c.String()] = lab
		}
	}
	if transitCandidate("pi", 0, 0).String() == transitCandidate("pi", 0, 1).String() {
		t.Fatal("retry gives the same candidate")
	}
}
