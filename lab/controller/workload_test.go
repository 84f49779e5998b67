package controller

import (
	"context"
	"fmt"
	"github.com/containerd/containerd"
	"github.com/pilab/pi/lab/registry"
	"io"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestResolveFenceposts(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int) *intstr.IntOrString { v := intstr.FromInt(n); return &v }
	for _, tc := range []struct {
		surge, unavail         *intstr.IntOrString
		desired                int32
		wantSurge, wantUnavail int32
	}{
		{pct("25%"), pct("25%"), 4, 1, 1},
		{pct("25%"), pct("25%"), 10, 3, 2}, // 2.5: surge rounds up, unavailable down
		{pct("25%"), pct("25%"), 1, 1, 0},
		{pct("25%"), pct("25%"), 3, 1, 0},
		{pct("30%"), pct("30%"), 5, 2, 1},
		{pct("0%"), pct("0%"), 3, 0, 1}, // both 0: one may be unavailable, or nothing could move
		{num(0), num(0), 3, 0, 1},
		{num(0), pct("10%"), 3, 0, 1}, // 0.3 rounds down to 0, then the both-zero rule
		{num(2), num(1), 10, 2, 1},
		{nil, nil, 5, 0, 1},
		{pct("100%"), pct("0%"), 3, 3, 0},
	} {
		s, u, err := resolveFenceposts(tc.surge, tc.unavail, tc.desired)
		if err != nil {
			t.Fatalf("%v/%v of %d: %v", tc.surge, tc.unavail, tc.desired, err)
		}
		if s != tc.wantSurge || u != tc.wantUnavail {
			t.Errorf("maxSurge %v maxUnavailable %v of %d replicas: got surge %d unavailable %d, want %d %d",
				tc.surge, tc.unavail, tc.desired, s, u, tc.wantSurge, tc.wantUnavail)
		}
	}
	if _, _, err := resolveFenceposts(pct("lots"), nil, 3); err == nil || !strings.Contains(err.Error(), "maxSurge") {
		t.Errorf("a bad maxSurge must fail naming the field, got %v", err)
	}
}

func TestRolloutLimits(t *testing.T) {
	d := testDeployment("web", 3)
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	if s, u, _ := rolloutLimits(d); s != 0 || u != 0 {
		t.Errorf("Recreate: surge %d unavailable %d, want 0 0", s, u)
	}
	five := intstr.FromInt(5)
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &five}}
	if _, u, _ := rolloutLimits(d); u != 3 {
		t.Errorf("maxUnavailable 5 of 3 replicas: got %d, want 3 (capped)", u)
	}
	d.Spec.Replicas = ptr[int32](0)
	if _, u, _ := rolloutLimits(d); u != 0 {
		t.Errorf("0 replicas: unavailable %d, want 0", u)
	}
	d.Spec.Strategy = appsv1.DeploymentStrategy{}
	d.Spec.Replicas = ptr[int32](4)
	if s, u, _ := rolloutLimits(d); s != 1 || u != 1 {
		t.Errorf("no rollingUpdate given: got %d %d, want the 25%% defaults 1 1", s, u)
	}
}

func TestNewRSReplicas(t *testing.T) {
	st := func(spec int32) *rsState {
		return &rsState{rs: &appsv1.ReplicaSet{Spec: appsv1.ReplicaSetSpec{Replicas: ptr(spec)}}}
	}
	for _, tc := range []struct {
		want, surge, old, cur, expect int32
	}{
		{4, 1, 4, 0, 1},   // start of a rollout: one surge pod
		{4, 1, 4, 1, 1},   // already at want+surge
		{4, 1, 3, 1, 2},   // one old pod gone: grow by one
		{4, 1, 2, 1, 3},   // two gone: grow by two
		{4, 1, 0, 1, 4},   // nothing old left: straight to want
		{10, 3, 10, 0, 3}, // bigger surge
		{3, 0, 3, 0, 0},   // no surge: wait for old to shrink
	} {
		old, cur := st(tc.old), st(tc.cur)
		if got := newRSReplicas(tc.want, tc.surge, []*rsState{old, cur}, cur); got != tc.expect {
			t.Errorf("want %d surge %d old %d new %d: got %d, want %d", tc.want, tc.surge, tc.old, tc.cur, got, tc.expect)
		}
	}
}

