package registry

import (
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/pilab/pi/lab/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxNodes is the most nodes a multi-node lab holds: node N's pods take 10.244.N.0/24 of every account's
// network, and 10.244.0.0/24 is the platform's.
const MaxNodes = 255

// AddNode records a new node of a multi-node lab under the lowest free index (1..MaxNodes), named as kind
// names its workers (worker, worker2, ...). The node is NotReady until the lab has built its namespace
// (the node controller sets it Ready). Refused when the lab is a single-node lab: its one node's
// pods sit on the account routers, and there is no underlay to add a node to.
func (r *Registry) AddNode() (*corev1.Node, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	objs, err := r.store.List(kindNode, "")
	if err != nil {
		return nil, err
	}
	used := map[int]bool{}
	for _, o := range objs {
		n := o.(*corev1.Node)
		i := api.NodeIndex(n)
		if i == 0 {
			return nil, Invalid("this lab has one node, %q, whose pods sit on the account routers: nodes cannot be added to it; make a multi-node lab with `pi down --purge` and `pi up --nodes 2`", n.Name)
		}
		used[i] = true
	}
	index := 0
	for i := 1; i <= MaxNodes; i++ {
		if !used[i] {
			index = i
			break
		}
	}
	if index == 0 {
		return nil, Invalid("the lab has %d nodes, the most its underlay and address plan hold (node N's pods use 10.244.N.0/24)", MaxNodes)
	}
	n := NewNode(api.NodeNameFor(index), index)
	if err := r.store.Create(n); err != nil {
		return nil, err
	}
	return n, nil
}

// AddSingleNode records the one node of a single-node lab, named after the machine, if the lab has no node.
func (r *Registry) AddSingleNode(name string) (*corev1.Node, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	objs, err := r.store.List(kindNode, "")
	if err != nil {
		return nil, err
	}
	if len(objs) > 0 {
		return objs[0].(*corev1.Node), nil
	}
	n := NewNode(name, 0)
	// The machine itself: nothing to build, Ready from the start, so the first pods need not wait for it.
	n.Status.Conditions[0].Status, n.Status.Conditions[0].Reason, n.Status.Conditions[0].Message = corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"
	if err := r.store.Create(n); err != nil {
		return nil, err
	}
	return n, nil
}

// NewNode is a node object as the lab makes it, not yet Ready: index 0 is a single-node lab's node.
func NewNode(name string, index int) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{
			"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": goarch(),
			api.NodeRoleLabel: "",
		}}}
	if index > 0 {
		n.Annotations = map[string]string{api.NodeIndexAnnotation: strconv.Itoa(index)}
		n.Spec.PodCIDR = fmt.Sprintf("10.244.%d.0/24", index)
		n.Spec.PodCIDRs = []string{n.Spec.PodCIDR}
	}
	now := metav1.NewTime(time.Now().UTC())
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse,
		Reason: "NodeStarting", Message: "the lab is building the node's network namespace", LastHeartbeatTime: now, LastTransitionTime: now}}
	return n
}

// NodePods lists the pods placed on a node, in every account.
func (r *Registry) NodePods(name string) ([]*corev1.Pod, error) {
	objs, err := r.store.List(kindPod, "")
	if err != nil {
		return nil, err
	}
	var out []*corev1.Pod
	for _, o := range objs {
		if p := o.(*corev1.Pod); p.Spec.NodeName == name {
			out = append(out, p)
		}
	}
	return out, nil
}

// RemoveNode deletes a node's object once no pod is placed on it: refused otherwise, naming the pods, so a
// node is never removed under a pod (drain it first, or delete with --force, which deletes its pods).
func (r *Registry) RemoveNode(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.store.Get(kindNode, "", name); err != nil {
		return err
	}
	pods, err := r.NodePods(name)
	if err != nil {
		return err
	}
	if len(pods) > 0 {
		return Invalid("node %q still has %d pod(s) (%s): drain it first (`kubectl drain %s`) or delete it with --force", name, len(pods), podList(pods), name)
	}
	return r.store.Delete(kindNode, "", name)
}

func podList(pods []*corev1.Pod) string {
	s := ""
	for i, p := range pods {
		if i == 3 {
			return s + fmt.Sprintf(", and %d more", len(pods)-3)
		}
		if i > 0 {
			s += ", "
		}
		s += api.AccountOf(p) + "/" + p.Name
	}
	return s
}

func goarch() string { return runtime.GOARCH }
