package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// kubeLab is a store with accounts default and alice behind the Kubernetes API handler.
func kubeLab(t *testing.T) (*store.Store, *httptest.Server) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, a := range []string{"default", "alice"} {
		if err := st.Create(&api.Account{ObjectMeta: metav1.ObjectMeta{Name: a}, Status: api.AccountStatus{Network: "10.244.0.0/24"}}); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer((&Server{Store: st}).KubeHandler())
	t.Cleanup(srv.Close)
	return st, srv
}

func mkPod(t *testing.T, st *store.Store, account, name string, labels map[string]string, phase corev1.PodPhase) {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
		Status: corev1.PodStatus{Phase: phase, PodIP: "10.244.0.9"}}
	api.SetAccount(p, account)
	if err := st.Create(p); err != nil {
		t.Fatal(err)
	}
}

func clientset(t *testing.T, url, as string) *kubernetes.Clientset {
	t.Helper()
	cfg := &rest.Config{Host: url}
	cfg.Impersonate.UserName = as
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func rawGet(t *testing.T, url, accept string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// TestKubeRead: client-go lists and gets pods of the account it acts for (impersonation picks it), sees
// nothing in other namespaces, filters with label and field selectors, and gets metav1.Status errors.
func TestKubeRead(t *testing.T) {
	st, srv := kubeLab(t)
	mkPod(t, st, "default", "web", map[string]string{"app": "web"}, corev1.PodRunning)
	mkPod(t, st, "default", "db", map[string]string{"app": "db"}, corev1.PodPending)
	mkPod(t, st, "alice", "a1", nil, corev1.PodRunning)
	ctx := context.Background()
	cs := clientset(t, srv.URL, "")

	l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 2 || l.Items[0].Name != "db" || l.Items[1].Name != "web" {
		t.Fatalf("default's pods: %v", names(l.Items))
	}
	if rv, _ := st.ResourceVersion(); l.ResourceVersion != strconv.FormatUint(rv, 10) {
		t.Errorf("list resourceVersion %q, store's %d", l.ResourceVersion, rv)
	}
	for _, p := range l.Items {
		if _, ok := p.Annotations[api.AccountAnnotation]; ok || p.Namespace != "default" || p.Spec.NodeName == "" {
			t.Errorf("pod %s served with annotations %v, namespace %q, nodeName %q", p.Name, p.Annotations, p.Namespace, p.Spec.NodeName)
		}
	}
	all, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil || len(all.Items) != 2 {
		t.Fatalf("all namespaces: %v %v", err, all)
	}
	p, err := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || p.Name != "web" {
		t.Fatalf("get web: %v %+v", err, p.TypeMeta)
	}
	if _, err := cs.CoreV1().Pods("default").Get(ctx, "a1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("alice's pod seen from default: %v", err)
	}
	if l, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Errorf("kube-system: %v %v", err, l)
	}
	if _, err := cs.CoreV1().Pods("kube-system").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get in kube-system: %v, want NotFound", err)
	}
	// Selectors.
	l, err = cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "web" {
		t.Errorf("app=web: %v %v", err, names(l.Items))
	}
	l, err = cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "status.phase=Pending"})
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "db" {
		t.Errorf("status.phase=Pending: %v %v", err, names(l.Items))
	}
	l, err = cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=web,spec.nodeName=" + p.Spec.NodeName})
	if err != nil || len(l.Items) != 1 {
		t.Errorf("metadata.name,spec.nodeName: %v %v", err, names(l.Items))
	}
	if _, err = cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "spec.bogus=1"}); !apierrors.IsBadRequest(err) {
		t.Errorf("bad field selector: %v, want BadRequest", err)
	}
	if _, err = cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app in (x"}); !apierrors.IsBadRequest(err) {
		t.Errorf("bad label selector: %v, want BadRequest", err)
	}
	code, body := rawGet(t, srv.URL+"/api/v1/namespaces/default/pods?labelSelector=a%20in%20(", "")
	var st400 metav1.Status
	if json.Unmarshal(body, &st400); code != 400 || st400.Kind != "Status" || st400.Reason != metav1.StatusReasonBadRequest {
		t.Errorf("bad selector answered %d %s", code, body)
	}
	// Impersonation picks the account.
	ac := clientset(t, srv.URL, "alice")
	l, err = ac.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(l.Items) != 1 || l.Items[0].Name != "a1" {
		t.Errorf("alice's pods: %v %v", err, names(l.Items))
	}
	if _, err := clientset(t, srv.URL, "nobody").CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("an account that does not exist: %v, want Forbidden", err)
	}
	ns, err := ac.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil || len(ns.Items) != 1 || ns.Items[0].Name != "default" || ns.Items[0].Status.Phase != corev1.NamespaceActive {
		t.Errorf("namespaces: %v %+v", err, ns)
	}
	if _, err := ac.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace kube-system: %v, want NotFound", err)
	}
}

