package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/google/nftables"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/client"
	"github.com/pilab/pi/lab/controller"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/runtime/pods"
	"github.com/vishvananda/netlink"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	kPod, _        = api.LookupKind("Pod")
	kService, _    = api.LookupKind("Service")
	kDeployment, _ = api.LookupKind("Deployment")
	kFIP, _        = api.LookupKind("FloatingIP")
)

// crashLedger is what the churn was told: objects whose create or delete the daemon acknowledged.
// An operation whose answer never came (the daemon died under it) may or may not have happened, so the
// object is left out of the checks until a later acknowledged operation settles it.
type crashLedger struct {
	mu      sync.Mutex
	present map[string]bool // "kind/name" -> true: acknowledged created; false: acknowledged deleted
}

func (l *crashLedger) set(kind, name string, present bool) {
	l.mu.Lock()
	l.present[kind+"/"+name] = present
	l.mu.Unlock()
}

func (l *crashLedger) unknown(kind, name string) {
	l.mu.Lock()
	delete(l.present, kind+"/"+name)
	l.mu.Unlock()
}

func (l *crashLedger) names(kind string, present bool) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for k, p := range l.present {
		if kn, n, _ := strings.Cut(k, "/"); kn == kind && p == present {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// TestCrashRecovery kills the daemon with SIGKILL at random moments of a scripted churn of pods,
// Deployments, Services and Floating IPs, and after each restart checks what a user was promised: every
// acknowledged object is there, every acknowledged delete stays done, Pod IPs and Service IPs are the
// ones they had, and nothing is left over in containerd or the kernel: no container, shim, network
// namespace, router port or Service map element without its object.
func TestCrashRecovery(t *testing.T) {
	lab := startLab(t)
	hostNS := "inet-" + lab
	mustPi(t, lab, "image", "build", "busybox")
	sock := "/run/pilab/" + lab + "/pi.sock"
	cl := client.New(sock, api.DefaultAccount)
	ledger := &crashLedger{present: map[string]bool{}}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	kills := 20
	if s := os.Getenv("PI_CRASH_KILLS"); s != "" {
		kills, _ = strconv.Atoi(s)
	}
	var seq int
	for round := 0; round < kills; round++ {
		// Churn for a random while, then kill -9 the daemon in the middle of it.
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 3; w++ {
			wg.Add(1)
			wseed := rng.Uint64()
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(wseed, uint64(w)))
				for ctx.Err() == nil {
					ledger.mu.Lock()
					seq++
					n := seq
					ledger.mu.Unlock()
					churnStep(ctx, cl, ledger, r, n)
				}
			}()
		}
		time.Sleep(time.Duration(200+rng.IntN(1800)) * time.Millisecond)
		before := podAddresses(t, cl)
		services := serviceAddresses(t, cl)
		killDaemon(t, lab)
		stop()
		wg.Wait()
		mustPi(t, lab, "up", "--host-netns", hostNS)
		checkAfterCrash(t, lab, cl, ledger, before, services, round)
	}
	t.Logf("%d kills; %d churn steps; %d objects tracked", kills, seq, len(ledger.present))
}

// churnStep makes one change, recording its acknowledged outcome.
func churnStep(ctx context.Context, cl *client.Client, l *crashLedger, r *rand.Rand, n int) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	record := func(kind, name string, present bool, err error) {
		switch {
		case err == nil:
			l.set(kind, name, present)
		case client.IsNotFound(err) && !present:
			l.set(kind, name, false)
		case errors.As(err, new(*client.APIError)):
			// A refusal (cap, quota, already exists): the daemon answered; nothing changed.
		default:
			l.unknown(kind, name)
		}
	}
	pick := func(kind string) string {
		names := l.names(kind, true)
		if len(names) == 0 {
			return ""
		}
		return names[r.IntN(len(names))]
	}
	switch op := r.IntN(10); {
	case op < 3 && len(l.names("pod", true)) < 6:
		name := fmt.Sprintf("p%d", n)
		_, err := cl.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "crash"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}}}})
		record("pod", name, true, err)
	case op < 5:
		if name := pick("pod"); name != "" {
			record("pod", name, false, cl.Delete(ctx, kPod, name, false))
		}
	case op == 5 && len(l.names("deployment", true)) < 2:
		name := fmt.Sprintf("d%d", n)
		two := int32(2)
		_, err := cl.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: appsv1.DeploymentSpec{Replicas: &two, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"sleep", "3600"}}}}}}})
		record("deployment", name, true, err)
	case op == 6:
		if name := pick("deployment"); name != "" {
			record("deployment", name, false, cl.Delete(ctx, kDeployment, name, false))
		}
	case op == 7 && len(l.names("service", true)) < 4:
		name := fmt.Sprintf("s%d", n)
		_, err := cl.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "crash"}, Ports: []corev1.ServicePort{{Port: 80}}}})
		record("service", name, true, err)
	case op == 8:
		if name := pick("service"); name != "" {
			record("service", name, false, cl.Delete(ctx, kService, name, false))
		}
	default:
		if ip := pick("fip"); ip != "" && r.IntN(2) == 0 {
			record("fip", ip, false, cl.Delete(ctx, kFIP, ip, false))
			return
		}
		var out []api.FloatingIP
		err := cl.Do(ctx, "POST", "/x/fips", nil, nil, &out)
		for _, f := range out {
			record("fip", f.Name, true, err)
		}
	}
}