// simRS is a ReplicaSet in the rollout simulation: available pods follow spec one step later.
func simRollout(t *testing.T, want, surge, unavail int32, newReady bool) (steps int, newRS, oldRS *rsState) {
	t.Helper()
	mk := func(name string, spec, avail int32, age int) *rsState {
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(age), 0))},
			Spec: appsv1.ReplicaSetSpec{Replicas: ptr(spec)}}
		return &rsState{rs: rs, available: avail, active: avail}
	}
	oldRS = mk("old", want, want, 1)
	newRS = mk("new", 0, 0, 2)
	for steps = 0; steps < 100; steps++ {
		plan := planRolling(want, surge, unavail, newRS, []*rsState{oldRS})
		if len(plan) == 0 {
			return steps, newRS, oldRS
		}
		for s, n := range plan {
			s.rs.Spec.Replicas = ptr(n)
			// Scale-down removes pods at once (not-ready ones first).
			s.available = min(s.available, n)
			s.active = min(s.active, n)
		}
		total := oldRS.spec() + newRS.spec()
		if total > want+surge {
			t.Fatalf("step %d: %d pods planned, more than %d+%d", steps, total, want, surge)
		}
		if avail := oldRS.available + newRS.available; avail < want-unavail {
			t.Fatalf("step %d: %d available, fewer than %d-%d", steps, avail, want, unavail)
		}
		// The ReplicaSet controller makes the pods; the new ones become available if they can.
		oldRS.available = oldRS.spec()
		newRS.active = newRS.spec()
		if newReady {
			newRS.available = newRS.spec()
		}
	}
	t.Fatalf("rollout did not settle in 100 steps")
	return
}

func TestPlanRollingCompletesWithinLimits(t *testing.T) {
	for _, tc := range []struct{ want, surge, unavail int32 }{
		{4, 1, 1}, {10, 3, 2}, {3, 0, 1}, {3, 1, 0}, {1, 1, 0}, {5, 5, 0}, {5, 0, 5},
	} {
		t.Run(fmt.Sprintf("%d-%d-%d", tc.want, tc.surge, tc.unavail), func(t *testing.T) {
			steps, newRS, oldRS := simRollout(t, tc.want, tc.surge, tc.unavail, true)
			if newRS.spec() != tc.want || oldRS.spec() != 0 {
				t.Fatalf("after %d steps: new %d old %d, want new %d old 0", steps, newRS.spec(), oldRS.spec(), tc.want)
			}
			if steps < 2 {
				t.Errorf("a rolling update took %d steps; it should move in steps", steps)
			}
		})
	}
}

func TestPlanRollingStopsWhenNewPodsNeverBecomeReady(t *testing.T) {
	_, newRS, oldRS := simRollout(t, 4, 1, 1, false)
	// Kubernetes stops here: one surge pod, one old pod removed, 3 old pods still serving.
	if oldRS.spec() != 3 || newRS.spec() != 2 {
		t.Errorf("stuck rollout: old %d new %d, want old 3 new 2 (want-maxUnavailable old pods keep serving)", oldRS.spec(), newRS.spec())
	}
}

func TestPlanRollingScalesNewDownFirst(t *testing.T) {
	rs := &rsState{rs: &appsv1.ReplicaSet{Spec: appsv1.ReplicaSetSpec{Replicas: ptr[int32](5)}}, available: 5}
	plan := planRolling(2, 1, 0, rs, nil)
	if plan[rs] != 2 || len(plan) != 1 {
		t.Errorf("scale 5 -> 2: plan %v, want the ReplicaSet at 2", plan)
	}
}

func TestPodTemplateHashIsStable(t *testing.T) {
	tmpl := testDeployment("web", 3).Spec.Template
	h := podTemplateHash(&tmpl, nil)
	// Pinned, so that a change is seen and thought about. A changed hash does not roll a Deployment out again
	// (its ReplicaSet is found by template equality, as Kubernetes' EqualIgnoreHash), but it names the next
	// ReplicaSet differently. It changed once: k8s.io/apimachinery v0.35 no longer writes an empty
	// metadata.creationTimestamp as null into the template's JSON.
	if h != "84687d5fcc" {
		t.Errorf("hash of the test template changed: %s", h)
	}
	if !regexp.MustCompile(`^[bcdfghjklmnpqrstvwxz2456789]{1,10}$`).MatchString(h) {
		t.Errorf("hash %q has characters SafeEncodeString does not make", h)
	}
	// The same after a trip through the store's JSON and a deep copy.
	cp := api.DeepCopy(testDeployment("web", 3))
	if got := podTemplateHash(&cp.Spec.Template, nil); got != h {
		t.Errorf("hash after a JSON round trip: %s, want %s", got, h)
	}
	one := int32(1)
	if podTemplateHash(&tmpl, &one) == h {
		t.Error("collisionCount must change the hash")
	}
	tmpl.Spec.Containers[0].Image = "busybox"
	if podTemplateHash(&tmpl, nil) == h {
		t.Error("a changed image must change the hash")
	}
	if n := replicaSetName("web", h); n != "web-"+h {
		t.Errorf("replicaset name %q", n)
	}
}