func names(ps []corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// TestKubeDiscovery: the discovery client finds every served kind, with pilab's group, short names,
// scope and the "all" category, both through aggregated discovery and the plain documents.
func TestKubeDiscovery(t *testing.T) {
	_, srv := kubeLab(t)
	cs := clientset(t, srv.URL, "")
	_, lists, err := cs.Discovery().ServerGroupsAndResources()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]metav1.APIResource{}
	for _, l := range lists {
		for _, r := range l.APIResources {
			got[l.GroupVersion+"/"+r.Name] = r
		}
	}
	for _, want := range []string{"v1/pods", "v1/services", "v1/endpoints", "v1/events", "v1/namespaces", "v1/nodes", "v1/nodes/status", "v1/pods/eviction",
		"apps/v1/deployments", "apps/v1/replicasets", "pilab.dev/v1/floatingips", "pilab.dev/v1/accounts"} {
		if _, ok := got[want]; !ok {
			t.Errorf("discovery lacks %s (has %v)", want, got)
		}
	}
	if f := got["pilab.dev/v1/floatingips"]; !slices.Contains(f.ShortNames, "fip") || !f.Namespaced || f.Kind != "FloatingIP" {
		t.Errorf("floatingips: %+v", f)
	}
	if a := got["pilab.dev/v1/accounts"]; a.Namespaced {
		t.Errorf("accounts are namespaced: %+v", a)
	}
	if p := got["v1/pods"]; !slices.Contains(p.Categories, "all") || !slices.Contains(p.ShortNames, "po") {
		t.Errorf("pods: %+v", p)
	}
	// Read from aggregated discovery: a subresource's group and version are its response kind's.
	if n := got["v1/nodes"]; n.Namespaced || !slices.Contains(n.ShortNames, "no") || slices.Contains(n.Verbs, "create") || !slices.Contains(n.Verbs, "patch") {
		t.Errorf("nodes: %+v", n)
	}
	if e := got["v1/pods/eviction"]; e.Group != "policy" || e.Version != "v1" || e.Kind != "Eviction" || !slices.Equal(e.Verbs, []string{"create"}) {
		t.Errorf("pods/eviction: %+v", e)
	}
	// Aggregated discovery is answered as such (client-go asked for it above; check the content type).
	req, _ := http.NewRequest("GET", srv.URL+"/apis", nil)
	req.Header.Set("Accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, "as=APIGroupDiscoveryList") {
		t.Errorf("aggregated /apis answered %q", ct)
	}
	if code, body := rawGet(t, srv.URL+"/version", ""); code != 200 || !strings.Contains(string(body), "v1.35.4-pilab") {
		t.Errorf("/version: %d %s", code, body)
	}
	if code, body := rawGet(t, srv.URL+"/readyz", ""); code != 200 || string(body) != "ok" {
		t.Errorf("/readyz: %d %s", code, body)
	}
}

