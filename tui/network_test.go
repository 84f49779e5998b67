package tui

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/daemon"
	"github.com/pilab/pi/scenarios"
)

// fakeNetwork answers the network pane's GET /x/network with a map the test sets, counting the asks.
type fakeNetwork struct {
	mu    sync.Mutex
	view  *daemon.NetworkView
	err   error
	calls int
}

func (f *fakeNetwork) Network(ctx context.Context) (*daemon.NetworkView, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return f.view, nil
}

// fakeLabNetwork is the map of the account as pod-networking leaves it, with labPods' addresses.
func fakeLabNetwork() *daemon.NetworkView {
	eps := []daemon.EndpointView{
		{Pod: "podinfo-7c59df8884-x7qh7", IP: "10.244.9.4", Port: 9898, Ready: true},
		{Pod: "podinfo-7c59df8884-2m9bt", IP: "10.244.131.20", Port: 9898, Ready: true},
	}
	return &daemon.NetworkView{
		Account: "default", Lab: "pi", Ready: true, Network: "10.244.0.0/16",
		Router: daemon.RouterView{Netns: "pi-r1", IP: "10.244.0.1", DNSIP: "10.244.0.2",
			Bridge: daemon.BridgeView{Name: "br0", Addresses: []string{"10.244.0.1/16"}}},
		Transit: daemon.TransitView{RouterLink: "wan0", WANAddress: "100.64.0.2/30"},
		Pods: []daemon.PodView{
			{Name: "httpd", Phase: "Running", IP: "10.244.18.162"},
			{Name: "nginx", Phase: "Running", IP: "10.244.9.3"},
			{Name: "podinfo-7c59df8884-2m9bt", Phase: "Running", IP: "10.244.131.20"},
			{Name: "podinfo-7c59df8884-x7qh7", Phase: "Running", IP: "10.244.9.4"},
		},
		Services: []daemon.ServiceView{{Name: "podinfo", Type: "ClusterIP", ClusterIP: "10.96.0.12",
			Ports: []daemon.ServicePortView{{Protocol: "TCP", Port: 9898, TargetPort: "9898", Chain: "svc-podinfo-tcp-9898", Endpoints: eps}}}},
		FIPs: []daemon.FIPView{{IP: "198.18.0.7", Services: []string{"test-loadbalancer"}}},
	}
}

// fakeTrace is what the daemon answers for a trace: line, in the shapes of lab/daemon's hops (route,
// rules, conntrack's rewrite, a namespace without rules): a Service's path for podinfo, else a pod's.
func fakeTrace(line string) *daemon.TraceResult {
	from, target, _ := scenarios.TraceArgs(line)
	tr := &daemon.TraceResult{Account: "default", From: from, Target: target, HTTPStatus: 200, Connected: true}
	if strings.Contains(target, "podinfo") {
		tr.DNS = &daemon.TraceDNS{Client: "nginx", Server: "10.244.0.2:53", Name: "podinfo.default.svc.cluster.local.", Answer: "10.96.0.12"}
		tr.Flow = "tcp 10.244.9.3:40001 → 10.96.0.12:9898"
		tr.Hops = []daemon.TraceHop{
			{Netns: "pod nginx", Kind: "route", Text: "from 10.244.9.3 out eth0 via 10.244.0.1"},
			{Netns: "router default", Kind: "rule", Direction: "request", Table: "pi-svc", Chain: "services", Verdict: "jump svc-podinfo-tcp-9898",
				Text: "pi-svc/services: ip daddr . meta l4proto . th dport vmap @dispatch → jump svc-podinfo-tcp-9898"},
			{Netns: "router default", Kind: "rule", Direction: "request", Table: "pi-svc", Chain: "svc-podinfo-tcp-9898", Verdict: "dnat to 10.244.9.4:9898",
				Text: "pi-svc/svc-podinfo-tcp-9898: numgen random mod 2 vmap → dnat to 10.244.9.4:9898"},
			{Netns: "router default", Kind: "nat", Text: "conntrack: dnat to 10.244.9.4:9898 (podinfo-7c59df8884-x7qh7)"},
		}
		tr.AnsweredBy, tr.Summary = "podinfo-7c59df8884-x7qh7", "HTTP 200 in 1.1 ms, answered by podinfo-7c59df8884-x7qh7"
		return tr
	}
	tr.Flow = "tcp 10.244.9.3:40001 → 10.244.18.162:80"
	tr.Hops = []daemon.TraceHop{
		{Netns: "pod nginx", Kind: "route", Text: "from 10.244.9.3 out eth0 on-link (the namespace's route to 10.244.18.162)"},
		{Netns: "router default", Kind: "silent", Inferred: true, Text: "the kernel reported nothing here (inferred: on-link, br0 bridges the frames at layer 2)"},
		{Netns: "pod httpd", Kind: "endpoint", Text: "to 10.244.18.162 out of the router's pi-p3"},
	}
	tr.AnsweredBy, tr.Summary = "httpd", "HTTP 200 in 0.8 ms, answered by httpd"
	return tr
}