func TestTemplatesEqualIgnoresHashLabel(t *testing.T) {
	a := testDeployment("web", 1).Spec.Template
	b := *a.DeepCopy()
	b.Labels[labelPodTemplateHash] = "abc"
	if !templatesEqual(&a, &b) {
		t.Error("templates differing only in pod-template-hash must be equal")
	}
	b.Spec.Containers[0].Image = "other"
	if templatesEqual(&a, &b) {
		t.Error("templates with different images must differ")
	}
	c := *a.DeepCopy()
	c.Labels = nil
	d := *a.DeepCopy()
	d.Labels = map[string]string{labelPodTemplateHash: "x"}
	if !templatesEqual(&c, &d) {
		t.Error("no labels and only the hash label must be equal")
	}
}

func TestPodsToDeleteOrder(t *testing.T) {
	t0 := time.Unix(1000, 0)
	pod := func(name string, phase corev1.PodPhase, ready bool, readySince time.Time, restarts int32, created time.Time) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}}
		p.Status.Phase = phase
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.NewTime(readySince)}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{RestartCount: restarts}}
		return p
	}
	pods := []*corev1.Pod{
		pod("ready-old", corev1.PodRunning, true, t0, 0, t0),
		pod("ready-new", corev1.PodRunning, true, t0.Add(time.Minute), 0, t0),
		pod("pending", corev1.PodPending, false, t0, 0, t0),
		pod("unready", corev1.PodRunning, false, t0, 0, t0),
		pod("unready-crashy", corev1.PodRunning, false, t0, 5, t0),
		pod("unready-young", corev1.PodRunning, false, t0, 0, t0.Add(time.Hour)),
	}
	var got []string
	for _, p := range podsToDelete(pods, len(pods)) {
		got = append(got, p.Name)
	}
	want := "pending unready-crashy unready-young unready ready-new ready-old"
	if strings.Join(got, " ") != want {
		t.Errorf("deletion order:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	if n := len(podsToDelete(pods, 2)); n != 2 {
		t.Errorf("asked for 2, got %d", n)
	}
}

func TestPodFromTemplate(t *testing.T) {
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-abc", UID: "rs-uid"}}
	api.SetAccount(rs, "alice")
	rs.Spec.Template = testDeployment("web", 1).Spec.Template
	rs.Spec.Template.Labels[labelPodTemplateHash] = "abc"
	rs.Spec.Template.Annotations = map[string]string{api.AccountAnnotation: "mallory", "note": "x"}
	p := podFromTemplate(rs, "web-abc-xyz12")
	if api.AccountOf(p) != "alice" || p.Annotations["note"] != "x" {
		t.Errorf("pod annotations %v: want account alice and the template's note", p.Annotations)
	}
	if p.Labels["app"] != "web" || p.Labels[labelPodTemplateHash] != "abc" {
		t.Errorf("pod labels %v", p.Labels)
	}
	ref := controllerRef(p.OwnerReferences, "ReplicaSet")
	if ref == nil || ref.UID != "rs-uid" || ref.Name != "web-abc" || ref.APIVersion != "apps/v1" {
		t.Errorf("owner references %+v", p.OwnerReferences)
	}
	if p.Spec.RestartPolicy != corev1.RestartPolicyAlways || p.Spec.TerminationGracePeriodSeconds == nil ||
		p.Spec.Containers[0].ReadinessProbe.PeriodSeconds != 10 {
		t.Errorf("pod spec not defaulted as the API defaults pods: %+v", p.Spec)
	}
	// The template is not shared with the pod.
	p.Labels["app"] = "changed"
	if rs.Spec.Template.Labels["app"] != "web" {
		t.Error("podFromTemplate shares the template's label map")
	}
}

func testDeployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "podinfo",
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 9898}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}}},
				}}},
			},
			RevisionHistoryLimit:    ptr[int32](10),
			ProgressDeadlineSeconds: ptr[int32](600),
		},
	}
	return d
}

// ---- the controllers against a real store, with a simulated kubelet ----

type wlHarness struct {
	t   *testing.T
	m   *Manager
	st  *store.Store
	ctx context.Context
	// maxPods lowers the registry's pods-per-account cap (0: the lab's).
	maxPods int
	// ready decides whether a pod the kubelet starts becomes ready.
	ready func(p *corev1.Pod) bool
	// check runs after the controllers' turn of every round.
	check func(round int)
}

func newWLHarness(t *testing.T) *wlHarness {
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &wlHarness{t: t, st: st, ctx: context.Background(), ready: func(*corev1.Pod) bool { return true }}
	acct := &api.Account{}
	acct.Name = api.DefaultAccount
	if err := st.Create(acct); err != nil {
		t.Fatal(err)
	}
	h.restart()
	return h
}

