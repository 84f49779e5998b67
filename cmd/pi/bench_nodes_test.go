package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/lab/controller"
	"github.com/pilab/pi/net/iperf"
	"github.com/pilab/pi/net/netns"
	"k8s.io/apimachinery/pkg/types"
)

// BenchmarkNodes measures a three-node lab (issue 13):
//   - up-to-page: `pi up --nodes 3` of a stopped lab whose images are present, then the Pi guide's
//     walkthrough (a FIP, the LoadBalancer Service, the nginx pod) until nginx's page answers from the
//     Internet side, as BenchmarkWalkthrough does for one node;
//   - node-add: `pi node add` until the node is Ready (and `pi node delete` of it, unmeasured);
//   - one TCP stream (iperf3) pod → pod across nodes (through both nodes' bridges and the VXLAN underlay)
//     against the same stream between two pods on one node: overlay-ratio, what encapsulation costs;
//   - the cross-node stream through a Service (DNAT'd on the client's node, then over VXLAN to the
//     endpoint's node) against the same stream straight at the Pod IP across nodes: throughput-ratio,
//     target >= 0.9.
func BenchmarkNodes(b *testing.B) {
	lab := startLabWith(b, "--nodes", "3")
	hostNS := "inet-" + lab
	mustPi(b, lab, "image", "build", "nginx", "podinfo")
	dir := b.TempDir()
	walk := newWalkthrough(b, lab, hostNS, dir)

	const rounds = 3
	var ups, adds []time.Duration
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for r := 0; r < rounds; r++ {
			fip, took := walk.round(b, r)
			ups = append(ups, took)
			walk.undo(b, fip)

			start := time.Now()
			out := mustPi(b, lab, "node", "add")
			adds = append(adds, time.Since(start))
			mustPi(b, lab, "node", "delete", strings.TrimPrefix(strings.Fields(out)[0], "node/"))
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(ups, 0.5)), "up-to-page-p50-ms")
	b.ReportMetric(ms(percentile(ups, 1)), "up-to-page-max-ms")
	b.ReportMetric(ms(percentile(adds, 0.5)), "node-add-p50-ms")

	// Three pods pinned to nodes: the server on worker, a client beside it and one on worker2.
	var pods strings.Builder
	for _, p := range [][2]string{{"server", "worker"}, {"near", "worker"}, {"far", "worker2"}} {
		fmt.Fprintf(&pods, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  labels:\n    app: %s\nspec:\n  nodeName: %s\n  containers:\n  - name: podinfo\n    image: podinfo\n", p[0], p[0], p[1])
	}
	fmt.Fprintf(&pods, "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: sink\nspec:\n  selector:\n    app: server\n  ports:\n  - port: 5001\n    targetPort: 5201\n")
	manifest := filepath.Join(dir, "pods.yml")
	os.WriteFile(manifest, []byte(pods.String()), 0o644)
	mustPi(b, lab, "create", "-f", manifest)
	mustPi(b, lab, "wait", "--for=condition=Ready", "pod/server", "pod/near", "pod/far", "--timeout=120s")
	nsOf := func(pod string) string {
		uid := strings.TrimSpace(mustPi(b, lab, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}"))
		return netns.Path(controller.PodNetnsName(lab, types.UID(uid)))
	}
	server, near, far := nsOf("server"), nsOf("near"), nsOf("far")
	serverIP := strings.TrimSpace(mustPi(b, lab, "get", "pod", "server", "-o", "jsonpath={.status.podIP}"))
	svcIP := strings.TrimSpace(mustPi(b, lab, "get", "service", "sink", "-o", "jsonpath={.spec.clusterIP}"))
	const pairs = 7
	same, cross, err := iperf.Compare(pairs, func() (float64, error) {
		return iperf.Stream(b.Context(), server, near, serverIP, 5201, 5201, 2*time.Second)
	}, func() (float64, error) {
		return iperf.Stream(b.Context(), server, far, serverIP, 5201, 5201, 2*time.Second)
	})
	if err != nil {
		b.Fatalf("same-node vs cross-node streams: %v", err)
	}
	b.ReportMetric(same, "samenode-MB/s")
	b.ReportMetric(cross, "crossnode-MB/s")
	b.ReportMetric(cross/same, "overlay-ratio")
	direct, viaSvc, err := iperf.Compare(pairs, func() (float64, error) {
		return iperf.Stream(b.Context(), server, far, serverIP, 5201, 5201, 2*time.Second)
	}, func() (float64, error) {
		return iperf.Stream(b.Context(), server, far, svcIP, 5001, 5201, 2*time.Second)
	})
	if err != nil {
		b.Fatalf("direct vs Service streams across nodes: %v", err)
	}
	b.ReportMetric(direct, "direct-crossnode-MB/s")
	b.ReportMetric(viaSvc, "service-crossnode-MB/s")
	b.ReportMetric(viaSvc/direct, "throughput-ratio")
}
