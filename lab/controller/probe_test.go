package controller

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/netns/netnstest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// queued reports whether key waits in q, and takes it out.
func queued(q *queue, key string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.dirty[key] {
		return false
	}
	delete(q.dirty, key)
	for i, k := range q.order {
		if k == key {
			q.order = append(q.order[:i], q.order[i+1:]...)
			break
		}
	}
	return true
}

func probePod(started time.Time, running bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", UID: "uid-1"}}
	p.Spec.Containers = []corev1.Container{{Name: "c", ReadinessProbe: &corev1.Probe{
		ProbeHandler:        corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(80)}},
		InitialDelaySeconds: 1, PeriodSeconds: 10, SuccessThreshold: 2, FailureThreshold: 2,
	}}}
	p.Status.PodIP = "10.244.0.5"
	if running {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", ContainerID: "containerd://x",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(started)}}}}
	}
	return p
}

func TestProbeWorkerThresholdsAndRestarts(t *testing.T) {
	h := newWLHarness(t)
	m := h.m
	results := []bool{}
	calls := 0
	w := &probeWorker{m: m, key: probeKey{"uid-1", "c"}, poke: make(chan struct{}, 1), probe: func(ctx context.Context, t *probeTarget) (bool, string) {
		ok := results[calls]
		calls++
		return ok, "refused"
	}}
	pod := probePod(time.Now(), true)
	w.observe(pod, &pod.Spec.Containers[0])
	ctx := context.Background()
	key := objKey("default", "web-1")

	// Within initialDelaySeconds nothing runs.
	if wait := w.step(ctx); calls != 0 || wait <= 0 || wait > time.Second {
		t.Fatalf("during the initial delay: %d probes, wait %v", calls, wait)
	}
	// Past it (pretend the container started earlier).
	pod = probePod(time.Now().Add(-5*time.Second), true)
	w.observe(pod, &pod.Spec.Containers[0])
	step := func(ok bool) {
		results = append(results, ok)
		w.lastRun = time.Time{} // no waiting for periodSeconds in the test
		w.step(ctx)
	}
	step(true)
	if r, k := w.ready, w.known; r || !k {
		t.Fatalf("one success of successThreshold 2: ready %v known %v", r, k)
	}
	if queued(m.pods, key) {
		t.Error("pod queued though readiness did not change")
	}
	step(true)
	if !w.ready || !queued(m.pods, key) {
		t.Fatalf("two successes: ready %v, pod queued %v; want ready and queued", w.ready, queued(m.pods, key))
	}
	step(false)
	if !w.ready {
		t.Fatal("one failure of failureThreshold 2 made it unready")
	}
	step(false)
	if w.ready || !queued(m.pods, key) {
		t.Fatal("two failures: still ready, or pod not queued")
	}
	step(true)
	step(true)
	if !w.ready || !queued(m.pods, key) {
		t.Fatal("not ready again after two successes")
	}
	// A restarted container (new start time) starts unready and unknown.
	pod = probePod(time.Now().Add(-3*time.Second), true)
	w.observe(pod, &pod.Spec.Containers[0])
	step(true)
	if w.ready || !queued(m.pods, key) {
		t.Fatalf("after a restart: ready %v; want unready (1 of 2 successes) and the pod queued", w.ready)
	}
	// A stopped container is unready.
	step(true)
	pod = probePod(time.Time{}, false)
	w.observe(pod, &pod.Spec.Containers[0])
	w.step(ctx)
	if w.ready || w.known || !queued(m.pods, key) {
		t.Fatalf("container not running: ready %v known %v", w.ready, w.known)
	}
}

