package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/lab/daemon"
	"github.com/pilab/pi/net/netns"
	corev1 "k8s.io/api/core/v1"
)

// TestNetworkAndRules runs `pi network` and `pi rules` against a real lab: a pod, a two-replica
// Deployment behind a Service and a LoadBalancer Service on a Floating IP. The map must match what
// `pi get` says (pod IPs, Service IP, endpoints) and what the kernel has, checked with `ip` directly
// (router netns, bridge ports, MACs, transit link, Floating IP route); the rules must name the Service's
// address, its chains and the DNAT to each endpoint, with pilab's comments, and the connection a trace
// just made must show up as a conntrack entry.
func TestNetworkAndRules(t *testing.T) {
	lab := startLab(t)
	mustPi(t, lab, "image", "build", "nginx", "podinfo")
	c := piCmd(lab, "create", "-f", "-")
	c.Stdin = strings.NewReader(traceManifest)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("pi create -f -: %v\n%s", err, out)
	}
	mustPi(t, lab, "wait", "--for=condition=Ready", "pod/nginx", "--timeout=90s")
	mustPi(t, lab, "rollout", "status", "deployment/podinfo", "--timeout=120s")
	mustPi(t, lab, "wait", "endpoints/podinfo", "--for=jsonpath={.subsets[0].addresses[1].ip}", "--timeout=30s")
	fip := strings.TrimSpace(mustPi(t, lab, "create", "fip"))
	c = piCmd(lab, "create", "-f", "-")
	c.Stdin = strings.NewReader(fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: podinfo-lb\nspec:\n  type: LoadBalancer\n  loadBalancerIP: %s\n  selector:\n    app: podinfo\n  ports:\n  - port: 8080\n    targetPort: 9898\n", fip))
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("create LoadBalancer: %v\n%s", err, out)
	}
	mustPi(t, lab, "wait", "fip/"+fip, "--for=jsonpath={.status.services[0]}=podinfo-lb", "--timeout=30s")

	// The lab's state as `pi get` has it.
	var pods corev1.PodList
	if out := mustPi(t, lab, "get", "pods", "-o", "json"); json.Unmarshal([]byte(out), &pods) != nil || len(pods.Items) != 3 {
		t.Fatalf("pi get pods -o json: want 3 pods:\n%s", out)
	}
	podIP := map[string]string{}
	podUID := map[string]string{}
	podinfo := map[string]string{} // IP → name
	for _, p := range pods.Items {
		podIP[p.Name], podUID[p.Name] = p.Status.PodIP, string(p.UID)
		if p.Labels["app"] == "podinfo" {
			podinfo[p.Status.PodIP] = p.Name
		}
	}
	svcIP := strings.TrimSpace(mustPi(t, lab, "get", "service", "podinfo", "-o", "jsonpath={.spec.clusterIP}"))

	// The Floating IP's route is programmed right after its status; wait for the map to show it.
	var v daemon.NetworkView
	var out string
	for i := 0; ; i++ {
		out = mustPi(t, lab, "network", "-o", "json")
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("pi network -o json: %v\n%s", err, out)
		}
		if len(v.FIPs) == 1 && v.FIPs[0].Route != "" || i == 40 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("pi network -o json:\n%s", out)
	ip := func(args ...string) string {
		t.Helper()
		b, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return string(b)
	}

	t.Run("router", func(t *testing.T) {
		if v.Account != "default" || !v.Ready || v.Lab != lab {
			t.Errorf("account %q ready %v lab %q", v.Account, v.Ready, v.Lab)
		}
		if _, err := os.Stat(netns.Path(v.Router.Netns)); err != nil || !strings.HasPrefix(v.Router.Netns, lab+"-r") {
			t.Fatalf("router netns %q: %v", v.Router.Netns, err)
		}
		if v.Router.Exec != "ip netns exec "+v.Router.Netns {
			t.Errorf("exec hint %q", v.Router.Exec)
		}
		br := ip("-n", v.Router.Netns, "-o", "addr", "show", "dev", "br0")
		if len(v.Router.Bridge.Addresses) == 0 || !strings.Contains(br, " "+v.Router.Bridge.Addresses[0]+" ") || v.Router.IP != "10.244.0.1" {
			t.Errorf("bridge addresses %v, router IP %s; ip addr says:\n%s", v.Router.Bridge.Addresses, v.Router.IP, br)
		}
		wan := ip("-n", v.Router.Netns, "-o", "addr", "show", "dev", "wan0")
		if v.Transit.WANAddress == "" || !strings.Contains(wan, " "+v.Transit.WANAddress+" ") {
			t.Errorf("WAN address %q; ip addr says:\n%s", v.Transit.WANAddress, wan)
		}
		host := ip("-n", "inet-"+lab, "-o", "addr", "show", "dev", v.Transit.HostLink)
		if v.Transit.HostAddress == "" || !strings.Contains(host, " "+v.Transit.HostAddress+" ") {
			t.Errorf("host side %s %q; ip addr says:\n%s", v.Transit.HostLink, v.Transit.HostAddress, host)
		}
		if !strings.Contains(strings.Join(v.Router.Tables, ","), "ip "+lab+"-svc") {
			t.Errorf("router tables %v: no Service table", v.Router.Tables)
		}
		if len(v.Warnings) > 0 {
			t.Errorf("warnings: %v", v.Warnings)
		}
	})

	t.Run("pods", func(t *testing.T) {
		if len(v.Pods) != len(podIP) || len(v.Router.Bridge.Ports) != len(podIP) {
			t.Fatalf("%d pods, %d bridge ports; pi get pods has %d", len(v.Pods), len(v.Router.Bridge.Ports), len(podIP))
		}
		for _, p := range v.Pods {
			if p.IP == "" || p.IP != podIP[p.Name] {
				t.Errorf("pod %s: IP %q, pi get pods says %q", p.Name, p.IP, podIP[p.Name])
			}
			// The port is a link of the router enslaved to br0, and the pod's eth0 has the MAC shown.
			link := ip("-n", v.Router.Netns, "-o", "-d", "link", "show", "dev", p.Port)
			if p.Port == "" || !strings.Contains(link, "master br0") {
				t.Errorf("pod %s: port %q is not on br0:\n%s", p.Name, p.Port, link)
			}
			eth0 := ip("-n", lab+"-p-"+podUID[p.Name], "-o", "link", "show", "dev", "eth0")
			if p.MAC == "" || !strings.Contains(eth0, "link/ether "+p.MAC+" ") {
				t.Errorf("pod %s: MAC %q; its eth0:\n%s", p.Name, p.MAC, eth0)
			}
			if p.Node == "" || p.Phase != "Running" {
				t.Errorf("pod %s: node %q phase %q", p.Name, p.Node, p.Phase)
			}
		}
	})

	t.Run("services", func(t *testing.T) {
		got := map[string]daemon.ServiceView{}
		for _, s := range v.Services {
			got[s.Name] = s
		}
		s := got["podinfo"]
		if s.ClusterIP != svcIP || len(s.Ports) != 1 || s.Ports[0].Port != 9898 || s.Ports[0].Chain != "svc-podinfo-tcp-9898" {
			t.Fatalf("service podinfo: %+v; want ClusterIP %s, port 9898 dispatched to svc-podinfo-tcp-9898", s, svcIP)
		}
		eps := s.Ports[0].Endpoints
		if len(eps) != 2 {
			t.Fatalf("service podinfo endpoints %+v, want the 2 podinfo pods %v", eps, podinfo)
		}
		for _, e := range eps {
			if podinfo[e.IP] == "" || podinfo[e.IP] != e.Pod || e.Port != 9898 || !e.Ready {
				t.Errorf("endpoint %+v; podinfo pods are %v", e, podinfo)
			}
		}
		lb := got["podinfo-lb"]
		if lb.FIP != fip || lb.Type != "LoadBalancer" || len(lb.Ports) != 1 || len(lb.Ports[0].Endpoints) != 2 {
			t.Errorf("service podinfo-lb: %+v", lb)
		}
		if len(v.FIPs) != 1 || v.FIPs[0].IP != fip || strings.Join(v.FIPs[0].Services, ",") != "podinfo-lb" {
			t.Fatalf("fips %+v; want %s → podinfo-lb", v.FIPs, fip)
		}
		wanIP, _, _ := strings.Cut(v.Transit.WANAddress, "/")
		route := ip("-n", "inet-"+lab, "route", "show", fip+"/32")
		if v.FIPs[0].Route != "via "+wanIP+" dev "+v.Transit.HostLink || !strings.Contains(route, "via "+wanIP) {
			t.Errorf("fip route %q; the Internet side has: %s", v.FIPs[0].Route, route)
		}
	})

	t.Run("text and dot", func(t *testing.T) {
		text := mustPi(t, lab, "network")
		t.Logf("pi network:\n%s", text)
		for _, want := range []string{"router  netns " + v.Router.Netns, "ip netns exec " + v.Router.Netns, svcIP + ":9898/tcp", fip + " → service podinfo-lb"} {
			if !strings.Contains(text, want) {
				t.Errorf("pi network: no %q", want)
			}
		}
		for name, addr := range podIP {
			if !regexp.MustCompile(`port p[0-9a-f]+ ── pod ` + regexp.QuoteMeta(name) + ` +` + regexp.QuoteMeta(addr) + ` `).MatchString(text) {
				t.Errorf("pi network: no port line for pod %s %s", name, addr)
			}
		}
		dot := mustPi(t, lab, "network", "-o", "dot")
		if !strings.HasPrefix(dot, "digraph ") || !strings.Contains(dot, `"pod:nginx"`) || !strings.Contains(dot, `"svc:podinfo" -> "pod:`) {
			t.Errorf("pi network -o dot:\n%s", dot)
		}
	})

	t.Run("rules service", func(t *testing.T) {
		// A connection to the Service, so that the router has a conntrack entry for it.
		mustPi(t, lab, "trace", "nginx", "http://podinfo:9898/")
		out := mustPi(t, lab, "rules", "service", "podinfo")
		t.Logf("pi rules service podinfo:\n%s", out)
		for _, want := range []string{
			"table ip " + lab + "-svc {",
			"map service-ips {",
			svcIP + " . tcp . 9898 : goto svc-podinfo-tcp-9898",
			"chain services {",
			"ip daddr . meta l4proto . th dport vmap @service-ips # handle ",
			"chain svc-podinfo-tcp-9898 {   # Service podinfo, port 9898/tcp: pick one of its endpoints",
			"numgen random mod 2 vmap @pick-podinfo-tcp-9898",
			"chain nat-prerouting {",
			"type nat hook prerouting priority -100; policy accept;",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("pi rules service podinfo: no %q", want)
			}
		}
		for addr := range podinfo {
			if !strings.Contains(out, "dnat to "+addr+":9898") {
				t.Errorf("pi rules service podinfo: no DNAT to endpoint %s", addr)
			}
		}
		if !regexp.MustCompile(`(?m)^tcp 10\.244\.\d+\.\d+:\d+ → ` + regexp.QuoteMeta(svcIP) + `:9898 \w+  reply 10\.244\.\d+\.\d+:9898 → 10\.244\.0\.1:\d+ dnat→10\.244\.\d+\.\d+:9898 snat→10\.244\.0\.1:\d+`).MatchString(out) {
			t.Errorf("pi rules service podinfo: no conntrack entry of the traced connection (DNAT to an endpoint, masquerade behind the router)")
		}
		lb := mustPi(t, lab, "rules", "service", "podinfo-lb")
		t.Logf("pi rules service podinfo-lb:\n%s", lb)
		for _, want := range []string{fip + " . tcp . 8080 : goto svc-podinfo-lb-tcp-8080", `comment "DNAT'd by a Service's Floating IP"`,
			`comment "Internet to pods only via fip-forward"`, "table ip " + lab + "-edge {"} {
			if !strings.Contains(lb, want) {
				t.Errorf("pi rules service podinfo-lb: no %q", want)
			}
		}
	})

	t.Run("rules pod and fip", func(t *testing.T) {
		var name, addr string
		for addr, name = range podinfo {
			break
		}
		out := mustPi(t, lab, "rules", "pod", name)
		t.Logf("pi rules pod %s:\n%s", name, out)
		var port string
		for _, p := range v.Pods {
			if p.Name == name {
				port = p.Port
			}
		}
		for _, want := range []string{"(" + addr + ")", "chain ep-podinfo-tcp-9898-" + addr + "-9898 {", "dnat to " + addr + ":9898",
			`comment "pod to pod"`, `comment "pods leave behind the WAN address"`, "attached to the router's br0 by port " + port + " "} {
			if !strings.Contains(out, want) {
				t.Errorf("pi rules pod %s: no %q", name, want)
			}
		}
		out = mustPi(t, lab, "rules", "fip", fip)
		t.Logf("pi rules fip %s:\n%s", fip, out)
		for _, want := range []string{"set fips {", "elements = { " + fip + " }", `comment "Floating IPs"`, "dnat to " + addr + ":9898"} {
			if !strings.Contains(out, want) {
				t.Errorf("pi rules fip %s: no %q", fip, want)
			}
		}
		var rv daemon.RulesView
		if err := json.Unmarshal([]byte(mustPi(t, lab, "rules", "pod", "nginx", "-o", "json")), &rv); err != nil || len(rv.Addresses) != 1 || rv.Addresses[0] != podIP["nginx"] {
			t.Errorf("pi rules pod nginx -o json: %+v (%v)", rv, err)
		}
	})

	// Another account has its own router and sees none of default's objects.
	t.Run("other account", func(t *testing.T) {
		mustPi(t, lab, "account", "create", "bob")
		var bob daemon.NetworkView
		if err := json.Unmarshal([]byte(mustPi(t, lab, "--account", "bob", "network", "-o", "json")), &bob); err != nil {
			t.Fatal(err)
		}
		if bob.Account != "bob" || bob.Router.Netns == "" || bob.Router.Netns == v.Router.Netns || len(bob.Pods) != 0 ||
			len(bob.Services) != 0 || len(bob.FIPs) != 0 || bob.Transit.HostLink == v.Transit.HostLink {
			t.Errorf("account bob's network: %+v", bob)
		}
		if _, err := os.Stat(netns.Path(bob.Router.Netns)); err != nil {
			t.Errorf("bob's router netns: %v", err)
		}
		b, err := piCmd(lab, "--account", "bob", "rules", "service", "podinfo").CombinedOutput()
		if err == nil || !strings.Contains(string(b), `service "podinfo" not found in account bob`) {
			t.Errorf("pi --account bob rules service podinfo: %v\n%s", err, b)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for args, want := range map[string]string{
			"rules service nope":           `service "nope" not found in account default (pi get services lists them)`,
			"rules pod nope":               `pod "nope" not found in account default`,
			"rules fip 192.0.2.9":          `fip "192.0.2.9" not found in account default`,
			"rules node x":                 "say service NAME, fip IP or pod NAME",
			"--account nobody network":     `account "nobody" not found`,
			"network -o yaml":              `-o "yaml": use text, dot or json`,
			"--lab nolab network":          "the pi daemon is not running",
			"--account nobody rules pod x": `account "nobody" not found`,
		} {
			b, err := piCmd(lab, strings.Fields(args)...).CombinedOutput()
			if err == nil || !strings.Contains(string(b), want) {
				t.Errorf("pi %s: %v\n%s\nwant an error saying %q", args, err, b, want)
			}
		}
	})
}
