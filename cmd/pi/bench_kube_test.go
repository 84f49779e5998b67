package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/oci"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
)

// The Kubernetes API benchmarks: what kubectl and client-go users wait for, each beside the floor measured in
// the same run (a pilab-* metric beside its bare-* twin, as `make bench` prints them).

// kubeClientset is a client-go clientset on the lab's unix socket, with its own connections (each call makes a
// new Dial, so client-go's transport cache does not share them) and without client-go's default client-side
// rate limit (5 requests/s), which would otherwise be what these benchmarks measure.
func kubeClientset(tb testing.TB, lab string) *kubernetes.Clientset {
	tb.Helper()
	socket := filepath.Join("/run/pilab", lab, "pi.sock")
	cfg := &rest.Config{Host: "http://pi", QPS: -1, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		tb.Fatalf("client-go on %s: %v", socket, err)
	}
	return cs
}

func sleepPod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}}}}
}

// podRunning is BenchmarkPodStart's notion of started: phase Running and the container running.
func podRunning(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && len(p.Status.ContainerStatuses) > 0 && p.Status.ContainerStatuses[0].State.Running != nil
}

// BenchmarkKubectlGetPods500 times what a user waits for with a full account (500 pods, the per-account cap):
// the real `kubectl get pods` against `kubectl get --raw /version` (same kubectl, same forwarder, one round
// trip and no table: the floor any kubectl command pays), and a client-go typed List against a client-go
// GET /version. It also reports the daemon's resident memory holding the 500 pods.
func BenchmarkKubectlGetPods500(b *testing.B) {
	const pods, runs, workers = 500, 20, 4
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		b.Fatal("kubectl is not installed (.ci/run installs it)")
	}
	lab := startLab(b)
	mustPi(b, lab, "image", "build", "busybox")
	cs := kubeClientset(b, lab)
	ctx := context.Background()

	// 500 pods through client-go, a few creates at a time as a script or controller would send them.
	created := time.Now()
	names := make(chan string)
	var createErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				if _, err := cs.CoreV1().Pods("default").Create(ctx, sleepPod(name, nil), metav1.CreateOptions{}); err != nil {
					createErr.CompareAndSwap(nil, fmt.Errorf("create pod %s: %w", name, err))
				}
			}
		}()
	}
	for i := range pods {
		names <- fmt.Sprintf("p%03d", i)
	}
	close(names)
	wg.Wait()
	if err, _ := createErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Minute)
	for {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatalf("list pods: %v", err)
		}
		running := 0
		for i := range l.Items {
			if podRunning(&l.Items[i]) {
				running++
			}
		}
		if running == pods {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d pods Running after %s", running, pods, time.Since(created).Round(time.Second))
		}
		time.Sleep(2 * time.Second)
	}
	b.Logf("%d pods created and Running in %s", pods, time.Since(created).Round(time.Second))

	server := forwardTCP(b, filepath.Join("/run/pilab", lab, "pi.sock"))
	// HOME is kubectl's discovery cache: the first run fills it and later runs use it, as at a user's shell.
	// KUBECONFIG names no file, so nothing of the machine's own configuration is read.
	home := b.TempDir()
	kc := func(args ...string) string {
		b.Helper()
		cmd := exec.Command(kubectl, append([]string{"--server", server}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG="+filepath.Join(home, "no-such-config"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := kc("get", "pods"); strings.Count(out, "\n") != pods+1 || strings.Count(out, " Running ") != pods {
		b.Fatalf("kubectl get pods printed %d lines (%d Running), want a header and %d Running pods:\n%.2000s", strings.Count(out, "\n"), strings.Count(out, " Running "), pods, out)
	}
	kc("get", "--raw", "/version")

	var getT, versionT, listT, listBytesT, rawT []time.Duration
	var listSize int
	timed := func(ds *[]time.Duration, f func()) {
		start := time.Now()
		f()
		*ds = append(*ds, time.Since(start))
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		// Interleaved, so that whatever else the machine does falls on all four alike.
		for range runs {
			timed(&getT, func() { kc("get", "pods") })
			timed(&versionT, func() { kc("get", "--raw", "/version") })
			timed(&listT, func() {
				l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
				if err != nil || len(l.Items) != pods {
					b.Fatalf("client-go list pods: %d items, %v", len(l.Items), err)
				}
			})
			// The same GET without client-go's decoding: what is left is the daemon's work and the socket's.
			timed(&listBytesT, func() {
				data, err := cs.CoreV1().RESTClient().Get().AbsPath("/api/v1/namespaces/default/pods").DoRaw(ctx)
				if err != nil {
					b.Fatalf("GET /api/v1/namespaces/default/pods: %v", err)
				}
				listSize = len(data)
			})
			timed(&rawT, func() {
				if _, err := cs.Discovery().ServerVersion(); err != nil {
					b.Fatalf("client-go GET /version: %v", err)
				}
			})
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(getT, 0.5)), "pilab-kubectl-get-p50-ms")
	b.ReportMetric(ms(percentile(versionT, 0.5)), "bare-kubectl-get-p50-ms")
	b.ReportMetric(ms(percentile(listT, 0.5)), "pilab-list-p50-ms")
	b.ReportMetric(ms(percentile(rawT, 0.5)), "bare-list-p50-ms")
	b.ReportMetric(ms(percentile(listBytesT, 0.5)), "list-undecoded-p50-ms")
	b.ReportMetric(float64(listSize)/1024, "list-KiB")
	if rss := daemonRSS(lab); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "daemon-rss-MiB")
	}
}

