package controller

// The Deployment and ReplicaSet controllers, after kubernetes/pkg/controller/{deployment,replicaset}.
//
// Differences from Kubernetes that matter to a reader of its code: the store is read directly (no informer
// cache), so no "expectations" are needed: a pod this controller created is in the store before the next sync
// runs. The Deployment controller counts ready and available pods itself from the pods of each ReplicaSet
// instead of trusting ReplicaSet status, and never counts more available pods in a ReplicaSet than its
// spec.replicas; a rollout step therefore never acts on a stale status. Ownership goes by controller
// ownerReference only (no adoption of pods that merely match a selector); pods or ReplicaSets whose controller
// is gone are deleted, as Kubernetes' garbage collector does.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/store"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
)

const (
	labelPodTemplateHash = appsv1.DefaultDeploymentUniqueLabelKey // "pod-template-hash"
	annRevision          = "deployment.kubernetes.io/revision"
	annDesiredReplicas   = "deployment.kubernetes.io/desired-replicas"
	annMaxReplicas       = "deployment.kubernetes.io/max-replicas"

	reasonNewRSAvailable = "NewReplicaSetAvailable"
	reasonRSUpdated      = "ReplicaSetUpdated"
	reasonNewRSCreated   = "NewReplicaSetCreated"
	reasonFoundNewRS     = "FoundNewReplicaSet"
	reasonTimedOut       = "ProgressDeadlineExceeded"
	reasonPaused         = "DeploymentPaused"
	reasonResumed        = "DeploymentResumed"
	reasonMinAvailable   = "MinimumReplicasAvailable"
	reasonMinUnavailable = "MinimumReplicasUnavailable"
)

// workloads is the state of the workload controllers of one Manager. It lives beside the Manager (keyed by its
// pointer) so that these controllers need no fields in Manager.
type workloads struct {
	deployments *queue
	replicaSets *queue
	probes      *prober
}

var workloadState sync.Map // *Manager -> *workloads

func (m *Manager) workloads() *workloads {
	if w, ok := workloadState.Load(m); ok {
		return w.(*workloads)
	}
	w, _ := workloadState.LoadOrStore(m, &workloads{deployments: newQueue(), replicaSets: newQueue(), probes: newProber(m)})
	return w.(*workloads)
}

// routeWorkloads queues the owner of what changed: a pod's ReplicaSet, a ReplicaSet's Deployment. Pod events
// also start and stop readiness probers.
func (m *Manager) routeWorkloads(ev api.WatchEvent, meta *metav1.ObjectMeta) {
	w := m.workloads()
	switch ev.Kind {
	case "Pod":
		if ref := controllerRef(meta.OwnerReferences, "ReplicaSet"); ref != nil {
			w.replicaSets.Add(objKey(ev.Account, ref.Name))
		}
		var pod corev1.Pod
		if err := unmarshal(ev.Object, &pod); err == nil {
			api.SetAccount(&pod, ev.Account)
			w.probes.sync(&pod, ev.Type == api.Deleted)
		}
	case "ReplicaSet":
		w.replicaSets.Add(objKey(ev.Account, meta.Name))
		if ref := controllerRef(meta.OwnerReferences, "Deployment"); ref != nil {
			w.deployments.Add(objKey(ev.Account, ref.Name))
		}
	case "Deployment":
		w.deployments.Add(objKey(ev.Account, meta.Name))
	}
}

// resyncWorkloads queues every Deployment and ReplicaSet, and every owner named by a ReplicaSet or pod, so
// that dependents of owners that vanished (a daemon stopped mid-cascade) are found too.
func (m *Manager) resyncWorkloads() {
	w := m.workloads()
	if objs, err := m.Store.List(kindDeployment, ""); err == nil {
		for _, o := range objs {
			w.deployments.Add(objKey(api.AccountOf(o), o.GetName()))
		}
	}
	if objs, err := m.Store.List(kindReplicaSet, ""); err == nil {
		for _, o := range objs {
			w.replicaSets.Add(objKey(api.AccountOf(o), o.GetName()))
			if ref := controllerRef(o.GetOwnerReferences(), "Deployment"); ref != nil {
				w.deployments.Add(objKey(api.AccountOf(o), ref.Name))
			}
		}
	}
	if objs, err := m.Store.List(kindPod, ""); err == nil {
		for _, o := range objs {
			if ref := controllerRef(o.GetOwnerReferences(), "ReplicaSet"); ref != nil {
				w.replicaSets.Add(objKey(api.AccountOf(o), ref.Name))
			}
		}
		w.probes.resync(objs)
	}
}

func (m *Manager) startWorkloads(ctx context.Context) {
	w := m.workloads()
	m.startWorkers(ctx, w.replicaSets, 2, m.reconcileReplicaSet)
	m.startWorkers(ctx, w.deployments, 2, m.reconcileDeployment)
	w.probes.start(ctx)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		<-ctx.Done()
		w.replicaSets.Close()
		w.deployments.Close()
		w.probes.stopAll()
		workloadState.Delete(m)
	}()
	// Run's first resync came before ctx was known, too early to start probers.
	if objs, err := m.Store.List(kindPod, ""); err == nil {
		w.probes.resync(objs)
	}
}

// controllerRef returns the controlling owner of the given kind, if any.
func controllerRef(refs []metav1.OwnerReference, kind string) *metav1.OwnerReference {
	for i := range refs {
		if r := &refs[i]; r.Controller != nil && *r.Controller && r.Kind == kind {
			return r
		}
	}
	return nil
}

