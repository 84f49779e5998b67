package daemon

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vishvananda/netlink"

	"github.com/pilab/pi/lab/api"
)

// netFixture is an account with two pods (one a Service endpoint), a Service, a LoadBalancer on a
// Floating IP, and the kernel as the router would have them.
func netFixture() netInputs {
	pod := func(name, uid, ip string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + uid), Labels: labels},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}}
	}
	ep := func(name string, port int32, addrs ...string) *corev1.Endpoints {
		e := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: name}}
		ss := corev1.EndpointSubset{Ports: []corev1.EndpointPort{{Port: port}}}
		for i := 0; i < len(addrs); i += 2 {
			ss.Addresses = append(ss.Addresses, corev1.EndpointAddress{IP: addrs[i+1], TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: addrs[i]}})
		}
		e.Subsets = []corev1.EndpointSubset{ss}
		return e
	}
	return netInputs{
		lab: "pt", node: "box", routerNetns: "pt-r0",
		account: &api.Account{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Status: api.AccountStatus{
			Ready: true, Network: "10.244.0.0/16", RouterIP: "10.244.0.1", DNSIP: "10.244.0.2", WANIP: "100.64.0.2"}},
		pods: []*corev1.Pod{
			pod("web", "b", "10.244.7.2", map[string]string{"app": "web"}),
			pod("client", "a", "10.244.3.1", nil),
			{ObjectMeta: metav1.ObjectMeta{Name: "pending", UID: "uid-c"}, Status: corev1.PodStatus{Phase: corev1.PodPending}},
		},
		services: []*corev1.Service{
			{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "web-lb"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.11",
				LoadBalancerIP: "198.18.0.1", Ports: []corev1.ServicePort{{Port: 8080, Protocol: corev1.ProtocolTCP}}}},
		},
		endpoints: map[string]*corev1.Endpoints{"web": ep("web", 8080, "web", "10.244.7.2"), "web-lb": ep("web-lb", 8080, "web", "10.244.7.2")},
		fips: []*api.FloatingIP{{ObjectMeta: metav1.ObjectMeta{Name: "198.18.0.1"}, Spec: api.FloatingIPSpec{DisplayName: "shop"},
			Status: api.FloatingIPStatus{Services: []string{"web-lb"}}}},
		k: kernelNet{
			bridge: &linkInfo{name: "br0", mac: "0a:58:0a:f4:00:01", state: "up", mtu: 1400, addrs: []string{"10.244.0.1/16", "10.244.0.2/16"}},
			ports: []linkInfo{ // by name, as the kernel's names (hashes) sort
				{name: "p0002", state: "up", alias: "10.244.7.2 uid-b"},
				{name: "p0001", state: "up", alias: "10.244.3.1 uid-a"},
			},
			wan:       &linkInfo{name: "wan0", addrs: []string{"100.64.0.2/30"}},
			hostLink:  &linkInfo{name: "ptw0", addrs: []string{"100.64.0.1/30"}},
			internet:  []string{"203.0.113.10"},
			podMACs:   map[string]string{"uid-a": "0a:58:0a:f4:03:01", "uid-b": "0a:58:0a:f4:07:02"},
			dispatch:  map[string]string{"10.96.0.10 tcp 80": "svc-web-tcp-80", "10.96.0.11 tcp 8080": "svc-web-lb-tcp-8080"},
			tables:    []string{"ip pt-router", "ip pt-svc"},
			fipRoutes: map[string]string{"198.18.0.1": "via 100.64.0.2 dev ptw0"},
		},
	}
}

