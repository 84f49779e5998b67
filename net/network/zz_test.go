package network

import (
	"fmt"
	"github.com/pilab/pi/net/netns"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

func TestZZScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("ZZN"))
	e := newEnv(t)
	a := e.account(t, "a", 0)
	alloc := NewAllocator(true)
	used := map[string]bool{}
	var paths []string
	for j := 0; j < n; j++ {
		ipx, _ := alloc.Next(used)
		used[ipx.String()] = true
		path, _ := netns.EnsureNamed(fmt.Sprintf("%s-a-p%d", e.lab, j))
		if err := e.m.EnsurePod("a", 0, path, ipx, fmt.Sprint(j)); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	serveTCP(t, paths[0], ":8080", "first")
	for _, k := range []int{n - 1, n / 2, 1} {
		t0 := time.Now()
		got, err := dialTCP(paths[k], "10.244.1.1:8080", 5*time.Second)
		ok, _ := ping(paths[k], ip("10.244.0.1"), 2*time.Second)
		t.Logf("p%d -> first: %q %v (%v); ping router %v", k, got, err, time.Since(t0), ok)
	}
	netns.Do(paths[n-1], func() error {
		out, _ := exec.Command("ip", "neigh").CombinedOutput()
		t.Logf("neigh last:\n%s", out)
		out, _ = exec.Command("ip", "-s", "link", "show", "eth0").CombinedOutput()
		t.Logf("%s", out)
		return nil
	})
	netns.Do(a.RouterNetns, func() error {
		out, _ := exec.Command("sh", "-c", "bridge fdb show br br0 | wc -l; ip -d link show br0; bridge mdb show | wc -l; dmesg | tail -5").CombinedOutput()
		t.Logf("router:\n%s", out)
		return nil
	})
	t0 := time.Now()
	e.m.Reset()
	t.Logf("reset %v", time.Since(t0))
}
