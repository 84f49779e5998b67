package network

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pilab/pi/net/netns"
)

func pct(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return float64(s[i].Microseconds()) / 1000
}

// BenchmarkEnsurePod: 100 pods per iteration into one account; per pod the
// pod netns is created (as the controller does) and EnsurePod programs
// veth + addresses + routes. Reports p50/p95 in milliseconds.
func BenchmarkEnsurePod(b *testing.B) {
	e := newEnv(b)
	e.account(b, "bench", 0)
	alloc := NewAllocator(true)
	var plug, total []time.Duration
	for i := 0; i < b.N; i++ {
		used := map[string]bool{}
		for j := 0; j < 100; j++ {
			ip, err := alloc.Next(used)
			if err != nil {
				b.Fatal(err)
			}
			used[ip.String()] = true
			t0 := time.Now()
			path, err := netns.EnsureNamed(fmt.Sprintf("%s-bench-p%d", e.lab, j))
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := e.m.EnsurePod("bench", 0, path, ip, "p"+strconv.Itoa(j)); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			plug = append(plug, t2.Sub(t1))
			total = append(total, t2.Sub(t0))
		}
		b.StopTimer()
		for j := 0; j < 100; j++ {
			if err := e.m.DeletePod("bench", 0, "p"+strconv.Itoa(j)); err != nil {
				b.Fatal(err)
			}
			if err := netns.DeleteNamed(fmt.Sprintf("%s-bench-p%d", e.lab, j)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(pct(plug, 0.50), "ensurepod-p50-ms")
	b.ReportMetric(pct(plug, 0.95), "ensurepod-p95-ms")
	b.ReportMetric(pct(total, 0.50), "netns+pod-p50-ms")
	b.ReportMetric(pct(total, 0.95), "netns+pod-p95-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkEnsureAccount: router netns + bridge + transit + both tables.
func BenchmarkEnsureAccount(b *testing.B) {
	e := newEnv(b)
	var d []time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		e.account(b, "acct", i%1000)
		d = append(d, time.Since(t0))
		b.StopTimer()
		if err := e.m.DeleteAccount("acct", i%1000); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(pct(d, 0.50), "p50-ms")
	b.ReportMetric(pct(d, 0.95), "p95-ms")
}

// BenchmarkScaleProbe adds pods to one account until something breaks or
// PI_SCALE_MAX (default 1100) is reached, then checks the first and the last
// pod still talk. Run: go test -run X -bench ScaleProbe -benchtime 1x.
func BenchmarkScaleProbe(b *testing.B) {
	max := 1100
	if v, err := strconv.Atoi(os.Getenv("PI_SCALE_MAX")); err == nil {
		max = v
	}
	for i := 0; i < b.N; i++ {
		e := newEnv(b)
		e.account(b, "scale", 0)
		alloc := NewAllocator(true)
		used := map[string]bool{}
		var paths []string
		var lat []time.Duration
		var failure error
		start := time.Now()
		for n := 0; n < max; n++ {
			ip, err := alloc.Next(used)
			if err != nil {
				failure = err
				break
			}
			used[ip.String()] = true
			t0 := time.Now()
			path, err := netns.EnsureNamed(fmt.Sprintf("%s-scale-p%d", e.lab, n))
			if err == nil {
				err = e.m.EnsurePod("scale", 0, path, ip, "p"+strconv.Itoa(n))
			}
			if err != nil {
				failure = fmt.Errorf("pod %d: %w", n+1, err)
				break
			}
			lat = append(lat, time.Since(t0))
			paths = append(paths, path)
			if n == 0 {
				serveTCP(b, path, ":8080", "first")
			}
			if slices.Contains([]int{100, 500, 800, 900, 950, 1000, 1023}, n+1) {
				// Does the newest pod still reach the oldest one (ARP
				// broadcast + answer) and the router?
				t1 := time.Now()
				_, err := dialTCP(path, "10.244.1.1:8080", 3*time.Second)
				okR, _ := ping(path, RouterIP, time.Second)
				b.Logf("%4d pods: last 100 plugged in p50 %.2f ms, p95 %.2f ms; newest -> oldest pod: err=%v in %v; -> router ping %v",
					n+1, pct(lat[len(lat)-100:], .5), pct(lat[len(lat)-100:], .95), err, time.Since(t1).Round(time.Millisecond), okR)
			}
		}
		b.Logf("reached %d pods in %v; stopped by: %v", len(paths), time.Since(start), failure)
		b.ReportMetric(float64(len(paths)), "pods")
		b.ReportMetric(pct(lat, .5), "p50-ms")
		b.ReportMetric(pct(lat, .95), "p95-ms")
		t0 := time.Now()
		if _, err := e.m.Reset(); err != nil {
			b.Fatal(err)
		}
		b.Logf("Reset of %d pods took %v", len(paths), time.Since(t0))
	}
}
