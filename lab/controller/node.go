package controller

// The node controller: it keeps each node's network namespace (net/overlay) as the store says — built,
// cut from the underlay and frozen while `pi node stop` holds it, whole again after `pi node start` —
// reports the node's Ready condition, and, as Kubernetes' node lifecycle controller does, marks the pods of
// a node that stopped answering not ready at once (Services drop them) and evicts them after the eviction
// timeout, so their ReplicaSets replace them on other nodes. An evicted pod stays Terminating until its
// node comes back and its containers can be stopped, as on a real cluster.

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/overlay"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultEvictionTimeout is how long a stopped node's pods wait before they are evicted. Kubernetes waits
// 5 minutes (the not-ready toleration); a lab lesson cannot, so the lab waits 30 s unless told otherwise
// (`pi up --eviction-timeout`).
const DefaultEvictionTimeout = 30 * time.Second

func (m *Manager) evictionTimeout() time.Duration {
	if m.EvictionTimeout > 0 {
		return m.EvictionTimeout
	}
	return DefaultEvictionTimeout
}

func (m *Manager) reconcileNode(ctx context.Context, _, name string) (time.Duration, error) {
	o, err := m.Store.Get(kindNode, "", name)
	if store.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := o.(*corev1.Node)
	index := api.NodeIndex(n)
	stopped := api.NodeStopped(n)
	if index > 0 {
		if m.Overlay == nil {
			return 0, fmt.Errorf("node %q: a node of a multi-node lab, but the lab runs without its overlay", name)
		}
		if _, err := m.Overlay.EnsureNode(index); err != nil {
			m.setNodeReady(n, corev1.ConditionFalse, "NetworkUnavailable", err.Error())
			return 0, fmt.Errorf("node %q: %w", name, err)
		}
		if stopped {
			err = m.Overlay.StopNode(index)
		} else {
			err = m.Overlay.StartNode(index)
		}
		if err != nil {
			return 0, fmt.Errorf("node %q: %w", name, err)
		}
	}
	pods, err := m.Registry.NodePods(name)
	if err != nil {
		return 0, fmt.Errorf("node %q: %w", name, err)
	}
	var freezeErr error
	// Pods are frozen or thawed when the node's state changes (and once after a daemon start), not at every
	// resync: that would be several containerd calls per pod every few seconds.
	m.frozenMu.Lock()
	applied, known := m.frozen[name]
	m.frozenMu.Unlock()
	if !known || applied != stopped {
		for _, p := range pods {
			if err := m.Runtime.FreezePod(ctx, string(p.UID), stopped); err != nil && freezeErr == nil {
				freezeErr = fmt.Errorf("node %q: %w", name, err)
			}
		}
		if freezeErr == nil {
			m.frozenMu.Lock()
			m.frozen[name] = stopped
			m.frozenMu.Unlock()
		}
	}
	if !stopped {
		if m.setNodeReady(n, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status") {
			// Back (or new): every account's segment reaches it (a new node's namespace exists now), its
			// pods run again, Terminating ones finish, and Pending pods may fit.
			m.forgetSegments()
			if objs, err := m.Store.List(kindAccount, ""); err == nil {
				for _, o := range objs {
					m.accounts.Add(objKey("", o.GetName()))
				}
			}
			for _, p := range pods {
				m.pods.Add(objKey(api.AccountOf(p), p.Name))
			}
			m.queuePendingPods()
		}
		return 0, freezeErr
	}
	m.setNodeReady(n, corev1.ConditionUnknown, "NodeStatusUnknown", "Kubelet stopped posting node status.")
	for _, p := range pods {
		m.markPodNotReady(p)
	}
	since, err := time.Parse(time.RFC3339, n.Annotations[api.NodeStoppedAnnotation])
	if err != nil {
		since = time.Now()
	}
	if wait := time.Until(since.Add(m.evictionTimeout())); wait > 0 {
		return wait, freezeErr
	}
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		m.event(p, "Pod", corev1.EventTypeNormal, "NodeControllerEviction", fmt.Sprintf("Marking for deletion Pod %s from Node %s", p.Name, name))
		if err := m.DeleteObject(ctx, api.AccountOf(p), kindPod, p); err != nil {
			m.Log.Warn("evict pod", "node", name, "pod", p.Name, "err", err)
		}
	}
	return 0, freezeErr
}