// anyImage resolves every image name: these tests run the controllers without containerd, and what they
// check is the objects the controllers write, not the images.
type anyImage struct{}

func (anyImage) Resolve(context.Context, string) (containerd.Image, error) { return nil, nil }

// restart replaces the Manager, as a daemon restart does: the controllers keep nothing between syncs.
func (h *wlHarness) restart() {
	h.m = New(Config{Lab: "t6wl", Store: h.st, Registry: registry.New(registry.Config{Store: h.st, Images: anyImage{}, MaxPodsPerAccount: h.maxPods}),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h.t.Cleanup(func() { workloadState.Delete(h.m) })
}

func (h *wlHarness) create(o metav1.Object) {
	h.t.Helper()
	api.SetAccount(o, "default")
	o.SetGeneration(1)
	if d, ok := o.(*appsv1.Deployment); ok {
		api.DefaultPodSpec(&d.Spec.Template.Spec)
	}
	if err := h.st.Create(o); err != nil {
		h.t.Fatal(err)
	}
}

// updateDeployment changes a Deployment as the API does: a spec change bumps generation.
func (h *wlHarness) updateDeployment(name string, fn func(d *appsv1.Deployment)) {
	h.t.Helper()
	_, err := h.st.Mutate(kindDeployment, "default", name, func(o metav1.Object) error {
		d := o.(*appsv1.Deployment)
		fn(d)
		api.DefaultPodSpec(&d.Spec.Template.Spec)
		d.Generation++
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *wlHarness) list(k api.Kind) []metav1.Object {
	h.t.Helper()
	objs, err := h.st.List(k, "default")
	if err != nil {
		h.t.Fatal(err)
	}
	return objs
}

// round runs every workload controller once over everything, then the kubelet.
func (h *wlHarness) round(i int) {
	h.t.Helper()
	keys := map[string]bool{}
	for _, o := range h.list(kindDeployment) {
		keys[o.GetName()] = true
	}
	for _, o := range h.list(kindReplicaSet) {
		if ref := controllerRef(o.GetOwnerReferences(), "Deployment"); ref != nil {
			keys[ref.Name] = true
		}
	}
	for k := range keys {
		if _, err := h.m.reconcileDeployment(h.ctx, "default", k); err != nil {
			h.t.Logf("round %d: deployment %s: %v", i, k, err)
		}
	}
	keys = map[string]bool{}
	for _, o := range h.list(kindReplicaSet) {
		keys[o.GetName()] = true
	}
	for _, o := range h.list(kindPod) {
		if ref := controllerRef(o.GetOwnerReferences(), "ReplicaSet"); ref != nil {
			keys[ref.Name] = true
		}
	}
	for k := range keys {
		if _, err := h.m.reconcileReplicaSet(h.ctx, "default", k); err != nil {
			h.t.Fatalf("round %d: replicaset %s: %v", i, k, err)
		}
	}
	if h.check != nil {
		h.check(i)
	}
	h.kubelet()
}

// kubelet finishes deletions and starts pending pods.
func (h *wlHarness) kubelet() {
	for _, o := range h.list(kindPod) {
		p := o.(*corev1.Pod)
		if p.DeletionTimestamp != nil {
			if err := h.st.Delete(kindPod, "default", p.Name); err != nil {
				h.t.Fatal(err)
			}
			continue
		}
		if p.Status.Phase != corev1.PodPending {
			continue
		}
		ready := h.ready(p)
		h.st.Mutate(kindPod, "default", p.Name, func(o metav1.Object) error {
			p := o.(*corev1.Pod)
			p.Status.Phase = corev1.PodRunning
			p.Status.PodIP = "10.244.0.9"
			setCondition(&p.Status, corev1.PodReady, ready, "")
			return nil
		})
	}
}

// settle runs rounds until nothing changes in the store for two rounds.
func (h *wlHarness) settle() int {
	h.t.Helper()
	last, same := "", 0
	for i := 0; i < 60; i++ {
		h.round(i)
		snap := h.snapshot()
		if snap == last {
			if same++; same >= 2 {
				return i
			}
		} else {
			same = 0
		}
		last = snap
	}
	h.t.Fatalf("did not settle in 60 rounds:\n%s", last)
	return 0
}

func (h *wlHarness) snapshot() string {
	var b strings.Builder
	for _, k := range []api.Kind{kindDeployment, kindReplicaSet, kindPod} {
		for _, o := range h.list(k) {
			fmt.Fprintf(&b, "%s/%s rv=%s\n", k.Singular, o.GetName(), o.GetResourceVersion())
		}
	}
	return b.String()
}

func (h *wlHarness) deployment(name string) *appsv1.Deployment {
	h.t.Helper()
	o, err := h.st.Get(kindDeployment, "default", name)
	if err != nil {
		h.t.Fatal(err)
	}
	return o.(*appsv1.Deployment)
}

func (h *wlHarness) replicaSets() map[string]*appsv1.ReplicaSet {
	out := map[string]*appsv1.ReplicaSet{}
	for _, o := range h.list(kindReplicaSet) {
		out[o.GetName()] = o.(*appsv1.ReplicaSet)
	}
	return out
}

// podCounts counts active and ready pods by ReplicaSet name.
func (h *wlHarness) podCounts() (active, ready map[string]int) {
	active, ready = map[string]int{}, map[string]int{}
	for _, o := range h.list(kindPod) {
		p := o.(*corev1.Pod)
		ref := controllerRef(p.OwnerReferences, "ReplicaSet")
		if ref == nil || !podActive(p) {
			continue
		}
		active[ref.Name]++
		if r, _ := podReadyCondition(p); r {
			ready[ref.Name]++
		}
	}
	return
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func condition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) appsv1.DeploymentCondition {
	if c := deploymentCondition0(d.Status, t); c != nil {
		return *c
	}
	return appsv1.DeploymentCondition{}
}

func TestDeploymentRollingUpdate(t *testing.T) {
	h := newWLHarness(t)
	h.create(testDeployment("web", 4))
	h.settle()

	d := h.deployment("web")
	rss := h.replicaSets()
	if len(rss) != 1 {
		t.Fatalf("%d replicasets, want 1", len(rss))
	}
	hash := podTemplateHash(&d.Spec.Template, nil)
	first := rss["web-"+hash]
	if first == nil {
		t.Fatalf("replicaset web-%s missing: %v", hash, rss)
	}
	if first.Spec.Selector.MatchLabels[labelPodTemplateHash] != hash || first.Spec.Template.Labels[labelPodTemplateHash] != hash {
		t.Errorf("replicaset selector/template lack pod-template-hash=%s", hash)
	}
	if first.Annotations[annRevision] != "1" || d.Annotations[annRevision] != "1" {
		t.Errorf("revision: rs %q deployment %q, want 1", first.Annotations[annRevision], d.Annotations[annRevision])
	}
	for _, o := range h.list(kindPod) {
		p := o.(*corev1.Pod)
		if !regexp.MustCompile(`^web-` + hash + `-[bcdfghjklmnpqrstvwxz2456789]{5}$`).MatchString(p.Name) {
			t.Errorf("pod name %q is not <rs>-<5 chars>", p.Name)
		}
		if p.Labels[labelPodTemplateHash] != hash || !ownedBy(p, "ReplicaSet", first.UID) {
			t.Errorf("pod %s: labels %v owners %v", p.Name, p.Labels, p.OwnerReferences)
		}
	}
	st := d.Status
	if st.Replicas != 4 || st.UpdatedReplicas != 4 || st.ReadyReplicas != 4 || st.AvailableReplicas != 4 || st.UnavailableReplicas != 0 || st.ObservedGeneration != 1 {
		t.Errorf("status after creation: %+v", st)
	}
	if c := condition(d, appsv1.DeploymentAvailable); c.Status != corev1.ConditionTrue || c.Reason != reasonMinAvailable {
		t.Errorf("Available condition %+v", c)
	}
	if c := condition(d, appsv1.DeploymentProgressing); c.Status != corev1.ConditionTrue || c.Reason != reasonNewRSAvailable {
		t.Errorf("Progressing condition %+v", c)
	}
	if rs := h.replicaSets()["web-"+hash]; rs.Status.Replicas != 4 || rs.Status.ReadyReplicas != 4 || rs.Status.AvailableReplicas != 4 ||
		rs.Status.FullyLabeledReplicas != 4 || rs.Status.ObservedGeneration != rs.Generation {
		t.Errorf("replicaset status %+v (generation %d)", rs.Status, rs.Generation)
	}

	// Roll out a new image: never more than 4+1 pods, never fewer than 4-1 ready.
	rounds := 0
	h.check = func(i int) {
		rounds++
		active, ready := h.podCounts()
		if n := sum(active); n > 5 {
			t.Errorf("round %d: %d active pods, more than replicas+maxSurge=5: %v", i, n, active)
		}
		if n := sum(ready); n < 3 {
			t.Errorf("round %d: %d ready pods, fewer than replicas-maxUnavailable=3: %v", i, n, ready)
		}
	}
	h.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "busybox" })
	h.settle()
	if rounds < 4 {
		t.Errorf("the rollout took %d rounds; a rolling update goes in steps", rounds)
	}
	d = h.deployment("web")
	hash2 := podTemplateHash(&d.Spec.Template, nil)
	rss = h.replicaSets()
	if len(rss) != 2 || replicasOf(rss["web-"+hash].Spec.Replicas) != 0 || replicasOf(rss["web-"+hash2].Spec.Replicas) != 4 {
		t.Fatalf("after the rollout: %v", rsSummary(rss))
	}
	if d.Annotations[annRevision] != "2" || rss["web-"+hash2].Annotations[annRevision] != "2" {
		t.Errorf("revision after rollout: %q", d.Annotations[annRevision])
	}
	if d.Status.ObservedGeneration != d.Generation || d.Status.UpdatedReplicas != 4 || d.Status.Replicas != 4 || d.Status.AvailableReplicas != 4 {
		t.Errorf("status after rollout: %+v (generation %d)", d.Status, d.Generation)
	}
	if c := condition(d, appsv1.DeploymentProgressing); c.Reason != reasonNewRSAvailable || !strings.Contains(c.Message, hash2) {
		t.Errorf("Progressing after rollout: %+v", c)
	}
	active, _ := h.podCounts()
	if active["web-"+hash2] != 4 || sum(active) != 4 {
		t.Errorf("pods after rollout: %v", active)
	}

	// Roll back to the first template: its ReplicaSet comes back with the next revision.
	h.check = nil
	h.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "podinfo" })
	h.settle()
	rss = h.replicaSets()
	if len(rss) != 2 || replicasOf(rss["web-"+hash].Spec.Replicas) != 4 || rss["web-"+hash].Annotations[annRevision] != "3" {
		t.Errorf("after rollback: %v", rsSummary(rss))
	}
	if h.deployment("web").Annotations[annRevision] != "3" {
		t.Errorf("deployment revision after rollback %q, want 3", h.deployment("web").Annotations[annRevision])
	}

	// Scale up and down.
	h.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr[int32](6) })
	h.settle()
	if a, _ := h.podCounts(); sum(a) != 6 || h.deployment("web").Status.ReadyReplicas != 6 {
		t.Errorf("scaled to 6: pods %v status %+v", a, h.deployment("web").Status)
	}
	h.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr[int32](1) })
	h.settle()
	if a, _ := h.podCounts(); sum(a) != 1 || h.deployment("web").Status.Replicas != 1 {
		t.Errorf("scaled to 1: pods %v status %+v", a, h.deployment("web").Status)
	}
	h.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Replicas = ptr[int32](0) })
	h.settle()
	if a, _ := h.podCounts(); sum(a) != 0 {
		t.Errorf("scaled to 0: pods %v", a)
	}
}

