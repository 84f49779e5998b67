package daemon

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pilab/pi/lab/api"
)

// netNodesFixture is netFixture in a two-node lab: client on worker, web on worker2, the router's br0
// holding only its VXLAN port, each node the account's bridge b1 with its pod's port and vx1.
func netNodesFixture() netInputs {
	in := netFixture()
	in.account.Status.Index = 1
	node := func(name, index string, ready corev1.ConditionStatus) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{api.NodeIndexAnnotation: index}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}}
	}
	in.nodes = []*corev1.Node{node("worker", "1", corev1.ConditionTrue), node("worker2", "2", corev1.ConditionTrue), node("worker3", "3", corev1.ConditionUnknown)}
	in.pods[0].Spec.NodeName = "worker2" // web
	in.pods[1].Spec.NodeName = "worker"  // client
	in.k.ports = []linkInfo{{name: "vx1", state: "unknown", vxlan: true}}
	in.k.routerVX = &vxInfo{name: "vx1", state: "up", local: "169.254.16.1", vni: 1, peers: []string{"169.254.1.1", "169.254.1.2"}}
	in.k.nodes = map[int]*nodeNet{
		1: {ul: &linkInfo{name: "ul0", state: "up", addrs: []string{"169.254.1.1/16"}}, bridge: &linkInfo{name: "b1", mac: "02:00:00:00:01:01", state: "up", mtu: 1400},
			ports: []linkInfo{{name: "p0001", state: "up", alias: "10.244.3.1 uid-a"}},
			vx:    &vxInfo{name: "vx1", state: "up", local: "169.254.1.1", vni: 1, peers: []string{"169.254.1.2", "169.254.16.1"}}},
		2: {ul: &linkInfo{name: "ul0", state: "up", addrs: []string{"169.254.1.2/16"}}, bridge: &linkInfo{name: "b1", mac: "02:00:00:00:02:01", state: "up", mtu: 1400},
			ports: []linkInfo{{name: "p0002", state: "up", alias: "10.244.7.2 uid-b"}},
			vx:    &vxInfo{name: "vx1", state: "up", local: "169.254.1.2", vni: 1, peers: []string{"169.254.1.1", "169.254.16.1"}}},
		3: {ul: &linkInfo{name: "ul0", state: "down", addrs: []string{"169.254.1.3/16"}}},
	}
	return in
}

func TestBuildNetworkViewNodes(t *testing.T) {
	v := buildNetworkView(netNodesFixture())
	if len(v.Warnings) != 0 {
		t.Errorf("warnings %v", v.Warnings)
	}
	if len(v.Nodes) != 3 {
		t.Fatalf("nodes %+v", v.Nodes)
	}
	w1, w2, w3 := v.Nodes[0], v.Nodes[1], v.Nodes[2]
	if w1.Name != "worker" || w1.Index != 1 || !w1.Ready || w1.Netns != "pt-n1" || w1.Underlay != "169.254.1.1/16" ||
		w1.Bridge.Name != "b1" || len(w1.Bridge.Ports) != 1 || w1.Bridge.Ports[0].Pod != "client" || strings.Join(w1.Pods, ",") != "client" {
		t.Errorf("worker %+v", w1)
	}
	if w1.VXLAN == nil || w1.VXLAN.VNI != 1 || strings.Join(w1.VXLAN.Peers, ",") != "169.254.1.2 (node worker2),169.254.16.1 (router)" {
		t.Errorf("worker's vxlan %+v", w1.VXLAN)
	}
	if w2.Bridge.Ports[0].Pod != "web" || strings.Join(w2.Pods, ",") != "web" {
		t.Errorf("worker2 %+v", w2)
	}
	if w3.Ready || w3.UnderlayState != "down" || w3.VXLAN != nil || len(w3.Pods) != 0 {
		t.Errorf("worker3 %+v", w3)
	}
	// The pods name their node and their port on it; the router's br0 has only the segment's port.
	for _, p := range v.Pods {
		switch p.Name {
		case "client":
			if p.Node != "worker" || p.Port != "p0001" {
				t.Errorf("client %+v", p)
			}
		case "web":
			if p.Node != "worker2" || p.Port != "p0002" {
				t.Errorf("web %+v", p)
			}
		}
	}
	if p := v.Router.Bridge.Ports; len(p) != 1 || !p[0].VXLAN || p[0].Name != "vx1" {
		t.Errorf("br0 ports %+v", p)
	}
	if v.Router.VXLAN == nil || strings.Join(v.Router.VXLAN.Peers, ",") != "169.254.1.1 (node worker),169.254.1.2 (node worker2)" {
		t.Errorf("router's vxlan %+v", v.Router.VXLAN)
	}

	// A pod whose node's bridge lacks its port is said, with the node and the bridge.
	in := netNodesFixture()
	in.k.nodes[2].ports = nil
	if w := strings.Join(buildNetworkView(in).Warnings, "\n"); !strings.Contains(w, "pod web has address 10.244.7.2 but no port on node worker2's bridge b1") {
		t.Errorf("warnings %q", w)
	}
}

func TestWriteNetworkTextNodes(t *testing.T) {
	v := buildNetworkView(netNodesFixture())
	var buf bytes.Buffer
	WriteNetworkText(&buf, &v)
	out := buf.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"account default (lab pt, 3 nodes) — network 10.244.0.0/16, ready\n",
		"   │  └─ port vx1 ── VXLAN VNI 1 from 169.254.16.1  up → 169.254.1.1 (node worker), 169.254.1.2 (node worker2)   (the account's segment: the pods are on the nodes below)\n",
		"nodes   (the account's network 10.244.0.0/16 is one layer-2 segment over the router and the nodes by VXLAN VNI 1)\n",
		"├─ node worker  ready  netns pt-n1  underlay ul0 169.254.1.1/16 up   (look inside: ip netns exec pt-n1 bridge fdb show)\n",
		"│  ├─ b1  mac 02:00:00:00:01:01  mtu 1400  up   (the account's bridge on this node)\n",
		"│  │  └─ port p0001 ── pod client   10.244.3.1  mac 0a:58:0a:f4:03:01  (eth0; running)\n",
		"│  └─ vx1  VXLAN VNI 1 from 169.254.1.1  up → 169.254.1.2 (node worker2), 169.254.16.1 (router)\n",
		"├─ node worker2  ready",
		"│  │  └─ port p0002 ── pod web      10.244.7.2  mac 0a:58:0a:f4:07:02  (eth0; running)\n",
		"└─ node worker3  not ready  netns pt-n3  underlay ul0 169.254.1.3/16 down",
		"   └─ (no b1: no pod of account default runs here, the segment does not reach this node)\n",
		"pods without a port: pending (pending)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q", want)
		}
	}
	if strings.Contains(out, "warning") {
		t.Errorf("warnings in\n%s", out)
	}
	buf.Reset()
	WriteNetworkDot(&buf, &v)
	dot := buf.String()
	for _, want := range []string{
		`subgraph "cluster_node:worker" {`,
		`"br0" -> "node:worker2:b1" [dir=both, style=bold, label="VXLAN VNI 1"];`,
		`"node:worker2:port:p0002" -> "pod:web" [dir=none, label="veth"];`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("no %q in\n%s", want, dot)
		}
	}
	if strings.Count(dot, "{") != strings.Count(dot, "}") {
		t.Errorf("unbalanced graph:\n%s", dot)
	}
}
