package tui

import (
	"strings"
	"testing"

	"github.com/pilab/pi/lab/daemon"
)

// In a multi-node lab the pane lists the pods under their nodes, each with its underlay address and the
// account's VXLAN device there; a pod no node took yet is said so.
func TestNetworkPaneNodes(t *testing.T) {
	h := newHarnessSize(t, 120, 35)
	labPods(h)
	v := fakeLabNetwork()
	v.Pods[0].Node, v.Pods[1].Node, v.Pods[2].Node, v.Pods[3].Node = "worker2", "worker", "worker2", "worker"
	v.Pods = append(v.Pods, daemon.PodView{Name: "late", Phase: "Pending"})
	v.Nodes = []daemon.NodeView{
		{Name: "worker", Index: 1, Ready: true, Underlay: "169.254.1.1/16", Bridge: daemon.BridgeView{Name: "b1"}, VXLAN: &daemon.VXLANView{Name: "vx1", VNI: 1}},
		{Name: "worker2", Index: 2, Ready: true, Underlay: "169.254.1.2/16", Bridge: daemon.BridgeView{Name: "b1"}, VXLAN: &daemon.VXLANView{Name: "vx1", VNI: 1}},
	}
	h.send(h.key("tab")())
	h.app.net.update(networkMsg{v: v})
	out := stripANSI(h.app.net.View())
	order := []string{"pods", " node worker 169.254.1.1 vx1 VNI 1 ", "  10.244.9.3 nginx", "  10.244.9.4 podinfo",
		" node worker2 169.254.1.2 vx1 VNI 1", "  10.244.18.162 httpd", "  10.244.131.20 podinfo", " no node - late", "services"}
	at := 0
	for _, want := range order {
		i := strings.Index(out[at:], want)
		if i < 0 {
			t.Fatalf("no %q after offset %d in the pane:\n%s", want, at, out)
		}
		at += i + len(want)
	}
	if strings.Count(out, "x7qh7") != 1 {
		t.Errorf("a pod not drawn once:\n%s", out)
	}
}
