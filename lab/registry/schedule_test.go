package registry

import (
	"strings"
	"testing"

	"github.com/pilab/pi/lab/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPickNode(t *testing.T) {
	node := func(name string, index int, mods ...func(*corev1.Node)) *corev1.Node {
		n := NewNode(name, index)
		n.Status.Conditions[0].Status = corev1.ConditionTrue
		for _, m := range mods {
			m(n)
		}
		return n
	}
	notReady := func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }
	cordoned := func(n *corev1.Node) { n.Spec.Unschedulable = true }
	ssd := func(n *corev1.Node) { n.Labels["disk"] = "ssd" }
	placed := func(name, node, owner string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)}, Spec: corev1.PodSpec{NodeName: node}}
		if owner != "" {
			p.OwnerReferences = []metav1.OwnerReference{{UID: types.UID(owner), Controller: ptr(true), Kind: "ReplicaSet", Name: owner}}
		}
		return p
	}
	three := func(mods2 ...func(*corev1.Node)) []*corev1.Node {
		return []*corev1.Node{node("worker", 1), node("worker2", 2, mods2...), node("worker3", 3)}
	}
	tests := []struct {
		name    string
		pod     *corev1.Pod
		nodes   []*corev1.Node
		pods    []*corev1.Pod
		want    string
		wantErr string
	}{
		{name: "empty lab: lowest index", pod: placed("p", "", ""), nodes: three(), want: "worker"},
		{name: "fewest pods", pod: placed("p", "", ""), nodes: three(),
			pods: []*corev1.Pod{placed("a", "worker", ""), placed("b", "worker3", "")}, want: "worker2"},
		{name: "fewest of the same owner first", pod: placed("p", "", "rs1"), nodes: three(),
			pods: []*corev1.Pod{placed("a", "worker", "rs1"), placed("b", "worker2", "rs1"), placed("c", "worker3", ""), placed("d", "worker3", "")},
			want: "worker3"},
		{name: "not ready skipped", pod: placed("p", "", ""), nodes: []*corev1.Node{node("worker", 1, notReady), node("worker2", 2)}, want: "worker2"},
		{name: "cordoned skipped", pod: placed("p", "", ""), nodes: []*corev1.Node{node("worker", 1, cordoned), node("worker2", 2)}, want: "worker2"},
		{name: "nodeName wins over cordon", pod: placed("p", "worker", ""), nodes: []*corev1.Node{node("worker", 1, cordoned), node("worker2", 2)}, want: "worker"},
		{name: "nodeName unknown", pod: placed("p", "worker9", ""), nodes: three(), wantErr: `node "worker9" named by spec.nodeName does not exist (nodes: worker, worker2, worker3)`},
		{name: "nodeSelector", pod: func() *corev1.Pod {
			p := placed("p", "", "")
			p.Spec.NodeSelector = map[string]string{"disk": "ssd"}
			return p
		}(),
			nodes: three(ssd), want: "worker2"},
		{name: "nodeSelector nobody matches", pod: func() *corev1.Pod {
			p := placed("p", "", "")
			p.Spec.NodeSelector = map[string]string{"disk": "nvme"}
			return p
		}(), nodes: []*corev1.Node{node("worker", 1, cordoned), node("worker2", 2, notReady), node("worker3", 3)},
			wantErr: "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable, 1 node(s) didn't match Pod's node affinity/selector."},
		{name: "no nodes at all", pod: placed("p", "", ""), wantErr: "0/0 nodes are available."},
		{name: "the pod itself and finished pods do not count", pod: placed("p", "", ""), nodes: three(),
			pods: []*corev1.Pod{placed("p", "worker", ""), func() *corev1.Pod { q := placed("q", "worker", ""); q.Status.Phase = corev1.PodSucceeded; return q }(),
				placed("r", "worker2", ""), placed("s", "worker3", "")}, want: "worker"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, err := pickNode(tc.pod, tc.nodes, tc.pods)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || n.Name != tc.want {
				t.Fatalf("placed on %v (err %v), want %s", n, err, tc.want)
			}
		})
	}
}

func TestScheduleMultiNodeAddressesFromTheNodeBlock(t *testing.T) {
	r, st := newRegistry(t, 0)
	for range 2 {
		n, err := r.AddNode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Mutate(kindNode, "", n.Name, func(o metav1.Object) error {
			o.(*corev1.Node).Status.Conditions[0].Status = corev1.ConditionTrue
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.AddSingleNode("laptop"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		if err := r.Create(t.Context(), "alice", pod(name), false); err != nil {
			t.Fatal(err)
		}
		p, err := r.SchedulePod("alice", name)
		if err != nil {
			t.Fatal(err)
		}
		index := map[string]string{"worker": "1", "worker2": "2"}[p.Spec.NodeName]
		if index == "" || !strings.HasPrefix(p.Status.PodIP, "10.244."+index+".") {
			t.Fatalf("pod %s on %q with %s: want worker/worker2 and an address of its block", name, p.Spec.NodeName, p.Status.PodIP)
		}
	}
	objs, _ := st.List(kindNode, "")
	if len(objs) != 2 || objs[0].GetName() != "worker" || objs[1].GetName() != "worker2" {
		t.Fatalf("nodes: %v", objs)
	}
	if err := r.RemoveNode("worker"); err == nil || !strings.Contains(err.Error(), "drain it first") {
		t.Fatalf("removing a node with pods: %v", err)
	}
	// A single-node lab takes no more nodes.
	r2, _ := newRegistry(t, 0)
	if _, err := r2.AddSingleNode("laptop"); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.AddNode(); err == nil || !strings.Contains(err.Error(), "pi up --nodes 2") {
		t.Fatalf("adding to a single-node lab: %v", err)
	}
	_ = api.NodeIndexAnnotation
}