// BenchmarkCreateToWatch times, for 1,000 Services created one after another, the create call's start to the
// ADDED event for that Service on a client-go watch opened before: how late a controller or `kubectl get -w`
// learns of a write. Services are the kind: they go through the registry's admission (a ClusterIP allocated
// from the account's 10.96.0.0/12, over a million addresses, so 1,000 fit) and the store like any user
// object, but start no container, so the figure is the API's and not containerd's. They have no selector,
// so no Endpoints are made for them; the Services controller still syncs the account's nft table behind them.
func BenchmarkCreateToWatch(b *testing.B) {
	const services = 1000
	lab := startLab(b)
	cs := kubeClientset(b, lab)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svcs := cs.CoreV1().Services("default")
	sel := metav1.ListOptions{LabelSelector: "bench=create-watch"}

	var createT, watchT []time.Duration
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		l, err := svcs.List(ctx, sel)
		if err != nil {
			b.Fatalf("list services: %v", err)
		}
		w, err := svcs.Watch(ctx, metav1.ListOptions{LabelSelector: sel.LabelSelector, ResourceVersion: l.ResourceVersion})
		if err != nil {
			b.Fatalf("watch services: %v", err)
		}
		// The reader stamps each ADDED event as it arrives; the creating loop waits for its own.
		type added struct {
			name string
			at   time.Time
		}
		events := make(chan added, services)
		go func() {
			for ev := range w.ResultChan() {
				if s, ok := ev.Object.(*corev1.Service); ok && ev.Type == kwatch.Added {
					events <- added{s.Name, time.Now()}
				}
			}
			close(events)
		}()
		for i := range services {
			name := fmt.Sprintf("cw-%d-%04d", n, i)
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": "create-watch"}},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
			start := time.Now()
			if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				b.Fatalf("create service %s: %v", name, err)
			}
			createT = append(createT, time.Since(start))
			timeout := time.After(30 * time.Second)
		wait:
			for {
				select {
				case ev, ok := <-events:
					if !ok {
						b.Fatalf("the watch on services closed before service %s was ADDED", name)
					}
					if ev.name == name {
						watchT = append(watchT, ev.at.Sub(start))
						break wait
					}
				case <-timeout:
					b.Fatalf("no ADDED event for service %s within 30s of its create", name)
				}
			}
		}
		w.Stop()
		b.StopTimer()
		// Per object: client-go's typed Services have no DeleteCollection (kube-apiserver serves none for them).
		deleteServices(b, svcs, sel)
		if l, err := svcs.List(ctx, sel); err != nil || len(l.Items) != 0 {
			b.Fatalf("after deletecollection, %d benchmark services remain (%v)", len(l.Items), err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	// Whether a create's cost grows with the Services already there (admission lists them all to allocate an IP).
	b.Logf("create call p50: first 100 %.1f ms, last 100 %.1f ms", ms(percentile(createT[:100], 0.5)), ms(percentile(createT[len(createT)-100:], 0.5)))
	b.ReportMetric(ms(percentile(watchT, 0.5)), "create-watch-p50-ms")
	b.ReportMetric(ms(percentile(watchT, 0.99)), "create-watch-p99-ms")
	// The create call's own round trip, to tell the write's cost from the watch's delivery.
	b.ReportMetric(ms(percentile(createT, 0.5)), "create-call-p50-ms")
}

// deleteServices deletes every Service sel picks, one call each.
func deleteServices(b *testing.B, svcs corev1client.ServiceInterface, sel metav1.ListOptions) {
	ctx := context.Background()
	l, err := svcs.List(ctx, sel)
	if err != nil {
		b.Fatalf("list the benchmark's services (%s) to delete them: %v", sel.LabelSelector, err)
	}
	for _, s := range l.Items {
		if err := svcs.Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
			b.Errorf("delete service %s: %v", s.Name, err)
		}
	}
}