func ownedBy(o metav1.Object, kind string, uid types.UID) bool {
	ref := controllerRef(o.GetOwnerReferences(), kind)
	return ref != nil && ref.UID == uid
}

func newControllerRef(o metav1.Object, kind string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: kind, Name: o.GetName(), UID: o.GetUID(),
		Controller: ptr(true), BlockOwnerDeletion: ptr(true)}
}

// collectOrphans deletes objects whose controller (of ownerKind, named ownerName) is not the live object
// with UID keep, as Kubernetes' garbage collector does for dependents of a deleted owner.
func (m *Manager) collectOrphans(ctx context.Context, account string, k api.Kind, objs []metav1.Object, ownerKind, ownerName string, keep types.UID) error {
	var errs []error
	for _, o := range objs {
		ref := controllerRef(o.GetOwnerReferences(), ownerKind)
		if ref == nil || ref.Name != ownerName || ref.UID == keep || o.GetDeletionTimestamp() != nil {
			continue
		}
		m.Log.Info("deleting orphan", "account", account, "kind", k.Name, "name", o.GetName(), "owner", ownerKind+"/"+ownerName)
		if err := m.DeleteObject(ctx, account, k, o); err != nil && !store.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete orphan %s %q: %w", k.Singular, o.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// finishCascade deletes an owner's dependents and, once none is left in the store, the owner itself. The
// dependents' own deletion events bring the owner back here.
func (m *Manager) finishCascade(ctx context.Context, k api.Kind, owner metav1.Object, depKind api.Kind, deps []metav1.Object) error {
	account := api.AccountOf(owner)
	var errs []error
	for _, d := range deps {
		if d.GetDeletionTimestamp() == nil {
			if err := m.DeleteObject(ctx, account, depKind, d); err != nil && !store.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete %s %q: %w", depKind.Singular, d.GetName(), err))
			}
		}
	}
	if len(deps) > 0 || len(errs) > 0 {
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("%s %q: cascade: %w", k.Singular, owner.GetName(), err)
		}
		return nil
	}
	m.deleteEvents(account, string(owner.GetUID()))
	if err := m.Store.Delete(k, account, owner.GetName()); err != nil && !store.IsNotFound(err) {
		return fmt.Errorf("%s %q: remove from store: %w", k.Singular, owner.GetName(), err)
	}
	return nil
}

// ownerAndDependents reads the owner (kind k, name) and picks, from deps (every object of depKind in the
// account), the ones it controls. done says the reconcile has nothing more to do: the owner is gone (its
// orphans were collected) or being deleted (the cascade was driven). On the way, dependents left by an
// earlier owner of the same name are collected, as Kubernetes' garbage collector does.
func (m *Manager) ownerAndDependents(ctx context.Context, account string, k api.Kind, name string, depKind api.Kind, deps []metav1.Object) (owner metav1.Object, owned []metav1.Object, done bool, err error) {
	owner, err = m.Store.Get(k, account, name)
	if store.IsNotFound(err) {
		return nil, nil, true, m.collectOrphans(ctx, account, depKind, deps, k.Name, name, "")
	}
	if err != nil {
		return nil, nil, true, err
	}
	for _, d := range deps {
		if ownedBy(d, k.Name, owner.GetUID()) {
			owned = append(owned, d)
		}
	}
	if owner.GetDeletionTimestamp() != nil {
		return owner, owned, true, m.finishCascade(ctx, k, owner, depKind, owned)
	}
	if err := m.collectOrphans(ctx, account, depKind, deps, k.Name, name, owner.GetUID()); err != nil {
		m.Log.Warn("orphans", "account", account, "kind", k.Name, "name", name, "err", err)
	}
	return owner, owned, false, nil
}

func replicasOf(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// ---- ReplicaSet controller ----

func podActive(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

func podReadyCondition(p *corev1.Pod) (bool, time.Time) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue, c.LastTransitionTime.Time
		}
	}
	return false, time.Time{}
}

// podAvailable: ready for at least minReady seconds. wait is how long until a ready pod becomes available.
func podAvailable(p *corev1.Pod, minReady int32, now time.Time) (ok bool, wait time.Duration) {
	ready, since := podReadyCondition(p)
	if !ready {
		return false, 0
	}
	if minReady <= 0 {
		return true, 0
	}
	at := since.Add(time.Duration(minReady) * time.Second)
	if now.Before(at) {
		return false, at.Sub(now)
	}
	return true, 0
}

