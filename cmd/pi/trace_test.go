package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pilab/pi/lab/daemon"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/trace"
	"github.com/vishvananda/netlink"
)

const traceManifest = `apiVersion: v1
kind: Pod
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  containers:
  - name: nginx
    image: nginx
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
spec:
  replicas: 2
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      labels:
        app: podinfo
    spec:
      containers:
      - name: podinfo
        image: podinfo
        ports:
        - containerPort: 9898
---
apiVersion: v1
kind: Service
metadata:
  name: podinfo
spec:
  selector:
    app: podinfo
  ports:
  - port: 9898
`

// TestTrace runs `pi trace` against a real lab: pod → Service name → endpoint, with the DNS answer, the
// router's service rules, the DNAT to a named podinfo replica and the HTTP answer, all observed from the
// kernel; then the Internet side → Floating IP → endpoint; refusals for another account's pod and for an
// address outside the lab; and no trace table left in any of the lab's namespaces.
func TestTrace(t *testing.T) {
	lab := startLab(t)
	mustPi(t, lab, "image", "build", "nginx", "podinfo")
	c := piCmd(lab, "create", "-f", "-")
	c.Stdin = strings.NewReader(traceManifest)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("pi create -f -: %v\n%s", err, out)
	}
	mustPi(t, lab, "account", "create", "bob")
	mustPi(t, lab, "--account", "bob", "run", "web", "--image=nginx")
	mustPi(t, lab, "wait", "--for=condition=Ready", "pod/nginx", "--timeout=90s")
	mustPi(t, lab, "rollout", "status", "deployment/podinfo", "--timeout=120s")
	mustPi(t, lab, "wait", "endpoints/podinfo", "--for=jsonpath={.subsets[0].addresses[1].ip}", "--timeout=30s")
	mustPi(t, lab, "--account", "bob", "wait", "--for=condition=Ready", "pod/web", "--timeout=90s")

	svcIP := strings.TrimSpace(mustPi(t, lab, "get", "service", "podinfo", "-o", "jsonpath={.spec.clusterIP}"))
	podinfo := map[string]string{} // IP → pod name
	for _, line := range strings.Split(strings.TrimSpace(mustPi(t, lab, "get", "pods", "-l", "app=podinfo", "-o",
		`jsonpath={range .items[*]}{.status.podIP} {.metadata.name}{"\n"}{end}`)), "\n") {
		ip, name, _ := strings.Cut(line, " ")
		podinfo[ip] = name
	}
	if len(podinfo) != 2 {
		t.Fatalf("podinfo pods: %v, want 2", podinfo)
	}

	routers, err := netns.ListNamed(lab + "-r")
	if err != nil || len(routers) != 2 {
		t.Fatalf("router namespaces %v (%v), want default's and bob's", routers, err)
	}
	rulesets := func() string {
		var all []string
		for _, r := range routers {
			// -s: without counters, which the traced requests (and any other traffic) move.
			out, err := exec.Command("ip", "netns", "exec", r, "nft", "-s", "list", "ruleset").CombinedOutput()
			if err != nil {
				t.Fatalf("nft list ruleset in %s: %v\n%s", r, err, out)
			}
			all = append(all, string(out))
		}
		return strings.Join(all, "\n")
	}
	// The Service's rules are programmed by the router's syncer after its endpoints are stored: compare
	// against the rules once they stopped changing, so the check is about what the traces did.
	settled := func() string {
		cur := rulesets()
		for i := 0; i < 40; i++ {
			time.Sleep(250 * time.Millisecond)
			next := rulesets()
			if next == cur {
				return cur
			}
			cur = next
		}
		t.Errorf("the routers' rulesets kept changing for 10 s")
		return cur
	}
	before := settled()

	t.Run("pod to service", func(t *testing.T) {
		start := time.Now()
		out := mustPi(t, lab, "trace", "nginx", "http://podinfo:9898/")
		took := time.Since(start)
		t.Logf("pi trace nginx http://podinfo:9898/ (%s):\n%s", took.Round(time.Millisecond), out)
		dns := regexp.MustCompile(`(?m)^DNS +nginx → 10\.244\.0\.2:53 +podinfo\.default\.svc\.cluster\.local → ` + regexp.QuoteMeta(svcIP) + ` +\(account DNS`)
		if !dns.MatchString(out) {
			t.Errorf("no DNS line with the Service IP %s", svcIP)
		}
		// The router's service map sends the packet to the Service's chain, which picks an endpoint.
		svcRule := regexp.MustCompile(`(?m)^\d+ +router default +\S+-svc/services +ip daddr \. meta l4proto \. th dport vmap @service-ips → goto svc-podinfo-tcp-9898 `)
		if !svcRule.MatchString(out) {
			t.Errorf("no hop with the router's service dispatch to chain svc-podinfo-tcp-9898")
		}
		if !regexp.MustCompile(`(?m)^\d+ +router default +\S+-svc/svc-podinfo-tcp-9898 +.*numgen random mod 2`).MatchString(out) {
			t.Errorf("no hop with the Service chain's random pick among 2 endpoints")
		}
		m := regexp.MustCompile(`(?m)^\d+ +router default +nat +conntrack: dnat to (10\.244\.\d+\.\d+):9898 \((\S+)\)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no DNAT hop naming the endpoint")
		}
		if podinfo[m[1]] != m[2] {
			t.Errorf("DNAT to %s named %q; the podinfo pods are %v", m[1], m[2], podinfo)
		}
		// The client is inside the pod network: the router masquerades it behind its bridge address.
		if !regexp.MustCompile(`(?m)^\d+ +router default +nat +conntrack: dnat .*; source rewritten to 10\.244\.0\.1:\d+`).MatchString(out) {
			t.Errorf("no masquerade behind the router's address 10.244.0.1")
		}
		if !regexp.MustCompile(`(?m)^\d+ +pod ` + regexp.QuoteMeta(m[2]) + ` +endpoint +to ` + regexp.QuoteMeta(m[1]) + ` out of the router's br0;`).MatchString(out) {
			t.Errorf("no hop into the chosen endpoint %s", m[2])
		}
		if !regexp.MustCompile(`(?m)^HTTP 200 in \d+\.\d ms, answered by ` + regexp.QuoteMeta(m[2]) + `$`).MatchString(out) {
			t.Errorf("no last line HTTP 200 answered by %s", m[2])
		}
	})

	t.Run("json", func(t *testing.T) {
		var res daemon.TraceResult
		out := mustPi(t, lab, "trace", "nginx", "http://"+svcIP+":9898/healthz", "-o", "json")
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("pi trace -o json: %v\n%s", err, out)
		}
		if res.HTTPStatus != 200 || res.DNS != nil || podinfo[strings.TrimSuffix(res.Endpoint, ":9898")] != res.AnsweredBy || len(res.Hops) == 0 {
			t.Errorf("trace to the Service IP: %+v", res)
		}
	})

	t.Run("refused", func(t *testing.T) {
		bobIP := strings.TrimSpace(mustPi(t, lab, "--account", "bob", "get", "pod", "web", "-o", "jsonpath={.status.podIP}"))
		for target, want := range map[string]string{
			"http://" + bobIP + "/": "no pod of account default has address " + bobIP + " (pod bob/web of another account has it in its own network): accounts share no link",
			"http://192.0.2.1/":     "192.0.2.1 is outside the lab",
			"http://example.com/":   `"example.com" is not a name inside the lab`,
			"http://10.96.255.254/": "10.96.255.254 is not the ClusterIP of a Service of account default",
		} {
			out, err := piCmd(lab, "trace", "nginx", target).CombinedOutput()
			t.Logf("pi trace nginx %s: %s", target, out)
			if err == nil || !strings.Contains(string(out), want) {
				t.Errorf("pi trace nginx %s: %v\n%s\nwant an error saying %q", target, err, out, want)
			}
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		var ip string
		for ip = range podinfo {
			break
		}
		b, err := piCmd(lab, "trace", "nginx", "tcp://"+ip+":1").CombinedOutput()
		out := string(b)
		t.Logf("pi trace nginx tcp://%s:1:\n%s", ip, out)
		if err == nil {
			t.Errorf("pi trace to a closed port exited 0")
		}
		// Pod to pod on the flat network: on-link, the router's bridge forwards the frames at layer 2, where
		// no IP rule sees them; the trace says so, as an inference.
		if !regexp.MustCompile(`(?m)^\d+ +router default +silent +the kernel reported nothing here \(inferred: the client reaches the address on-link, so the router's br0 bridges the frames at layer 2`).MatchString(out) {
			t.Errorf("no line saying why the router saw nothing")
		}
		if strings.Contains(out, "conntrack: dnat") {
			t.Errorf("a DNAT reported for a pod-to-pod connection")
		}
		want := `(?m)^connection refused; stopped at pod ` + regexp.QuoteMeta(podinfo[ip]) + `: nothing listens on ` + regexp.QuoteMeta(ip) + `:1 there \(inferred: `
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no last line saying the connection was refused by pod %s", podinfo[ip])
		}
	})

	if after := rulesets(); after != before {
		t.Errorf("the routers' rulesets changed across the traces:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	t.Run("from internet", func(t *testing.T) {
		fip := strings.TrimSpace(mustPi(t, lab, "create", "fip"))
		c := piCmd(lab, "create", "-f", "-")
		c.Stdin = strings.NewReader(fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata:\n  name: podinfo-lb\nspec:\n  type: LoadBalancer\n  loadBalancerIP: %s\n  selector:\n    app: podinfo\n  ports:\n  - port: 8080\n    targetPort: 9898\n", fip))
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("create LoadBalancer: %v\n%s", err, out)
		}
		mustPi(t, lab, "wait", "fip/"+fip, "--for=jsonpath={.status.services[0]}=podinfo-lb", "--timeout=30s")
		var out string
		// The Floating IP's route and DNAT are programmed right after the status; give them a moment.
		for i := 0; i < 20; i++ {
			b, err := piCmd(lab, "trace", "--from", "internet", "http://"+fip+":8080/").CombinedOutput()
			out = string(b)
			if err == nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("pi trace --from internet http://%s:8080/:\n%s", fip, out)
		before = settled() // now with the LoadBalancer's rules
		mustPi(t, lab, "trace", "--from", "internet", "http://"+fip+":8080/")
		m := regexp.MustCompile(`(?m)^\d+ +router default +nat +conntrack: dnat to (10\.244\.\d+\.\d+):9898 \((\S+)\)`).FindStringSubmatch(out)
		if m == nil || podinfo[m[1]] != m[2] {
			t.Fatalf("no DNAT of the Floating IP to a named podinfo pod")
		}
		if !regexp.MustCompile(`(?m)^\d+ +internet +route +from 100\.\d+\.\d+\.\d+ out \S+ via 100\.`).MatchString(out) {
			t.Errorf("no first hop from the Internet side's route")
		}
		if !regexp.MustCompile(`(?m)^HTTP 200 in \d+\.\d ms, answered by ` + regexp.QuoteMeta(m[2]) + `$`).MatchString(out) {
			t.Errorf("no last line HTTP 200 answered by %s", m[2])
		}
	})

	t.Run("from router", func(t *testing.T) {
		b, _ := piCmd(lab, "trace", "--from", "router", "http://podinfo:9898/").CombinedOutput()
		out := string(b)
		t.Logf("pi trace --from router http://podinfo:9898/:\n%s", out)
		if !regexp.MustCompile(`(?m)^DNS +router default → 10\.244\.0\.2:53 +podinfo\.default\.svc\.cluster\.local → `).MatchString(out) ||
			!regexp.MustCompile(`(?m)^\d+ +router default +route +`).MatchString(out) {
			t.Errorf("no DNS line or route hop from the router")
		}
		// The router's own connections to Service IPs are refused (its table has no nat-output): the trace
		// names the rule that did it, and no endpoint.
		if !regexp.MustCompile(`(?m)^connection refused; stopped at router default: \S+-svc/reject-service meta l4proto tcp reject `).MatchString(out) {
			t.Errorf("no last line naming the reject rule")
		}
		if strings.Contains(out, "pod podinfo") {
			t.Errorf("an endpoint hop for a connection no endpoint got")
		}
	})

	// The egress path: from a pod to a server on the Internet side (one this test runs in the lab's host
	// namespace), out through the router's NAT.
	t.Run("pod to internet", func(t *testing.T) {
		hostNS := "inet-" + lab
		h, err := netns.NewHandle(netns.Path(hostNS))
		if err != nil {
			t.Fatal(err)
		}
		lo, _ := h.LinkByName("lo")
		addr, _ := netlink.ParseAddr("203.0.113.80/32")
		err = h.AddrAdd(lo, addr)
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		var l net.Listener
		if err := netns.Do(netns.Path(hostNS), func() (err error) {
			l, err = net.Listen("tcp", "203.0.113.80:8080")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from the Internet side; you are %s\n", r.RemoteAddr)
		})}
		go srv.Serve(l)
		defer srv.Close()
		wan := strings.TrimSpace(mustPi(t, lab, "get", "account", "default", "-o", "jsonpath={.status.wanIP}"))
		out := mustPi(t, lab, "trace", "nginx", "http://203.0.113.80:8080/")
		t.Logf("pi trace nginx http://203.0.113.80:8080/:\n%s", out)
		// The router rewrites the pod's address to its WAN address, and the server answers.
		if !regexp.MustCompile(`(?m)^\d+ +router default +nat +conntrack: source rewritten to ` + regexp.QuoteMeta(wan) + `:\d+`).MatchString(out) {
			t.Errorf("no masquerade behind the router's WAN address %s", wan)
		}
		if !regexp.MustCompile(`(?m)^HTTP 200 in \d+\.\d ms, answered by the Internet side 203\.0\.113\.80:8080$`).MatchString(out) {
			t.Errorf("no last line HTTP 200 answered by the Internet side")
		}

		// A ping takes the same way out: forwarded, masqueraded behind the WAN address, answered.
		out = mustPi(t, lab, "trace", "nginx", "icmp://203.0.113.80")
		t.Logf("pi trace nginx icmp://203.0.113.80:\n%s", out)
		if !regexp.MustCompile(`(?m)^flow +icmp 10\.244\.\d+\.\d+ → 203\.0\.113\.80 `).MatchString(out) {
			t.Errorf("no icmp flow line")
		}
		if !regexp.MustCompile(`(?m)^\d+ +router default +\S+-router/postrouting +oifname "wan0" ip saddr 10\.244\.0\.0/16 masquerade`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^\d+ +router default +nat +conntrack: source rewritten to `+regexp.QuoteMeta(wan)+` \(`).MatchString(out) {
			t.Errorf("no masquerade rule hop, or no rewrite to the WAN address %s, for the ping", wan)
		}
		if !regexp.MustCompile(`(?m)^echo reply in \d+\.\d ms, answered by the Internet side 203\.0\.113\.80$`).MatchString(out) {
			t.Errorf("no last line: echo reply answered by the Internet side")
		}
	})

	// udp:// and icmp:// inside the account: the account's DNS server answers a datagram; a pod answers a
	// ping on the flat network; a ping to a Service IP is refused, saying why.
	t.Run("udp and icmp", func(t *testing.T) {
		out := mustPi(t, lab, "trace", "nginx", "udp://10.244.0.2:53")
		t.Logf("pi trace nginx udp://10.244.0.2:53:\n%s", out)
		if !regexp.MustCompile(`(?m)^datagram answered in \d+\.\d ms`).MatchString(out) {
			t.Errorf("no answer from the account's DNS server")
		}
		var ip string
		for p := range podinfo {
			ip = p
			break
		}
		out = mustPi(t, lab, "trace", "nginx", "icmp://"+ip)
		t.Logf("pi trace nginx icmp://%s:\n%s", ip, out)
		if !regexp.MustCompile(`(?m)^echo reply in \d+\.\d ms, answered by ` + regexp.QuoteMeta(podinfo[ip]) + `$`).MatchString(out) {
			t.Errorf("no echo reply from %s", podinfo[ip])
		}
		b, err := piCmd(lab, "trace", "nginx", "icmp://"+svcIP).CombinedOutput()
		if err == nil || !strings.Contains(string(b), "forwards its Services' ports only") {
			t.Errorf("a ping to the Service IP: %v\n%s", err, b)
		}
	})

	// Tracing left pilab's rules as they were, and no trace table anywhere the traces went.
	if after := rulesets(); after != before {
		t.Errorf("the routers' rulesets changed across the traces:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	names, err := netns.ListNamed(lab + "-")
	if err != nil {
		t.Fatal(err)
	}
	names = append(names, "inet-"+lab)
	for _, n := range names {
		left, err := trace.DeleteTraceTables(netns.Path(n))
		if err != nil || len(left) > 0 {
			t.Errorf("netns %s: trace tables left %v (%v)", n, left, err)
		}
	}
	if len(names) < 5 {
		t.Errorf("only namespaces %v checked for trace tables; want the router, 4 pods and the Internet side", names)
	}
}