// queuePendingPods queues the pods no node has taken yet.
func (m *Manager) queuePendingPods() {
	objs, _ := m.Store.List(kindPod, "")
	for _, o := range objs {
		if p := o.(*corev1.Pod); p.Status.PodIP == "" {
			m.pods.Add(objKey(api.AccountOf(p), p.Name))
		}
	}
}

// markPodNotReady sets a pod of a node that stopped answering not ready, as Kubernetes' MarkPodsNotReady.
func (m *Manager) markPodNotReady(p *corev1.Pod) {
	m.Store.Mutate(kindPod, api.AccountOf(p), p.Name, func(o metav1.Object) error {
		q := o.(*corev1.Pod)
		if q.UID != p.UID || !podReady(q) {
			return store.ErrUnchanged
		}
		setCondition(&q.Status, corev1.PodReady, false, "")
		for i := range q.Status.ContainerStatuses {
			q.Status.ContainerStatuses[i].Ready = false
		}
		return nil
	})
}

// setNodeReady records the node's Ready condition and what the lab knows of it; it reports whether the
// condition changed.
func (m *Manager) setNodeReady(n *corev1.Node, status corev1.ConditionStatus, reason, msg string) bool {
	changed := false
	_, err := m.Store.Mutate(kindNode, "", n.Name, func(o metav1.Object) error {
		cur := o.(*corev1.Node)
		before := nodeStatusKey(cur)
		now := metav1.NewTime(time.Now().UTC())
		found := false
		for i := range cur.Status.Conditions {
			c := &cur.Status.Conditions[i]
			if c.Type != corev1.NodeReady {
				continue
			}
			found = true
			if c.Status != status {
				c.LastTransitionTime, c.LastHeartbeatTime = now, now
				changed = true
			}
			c.Status, c.Reason, c.Message = status, reason, msg
		}
		if !found {
			cur.Status.Conditions = append(cur.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady, Status: status,
				Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now})
			changed = true
		}
		m.fillNodeStatus(cur)
		if nodeStatusKey(cur) == before {
			return store.ErrUnchanged
		}
		return nil
	})
	if err != nil && !store.IsNotFound(err) {
		m.Log.Warn("node status", "node", n.Name, "err", err)
	}
	return changed
}

func nodeStatusKey(n *corev1.Node) string {
	var b strings.Builder
	for _, c := range n.Status.Conditions {
		fmt.Fprintf(&b, "%s=%s/%s/%s;", c.Type, c.Status, c.Reason, c.Message)
	}
	for _, a := range n.Status.Addresses {
		fmt.Fprintf(&b, "%s=%s;", a.Type, a.Address)
	}
	fmt.Fprintf(&b, "%v;", n.Status.NodeInfo)
	// Quantities by their text: a decoded one and a new one of the same value differ as Go values (a cached
	// string), and a key that always differs would rewrite the node, and wake this controller, forever.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods} {
		q := n.Status.Capacity[r]
		a := n.Status.Allocatable[r]
		fmt.Fprintf(&b, "%s=%s/%s;", r, q.String(), a.String())
	}
	return b.String()
}