// BenchmarkConcurrentClients runs 50 client-go clients, each with its own connections, for 60 s against one
// account, each looping over its own Services: list them, create one, watch from the list's resourceVersion
// until the ADDED event for it (5 s at most), delete it. Any failed call, or a watch that does not deliver the
// create, counts as an error (target 0). It reports each operation's p99 (the issue gives no latency target
// here, so the names are not the "p99-ms" target's) and the daemon's resident memory at the end.
func BenchmarkConcurrentClients(b *testing.B) {
	const clients = 50
	const duration = 60 * time.Second
	lab := startLab(b)
	ctx := context.Background()

	ops := []string{"list", "create", "watch", "delete"}
	var mu sync.Mutex
	lat := map[string][]time.Duration{}
	var errCount, iterations atomic.Int64
	fail := func(format string, args ...any) {
		if errCount.Add(1) <= 10 {
			b.Logf(format, args...)
		}
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		end := time.Now().Add(duration)
		var wg sync.WaitGroup
		for c := range clients {
			cs := kubeClientset(b, lab)
			wg.Add(1)
			go func() {
				defer wg.Done()
				svcs := cs.CoreV1().Services("default")
				owner := fmt.Sprintf("c%02d", c)
				sel := "bench=concurrent,owner=" + owner
				mine := map[string][]time.Duration{}
				for i := 0; time.Now().Before(end); i++ {
					name := fmt.Sprintf("cc-%d-%s-%d", n, owner, i)
					t0 := time.Now()
					l, err := svcs.List(ctx, metav1.ListOptions{LabelSelector: sel})
					if err != nil {
						fail("client %s: list services: %v", owner, err)
						continue
					}
					if len(l.Items) != 0 {
						fail("client %s: list services: %d of its Services left, want 0 (each loop deletes its own)", owner, len(l.Items))
					}
					t1 := time.Now()
					svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": "concurrent", "owner": owner}},
						Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
					if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
						fail("client %s: create service %s: %v", owner, name, err)
						continue
					}
					t2 := time.Now()
					wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					w, err := svcs.Watch(wctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: l.ResourceVersion})
					if err != nil {
						fail("client %s: watch services: %v", owner, err)
					} else {
						select {
						case ev, ok := <-w.ResultChan():
							if s, isSvc := ev.Object.(*corev1.Service); !ok || ev.Type != kwatch.Added || !isSvc || s.Name != name {
								fail("client %s: watch from the list's resourceVersion: first event %s %T, want ADDED service %s", owner, ev.Type, ev.Object, name)
							}
						case <-wctx.Done():
							fail("client %s: the watch delivered no ADDED event for service %s within 5s", owner, name)
						}
						w.Stop()
					}
					cancel()
					t3 := time.Now()
					if err := svcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
						fail("client %s: delete service %s: %v", owner, name, err)
					}
					t4 := time.Now()
					mine["list"] = append(mine["list"], t1.Sub(t0))
					mine["create"] = append(mine["create"], t2.Sub(t1))
					mine["watch"] = append(mine["watch"], t3.Sub(t2))
					mine["delete"] = append(mine["delete"], t4.Sub(t3))
					iterations.Add(1)
				}
				mu.Lock()
				for op, ds := range mine {
					lat[op] = append(lat[op], ds...)
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	// What a failed delete left behind.
	cs := kubeClientset(b, lab)
	deleteServices(b, cs.CoreV1().Services("default"), metav1.ListOptions{LabelSelector: "bench=concurrent"})
	b.ReportMetric(float64(errCount.Load()), "errors")
	var all []time.Duration
	for _, op := range ops {
		if len(lat[op]) > 0 {
			b.ReportMetric(ms(percentile(lat[op], 0.99)), op+"-p99-ms")
			all = append(all, lat[op]...)
		}
	}
	if len(all) > 0 {
		b.ReportMetric(ms(percentile(all, 0.99)), "op-p99-ms")
	}
	b.ReportMetric(float64(iterations.Load()*int64(len(ops)))/(duration.Seconds()*float64(b.N)), "ops/s")
	if rss := daemonRSS(lab); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "daemon-rss-MiB")
	}
}

// bareStarts starts the image's `sleep 3600` straight through containerd, as BenchmarkPodStart's baseline
// does (NewContainer + NewTask + Start, as `ctr run` does), and removes what it started when the benchmark
// ends, before the lab is reset.
type bareStarts struct {
	ctr  *containerd.Client
	ctx  context.Context
	img  containerd.Image
	made []struct {
		c containerd.Container
		t containerd.Task
	}
}

