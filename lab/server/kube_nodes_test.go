package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/pki"
	"github.com/pilab/pi/lab/printers"
	"github.com/pilab/pi/lab/registry"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	kresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

var kindNode = storeKind("Node")

// podDeleter is the daemon's delete with its pod controller's part: a pod is marked deleted (its
// deletionTimestamp and grace period), and removed from the store a moment later, once its containers
// would have stopped; other kinds go at once. It records the grace period of each pod deletion.
type podDeleter struct {
	st    *store.Store
	mu    sync.Mutex
	grace map[string]*int64 // account/pod: the grace period the deletion asked for
}

func (d *podDeleter) Delete(_ context.Context, account string, k api.Kind, name string, _ metav1.Object, opts DeleteOptions) error {
	if k.Name != "Pod" {
		return d.st.Delete(k, account, name)
	}
	d.mu.Lock()
	d.grace[account+"/"+name] = opts.GracePeriodSeconds
	d.mu.Unlock()
	_, err := d.st.Mutate(k, account, name, func(o metav1.Object) error {
		if o.GetDeletionTimestamp() != nil {
			return store.ErrUnchanged
		}
		now := metav1.Now()
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if opts.GracePeriodSeconds != nil {
			grace = *opts.GracePeriodSeconds
		}
		o.SetDeletionTimestamp(&now)
		o.SetDeletionGracePeriodSeconds(&grace)
		return nil
	})
	return err
}

func (d *podDeleter) Extra() http.Handler { return http.NotFoundHandler() }

func (d *podDeleter) graceOf(account, pod string) (*int64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.grace[account+"/"+pod]
	return g, ok
}

// finishPodDeletions removes the pods marked deleted, as the pod controller does once their containers
// have stopped, until the test ends.
func finishPodDeletions(t *testing.T, st *store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			pods, err := st.List(kindPod, "")
			if err != nil {
				continue
			}
			for _, p := range pods {
				if p.GetDeletionTimestamp() != nil {
					st.Delete(kindPod, api.AccountOf(p), p.GetName())
				}
			}
		}
	}()
}

// labNode is a node as the lab makes it: kind's worker role and hostname label, the underlay address as its
// InternalIP, capacity, node info, and its Ready condition.
func labNode(name, index, ip string, ready corev1.ConditionStatus) *corev1.Node {
	capacity := corev1.ResourceList{corev1.ResourceCPU: kresource.MustParse("2"), corev1.ResourceMemory: kresource.MustParse("4Gi"), corev1.ResourcePods: kresource.MustParse("110")}
	reason := map[corev1.ConditionStatus]string{corev1.ConditionTrue: "KubeletReady", corev1.ConditionFalse: "NodeStopped"}[ready]
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"node-role.kubernetes.io/worker": ""},
			Annotations: map[string]string{"pilab.dev/node-index": index}},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: reason, LastHeartbeatTime: metav1.Now()}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}},
			NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.35.4-pilab", OSImage: "Debian GNU/Linux 12 (bookworm)", KernelVersion: "6.1.0-pilab",
				ContainerRuntimeVersion: "containerd://1.7.24", OperatingSystem: "linux", Architecture: "amd64"}},
	}
}

// scheduledPod is a pod of account the scheduler placed on node: a ReplicaSet's, as drain requires of the
// pods it evicts without --force.
func scheduledPod(t *testing.T, st *store.Store, account, name, node string) {
	t.Helper()
	yes := true
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d4f8", UID: types.UID("rs-" + account), Controller: &yes}}},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "nginx", Image: "nginx"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.2.7"}}
	api.SetAccount(p, account)
	if err := st.Create(p); err != nil {
		t.Fatal(err)
	}
}

type nodeLab struct {
	st      *store.Store
	pki     *pki.PKI
	url     string
	deleter *podDeleter
	alice   string // alice's token
}

