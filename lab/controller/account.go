package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/billing"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// reconcileAccount builds an account's network (router, bridge, NAT) or, once it is being deleted and
// empty, takes it down.
func (m *Manager) reconcileAccount(ctx context.Context, _, name string) (time.Duration, error) {
	o, err := m.Store.Get(kindAccount, "", name)
	if store.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	acct := o.(*api.Account)
	if acct.DeletionTimestamp != nil {
		return m.finishAccountDeletion(ctx, acct)
	}
	a, err := m.Network.EnsureAccount(name, acct.Status.Index)
	if err == nil {
		// In a multi-node lab the account's network reaches every node before its pods are placed there.
		err = m.ensureSegment(acct)
	}
	ready, msg := err == nil, ""
	if err != nil {
		msg = err.Error()
	}
	_, uerr := m.Store.Mutate(kindAccount, "", name, func(o metav1.Object) error {
		acct := o.(*api.Account)
		old := acct.Status
		acct.Status.Ready, acct.Status.Message = ready, msg
		if a != nil {
			acct.Status.Network = "10.244.0.0/16"
			acct.Status.RouterIP = a.RouterIP.String()
			acct.Status.DNSIP = a.DNSIP.String()
			if a.WANIP != nil {
				acct.Status.WANIP = a.WANIP.String()
			}
		}
		if acct.Status == old {
			return store.ErrUnchanged
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("account %q: network: %w", name, err)
	}
	if uerr != nil {
		return 0, uerr
	}
	m.accountReady(ctx, acct, a)
	return 0, nil
}

// accountObjects counts what an account still holds, by kind.
func (m *Manager) accountObjects(account string) map[string]int {
	out := map[string]int{}
	for _, k := range []api.Kind{kindPod, kindDeployment, kindReplicaSet, kindService, kindFIP} {
		objs, _ := m.Store.List(k, account)
		if len(objs) > 0 {
			out[k.Plural] = len(objs)
		}
	}
	return out
}

func (m *Manager) finishAccountDeletion(ctx context.Context, acct *api.Account) (time.Duration, error) {
	// Delete what the account holds; pods go gracefully through their own controller.
	left := 0
	for _, k := range []api.Kind{kindDeployment, kindReplicaSet, kindPod, kindService, kindEndpoints, kindFIP, kindEvent} {
		objs, _ := m.Store.List(k, acct.Name)
		for _, o := range objs {
			left++
			if err := m.DeleteObject(ctx, acct.Name, k, o); err != nil {
				m.Log.Warn("delete account object", "account", acct.Name, "kind", k.Name, "name", o.GetName(), "err", err)
			}
		}
	}
	if left > 0 {
		return time.Second, nil
	}
	// Its pods are gone, and each took its own cgroup level with it: the account's level is empty.
	if err := m.Runtime.RemoveAccountCgroups(string(acct.UID)); err != nil {
		return 0, fmt.Errorf("account %q: %w", acct.Name, err)
	}
	m.accountGone(acct)
	if m.Overlay != nil && len(m.nodeIndexes()) > 0 {
		if err := m.Overlay.DeleteSegment(acct.Status.Index, netns.Path(m.Network.RouterNetnsName(acct.Status.Index))); err != nil {
			return 0, fmt.Errorf("account %q: remove its network from the nodes: %w", acct.Name, err)
		}
		m.segMu.Lock()
		delete(m.segments, acct.Status.Index)
		delete(m.segNodes, acct.Status.Index)
		m.segMu.Unlock()
	}
	if err := m.Network.DeleteAccount(acct.Name, acct.Status.Index); err != nil {
		return 0, fmt.Errorf("account %q: remove network: %w", acct.Name, err)
	}
	err := m.Store.Delete(kindAccount, "", acct.Name)
	if store.IsNotFound(err) {
		return 0, nil
	}
	return 0, err
}

// DeleteObject starts deleting one object the way its kind is deleted: graceful kinds get a
// deletionTimestamp and their controller finishes; the rest go at once.
func (m *Manager) DeleteObject(ctx context.Context, account string, k api.Kind, o metav1.Object) error {
	return m.DeleteObjectGrace(ctx, account, k, o, nil)
}

// DeleteObjectGrace is DeleteObject with a grace period for a pod's containers to stop (nil: the pod's
// terminationGracePeriodSeconds); it is recorded as the pod's deletionGracePeriodSeconds.
func (m *Manager) DeleteObjectGrace(ctx context.Context, account string, k api.Kind, o metav1.Object, grace *int64) error {
	// Objects a controller holds with a finalizer go the graceful way too; the controller lets go when done.
	graceful := len(o.GetFinalizers()) > 0
	switch k.Name {
	case "Pod", "Deployment", "ReplicaSet", "Account":
		graceful = true
	}
	if graceful {
		if o.GetDeletionTimestamp() != nil {
			return nil
		}
		_, err := m.Store.Mutate(k, account, o.GetName(), func(o metav1.Object) error {
			if o.GetDeletionTimestamp() != nil {
				return store.ErrUnchanged
			}
			now := metav1.Now()
			o.SetDeletionTimestamp(&now)
			if grace != nil {
				o.SetDeletionGracePeriodSeconds(grace)
			}
			return nil
		})
		return err
	}
	if err := m.Store.Delete(k, account, o.GetName()); err != nil && !store.IsNotFound(err) {
		return err
	}
	m.objectDeleted(account, k, o)
	return nil
}

// Usage records of the meter. A pod's record is open while it runs; its id carries its start.
type usageRecord = billing.Usage

func podSize(pod *corev1.Pod) string {
	var sum int64
	for _, c := range pod.Spec.Containers {
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			sum += q.Value()
		}
	}
	size, ok := billing.SizeFor(sum)
	if !ok {
		size = "L2"
	}
	return size
}

// meterPod opens a usage record when a pod starts running and closes it when it stops.
func (m *Manager) meterPod(pod *corev1.Pod, running bool) {
	m.meter(usageRecord{Account: api.AccountOf(pod), Kind: "pod", Name: pod.Name, UID: string(pod.UID), Size: podSize(pod)}, running)
}

// meter keeps one open record per object UID: running opens one if none is open, !running closes it.
func (m *Manager) meter(u usageRecord, running bool) {
	openID := "open/" + u.UID
	var cur usageRecord
	found, err := m.Store.GetUsage(openID, &cur)
	if err != nil {
		m.Log.Warn("meter", "err", err)
		return
	}
	now := time.Now().UTC()
	switch {
	case running && !found:
		u.Start = now
		m.Store.PutUsage(openID, u)
	case !running && found:
		cur.End = now
		m.Store.PutUsage(fmt.Sprintf("done/%s/%d", cur.UID, cur.Start.UnixNano()), cur)
		m.Store.DeleteUsage(openID)
	}
}