// toTraceStep runs pod-networking up to its trace step (step 4) and runs it.
func toTraceStep(h *harness) {
	h.t.Helper()
	h.open(0)
	h.key("enter")
	for i := 0; i < 3; i++ {
		h.runStep()
		h.key("n")
	}
	if got := h.app.walk.sc.Steps[h.app.walk.cur].Commands[0].Kind(); got != "trace" {
		h.t.Fatalf("step 4 of pod-networking is a %s command, want the trace", got)
	}
	h.runStep()
}

func TestNetworkPaneToggles(t *testing.T) {
	h := newHarnessSize(t, 100, 30)
	labPods(h)
	live := h.app.View()
	if !strings.Contains(h.app.footer(), "tab map") {
		t.Errorf("the footer does not offer the network pane: %s", h.app.footer())
	}
	cmd := h.key("tab")
	if !h.app.showNet || cmd == nil {
		t.Fatalf("tab: showNet %v, fetch %v", h.app.showNet, cmd != nil)
	}
	if v := h.app.View(); !strings.Contains(v, "reading the account's network") {
		t.Errorf("before the answer the pane says nothing of it:\n%s", v)
	}
	h.send(cmd())
	v := h.app.View()
	for _, want := range []string{"NETWORK", "router pi-r1", "10.244.18.162 httpd", "podinfo 10.96.0.12:9898", "→ 10.244.9.4:9898", "10.244.131.20:9898", "198.18.0.7 → test-loadbalancer"} {
		if !strings.Contains(v, want) {
			t.Errorf("network pane lacks %q:\n%s", want, v)
		}
	}
	if !strings.Contains(h.app.footer(), "tab live") {
		t.Errorf("on the network pane the footer should offer the live pane back: %s", h.app.footer())
	}
	h.key("tab")
	if h.app.showNet || h.app.View() != live {
		t.Errorf("tab again did not bring the live pane back:\n%s", h.app.View())
	}
	// The daemon down: the pane says what failed instead of a map.
	h.net.err = errors.New("the pi daemon is not running: start it with pi up")
	h.send(h.key("tab")())
	if v := h.app.View(); !strings.Contains(v, "pi network: the pi daemon is not") {
		t.Errorf("the pane hides the error:\n%s", v)
	}
}

