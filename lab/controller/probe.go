package controller

// Readiness probes, as the kubelet's prober workers run them: one goroutine per container that declares a
// readinessProbe, probing every periodSeconds once initialDelaySeconds have passed since the container
// started; successThreshold successes in a row make it ready, failureThreshold failures in a row unready.
// A container starts unready, and a restarted container starts over. When readiness flips, the pod is queued
// so that the pod controller rewrites its Ready condition (it asks probeReady).

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/runtime/pods"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeReady reports a container's readiness from its readinessProbe; known is false when it has none
// or none has run yet.
func (m *Manager) probeReady(podUID, container string) (ready, known bool) {
	w, ok := workloadState.Load(m)
	if !ok {
		return false, false
	}
	return w.(*workloads).probes.result(podUID, container)
}

type probeKey struct{ uid, container string }

type prober struct {
	m       *Manager
	mu      sync.Mutex
	ctx     context.Context // nil until the controllers run
	workers map[probeKey]*probeWorker
	wg      sync.WaitGroup
	// run runs one probe (m.runProbe; tests replace it).
	run func(ctx context.Context, t *probeTarget) (ok bool, msg string)
}

func newProber(m *Manager) *prober {
	return &prober{m: m, workers: map[probeKey]*probeWorker{}, run: m.runProbe}
}

// start runs the workers registered so far and every later one.
func (p *prober) start(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ctx = ctx
	for _, w := range p.workers {
		p.launch(w)
	}
}

// launch starts a worker's goroutine once the controllers run (p.mu held).
func (p *prober) launch(w *probeWorker) {
	if p.ctx == nil || w.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	w.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		w.run(ctx)
	}()
}

func (w *probeWorker) stop() {
	if w.cancel != nil {
		w.cancel()
	}
}

func (p *prober) stopAll() {
	p.mu.Lock()
	for k, w := range p.workers {
		w.stop()
		delete(p.workers, k)
	}
	p.ctx = nil
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *prober) result(uid, container string) (bool, bool) {
	p.mu.Lock()
	w := p.workers[probeKey{uid, container}]
	p.mu.Unlock()
	if w == nil {
		return false, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ready, w.known
}

// sync starts, updates or stops the probers of one pod from its latest stored state.
func (p *prober) sync(pod *corev1.Pod, gone bool) {
	stop := gone || pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		key := probeKey{string(pod.UID), c.Name}
		w := p.workers[key]
		if stop || c.ReadinessProbe == nil || (p.ctx != nil && p.ctx.Err() != nil) {
			if w != nil {
				w.stop()
				delete(p.workers, key)
			}
			continue
		}
		// Workers are registered (and answer probeReady) even before the controllers run, so that the pod
		// controller's first syncs after a daemon restart see the readiness that was stored, not "unknown".
		if w == nil {
			w = &probeWorker{m: p.m, probe: p.run, key: key, poke: make(chan struct{}, 1)}
			p.workers[key] = w
		}
		w.observe(pod, c)
		p.launch(w)
	}
}

// resync syncs every stored pod and stops the probers of pods no longer stored.
func (p *prober) resync(objs []metav1.Object) {
	live := map[string]bool{}
	for _, o := range objs {
		pod := o.(*corev1.Pod)
		live[string(pod.UID)] = true
		p.sync(pod, false)
	}
	p.mu.Lock()
	for k, w := range p.workers {
		if !live[k.uid] {
			w.stop()
			delete(p.workers, k)
		}
	}
	p.mu.Unlock()
}

// probeTarget is what a worker last saw of its container.
type probeTarget struct {
	account, pod string
	podMeta      metav1.ObjectMeta
	podIP        string
	container    *corev1.Container
	probe        *corev1.Probe
	running      bool
	// instance names one run of the container: its ID stays across restarts, its start time does not.
	instance  string
	startedAt time.Time
}

