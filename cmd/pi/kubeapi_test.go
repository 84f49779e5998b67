package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// forwardTCP serves 127.0.0.1:random by copying each connection to the unix socket: kubectl cannot dial a
// unix socket, and the daemon has no TCP listener (per-account TLS is for later).
func forwardTCP(t testing.TB, socket string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("unix", socket)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.(*net.UnixConn).CloseWrite() }()
				io.Copy(c, u)
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

// TestKubeAPI drives the lab's Kubernetes API with client-go over the unix socket (list, get, an informer
// seeing an add and a delete, discovery) and with the real kubectl through a loopback forwarder
// (get pods -o wide, get all, api-resources, get fips, --as=alice), and times `kubectl get pods` with 20
// pods against `kubectl get --raw /version`.
func TestKubeAPI(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		requirePrivileged(t)
		t.Fatal("kubectl is not installed (.ci/run installs it)")
	}
	lab := startLab(t)
	socket := filepath.Join("/run/pilab", lab, "pi.sock")
	mustPi(t, lab, "image", "build", "busybox")
	c := piCmd(lab, "create", "-f", "-")
	c.Stdin = strings.NewReader(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
        command: [sleep, "3600"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
`)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	for i := range 18 {
		mustPi(t, lab, "run", fmt.Sprintf("p%02d", i), "--image=busybox", "--", "sleep", "3600")
	}
	mustPi(t, lab, "account", "create", "alice")
	mustPi(t, lab, "wait", "--for=condition=Ready", "account/alice", "--timeout=60s")
	mustPi(t, lab, "--account", "alice", "run", "a1", "--image=busybox", "--", "sleep", "3600")
	fip := strings.Fields(mustPi(t, lab, "create", "fip"))
	t.Logf("fip: %v", fip)

	// client-go over the unix socket.
	cfg := &rest.Config{Host: "http://pi", Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var pods *corev1.PodList
	deadline := time.Now().Add(30 * time.Second)
	for {
		pods, err = cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(pods.Items) != 20 {
		t.Fatalf("client-go lists %d pods in default, want 20 (2 of deployment web, p00..p17)", len(pods.Items))
	}
	if p, err := cs.CoreV1().Pods("default").Get(ctx, "p00", metav1.GetOptions{}); err != nil || p.Spec.Containers[0].Image == "" {
		t.Fatalf("get p00: %v", err)
	}

	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"))
	inf := f.Core().V1().Pods().Informer()
	added, deleted := make(chan string, 100), make(chan string, 100)
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { added <- o.(*corev1.Pod).Name },
		DeleteFunc: func(o any) { deleted <- o.(*corev1.Pod).Name },
	})
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("the pod informer did not sync")
	}
	if n := len(inf.GetStore().List()); n != 20 {
		t.Fatalf("the informer synced %d pods, want 20", n)
	}
	waitFor := func(ch chan string, name string) {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case got := <-ch:
				if got == name {
					return
				}
			case <-timeout:
				t.Fatalf("the informer saw no event for %s", name)
			}
		}
	}
	mustPi(t, lab, "run", "late", "--image=busybox", "--", "sleep", "3600")
	waitFor(added, "late")
	mustPi(t, lab, "delete", "pod", "late")
	waitFor(deleted, "late")

	_, lists, err := cs.Discovery().ServerGroupsAndResources()
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for _, l := range lists {
		for _, r := range l.APIResources {
			served = append(served, l.GroupVersion+" "+r.Name)
		}
	}
	sort.Strings(served)
	for _, want := range []string{"v1 pods", "v1 services", "v1 endpoints", "v1 events", "v1 namespaces", "apps/v1 deployments", "apps/v1 replicasets", "pilab.dev/v1 floatingips", "pilab.dev/v1 accounts"} {
		if !slices.Contains(served, want) {
			t.Errorf("discovery lacks %q: %v", want, served)
		}
	}

	// The real kubectl, through the forwarder.
	server := forwardTCP(t, socket)
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "config"), nil, 0o600)
	kc := func(args ...string) *exec.Cmd {
		cmd := exec.Command(kubectl, append([]string{"--server", server}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home, "KUBECONFIG="+filepath.Join(home, "config"))
		return cmd
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := kc(args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	header := func(out string) string {
		return regexp.MustCompile(` {2,}`).ReplaceAllString(strings.SplitN(out, "\n", 2)[0], "|")
	}

	out := must("get", "pods", "-o", "wide")
	if h := header(out); h != "NAME|READY|STATUS|RESTARTS|AGE|IP|NODE|NOMINATED NODE|READINESS GATES" {
		t.Errorf("get pods -o wide header %q\n%s", h, out)
	}
	if n := strings.Count(out, "\n"); n != 21 || !strings.Contains(out, "p17 ") {
		t.Errorf("get pods -o wide: %d lines\n%s", n, out)
	}
	out = must("get", "all")
	for _, want := range []string{`pod/p00 `, `service/web `, `deployment.apps/web `, `replicaset.apps/web-`,
		`NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\n`, `NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE\n`,
		`NAME\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+AGE\n`, `NAME\s+DESIRED\s+CURRENT\s+READY\s+AGE\n`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("get all lacks %q:\n%s", want, out)
		}
	}
	out = must("api-resources")
	for _, want := range []string{`floatingips\s+fip,fips\s+pilab.dev/v1\s+true\s+FloatingIP`, `accounts\s+acct\s+pilab.dev/v1\s+false\s+Account`,
		`pods\s+po\s+v1\s+true\s+Pod`, `deployments\s+deploy\s+apps/v1\s+true\s+Deployment`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("api-resources lacks %s:\n%s", want, out)
		}
	}
	out = must("get", "fips")
	if h := header(out); h != "FIP|NAME|CREATEDAT|SERVICES" || !strings.Contains(out, fip[len(fip)-1]) && !strings.Contains(out, "<none>") {
		t.Errorf("get fips:\n%s", out)
	}
	out = must("--as=alice", "get", "pods")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "a1 ") {
		t.Errorf("--as=alice get pods:\n%s", out)
	}

	// kubectl get pods (20 pods) against the floor of one round trip.
	p50 := func(args ...string) time.Duration {
		var ds []time.Duration
		for range 15 {
			start := time.Now()
			must(args...)
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	version := p50("get", "--raw", "/version")
	get := p50("get", "pods")
	t.Logf("p50 of 15: kubectl get pods (20 pods) %s, kubectl get --raw /version %s (%.2fx)", get.Round(time.Millisecond), version.Round(time.Millisecond), float64(get)/float64(version))
}
