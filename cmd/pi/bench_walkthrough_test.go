package main

import (
	"io"
	"net/http"
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

// BenchmarkWalkthrough plays the Pi guide's walkthrough from a stopped lab whose images are present, as a
// learner would the second time round: `pi up`, `pi create fip`, the LoadBalancer Service, the nginx pod,
// until http://FIP:8080/ answers with nginx's page from the Internet side (the lab's --host-netns).
// Target: <= 5 s (kind needs 12-33 s just to create a cluster). Then, in the same lab, one TCP stream
// (iperf3) from the Internet side through the FIP into the nginx pod's network namespace, against the same
// stream sent straight to the Pod IP from the account's router (the last hop both paths share: the FIP path
// adds the host edge, the transit link, routing and the DNAT). Target: FIP >= 90% of direct.
func BenchmarkWalkthrough(b *testing.B) {
	lab := startLab(b)
	hostNS := "inet-" + lab
	mustPi(b, lab, "image", "build", "nginx")
	dir := b.TempDir()
	walk := newWalkthrough(b, lab, hostNS, dir)

	const rounds = 5
	var ups []time.Duration
	var fip string
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for r := 0; r < rounds; r++ {
			var took time.Duration
			fip, took = walk.round(b, r)
			ups = append(ups, took)
			if r < rounds-1 {
				walk.undo(b, fip)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(ups, 0.5)), "up-to-page-p50-ms")
	b.ReportMetric(ms(percentile(ups, 1)), "up-to-page-max-ms")

	// Throughput, with iperf3: its server in the nginx pod's own network namespace on 5201, reached through a
	// second LoadBalancer Service on the same FIP (5001 -> 5201) from the Internet side, and straight at the
	// Pod IP from the account's router.
	nginxUID := strings.TrimSpace(mustPi(b, lab, "get", "pod", "nginx", "-o", "jsonpath={.metadata.uid}"))
	podNS := netns.Path(controller.PodNetnsName(lab, types.UID(nginxUID)))
	sink := filepath.Join(dir, "sink.yml")
	os.WriteFile(sink, []byte(`apiVersion: v1
kind: Service
metadata:
  name: sink
spec:
  type: LoadBalancer
  loadBalancerIP: `+fip+`
  selector:
    app: nginx
  ports:
  - port: 5001
    targetPort: 5201
`), 0o644)
	mustPi(b, lab, "create", "-f", sink)
	podIP := strings.TrimSpace(mustPi(b, lab, "get", "pod", "nginx", "-o", "jsonpath={.status.podIP}"))
	routers, err := netns.ListNamed(lab + "-r")
	if err != nil || len(routers) != 1 {
		b.Fatalf("the default account's router netns: %v %v", routers, err)
	}
	routerNS := netns.Path(routers[0])
	const pairs = 11
	md, mf, err := iperf.Compare(pairs, func() (float64, error) {
		return iperf.Stream(b.Context(), podNS, routerNS, podIP, 5201, 5201, 2*time.Second)
	}, func() (float64, error) {
		return iperf.Stream(b.Context(), podNS, netns.Path(hostNS), fip, 5001, 5201, 2*time.Second)
	})
	if err != nil {
		b.Fatalf("direct vs FIP streams: %v", err)
	}
	b.ReportMetric(md, "direct-MB/s")
	b.ReportMetric(mf, "fip-MB/s")
	b.ReportMetric(mf/md, "throughput-ratio")
}

// walkthrough plays the Pi guide's walkthrough in a lab whose nginx image is present: the round both
// BenchmarkWalkthrough and BenchmarkNodes time.
type walkthrough struct {
	lab, hostNS, dir string
	svcTmpl          []byte
	nginxYML         string
	web              *http.Client
}

func newWalkthrough(b *testing.B, lab, hostNS, dir string) *walkthrough {
	svcTmpl, err := os.ReadFile(filepath.Join("..", "..", "scenarios", "manifests", "service.yml"))
	if err != nil {
		b.Fatal(err)
	}
	return &walkthrough{lab: lab, hostNS: hostNS, dir: dir, svcTmpl: svcTmpl,
		nginxYML: filepath.Join("..", "..", "scenarios", "manifests", "nginx.yml"),
		web:      &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: netns.DialContext(netns.Path(hostNS))}}}
}

// round stops the lab, then times `pi up`, `pi create fip`, the LoadBalancer Service and the nginx pod until
// http://FIP:8080/ answers with nginx's page from the Internet side.
func (w *walkthrough) round(b *testing.B, r int) (fip string, took time.Duration) {
	mustPi(b, w.lab, "down")
	start := time.Now()
	mustPi(b, w.lab, "up", "--host-netns", w.hostNS)
	fip = strings.TrimSpace(mustPi(b, w.lab, "create", "fip"))
	svc := filepath.Join(w.dir, "service.yml")
	os.WriteFile(svc, []byte(strings.ReplaceAll(string(w.svcTmpl), "104.154.140.179", fip)), 0o644)
	mustPi(b, w.lab, "create", "-f", svc)
	mustPi(b, w.lab, "create", "-f", w.nginxYML)
	url := "http://" + fip + ":8080/"
	for !w.pageUp(url) {
		if time.Since(start) > time.Minute {
			b.Fatalf("round %d: %s did not answer within a minute", r, url)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fip, time.Since(start)
}

// undo deletes what a round made, for the next one.
func (w *walkthrough) undo(b *testing.B, fip string) {
	mustPi(b, w.lab, "delete", "pod", "nginx")
	mustPi(b, w.lab, "delete", "service", "test-loadbalancer")
	mustPi(b, w.lab, "delete", "fip", fip)
}

func (w *walkthrough) pageUp(url string) bool {
	resp, err := w.web.Get(url)
	if err != nil {
		return false
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200 && strings.Contains(string(body), "Welcome to nginx!")
}