type probeWorker struct {
	m      *Manager
	probe  func(ctx context.Context, t *probeTarget) (bool, string)
	key    probeKey
	cancel context.CancelFunc
	poke   chan struct{}

	mu       sync.Mutex
	target   probeTarget
	observed bool
	// Results, for target instance `instance` (worker goroutine writes, probeReady reads).
	instance            string
	ready, known        bool
	successes, failures int32
	lastRun             time.Time
}

func (w *probeWorker) observe(pod *corev1.Pod, c *corev1.Container) {
	t := probeTarget{
		account: api.AccountOf(pod), pod: pod.Name, podIP: pod.Status.PodIP,
		podMeta:   metav1.ObjectMeta{Name: pod.Name, UID: pod.UID, Annotations: map[string]string{api.AccountAnnotation: api.AccountOf(pod)}},
		container: c.DeepCopy(), probe: c.ReadinessProbe.DeepCopy(),
	}
	storedReady := false
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == c.Name && cs.State.Running != nil && cs.ContainerID != "" {
			t.running = true
			t.startedAt = cs.State.Running.StartedAt.Time
			t.instance = cs.ContainerID + "@" + t.startedAt.UTC().Format(time.RFC3339)
			storedReady = cs.Ready
		}
	}
	w.mu.Lock()
	w.target = t
	if !w.observed && storedReady {
		// A new worker for a container that was ready when the daemon stopped: keep it ready until the
		// probe says otherwise (failureThreshold failures), rather than flapping every Service endpoint.
		w.instance, w.ready, w.known, w.successes = t.instance, true, true, max(t.probe.SuccessThreshold, 1)
	}
	w.observed = true
	w.mu.Unlock()
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

