package pods

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// BenchmarkPodStart measures create -> task running for one-container pods,
// through the Runtime (EnsureSandbox + StartContainer) and, in the same
// run, with the bare containerd client (NewContainer + NewTask + Start of
// the same image, logging to a file), alternating the two so both see the
// same machine state. It reports the p50/p95 of each in milliseconds, and
// of EnsureSandbox alone (part of pilab's).
func BenchmarkPodStart(b *testing.B) {
	e := newEnv(b)
	ctx := e.ctx(context.Background())
	nsPath := newNetns(b, e.ns+"-bench")
	img, err := e.images.Resolve(ctx, testImage)
	if err != nil {
		b.Fatal(err)
	}
	// The bare client leaves runc's state in the shim's default root.
	b.Cleanup(func() { os.Remove(filepath.Join("/run/containerd/runc", e.ns)) })
	var pilab, sandbox, bare []time.Duration

	// 30 pods per iteration: `make bench` runs one, and a p95 needs more than one sample.
	const podsPerIteration = 30
	b.ResetTimer()
	for i := 0; i < b.N*podsPerIteration; i++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench%d", i), Namespace: "default", UID: types.UID(fmt.Sprintf("bench-%s-%d", e.ns, i))},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{ctr("app", "sleep")}},
		}
		measurePilab := func() {
			t0 := time.Now()
			sb, err := e.rt.EnsureSandbox(pod, nsPath)
			if err != nil {
				b.Fatal(err)
			}
			sandbox = append(sandbox, time.Since(t0))
			if err := e.rt.StartContainer(ctx, ContainerOptions{Pod: pod, Container: &pod.Spec.Containers[0], Sandbox: sb}); err != nil {
				b.Fatal(err)
			}
			pilab = append(pilab, time.Since(t0))
		}
		id := fmt.Sprintf("bare-%d", i)
		measureBare := func() {
			t0 := time.Now()
			c, err := e.client.NewContainer(ctx, id,
				containerd.WithSnapshotter(snapshotter),
				containerd.WithNewSnapshot(id, img),
				containerd.WithNewSpec(oci.WithImageConfig(img)),
			)
			if err != nil {
				b.Fatal(err)
			}
			t, err := c.NewTask(ctx, cio.LogFile(filepath.Join(e.runDir, "bare", id+".log")))
			if err != nil {
				b.Fatal(err)
			}
			if err := t.Start(ctx); err != nil {
				b.Fatal(err)
			}
			bare = append(bare, time.Since(t0))
		}
		if i%2 == 0 {
			measurePilab()
			measureBare()
		} else {
			measureBare()
			measurePilab()
		}

		b.StopTimer()
		if err := e.rt.RemovePod(ctx, string(pod.UID)); err != nil {
			b.Fatal(err)
		}
		if err := e.rt.RemoveSandbox(string(pod.UID)); err != nil {
			b.Fatal(err)
		}
		if err := e.rt.removeContainer(ctx, id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"pilab", pilab}, {"sandbox", sandbox}, {"bare", bare}} {
		b.ReportMetric(percentile(m.d, 50), m.name+"-p50-ms")
		b.ReportMetric(percentile(m.d, 95), m.name+"-p95-ms")
	}
}

func percentile(d []time.Duration, p int) float64 {
	s := append([]time.Duration{}, d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p+99)/100 - 1
	return float64(s[max(i, 0)]) / float64(time.Millisecond)
}