// newNodeLab is the daemon's listener (authentication, tokens) over the API with the registry, on a store
// with accounts default and alice and the nodes of a two-node lab made 3 hours ago: worker, stopped
// (NotReady), and worker2, Ready.
func newNodeLab(t *testing.T) *nodeLab {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(registry.Config{Store: st, Images: labImages{}, SequentialIPs: true})
	for _, a := range []string{"default", "alice"} {
		if err := reg.Create(context.Background(), "", &api.Account{ObjectMeta: metav1.ObjectMeta{Name: a}}, false); err != nil {
			t.Fatal(err)
		}
	}
	st.Now = func() time.Time { return time.Now().Add(-3 * time.Hour) }
	for _, n := range []*corev1.Node{labNode("worker", "1", "169.254.1.1", corev1.ConditionFalse), labNode("worker2", "2", "169.254.1.2", corev1.ConditionTrue)} {
		if err := st.Create(n); err != nil {
			t.Fatal(err)
		}
	}
	st.Now = time.Now
	p, err := pki.Ensure(pki.Options{Dir: filepath.Join(t.TempDir(), "pki"), Lab: "nodes"})
	if err != nil {
		t.Fatal(err)
	}
	sessions := &Sessions{}
	tokens := &Tokens{Store: st, Revoked: func(a string) { sessions.End(a) }}
	d := &podDeleter{st: st, grace: map[string]*int64{}}
	s := &Server{Store: st, Registry: reg, Backend: d, Tokens: tokens}
	srv := httptest.NewUnstartedServer((&Authenticator{ClientCAs: p.ClientCAs(), Tokens: tokens, Sessions: sessions}).Wrap(s.Handler()))
	srv.Listener = sessions.Listener(srv.Listener)
	srv.Config.ConnContext = sessions.ConnContext
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{p.Server}, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	finishPodDeletions(t, st)
	return &nodeLab{st: st, pki: p, url: srv.URL, deleter: d, alice: issue(t, tokens, "alice", false)}
}

func (l *nodeLab) admin(t *testing.T) *kubernetes.Clientset {
	return tlsClient(t, l.pki, l.url, l.pki.AdminPEM, l.pki.AdminKey, "")
}

func (l *nodeLab) node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	o, err := l.st.Get(kindNode, "", name)
	if err != nil {
		t.Fatal(err)
	}
	return o.(*corev1.Node)
}

// kubectl runs the machine's kubectl with a kubeconfig of the lab: context "admin" (the admin's client
// certificate, as `pi kubeconfig` writes it) and "alice" (her token), and an empty HOME.
type kubectl struct {
	t          *testing.T
	bin, home  string
	kubeconfig string
}

func newKubectl(t *testing.T, l *nodeLab) *kubectl {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl is not installed (.ci/run installs it)")
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: l.url, CertificateAuthorityData: l.pki.CAPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: l.pki.AdminPEM, ClientKeyData: l.pki.AdminKey}
	cfg.AuthInfos["alice"] = &clientcmdapi.AuthInfo{Token: l.alice}
	for _, u := range []string{"admin", "alice"} {
		cfg.Contexts[u] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: u, Namespace: "default"}
	}
	cfg.CurrentContext = "admin"
	home := t.TempDir()
	path := filepath.Join(home, "config")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return &kubectl{t: t, bin: bin, home: home, kubeconfig: path}
}

// run runs kubectl as user (a context) and returns its combined output and error.
func (k *kubectl) run(user string, args ...string) (string, error) {
	c := exec.Command(k.bin, append([]string{"--kubeconfig", k.kubeconfig, "--context", user}, args...)...)
	c.Env = append(os.Environ(), "HOME="+k.home, "KUBECONFIG="+k.kubeconfig)
	out, err := c.CombinedOutput()
	return string(out), err
}