// fillNodeStatus writes what a node is: its addresses (a node of a multi-node lab has its underlay
// address; the single node of a single-node lab is the machine), what it runs, and its capacity — the
// machine's, which every node shares.
func (m *Manager) fillNodeStatus(n *corev1.Node) {
	addrs := []corev1.NodeAddress{}
	if i := api.NodeIndex(n); i > 0 {
		if ip, err := overlay.NodeUnderlayIP(i); err == nil {
			addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()})
		}
	}
	addrs = append(addrs, corev1.NodeAddress{Type: corev1.NodeHostName, Address: n.Name})
	n.Status.Addresses = addrs
	var uts unix.Utsname
	unix.Uname(&uts)
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		MachineID: machineID(), KernelVersion: unix.ByteSliceToString(uts.Release[:]), OSImage: osImage(),
		ContainerRuntimeVersion: "containerd://" + m.runtimeVersion(), KubeletVersion: api.NodeVersion,
		KubeProxyVersion: api.NodeVersion, OperatingSystem: "linux", Architecture: runtime.GOARCH,
	}
	var si unix.Sysinfo_t
	unix.Sysinfo(&si)
	mem := int64(si.Totalram) * int64(si.Unit)
	maxPods := strconv.Itoa(250)
	n.Status.Capacity = corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
		corev1.ResourcePods:   resource.MustParse(maxPods),
	}
	n.Status.Allocatable = n.Status.Capacity.DeepCopy()
}

func (m *Manager) runtimeVersion() string {
	if m.RuntimeVersion != "" {
		return m.RuntimeVersion
	}
	return "unknown"
}

func machineID() string {
	b, _ := os.ReadFile("/etc/machine-id")
	return strings.TrimSpace(string(b))
}

// osImage is PRETTY_NAME of /etc/os-release, as the kubelet reports it.
func osImage() string {
	b, _ := os.ReadFile("/etc/os-release")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "Linux"
}

// nodeOf returns the node a pod is placed on, nil if none (not scheduled, or a node that is gone).
func (m *Manager) nodeOf(p *corev1.Pod) *corev1.Node {
	if p.Spec.NodeName == "" {
		return nil
	}
	o, err := m.Store.Get(kindNode, "", p.Spec.NodeName)
	if err != nil {
		return nil
	}
	return o.(*corev1.Node)
}

// nodeIndexes lists the indexes of the nodes of a multi-node lab, in order.
func (m *Manager) nodeIndexes() []int {
	objs, _ := m.Store.List(kindNode, "")
	var out []int
	for _, o := range objs {
		if i := api.NodeIndex(o.(*corev1.Node)); i > 0 {
			out = append(out, i)
		}
	}
	sort.Ints(out)
	return out
}

// ensureSegment stretches an account's network to every node of a multi-node lab (net/overlay: a VNI per
// account, its bridge on each node); a no-op in a single-node lab and when nothing changed since the last
// call for the account.
func (m *Manager) ensureSegment(acct *api.Account) error {
	var nodes []int
	for _, i := range m.nodeIndexes() {
		// Only nodes the node controller has built; it queues the accounts again when one is Ready.
		if m.Overlay != nil && exists(netns.Path(m.Overlay.NodeNetnsName(i))) {
			nodes = append(nodes, i)
		}
	}
	if len(nodes) == 0 || m.Overlay == nil {
		return nil
	}
	key := fmt.Sprint(nodes)
	m.segMu.Lock()
	defer m.segMu.Unlock()
	if m.segments[acct.Status.Index] == key {
		return nil
	}
	if _, err := m.Overlay.EnsureSegment(acct.Status.Index, netns.Path(m.Network.RouterNetnsName(acct.Status.Index)), nodes); err != nil {
		return fmt.Errorf("account %q: stretch its network to nodes %v: %w", acct.Name, nodes, err)
	}
	m.segments[acct.Status.Index] = key
	if !slices.Equal(m.segNodes[acct.Status.Index], nodes) {
		// The account's Service rules follow its segment onto (or off) the nodes.
		m.segNodes[acct.Status.Index] = nodes
		m.svc().queue.Add(objKey("", acct.Name))
	}
	return nil
}

// segmentNodes are the nodes account index's segment was last built on (none in a single-node lab).
func (m *Manager) segmentNodes(index int) []int {
	m.segMu.Lock()
	defer m.segMu.Unlock()
	return slices.Clone(m.segNodes[index])
}

// forgetSegments makes the next ensureSegment of every account check the kernel again (nodes came or went).
func (m *Manager) forgetSegments() {
	m.segMu.Lock()
	clear(m.segments)
	m.segMu.Unlock()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