func newBareStarts(b *testing.B, lab string) *bareStarts {
	ctr, err := containerd.New("/run/pilab/" + lab + "/containerd/containerd.sock")
	if err != nil {
		b.Fatal(err)
	}
	s := &bareStarts{ctr: ctr, ctx: namespaces.WithNamespace(context.Background(), lab)}
	s.img, err = ctr.GetImage(s.ctx, "docker.io/library/busybox:latest")
	if err != nil {
		ctr.Close()
		b.Fatal(err)
	}
	// Cleanups run last-in first-out: this one runs before startLab's reset.
	b.Cleanup(func() {
		for _, x := range s.made {
			x.t.Kill(s.ctx, syscall.SIGKILL)
			if ch, err := x.t.Wait(s.ctx); err == nil {
				<-ch
			}
			x.t.Delete(s.ctx)
			x.c.Delete(s.ctx, containerd.WithSnapshotCleanup)
		}
		ctr.Close()
	})
	return s
}

// start starts one container and returns how long it took.
func (s *bareStarts) start(b *testing.B, id string) time.Duration {
	start := time.Now()
	c, err := s.ctr.NewContainer(s.ctx, id, containerd.WithNewSnapshot(id, s.img), containerd.WithNewSpec(oci.WithImageConfig(s.img), oci.WithProcessArgs("sleep", "3600")))
	if err != nil {
		b.Fatal(err)
	}
	t, err := c.NewTask(s.ctx, cio.NullIO)
	if err != nil {
		c.Delete(s.ctx, containerd.WithSnapshotCleanup)
		b.Fatal(err)
	}
	if err := t.Start(s.ctx); err != nil {
		t.Delete(s.ctx)
		c.Delete(s.ctx, containerd.WithSnapshotCleanup)
		b.Fatal(err)
	}
	d := time.Since(start)
	s.made = append(s.made, struct {
		c containerd.Container
		t containerd.Task
	}{c, t})
	return d
}

// BenchmarkPodStartKube is BenchmarkPodStart through the Kubernetes API: for 30 pods one at a time, a
// client-go create, then a watch (opened before the first create) seeing the pod Running, beside bare
// containerd starting the same image in the same run. Target: ratio-p50 <= 2; the issue measured 1.36x and
// aims for 1.2x.
func BenchmarkPodStartKube(b *testing.B) {
	const pods = 30
	lab := startLab(b)
	mustPi(b, lab, "image", "build", "busybox")
	cs := kubeClientset(b, lab)
	bare := newBareStarts(b, lab)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	podsAPI := cs.CoreV1().Pods("default")
	sel := "bench=pod-start-kube"

	l, err := podsAPI.List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		b.Fatalf("list pods: %v", err)
	}
	w, err := podsAPI.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: l.ResourceVersion})
	if err != nil {
		b.Fatalf("watch pods: %v", err)
	}
	defer w.Stop()
	running := make(chan string, pods)
	go func() {
		seen := map[string]bool{}
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && !seen[p.Name] && podRunning(p) {
				seen[p.Name] = true
				running <- p.Name
			}
		}
		close(running)
	}()

	var piTimes, bareTimes []time.Duration
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := range pods {
			name := fmt.Sprintf("kube-%d-%d", n, i)
			start := time.Now()
			if _, err := podsAPI.Create(ctx, sleepPod(name, map[string]string{"bench": "pod-start-kube"}), metav1.CreateOptions{}); err != nil {
				b.Fatalf("create pod %s: %v", name, err)
			}
			timeout := time.After(60 * time.Second)
		wait:
			for {
				select {
				case got, ok := <-running:
					if !ok {
						b.Fatalf("the watch on pods closed before pod %s ran", name)
					}
					if got == name {
						break wait
					}
				case <-timeout:
					b.Fatalf("pod %s not Running within 60s of its create; see `pi describe pod %s`", name, name)
				}
			}
			piTimes = append(piTimes, time.Since(start))
			bareTimes = append(bareTimes, bare.start(b, "bare-"+name))
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(percentile(piTimes, 0.5)), "pilab-start-p50-ms")
	b.ReportMetric(ms(percentile(piTimes, 0.95)), "pilab-start-p95-ms")
	b.ReportMetric(ms(percentile(bareTimes, 0.5)), "bare-start-p50-ms")
	b.ReportMetric(ms(percentile(bareTimes, 0.95)), "bare-start-p95-ms")
	b.ReportMetric(float64(percentile(piTimes, 0.5))/float64(percentile(bareTimes, 0.5)), "ratio-p50")
}