func (w *probeWorker) run(ctx context.Context) {
	for {
		wait := w.step(ctx)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-w.poke:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// step probes if one is due and returns how long to sleep (a poke wakes the worker earlier).
func (w *probeWorker) step(ctx context.Context) time.Duration {
	w.mu.Lock()
	t := w.target
	if !t.running || t.podIP == "" {
		// Not running: not ready, and the next run of the container starts over.
		flip := w.ready
		w.instance, w.ready, w.known, w.successes, w.failures, w.lastRun = "", false, false, 0, 0, time.Time{}
		w.mu.Unlock()
		if flip {
			w.m.pods.Add(objKey(t.account, t.pod))
		}
		return time.Hour
	}
	flip := false
	if t.instance != w.instance {
		flip = w.ready
		w.instance, w.ready, w.known, w.successes, w.failures, w.lastRun = t.instance, false, false, 0, 0, time.Time{}
	}
	period := time.Duration(max(t.probe.PeriodSeconds, 1)) * time.Second
	due := t.startedAt.Add(time.Duration(t.probe.InitialDelaySeconds) * time.Second)
	if !w.lastRun.IsZero() && w.lastRun.Add(period).After(due) {
		due = w.lastRun.Add(period)
	}
	now := time.Now()
	w.mu.Unlock()
	if flip {
		w.m.pods.Add(objKey(t.account, t.pod))
	}
	if now.Before(due) {
		return due.Sub(now)
	}

	ok, msg := w.probe(ctx, &t)
	if ctx.Err() != nil {
		return time.Hour
	}

	w.mu.Lock()
	if w.instance != t.instance {
		// The container restarted while we probed; this result is about the old one.
		w.mu.Unlock()
		return 0
	}
	w.lastRun = now
	w.known = true
	was := w.ready
	if ok {
		w.successes, w.failures = w.successes+1, 0
		if w.successes >= max(t.probe.SuccessThreshold, 1) {
			w.ready = true
		}
	} else {
		w.successes, w.failures = 0, w.failures+1
		if w.failures >= max(t.probe.FailureThreshold, 1) {
			w.ready = false
		}
	}
	flip = was != w.ready
	w.mu.Unlock()
	if flip {
		w.m.pods.Add(objKey(t.account, t.pod))
	}
	if !ok {
		w.m.event(&corev1.Pod{ObjectMeta: t.podMeta}, "Pod", corev1.EventTypeWarning, "Unhealthy", "Readiness probe failed: "+msg)
	}
	return period
}

// runProbe runs one probe; msg says why it failed.
func (m *Manager) runProbe(ctx context.Context, t *probeTarget) (ok bool, msg string) {
	timeout := time.Duration(max(t.probe.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	nsPath := netns.Path(PodNetnsName(m.Lab, t.podMeta.UID))
	switch h := t.probe.ProbeHandler; {
	case h.HTTPGet != nil:
		return probeHTTP(ctx, nsPath, t.podIP, t.container, h.HTTPGet)
	case h.TCPSocket != nil:
		return probeTCP(ctx, nsPath, t.podIP, t.container, h.TCPSocket)
	case h.Exec != nil:
		return m.probeExec(ctx, string(t.podMeta.UID), t.container.Name, h.Exec)
	}
	return false, "the probe has no handler (httpGet, tcpSocket or exec)"
}

// probePort resolves a probe's port: a number, or the name of one of the container's ports.
func probePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	n := 0
	if p.Type == intstr.Int {
		n = p.IntValue()
	} else {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				n = int(cp.ContainerPort)
			}
		}
		if n == 0 {
			if v, err := strconv.Atoi(p.StrVal); err == nil {
				n = v
			} else {
				return 0, fmt.Errorf("port %q is not a port name of container %q; name it under ports or use a number", p.StrVal, c.Name)
			}
		}
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid port number %d", n)
	}
	return n, nil
}

func probeTCP(ctx context.Context, nsPath, podIP string, c *corev1.Container, a *corev1.TCPSocketAction) (bool, string) {
	host, port, err := probeAddr(a.Host, a.Port, podIP, c)
	if err != nil {
		return false, err.Error()
	}
	conn, err := netns.DialContext(nsPath)(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false, err.Error()
	}
	conn.Close()
	return true, ""
}

// probeAddr is where a tcpSocket or httpGet probe connects: its host (the pod IP unless set) and its
// port (a number or a container port's name).
func probeAddr(host string, p intstr.IntOrString, podIP string, c *corev1.Container) (string, int, error) {
	port, err := probePort(p, c)
	if host == "" {
		host = podIP
	}
	return host, port, err
}

const probeBodyLimit = 10 << 10

func probeHTTP(ctx context.Context, nsPath, podIP string, c *corev1.Container, a *corev1.HTTPGetAction) (bool, string) {
	host, port, err := probeAddr(a.Host, a.Port, podIP, c)
	if err != nil {
		return false, err.Error()
	}
	scheme := strings.ToLower(string(a.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := a.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u, err := url.Parse(fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), path))
	if err != nil {
		return false, fmt.Sprintf("bad probe URL: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", "kube-probe/1.26")
	req.Header.Set("Accept", "*/*")
	for _, h := range a.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	tr := &http.Transport{
		DialContext:       netns.DialContext(nsPath),
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as the kubelet: probes check liveness, not identity
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		// The kubelet follows redirects to the same host only; another host's 3xx counts as success.
		if r.URL.Hostname() != u.Hostname() || len(via) >= 10 {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, probeBodyLimit))
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return true, ""
	}
	msg := fmt.Sprintf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	if b := strings.TrimSpace(string(body)); b != "" {
		msg += ": " + truncate(b, 200)
	}
	return false, msg
}

// limitedBuffer keeps the first bytes of a probe command's output.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := probeBodyLimit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (m *Manager) probeExec(ctx context.Context, podUID, container string, a *corev1.ExecAction) (bool, string) {
	var out limitedBuffer
	code, err := m.Runtime.Exec(ctx, podUID, container, pods.ExecOptions{Cmd: a.Command, Stdout: &out, Stderr: &out})
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return false, fmt.Sprintf("command %q timed out", strings.Join(a.Command, " "))
		}
		return false, err.Error()
	}
	if code != 0 {
		msg := fmt.Sprintf("command %q exited with %d", strings.Join(a.Command, " "), code)
		if o := strings.TrimSpace(out.buf.String()); o != "" {
			msg += ": " + truncate(o, 200)
		}
		return false, msg
	}
	return true, ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