func (m *Manager) reconcileReplicaSet(ctx context.Context, account, name string) (time.Duration, error) {
	podObjs, err := m.Store.List(kindPod, account)
	if err != nil {
		return 0, err
	}
	o, owned, done, err := m.ownerAndDependents(ctx, account, kindReplicaSet, name, kindPod, podObjs)
	if done || err != nil {
		return 0, err
	}
	rs := o.(*appsv1.ReplicaSet)
	if ref := controllerRef(rs.OwnerReferences, "Deployment"); ref != nil {
		dep, err := m.Store.Get(kindDeployment, account, ref.Name)
		if store.IsNotFound(err) || (err == nil && dep.GetUID() != ref.UID) {
			m.Log.Info("deleting replicaset whose deployment is gone", "account", account, "replicaset", name, "deployment", ref.Name)
			return 0, m.DeleteObject(ctx, account, kindReplicaSet, rs)
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	if err != nil {
		m.event(rs, "ReplicaSet", corev1.EventTypeWarning, "InvalidSelector", fmt.Sprintf("invalid selector: %v", err))
		return 0, nil
	}

	var active []*corev1.Pod
	for _, o := range owned {
		p := o.(*corev1.Pod)
		if !sel.Matches(labels.Set(p.Labels)) {
			// Its labels were changed: it no longer belongs here (Kubernetes releases such pods).
			m.releasePod(account, p, rs.UID)
			continue
		}
		if podActive(p) {
			active = append(active, p)
		}
	}

	want := int(replicasOf(rs.Spec.Replicas))
	var manageErr error
	switch diff := len(active) - want; {
	case diff < 0:
		manageErr = m.createPods(rs, -diff)
	case diff > 0:
		for _, p := range podsToDelete(active, diff) {
			if err := m.DeleteObject(ctx, account, kindPod, p); err != nil && !store.IsNotFound(err) {
				manageErr = errors.Join(manageErr, fmt.Errorf("delete pod %q: %w", p.Name, err))
				continue
			}
			m.event(rs, "ReplicaSet", corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: "+p.Name)
		}
	}

	st, wait := replicaSetStatus(rs, active, time.Now(), manageErr)
	if err := m.writeReplicaSetStatus(rs, st); err != nil {
		return 0, err
	}
	if manageErr != nil {
		return 0, fmt.Errorf("replicaset %q: %w", name, manageErr)
	}
	if wait > 0 {
		// A ready pod becomes available once minReadySeconds have passed; nothing else would wake us.
		wait += 100 * time.Millisecond
	}
	return wait, nil
}

func (m *Manager) releasePod(account string, p *corev1.Pod, uid types.UID) {
	_, err := m.Store.Mutate(kindPod, account, p.Name, func(o metav1.Object) error {
		var keep []metav1.OwnerReference
		for _, r := range o.GetOwnerReferences() {
			if r.UID != uid {
				keep = append(keep, r)
			}
		}
		if len(keep) == len(o.GetOwnerReferences()) {
			return store.ErrUnchanged
		}
		o.SetOwnerReferences(keep)
		return nil
	})
	if err != nil && !store.IsNotFound(err) {
		m.Log.Warn("release pod", "account", account, "pod", p.Name, "err", err)
	}
}

// podFromTemplate makes a pod of a ReplicaSet, defaulted as the API defaults pods.
func podFromTemplate(rs *appsv1.ReplicaSet, name string) *corev1.Pod {
	t := rs.Spec.Template.DeepCopy()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			Labels:          t.Labels,
			Annotations:     t.Annotations,
			OwnerReferences: []metav1.OwnerReference{newControllerRef(rs, "ReplicaSet")},
		},
		Spec:   t.Spec,
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	// The template's annotations may carry another account's mark; the pod belongs where its RS does.
	delete(pod.Annotations, api.AccountAnnotation)
	api.SetAccount(pod, api.AccountOf(rs))
	api.DefaultPodSpec(&pod.Spec)
	pod.Generation = 1
	return pod
}

func (m *Manager) createPods(rs *appsv1.ReplicaSet, n int) error {
	var errs []error
	for i := 0; i < n; i++ {
		var err error
		// A random 5-character suffix can collide; try another one, as generateName's callers do.
		for try := 0; try < 5; try++ {
			pod := podFromTemplate(rs, rs.Name+"-"+server.RandSuffix())
			// Through the registry, as any client's pod: the account's pod cap holds for a ReplicaSet too.
			if err = m.createObject(api.AccountOf(rs), pod); err == nil {
				m.event(rs, "ReplicaSet", corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: "+pod.Name)
				break
			}
			if !store.IsAlreadyExists(err) {
				break
			}
		}
		if err != nil {
			m.event(rs, "ReplicaSet", corev1.EventTypeWarning, "FailedCreate", fmt.Sprintf("Error creating: %v", err))
			errs = append(errs, fmt.Errorf("create pod: %w", err))
			break
		}
	}
	return errors.Join(errs...)
}

// podsToDelete picks the n pods a scale-down removes first, as Kubernetes' ActivePods ordering does: pending
// before running, not ready before ready, ready for less time first, more restarts first, newest first.
func podsToDelete(pods []*corev1.Pod, n int) []*corev1.Pod {
	s := append([]*corev1.Pod(nil), pods...)
	phaseRank := func(p *corev1.Pod) int {
		switch p.Status.Phase {
		case corev1.PodPending, "":
			return 0
		case corev1.PodUnknown:
			return 1
		}
		return 2
	}
	restarts := func(p *corev1.Pod) int32 {
		var max int32
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount > max {
				max = cs.RestartCount
			}
		}
		return max
	}
	sort.SliceStable(s, func(i, j int) bool {
		a, b := s[i], s[j]
		if ra, rb := phaseRank(a), phaseRank(b); ra != rb {
			return ra < rb
		}
		ar, at := podReadyCondition(a)
		br, bt := podReadyCondition(b)
		if ar != br {
			return !ar
		}
		if ar && !at.Equal(bt) {
			return at.After(bt)
		}
		if x, y := restarts(a), restarts(b); x != y {
			return x > y
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.After(b.CreationTimestamp.Time)
		}
		return a.Name > b.Name
	})
	if n > len(s) {
		n = len(s)
	}
	return s[:n]
}

// replicaSetStatus counts a ReplicaSet's active pods; wait is when the next ready pod turns available.
func replicaSetStatus(rs *appsv1.ReplicaSet, active []*corev1.Pod, now time.Time, manageErr error) (appsv1.ReplicaSetStatus, time.Duration) {
	st := appsv1.ReplicaSetStatus{
		Replicas:           int32(len(active)),
		ObservedGeneration: rs.Generation,
		Conditions:         append([]appsv1.ReplicaSetCondition(nil), rs.Status.Conditions...),
	}
	tmpl := labels.SelectorFromSet(rs.Spec.Template.Labels)
	var wait time.Duration
	for _, p := range active {
		if tmpl.Matches(labels.Set(p.Labels)) {
			st.FullyLabeledReplicas++
		}
		if ready, _ := podReadyCondition(p); ready {
			st.ReadyReplicas++
		}
		ok, w := podAvailable(p, rs.Spec.MinReadySeconds, now)
		if ok {
			st.AvailableReplicas++
		} else if w > 0 && (wait == 0 || w < wait) {
			wait = w
		}
	}
	// ReplicaFailure says why pods could not be made, and goes once they can.
	var keep []appsv1.ReplicaSetCondition
	for _, c := range st.Conditions {
		if c.Type != appsv1.ReplicaSetReplicaFailure {
			keep = append(keep, c)
		}
	}
	if manageErr != nil {
		c := appsv1.ReplicaSetCondition{Type: appsv1.ReplicaSetReplicaFailure, Status: corev1.ConditionTrue,
			Reason: "FailedCreate", Message: manageErr.Error(), LastTransitionTime: metav1.NewTime(now)}
		for _, old := range st.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		keep = append(keep, c)
	}
	st.Conditions = keep
	return st, wait
}

func (m *Manager) writeReplicaSetStatus(rs *appsv1.ReplicaSet, st appsv1.ReplicaSetStatus) error {
	_, err := m.Store.Mutate(kindReplicaSet, api.AccountOf(rs), rs.Name, func(o metav1.Object) error {
		cur := o.(*appsv1.ReplicaSet)
		if cur.UID != rs.UID || cur.DeletionTimestamp != nil {
			return store.ErrUnchanged
		}
		// The status counted the pods of the spec generation we read; a newer spec is observed next sync.
		if cur.Generation != rs.Generation {
			st.ObservedGeneration = cur.Status.ObservedGeneration
		}
		if jsonEqual(cur.Status, st) {
			return store.ErrUnchanged
		}
		cur.Status = st
		return nil
	})
	if store.IsNotFound(err) {
		return nil
	}
	return err
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// ---- Deployment controller ----

// rsState is a ReplicaSet with its pods counted.
type rsState struct {
	rs *appsv1.ReplicaSet
	// active pods: not terminating, not finished. ready/available count among them.
	active, ready, available int32
	// alive pods: not finished, terminating ones included (Recreate waits for them to be gone).
	alive int32
}

func (s *rsState) spec() int32 { return replicasOf(s.rs.Spec.Replicas) }

// safeAvailable never counts more than spec.replicas: pods above it are about to be deleted.
func (s *rsState) safeAvailable() int32 { return min(s.available, s.spec()) }

func revisionOf(o metav1.Object) int64 {
	v, _ := strconv.ParseInt(o.GetAnnotations()[annRevision], 10, 64)
	return v
}

// podTemplateHash is Kubernetes' pod-template-hash: FNV-32a of the template (here its JSON, which is stable
// for a stored template) and the collision count, rendered with SafeEncodeString.
func podTemplateHash(t *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	data, _ := json.Marshal(t)
	h.Write(data)
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// replicaSetName is the name of a Deployment's ReplicaSet for a template hash.
func replicaSetName(deployment, hash string) string { return deployment + "-" + hash }

// templatesEqual compares pod templates ignoring the pod-template-hash label, as EqualIgnoreHash does.
func templatesEqual(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	for _, t := range []*corev1.PodTemplateSpec{a, b} {
		delete(t.Labels, labelPodTemplateHash)
		if len(t.Labels) == 0 {
			t.Labels = nil
		}
	}
	return apiequality.Semantic.DeepEqual(a, b)
}

// resolveFenceposts turns maxSurge and maxUnavailable into pod counts for desired replicas: surge rounds up,
// unavailable down, and if both come out 0, unavailable is 1 so that a rollout can progress.
func resolveFenceposts(maxSurge, maxUnavailable *intstr.IntOrString, desired int32) (int32, int32, error) {
	zero := intstr.FromInt(0)
	surge, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(maxSurge, zero), int(desired), true)
	if err != nil {
		return 0, 0, fmt.Errorf("spec.strategy.rollingUpdate.maxSurge: %w", err)
	}
	unavailable, err := intstr.GetScaledValueFromIntOrPercent(intstr.ValueOrDefault(maxUnavailable, zero), int(desired), false)
	if err != nil {
		return 0, 0, fmt.Errorf("spec.strategy.rollingUpdate.maxUnavailable: %w", err)
	}
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return int32(surge), int32(unavailable), nil
}

// rolloutLimits returns a Deployment's maxSurge and maxUnavailable in pods (both 0 for Recreate).
func rolloutLimits(d *appsv1.Deployment) (surge, unavailable int32, err error) {
	want := replicasOf(d.Spec.Replicas)
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return 0, 0, nil
	}
	var s, u *intstr.IntOrString
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil {
		s, u = ru.MaxSurge, ru.MaxUnavailable
	} else {
		q := intstr.FromString("25%")
		s, u = &q, &q
	}
	surge, unavailable, err = resolveFenceposts(s, u, want)
	if err != nil {
		return 0, 0, err
	}
	if want == 0 {
		unavailable = 0
	}
	return surge, min(unavailable, want), nil
}

// newRSReplicas is how big the new ReplicaSet may be now (NewRSNewReplicas): up to desired, within
// desired+maxSurge pods in total.
func newRSReplicas(want, surge int32, all []*rsState, newRS *rsState) int32 {
	cur := newRS.spec()
	var total int32
	for _, s := range all {
		total += s.spec()
	}
	maxTotal := want + surge
	if total >= maxTotal {
		return cur
	}
	return cur + max(0, min(maxTotal-total, want-cur))
}

// planRolling is one step of a rolling update (rolloutRolling): the new replica counts of the ReplicaSets
// that change. It first grows (or shrinks) the new ReplicaSet; only when that is settled it shrinks old ones,
// unhealthy replicas first, never below want-maxUnavailable available pods.
func planRolling(want, surge, unavailable int32, newRS *rsState, old []*rsState) map[*rsState]int32 {
	out := map[*rsState]int32{}
	all := append(append([]*rsState(nil), old...), newRS)
	cur := newRS.spec()
	target := cur
	if cur > want {
		target = want
	} else if cur < want {
		target = newRSReplicas(want, surge, all, newRS)
	}
	if target != cur {
		out[newRS] = target
		return out
	}

	spec := map[*rsState]int32{}
	var oldCount, allCount int32
	for _, s := range all {
		spec[s] = s.spec()
		allCount += s.spec()
	}
	for _, s := range old {
		oldCount += s.spec()
	}
	if oldCount == 0 {
		return out
	}
	minAvailable := want - unavailable
	newUnavailable := newRS.spec() - newRS.safeAvailable()
	maxScaledDown := allCount - minAvailable - newUnavailable
	if maxScaledDown <= 0 {
		return out
	}
	old = append([]*rsState(nil), old...)
	sort.SliceStable(old, func(i, j int) bool { return olderRS(old[i].rs, old[j].rs) })

	// Unavailable old pods cost no availability: remove them first.
	var cleaned int32
	for _, s := range old {
		if cleaned >= maxScaledDown {
			break
		}
		unhealthy := spec[s] - s.safeAvailable()
		if spec[s] == 0 || unhealthy <= 0 {
			continue
		}
		n := min(maxScaledDown-cleaned, unhealthy)
		spec[s] -= n
		cleaned += n
	}
	var available int32
	for _, s := range all {
		available += min(s.available, spec[s])
	}
	if available > minAvailable {
		toScale := available - minAvailable
		var scaled int32
		for _, s := range old {
			if scaled >= toScale {
				break
			}
			if spec[s] == 0 {
				continue
			}
			n := min(spec[s], toScale-scaled)
			spec[s] -= n
			scaled += n
		}
	}
	for _, s := range old {
		if spec[s] != s.spec() {
			out[s] = spec[s]
		}
	}
	return out
}

func olderRS(a, b *appsv1.ReplicaSet) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

func (m *Manager) reconcileDeployment(ctx context.Context, account, name string) (time.Duration, error) {
	rsObjs, err := m.Store.List(kindReplicaSet, account)
	if err != nil {
		return 0, err
	}
	o, owned, done, err := m.ownerAndDependents(ctx, account, kindDeployment, name, kindReplicaSet, rsObjs)
	if done || err != nil {
		return 0, err
	}
	d := o.(*appsv1.Deployment)
	podObjs, err := m.Store.List(kindPod, account)
	if err != nil {
		return 0, err
	}
	r := &rollout{m: m, ctx: ctx, d: d, now: time.Now(), byUID: map[types.UID]*rsState{}}
	for _, o := range owned {
		s := &rsState{rs: o.(*appsv1.ReplicaSet)}
		r.byUID[s.rs.UID] = s
		r.all = append(r.all, s)
	}
	for _, o := range podObjs {
		p := o.(*corev1.Pod)
		ref := controllerRef(p.OwnerReferences, "ReplicaSet")
		if ref == nil {
			continue
		}
		s := r.byUID[ref.UID]
		if s == nil {
			continue
		}
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			s.alive++
		}
		if !podActive(p) {
			continue
		}
		s.active++
		if ready, _ := podReadyCondition(p); ready {
			s.ready++
		}
		if ok, w := podAvailable(p, d.Spec.MinReadySeconds, r.now); ok {
			s.available++
		} else if w > 0 {
			r.wake(w + 100*time.Millisecond)
		}
	}
	err = r.sync()
	return r.after, err
}

// rollout is one sync of one Deployment.
type rollout struct {
	m     *Manager
	ctx   context.Context
	d     *appsv1.Deployment
	now   time.Time
	all   []*rsState
	byUID map[types.UID]*rsState
	newRS *rsState
	old   []*rsState
	// status is the Deployment status being built; it starts from the stored one (conditions).
	status appsv1.DeploymentStatus
	after  time.Duration
}

func (r *rollout) wake(d time.Duration) {
	if d > 0 && (r.after == 0 || d < r.after) {
		r.after = d
	}
}

func (r *rollout) account() string { return api.AccountOf(r.d) }

func (r *rollout) sync() error {
	d := r.d
	r.status = *d.Status.DeepCopy()
	surge, unavailable, err := rolloutLimits(d)
	if err != nil {
		r.m.event(d, "Deployment", corev1.EventTypeWarning, "InvalidStrategy", err.Error())
		return nil
	}
	// A ReplicaSet of the current template that is being deleted (someone deleted it) blocks its name
	// until it is gone; its deletion event brings us back to make it again.
	newGoing := false
	for _, s := range r.all {
		switch {
		case s.rs.DeletionTimestamp != nil:
			newGoing = newGoing || templatesEqual(&s.rs.Spec.Template, &d.Spec.Template)
		case r.newRS == nil && templatesEqual(&s.rs.Spec.Template, &d.Spec.Template):
			r.newRS = s
		default:
			r.old = append(r.old, s)
		}
	}
	want := replicasOf(d.Spec.Replicas)
	recreate := d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType

	if !d.Spec.Paused {
		if r.newRS == nil && !newGoing && (!recreate || r.oldPodsGone()) {
			if err := r.createNewRS(want, surge); err != nil {
				r.writeStatus()
				return err
			}
		} else if r.newRS != nil {
			if err := r.syncNewRS(want, surge); err != nil {
				return err
			}
		}
		if recreate {
			err = r.rolloutRecreate(want)
		} else if r.newRS != nil {
			err = r.apply(planRolling(want, surge, unavailable, r.newRS, r.old), want, surge)
		}
		if err != nil {
			return err
		}
	}
	r.calculateStatus(want, unavailable)
	if deploymentComplete(d, &r.status) {
		r.cleanupHistory()
	}
	return r.writeStatus()
}

// oldPodsGone: Recreate starts the new pods only once no old pod runs any more.
func (r *rollout) oldPodsGone() bool {
	for _, s := range r.all {
		if s != r.newRS && s.alive > 0 {
			return false
		}
	}
	return true
}

func (r *rollout) rolloutRecreate(want int32) error {
	plan := map[*rsState]int32{}
	for _, s := range r.old {
		if s.spec() > 0 {
			plan[s] = 0
		}
	}
	if len(plan) > 0 || !r.oldPodsGone() || r.newRS == nil {
		return r.apply(plan, want, 0)
	}
	if r.newRS.spec() != want {
		plan[r.newRS] = want
	}
	return r.apply(plan, want, 0)
}

func (r *rollout) maxOldRevision() int64 {
	var rev int64
	for _, s := range r.all {
		if s != r.newRS {
			rev = max(rev, revisionOf(s.rs))
		}
	}
	return rev
}

// createNewRS makes the ReplicaSet of the Deployment's current template, sized as a rollout step allows.
func (r *rollout) createNewRS(want, surge int32) error {
	d := r.d
	hash := podTemplateHash(&d.Spec.Template, d.Status.CollisionCount)
	tmpl := d.Spec.Template.DeepCopy()
	tmpl.Labels = maps.Clone(tmpl.Labels)
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[labelPodTemplateHash] = hash
	sel := d.Spec.Selector.DeepCopy()
	if sel == nil {
		sel = &metav1.LabelSelector{}
	}
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[labelPodTemplateHash] = hash
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name:            replicaSetName(d.Name, hash),
			Labels:          maps.Clone(tmpl.Labels),
			Annotations:     rsAnnotationsFrom(d),
			OwnerReferences: []metav1.OwnerReference{newControllerRef(d, "Deployment")},
		},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr[int32](0), MinReadySeconds: d.Spec.MinReadySeconds, Selector: sel, Template: *tmpl},
	}
	s := &rsState{rs: rs}
	size := want
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		size = newRSReplicas(want, surge, append(append([]*rsState(nil), r.old...), s), s)
	}
	rs.Spec.Replicas = &size
	rev := r.maxOldRevision() + 1
	rs.Annotations[annRevision] = strconv.FormatInt(rev, 10)
	rs.Annotations[annDesiredReplicas] = strconv.Itoa(int(want))
	rs.Annotations[annMaxReplicas] = strconv.Itoa(int(want + surge))
	api.SetAccount(rs, r.account())
	rs.Generation = 1
	err := r.m.createObject(r.account(), rs)
	if store.IsAlreadyExists(err) {
		// Not ours, or ours with another template: a hash collision. Count it, which changes the hash.
		c := int32(0)
		if d.Status.CollisionCount != nil {
			c = *d.Status.CollisionCount
		}
		c++
		r.status.CollisionCount = &c
		return fmt.Errorf("deployment %q: replicaset %q exists with another template (hash collision %d); retrying with a new hash", d.Name, rs.Name, c)
	}
	if err != nil {
		r.m.event(d, "Deployment", corev1.EventTypeWarning, "FailedCreate", fmt.Sprintf("Failed to create new replica set %q: %v", rs.Name, err))
		return fmt.Errorf("deployment %q: create replicaset %q: %w", d.Name, rs.Name, err)
	}
	r.newRS = s
	r.all = append(r.all, s)
	r.byUID[rs.UID] = s
	if size > 0 {
		r.m.event(d, "Deployment", corev1.EventTypeNormal, "ScalingReplicaSet", fmt.Sprintf("Scaled up replica set %s to %d", rs.Name, size))
	}
	if d.Spec.ProgressDeadlineSeconds != nil {
		setDeploymentCondition(&r.status, deploymentCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, reasonNewRSCreated,
			fmt.Sprintf("Created new replica set %q", rs.Name), r.now))
	}
	return nil
}