// TestKubeTable: Table answers have kube-apiserver's pod columns (the wide ones priority 1) and pilab's fip
// and account columns.
func TestKubeTable(t *testing.T) {
	st, srv := kubeLab(t)
	mkPod(t, st, "default", "web", nil, corev1.PodRunning)
	fip := &api.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "203.0.113.7"}, Spec: api.FloatingIPSpec{DisplayName: "site"}}
	api.SetAccount(fip, "default")
	if err := st.Create(fip); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker"}}); err != nil {
		t.Fatal(err)
	}
	const accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
	for _, c := range []struct {
		path string
		cols string
		wide string
		cell string
	}{
		{"/api/v1/namespaces/default/pods", "Name Ready Status Restarts Age IP Node Nominated Node Readiness Gates", "IP Node Nominated Node Readiness Gates", "web"},
		{"/apis/pilab.dev/v1/namespaces/default/floatingips", "FIP Name CreatedAt Services", "", "site"},
		{"/api/v1/nodes", "Name Status Roles Age Version Internal-IP External-IP OS-Image Kernel-Version Container-Runtime",
			"Internal-IP External-IP OS-Image Kernel-Version Container-Runtime", "Unknown"},
		{"/apis/pilab.dev/v1/accounts", "Name Network Pods Services FIPs CPU Memory Age Router DNS WAN-IP", "Router DNS WAN-IP", "alice"},
	} {
		code, body := rawGet(t, srv.URL+c.path, accept)
		var tb metav1.Table
		if err := json.Unmarshal(body, &tb); err != nil || code != 200 || tb.Kind != "Table" {
			t.Fatalf("%s: %d %v %s", c.path, code, err, body)
		}
		var cols, wide []string
		for _, cd := range tb.ColumnDefinitions {
			cols = append(cols, cd.Name)
			if cd.Priority == 1 {
				wide = append(wide, cd.Name)
			}
		}
		if strings.Join(cols, " ") != c.cols || strings.Join(wide, " ") != c.wide {
			t.Errorf("%s: columns %q wide %q", c.path, cols, wide)
		}
		if !strings.Contains(string(body), `"`+c.cell+`"`) || len(tb.Rows) == 0 || len(tb.Rows[0].Cells) != len(cols) {
			t.Errorf("%s: rows %+v", c.path, tb.Rows)
		}
	}
}

// TestKubeWatch: an informer syncs and sees an add and a delete; a watch from a resourceVersion the store
// no longer remembers is 410 Gone with reason Expired.
func TestKubeWatch(t *testing.T) {
	st, srv := kubeLab(t)
	mkPod(t, st, "default", "old", nil, corev1.PodRunning)
	cs := clientset(t, srv.URL, "")
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"))
	inf := f.Core().V1().Pods().Informer()
	added, deleted := make(chan string, 10), make(chan string, 10)
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { added <- o.(*corev1.Pod).Name },
		DeleteFunc: func(o any) { deleted <- o.(*corev1.Pod).Name },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	want := func(ch chan string, name string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != name {
				t.Fatalf("got %s, want %s", got, name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for %s", name)
		}
	}
	want(added, "old")
	mkPod(t, st, "default", "new", nil, corev1.PodRunning)
	mkPod(t, st, "alice", "hers", nil, corev1.PodRunning)
	want(added, "new")
	kPod, _ := api.LookupKind("Pod")
	if err := st.Delete(kPod, "default", "old"); err != nil {
		t.Fatal(err)
	}
	want(deleted, "old")
	select {
	case n := <-added:
		t.Fatalf("informer of default saw %s", n)
	default:
	}

	st.SetHistorySize(2)
	for i := range 5 {
		mkPod(t, st, "default", "p"+strconv.Itoa(i), nil, corev1.PodRunning)
	}
	code, body := rawGet(t, srv.URL+"/api/v1/namespaces/default/pods?watch=true&resourceVersion=2", "")
	var gone metav1.Status
	if json.Unmarshal(body, &gone); code != http.StatusGone || gone.Reason != metav1.StatusReasonExpired {
		t.Errorf("watch from rv 2: %d %s, want 410 Expired", code, body)
	}
}
