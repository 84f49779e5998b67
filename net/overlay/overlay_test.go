package overlay

import (
	"net"
	"strings"
	"testing"
)

func TestNodeBlock(t *testing.T) {
	for _, c := range []struct {
		index int
		want  string // "" = error
	}{
		{0, ""}, // the platform's reserved block
		{-1, ""},
		{1, "10.244.1.0/24"},
		{2, "10.244.2.0/24"},
		{255, "10.244.255.0/24"},
		{256, ""}, // past the /16
	} {
		got, err := NodeBlock(c.index)
		if c.want == "" {
			if err == nil {
				t.Errorf("NodeBlock(%d) = %v, want an error", c.index, got)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("NodeBlock(%d) = %v, %v; want %s", c.index, got, err, c.want)
		}
	}
}

func TestVNIAndUnderlayAddresses(t *testing.T) {
	for _, a := range []int{0, -3, MaxAccount + 1} {
		if v, err := VNI(a); err == nil {
			t.Errorf("VNI(%d) = %d, want an error", a, v)
		}
		if ip, err := RouterUnderlayIP(a); err == nil {
			t.Errorf("RouterUnderlayIP(%d) = %v, want an error", a, ip)
		}
	}
	for _, n := range []int{0, MaxNodes + 1} {
		if ip, err := NodeUnderlayIP(n); err == nil {
			t.Errorf("NodeUnderlayIP(%d) = %v, want an error", n, ip)
		}
	}
	seen := map[string]string{}
	reserved := []string{"10.244.0.0/16", "10.96.0.0/12", "100.64.0.0/10", "198.18.0.0/15", "169.254.0.0/24", "169.254.255.0/24"}
	check := func(what string, ip net.IP) {
		t.Helper()
		if !UnderlayCIDR.Contains(ip) {
			t.Errorf("%s: %v outside the underlay %v", what, ip, UnderlayCIDR)
		}
		for _, r := range reserved {
			_, n, _ := net.ParseCIDR(r)
			if n.Contains(ip) {
				t.Errorf("%s: %v inside %s", what, ip, r)
			}
		}
		if ip.Equal(UnderlayCIDR.IP) || ip.Equal(net.IPv4(169, 254, 255, 255)) {
			t.Errorf("%s: %v is the network or broadcast address", what, ip)
		}
		if prev, ok := seen[ip.String()]; ok {
			t.Errorf("%s and %s share %v", what, prev, ip)
		}
		seen[ip.String()] = what
	}
	for a := 1; a <= MaxAccount; a++ {
		v, err := VNI(a)
		if err != nil || v != a {
			t.Fatalf("VNI(%d) = %d, %v", a, v, err)
		}
		ip, err := RouterUnderlayIP(a)
		if err != nil {
			t.Fatal(err)
		}
		check("router "+VXLANName(a), ip)
	}
	for n := 1; n <= MaxNodes; n++ {
		ip, err := NodeUnderlayIP(n)
		if err != nil {
			t.Fatal(err)
		}
		check("node "+nodePort(n), ip)
	}
	if ip, _ := RouterUnderlayIP(7); ip.String() != "169.254.16.7" {
		t.Errorf("RouterUnderlayIP(7) = %v, want 169.254.16.7", ip)
	}
	if ip, _ := RouterUnderlayIP(MaxAccount); ip.String() != "169.254.31.255" {
		t.Errorf("RouterUnderlayIP(%d) = %v, want 169.254.31.255", MaxAccount, ip)
	}
	if ip, _ := NodeUnderlayIP(2); ip.String() != "169.254.1.2" {
		t.Errorf("NodeUnderlayIP(2) = %v, want 169.254.1.2", ip)
	}
}

// TestNames: every link name fits the kernel's 15 bytes for the largest
// indexes, and namespace names carry the lab prefix (6 characters, the
// longest) and cannot be confused with net/network's.
func TestNames(t *testing.T) {
	m, err := New(Options{Lab: "abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{FabricBridge, UnderlayLink, BridgeName(MaxAccount), VXLANName(MaxAccount),
		nodePort(MaxNodes), routerPort(MaxAccount)} {
		if len(name) > 15 {
			t.Errorf("link name %q longer than 15 bytes", name)
		}
	}
	if got := m.NodeNetnsName(MaxNodes); got != "abcdef-n255" {
		t.Errorf("NodeNetnsName = %q", got)
	}
	if got := m.FabricNetnsName(); got != "abcdef-fabric" {
		t.Errorf("FabricNetnsName = %q", got)
	}
	for _, name := range []string{m.NodeNetnsName(1), m.FabricNetnsName()} {
		if strings.HasPrefix(name, "abcdef-r") || strings.HasPrefix(name, "abcdef-p-") {
			t.Errorf("%s looks like one of net/network's or the controller's namespaces", name)
		}
	}
	for _, bad := range []string{"", "Abc", "1ab", "abcdefg", "a-b"} {
		if _, err := New(Options{Lab: bad}); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}
