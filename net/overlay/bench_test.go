package overlay

import (
	"context"
	"testing"
	"time"

	"github.com/pilab/pi/net/iperf"
)

// BenchmarkCrossNodeThroughput: one TCP stream (iperf3) pod to pod across
// two nodes (bridge, VXLAN, fabric, VXLAN, bridge) against the same pair on
// one node's bridge, in alternating pairs; reports both medians and the ratio.
func BenchmarkCrossNodeThroughput(b *testing.B) {
	l := newTestLab(b)
	for _, n := range []int{1, 2} {
		if _, err := l.m.EnsureNode(n); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := l.m.EnsureSegment(1, l.router(b, 1), []int{1, 2}); err != nil {
		b.Fatal(err)
	}
	client := l.pod(b, 1, 1, ip4("10.244.1.5"))
	local := l.pod(b, 1, 1, ip4("10.244.1.6"))
	remote := l.pod(b, 2, 1, ip4("10.244.2.5"))
	for _, dst := range []string{"10.244.1.6", "10.244.2.5"} {
		if !reach(b, client, ip4(dst), 56, 5*time.Second) {
			b.Fatalf("%s unreachable", dst)
		}
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		same, cross, err := iperf.Compare(3,
			func() (float64, error) {
				return iperf.Stream(ctx, local, client, "10.244.1.6", 5201, 5201, 2*time.Second)
			},
			func() (float64, error) {
				return iperf.Stream(ctx, remote, client, "10.244.2.5", 5201, 5201, 2*time.Second)
			})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(same, "MB/s-same-node")
		b.ReportMetric(cross, "MB/s-cross-node")
		b.ReportMetric(cross/same, "ratio")
	}
}