func rsSummary(rss map[string]*appsv1.ReplicaSet) string {
	var parts []string
	for n, rs := range rss {
		parts = append(parts, fmt.Sprintf("%s=%d(rev %s)", n, replicasOf(rs.Spec.Replicas), rs.Annotations[annRevision]))
	}
	return strings.Join(parts, " ")
}

func TestDeploymentStuckRolloutKeepsOldPods(t *testing.T) {
	h := newWLHarness(t)
	h.create(testDeployment("web", 4))
	h.settle()
	h.ready = func(p *corev1.Pod) bool { return p.Spec.Containers[0].Image != "broken" }
	h.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "broken" })
	h.settle()
	active, ready := h.podCounts()
	if sum(active) != 5 || sum(ready) != 3 {
		t.Errorf("stuck rollout: active %v ready %v, want 5 pods of which the 3 old ones ready", active, ready)
	}
	d := h.deployment("web")
	if msg, done := rolloutStatusForTest(d); done {
		t.Errorf("rollout reported done: %s", msg)
	}
	if d.Status.UpdatedReplicas != 2 || d.Status.AvailableReplicas != 3 || d.Status.UnavailableReplicas != 2 {
		t.Errorf("stuck status %+v", d.Status)
	}
	if c := condition(d, appsv1.DeploymentAvailable); c.Status != corev1.ConditionTrue {
		t.Errorf("3 of 4 available with maxUnavailable 1 is minimum availability: %+v", c)
	}
	if c := condition(d, appsv1.DeploymentProgressing); c.Status != corev1.ConditionTrue || c.Reason == reasonNewRSAvailable {
		t.Errorf("Progressing %+v", c)
	}
	// Past the progress deadline, Progressing turns False.
	h.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.ProgressDeadlineSeconds = ptr[int32](1) })
	time.Sleep(2100 * time.Millisecond)
	h.settle()
	if c := condition(h.deployment("web"), appsv1.DeploymentProgressing); c.Status != corev1.ConditionFalse || c.Reason != reasonTimedOut {
		t.Errorf("after the deadline: %+v", c)
	}
}