// rsAnnotationsFrom copies a Deployment's annotations to its ReplicaSets, except the rollout bookkeeping.
func rsAnnotationsFrom(d *appsv1.Deployment) map[string]string {
	out := map[string]string{}
	for k, v := range d.Annotations {
		switch k {
		case annRevision, annDesiredReplicas, annMaxReplicas, "deployment.kubernetes.io/revision-history",
			"kubectl.kubernetes.io/last-applied-configuration", api.AccountAnnotation:
			continue
		}
		out[k] = v
	}
	return out
}

// syncNewRS gives the current ReplicaSet the newest revision (a rollback makes an old one current again) and
// the Deployment's minReadySeconds.
func (r *rollout) syncNewRS(want, surge int32) error {
	rev := max(revisionOf(r.newRS.rs), r.maxOldRevision()+1)
	if revisionOf(r.newRS.rs) != rev || r.newRS.rs.Spec.MinReadySeconds != r.d.Spec.MinReadySeconds {
		out, err := r.m.Store.Mutate(kindReplicaSet, r.account(), r.newRS.rs.Name, func(o metav1.Object) error {
			rs := o.(*appsv1.ReplicaSet)
			if rs.UID != r.newRS.rs.UID {
				return store.ErrUnchanged
			}
			a := maps.Clone(rs.Annotations)
			if a == nil {
				a = map[string]string{}
			}
			a[annRevision] = strconv.FormatInt(rev, 10)
			rs.Annotations = a
			if rs.Spec.MinReadySeconds != r.d.Spec.MinReadySeconds {
				rs.Spec.MinReadySeconds = r.d.Spec.MinReadySeconds
				rs.Generation++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("deployment %q: update replicaset %q: %w", r.d.Name, r.newRS.rs.Name, err)
		}
		r.newRS.rs = out.(*appsv1.ReplicaSet)
	}
	if r.d.Spec.ProgressDeadlineSeconds != nil && deploymentCondition0(r.status, appsv1.DeploymentProgressing) == nil {
		setDeploymentCondition(&r.status, deploymentCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, reasonFoundNewRS,
			fmt.Sprintf("Found new replica set %q", r.newRS.rs.Name), r.now))
	}
	return nil
}

// apply scales ReplicaSets as planned, recording events as Kubernetes does.
func (r *rollout) apply(plan map[*rsState]int32, want, surge int32) error {
	var list []*rsState
	for s := range plan {
		list = append(list, s)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].rs.Name < list[j].rs.Name })
	for _, s := range list {
		to := plan[s]
		from := s.spec()
		out, err := r.m.Store.Mutate(kindReplicaSet, r.account(), s.rs.Name, func(o metav1.Object) error {
			rs := o.(*appsv1.ReplicaSet)
			if rs.UID != s.rs.UID || rs.DeletionTimestamp != nil {
				return store.ErrUnchanged
			}
			a := maps.Clone(rs.Annotations)
			if a == nil {
				a = map[string]string{}
			}
			a[annDesiredReplicas] = strconv.Itoa(int(want))
			a[annMaxReplicas] = strconv.Itoa(int(want + surge))
			rs.Annotations = a
			if replicasOf(rs.Spec.Replicas) != to {
				rs.Spec.Replicas = ptr(to)
				rs.Generation++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("deployment %q: scale replicaset %q to %d: %w", r.d.Name, s.rs.Name, to, err)
		}
		s.rs = out.(*appsv1.ReplicaSet)
		verb := "up"
		if to < from {
			verb = "down"
		}
		r.m.event(r.d, "Deployment", corev1.EventTypeNormal, "ScalingReplicaSet",
			fmt.Sprintf("Scaled %s replica set %s to %d from %d", verb, s.rs.Name, to, from))
	}
	return nil
}

// calculateStatus counts the pods of every ReplicaSet and sets the Available and Progressing conditions.
func (r *rollout) calculateStatus(want, unavailable int32) {
	d := r.d
	st := &r.status
	st.ObservedGeneration = d.Generation
	st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas = 0, 0, 0, 0
	var total int32
	for _, s := range r.all {
		st.Replicas += s.active
		st.ReadyReplicas += s.ready
		st.AvailableReplicas += s.available
		total += s.spec()
	}
	if r.newRS != nil {
		st.UpdatedReplicas = r.newRS.active
	}
	st.UnavailableReplicas = max(0, total-st.AvailableReplicas)

	if st.AvailableReplicas >= want-unavailable {
		setDeploymentCondition(st, deploymentCondition(appsv1.DeploymentAvailable, corev1.ConditionTrue, reasonMinAvailable, "Deployment has minimum availability.", r.now))
	} else {
		setDeploymentCondition(st, deploymentCondition(appsv1.DeploymentAvailable, corev1.ConditionFalse, reasonMinUnavailable, "Deployment does not have minimum availability.", r.now))
	}
	r.syncProgress()
}

// syncProgress is Kubernetes' syncRolloutStatus: Progressing says whether the rollout moves, is done, or has
// made no progress for progressDeadlineSeconds.
func (r *rollout) syncProgress() {
	d, st := r.d, &r.status
	cur := deploymentCondition0(*st, appsv1.DeploymentProgressing)
	if d.Spec.Paused {
		if cur == nil || cur.Reason != reasonPaused {
			setDeploymentCondition(st, deploymentCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, reasonPaused, "Deployment is paused", r.now))
		}
		return
	}
	if cur != nil && cur.Reason == reasonPaused {
		setDeploymentCondition(st, deploymentCondition(appsv1.DeploymentProgressing, corev1.ConditionUnknown, reasonResumed, "Deployment is resumed", r.now))
		cur = deploymentCondition0(*st, appsv1.DeploymentProgressing)
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		return
	}
	if st.Replicas == st.UpdatedReplicas && cur != nil && cur.Reason == reasonNewRSAvailable {
		return
	}
	what := fmt.Sprintf("Deployment %q", d.Name)
	if r.newRS != nil {
		what = fmt.Sprintf("ReplicaSet %q", r.newRS.rs.Name)
	}
	deadline := time.Duration(*d.Spec.ProgressDeadlineSeconds) * time.Second
	switch {
	case deploymentComplete(d, st):
		setDeploymentCondition(st, deploymentCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, reasonNewRSAvailable, what+" has successfully progressed.", r.now))
	case deploymentProgressing(&d.Status, st):
		c := deploymentCondition(appsv1.DeploymentProgressing, corev1.ConditionTrue, reasonRSUpdated, what+" is progressing.", r.now)
		if cur != nil && cur.Status == corev1.ConditionTrue {
			c.LastTransitionTime = cur.LastTransitionTime
		}
		removeDeploymentCondition(st, appsv1.DeploymentProgressing)
		setDeploymentCondition(st, c)
		r.wake(deadline)
	default:
		if cur == nil || cur.Reason == reasonTimedOut {
			return
		}
		if at := cur.LastUpdateTime.Add(deadline); r.now.Before(at) {
			r.wake(at.Sub(r.now) + time.Second)
			return
		}
		setDeploymentCondition(st, deploymentCondition(appsv1.DeploymentProgressing, corev1.ConditionFalse, reasonTimedOut, what+" has timed out progressing.", r.now))
		r.m.event(d, "Deployment", corev1.EventTypeWarning, reasonTimedOut, what+" has timed out progressing.")
	}
}