func TestBuildNetworkView(t *testing.T) {
	v := buildNetworkView(netFixture())
	if v.Router.Netns != "pt-r0" || v.Router.Exec != "ip netns exec pt-r0" || v.Router.Bridge.MAC != "0a:58:0a:f4:00:01" {
		t.Errorf("router %+v", v.Router)
	}
	// Pods sorted by name, each with the port its alias names and the MAC of its eth0.
	want := []PodView{
		{Name: "client", Phase: "Running", IP: "10.244.3.1", MAC: "0a:58:0a:f4:03:01", Port: "p0001", Node: "box", Netns: "pt-p-uid-a"},
		{Name: "pending", Phase: "Pending", Node: "box", Netns: "pt-p-uid-c"},
		{Name: "web", Phase: "Running", IP: "10.244.7.2", MAC: "0a:58:0a:f4:07:02", Port: "p0002", Node: "box", Netns: "pt-p-uid-b", Labels: map[string]string{"app": "web"}},
	}
	got, _ := json.Marshal(v.Pods)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Errorf("pods\n got %s\nwant %s", got, exp)
	}
	if p := v.Router.Bridge.Ports; len(p) != 2 || p[0].Pod != "client" || p[1].Pod != "web" || p[1].IP != "10.244.7.2" {
		t.Errorf("ports %+v", p)
	}
	if len(v.Services) != 2 || v.Services[0].Name != "web" || v.Services[0].Type != "ClusterIP" {
		t.Fatalf("services %+v", v.Services)
	}
	sp := v.Services[0].Ports[0]
	if sp.Chain != "svc-web-tcp-80" || sp.TargetPort != "8080" || len(sp.Endpoints) != 1 ||
		sp.Endpoints[0] != (EndpointView{Pod: "web", IP: "10.244.7.2", Port: 8080, Ready: true}) {
		t.Errorf("service port %+v", sp)
	}
	// A port without a targetPort targets the same number.
	if lb := v.Services[1]; lb.FIP != "198.18.0.1" || lb.Ports[0].TargetPort != "8080" {
		t.Errorf("load balancer %+v", lb)
	}
	if len(v.FIPs) != 1 || v.FIPs[0].Route != "via 100.64.0.2 dev ptw0" || v.FIPs[0].DisplayName != "shop" {
		t.Errorf("fips %+v", v.FIPs)
	}
	if want := (TransitView{RouterLink: "wan0", WANAddress: "100.64.0.2/30", HostLink: "ptw0", HostAddress: "100.64.0.1/30",
		InternetAddresses: []string{"203.0.113.10"}}); !reflect.DeepEqual(v.Transit, want) {
		t.Errorf("transit %+v", v.Transit)
	}
	if len(v.Warnings) != 0 {
		t.Errorf("warnings %v", v.Warnings)
	}
}

// What the store and the kernel disagree on is said.
func TestBuildNetworkViewWarnings(t *testing.T) {
	in := netFixture()
	in.k.ports = append(in.k.ports[1:], linkInfo{name: "p0009", alias: "10.244.9.9 uid-gone"})
	delete(in.k.dispatch, "10.96.0.10 tcp 80")
	v := buildNetworkView(in)
	for _, want := range []string{
		"br0 port p0009 (alias \"10.244.9.9 uid-gone\") belongs to no pod of account default",
		"pod web has address 10.244.7.2 but no port on br0",
		"service web port 80/tcp has 1 ready endpoints but no entry in the router's service-ips map",
	} {
		if !strings.Contains(strings.Join(v.Warnings, "\n"), want) {
			t.Errorf("no warning %q in %q", want, v.Warnings)
		}
	}
	if v.Services[0].Ports[0].Chain != "" {
		t.Errorf("chain %q without a dispatch entry", v.Services[0].Ports[0].Chain)
	}
}

// An account whose network is not set up has no router, and the JSON still has empty lists, not nulls.
func TestBuildNetworkViewNoRouter(t *testing.T) {
	in := netFixture()
	in.routerNetns, in.k = "", kernelNet{}
	in.account.Status = api.AccountStatus{Message: "creating"}
	v := buildNetworkView(in)
	b, _ := json.Marshal(v)
	for _, null := range []string{`"tables":null`, `"ports":null`, `"addresses":null`} {
		if strings.Contains(string(b), null) {
			t.Errorf("json has %s: %s", null, b)
		}
	}
	var buf bytes.Buffer
	WriteNetworkText(&buf, &v)
	if !strings.Contains(buf.String(), "not ready: creating") || !strings.Contains(buf.String(), "no router yet") {
		t.Errorf("text:\n%s", buf.String())
	}
}

