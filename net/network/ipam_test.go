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

func TestAllocatorCoversExactlyTheValidRange(t *testing.T) {
	// Every address the allocator can hand out, found by filling all but one.
	all := map[string]bool{}
	for x := 0; x < 256; x++ {
		for y := 0; y < 256; y++ {
			all[net.IPv4(10, 244, byte(x), byte(y)).String()] = true
		}
	}
	valid := 0
	for s := range all {
		ip := net.ParseIP(s).To4()
		if _, err := checkPodIP(ip); err == nil && ip[3] != 0 && ip[3] != 255 {
			valid++
		}
	}
	if valid != AllocatableIPs {
		t.Fatalf("AllocatableIPs = %d, valid addresses = %d", AllocatableIPs, valid)
	}
	for _, seq := range []bool{false, true} {
		a := NewAllocator(seq)
		used := map[string]bool{}
		for s := range all {
			used[s] = true
		}
		if _, err := a.Next(used); err == nil || !strings.Contains(err.Error(), "full") {
			t.Fatalf("sequential=%v, full network: %v", seq, err)
		}
		delete(used, "10.244.200.17")
		if ip, err := a.Next(used); err != nil || ip.String() != "10.244.200.17" {
			t.Fatalf("sequential=%v, one free: %v %v", seq, ip, err)
		}
		used["10.244.200.17"] = true
		for _, reserved := range []string{"10.244.0.9", "10.244.255.255", "10.244.7.0", "10.244.7.255"} {
			delete(used, reserved)
			if _, err := a.Next(used); err == nil {
				t.Fatalf("sequential=%v: handed out %s", seq, reserved)
			}
			used[reserved] = true
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

func TestAllocatorNextInBlock(t *testing.T) {
	for _, seq := range []bool{true, false} {
		a := NewAllocator(seq)
		used := map[string]bool{}
		for range 254 {
			ip, err := a.NextInBlock(2, used)
			if err != nil {
				t.Fatal(err)
			}
			ip4 := ip.To4()
			if ip4[2] != 2 || ip4[3] == 0 || ip4[3] == 255 || used[ip.String()] {
				t.Fatalf("sequential=%v: %s is not a fresh address of 10.244.2.0/24 (.1-.254)", seq, ip)
			}
			used[ip.String()] = true
		}
		if _, err := a.NextInBlock(2, used); err == nil || !strings.Contains(err.Error(), "10.244.2.0/24 is full") {
			t.Fatalf("a full block: %v", err)
		}
	}
	if ip, _ := NewAllocator(true).NextInBlock(3, nil); ip.String() != "10.244.3.1" {
		t.Fatalf("first of block 3: %s", ip)
	}
	for _, b := range []int{0, 256} {
		if _, err := NewAllocator(true).NextInBlock(b, nil); err == nil {
			t.Fatalf("block %d accepted", b)
		}
	}
}
