package api

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// Nodes. A single-node lab has one node, named after the machine, whose pods plug into their account
// routers; a multi-node lab (`pi up --nodes N`) has nodes worker, worker2, ... (kind's names), each a
// network namespace on the lab's underlay (net/overlay) with its own block of every account's network.
const (
	// NodeIndexAnnotation holds a node's index (1..255): it names the node's kernel objects (netns
	// <lab>-n<index>, underlay address 169.254.1.<index>) and its pods' block 10.244.<index>.0/24.
	// Absent on the single node of a single-node lab.
	NodeIndexAnnotation = "pilab.dev/node-index"
	// NodeStoppedAnnotation is set (to the time, RFC 3339) while `pi node stop` holds the node down: cut
	// from the underlay, its pods frozen, as a dead host.
	NodeStoppedAnnotation = "pilab.dev/stopped"
	// NodeRoleLabel marks the lab's nodes as workers, as kind's are.
	NodeRoleLabel = "node-role.kubernetes.io/worker"
	// NodeVersion is the kubelet version nodes report: the Kubernetes version the lab's API says it is (lab/server.KubeVersion).
	NodeVersion = "v1.35.4-pilab"
)

// NodeNameFor is the name of node index in a multi-node lab: worker, worker2, worker3, as kind names its
// workers.
func NodeNameFor(index int) string {
	if index == 1 {
		return "worker"
	}
	return "worker" + strconv.Itoa(index)
}

// NodeIndex is the index of a node of a multi-node lab, 0 for the single node of a single-node lab.
func NodeIndex(n *corev1.Node) int {
	i, err := strconv.Atoi(n.Annotations[NodeIndexAnnotation])
	if err != nil {
		return 0
	}
	return i
}

// NodeStopped reports whether `pi node stop` holds the node down.
func NodeStopped(n *corev1.Node) bool { return n.Annotations[NodeStoppedAnnotation] != "" }

// NodeReady reports the node's Ready condition.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