// must runs kubectl, failing the test if it fails; its output must match want (a regexp) when given.
func (k *kubectl) must(want, user string, args ...string) string {
	k.t.Helper()
	out, err := k.run(user, args...)
	if err != nil {
		k.t.Fatalf("kubectl --context %s %s: %v\n%s", user, strings.Join(args, " "), err, out)
	}
	if want != "" && !regexp.MustCompile(want).MatchString(out) {
		k.t.Errorf("kubectl --context %s %s:\n%s\nwant it to match %q", user, strings.Join(args, " "), out, want)
	}
	return out
}

// fails runs kubectl expecting it to fail with exactly want (its output, trimmed).
func (k *kubectl) fails(want, user string, args ...string) {
	k.t.Helper()
	out, err := k.run(user, args...)
	if err == nil {
		k.t.Errorf("kubectl --context %s %s succeeded, want a failure:\n%s", user, strings.Join(args, " "), out)
		return
	}
	if strings.TrimSpace(out) != want {
		k.t.Errorf("kubectl --context %s %s:\n%s\nwant:\n%s", user, strings.Join(args, " "), out, want)
	}
}

// piGetNodes is what `pi get nodes` prints of the stored nodes (lab/printers, as cmd/pi prints them).
func piGetNodes(t *testing.T, st *store.Store, wide bool) string {
	t.Helper()
	nodes, err := st.List(kindNode, "")
	if err != nil {
		t.Fatal(err)
	}
	format := ""
	if wide {
		format = "wide"
	}
	var b bytes.Buffer
	if err := printers.Print(&b, kindNode, nodes, format, printers.Context{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestKubectlNodes: the real kubectl lists the lab's nodes as it lists a cluster's, and pi's printers print
// the same; the admin cordons, uncordons and drains a node (evicting its pods through pods/eviction, which
// discovery advertises); an account may read nodes and evict its own pods but not cordon, and nobody creates
// or deletes a node through the API.
func TestKubectlNodes(t *testing.T) {
	l := newNodeLab(t)
	k := newKubectl(t, l)

	want := "NAME      STATUS     ROLES    AGE   VERSION\n" +
		"worker    NotReady   worker   3h    v1.35.4-pilab\n" +
		"worker2   Ready      worker   3h    v1.35.4-pilab\n"
	if out := k.must("", "admin", "get", "nodes"); out != want {
		t.Errorf("kubectl get nodes:\n%s\nwant:\n%s", out, want)
	}
	// Paginated (limit and continue, a page per node): the same table, from two requests.
	if out := k.must("", "admin", "get", "nodes", "--chunk-size=1"); out != want {
		t.Errorf("kubectl get nodes --chunk-size=1:\n%s\nwant:\n%s", out, want)
	}
	k.must(`GET https://\S+/api/v1/nodes\?continue=\S+&limit=1 200 OK`, "admin", "get", "nodes", "--chunk-size=1", "-v=6")
	if pi := piGetNodes(t, l.st, false); pi != want {
		t.Errorf("pi get nodes:\n%s\nwant (kubectl's):\n%s", pi, want)
	}
	wantWide := "NAME      STATUS     ROLES    AGE   VERSION         INTERNAL-IP   EXTERNAL-IP   OS-IMAGE                         KERNEL-VERSION   CONTAINER-RUNTIME\n" +
		"worker    NotReady   worker   3h    v1.35.4-pilab   169.254.1.1   <none>        Debian GNU/Linux 12 (bookworm)   6.1.0-pilab      containerd://1.7.24\n" +
		"worker2   Ready      worker   3h    v1.35.4-pilab   169.254.1.2   <none>        Debian GNU/Linux 12 (bookworm)   6.1.0-pilab      containerd://1.7.24\n"
	// A learner's token reads nodes as the lesson does.
	if out := k.must("", "alice", "get", "nodes", "-o", "wide"); out != wantWide {
		t.Errorf("kubectl get nodes -o wide (alice):\n%s\nwant:\n%s", out, wantWide)
	}
	if pi := piGetNodes(t, l.st, true); pi != wantWide {
		t.Errorf("pi get nodes -o wide:\n%s\nwant (kubectl's):\n%s", pi, wantWide)
	}
	t.Logf("kubectl describe node worker2:\n%s", k.must(`(?m)^Name:\s+worker2$`, "admin", "describe", "node", "worker2"))
	k.must(`^node/worker2\n$`, "alice", "get", "no", "--field-selector", "metadata.name=worker2", "-o", "name")
	k.must(`^node/worker\n$`, "admin", "get", "nodes", "-l", "kubernetes.io/hostname=worker", "-o", "name")
	k.must(`^node/worker2\n$`, "admin", "get", "nodes", "--field-selector", "spec.unschedulable=false,metadata.name!=worker", "-o", "name")

	// Cordon: the account is refused in RBAC's words; the admin's strategic-merge patch goes through the
	// registry and shows in STATUS.
	// (kubectl cordon reports a node it could not cordon, and exits 0, against any cluster.)
	if out, _ := k.run("alice", "cordon", "worker2"); out != `error: unable to cordon node "worker2": nodes "worker2" is forbidden: User "alice" cannot patch resource "nodes" in API group "" at the cluster scope`+"\n" {
		t.Errorf("kubectl cordon worker2 (alice):\n%s", out)
	}
	if l.node(t, "worker2").Spec.Unschedulable {
		t.Fatal("alice's refused cordon cordoned worker2")
	}
	k.must(`^node/worker2 cordoned\n$`, "admin", "cordon", "worker2")
	k.must(`(?m)^worker2\s+Ready,SchedulingDisabled\s+worker\s+3h\s+v1.35.4-pilab$`, "admin", "get", "nodes")
	if n := l.node(t, "worker2"); !n.Spec.Unschedulable || n.Generation != 1 {
		t.Errorf("cordoned worker2 stored with unschedulable %v, generation %d", n.Spec.Unschedulable, n.Generation)
	}
	k.must(`^node/worker2 uncordoned\n$`, "admin", "uncordon", "worker2")
	if l.node(t, "worker2").Spec.Unschedulable {
		t.Error("uncordoned worker2 is still stored unschedulable")
	}

	// Discovery advertises the eviction subresource as kube-apiserver does, which is what makes drain evict.
	var rl metav1.APIResourceList
	if err := json.Unmarshal([]byte(k.must("", "alice", "get", "--raw", "/api/v1")), &rl); err != nil {
		t.Fatal(err)
	}
	found := map[string]metav1.APIResource{}
	for _, r := range rl.APIResources {
		found[r.Name] = r
	}
	if e := found["pods/eviction"]; e.Group != "policy" || e.Version != "v1" || e.Kind != "Eviction" || strings.Join(e.Verbs, ",") != "create" || !e.Namespaced {
		t.Errorf("/api/v1 pods/eviction: %+v", e)
	}
	if n := found["nodes"]; n.Namespaced || n.Kind != "Node" || strings.Join(n.ShortNames, ",") != "no" || strings.Join(n.Verbs, ",") != "get,list,patch,update,watch" {
		t.Errorf("/api/v1 nodes: %+v", n)
	}
	if s := found["nodes/status"]; s.Kind != "Node" || s.Namespaced {
		t.Errorf("/api/v1 nodes/status: %+v", s)
	}

	// Drain: two of default's pods on worker2, one on worker, and one of alice's on worker2. The admin acts
	// for account "default": its drain cordons worker2 and evicts default's two pods there, waiting until
	// they are gone (finishPodDeletions plays the pod controller).
	scheduledPod(t, l.st, "default", "web-1", "worker2")
	scheduledPod(t, l.st, "default", "web-2", "worker2")
	scheduledPod(t, l.st, "default", "web-3", "worker")
	scheduledPod(t, l.st, "alice", "hers", "worker2")
	t.Logf("kubectl drain worker2:\n%s", k.must(`(?s)^node/worker2 cordoned\n.*evicting pod default/web-1\n.*pod/web-1 evicted\n.*node/worker2 drained\n$`,
		"admin", "drain", "worker2", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=20s"))
	out := k.must("", "admin", "get", "pods", "-o", "wide")
	if !regexp.MustCompile(`(?m)^web-3\s+0/1\s+Running\s+0\s+\S+\s+10\.244\.2\.7\s+worker\s`).MatchString(out) || strings.Contains(out, "web-1") || strings.Contains(out, "web-2") {
		t.Errorf("after the drain, default's pods:\n%s\nwant web-3 alone, on worker", out)
	}
	if !l.node(t, "worker2").Spec.Unschedulable {
		t.Error("drained worker2 is not cordoned")
	}
	if g, ok := l.deleter.graceOf("default", "web-1"); !ok || g != nil {
		t.Errorf("web-1's eviction: deleted %v with grace %v, want deleted with the pod's own grace period (none given)", ok, g)
	}
	// alice may evict her own pods: her drain finds worker2 cordoned already (no patch), and evicts hers.
	k.must(`(?s)^node/worker2 already cordoned\n.*evicting pod default/hers\n.*pod/hers evicted\n.*node/worker2 drained\n$`,
		"alice", "drain", "worker2", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=20s", "--grace-period=5")
	if g, _ := l.deleter.graceOf("alice", "hers"); g == nil || *g != 5 {
		t.Errorf("hers evicted with grace %v, want 5 (--grace-period)", g)
	}
	if _, err := l.st.Get(kindPod, "default", "web-3"); err != nil {
		t.Errorf("web-3, on worker: %v", err)
	}

	// Nodes are the lab's to make and remove.
	k.fails(`Error from server (MethodNotAllowed): node "worker" cannot be deleted through the Kubernetes API: a node is a network namespace the lab built, with the pods on it; remove it with `+"`pi node delete worker`",
		"admin", "delete", "node", "worker")
	k.fails(`Error from server (Forbidden): nodes "worker" is forbidden: User "alice" cannot delete resource "nodes" in API group "" at the cluster scope`,
		"alice", "delete", "node", "worker")
	manifest := filepath.Join(t.TempDir(), "node.yaml")
	os.WriteFile(manifest, []byte("apiVersion: v1\nkind: Node\nmetadata:\n  name: worker4\n"), 0o644)
	k.fails(`Error from server (MethodNotAllowed): error when creating "`+manifest+`": nodes cannot be created through the Kubernetes API: a node is a network namespace the lab builds; add one with `+"`pi node add`",
		"admin", "create", "-f", manifest)
	if nodes, _ := l.st.List(kindNode, ""); len(nodes) != 2 {
		t.Errorf("the lab has %d nodes, want its 2", len(nodes))
	}
}

// TestKubeNodesAPI: client-go watches a node by name and sees its cordon; the status subresource is the
// admin's too; server-side apply cannot make a node; evictions answer as kube-apiserver's do (201 Status
// Success, 404 in its words, 400 on a name mismatch, 405 for GET), honour the Eviction's deleteOptions and
// take policy/v1beta1 bodies.
func TestKubeNodesAPI(t *testing.T) {
	l := newNodeLab(t)
	ctx := t.Context()
	admin := l.admin(t)

	w, err := admin.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=worker2"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func() *corev1.Node {
		t.Helper()
		select {
		case ev := <-w.ResultChan():
			n, ok := ev.Object.(*corev1.Node)
			if !ok {
				t.Fatalf("watch event %s of %T", ev.Type, ev.Object)
			}
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				t.Fatalf("watch event %s of %s", ev.Type, n.Name)
			}
			return n
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event")
		}
		return nil
	}
	if n := next(); n.Name != "worker2" {
		t.Fatalf("watch of worker2 began with %s", n.Name)
	}
	if _, err := admin.CoreV1().Nodes().Patch(ctx, "worker", types.StrategicMergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Nodes().Patch(ctx, "worker2", types.StrategicMergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := next(); n.Name != "worker2" || !n.Spec.Unschedulable {
		t.Errorf("watch of worker2: %s unschedulable %v", n.Name, n.Spec.Unschedulable)
	}
	// The status subresource: the admin's; an account's write is refused naming it.
	n, err := admin.CoreV1().Nodes().Get(ctx, "worker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions[0].Status = corev1.ConditionTrue
	if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("admin updates worker's status: %v", err)
	}
	if got := l.node(t, "worker"); got.Status.Conditions[0].Status != corev1.ConditionTrue || !got.Spec.Unschedulable {
		t.Errorf("worker after the status update: %+v, unschedulable %v", got.Status.Conditions, got.Spec.Unschedulable)
	}
	alice := tokenClient(t, l.pki, l.url, l.alice)
	_, err = alice.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	if want := `nodes "worker" is forbidden: User "alice" cannot update resource "nodes/status" in API group "" at the cluster scope`; err == nil || err.Error() != want {
		t.Errorf("alice updates worker's status: %v, want %s", err, want)
	}
	// The admin acting as an account is that account.
	_, err = tlsClient(t, l.pki, l.url, l.pki.AdminPEM, l.pki.AdminKey, "alice").CoreV1().Nodes().Patch(ctx, "worker", types.MergePatchType, []byte(`{"spec":{"unschedulable":false}}`), metav1.PatchOptions{})
	if want := `nodes "worker" is forbidden: User "alice" cannot patch resource "nodes" in API group "" at the cluster scope`; err == nil || err.Error() != want {
		t.Errorf("the admin as alice uncordons worker: %v, want %s", err, want)
	}
	// Server-side apply of a node that does not exist would create it.
	_, err = admin.CoreV1().Nodes().Patch(ctx, "worker4", types.ApplyPatchType, []byte(`{"apiVersion":"v1","kind":"Node","metadata":{"name":"worker4"}}`), metav1.PatchOptions{FieldManager: "test"})
	if err == nil || !strings.Contains(err.Error(), "add one with `pi node add`") {
		t.Errorf("server-side apply of a new node: %v", err)
	}
	if _, err := l.st.Get(kindNode, "", "worker4"); !store.IsNotFound(err) {
		t.Errorf("worker4 was stored: %v", err)
	}

	// Evictions.
	scheduledPod(t, l.st, "default", "web-1", "worker2")
	scheduledPod(t, l.st, "default", "web-2", "worker2")
	evictURL := l.url + "/api/v1/namespaces/default/pods/%s/eviction"
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: l.pki.ClientCAs(), Certificates: []tls.Certificate{adminCert(t, l.pki)}}}}
	post := func(method, pod, body string) (int, metav1.Status) {
		t.Helper()
		req, _ := http.NewRequest(method, strings.Replace(evictURL, "%s", pod, 1), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st metav1.Status
		json.NewDecoder(resp.Body).Decode(&st)
		return resp.StatusCode, st
	}
	// A dry run deletes nothing.
	if code, st := post("POST", "web-1", `{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"web-1"},"deleteOptions":{"dryRun":["All"]}}`); code != 201 || st.Status != metav1.StatusSuccess {
		t.Errorf("dry-run eviction: %d %+v", code, st)
	}
	if p, err := l.st.Get(kindPod, "default", "web-1"); err != nil || p.GetDeletionTimestamp() != nil {
		t.Errorf("a dry-run eviction deleted web-1: %v", err)
	}
	if code, st := post("POST", "web-1", `{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"web-2"}}`); code != 400 || st.Message != "name in URL does not match name in Eviction object" {
		t.Errorf("eviction of web-2 at web-1's path: %d %+v", code, st)
	}
	if code, st := post("GET", "web-1", ""); code != 405 || st.Reason != metav1.StatusReasonMethodNotAllowed {
		t.Errorf("GET eviction: %d %+v", code, st)
	}
	// client-go's policy/v1 Evict, with a grace period.
	grace := int64(3)
	if err := admin.PolicyV1().Evictions("default").Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default"},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: &grace}}); err != nil {
		t.Fatalf("evict web-1: %v", err)
	}
	if g, _ := l.deleter.graceOf("default", "web-1"); g == nil || *g != 3 {
		t.Errorf("web-1 evicted with grace %v, want 3", g)
	}
	// A policy/v1beta1 body, as older clients send it.
	if code, st := post("POST", "web-2", `{"apiVersion":"policy/v1beta1","kind":"Eviction","metadata":{"name":"web-2","namespace":"default"},"deleteOptions":{"gracePeriodSeconds":0}}`); code != 201 || st.Status != metav1.StatusSuccess || st.Kind != "Status" {
		t.Errorf("policy/v1beta1 eviction: %d %+v", code, st)
	}
	if g, _ := l.deleter.graceOf("default", "web-2"); g == nil || *g != 0 {
		t.Errorf("web-2 evicted with grace %v, want 0", g)
	}
	// An account evicts only in its own namespace: default's pod is not alice's.
	scheduledPod(t, l.st, "default", "web-3", "worker2")
	err = alice.PolicyV1().Evictions("default").Evict(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "web-3", Namespace: "default"}})
	if want := `pods "web-3" not found`; err == nil || err.Error() != want {
		t.Errorf("alice evicts default's web-3: %v, want %s", err, want)
	}
	if code, st := post("POST", "gone", `{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"gone"}}`); code != 404 || st.Message != `pods "gone" not found` || st.Reason != metav1.StatusReasonNotFound {
		t.Errorf("eviction of a missing pod: %d %+v", code, st)
	}
}

func adminCert(t *testing.T, p *pki.PKI) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(p.AdminPEM, p.AdminKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKubePodNodeName: a pod is served on the node its spec names (the scheduler's choice), with none
// while it is unscheduled; a pod the lab ran before it had a scheduler (an address, no node) is served on
// the machine's node, and a client writing back what it read does not change its spec. spec.nodeName field
// selectors match what is served.
func TestKubePodNodeName(t *testing.T) {
	st, srv := kubeWriteLab(t)
	ctx := t.Context()
	scheduledPod(t, st, "default", "placed", "worker2")
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pending"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending}}
	api.SetAccount(pending, "default")
	if err := st.Create(pending); err != nil {
		t.Fatal(err)
	}
	mkPod(t, st, "default", "old", nil, corev1.PodRunning) // an address, no node
	host, _ := os.Hostname()
	cs := jsonClientset(t, srv.URL, "")
	for name, want := range map[string]string{"placed": "worker2", "pending": "", "old": host} {
		p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil || p.Spec.NodeName != want {
			t.Errorf("pod %s: nodeName %q (%v), want %q", name, p.Spec.NodeName, err, want)
		}
	}
	for sel, want := range map[string]string{"spec.nodeName=worker2": "placed", "spec.nodeName=": "pending", "spec.nodeName=" + host: "old"} {
		l, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil || strings.Join(names(l.Items), ",") != want {
			t.Errorf("pods with %s: %v (%v), want %s", sel, names(l.Items), err, want)
		}
	}
	// A read-modify-write of the old pod keeps its stored spec, which names no node.
	p, err := cs.CoreV1().Pods("default").Get(ctx, "old", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{"tier": "web"}
	if _, err := cs.CoreV1().Pods("default").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update of the old pod as read: %v", err)
	}
	if o, _ := st.Get(kindPod, "default", "old"); o.(*corev1.Pod).Spec.NodeName != "" || o.GetLabels()["tier"] != "web" {
		t.Errorf("old pod stored with nodeName %q, labels %v", o.(*corev1.Pod).Spec.NodeName, o.GetLabels())
	}
}
