package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	kwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

// The workshop server's benchmarks (issue 11): what authentication on the HTTPS listener costs a request
// beside the unix socket, and a class of 30 learners working at once, each with its own token.

// learnerConfig is the rest.Config of a kubeconfig `pi workshop create` or `pi kubeconfig` wrote, without
// client-go's client-side rate limit (5 requests/s, which would otherwise be what is measured).
func learnerConfig(b *testing.B, kubeconfig []byte) *rest.Config {
	b.Helper()
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		b.Fatalf("the kubeconfig pi wrote does not load: %v\n%s", err, kubeconfig)
	}
	cfg.QPS = -1
	return cfg
}

// BenchmarkAuthCost times one small GET (a learner's pod, ~1.5 KiB of JSON) through the three doors of
// the same daemon in the same run, interleaved: the unix socket (bare-*: no TLS, no credentials), the
// HTTPS listener with the admin's client certificate (cert-*: a certificate chain verified per request),
// and the HTTPS listener with the learner's bearer token (pilab-*: a token hashed and looked up per
// request). Each door is timed twice: over one kept-alive HTTP/1.1 connection (keepalive-*: TLS's
// per-record cost and the credential check), and with a new connection for every request (newconn-*:
// TCP connect, the TLS 1.3 handshake and the check, what a `kubectl` invocation pays once). The
// listener is the default one on 127.0.0.1 in the daemon's namespace; the unix socket and the admin
// certificate both act as the learner (Impersonate-User), so all three read the same object.
func BenchmarkAuthCost(b *testing.B) {
	const runs = 500
	lab := startLab(b)
	mustPi(b, lab, "image", "build", "busybox")
	dir := b.TempDir()
	mustPi(b, lab, "workshop", "create", "--learners", "1", "--out", dir)
	data, err := os.ReadFile(filepath.Join(dir, "learner01.kubeconfig"))
	if err != nil {
		b.Fatal(err)
	}
	learner := learnerConfig(b, data)
	admin := learnerConfig(b, []byte(mustPi(b, lab, "kubeconfig")))
	if learner.BearerToken == "" || len(admin.CertData) == 0 {
		b.Fatalf("the learner's kubeconfig holds no token (%t) or the admin's no certificate (%t)", learner.BearerToken == "", len(admin.CertData) == 0)
	}
	cs, err := kubernetes.NewForConfig(learner)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods("default").Create(ctx, sleepPod("box", nil), metav1.CreateOptions{}); err != nil {
		b.Fatalf("learner01 creates pod box over HTTPS: %v", err)
	}

	socket := filepath.Join("/run/pilab", lab, "pi.sock")
	unixDial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}
	tlsFor := func(cfg *rest.Config) *tls.Config {
		t, err := rest.TLSConfigFor(cfg)
		if err != nil {
			b.Fatalf("TLS config of %s: %v", cfg.Host, err)
		}
		return t
	}
	const path = "/api/v1/namespaces/default/pods/box"
	type door struct {
		name   string
		base   string
		header http.Header
		tls    *tls.Config
		dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	}
	doors := []door{
		{"bare", "http://pi", http.Header{"Impersonate-User": {"learner01"}}, nil, unixDial},
		{"cert", admin.Host, http.Header{"Impersonate-User": {"learner01"}}, tlsFor(admin), nil},
		{"pilab", learner.Host, http.Header{"Authorization": {"Bearer " + learner.BearerToken}}, tlsFor(learner), nil},
	}
	type timing struct{ keep, fresh []time.Duration }
	times := make([]timing, len(doors))
	keepClients := make([]*http.Client, len(doors))
	freshClients := make([]*http.Client, len(doors))
	for i, d := range doors {
		// HTTP/1.1 on every door (no ForceAttemptHTTP2), so that the doors differ by TLS and the
		// credential alone.
		keepClients[i] = &http.Client{Transport: &http.Transport{DialContext: d.dial, TLSClientConfig: d.tls, MaxIdleConnsPerHost: 1}}
		freshClients[i] = &http.Client{Transport: &http.Transport{DialContext: d.dial, TLSClientConfig: d.tls, DisableKeepAlives: true}}
		b.Cleanup(keepClients[i].CloseIdleConnections)
	}
	get := func(c *http.Client, d door) time.Duration {
		req, err := http.NewRequest(http.MethodGet, d.base+path, nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header = d.header.Clone()
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			b.Fatalf("%s door: GET %s: %v", d.name, path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"name":"box"`)) {
			b.Fatalf("%s door: GET %s: %s %v\n%.500s", d.name, path, resp.Status, err, body)
		}
		return took
	}
	// Warm up: the first request of each client pays for its connection and the daemon's caches.
	for i, d := range doors {
		get(keepClients[i], d)
		get(freshClients[i], d)
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for range runs {
			for i, d := range doors {
				times[i].keep = append(times[i].keep, get(keepClients[i], d))
				times[i].fresh = append(times[i].fresh, get(freshClients[i], d))
			}
		}
	}
	b.StopTimer()
	for i, d := range doors {
		b.ReportMetric(ms(percentile(times[i].keep, 0.5)), d.name+"-keepalive-p50-ms")
		b.ReportMetric(ms(percentile(times[i].keep, 0.99)), d.name+"-keepalive-p99-ms")
		b.ReportMetric(ms(percentile(times[i].fresh, 0.5)), d.name+"-newconn-p50-ms")
		b.ReportMetric(ms(percentile(times[i].fresh, 0.99)), d.name+"-newconn-p99-ms")
	}
}

// workshopBenchAddr is the lab server's address on its host side in BenchmarkWorkshop: what learners dial.
const workshopBenchAddr = "192.0.2.20"

// startWorkshopLab brings a lab up as TestWorkshop does: its host side a namespace made here, the listener
// on an address of that namespace's lo. It returns the lab and the namespace's path; when the benchmark
// ends the lab is reset and the namespace removed.
func startWorkshopLab(b *testing.B, addr string) (string, string) {
	b.Helper()
	requirePrivileged(b)
	lab := netnstest.Lab()
	hostNS := "inet-" + lab
	path, err := netns.EnsureNamed(hostNS)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if out, err := piCmd(lab, "reset", "--host-netns", hostNS).CombinedOutput(); err != nil {
			b.Errorf("pi reset: %v\n%s", err, out)
		}
		netns.DeleteNamed(hostNS)
	})
	h, err := netns.NewHandle(path)
	if err != nil {
		b.Fatal(err)
	}
	lo, err := h.LinkByName("lo")
	if err == nil {
		a, _ := netlink.ParseAddr(addr + "/32")
		err = h.AddrAdd(lo, a)
	}
	h.Close()
	if err != nil {
		b.Fatalf("add %s to lo in %s: %v", addr, hostNS, err)
	}
	mustPi(b, lab, "up", "--host-netns", hostNS, "--listen", addr+":6443")
	return lab, path
}

// execIn runs cmd in a pod through client-go's SPDY executor, its connection dialled by cfg.Dial (client-go's
// stock SPDY round tripper takes no dial function: it is given one as an upgrade transport).
func execIn(ctx context.Context, cfg *rest.Config, cs *kubernetes.Clientset, pod string, cmd ...string) (string, error) {
	u := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec).URL()
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return "", err
	}
	up, err := spdy.NewRoundTripperWithConfig(spdy.RoundTripperConfig{
		UpgradeTransport: &http.Transport{DialContext: cfg.Dial, TLSClientConfig: tlsCfg}, PingPeriod: 5 * time.Second})
	if err != nil {
		return "", err
	}
	wrapper, err := rest.HTTPWrappersForConfig(cfg, up)
	if err != nil {
		return "", err
	}
	ex, err := remotecommand.NewSPDYExecutorForTransports(wrapper, up, http.MethodPost, u)
	if err != nil {
		return "", err
	}
	var out, errOut bytes.Buffer
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut}); err != nil {
		return out.String(), fmt.Errorf("%w (stderr %q)", err, errOut.String())
	}
	return out.String(), nil
}

// BenchmarkWorkshop is a class on one lab: `pi workshop create --learners 30`, then 30 client-go clients
// at once, each with its own learner's token over HTTPS from the lab's host side (a namespace made here;
// the clients dial into it), each creating 10 busybox `sleep` pods one after another. It reports pod
// create → Running p50/p95 over the 300 pods (create call's start to the Running event on the learner's
// own watch, opened before), the wall time to all 300 Running, and the daemon's RSS holding them. Then the
// 30 learners each loop for 60 s over their pods: get, exec `hostname` (SPDY, a new TLS connection each,
// as every `kubectl exec` makes) and logs; it reports each verb's p50/p99, beside each verb's p50 for one
// learner alone just before, over HTTPS and over the unix socket (pilab-/bare-*-alone-p50-ms, the floors in
// the same run), and every failed or wrong answer
// as errors (target 0). Get and logs reuse each learner's kept-alive connection. The lab is reset
// afterwards.
func BenchmarkWorkshop(b *testing.B) {
	const learners, podsEach = 30, 10
	const duration = 60 * time.Second
	lab, nsPath := startWorkshopLab(b, workshopBenchAddr)
	mustPi(b, lab, "image", "build", "busybox")
	dir := b.TempDir()
	made := time.Now()
	mustPi(b, lab, "workshop", "create", "--learners", fmt.Sprint(learners), "--out", dir)
	b.Logf("pi workshop create --learners %d: %s", learners, time.Since(made).Round(time.Millisecond))

	dial := netns.DialContext(nsPath)
	type learnerClient struct {
		name string
		cfg  *rest.Config
		cs   *kubernetes.Clientset
	}
	var ls []learnerClient
	for _, name := range workshopNames("learner", learners) {
		data, err := os.ReadFile(filepath.Join(dir, name+".kubeconfig"))
		if err != nil {
			b.Fatal(err)
		}
		cfg := learnerConfig(b, data)
		if cfg.Host != "https://"+workshopBenchAddr+":6443" || cfg.BearerToken == "" {
			b.Fatalf("%s's kubeconfig: server %s, token set %t; want https://%s:6443 and a token", name, cfg.Host, cfg.BearerToken != "", workshopBenchAddr)
		}
		// Each learner its own transport (a Dial of its own keeps client-go from sharing one).
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) { return dial(ctx, network, addr) }
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ls = append(ls, learnerClient{name, cfg, cs})
	}
	// learner01 through the unix socket: the admin acting as the account, as `pi --account` does.
	unixCfg := &rest.Config{Host: "http://pi", QPS: -1, Impersonate: rest.ImpersonationConfig{UserName: ls[0].name},
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join("/run/pilab", lab, "pi.sock"))
		}}
	unixCS, err := kubernetes.NewForConfig(unixCfg)
	if err != nil {
		b.Fatal(err)
	}
	bare := learnerClient{ls[0].name + " (unix socket)", unixCfg, unixCS}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errCount atomic.Int64
	fail := func(format string, args ...any) {
		if errCount.Add(1) <= 10 {
			b.Logf(format, args...)
		}
	}

	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		// Phase 1: 30 learners create their pods at once.
		var mu sync.Mutex
		var startT []time.Duration
		start := make(chan struct{})
		var ready, wg sync.WaitGroup
		t0 := time.Now()
		for _, l := range ls {
			ready.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				pods := l.cs.CoreV1().Pods("default")
				sel := fmt.Sprintf("bench=workshop-%d", n)
				list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sel})
				var w kwatch.Interface
				if err == nil {
					w, err = pods.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
				}
				ready.Done()
				if err != nil {
					fail("%s: list and watch its pods: %v", l.name, err)
					return
				}
				defer w.Stop()
				<-start
				created := map[string]time.Time{}
				for i := range podsEach {
					name := fmt.Sprintf("w%d-%02d", n, i)
					created[name] = time.Now()
					if _, err := pods.Create(ctx, sleepPod(name, map[string]string{"bench": fmt.Sprintf("workshop-%d", n)}), metav1.CreateOptions{}); err != nil {
						fail("%s: create pod %s: %v", l.name, name, err)
						delete(created, name)
					}
				}
				var mine []time.Duration
				timeout := time.After(15 * time.Minute)
				for len(created) > 0 {
					select {
					case ev, ok := <-w.ResultChan():
						if !ok {
							fail("%s: its watch on pods closed with %d pods not yet Running", l.name, len(created))
							return
						}
						if p, isPod := ev.Object.(*corev1.Pod); isPod && podRunning(p) {
							if at, waiting := created[p.Name]; waiting {
								mine = append(mine, time.Since(at))
								delete(created, p.Name)
							}
						}
					case <-timeout:
						fail("%s: %d pods not Running 15 minutes after their creates; see `pi describe pods --account %s`", l.name, len(created), l.name)
						return
					}
				}
				mu.Lock()
				startT = append(startT, mine...)
				mu.Unlock()
			}()
		}
		ready.Wait()
		close(start)
		wg.Wait()
		all := time.Since(t0)
		if len(startT) != learners*podsEach {
			b.Fatalf("%d of %d pods Running (%d errors, above)", len(startT), learners*podsEach, errCount.Load())
		}
		b.StopTimer()
		b.Logf("%d pods of %d learners created and Running in %s", len(startT), learners, all.Round(time.Millisecond))
		b.ReportMetric(ms(percentile(startT, 0.5)), "start-p50-ms")
		b.ReportMetric(ms(percentile(startT, 0.95)), "start-p95-ms")
		b.ReportMetric(all.Seconds(), "all-running-s")
		if rss := daemonRSS(lab); rss > 0 {
			b.ReportMetric(float64(rss)/(1<<20), "daemon-rss-MiB")
		}
		b.StartTimer()

		// Phase 2: the class at work for 60 s, every learner over its own pods. round is one learner's
		// get, exec and logs of one pod, each timed; ok is false if one failed or answered wrong.
		verbs := []string{"get", "exec", "logs"}
		round := func(l learnerClient, name string) (times []time.Duration, ok bool) {
			pods := l.cs.CoreV1().Pods("default")
			t0 := time.Now()
			if p, err := pods.Get(ctx, name, metav1.GetOptions{}); err != nil || !podRunning(p) {
				fail("%s: get pod %s: %v (want it Running)", l.name, name, err)
				return nil, false
			}
			t1 := time.Now()
			if out, err := execIn(ctx, l.cfg, l.cs, name, "hostname"); err != nil || strings.TrimSpace(out) != name {
				fail("%s: exec %s hostname: %q, %v; want %q", l.name, name, out, err, name)
				return nil, false
			}
			t2 := time.Now()
			if _, err := pods.GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx); err != nil {
				fail("%s: logs %s: %v", l.name, name, err)
				return nil, false
			}
			return []time.Duration{t1.Sub(t0), t2.Sub(t1), time.Since(t2)}, true
		}
		// The floors in the same run, with the 300 pods running, before the class starts: learner01 alone
		// over HTTPS (pilab-*-alone), and the same calls for learner01 over the unix socket (bare-*-alone),
		// interleaved.
		b.StopTimer()
		alone := map[string][][]time.Duration{"pilab": make([][]time.Duration, len(verbs)), "bare": make([][]time.Duration, len(verbs))}
		for i := range 20 {
			for door, l := range map[string]learnerClient{"pilab": ls[0], "bare": bare} {
				if ts, ok := round(l, fmt.Sprintf("w%d-%02d", n, i%podsEach)); ok {
					for v := range verbs {
						alone[door][v] = append(alone[door][v], ts[v])
					}
				}
			}
		}
		for door, ds := range alone {
			for v, verb := range verbs {
				if len(ds[v]) > 0 {
					b.ReportMetric(ms(percentile(ds[v], 0.5)), door+"-"+verb+"-alone-p50-ms")
				}
			}
		}
		b.StartTimer()
		lat := map[string][]time.Duration{}
		var rounds atomic.Int64
		end := time.Now().Add(duration)
		for _, l := range ls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := make([][]time.Duration, len(verbs))
				for i := 0; time.Now().Before(end); i++ {
					if ts, ok := round(l, fmt.Sprintf("w%d-%02d", n, i%podsEach)); ok {
						for v := range verbs {
							mine[v] = append(mine[v], ts[v])
						}
						rounds.Add(1)
					}
				}
				mu.Lock()
				for v, ds := range mine {
					lat[verbs[v]] = append(lat[verbs[v]], ds...)
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		b.StopTimer()
		for _, v := range verbs {
			if len(lat[v]) > 0 {
				b.ReportMetric(ms(percentile(lat[v], 0.5)), v+"-p50-ms")
				b.ReportMetric(ms(percentile(lat[v], 0.99)), v+"-p99-ms")
			}
		}
		b.ReportMetric(float64(rounds.Load())/duration.Seconds(), "rounds/s")
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(errCount.Load()), "errors")
	if rss := daemonRSS(lab); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "daemon-rss-end-MiB")
	}
}
