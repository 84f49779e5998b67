package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkPodStart measures pod create -> Running through the whole lab (API, store, controller, network,
// containerd) for 50 pods, one at a time, and, in the same run, bare containerd starting the same image
// (NewContainer + NewTask + Start through the client, as `ctr run` does). Target: pilab p50 <= 2x bare.
// It also reports the daemon's resident memory with the 50 pods running.
func BenchmarkPodStart(b *testing.B) {
	const pods = 50
	lab := startLab(b)
	mustPi(b, lab, "image", "build", "busybox")
	cl := client.New("/run/pilab/"+lab+"/pi.sock", "default")
	ctx := context.Background()
	kPod, _ := api.LookupKind("Pod")
	ctr, err := containerd.New("/run/pilab/" + lab + "/containerd/containerd.sock")
	if err != nil {
		b.Fatal(err)
	}
	defer ctr.Close()
	cctx := namespaces.WithNamespace(ctx, lab)
	img, err := ctr.GetImage(cctx, "docker.io/library/busybox:latest")
	if err != nil {
		b.Fatal(err)
	}

	var piTimes, bareTimes []time.Duration
	type bare struct {
		c containerd.Container
		t containerd.Task
	}
	var bares []bare
	// The bare containers are this benchmark's, not the lab's: remove them before the lab is reset.
	defer func() {
		for _, x := range bares {
			x.t.Kill(cctx, syscall.SIGKILL)
			if ch, err := x.t.Wait(cctx); err == nil {
				<-ch
			}
			x.t.Delete(cctx)
			x.c.Delete(cctx, containerd.WithSnapshotCleanup)
		}
	}()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := 0; i < pods; i++ {
			name := fmt.Sprintf("bench-%d-%d", n, i)
			// pilab: create through the API, wait for Running.
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}}}}
			start := time.Now()
			if _, err := cl.Create(ctx, pod); err != nil {
				b.Fatal(err)
			}
			for {
				o, err := cl.Get(ctx, kPod, name)
				if err != nil {
					b.Fatal(err)
				}
				if p := o.(*corev1.Pod); p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil {
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			piTimes = append(piTimes, time.Since(start))

			// bare containerd, same image.
			id := "bare-" + name
			start = time.Now()
			c, err := ctr.NewContainer(cctx, id, containerd.WithNewSnapshot(id, img), containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "3600")))
			if err != nil {
				b.Fatal(err)
			}
			t, err := c.NewTask(cctx, cio.NullIO)
			if err != nil {
				b.Fatal(err)
			}
			if err := t.Start(cctx); err != nil {
				b.Fatal(err)
			}
			bareTimes = append(bareTimes, time.Since(start))
			bares = append(bares, bare{c, t})
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(piTimes, 0.5)), "pilab-p50-ms")
	b.ReportMetric(ms(percentile(piTimes, 0.95)), "pilab-p95-ms")
	b.ReportMetric(ms(percentile(bareTimes, 0.5)), "bare-p50-ms")
	b.ReportMetric(ms(percentile(bareTimes, 0.95)), "bare-p95-ms")
	b.ReportMetric(float64(percentile(piTimes, 0.5))/float64(percentile(bareTimes, 0.5)), "ratio-p50")
	if rss := daemonRSS(lab); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "daemon-rss-MiB")
	}
}

// daemonRSS reads the lab daemon's resident set size.
func daemonRSS(lab string) int64 {
	data, err := os.ReadFile("/run/pilab/" + lab + "/pi.pid")
	if err != nil {
		return 0
	}
	status, err := os.ReadFile("/proc/" + strings.TrimSpace(string(data)) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