// rolloutStatusForTest mirrors cmd/pi's rolloutStatus checks.
func rolloutStatusForTest(d *appsv1.Deployment) (string, bool) {
	want, st := *d.Spec.Replicas, d.Status
	switch {
	case st.ObservedGeneration < d.Generation:
		return "spec not observed", false
	case st.UpdatedReplicas < want:
		return "updating", false
	case st.Replicas > st.UpdatedReplicas:
		return "old pending", false
	case st.AvailableReplicas < st.UpdatedReplicas:
		return "unavailable", false
	}
	return "done", true
}

func TestDeploymentRecreate(t *testing.T) {
	h := newWLHarness(t)
	d := testDeployment("db", 2)
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	h.create(d)
	h.settle()
	firstRS := ""
	for n := range h.replicaSets() {
		firstRS = n
	}
	h.check = func(i int) {
		var oldAlive, newActive int
		for _, o := range h.list(kindPod) {
			p := o.(*corev1.Pod)
			if ref := controllerRef(p.OwnerReferences, "ReplicaSet"); ref.Name == firstRS {
				oldAlive++
			} else if podActive(p) {
				newActive++
			}
		}
		if oldAlive > 0 && newActive > 0 {
			t.Errorf("round %d: Recreate runs %d new pods while %d old ones exist", i, newActive, oldAlive)
		}
	}
	h.updateDeployment("db", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "busybox" })
	h.settle()
	active, _ := h.podCounts()
	if active[firstRS] != 0 || sum(active) != 2 {
		t.Errorf("after Recreate: %v", active)
	}
	if done, _ := rolloutStatusForTest(h.deployment("db")); done != "done" {
		t.Errorf("rollout status %q", done)
	}
}