// podAddresses reads every pod's address by UID, just before a kill.
func podAddresses(t *testing.T, cl *client.Client) map[string]string {
	out := map[string]string{}
	objs, err := cl.List(context.Background(), kPod, client.ListOptions{})
	if err != nil {
		t.Fatalf("list pods before the kill: %v", err)
	}
	for _, o := range objs {
		if ip := o.(*corev1.Pod).Status.PodIP; ip != "" {
			out[string(o.GetUID())] = ip
		}
	}
	return out
}

func serviceAddresses(t *testing.T, cl *client.Client) map[string]string {
	out := map[string]string{}
	objs, err := cl.List(context.Background(), kService, client.ListOptions{})
	if err != nil {
		t.Fatalf("list services before the kill: %v", err)
	}
	for _, o := range objs {
		out[string(o.GetUID())] = o.(*corev1.Service).Spec.ClusterIP
	}
	return out
}

// killDaemon sends SIGKILL to the lab's daemon and waits until it is gone: until its lock on state.db is
// free. A zombie's /proc state is not enough: in a process with many threads the group leader shows Z
// while the other threads still exit, and the files (and the lock) go with the last of them.
func killDaemon(t *testing.T, lab string) {
	t.Helper()
	data, err := os.ReadFile("/run/pilab/" + lab + "/pi.pid")
	if err != nil {
		t.Fatalf("daemon pid: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	db, err := os.Open("/var/lib/pilab/" + lab + "/state.db")
	if err != nil {
		t.Fatalf("state.db: %v", err)
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Flock(int(db.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon (pid %d) still holds state.db 30 s after kill -9", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Flock(int(db.Fd()), syscall.LOCK_UN)
}

// checkAfterCrash waits up to a minute for the restarted lab to converge, then fails with every broken
// promise it still sees.
func checkAfterCrash(t *testing.T, lab string, cl *client.Client, l *crashLedger, podIPs, svcIPs map[string]string, round int) {
	t.Helper()
	var problems []string
	deadline := time.Now().Add(90 * time.Second)
	for {
		problems = crashProblems(lab, cl, l, podIPs, svcIPs)
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(problems) > 0 {
		t.Fatalf("after kill %d:\n  %s", round+1, strings.Join(problems, "\n  "))
	}
}

func crashProblems(lab string, cl *client.Client, l *crashLedger, podIPs, svcIPs map[string]string) []string {
	ctx := context.Background()
	var problems []string
	stored := map[string]map[string]metav1.Object{}
	for _, k := range []api.Kind{kPod, kService, kDeployment, kFIP} {
		objs, err := cl.List(ctx, k, client.ListOptions{})
		if err != nil {
			return []string{fmt.Sprintf("list %s: %v", k.Plural, err)}
		}
		stored[k.Singular] = map[string]metav1.Object{}
		for _, o := range objs {
			stored[k.Singular][o.GetName()] = o
		}
	}
	for _, kind := range []string{"pod", "service", "deployment", "fip"} {
		for _, name := range l.names(kind, true) {
			if stored[kind][name] == nil {
				problems = append(problems, fmt.Sprintf("%s %q was acknowledged but is gone", kind, name))
			}
		}
		for _, name := range l.names(kind, false) {
			if stored[kind][name] != nil {
				problems = append(problems, fmt.Sprintf("%s %q was deleted but is still there", kind, name))
			}
		}
	}
	podIDs := map[string]bool{}  // runtime UIDs of stored pods
	netnsOK := map[string]bool{} // their netns names
	portIDs := map[string]bool{} // router port pod IDs
	for _, o := range stored["pod"] {
		p := o.(*corev1.Pod)
		podIDs[string(p.UID)] = true
		netnsOK[controller.PodNetnsName(lab, p.UID)] = true
		portIDs[string(p.UID)] = true
		if ip, had := podIPs[string(p.UID)]; had && p.Status.PodIP != ip {
			problems = append(problems, fmt.Sprintf("pod %q changed address from %s to %s", p.Name, ip, p.Status.PodIP))
		}
		if p.DeletionTimestamp != nil {
			problems = append(problems, fmt.Sprintf("pod %q is still being deleted", p.Name))
		}
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodRunning {
			problems = append(problems, fmt.Sprintf("pod %q is %s, not Running", p.Name, p.Status.Phase))
		}
	}
	clusterIPs := map[string]bool{}
	for _, o := range stored["service"] {
		svc := o.(*corev1.Service)
		clusterIPs[svc.Spec.ClusterIP] = true
		if ip, had := svcIPs[string(svc.UID)]; had && svc.Spec.ClusterIP != ip {
			problems = append(problems, fmt.Sprintf("service %q changed clusterIP from %s to %s", svc.Name, ip, svc.Spec.ClusterIP))
		}
	}
	for _, o := range stored["deployment"] {
		d := o.(*appsv1.Deployment)
		if d.Status.ReadyReplicas != *d.Spec.Replicas {
			problems = append(problems, fmt.Sprintf("deployment %q has %d of %d replicas ready", d.Name, d.Status.ReadyReplicas, *d.Spec.Replicas))
		}
	}
	problems = append(problems, containerLeftovers(lab, podIDs)...)
	problems = append(problems, kernelLeftovers(lab, netnsOK, portIDs, clusterIPs)...)
	return problems
}

// containerLeftovers lists containers and shims of the lab that belong to no stored pod.
func containerLeftovers(lab string, podIDs map[string]bool) []string {
	var problems []string
	ctr, err := containerd.New("/run/pilab/"+lab+"/containerd/containerd.sock", containerd.WithTimeout(5*time.Second))
	if err != nil {
		return []string{fmt.Sprintf("containerd: %v", err)}
	}
	defer ctr.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), lab), 10*time.Second)
	defer cancel()
	cs, err := ctr.Containers(ctx)
	if err != nil {
		return []string{fmt.Sprintf("list containers: %v", err)}
	}
	ids := map[string]bool{}
	for _, c := range cs {
		ids[c.ID()] = true
		labels, err := c.Labels(ctx)
		if err != nil {
			continue
		}
		if uid := labels[pods.LabelPodUID]; uid != "" && !podIDs[uid] {
			problems = append(problems, fmt.Sprintf("container %s of pod UID %s outlived its pod", c.ID(), uid))
		}
	}
	// Each shim serves the container it was started for (-id); a shim whose container is gone is a leak.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		var ns, id string
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "-namespace":
				ns = args[i+1]
			case "-id":
				id = args[i+1]
			}
		}
		if ns == lab && !ids[id] {
			problems = append(problems, fmt.Sprintf("shim %s (pid %s) outlived container %s", p, strings.Split(p, "/")[2], id))
		}
	}
	return problems
}

