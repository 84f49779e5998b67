package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pilab/pi/lab/controller"
	"github.com/pilab/pi/net/netns"
	"k8s.io/apimachinery/pkg/types"
)

// nodePod is a pod as the node tests see it.
type nodePod struct{ name, uid, ip, node string }

// livePods lists the pods of a selector that are not being deleted (jsonpath cannot test for a missing
// field, so Terminating pods are filtered here).
func livePods(t *testing.T, lab, account, selector string) []nodePod {
	t.Helper()
	out := mustPi(t, lab, "--account", account, "get", "pods", "-l", selector, "-o", "json")
	var list struct {
		Items []struct {
			Metadata struct {
				Name              string  `json:"name"`
				UID               string  `json:"uid"`
				DeletionTimestamp *string `json:"deletionTimestamp"`
			} `json:"metadata"`
			Spec struct {
				NodeName string `json:"nodeName"`
			} `json:"spec"`
			Status struct {
				PodIP      string `json:"podIP"`
				Conditions []struct {
					Type, Status string
				} `json:"conditions"`
			} `json:"status"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("pods of %s: %v\n%s", account, err, out)
	}
	var pods []nodePod
	for _, it := range list.Items {
		if it.Metadata.DeletionTimestamp != nil {
			continue
		}
		pods = append(pods, nodePod{it.Metadata.Name, it.Metadata.UID, it.Status.PodIP, it.Spec.NodeName})
	}
	return pods
}

// podinfoName asks a pod for url with wget and returns the hostname podinfo answers with, "" if nothing
// answered.
func podinfoName(t *testing.T, lab, account, from, url string) string {
	t.Helper()
	out, err := piCmd(lab, "--account", account, "exec", from, "--", "wget", "-q", "-O-", "-T", "3", url).CombinedOutput()
	if err != nil {
		return ""
	}
	var info struct {
		Hostname string `json:"hostname"`
	}
	if json.Unmarshal(out, &info) != nil {
		return ""
	}
	return info.Hostname
}

// checkMatrix: from every pod of each account, every pod IP of the same account answers with that pod's
// own name, whatever node either is on. The accounts hold the same addresses (--sequential-ips), so an
// answer from another account's pod at the same address would be a leak between them.
func checkMatrix(t *testing.T, lab string, pods map[string][]nodePod) {
	t.Helper()
	for account, ps := range pods {
		for _, from := range ps {
			for _, to := range ps {
				got := podinfoName(t, lab, account, from.name, "http://"+to.ip+":9898/api/info")
				if got != to.name {
					t.Errorf("account %s: %s (%s, %s) → %s (%s, %s) answered %q, want %q", account, from.name, from.ip, from.node, to.ip, to.name, to.node, got, to.name)
				}
			}
		}
	}
}

func waitUntil(t *testing.T, what string, limit time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return time.Since(start)
}

// TestNodes runs a three-node lab with two accounts holding identical Pod IPs on every node: every
// same-account pair reaches across nodes and no cross-account pair does; a Service spreads over pods on all
// nodes; a Floating IP reaches a pod on any node; a stopped node turns NotReady, its pod is replaced on
// another node and the Service answers from three pods again; a daemon killed with SIGKILL leaves every
// cross-node path working; nodes are deleted (refused while pods are on them) and added.
func TestNodes(t *testing.T) {
	lab := startLabWith(t, "--nodes", "3", "--sequential-ips", "--eviction-timeout", "4s")
	hostNS := "inet-" + lab
	mustPi(t, lab, "image", "build", "podinfo")
	mustPi(t, lab, "account", "create", "bob")

	out := mustPi(t, lab, "get", "nodes")
	for _, n := range []string{"worker", "worker2", "worker3"} {
		if !regexp.MustCompile(`(?m)^` + n + ` +Ready +worker +\S+ +v1\.`).MatchString(out) {
			t.Errorf("pi get nodes: no Ready %s:\n%s", n, out)
		}
	}
	// A node at rest is not rewritten: its status is written when something changed (a controller that
	// rewrote it on every pass woke itself hundreds of times a second).
	rv := func() string {
		return mustPi(t, lab, "get", "nodes", "-o", "jsonpath={.items[*].metadata.resourceVersion}")
	}
	before := rv()
	time.Sleep(2 * time.Second)
	if after := rv(); after != before {
		t.Errorf("the nodes' resourceVersions moved at rest: %s → %s", before, after)
	}
	accounts := []string{"default", "bob"}
	pods := map[string][]nodePod{}
	for _, a := range accounts {
		mustPi(t, lab, "--account", a, "create", "deployment", "podinfo", "--image=podinfo", "--replicas=3")
		mustPi(t, lab, "--account", a, "rollout", "status", "deployment/podinfo", "--timeout=120s")
		pods[a] = livePods(t, lab, a, "app=podinfo")
		var nodes, ips []string
		for _, p := range pods[a] {
			nodes, ips = append(nodes, p.node), append(ips, p.ip)
		}
		slices.Sort(nodes)
		slices.Sort(ips)
		// One replica per node, each from its node's block; sequential addresses make both accounts' alike.
		if strings.Join(nodes, " ") != "worker worker2 worker3" || strings.Join(ips, " ") != "10.244.1.1 10.244.2.1 10.244.3.1" {
			t.Fatalf("account %s: pods on %v with %v; want one on each node, 10.244.N.1 on node N", a, nodes, ips)
		}
	}
	checkMatrix(t, lab, pods)

	// kubectl against the lab: nodes as a cluster shows them, a pod no node fits stays Pending with
	// kube-scheduler's event until a label makes a node fit, drain evicts and cordons.
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(mustPi(t, lab, "kubeconfig")), 0o600); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("kubectl", append([]string{"--kubeconfig", kc}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := kubectl("get", "nodes", "-o", "wide"); !regexp.MustCompile(`(?m)^worker2 +Ready +worker +\S+ +v1\.\S+ +169\.254\.1\.2 `).MatchString(out) {
		t.Errorf("kubectl get nodes -o wide:\n%s", out)
	}
	picky := filepath.Join(t.TempDir(), "picky.yml")
	os.WriteFile(picky, []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: picky\nspec:\n  nodeSelector:\n    disk: ssd\n  containers:\n  - name: podinfo\n    image: podinfo\n"), 0o644)
	kubectl("create", "-f", picky)
	const noFit = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
	waitUntil(t, "a FailedScheduling event for picky", 30*time.Second, func() bool {
		return strings.Contains(kubectl("get", "events", "--field-selector", "involvedObject.name=picky"), noFit)
	})
	if out := kubectl("get", "pod", "picky", "-o", "jsonpath={.status.phase} {.spec.nodeName} {.status.conditions[?(@.type==\"PodScheduled\")].reason}"); out != "Pending  Unschedulable" {
		t.Errorf("picky before any node fits: %q", out)
	}
	kubectl("label", "node", "worker2", "disk=ssd")
	kubectl("wait", "--for=condition=Ready", "pod/picky", "--timeout=60s")
	if out := kubectl("get", "pod", "picky", "-o", "jsonpath={.spec.nodeName}"); out != "worker2" {
		t.Errorf("picky placed on %q after labelling worker2 disk=ssd", out)
	}
	kubectl("delete", "pod", "picky")
	out = kubectl("drain", "worker3", "--ignore-daemonsets", "--timeout=60s")
	if !strings.Contains(out, "node/worker3 cordoned") || !strings.Contains(out, "node/worker3 drained") {
		t.Errorf("kubectl drain worker3:\n%s", out)
	}
	mustPi(t, lab, "rollout", "status", "deployment/podinfo", "--timeout=60s")
	for _, p := range livePods(t, lab, "default", "app=podinfo") {
		if p.node == "worker3" {
			t.Errorf("pod %s still on the drained worker3", p.name)
		}
	}
	if out := kubectl("get", "node", "worker3"); !strings.Contains(out, "Ready,SchedulingDisabled") {
		t.Errorf("worker3 after drain:\n%s", out)
	}
	kubectl("uncordon", "worker3")
	// Back to one replica per node for what follows: the drained replica's successor goes elsewhere.
	mustPi(t, lab, "scale", "deployment/podinfo", "--replicas=0")
	mustPi(t, lab, "rollout", "status", "deployment/podinfo", "--timeout=60s")
	waitUntil(t, "podinfo scaled to 0", 60*time.Second, func() bool { return len(livePods(t, lab, "default", "app=podinfo")) == 0 })
	mustPi(t, lab, "scale", "deployment/podinfo", "--replicas=3")
	mustPi(t, lab, "rollout", "status", "deployment/podinfo", "--timeout=60s")
	pods["default"] = livePods(t, lab, "default", "app=podinfo")

	// A Service with an endpoint on every node spreads over all of them.
	mustPi(t, lab, "expose", "deployment", "podinfo", "--port=80", "--target-port=9898")
	seen := map[string]bool{}
	// The client stays up through the node failure below: it is not on worker2.
	var client string
	for _, p := range pods["default"] {
		if p.node != "worker2" {
			client = p.name
		}
	}
	for i := 0; i < 30 && len(seen) < 3; i++ {
		seen[podinfoName(t, lab, "default", client, "http://podinfo/api/info")] = true
	}
	delete(seen, "")
	if len(seen) != 3 {
		t.Errorf("the Service answered from %v; want its three pods on three nodes", seen)
	}

	// A Floating IP reaches pods on any node: its Service's answers come from more than one node.
	fip := strings.TrimSpace(mustPi(t, lab, "create", "fip"))
	mustPi(t, lab, "expose", "deployment", "podinfo", "--name=podinfo-lb", "--type=LoadBalancer", "--port=8080", "--target-port=9898", "--load-balancer-ip="+fip)
	mustPi(t, lab, "wait", "service/podinfo-lb", "--for=jsonpath={.status.loadBalancer.ingress[0].ip}="+fip, "--timeout=30s")
	inet := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: netns.DialContext(netns.Path(hostNS)), DisableKeepAlives: true}}
	fromInternet := map[string]bool{}
	for i := 0; i < 30 && len(fromInternet) < 3; i++ {
		if name := getHostname(inet, "http://"+fip+":8080/api/info"); name != "" {
			fromInternet[name] = true
		}
	}
	if len(fromInternet) < 2 {
		t.Errorf("http://%s:8080 from the Internet side answered from %v; want pods on several nodes", fip, fromInternet)
	}

	// Node failure: NotReady, eviction after 4 s, a replacement on another node, the Service whole again.
	var victim nodePod
	for _, p := range pods["default"] {
		if p.node == "worker2" {
			victim = p
		}
	}
	stopped := time.Now()
	mustPi(t, lab, "node", "stop", "worker2")
	if out := mustPi(t, lab, "get", "node", "worker2"); !regexp.MustCompile(`(?m)^worker2 +NotReady `).MatchString(out) {
		t.Errorf("after pi node stop: %s", out)
	}
	if got := podinfoName(t, lab, "default", client, "http://"+victim.ip+":9898/api/info"); got != "" {
		t.Errorf("the stopped node's pod %s still answers at %s: %q", victim.name, victim.ip, got)
	}
	var replaced []nodePod
	waitUntil(t, "a replacement of "+victim.name+" on another node", 90*time.Second, func() bool {
		replaced = livePods(t, lab, "default", "app=podinfo")
		if len(replaced) != 3 {
			return false
		}
		for _, p := range replaced {
			if p.name == victim.name || p.node == "worker2" || p.ip == "" {
				return false
			}
		}
		return true
	})
	mustPi(t, lab, "rollout", "status", "deployment/podinfo", "--timeout=60s")
	seen = map[string]bool{}
	for i := 0; i < 30 && len(seen) < 3; i++ {
		seen[podinfoName(t, lab, "default", client, "http://podinfo/api/info")] = true
	}
	delete(seen, "")
	for _, p := range replaced {
		if !seen[p.name] {
			t.Errorf("after the replacement the Service answered from %v; want %v", seen, replaced)
		}
	}
	t.Logf("pi node stop → replacement Ready and the Service answering from 3 pods again: %s (eviction timeout 4 s)", time.Since(stopped).Round(time.Millisecond))
	mustPi(t, lab, "node", "start", "worker2")
	waitUntil(t, "the evicted pod collected once its node is back", 60*time.Second, func() bool {
		out, _ := piCmd(lab, "get", "pod", victim.name).CombinedOutput()
		return strings.Contains(string(out), "NotFound")
	})
	// Every account's pod on worker2 was evicted and replaced.
	for _, a := range accounts {
		mustPi(t, lab, "--account", a, "rollout", "status", "deployment/podinfo", "--timeout=60s")
		pods[a] = livePods(t, lab, a, "app=podinfo")
	}

	// kill -9 of the daemon changes nothing on the data path, and its restart keeps every path.
	pid, err := os.ReadFile("/run/pilab/" + lab + "/pi.pid")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
	syscall.Kill(n, syscall.SIGKILL)
	waitUntil(t, "the daemon gone", 10*time.Second, func() bool { return syscall.Kill(n, 0) != nil })
	for a, ps := range pods {
		if got := podinfoNameNoDaemon(lab, ps[0], ps[len(ps)-1].ip); got != ps[len(ps)-1].name {
			t.Errorf("account %s with the daemon dead: %s → %s answered %q", a, ps[0].name, ps[len(ps)-1].ip, got)
		}
	}
	// A restart rebuilds what is missing from the store: here a node's VXLAN device of account default.
	if out, err := exec.Command("ip", "-n", lab+"-n2", "link", "del", "vx1").CombinedOutput(); err != nil {
		t.Fatalf("delete vx1 on node 2: %v\n%s", err, out)
	}
	mustPi(t, lab, "up", "--host-netns", hostNS)
	checkMatrix(t, lab, pods)

	// Delete: refused while pods are there; pi node drain deletes every account's pods there (kubectl drain
	// only the acting account's), the ReplicaSets' come back elsewhere, and the delete goes through.
	if out, err := piCmd(lab, "node", "delete", "worker3").CombinedOutput(); err == nil || !strings.Contains(string(out), "drain it first") {
		t.Errorf("pi node delete worker3 with pods on it: %v\n%s", err, out)
	}
	out = mustPi(t, lab, "node", "drain", "worker3")
	for a := range pods {
		if !regexp.MustCompile(`(?m)^pod/` + a + `/\S+ deleted$`).MatchString(out) {
			t.Errorf("pi node drain worker3 deleted no pod of account %s:\n%s", a, out)
		}
	}
	if !regexp.MustCompile(`(?m)^node/worker3 drained \(`).MatchString(out) {
		t.Errorf("pi node drain worker3:\n%s", out)
	}
	if out := mustPi(t, lab, "get", "node", "worker3"); !strings.Contains(out, "Ready,SchedulingDisabled") {
		t.Errorf("worker3 after pi node drain:\n%s", out)
	}
	mustPi(t, lab, "node", "delete", "worker3")
	if _, err := os.Stat(netns.Path(lab + "-n3")); err == nil {
		t.Errorf("netns %s-n3 still there after pi node delete worker3", lab)
	}
	mustPi(t, lab, "rollout", "status", "deployment/podinfo", "--timeout=60s")
	for _, p := range livePods(t, lab, "default", "app=podinfo") {
		if p.node == "worker3" {
			t.Errorf("pod %s on the deleted node", p.name)
		}
	}
	start := time.Now()
	if out := mustPi(t, lab, "node", "add"); !strings.HasPrefix(out, "node/worker3 added") {
		t.Errorf("pi node add: %q", out)
	}
	t.Logf("pi node add: %s", time.Since(start).Round(time.Millisecond))
	if out, err := piCmd(lab, "up", "--nodes", "0").CombinedOutput(); err == nil || !strings.Contains(string(out), "a lab has 1 to 255 nodes") {
		t.Errorf("pi up --nodes 0: %v\n%s", err, out)
	}
}

// podinfoNameNoDaemon asks from inside a pod's network namespace (<lab>-p-<uid>, controller.PodNetnsName)
// without the daemon, which pi exec needs.
func podinfoNameNoDaemon(lab string, from nodePod, ip string) string {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: netns.DialContext(netns.Path(controller.PodNetnsName(lab, types.UID(from.uid)))), DisableKeepAlives: true}}
	return getHostname(c, "http://"+ip+":9898/api/info")
}

func getHostname(c *http.Client, url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var info struct {
		Hostname string `json:"hostname"`
	}
	json.Unmarshal(body, &info)
	return info.Hostname
}