func TestDeploymentRevisionHistoryLimit(t *testing.T) {
	h := newWLHarness(t)
	d := testDeployment("web", 1)
	d.Spec.RevisionHistoryLimit = ptr[int32](1)
	h.create(d)
	h.settle()
	for _, img := range []string{"a", "b", "c"} {
		h.updateDeployment("web", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = img })
		h.settle()
	}
	rss := h.replicaSets()
	if len(rss) != 2 {
		t.Errorf("revisionHistoryLimit 1: %d replicasets left (%s), want the current one and 1 old", len(rss), rsSummary(rss))
	}
	revs := map[string]bool{}
	for _, rs := range rss {
		revs[rs.Annotations[annRevision]] = true
	}
	if !revs["4"] || !revs["3"] {
		t.Errorf("kept revisions %v, want 3 and 4", revs)
	}
}

func TestDeploymentCascadeDeleteSurvivesRestart(t *testing.T) {
	h := newWLHarness(t)
	h.create(testDeployment("web", 3))
	h.settle()
	dep := h.deployment("web")
	h.m.event(dep, "Deployment", corev1.EventTypeNormal, "Test", "an event about the deployment")
	if err := h.m.DeleteObject(h.ctx, "default", kindDeployment, dep); err != nil {
		t.Fatal(err)
	}
	h.round(0)
	if rss := h.replicaSets(); len(rss) != 1 {
		t.Fatalf("replicaset removed before its pods: %v", rss)
	}
	for _, rs := range h.replicaSets() {
		if rs.DeletionTimestamp == nil {
			t.Errorf("replicaset %s not being deleted after its deployment's deletion", rs.Name)
		}
	}
	h.restart() // the daemon stops mid-cascade and starts again
	h.settle()
	for _, k := range []api.Kind{kindDeployment, kindReplicaSet, kindPod} {
		if objs := h.list(k); len(objs) != 0 {
			t.Errorf("%d %s left after the cascade", len(objs), k.Plural)
		}
	}
	for _, o := range h.list(kindEvent) {
		if o.(*corev1.Event).InvolvedObject.UID == dep.UID {
			t.Errorf("event %s about the deleted deployment left", o.GetName())
		}
	}
}