func TestWriteNetworkText(t *testing.T) {
	in := netFixture()
	in.services = append(in.services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "peers"},
		Spec: corev1.ServiceSpec{ClusterIP: "None", Ports: []corev1.ServicePort{{Port: 7000}}}})
	v := buildNetworkView(in)
	var buf bytes.Buffer
	WriteNetworkText(&buf, &v)
	out := buf.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"account default (lab pt, node box) — network 10.244.0.0/16, ready\n",
		"└─ router  netns pt-r0   (look inside: ip netns exec pt-r0 nft list ruleset)\n",
		"   ├─ br0  10.244.0.1/16,10.244.0.2/16  mac 0a:58:0a:f4:00:01  mtu 1400  up   (the pods' gateway 10.244.0.1; account DNS 10.244.0.2)\n",
		"   │  ├─ port p0001 ── pod client  10.244.3.1  mac 0a:58:0a:f4:03:01  (eth0; running on box)\n",
		"   │  └─ port p0002 ── pod web     10.244.7.2  mac 0a:58:0a:f4:07:02  (eth0; running on box)\n",
		"   ├─ wan0  100.64.0.2/30 ══ transit link ══ ptw0  100.64.0.1/30 on the Internet side (this machine)\n",
		"pods without a port: pending (pending)\n",
		"   web  ClusterIP 10.96.0.10\n   └─ 10.96.0.10:80/tcp → target 8080   (chain svc-web-tcp-80)\n      └─ 10.244.7.2:8080  pod web\n",
		"   web-lb  LoadBalancer 10.96.0.11, Floating IP 198.18.0.1\n",
		"   198.18.0.1 (shop) → service web-lb   (Internet side routes it via 100.64.0.2 dev ptw0)\n",
		"   peers  ClusterIP None\n   └─ headless: no Service IP and no router rules",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q", want)
		}
	}
}

func TestWriteNetworkDot(t *testing.T) {
	v := buildNetworkView(netFixture())
	var buf bytes.Buffer
	WriteNetworkDot(&buf, &v)
	out := buf.String()
	for _, want := range []string{
		`digraph "pi network default" {`,
		`subgraph "cluster_router" {`,
		`"br0" -> "port:p0002" [dir=none];`,
		`"port:p0002" -> "pod:web" [dir=none, label="veth"];`,
		`"svc:web" -> "pod:web" [label="80→10.244.7.2:8080"];`,
		`"fip:198.18.0.1" -> "svc:web-lb";`,
		`"wan0" -> "internet" [label="transit", dir=both];`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Count(out, "{") != strings.Count(out, "}") || !strings.HasSuffix(out, "}\n") {
		t.Errorf("unbalanced graph:\n%s", out)
	}
}

func TestDispatchKeyParts(t *testing.T) {
	key := []byte{10, 96, 0, 10, 6, 0, 0, 0, 0x26, 0xaa, 0, 0}
	ip, proto, port, ok := dispatchKeyParts(key)
	if !ok || ip.String() != "10.96.0.10" || proto != "tcp" || port != 9898 {
		t.Errorf("got %s %s %d %v", ip, proto, port, ok)
	}
	if _, _, _, ok := dispatchKeyParts([]byte{1, 2}); ok {
		t.Errorf("a short key decoded")
	}
}

// The Internet side's addresses a trace may ping out to: neither loopback nor a transit link (the router
// rejects pods' traffic to those), in the kernel's order.
func TestInternetAddrs(t *testing.T) {
	addr := func(s string) netlink.Addr {
		a, err := netlink.ParseAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		return *a
	}
	got := internetAddrs([]netlink.Addr{addr("127.0.0.1/8"), addr("100.64.0.1/30"), addr("100.83.179.93/30"),
		addr("203.0.113.10/32"), addr("192.168.1.20/24"), addr("169.254.1.1/16"), addr("10.244.7.1/24")})
	if want := []string{"203.0.113.10", "192.168.1.20"}; !reflect.DeepEqual(got, want) {
		t.Errorf("internetAddrs = %q, want %q", got, want)
	}
}
