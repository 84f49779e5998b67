package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/pilab/pi/lab/daemon"
)

// nodesVisibleManifest places pods by spec.nodeName so the paths are known: nginx (the client) and near on
// worker, far on worker2, and a Service whose one endpoint is far.
const nodesVisibleManifest = `apiVersion: v1
kind: Pod
metadata:
  name: nginx
spec:
  nodeName: worker
  containers:
  - name: nginx
    image: nginx
---
apiVersion: v1
kind: Pod
metadata:
  name: near
  labels:
    app: near
spec:
  nodeName: worker
  containers:
  - name: podinfo
    image: podinfo
---
apiVersion: v1
kind: Pod
metadata:
  name: far
  labels:
    app: far
spec:
  nodeName: worker2
  containers:
  - name: podinfo
    image: podinfo
---
apiVersion: v1
kind: Service
metadata:
  name: far
spec:
  selector:
    app: far
  ports:
  - port: 9898
`

// traceJSON runs pi trace -o json and decodes it.
func traceJSON(t *testing.T, lab string, args ...string) daemon.TraceResult {
	t.Helper()
	out := mustPi(t, lab, append([]string{"trace", "-o", "json"}, args...)...)
	var r daemon.TraceResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("pi trace %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
	text := mustPi(t, lab, append([]string{"trace"}, args...)...)
	t.Logf("pi trace %s:\n%s", strings.Join(args, " "), text)
	return r
}

// inOrder checks that each regexp matches the hops after the previous one's match.
func inOrder(t *testing.T, hops string, order []*regexp.Regexp) {
	t.Helper()
	at := 0
	for _, re := range order {
		loc := re.FindStringIndex(hops[at:])
		if loc == nil {
			t.Errorf("no %s after hop text offset %d:\n%s", re, at, hops)
			return
		}
		at += loc[1]
	}
}

func hopsText(r daemon.TraceResult) string {
	var b strings.Builder
	for i, h := range r.Hops {
		fmt.Fprintf(&b, "%d %s [%s] %s\n", i+1, h.Netns, h.Kind, h.Text)
	}
	return b.String()
}

// TestTraceNodes traces in a two-node lab: pod → pod on the other node shows the client's node sending the
// frames over VXLAN (VNI, the other node's underlay address) and the other node taking them to the pod's
// port, and no router; pod → pod on the same node stays on the node's bridge; pod → Service is DNAT'd on the
// client's node, whose bridge sends the frames over VXLAN to the endpoint's node, and no router; a Service's
// endpoint that picks itself goes on to the router, which makes the hairpin work.
// pi network shows the nodes, their bridges and VXLAN devices and which pod is where.
func TestTraceNodes(t *testing.T) {
	lab := startLabWith(t, "--nodes", "2")
	mustPi(t, lab, "image", "build", "nginx", "podinfo")
	c := piCmd(lab, "create", "-f", "-")
	c.Stdin = strings.NewReader(nodesVisibleManifest)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("pi create -f -: %v\n%s", err, out)
	}
	mustPi(t, lab, "wait", "--for=condition=Ready", "pod/nginx", "pod/near", "pod/far", "--timeout=120s")
	mustPi(t, lab, "wait", "endpoints/far", "--for=jsonpath={.subsets[0].addresses[0].ip}", "--timeout=30s")
	ip := func(pod string) string {
		return strings.TrimSpace(mustPi(t, lab, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
	}
	farIP, nearIP := ip("far"), ip("near")
	if !strings.HasPrefix(farIP, "10.244.2.") || !strings.HasPrefix(nearIP, "10.244.1.") {
		t.Fatalf("far %s is not in worker2's block or near %s not in worker's", farIP, nearIP)
	}
	acct := regexp.MustCompile(`vx(\d+)`)

	t.Run("cross-node", func(t *testing.T) {
		r := traceJSON(t, lab, "nginx", "http://"+farIP+":9898/")
		hops := hopsText(r)
		if r.HTTPStatus != 200 || r.AnsweredBy != "far" {
			t.Errorf("HTTP %d answered by %q, want 200 by far:\n%s", r.HTTPStatus, r.AnsweredBy, hops)
		}
		m := acct.FindStringSubmatch(hops)
		if m == nil {
			t.Fatalf("no VXLAN device in the hops:\n%s", hops)
		}
		a := m[1]
		for _, want := range []string{
			"1 pod nginx [route] from ",
			fmt.Sprintf("2 node worker [vxlan] bridge b%s → vx%s, VNI %s → 169.254.1.2, node worker2 (vx%s's forwarding entry for ", a, a, a, a),
			fmt.Sprintf("3 node worker2 [vxlan] vx%s → bridge b%s → port ", a, a),
			fmt.Sprintf("(pod far, %s); VNI %s from 169.254.1.1\n", farIP, a),
			"4 pod far [endpoint] ",
		} {
			if !strings.Contains(hops, want) {
				t.Errorf("no %q in the hops:\n%s", want, hops)
			}
		}
		if strings.Contains(hops, "router") {
			t.Errorf("the frames went from node to node, but the hops name the router:\n%s", hops)
		}
		if h := r.Hops[1]; h.Node != "worker" || h.Remote != "169.254.1.2" || fmt.Sprint(h.VNI) != a {
			t.Errorf("the VXLAN hop's fields %+v", h)
		}
	})

	t.Run("same-node", func(t *testing.T) {
		r := traceJSON(t, lab, "nginx", "http://"+nearIP+":9898/")
		hops := hopsText(r)
		if r.AnsweredBy != "near" {
			t.Errorf("answered by %q, want near:\n%s", r.AnsweredBy, hops)
		}
		if !regexp.MustCompile(`(?m)^2 node worker \[bridge\] bridge b\d+ → port \S+ \(pod near, ` + regexp.QuoteMeta(nearIP) + `\): \S+ is on the same node, the frames never leave it$`).MatchString(hops) {
			t.Errorf("no same-node bridge hop:\n%s", hops)
		}
		if strings.Contains(hops, "vxlan") || strings.Contains(hops, "router") {
			t.Errorf("a same-node path left the node:\n%s", hops)
		}
	})

	t.Run("service", func(t *testing.T) {
		r := traceJSON(t, lab, "nginx", "http://far:9898/")
		hops := hopsText(r)
		if r.AnsweredBy != "far" {
			t.Errorf("answered by %q, want far:\n%s", r.AnsweredBy, hops)
		}
		// In path order: nginx's node puts the account's packets in its conntrack zone, its Service rules
		// pick far and DNAT (as kube-proxy does on the client's node), and its bridge sends the frames over
		// VXLAN straight to worker2, to far's port. The router never sees them.
		order := []*regexp.Regexp{
			regexp.MustCompile(`(?m)^\d+ node worker \[rule\] \S+-svc-\d+/zone: iifname "b\d+" ct zone set \d+ → continue`),
			regexp.MustCompile(`(?m)^\d+ node worker \[rule\] \S+-svc-\d+/ep-far-tcp-9898-\S+: dnat to ` + regexp.QuoteMeta(farIP) + `:9898 → accept`),
			regexp.MustCompile(`(?m)^\d+ node worker \[nat\] conntrack: dnat to ` + regexp.QuoteMeta(farIP) + `:9898 \(far\)`),
			regexp.MustCompile(`(?m)^\d+ node worker \[vxlan\] bridge b\d+ → vx\d+, VNI \d+ → 169\.254\.1\.2, node worker2 `),
			regexp.MustCompile(`(?m)^\d+ node worker2 \[vxlan\] vx\d+ → bridge b\d+ → port \S+ \(pod far, `),
			regexp.MustCompile(`(?m)^\d+ pod far \[endpoint\] `),
		}
		inOrder(t, hops, order)
		if strings.Contains(hops, "router") {
			t.Errorf("the client's node DNAT'd the connection, but the hops name the router:\n%s", hops)
		}
	})

	// A Service's endpoint that picks itself: its node leaves the connection to the router (a pod cannot
	// get its own packet back from its own address), whose DNAT and masquerade make the hairpin work.
	t.Run("service from its own endpoint", func(t *testing.T) {
		r := traceJSON(t, lab, "far", "http://far:9898/")
		hops := hopsText(r)
		if r.HTTPStatus != 200 || r.AnsweredBy != "far" {
			t.Errorf("HTTP %d answered by %q, want 200 by far:\n%s", r.HTTPStatus, r.AnsweredBy, hops)
		}
		order := []*regexp.Regexp{
			regexp.MustCompile(`(?m)^\d+ node worker2 \[rule\] \S+-svc-\d+/ep-far-tcp-9898-\S+: ip saddr ` + regexp.QuoteMeta(farIP) + ` return → return`),
			regexp.MustCompile(`(?m)^\d+ node worker2 \[vxlan\] bridge b\d+ → vx\d+, VNI \d+ → 169\.254\.16\.\d+, router \S+ `),
			regexp.MustCompile(`(?m)^\d+ router \S+ \[rule\] \S+-svc/ep-far-tcp-9898-\S+: dnat to ` + regexp.QuoteMeta(farIP) + `:9898 → accept`),
			regexp.MustCompile(`(?m)^\d+ router \S+ \[nat\] conntrack: dnat to ` + regexp.QuoteMeta(farIP) + `:9898 \(far\); source rewritten to 10\.244\.0\.1:`),
		}
		inOrder(t, hops, order)
	})

	t.Run("network", func(t *testing.T) {
		text := mustPi(t, lab, "network")
		t.Logf("pi network:\n%s", text)
		var v daemon.NetworkView
		if err := json.Unmarshal([]byte(mustPi(t, lab, "network", "-o", "json")), &v); err != nil {
			t.Fatal(err)
		}
		if len(v.Warnings) > 0 {
			t.Errorf("warnings %q", v.Warnings)
		}
		if len(v.Nodes) != 2 {
			t.Fatalf("nodes %+v", v.Nodes)
		}
		w1, w2 := v.Nodes[0], v.Nodes[1]
		if w1.Name != "worker" || strings.Join(w1.Pods, ",") != "near,nginx" || w1.Underlay != "169.254.1.1/16" || w1.VXLAN == nil {
			t.Errorf("worker %+v", w1)
		}
		if w2.Name != "worker2" || strings.Join(w2.Pods, ",") != "far" || w2.Underlay != "169.254.1.2/16" || len(w2.Bridge.Ports) != 1 || w2.Bridge.Ports[0].Pod != "far" {
			t.Errorf("worker2 %+v", w2)
		}
		if x := w2.VXLAN; x == nil || !strings.Contains(strings.Join(x.Peers, ","), "169.254.1.1 (node worker)") || !strings.Contains(strings.Join(x.Peers, ","), "(router)") {
			t.Errorf("worker2's VXLAN %+v", w2.VXLAN)
		}
		for _, p := range v.Pods {
			if p.Port == "" || (p.Name == "far") != (p.Node == "worker2") {
				t.Errorf("pod %+v", p)
			}
		}
		for _, want := range []string{
			"(lab " + lab + ", 2 nodes)",
			"── VXLAN VNI ",
			"├─ node worker  ready  netns " + lab + "-n1  underlay ul0 169.254.1.1/16 up",
			"└─ node worker2  ready  netns " + lab + "-n2  underlay ul0 169.254.1.2/16 up",
			"── pod far ",
		} {
			if !strings.Contains(text, want) {
				t.Errorf("pi network has no %q", want)
			}
		}
	})
}

// TestScenarioPodNetworkingNodes plays the pod-networking workshop headless on a multi-node lab that has
// one node left: the runner adds the second (pi node add), the pods spread over both, and the checks of
// several nodes hold (pods on two nodes, the trace from nginx to httpd crossing over VXLAN).
func TestScenarioPodNetworkingNodes(t *testing.T) {
	lab := startLabWith(t, "--nodes", "2")
	mustPi(t, lab, "node", "delete", "worker2")
	out, err := piCmd(lab, "scenario", "run", "pod-networking").CombinedOutput()
	t.Logf("pi scenario run pod-networking:\n%s", out)
	if err != nil {
		t.Fatalf("pi scenario run pod-networking: %v", err)
	}
	for _, want := range []string{
		"# the lab has 1 node and the workshop is about 2: adding 1",
		"$ pi node add\n",
		"✓ the pods run on two nodes\n",
		"✓ the frames cross from nginx's node to httpd's over VXLAN\n",
		"✓ httpd answered\n",
		"=== PASS pod-networking",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in the run", want)
		}
	}
	if strings.Contains(string(out), "skipped") {
		t.Errorf("a check was skipped on two nodes")
	}
	if n := strings.Count(mustPi(t, lab, "get", "nodes"), "Ready"); n != 2 {
		t.Errorf("%d Ready nodes after the workshop, want 2 (the one it added stays)", n)
	}
}