// kernelLeftovers lists the lab's network namespaces, router ports and Service map elements that belong
// to no stored pod or Service.
func kernelLeftovers(lab string, netnsOK, portIDs, clusterIPs map[string]bool) []string {
	var problems []string
	names, err := netns.ListNamed(lab + "-")
	if err != nil {
		return []string{fmt.Sprintf("list netns: %v", err)}
	}
	for _, n := range names {
		if isRouterNetns(lab, n) {
			problems = append(problems, routerLeftovers(lab, n, portIDs, clusterIPs)...)
			continue
		}
		if !netnsOK[n] {
			problems = append(problems, fmt.Sprintf("netns %s belongs to no pod", n))
		}
	}
	return problems
}

func isRouterNetns(lab, name string) bool {
	rest, ok := strings.CutPrefix(name, lab+"-r")
	if !ok {
		return false
	}
	_, err := strconv.Atoi(rest)
	return err == nil
}

func routerLeftovers(lab, router string, portIDs, clusterIPs map[string]bool) []string {
	var problems []string
	h, err := netns.NewHandle(netns.Path(router))
	if err != nil {
		return []string{fmt.Sprintf("router %s: %v", router, err)}
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return []string{fmt.Sprintf("router %s links: %v", router, err)}
	}
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); !ok || l.Attrs().MasterIndex == 0 {
			continue
		}
		// A pod's port carries the alias "<pod IP> <pod ID>".
		f := strings.Fields(l.Attrs().Alias)
		if len(f) == 2 && !portIDs[f[1]] {
			problems = append(problems, fmt.Sprintf("router %s: port %s (%s) belongs to no pod", router, l.Attrs().Name, l.Attrs().Alias))
		}
	}
	fd, err := os.Open(netns.Path(router))
	if err != nil {
		return append(problems, err.Error())
	}
	defer fd.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		return append(problems, err.Error())
	}
	table := &nftables.Table{Name: lab + "-svc", Family: nftables.TableFamilyIPv4}
	set, err := conn.GetSetByName(table, "service-ips")
	if err != nil {
		return problems // no Service table yet in this account
	}
	elems, err := conn.GetSetElements(set)
	if err != nil {
		return append(problems, fmt.Sprintf("router %s: service-ips: %v", router, err))
	}
	for _, e := range elems {
		if len(e.Key) >= 4 {
			ip := fmt.Sprintf("%d.%d.%d.%d", e.Key[0], e.Key[1], e.Key[2], e.Key[3])
			// FIPs share the dispatch map; only Service range addresses are checked here.
			if strings.HasPrefix(ip, "10.") && !clusterIPs[ip] {
				problems = append(problems, fmt.Sprintf("router %s: service map element %s belongs to no service", router, ip))
			}
		}
	}
	return problems
}