// deploymentComplete: every desired pod is updated and available, no old pod is left.
func deploymentComplete(d *appsv1.Deployment, st *appsv1.DeploymentStatus) bool {
	want := replicasOf(d.Spec.Replicas)
	return st.UpdatedReplicas == want && st.Replicas == want && st.AvailableReplicas == want && st.ObservedGeneration >= d.Generation
}

// deploymentProgressing: the new status is a step forward from the old one.
func deploymentProgressing(old, cur *appsv1.DeploymentStatus) bool {
	oldOld := old.Replicas - old.UpdatedReplicas
	curOld := cur.Replicas - cur.UpdatedReplicas
	return cur.UpdatedReplicas > old.UpdatedReplicas || curOld < oldOld ||
		cur.ReadyReplicas > old.ReadyReplicas || cur.AvailableReplicas > old.AvailableReplicas
}

func deploymentCondition(t appsv1.DeploymentConditionType, s corev1.ConditionStatus, reason, msg string, now time.Time) appsv1.DeploymentCondition {
	ts := metav1.NewTime(now.UTC().Truncate(time.Second))
	return appsv1.DeploymentCondition{Type: t, Status: s, Reason: reason, Message: msg, LastUpdateTime: ts, LastTransitionTime: ts}
}

func deploymentCondition0(st appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

// setDeploymentCondition is Kubernetes' SetDeploymentCondition: nothing changes if status and reason are
// the same, and the transition time stays while the status does.
func setDeploymentCondition(st *appsv1.DeploymentStatus, c appsv1.DeploymentCondition) {
	cur := deploymentCondition0(*st, c.Type)
	if cur != nil && cur.Status == c.Status && cur.Reason == c.Reason {
		return
	}
	if cur != nil && cur.Status == c.Status {
		c.LastTransitionTime = cur.LastTransitionTime
	}
	removeDeploymentCondition(st, c.Type)
	st.Conditions = append(st.Conditions, c)
}

func removeDeploymentCondition(st *appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) {
	var keep []appsv1.DeploymentCondition
	for _, c := range st.Conditions {
		if c.Type != t {
			keep = append(keep, c)
		}
	}
	st.Conditions = keep
}

// cleanupHistory deletes the oldest scaled-down ReplicaSets beyond revisionHistoryLimit.
func (r *rollout) cleanupHistory() {
	if r.d.Spec.RevisionHistoryLimit == nil {
		return
	}
	limit := int(*r.d.Spec.RevisionHistoryLimit)
	var cleanable []*rsState
	for _, s := range r.old {
		if s.spec() == 0 && s.alive == 0 && s.rs.DeletionTimestamp == nil {
			cleanable = append(cleanable, s)
		}
	}
	if len(cleanable) <= limit {
		return
	}
	sort.SliceStable(cleanable, func(i, j int) bool {
		a, b := revisionOf(cleanable[i].rs), revisionOf(cleanable[j].rs)
		if a != b {
			return a < b
		}
		return olderRS(cleanable[i].rs, cleanable[j].rs)
	})
	for _, s := range cleanable[:len(cleanable)-limit] {
		if err := r.m.DeleteObject(r.ctx, r.account(), kindReplicaSet, s.rs); err != nil && !store.IsNotFound(err) {
			r.m.Log.Warn("deployment: delete old replicaset", "deployment", r.d.Name, "replicaset", s.rs.Name, "err", err)
		}
	}
}

// writeStatus stores the status and the revision annotation, if they changed.
func (r *rollout) writeStatus() error {
	rev := ""
	if r.newRS != nil {
		rev = r.newRS.rs.Annotations[annRevision]
	}
	_, err := r.m.Store.Mutate(kindDeployment, r.account(), r.d.Name, func(o metav1.Object) error {
		d := o.(*appsv1.Deployment)
		if d.UID != r.d.UID || d.DeletionTimestamp != nil {
			return store.ErrUnchanged
		}
		st := r.status
		// A spec written meanwhile is not observed yet; the next sync will.
		if d.Generation != r.d.Generation {
			st.ObservedGeneration = d.Status.ObservedGeneration
		}
		changed := !jsonEqual(d.Status, st)
		if rev != "" && d.Annotations[annRevision] != rev {
			a := maps.Clone(d.Annotations)
			if a == nil {
				a = map[string]string{}
			}
			a[annRevision] = rev
			d.Annotations = a
			changed = true
		}
		if !changed {
			return store.ErrUnchanged
		}
		d.Status = st
		return nil
	})
	if store.IsNotFound(err) {
		return nil
	}
	return err
}
