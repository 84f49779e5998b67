package registry

import (
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

var kindNode, _ = api.LookupKind("Node")

// UnschedulableError says why no node takes a pod, in kube-scheduler's words; the pod stays Pending and is
// tried again when nodes change.
type UnschedulableError struct{ Msg string }

func (e *UnschedulableError) Error() string { return e.Msg }

// pickNode is the lab's scheduler, a pure planner: it places pod on one of nodes, given every pod of the lab
// (all accounts: nodes are shared). A pod naming a node (spec.nodeName) goes there if it exists, cordoned
// or not, as in Kubernetes, where nodeName bypasses the scheduler. Otherwise the candidates are the Ready,
// schedulable nodes whose labels match spec.nodeSelector; among them the pod goes where the fewest pods of
// its owner (the same ReplicaSet) are, then where the fewest pods are, then to the lowest index — so a
// Deployment's replicas spread over the nodes as kube-scheduler's default spreading does.
func pickNode(pod *corev1.Pod, nodes []*corev1.Node, pods []*corev1.Pod) (*corev1.Node, error) {
	if pod.Spec.NodeName != "" {
		for _, n := range nodes {
			if n.Name == pod.Spec.NodeName {
				return n, nil
			}
		}
		return nil, &UnschedulableError{Msg: fmt.Sprintf("node %q named by spec.nodeName does not exist (nodes: %s)", pod.Spec.NodeName, nodeNames(nodes))}
	}
	owner := controllerUID(pod)
	type load struct{ owner, all int }
	loads := map[string]*load{}
	for _, p := range pods {
		if p.Spec.NodeName == "" || p.UID == pod.UID || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		l := loads[p.Spec.NodeName]
		if l == nil {
			l = &load{}
			loads[p.Spec.NodeName] = l
		}
		l.all++
		if owner != "" && controllerUID(p) == owner {
			l.owner++
		}
	}
	selector := labels.SelectorFromSet(pod.Spec.NodeSelector)
	var fit []*corev1.Node
	var notReady, cordoned, mismatched int
	for _, n := range nodes {
		switch {
		case !api.NodeReady(n):
			notReady++
		case n.Spec.Unschedulable:
			cordoned++
		case !selector.Matches(labels.Set(n.Labels)):
			mismatched++
		default:
			fit = append(fit, n)
		}
	}
	if len(fit) == 0 {
		// As kube-scheduler's FailedScheduling message.
		var why []string
		if notReady > 0 {
			why = append(why, fmt.Sprintf("%d node(s) had untolerated taint {node.kubernetes.io/not-ready: }", notReady))
		}
		if cordoned > 0 {
			why = append(why, fmt.Sprintf("%d node(s) were unschedulable", cordoned))
		}
		if mismatched > 0 {
			why = append(why, fmt.Sprintf("%d node(s) didn't match Pod's node affinity/selector", mismatched))
		}
		msg := fmt.Sprintf("0/%d nodes are available", len(nodes))
		if len(why) > 0 {
			msg += ": " + strings.Join(why, ", ")
		}
		return nil, &UnschedulableError{Msg: msg + "."}
	}
	score := func(n *corev1.Node) load {
		if l := loads[n.Name]; l != nil {
			return *l
		}
		return load{}
	}
	sort.SliceStable(fit, func(i, j int) bool {
		a, b := score(fit[i]), score(fit[j])
		if a.owner != b.owner {
			return a.owner < b.owner
		}
		if a.all != b.all {
			return a.all < b.all
		}
		return api.NodeIndex(fit[i]) < api.NodeIndex(fit[j])
	})
	return fit[0], nil
}

func controllerUID(p *corev1.Pod) string {
	if ref := metav1.GetControllerOf(p); ref != nil {
		return string(ref.UID)
	}
	return ""
}

func nodeNames(nodes []*corev1.Node) string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// SchedulePod places a pod on a node and gives it its address there, and stores both before anything is
// built with them, so a crash between the two can never hand one address to two pods. In a multi-node lab
// the address comes from the node's block (10.244.<index>.0/24), in a single-node lab from the whole
// account network. A pod that has an address keeps it and its node. No node fitting is an
// *UnschedulableError: the pod stays Pending.
func (r *Registry) SchedulePod(account, name string) (*corev1.Pod, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, err := r.store.Get(kindPod, account, name)
	if err != nil {
		return nil, err
	}
	pod := o.(*corev1.Pod)
	if pod.Status.PodIP != "" {
		return pod, nil
	}
	nodeObjs, err := r.store.List(kindNode, "")
	if err != nil {
		return nil, err
	}
	nodes := make([]*corev1.Node, 0, len(nodeObjs))
	for _, o := range nodeObjs {
		nodes = append(nodes, o.(*corev1.Node))
	}
	podObjs, err := r.store.List(kindPod, "")
	if err != nil {
		return nil, err
	}
	pods := make([]*corev1.Pod, 0, len(podObjs))
	for _, o := range podObjs {
		pods = append(pods, o.(*corev1.Pod))
	}
	var node *corev1.Node
	if len(nodes) > 0 {
		if node, err = pickNode(pod, nodes, pods); err != nil {
			return nil, err
		}
	}
	used := map[string]bool{}
	for _, p := range pods {
		if ip := p.Status.PodIP; ip != "" && api.AccountOf(p) == account {
			used[ip] = true
		}
	}
	var ip net.IP
	if block := nodeBlock(node); block > 0 {
		ip, err = r.alloc.NextInBlock(block, used)
	} else {
		ip, err = r.alloc.Next(used)
	}
	if err != nil {
		return nil, fmt.Errorf("pod %q: no address left in account %q's network: %w", name, account, err)
	}
	out, err := r.store.Mutate(kindPod, account, name, func(o metav1.Object) error {
		p := o.(*corev1.Pod)
		if p.Status.PodIP != "" || p.UID != pod.UID {
			return store.ErrUnchanged
		}
		p.Status.PodIP = ip.String()
		p.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
		p.Status.HostIP = ""
		if node != nil {
			p.Spec.NodeName = node.Name
			p.Status.HostIP = nodeInternalIP(node)
		}
		if p.Status.HostIP != "" {
			p.Status.HostIPs = []corev1.HostIP{{IP: p.Status.HostIP}}
		}
		if p.Status.Phase == "" {
			p.Status.Phase = corev1.PodPending
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out.(*corev1.Pod), nil
}

// nodeBlock is the third octet of the block a node gives its pods, 0 for none (a single-node lab).
func nodeBlock(n *corev1.Node) int {
	if n == nil {
		return 0
	}
	return api.NodeIndex(n)
}

func nodeInternalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}
