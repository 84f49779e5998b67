package trace

import (
	"context"
	"net/netip"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/pilab/pi/net/iperf"
	"golang.org/x/sys/unix"
)

// BenchmarkThroughputWhileTracing: "no cost when nobody traces", and little when somebody does. One TCP
// stream from the pod to the Service address (DNAT in the router) is measured with iperf3 in 10
// alternating pairs of 2 s streams: with no trace, and while a trace of another flow is armed in all
// three namespaces (its table, its listeners). Untraced traffic takes the same rules either way, so the
// ratio should be 1. Also: how long Start takes to arm a trace in three namespaces (what pi trace
// spends before its request goes out).
func BenchmarkThroughputWhileTracing(b *testing.B) {
	tp := newTopo(b)
	// The benchmark's own Service port: iperf3 listens on 5201 behind it (the topology's web server has 8080).
	run(b, filepath.Base(tp.rtr), "add rule ip svc prerouting ip daddr 10.96.0.10 tcp dport 5201 dnat to 10.99.1.2:5201\n", "nft", "-f", "-")
	nss := []Namespace{{Name: "pod", Path: tp.pod}, {Name: "router", Path: tp.rtr}, {Name: "server", Path: tp.srv,
		Match: &Flow{Proto: unix.IPPROTO_TCP, Src: podIP, SrcPort: 40999}}}
	traced := Flow{Proto: unix.IPPROTO_TCP, Src: podIP, SrcPort: 40999, Dst: netip.MustParseAddr("10.96.0.10"), DstPort: 80}
	var starts []time.Duration
	stream := func() (float64, error) {
		return iperf.Stream(b.Context(), tp.srv, tp.pod, "10.96.0.10", 5201, 5201, 2*time.Second)
	}
	const pairs = 10
	b.ResetTimer()
	untraced, whileTracing, err := iperf.Compare(pairs*b.N, stream, func() (float64, error) {
		t0 := time.Now()
		s, err := Start(context.Background(), traced, nss)
		if err != nil {
			return 0, err
		}
		starts = append(starts, time.Since(t0))
		defer s.Stop()
		return stream()
	})
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	b.ReportMetric(untraced, "untraced-MB/s")
	b.ReportMetric(whileTracing, "while-tracing-MB/s")
	b.ReportMetric(whileTracing/untraced, "throughput-ratio")
	b.ReportMetric(float64(starts[len(starts)/2].Microseconds())/1000, "start-p50-ms")
}