func TestProberStartsAndStopsWorkers(t *testing.T) {
	h := newWLHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := newProber(h.m)
	p.run = func(ctx context.Context, t *probeTarget) (bool, string) { return true, "" }
	pod := probePod(time.Now().Add(-time.Minute), true)
	pod.Spec.Containers[0].ReadinessProbe.SuccessThreshold = 1
	p.sync(pod, false)
	if w := p.workers[probeKey{"uid-1", "c"}]; w == nil || w.cancel != nil {
		t.Fatal("before the controllers run a worker must be registered but not running")
	}
	if r, k := p.result("uid-1", "c"); r || k {
		t.Fatalf("a container never seen ready: ready %v known %v before any probe", r, k)
	}
	// After a daemon restart: the stored status says ready; that holds until probes say otherwise.
	again := probePod(time.Now().Add(-time.Minute), true)
	again.UID = "uid-2"
	again.Status.ContainerStatuses[0].Ready = true
	p.sync(again, false)
	if r, k := p.result("uid-2", "c"); !r || !k {
		t.Fatalf("a container stored ready must start ready: ready %v known %v", r, k)
	}
	p.run = func(ctx context.Context, t *probeTarget) (bool, string) { return t.podMeta.UID == "uid-1", "down" }
	for _, w := range p.workers {
		w.probe = p.run
	}
	p.start(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, k := p.result("uid-1", "c"); r && k {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not report ready within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// uid-2's probe fails: unready after failureThreshold (2) failures, however it started.
	for {
		if r, _ := p.result("uid-2", "c"); !r {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a failing probe did not make the seeded container unready")
		}
		w := p.workers[probeKey{"uid-2", "c"}]
		w.mu.Lock()
		w.lastRun = time.Time{} // skip periodSeconds
		w.mu.Unlock()
		select {
		case w.poke <- struct{}{}:
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.resync(nil) // the pods are no longer stored
	if _, k := p.result("uid-1", "c"); k || len(p.workers) != 0 {
		t.Error("the worker of a vanished pod is still there")
	}
	p.sync(pod, false)
	now := metav1.Now()
	pod.DeletionTimestamp = &now
	p.sync(pod, false)
	if len(p.workers) != 0 {
		t.Error("a terminating pod keeps its prober")
	}
	p.stopAll()
}

func TestProbePort(t *testing.T) {
	c := &corev1.Container{Name: "web", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9898}}}
	for _, tc := range []struct {
		port intstr.IntOrString
		want int
		err  string
	}{
		{intstr.FromInt(80), 80, ""},
		{intstr.FromString("http"), 9898, ""},
		{intstr.FromString("8080"), 8080, ""},
		{intstr.FromString("metrics"), 0, `port "metrics" is not a port name of container "web"`},
		{intstr.FromInt(0), 0, "invalid port"},
	} {
		got, err := probePort(tc.port, c)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("probePort(%v) = %d, %v; want %d, %q", tc.port.String(), got, err, tc.want, tc.err)
		}
	}
}

// TestProbesDialInsideThePodNetns runs servers inside a throwaway netns and probes them from inside it.
func TestProbesDialInsideThePodNetns(t *testing.T) {
	netnstest.RequireRoot(t, "creates a network namespace")
	name := netnstest.Lab() + "-probe"
	path, err := netns.EnsureNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	var ln net.Listener
	if err := netns.Do(path, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("User-Agent") != "kube-probe/1.26" || r.Header.Get("X-Probe") != "yes" || r.Host != "example.test" {
			w.WriteHeader(400)
			return
		}
		w.WriteHeader(200)
	})
	mux.HandleFunc("/bad", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "not ready yet", 503) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/bad", http.StatusFound) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { time.Sleep(2 * time.Second) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	c := &corev1.Container{Name: "web", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}}}

	// The listener exists only inside the namespace: the same address from the host's side is not it.
	if conn, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		conn.Close()
		t.Logf("note: something on the host also listens on %s", ln.Addr())
	}

	ctx := context.Background()
	hdrs := []corev1.HTTPHeader{{Name: "X-Probe", Value: "yes"}, {Name: "Host", Value: "example.test"}}
	if ok, msg := probeHTTP(ctx, path, "127.0.0.1", c, &corev1.HTTPGetAction{Path: "/ok", Port: intstr.FromString("http"), HTTPHeaders: hdrs}); !ok {
		t.Errorf("httpGet /ok (named port, headers): failed: %s", msg)
	}
	ok, msg := probeHTTP(ctx, path, "127.0.0.1", c, &corev1.HTTPGetAction{Path: "/bad", Port: intstr.FromInt(port)})
	if ok || !strings.Contains(msg, "statuscode: 503") {
		t.Errorf("httpGet /bad: ok %v msg %q", ok, msg)
	}
	if ok, _ := probeHTTP(ctx, path, "127.0.0.1", c, &corev1.HTTPGetAction{Path: "moved", Port: intstr.FromInt(port)}); ok {
		t.Error("a same-host redirect to a 503 must be followed and fail")
	}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if ok, msg := probeHTTP(tctx, path, "127.0.0.1", c, &corev1.HTTPGetAction{Path: "/slow", Port: intstr.FromInt(port)}); ok || msg == "" {
		t.Errorf("a probe past its timeout must fail: %v %q", ok, msg)
	}
	if ok, msg := probeTCP(ctx, path, "127.0.0.1", c, &corev1.TCPSocketAction{Port: intstr.FromInt(port)}); !ok {
		t.Errorf("tcpSocket on the listener: %s", msg)
	}
	// A port nobody listens on inside the namespace.
	free := port + 1
	if free > 65535 {
		free = port - 1
	}
	if ok, msg := probeTCP(ctx, path, "127.0.0.1", c, &corev1.TCPSocketAction{Port: intstr.FromInt(free)}); ok || !strings.Contains(msg, "refused") {
		t.Errorf("tcpSocket on a closed port: ok %v %q", ok, msg)
	}
	if ok, _ := probeTCP(ctx, "/nonexistent/netns", "127.0.0.1", c, &corev1.TCPSocketAction{Port: intstr.FromInt(port)}); ok {
		t.Error("a probe into a missing netns must fail")
	}
}