// The map follows the lab: a pod the watch reports (made by a step or by kubectl elsewhere) is drawn without
// a key pressed; a burst of events while the map is on its way costs one more fetch, not one per event;
// with the live pane shown, events fetch nothing.
func TestNetworkPaneFollowsTheLab(t *testing.T) {
	h := newHarnessSize(t, 100, 30)
	labPods(h)
	if h.net.calls != 0 {
		t.Fatalf("the map was fetched %d times with the live pane shown", h.net.calls)
	}
	first := h.key("tab")
	if first == nil {
		t.Fatal("tab: no fetch")
	}
	// A Deployment's pods arrive while the first answer is on its way.
	for _, name := range []string{"web-1", "web-2", "web-3"} {
		if cmd := h.send(podEvent(t, api.Added, name, "Pending", "")); cmd != nil {
			t.Fatalf("a watch event while the map is on its way fetched again at once")
		}
	}
	h.net.mu.Lock()
	grown := fakeLabNetwork()
	grown.Pods = append(grown.Pods, daemon.PodView{Name: "web-1", Phase: "Running", IP: "10.244.77.7"})
	h.net.view = grown
	h.net.mu.Unlock()
	// The first answer (already the grown map here) comes back and asks once more for the changes since.
	again := h.send(first())
	if again == nil {
		t.Fatal("the changes seen while the map was on its way were not asked for")
	}
	if cmd := h.send(again()); cmd != nil {
		t.Errorf("a third fetch with nothing changed since the second")
	}
	if h.net.calls != 2 {
		t.Errorf("%d fetches for one tab and a burst of 3 events, want 2", h.net.calls)
	}
	if v := stripANSI(h.app.View()); !strings.Contains(v, "10.244.77.7 web-1") {
		t.Errorf("the pane does not show the new pod:\n%s", v)
	}
	// Nothing on its way: an event asks at once.
	if cmd := h.send(podEvent(t, api.Deleted, "web-1", "Running", "10.244.77.7")); cmd == nil {
		t.Errorf("a watch event with the map shown and idle fetched nothing")
	}
	// Back to the live pane: events cost no fetch.
	h.send(networkMsg{v: fakeLabNetwork()})
	h.key("tab")
	if cmd := h.send(podEvent(t, api.Added, "web-4", "Pending", "")); cmd != nil {
		t.Errorf("a watch event with the live pane shown fetched the map")
	}
}

// A step that traces brings the network pane up with the path hop by hop, grouped by namespace in order.
func TestTraceStepDrawsPath(t *testing.T) {
	h := newHarnessSize(t, 120, 35)
	labPods(h)
	toTraceStep(h)
	if !h.app.showNet || h.app.net.trace == nil {
		t.Fatalf("after the trace step: showNet %v, trace %v", h.app.showNet, h.app.net.trace)
	}
	h.app.net.update(networkMsg{v: fakeLabNetwork()})
	v := stripANSI(h.app.net.View())
	order := []string{"LAST TRACE", "pi trace nginx http://10.244.18.162/", "● pod nginx", " 1 from 10.244.9.3 out eth0 on-link",
		"↓", "● router default", " 2 the kernel reported nothing here", "● pod httpd", " 3 to 10.244.18.162", "HTTP 200 in 0.8 ms, answered by httpd", "NETWORK"}
	at := 0
	for _, want := range order {
		i := strings.Index(v[at:], want)
		if i < 0 {
			t.Fatalf("network pane lacks %q after offset %d (in order %q):\n%s", want, at, order, v)
		}
		at += i + len(want)
	}
	// The transcript has the whole path too.
	if out := h.app.walk.shownOutput(); !strings.Contains(out, "$ pi trace nginx http://10.244.18.162/") || !strings.Contains(out, "2     router default:") {
		t.Errorf("output pane:\n%s", out)
	}
	// Another scenario starts without the last one's path.
	h.app.walk.done = true
	h.app.leaveIfDone()
	h.open(1)
	if h.app.net.trace != nil {
		t.Errorf("scale-podinfo opened with pod-networking's trace")
	}
}

func TestServiceTraceHopsShort(t *testing.T) {
	tr := fakeTrace("nginx http://podinfo:9898/")
	got := []string{}
	for _, hop := range tr.Hops {
		got = append(got, hopShort(hop))
	}
	want := []string{"from 10.244.9.3 out eth0 via 10.244.0.1", "services → jump svc-podinfo-tcp-9898", "svc-podinfo-tcp-9898 → dnat to 10.244.9.4:9898", "conntrack: dnat to 10.244.9.4:9898 (podinfo-7c59df8884-x7qh7)"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("hops %q, want %q", got, want)
	}
}

func TestGoldenNetwork(t *testing.T) {
	for _, size := range []struct{ w, h int }{{80, 24}, {120, 35}} {
		h := newHarnessSize(t, size.w, size.h)
		labPods(h)
		toTraceStep(h)
		h.app.net.update(networkMsg{v: fakeLabNetwork()})
		golden(t, "network-"+itoa(size.w)+"x"+itoa(size.h), size.w, size.h, h.app.View())
	}
}