func TestReplicaSetReplacesLostPodsAndCollectsOrphans(t *testing.T) {
	h := newWLHarness(t)
	h.create(testDeployment("web", 2))
	h.settle()
	pods := h.list(kindPod)
	// A pod vanishes, another fails: both are replaced.
	if err := h.st.Delete(kindPod, "default", pods[0].GetName()); err != nil {
		t.Fatal(err)
	}
	h.st.Mutate(kindPod, "default", pods[1].GetName(), func(o metav1.Object) error {
		o.(*corev1.Pod).Status.Phase = corev1.PodFailed
		return nil
	})
	h.settle()
	if a, _ := h.podCounts(); sum(a) != 2 {
		t.Errorf("after losing pods: %v active, want 2", a)
	}
	// A ReplicaSet removed from the store behind the controllers' back: its pods are collected,
	// and the Deployment makes it again.
	var rsName string
	for n := range h.replicaSets() {
		rsName = n
	}
	if err := h.st.Delete(kindReplicaSet, "default", rsName); err != nil {
		t.Fatal(err)
	}
	h.round(0)
	h.settle()
	rss := h.replicaSets()
	if len(rss) != 1 || rss[rsName] == nil {
		t.Fatalf("replicaset not remade: %s", rsSummary(rss))
	}
	for _, o := range h.list(kindPod) {
		if !ownedBy(o, "ReplicaSet", rss[rsName].UID) {
			t.Errorf("pod %s of the removed replicaset survived", o.GetName())
		}
	}
	// A ReplicaSet whose Deployment is gone is collected too.
	if err := h.st.Delete(kindDeployment, "default", "web"); err != nil {
		t.Fatal(err)
	}
	h.settle()
	if n := len(h.list(kindReplicaSet)) + len(h.list(kindPod)); n != 0 {
		t.Errorf("%d objects of a removed deployment left", n)
	}
}

func TestDeploymentHashCollision(t *testing.T) {
	h := newWLHarness(t)
	d := testDeployment("web", 1)
	api.DefaultPodSpec(&d.Spec.Template.Spec)
	hash := podTemplateHash(&d.Spec.Template, nil)
	// Someone's ReplicaSet holds the name the Deployment's would get.
	squat := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-" + hash}, Spec: appsv1.ReplicaSetSpec{
		Replicas: ptr[int32](0), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"x": "y"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"x": "y"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "other"}}}}}}
	h.create(squat)
	h.create(d)
	h.settle()
	d = h.deployment("web")
	if d.Status.CollisionCount == nil || *d.Status.CollisionCount != 1 {
		t.Fatalf("collisionCount %v, want 1", d.Status.CollisionCount)
	}
	want := "web-" + podTemplateHash(&d.Spec.Template, d.Status.CollisionCount)
	if rs := h.replicaSets()[want]; rs == nil || !ownedBy(rs, "Deployment", d.UID) || d.Status.AvailableReplicas != 1 {
		t.Errorf("after a collision: %s, status %+v", rsSummary(h.replicaSets()), d.Status)
	}
}

func TestReplicaSetMinReadySeconds(t *testing.T) {
	h := newWLHarness(t)
	d := testDeployment("web", 1)
	d.Spec.MinReadySeconds = 2
	h.create(d)
	h.round(0)
	h.round(1)
	h.round(2)
	var rs *appsv1.ReplicaSet
	for _, r := range h.replicaSets() {
		rs = r
	}
	if rs.Spec.MinReadySeconds != 2 || rs.Status.ReadyReplicas != 1 || rs.Status.AvailableReplicas != 0 {
		t.Fatalf("ready but not yet minReadySeconds: %+v", rs.Status)
	}
	after, err := h.m.reconcileReplicaSet(h.ctx, "default", rs.Name)
	if err != nil || after <= 0 || after > 3*time.Second {
		t.Fatalf("requeue after %v (%v), want within minReadySeconds", after, err)
	}
	time.Sleep(after)
	h.settle()
	if d := h.deployment("web"); d.Status.AvailableReplicas != 1 {
		t.Errorf("available after minReadySeconds: %+v", d.Status)
	}
}

// A ReplicaSet's pods go through the registry like any client's, so the account's pod cap holds for a
// Deployment scaled past it (defect: a Deployment with replicas 520 made 520 pods past the 500 cap).
func TestDeploymentHeldToPodCap(t *testing.T) {
	h := newWLHarness(t)
	h.maxPods = 10
	h.restart()
	h.create(testDeployment("big", 25))
	for i := 0; i < 8; i++ {
		h.m.reconcileDeployment(h.ctx, "default", "big")
		for _, o := range h.list(kindReplicaSet) {
			h.m.reconcileReplicaSet(h.ctx, "default", o.GetName())
		}
	}
	if n := len(h.list(kindPod)); n != 10 {
		t.Fatalf("%d pods after scaling to 25 with a cap of 10, want 10", n)
	}
	rs := h.list(kindReplicaSet)
	if len(rs) != 1 {
		t.Fatalf("%d replicasets, want 1", len(rs))
	}
	st := rs[0].(*appsv1.ReplicaSet).Status
	var msg string
	for _, c := range st.Conditions {
		if c.Type == appsv1.ReplicaSetReplicaFailure {
			msg = c.Message
		}
	}
	if !strings.Contains(msg, "holds 10 pods") {
		t.Fatalf("ReplicaFailure condition %q, want it to say the account holds 10 pods", msg)
	}
}
