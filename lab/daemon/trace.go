package daemon

// POST /x/trace: `pi trace` — the daemon sends one request from inside a pod's (or the router's, or the
// Internet side's) network namespace and reports the path the kernel saw it take. The daemon does it
// because it is root and knows the lab's namespaces; the kernel half (trace tables, nftrace and conntrack
// events) is net/trace. The answer is data (TraceResult), so the CLI and the TUI draw the same hops.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/controller"
	"github.com/pilab/pi/lab/server"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/net/overlay"
	"github.com/pilab/pi/net/trace"
)

// TraceRequest is the body of POST /x/trace.
type TraceRequest struct {
	// Account whose pods and router are meant; "" for the request's account.
	Account string `json:"account,omitempty"`
	// From is a pod name ("[account/]pod"), "router" (the account's router) or "internet" (the lab's
	// Internet side, the daemon's --host-netns).
	From string `json:"from"`
	// Target is http://host[:port]/path, tcp://host:port, host:port, udp://host:port or icmp://host.
	Target string `json:"target"`
	// ownOnly keeps the trace inside Account: an account's token may not follow a Floating IP into another
	// account's router and pods (the admin may).
	ownOnly bool
}

// TraceResult is what a trace observed, in path order.
type TraceResult struct {
	Account string `json:"account"`
	From    string `json:"from"`
	Target  string `json:"target"`
	// Flow is the traced connection as the client made it (its source port was chosen to follow it).
	Flow string     `json:"flow"`
	DNS  *TraceDNS  `json:"dns,omitempty"`
	Hops []TraceHop `json:"hops"`
	// Outcome of the request: HTTPStatus for http targets, Connected for tcp targets, or Error.
	HTTPStatus int     `json:"httpStatus,omitempty"`
	Connected  bool    `json:"connected"`
	Error      string  `json:"error,omitempty"`
	Ms         float64 `json:"ms"` // connect to answer (or failure)
	// Endpoint is where the connection ended up (after any DNAT) and AnsweredBy the pod that has it.
	Endpoint   string `json:"endpoint,omitempty"`
	AnsweredBy string `json:"answeredBy,omitempty"`
	// StoppedAt says where a failed connection's trace ends.
	StoppedAt string `json:"stoppedAt,omitempty"`
	Summary   string `json:"summary"`
	TraceID   string `json:"traceID"`
	// Namespaces are the namespaces traced, in path order, and TablesLeft the trace tables found in them
	// after the session stopped (always empty unless cleanup failed).
	Namespaces []string `json:"namespaces"`
	TablesLeft []string `json:"tablesLeft,omitempty"`
}

// TraceDNS is the name lookup the trace made before connecting.
type TraceDNS struct {
	Client string  `json:"client"` // who asked (the pod)
	Server string  `json:"server"` // the account's DNS server, as the pod's resolv.conf names it
	Name   string  `json:"name"`   // the fully-qualified name that answered
	Answer string  `json:"answer"`
	Ms     float64 `json:"ms"`
}

// TraceHop is one observation on the path.
type TraceHop struct {
	Netns string `json:"netns"` // "pod nginx", "router default", "internet"
	// Kind: "route" (the client's socket and route), "rule" (a rule matched), "policy" (a base chain's
	// policy decided), "nat" (conntrack's rewrite), "more" (later packets of the connection), "endpoint"
	// (the pod the connection was sent to, when its namespace has no rules to trace), "silent" (the kernel
	// reported nothing in a namespace the packet should have crossed), "error" (a listener failed); in a
	// multi-node lab "bridge" (a node's bridge forwarded the frames to a pod on the same node) and "vxlan"
	// (the frames crossed the account's VXLAN segment), read from the bridges' forwarding databases.
	Kind      string `json:"kind"`
	Direction string `json:"direction,omitempty"` // "request" or "reply" (the first packet each way)
	Table     string `json:"table,omitempty"`
	Chain     string `json:"chain,omitempty"`
	Rule      string `json:"rule,omitempty"`    // the rule, rendered
	Comment   string `json:"comment,omitempty"` // pilab's comment on it
	// Note says what the rule's chain is for when pilab wrote no comment (net/lb's Service chains).
	Note    string `json:"note,omitempty"`
	Verdict string `json:"verdict,omitempty"`
	// Via is the gateway of a route hop ("" when the destination is on-link).
	Via    string `json:"via,omitempty"`
	In     string `json:"in,omitempty"`
	Out    string `json:"out,omitempty"`
	Packet string `json:"packet,omitempty"`
	Text   string `json:"text"` // the whole observation in words
	// Inferred marks a reason the lab's state suggests, not something the kernel reported.
	Inferred bool `json:"inferred,omitempty"`
	// Node is the node of a "bridge" or "vxlan" hop (a multi-node lab: the frames crossing a node's
	// bridge, or the account's VXLAN segment between nodes and the router); VNI is the segment's VXLAN
	// network identifier and Remote the underlay address the frames were sent to (or came from).
	Node   string `json:"node,omitempty"`
	VNI    int    `json:"vni,omitempty"`
	Remote string `json:"remote,omitempty"`
}

// traceTimeout bounds the traced request; a dropped SYN is reported as timed out after it.
const traceTimeout = 5 * time.Second

// traceSettle is how long events still arriving after the answer are waited for: the listeners run on
// their own goroutines, and the connection's last packets (FIN, ACK) follow the answer.
const traceSettle = 200 * time.Millisecond

func (d *Daemon) trace(w http.ResponseWriter, r *http.Request) {
	var req TraceRequest
	if err := server.DecodeJSON(w, r, &req); err != nil {
		server.WriteError(w, server.Invalid("trace request: %v; send {\"from\": \"POD|router|internet\", \"target\": \"http://HOST:PORT/\"}", err))
		return
	}
	if req.Account == "" {
		req.Account = server.Account(r)
	}
	if u, ok := server.UserFrom(r.Context()); ok && !u.IsAdmin() {
		// An account traces from its own pods only; another account's pod is as unknown as a name nobody has.
		req.Account, req.ownOnly = u.Name, true
		if a, pod, found := strings.Cut(req.From, "/"); found && a != u.Name {
			server.WriteError(w, fmt.Errorf("pod %q not found in account %q: %w", pod, u.Name, store.ErrNotFound))
			return
		}
	}
	res, err := d.runTrace(r.Context(), req)
	if err != nil {
		server.WriteError(w, err)
		return
	}
	server.WriteJSON(w, 200, res)
}

// traceTarget is a parsed target.
type traceTarget struct {
	scheme string // "http", "tcp", "udp" or "icmp"
	host   string
	port   uint16 // none for icmp
	url    string // for http
}

// proto is the IP protocol the target is reached by.
func (t traceTarget) proto() uint8 {
	switch t.scheme {
	case "udp":
		return unix.IPPROTO_UDP
	case "icmp":
		return unix.IPPROTO_ICMP
	}
	return unix.IPPROTO_TCP
}

// dst is the target's address as a flow prints it: with its port, but for icmp.
func (t traceTarget) dst(ip netip.Addr) string {
	if t.scheme == "icmp" {
		return ip.String()
	}
	return netip.AddrPortFrom(ip, t.port).String()
}

// parseTraceTarget accepts http://host[:port][/path], tcp://host:port, host:port, udp://host:port (a
// datagram, answered by any datagram back) and icmp://host (a ping).
func parseTraceTarget(s string) (traceTarget, error) {
	if s == "" {
		return traceTarget{}, errors.New("no target; give http://HOST:PORT/, tcp://HOST:PORT, HOST:PORT, udp://HOST:PORT or icmp://HOST")
	}
	if !strings.Contains(s, "://") {
		s = "tcp://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return traceTarget{}, fmt.Errorf("target %q: %v", s, err)
	}
	t := traceTarget{scheme: u.Scheme, host: u.Hostname()}
	def := ""
	switch u.Scheme {
	case "http":
		def = "80"
		t.url = u.String()
	case "tcp", "udp":
	case "icmp":
		if t.host == "" {
			return traceTarget{}, fmt.Errorf("target %q has no host", s)
		}
		if u.Port() != "" || (u.Path != "" && u.Path != "/") {
			return traceTarget{}, fmt.Errorf("target %q: a ping has no port or path; give icmp://HOST", s)
		}
		return t, nil
	default:
		return traceTarget{}, fmt.Errorf("target %q: scheme %q not traced; use http://, tcp://, udp:// or icmp://", s, u.Scheme)
	}
	if t.host == "" {
		return traceTarget{}, fmt.Errorf("target %q has no host", s)
	}
	p := u.Port()
	if p == "" {
		p = def
	}
	if p == "" {
		return traceTarget{}, fmt.Errorf("target %q has no port; give HOST:PORT", s)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return traceTarget{}, fmt.Errorf("target %q: port %q is not 1-65535", s, p)
	}
	t.port = uint16(n)
	return t, nil
}

// labAddrs is what the lab knows about addresses, for deciding what a trace may target.
type labAddrs struct {
	account  string
	pods     map[netip.Addr]string          // this account's pods by IP
	others   map[netip.Addr]string          // other accounts' pods: "account/pod"
	services map[netip.Addr]*corev1.Service // this account's ClusterIPs
	fips     map[netip.Addr]string          // the lab's Floating IPs → account
	lbs      map[netip.Addr]*corev1.Service // Floating IP → its LoadBalancer Service
	// internet are the addresses of the lab's Internet side (its --host-netns, or this machine): where a
	// pod's traffic leaves through its router's NAT.
	internet map[netip.Addr]bool
}

// Target kinds.
const (
	targetPod     = "pod"
	targetRouter  = "router"
	targetService = "service"
	targetFIP     = "fip"
	// targetInternet is an address of the lab's Internet side: the egress path, through the router's NAT.
	targetInternet = "internet"
)

// classifyTarget decides whether a trace may go to ip and what it is; the refusal says why (the lab's
// traffic rule: a trace never leaves the lab).
func classifyTarget(ip netip.Addr, fromInternet bool, l labAddrs) (string, error) {
	if fromInternet {
		if _, ok := l.fips[ip]; ok {
			return targetFIP, nil
		}
		return "", server.Invalid("%s is not one of the lab's Floating IPs: from the Internet side a trace may only go to a Floating IP (pi get fips); it never leaves the lab", ip)
	}
	podNet := netip.MustParsePrefix(network.PodCIDR.String())
	svcNet := netip.MustParsePrefix("10.96.0.0/12")
	switch {
	case podNet.Contains(ip):
		if _, ok := l.pods[ip]; ok {
			return targetPod, nil
		}
		if ip == netip.MustParseAddr(network.RouterIP.String()) || ip == netip.MustParseAddr(network.DNSIP.String()) {
			return targetRouter, nil
		}
		if other, ok := l.others[ip]; ok {
			return "", server.Invalid("no pod of account %s has address %s (pod %s of another account has it in its own network): accounts share no link, so a trace from account %s cannot reach it", l.account, ip, other, l.account)
		}
		return "", server.Invalid("no pod of account %s has address %s (pi get pods -o wide lists them)", l.account, ip)
	case svcNet.Contains(ip):
		if _, ok := l.services[ip]; ok {
			return targetService, nil
		}
		return "", server.Invalid("%s is not the ClusterIP of a Service of account %s (pi get services lists them)", ip, l.account)
	}
	if _, ok := l.fips[ip]; ok {
		return "", server.Invalid("%s is a Floating IP: trace it from the Internet side, with --from internet", ip)
	}
	if l.internet[ip] {
		return targetInternet, nil
	}
	return "", server.Invalid("%s is outside the lab: a trace only goes to addresses inside it (pod IPs in %s, Service IPs, the lab's Floating IPs with --from internet, the Internet side's own addresses), never to the outside world", ip, network.PodCIDR)
}

// traceNS is one namespace of the plan.
type traceNS struct {
	label string
	path  string
	role  string // "client", "node" (the client pod's, for a Service), "router", "internet", "endpoint"
	ip    netip.Addr
	// node: the client pod's node (a multi-node lab).
	node string
	// rules: the namespace has nftables tables of its own, so a packet crossing it is reported.
	rules bool
	// direct: an endpoint that is the target itself (a pod IP), not one a Service's DNAT may pick.
	direct bool
}

func (d *Daemon) runTrace(ctx context.Context, req TraceRequest) (*TraceResult, error) {
	tt, err := parseTraceTarget(req.Target)
	if err != nil {
		return nil, server.Invalid("%v", err)
	}
	from := req.From
	if from == "" {
		return nil, server.Invalid("trace: say where from: a pod name, router or internet")
	}
	account := req.Account
	if a, p, ok := strings.Cut(from, "/"); ok {
		account, from = a, p
	}
	fromInternet := from == "internet"

	// Where the client is.
	var client traceNS
	switch from {
	case "internet":
		client = traceNS{label: "internet", path: d.hostNetnsPath(), role: "internet"}
	case "router":
		client = traceNS{label: "router " + account, role: "router"}
	default:
		o, err := d.store.Get(kindPod, account, from)
		if err != nil {
			return nil, server.Invalid("trace from pod %q of account %s: %v", from, account, err)
		}
		p := o.(*corev1.Pod)
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || p.Status.Phase != corev1.PodRunning {
			return nil, server.Invalid("pod %s of account %s is not running with an address (phase %s); wait until it is Ready", from, account, p.Status.Phase)
		}
		client = traceNS{label: "pod " + from, path: netns.Path(controller.PodNetnsName(d.cfg.Lab, p.UID)), role: "client", ip: ip, node: p.Spec.NodeName}
	}

	res := &TraceResult{Account: account, From: req.From, Target: req.Target}

	// The target's address: a literal, or a name the account's DNS answers (asked from the client).
	var dst netip.Addr
	if a, err := netip.ParseAddr(tt.host); err == nil {
		dst = a
	} else if fromInternet {
		return nil, server.Invalid("target %q is a name: the Internet side has no account DNS; give a Floating IP", tt.host)
	}
	l, err := d.labAddrs(account)
	if err != nil {
		return nil, err
	}
	if fromInternet {
		if acct, ok := l.fips[dst]; ok && acct != account {
			if req.ownOnly {
				// Its path would show another account's router, rules and pods.
				return nil, server.Invalid("%s is not one of account %q's Floating IPs (pi get fips lists them); a trace shows only your own account's network", dst, account)
			}
			// The Floating IP's account is the one whose router and pods the packet crosses.
			account, res.Account = acct, acct
			if l, err = d.labAddrs(account); err != nil {
				return nil, err
			}
		}
	}
	acct, err := d.store.Get(kindAccount, "", account)
	if err != nil {
		return nil, server.Invalid("trace: account %q: %v", account, err)
	}
	status := acct.(*api.Account).Status
	if !status.Ready {
		return nil, server.Invalid("account %s's network is not ready (%s); try again when pi get accounts shows it Ready", account, status.Message)
	}
	router := traceNS{label: "router " + account, path: netns.Path(d.network.RouterNetnsName(status.Index)), role: "router"}
	if client.role == "router" {
		client.path = router.path
	}
	if !dst.IsValid() {
		dnsIP := status.DNSIP
		if dnsIP == "" {
			dnsIP = network.DNSIP.String()
		}
		dns, a, err := resolveInNetns(client.path, dnsIP, tt.host)
		if err != nil {
			return nil, err
		}
		dns.Client = strings.TrimPrefix(client.label, "pod ")
		res.DNS, dst = dns, a
	}
	if !fromInternet {
		addrs, err := hostAddrs(d.cfg.HostNetns)
		if err != nil {
			return nil, fmt.Errorf("trace: the Internet side's addresses: %w", err)
		}
		l.internet = map[netip.Addr]bool{}
		for _, a := range addrs {
			if ip, err := netip.ParseAddr(a); err == nil {
				l.internet[ip] = true
			}
		}
	}
	kind, err := classifyTarget(dst, fromInternet, l)
	if err != nil {
		return nil, err
	}
	if tt.scheme == "icmp" && (kind == targetService || kind == targetFIP) {
		// kube-proxy's rules, as the lab's, forward a Service's or Floating IP's ports only.
		return nil, server.Invalid("%s forwards its Services' ports only, so a ping to it is not answered by any pod; trace a port (tcp://%s:PORT), or ping a pod", dst, dst)
	}

	// The plan: the namespaces the packet should cross, in path order.
	plan := []traceNS{client}
	if n, ok := d.clientNode(client); ok && kind == targetService {
		// A multi-node lab: the client's node has the account's Service rules (net/lb WithNodeBridge) and
		// DNATs the connection as its frames enter the account's bridge there.
		plan = append(plan, n)
	}
	if client.role != "router" {
		plan = append(plan, router)
	}
	var selector map[string]string
	switch kind {
	case targetService:
		selector = l.services[dst].Spec.Selector
	case targetFIP:
		if svc := l.lbs[dst]; svc != nil {
			selector = svc.Spec.Selector
		}
	}
	pods, _ := d.store.List(kindPod, account)
	for _, o := range pods {
		p := o.(*corev1.Pod)
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			continue
		}
		match := kind == targetPod && ip == dst ||
			len(selector) > 0 && labels.SelectorFromSet(selector).Matches(labels.Set(p.Labels))
		if match && (client.role != "client" || ip != client.ip) {
			plan = append(plan, traceNS{label: "pod " + p.Name, path: netns.Path(controller.PodNetnsName(d.cfg.Lab, p.UID)),
				role: "endpoint", ip: ip, direct: kind == targetPod})
		}
	}
	if kind == targetInternet {
		// The server is on the Internet side: the packet leaves the router through its NAT.
		plan = append(plan, traceNS{label: "internet", path: d.hostNetnsPath(), role: "internet", ip: dst})
	}
	for i := range plan {
		plan[i].rules = hasOwnTables(plan[i].path)
		res.Namespaces = append(res.Namespaces, plan[i].label)
	}

	// The client's source port, chosen here so the trace follows the connection through every NAT. A ping
	// has no port: it is followed by its destination, which no NAT on a ping's path rewrites (a ping to a
	// Service or Floating IP is refused above).
	proto := tt.proto()
	var sport uint16
	if proto != unix.IPPROTO_ICMP {
		if sport, err = freePort(client.path, proto); err != nil {
			return nil, fmt.Errorf("trace: pick a source port in %s: %w", client.label, err)
		}
	}
	flow := trace.Flow{Proto: proto, SrcPort: sport}
	if client.ip.IsValid() {
		flow.Src = client.ip
	}
	follow := trace.Flow{Proto: proto, SrcPort: sport}
	if proto == unix.IPPROTO_ICMP {
		flow.Dst, follow.Dst = dst, dst
	}
	var nss []trace.Namespace
	for i, n := range plan {
		ns := trace.Namespace{Name: n.label, Path: n.path}
		if i > 0 {
			ns.Match = &follow
		}
		nss = append(nss, ns)
	}
	sess, err := trace.Start(ctx, flow, nss)
	if err != nil {
		return nil, fmt.Errorf("trace: start: %w", err)
	}
	res.TraceID = sess.ID
	var events []trace.Event
	collected := make(chan struct{})
	go func() {
		for ev := range sess.Events {
			events = append(events, ev)
		}
		close(collected)
	}()

	route, routeSrc := clientRoute(client, dst)
	local, status2, reqErr, ms := doRequest(ctx, client.path, tt, dst, sport)
	res.Ms = ms
	if !local.IsValid() && client.ip.IsValid() {
		local = netip.AddrPortFrom(client.ip, sport) // the dial failed; the socket was bound there
	} else if !local.IsValid() && routeSrc.IsValid() {
		local = netip.AddrPortFrom(routeSrc, sport) // the source the route gives
	}
	switch {
	case proto == unix.IPPROTO_ICMP && local.IsValid():
		res.Flow = fmt.Sprintf("icmp %s → %s", local.Addr(), dst)
	case proto == unix.IPPROTO_ICMP:
		res.Flow = fmt.Sprintf("icmp * → %s", dst)
	case local.IsValid():
		res.Flow = fmt.Sprintf("%s %s → %s", trace.ProtoName(proto), local, tt.dst(dst))
	default:
		res.Flow = fmt.Sprintf("%s *:%d → %s", trace.ProtoName(proto), sport, tt.dst(dst))
	}
	time.Sleep(traceSettle)
	stopErr := sess.Stop()
	<-collected
	for _, n := range plan {
		if left, err := tablesLeft(n.path); err == nil {
			res.TablesLeft = append(res.TablesLeft, left...)
		}
	}
	if stopErr != nil {
		return nil, fmt.Errorf("trace %s: %w", sess.ID, stopErr)
	}

	names := map[netip.Addr]string{}
	for ip, n := range l.pods {
		names[ip] = n
	}
	hops, endpoint := buildHops(plan, route, directionOf(proto, sport), events, names)
	if f, ok := d.l2Fabric(account, status.Index, router, names); ok {
		hops = f.nodeHops(hops, client, route, dst, endpoint.Addr())
	}
	res.Hops = hops
	switch {
	case endpoint.IsValid():
		res.Endpoint = endpoint.String()
	case kind == targetPod:
		res.Endpoint = tt.dst(dst)
	}
	if endpoint.IsValid() {
		res.AnsweredBy = names[endpoint.Addr()]
	} else if kind == targetPod {
		res.AnsweredBy = names[dst]
	} else if kind == targetInternet {
		res.Endpoint = tt.dst(dst)
	}
	if reqErr != nil {
		res.Error = reqErr.Error()
		res.StoppedAt = stoppedAt(hops)
		for _, h := range hops {
			if h.Kind == "silent" && h.Node != "" && !strings.Contains(res.StoppedAt, "reject") {
				res.StoppedAt = h.Netns + ": " + h.Text // a node cut from the underlay
			}
		}
		if errors.Is(reqErr, errRefused) && res.AnsweredBy != "" && !strings.Contains(res.StoppedAt, "reject") {
			// No rule on the way refused it: the reset came from the destination's own kernel.
			res.StoppedAt = fmt.Sprintf("pod %s: nothing listens on %s there (inferred: no rule on the way refused it, so the pod's kernel answered with a reset)", res.AnsweredBy, res.Endpoint)
			res.AnsweredBy = ""
		}
	} else {
		res.Connected = true
		res.HTTPStatus = status2
		if kind == targetInternet {
			res.AnsweredBy = "the Internet side " + res.Endpoint
		}
	}
	res.Summary = summary(res)
	return res, nil
}

// nodeServiceTable matches the name of an account's Service table in a node (<lab>-svc-<account index>).
var nodeServiceTable = regexp.MustCompile(`-svc-\d+$`)

// clientNode is the namespace of a client pod's node in a multi-node lab, role "node".
func (d *Daemon) clientNode(client traceNS) (traceNS, bool) {
	if d.overlay == nil || client.role != "client" || client.node == "" {
		return traceNS{}, false
	}
	o, err := d.store.Get(kindNode, "", client.node)
	if err != nil {
		return traceNS{}, false
	}
	i := api.NodeIndex(o.(*corev1.Node))
	if i == 0 {
		return traceNS{}, false
	}
	return traceNS{label: "node " + client.node, path: netns.Path(d.overlay.NodeNetnsName(i)), role: "node"}, true
}

// labAddrs gathers the addresses of the lab as its store has them.
func (d *Daemon) labAddrs(account string) (labAddrs, error) {
	l := labAddrs{account: account, pods: map[netip.Addr]string{}, others: map[netip.Addr]string{},
		services: map[netip.Addr]*corev1.Service{}, fips: map[netip.Addr]string{}, lbs: map[netip.Addr]*corev1.Service{}}
	pods, err := d.store.List(kindPod, "")
	if err != nil {
		return l, fmt.Errorf("trace: list pods: %w", err)
	}
	for _, o := range pods {
		p := o.(*corev1.Pod)
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			continue
		}
		if a := api.AccountOf(p); a == account {
			l.pods[ip] = p.Name
		} else {
			l.others[ip] = a + "/" + p.Name
		}
	}
	svcs, err := d.store.List(kindService, "")
	if err != nil {
		return l, fmt.Errorf("trace: list services: %w", err)
	}
	for _, o := range svcs {
		s := o.(*corev1.Service)
		if ip, err := netip.ParseAddr(s.Spec.ClusterIP); err == nil && api.AccountOf(s) == account {
			l.services[ip] = s
		}
		if ip, err := netip.ParseAddr(s.Spec.LoadBalancerIP); err == nil && s.Spec.Type == corev1.ServiceTypeLoadBalancer {
			l.lbs[ip] = s
		}
	}
	fips, err := d.store.List(kindFIP, "")
	if err != nil {
		return l, fmt.Errorf("trace: list fips: %w", err)
	}
	for _, o := range fips {
		if ip, err := netip.ParseAddr(o.GetName()); err == nil {
			l.fips[ip] = api.AccountOf(o)
		}
	}
	return l, nil
}

// hostNetnsPath is the namespace that plays the Internet: --host-netns, or the daemon's own.
func (d *Daemon) hostNetnsPath() string {
	switch {
	case d.cfg.HostNetns == "":
		return "/proc/self/ns/net"
	case strings.Contains(d.cfg.HostNetns, "/"):
		return d.cfg.HostNetns
	}
	return netns.Path(d.cfg.HostNetns)
}

// resolveInNetns asks the account's DNS server from inside the client's namespace, with the search list
// a pod's resolv.conf has. Only names under cluster.local are asked: the server would forward any other
// name to the upstream resolver, and a trace never leaves the lab.
func resolveInNetns(path string, dnsIP string, name string) (*TraceDNS, netip.Addr, error) {
	name = strings.TrimSuffix(name, ".")
	var cands []string
	if strings.HasSuffix(name, ".cluster.local") {
		cands = []string{name + "."}
	} else {
		for _, s := range []string{api.Namespace + ".svc.cluster.local", "svc.cluster.local", "cluster.local"} {
			cands = append(cands, name+"."+s+".")
		}
	}
	addr := net.JoinHostPort(dnsIP, "53")
	c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
	var lastErr error
	for _, fq := range cands {
		m := new(mdns.Msg)
		m.SetQuestion(fq, mdns.TypeA)
		var in *mdns.Msg
		var rtt time.Duration
		err := netns.Do(path, func() error {
			var err error
			in, rtt, err = c.Exchange(m, addr)
			return err
		})
		if err != nil {
			lastErr = err
			continue
		}
		for _, rr := range in.Answer {
			if a, ok := rr.(*mdns.A); ok {
				ip, _ := netip.AddrFromSlice(a.A.To4())
				return &TraceDNS{Server: addr, Name: strings.TrimSuffix(fq, "."), Answer: ip.String(),
					Ms: float64(rtt.Microseconds()) / 1000}, ip, nil
			}
		}
	}
	if lastErr != nil {
		return nil, netip.Addr{}, fmt.Errorf("trace: resolve %q at the account's DNS server %s: %w", name, addr, lastErr)
	}
	if !strings.HasSuffix(name, ".cluster.local") && strings.Contains(name, ".") {
		return nil, netip.Addr{}, server.Invalid("%q is not a name inside the lab: the account's DNS has no Service of that name, and a trace never asks about or goes to names outside it", name)
	}
	return nil, netip.Addr{}, server.Invalid("the account's DNS server %s has no address for %q (tried %s); is there a Service of that name? (pi get services)", addr, name, strings.Join(cands, ", "))
}

// hasOwnTables reports whether a namespace has nftables tables besides trace tables.
func hasOwnTables(path string) bool {
	f, err := netns.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return false
	}
	ts, err := c.ListTables()
	if err != nil {
		return false
	}
	for _, t := range ts {
		if !strings.HasPrefix(t.Name, trace.TablePrefix) {
			return true
		}
	}
	return false
}

// tablesLeft lists trace tables in a namespace (there should be none once a session stopped).
func tablesLeft(path string) ([]string, error) {
	f, err := netns.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return nil, err
	}
	return trace.TraceTables(c)
}

// freePort asks the kernel of the client's namespace for a free TCP port and hands it back: the trace is
// set up for it before the connection is made from it.
func freePort(path string, proto uint8) (uint16, error) {
	var port uint16
	err := netns.Do(path, func() error {
		if proto == unix.IPPROTO_UDP {
			c, err := net.ListenPacket("udp4", "0.0.0.0:0")
			if err != nil {
				return err
			}
			port = uint16(c.LocalAddr().(*net.UDPAddr).Port)
			return c.Close()
		}
		l, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		port = uint16(l.Addr().(*net.TCPAddr).Port)
		return l.Close()
	})
	return port, err
}

// clientRoute is the client's first hop as its namespace routes it (the kernel's route lookup).
func clientRoute(client traceNS, dst netip.Addr) (h TraceHop, src netip.Addr) {
	h = TraceHop{Netns: client.label, Kind: "route"}
	nh, err := netns.NewHandle(client.path)
	if err != nil {
		h.Text = fmt.Sprintf("route to %s: %v", dst, err)
		return h, src
	}
	defer nh.Close()
	routes, err := nh.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		h.Text = fmt.Sprintf("no route to %s: %v", dst, err)
		return h, src
	}
	rt := routes[0]
	if l, err := nh.LinkByIndex(rt.LinkIndex); err == nil {
		h.Out = l.Attrs().Name
	}
	via := "on-link"
	if rt.Gw != nil {
		h.Via = rt.Gw.String()
		via = "via " + h.Via
	}
	from := ""
	if rt.Src != nil {
		from = "from " + rt.Src.String() + " "
		src, _ = netip.AddrFromSlice(rt.Src.To4())
	}
	h.Text = fmt.Sprintf("%sout %s %s (the namespace's route to %s)", from, h.Out, via, dst)
	return h, src
}

// doRequest makes the traced request from the client's namespace, from the chosen source port.
func doRequest(ctx context.Context, path string, tt traceTarget, dst netip.Addr, sport uint16) (local netip.AddrPort, status int, err error, ms float64) {
	ctx, cancel := context.WithTimeout(ctx, traceTimeout)
	defer cancel()
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var conn net.Conn
		err := netns.Do(path, func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{Port: int(sport)}}
			var err error
			conn, err = d.DialContext(ctx, "tcp4", netip.AddrPortFrom(dst, tt.port).String())
			return err
		})
		if conn != nil {
			local = conn.LocalAddr().(*net.TCPAddr).AddrPort()
		}
		return conn, err
	}
	start := time.Now()
	defer func() { ms = float64(time.Since(start).Microseconds()) / 1000 }()
	switch tt.scheme {
	case "udp":
		local, err = udpRequest(ctx, path, dst, tt.port, sport)
		return local, 0, err, 0
	case "icmp":
		local, err = ping(ctx, path, dst)
		return local, 0, err, 0
	}
	if tt.scheme == "tcp" {
		conn, err := dial(ctx, "tcp", "")
		if err != nil {
			return local, 0, describeDialError(err), 0
		}
		conn.Close()
		return local, 0, nil, 0
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil}}
	r, err := http.NewRequestWithContext(ctx, "GET", tt.url, nil)
	if err != nil {
		return local, 0, err, 0
	}
	resp, err := hc.Do(r)
	if err != nil {
		return local, 0, describeDialError(err), 0
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return local, resp.StatusCode, nil, 0
}

var errRefused = errors.New("connection refused")

// describeDialError names a failed connection the way a learner reads it.
func describeDialError(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("timed out after %s", traceTimeout)
	case errors.Is(err, syscall.EHOSTUNREACH):
		return errors.New("no route to host")
	case errors.Is(err, syscall.ENETUNREACH):
		return errors.New("network unreachable")
	}
	return err
}

// buildHops turns the session's events into hops in path order: per namespace, the rules the first
// request packet and the first reply took, conntrack's rewrite, and how many more trace messages the
// connection's later packets gave; a namespace the packet should have crossed but where the kernel
// reported nothing is said so. Endpoints that DNAT did not pick are left out. It returns the endpoint DNAT
// chose, if any.
func buildHops(plan []traceNS, route TraceHop, dirOf func(*trace.Packet) string, events []trace.Event, names map[netip.Addr]string) ([]TraceHop, netip.AddrPort) {
	byNS := map[string][]trace.Event{}
	for _, ev := range events {
		byNS[ev.Netns] = append(byNS[ev.Netns], ev)
	}
	var endpoint netip.AddrPort
	var toEndpoint string // the interface the router forwarded the first packet out of
	for _, n := range plan {
		for _, ev := range byNS[n.label] {
			if c := ev.Conntrack; c != nil {
				if to, ok := c.DNAT(); ok && !endpoint.IsValid() {
					endpoint = to
				}
			}
		}
	}
	var hops []TraceHop
	for _, n := range plan {
		evs := byNS[n.label]
		if n.role == "endpoint" && !n.direct && (!endpoint.IsValid() || n.ip != endpoint.Addr()) {
			continue // an endpoint of a Service that DNAT did not pick (or no DNAT happened at all)
		}
		if n.label == route.Netns {
			hops = append(hops, route)
		}
		// Per namespace: the first request packet's rules, conntrack's rewrite of it, then the first reply's
		// rules (trace and conntrack events come from two listeners, so their arrival order is not the
		// packet's).
		var req, nat, reply []TraceHop
		seen, more := false, 0
		for _, g := range firstPackets(evs, dirOf) {
			ev := g.ev
			switch {
			case ev.Trace != nil:
				seen = true
				switch g.dir {
				case "request":
					h := ruleHop(n.label, g.dir, ev)
					if h.In != "" && h.Out != "" { // forwarded: where it left for the endpoint
						toEndpoint = h.Out
					}
					req = append(req, h)
				case "reply":
					reply = append(reply, ruleHop(n.label, g.dir, ev))
				default:
					more++
				}
			case ev.Conntrack != nil:
				seen = true
				if h, ok := natHop(n.label, *ev.Conntrack, names); ok && len(nat) == 0 {
					nat = append(nat, h)
				}
			case ev.Err != nil:
				nat = append(nat, TraceHop{Netns: n.label, Kind: "error", Text: "trace incomplete: " + ev.Err.Error()})
			}
		}
		hops = append(append(append(hops, req...), nat...), reply...)
		if more > 0 {
			hops = append(hops, TraceHop{Netns: n.label, Kind: "more",
				Text: fmt.Sprintf("the connection's later packets (ACKs, data, FIN) passed here too: %d more trace messages", more)})
		}
		switch {
		case seen || n.role == "client" || n.role == "internet":
		case n.role == "endpoint" && !n.rules:
			via := ""
			if toEndpoint != "" {
				via = " out of the router's " + toEndpoint
			}
			hops = append(hops, TraceHop{Netns: n.label, Kind: "endpoint", Text: fmt.Sprintf(
				"to %s%s; this namespace has no nftables rules, so the kernel has nothing to report here", n.ip, via)})
		case !n.rules:
			hops = append(hops, TraceHop{Netns: n.label, Kind: "silent",
				Text: "no rule to report: this namespace has no nftables rules, so the kernel traces nothing here"})
		case n.role == "router" && route.Via == "" && route.Netns != n.label:
			// On-link: the client sends straight to the destination's MAC; the router's bridge forwards
			// the frames at layer 2, below the IP hooks its rules (and the trace's) sit on.
			hops = append(hops, TraceHop{Netns: n.label, Kind: "silent", Inferred: true,
				Text: "the kernel reported nothing here (inferred: the client reaches the address on-link, so the router's br0 bridges the frames at layer 2, where its IP rules do not see them)"})
		default:
			hops = append(hops, TraceHop{Netns: n.label, Kind: "silent", Inferred: true,
				Text: "the kernel reported nothing here (inferred: the packet never reached this namespace; it was dropped or refused before)"})
		}
	}
	return hops, endpoint
}

// tracedEvent is an event with the direction of the packet it is about: "request" or "reply" for the
// first packet each way, "" for later packets.
type tracedEvent struct {
	ev  trace.Event
	dir string
}

// directionOf tells a traced packet's direction: the request's source port is the client's, a reply's
// destination port; a ping is an echo request (type 8) or its reply (type 0). "?" is neither.
func directionOf(proto uint8, sport uint16) func(*trace.Packet) string {
	return func(p *trace.Packet) string {
		switch {
		case proto == unix.IPPROTO_ICMP && p.Proto == unix.IPPROTO_ICMP && p.ICMPType == 8:
			return "request"
		case proto == unix.IPPROTO_ICMP && p.Proto == unix.IPPROTO_ICMP && p.ICMPType == 0:
			return "reply"
		case proto != unix.IPPROTO_ICMP && p.SrcPort == sport:
			return "request"
		case proto != unix.IPPROTO_ICMP && p.DstPort == sport:
			return "reply"
		}
		return "?"
	}
}

// firstPackets tags one namespace's events. The kernel's packet id is a hash of the packet buffer's
// address, which a later packet of the connection may reuse; the headers a message carries (sent once per
// chain walk) tell the packets apart: a NAT rewrites addresses and ports but not the TCP flags and length.
func firstPackets(evs []trace.Event, direction func(*trace.Packet) string) []tracedEvent {
	type pkt struct {
		id    uint32
		flags uint8
		len   uint16
	}
	type step struct {
		p            pkt
		table, chain string
		handle       uint64
		typ          trace.TraceType
	}
	passed := map[step]bool{}
	cur := map[uint32]pkt{}   // what each id's last headers said
	dirOf := map[pkt]string{} // each packet's direction
	first := map[string]pkt{} // the first packet each way
	var out []tracedEvent
	for _, ev := range evs {
		t := ev.Trace
		if t == nil {
			out = append(out, tracedEvent{ev: ev})
			continue
		}
		if t.HasPacket() {
			k := pkt{t.ID, t.Packet.TCPFlags, t.Packet.Len}
			cur[t.ID] = k
			if _, ok := dirOf[k]; !ok {
				dirOf[k] = direction(&t.Packet)
				if d := dirOf[k]; d != "?" {
					if _, ok := first[d]; !ok {
						first[d] = k
					}
				}
			}
		}
		k, ok := cur[t.ID]
		if !ok || t.Type == trace.TypeReturn {
			continue
		}
		te := tracedEvent{ev: ev}
		if d := dirOf[k]; first[d] == k {
			// A message without headers belongs to the id's last packet as far as the headers tell; one
			// packet does not pass the same rule twice in a namespace, so a repeat is a later packet
			// whose headers were not sent.
			at := step{k, t.Table, t.Chain, t.Handle, t.Type}
			if !passed[at] {
				passed[at] = true
				te.dir = d
			}
		}
		out = append(out, te)
	}
	return out
}

// chainNote says what a chain of a Service table (net/lb, named <lab>-svc) is for, from the names net/lb
// gives its chains: svc-<service>-<proto>-<port> picks an endpoint, ep-<service>-<proto>-<port>-<ip>-<port>
// is one endpoint. pilab writes no comments on those rules; the chain names carry the meaning.
func chainNote(table, chain string) string {
	node := nodeServiceTable.MatchString(table)
	if !strings.HasSuffix(table, "-svc") && !node {
		return ""
	}
	switch chain {
	case "nat-prerouting", "nat-output":
		if node {
			return "every new connection from the account's bridge on this node goes through the Service map"
		}
		return "every new connection goes through the Service map"
	case "zone":
		return "the account's packets get its own conntrack zone: the node's other accounts use the same addresses"
	case "services":
		return "Service IP . protocol . port → that Service port's chain"
	case "filter-prerouting", "filter-output":
		return "rejects what is still addressed to a Service IP: no endpoint took it"
	case "nat-postrouting":
		return "masquerades connections a Service chain marked (clients inside the pod network)"
	case "reject-service":
		return "a Service IP or port with no endpoint: refused"
	}
	parts := strings.Split(chain, "-")
	switch {
	case parts[0] == "svc" && len(parts) >= 4:
		n := len(parts)
		return fmt.Sprintf("Service %s, port %s/%s: pick one of its endpoints", strings.Join(parts[1:n-2], "-"), parts[n-1], parts[n-2])
	case parts[0] == "ep" && len(parts) >= 6:
		n := len(parts)
		if parts[n-1] == "a" { // ClientIP affinity
			parts, n = parts[:n-1], n-1
		}
		return fmt.Sprintf("endpoint %s:%s of Service %s", parts[n-2], parts[n-1], strings.Join(parts[1:n-4], "-"))
	}
	return ""
}

// ruleHop renders one trace message.
func ruleHop(ns, dir string, ev trace.Event) TraceHop {
	t := ev.Trace
	h := TraceHop{Netns: ns, Kind: "rule", Direction: dir, Table: t.Table, Chain: t.Chain, In: ev.IIFName, Out: ev.OIFName}
	if t.HasPacket() {
		h.Packet = t.Packet.String()
	}
	switch t.Type {
	case trace.TypePolicy:
		h.Kind = "policy"
		h.Verdict = "policy accept"
		if t.Policy != nil && *t.Policy == trace.NFDrop {
			h.Verdict = "policy drop"
		}
		h.Rule = "end of chain"
	default:
		if ev.Rule != nil {
			h.Rule, h.Comment = ev.Rule.Text, ev.Rule.Comment
		} else if ev.RuleErr != nil {
			h.Rule = fmt.Sprintf("handle %d (%v)", t.Handle, ev.RuleErr)
		}
		if t.Verdict != nil {
			h.Verdict = t.Verdict.String()
		}
	}
	if h.Comment == "" {
		h.Note = chainNote(h.Table, h.Chain)
	}
	h.Text = fmt.Sprintf("%s/%s: %s → %s", h.Table, h.Chain, h.Rule, h.Verdict)
	if h.Comment != "" {
		h.Text += fmt.Sprintf(" (%q)", h.Comment)
	} else if h.Note != "" {
		h.Text += " (" + h.Note + ")"
	}
	return h
}

// natHop reports a conntrack entry's rewrite; ok is false when the entry has none.
func natHop(ns string, c trace.Conntrack, names map[netip.Addr]string) (TraceHop, bool) {
	var parts []string
	h := TraceHop{Netns: ns, Kind: "nat", Packet: c.Orig.String()}
	if to, ok := c.DNAT(); ok {
		s := "dnat to " + to.String()
		if n := names[to.Addr()]; n != "" {
			s += " (" + n + ")"
		}
		parts = append(parts, s)
	}
	if from, ok := c.SNAT(); ok {
		// conntrack records that the source was rewritten, not whether by snat or masquerade.
		to := from.String()
		if c.Orig.Proto == unix.IPPROTO_ICMP {
			to = from.Addr().String() // a ping has no port
		}
		parts = append(parts, fmt.Sprintf("source rewritten to %s (snat/masquerade: the server answers %s)", to, from.Addr()))
	}
	if len(parts) == 0 {
		return h, false
	}
	h.Text = "conntrack: " + strings.Join(parts, "; ")
	return h, true
}

// stoppedAt names where a failed connection's trace ends: the rule that dropped or refused it, or the
// last namespace the kernel reported it in.
func stoppedAt(hops []TraceHop) string {
	// A reject rule's verdict reaches the trace as drop; a rule that only jumps to a rejecting chain
	// names it, and comes second.
	refused := func(h TraceHop) bool { return h.Verdict == "drop" || h.Verdict == "policy drop" }
	jumped := func(h TraceHop) bool { return strings.Contains(h.Rule, "reject") }
	for _, h := range hops {
		if h.Direction == "request" && refused(h) {
			return stoppedLine(h)
		}
	}
	for _, h := range hops {
		if h.Direction == "request" && jumped(h) {
			return stoppedLine(h)
		}
	}
	for i := len(hops) - 1; i >= 0; i-- {
		if hops[i].Kind == "rule" || hops[i].Kind == "policy" || hops[i].Kind == "nat" {
			return "last seen in " + hops[i].Netns + " (no rule dropped it there)"
		}
	}
	if len(hops) > 0 {
		return "the kernel reported nothing after " + hops[0].Netns
	}
	return ""
}

func stoppedLine(h TraceHop) string {
	s := fmt.Sprintf("%s: %s/%s %s", h.Netns, h.Table, h.Chain, h.Rule)
	switch {
	case h.Comment != "":
		s += fmt.Sprintf(" (%q)", h.Comment)
	case h.Note != "":
		s += " (" + h.Note + ")"
	}
	return s
}

func summary(r *TraceResult) string {
	by := ""
	if r.AnsweredBy != "" {
		by = ", answered by " + r.AnsweredBy
	} else if r.Endpoint != "" {
		by = ", answered by " + r.Endpoint
	}
	switch {
	case r.Error != "":
		s := r.Error
		if r.StoppedAt != "" {
			s += "; stopped at " + r.StoppedAt
		}
		return s
	case r.HTTPStatus != 0:
		return fmt.Sprintf("HTTP %d in %.1f ms%s", r.HTTPStatus, r.Ms, by)
	case strings.HasPrefix(r.Flow, "icmp "):
		return fmt.Sprintf("echo reply in %.1f ms%s", r.Ms, by)
	case strings.HasPrefix(r.Flow, "udp "):
		return fmt.Sprintf("datagram answered in %.1f ms%s", r.Ms, by)
	}
	return fmt.Sprintf("connected in %.1f ms%s", r.Ms, by)
}

// The layer-2 legs of a multi-node lab. A pod's port sits on its account's bridge b<A> in its node's
// namespace, and the account's segment joins those bridges and the router's br0 by VXLAN (net/overlay).
// Bridging is below the rules (a node's only rules are its accounts' Service tables, traced for a Service's
// connection: its DNAT), so where the frames went is read from the kernel after the request instead: the sender's neighbour entry gives the next hop's MAC, the bridge's
// forwarding database the port it leaves by (a pod's veth on the same node, or vx<A>), and vx<A>'s own
// forwarding entries the underlay address it was encapsulated to — the entries the request and its answer
// have just refreshed.

// l2Fabric is what a trace needs to name the places of an account's segment.
type l2Fabric struct {
	account     string
	acctIndex   int
	routerLabel string
	routerPath  string
	nodeNames   map[int]string        // node index → node name (store)
	byUnderlay  map[netip.Addr]string // underlay address → "node worker2" or the router's label
	podNodes    map[netip.Addr]int    // the account's pod IPs → their node's index
	names       map[netip.Addr]string // the account's pod IPs → pod names
	nodeNetns   func(int) string      // node index → netns path
}

// l2Fabric gathers the lab's nodes; ok is false in a single-node lab (every pod on the router's br0).
func (d *Daemon) l2Fabric(account string, acctIndex int, router traceNS, names map[netip.Addr]string) (*l2Fabric, bool) {
	if d.overlay == nil {
		return nil, false
	}
	objs, err := d.store.List(kindNode, "")
	if err != nil {
		return nil, false
	}
	f := &l2Fabric{account: account, acctIndex: acctIndex, routerLabel: router.label, routerPath: router.path,
		nodeNames: map[int]string{}, byUnderlay: map[netip.Addr]string{}, podNodes: map[netip.Addr]int{}, names: names,
		nodeNetns: func(i int) string { return netns.Path(d.overlay.NodeNetnsName(i)) }}
	for _, o := range objs {
		n := o.(*corev1.Node)
		i := api.NodeIndex(n)
		if i == 0 {
			continue
		}
		f.nodeNames[i] = n.Name
		if ip, err := overlay.NodeUnderlayIP(i); err == nil {
			if a, ok := netip.AddrFromSlice(ip.To4()); ok {
				f.byUnderlay[a] = "node " + n.Name
			}
		}
	}
	if len(f.nodeNames) == 0 {
		return nil, false
	}
	if ip, err := overlay.RouterUnderlayIP(acctIndex); err == nil {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok {
			f.byUnderlay[a] = router.label
		}
	}
	pods, _ := d.store.List(kindPod, account)
	for _, o := range pods {
		p := o.(*corev1.Pod)
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			continue
		}
		for i, name := range f.nodeNames {
			if name == p.Spec.NodeName {
				f.podNodes[ip] = i
			}
		}
	}
	return f, true
}

// l2Bridge is one member of the segment: a node's b<A> or the router's br0, with the VXLAN port beside it.
type l2Bridge struct {
	label, path, bridge, vxlan string
}

func (f *l2Fabric) node(i int) l2Bridge {
	return l2Bridge{label: "node " + f.nodeNames[i], path: f.nodeNetns(i), bridge: overlay.BridgeName(f.acctIndex), vxlan: overlay.VXLANName(f.acctIndex)}
}

func (f *l2Fabric) router() l2Bridge {
	return l2Bridge{label: f.routerLabel, path: f.routerPath, bridge: network.BridgeName, vxlan: overlay.VXLANName(f.acctIndex)}
}

// neighMAC is the MAC the namespace at path has for ip in its neighbour table (the request just resolved it).
func neighMAC(path string, ip netip.Addr) (net.HardwareAddr, error) {
	h, err := netns.NewHandle(path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	ns, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range ns {
		if a, ok := netip.AddrFromSlice(n.IP.To4()); ok && a == ip && len(n.HardwareAddr) == 6 {
			return n.HardwareAddr, nil
		}
	}
	return nil, fmt.Errorf("no neighbour entry for %s", ip)
}

// fdbPort is where a bridge forwards frames to mac: the port its forwarding database learned the MAC on,
// with that port's alias (net/network writes "IP UID" on a pod's port) and, when the port is the VXLAN
// device, the underlay address its own entry for mac sends to.
type fdbPort struct {
	port, alias string
	remote      netip.Addr
	local       netip.Addr // this namespace's underlay address
	underlayUp  bool       // its underlay link is up (pi node stop takes it down)
}

func lookupFDB(b l2Bridge, mac net.HardwareAddr) (fdbPort, error) {
	var out fdbPort
	h, err := netns.NewHandle(b.path)
	if err != nil {
		return out, err
	}
	defer h.Close()
	br, err := h.LinkByName(b.bridge)
	if err != nil {
		return out, fmt.Errorf("bridge %s: %w", b.bridge, err)
	}
	entries, err := h.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return out, fmt.Errorf("read the forwarding database of %s: %w", b.bridge, err)
	}
	port := 0
	for _, e := range entries {
		if e.MasterIndex == br.Attrs().Index && e.HardwareAddr.String() == mac.String() && e.LinkIndex != br.Attrs().Index {
			port = e.LinkIndex
		}
	}
	if port == 0 {
		return out, fmt.Errorf("bridge %s has no forwarding entry for %s (it would flood the frame to every port)", b.bridge, mac)
	}
	l, err := h.LinkByIndex(port)
	if err != nil {
		return out, fmt.Errorf("port %d of %s: %w", port, b.bridge, err)
	}
	out.port, out.alias = l.Attrs().Name, l.Attrs().Alias
	if ul, err := h.LinkByName(network.UnderlayLink); err == nil {
		out.underlayUp = ul.Attrs().Flags&net.FlagUp != 0
		if addrs, err := h.AddrList(ul, netlink.FAMILY_V4); err == nil && len(addrs) > 0 {
			out.local, _ = netip.AddrFromSlice(addrs[0].IP.To4())
		}
	}
	if out.port != b.vxlan {
		return out, nil
	}
	for _, e := range entries {
		if e.LinkIndex == port && e.MasterIndex == 0 && e.HardwareAddr.String() == mac.String() {
			out.remote, _ = netip.AddrFromSlice(e.IP.To4())
		}
	}
	if !out.remote.IsValid() {
		return out, fmt.Errorf("%s has no forwarding entry for %s (it would send the frame to every member of the segment)", b.vxlan, mac)
	}
	return out, nil
}

// portText names a bridge port and the pod its alias says is behind it.
func (f *l2Fabric) portText(p fdbPort) string {
	ip, _, _ := strings.Cut(p.alias, " ")
	if a, err := netip.ParseAddr(ip); err == nil && f.names[a] != "" {
		return fmt.Sprintf("port %s (pod %s, %s)", p.port, f.names[a], a)
	}
	return "port " + p.port
}

// l2Leg follows the frames from a member of the segment to ip's MAC (learned by sender, the namespace
// that sent them): across its bridge to a port on the same node, or over VXLAN to another member and
// down its bridge. It returns the hops and where the frames ended up: "pod", "router", "lost" (sent to a
// node cut from the underlay), or "" when the kernel did not tell (the hop says why).
func (f *l2Fabric) l2Leg(from l2Bridge, sender string, ip netip.Addr) ([]TraceHop, string) {
	vni, _ := overlay.VNI(f.acctIndex)
	fail := func(err error) ([]TraceHop, string) {
		return []TraceHop{{Netns: from.label, Kind: "silent", Inferred: true,
			Text: fmt.Sprintf("where %s's bridge %s sent the frames to %s is unknown: %v", from.label, from.bridge, ip, err)}}, ""
	}
	mac, err := neighMAC(sender, ip)
	if err != nil {
		return fail(err)
	}
	p, err := lookupFDB(from, mac)
	if err != nil {
		return fail(err)
	}
	if !p.remote.IsValid() {
		return []TraceHop{{Netns: from.label, Kind: "bridge", Node: strings.TrimPrefix(from.label, "node "),
			Text: fmt.Sprintf("bridge %s → %s: %s is on the same node, the frames never leave it", from.bridge, f.portText(p), mac)}}, "pod"
	}
	to := f.byUnderlay[p.remote]
	toText := p.remote.String()
	if to != "" {
		toText += ", " + to
	}
	hops := []TraceHop{{Netns: from.label, Kind: "vxlan", Node: nodeOf(from.label), VNI: vni, Remote: p.remote.String(),
		Text: fmt.Sprintf("bridge %s → %s, VNI %d → %s (%s's forwarding entry for %s)", from.bridge, from.vxlan, vni, toText, from.vxlan, mac)}}
	switch {
	case to == f.routerLabel:
		hops = append(hops, TraceHop{Netns: to, Kind: "vxlan", VNI: vni, Remote: p.local.String(),
			Text: fmt.Sprintf("%s → bridge %s (VNI %d from %s): the router takes the frames off the segment", from.vxlan, network.BridgeName, vni, p.local)})
		return hops, "router"
	case strings.HasPrefix(to, "node "):
		var idx int
		for i, n := range f.nodeNames {
			if "node "+n == to {
				idx = i
			}
		}
		next := f.node(idx)
		q, err := lookupFDB(next, mac)
		if err == nil && !q.underlayUp {
			// Its forwarding entries outlive the link: what reached it before the cut is no proof now.
			hops = append(hops, TraceHop{Netns: to, Kind: "silent", Node: nodeOf(to),
				Text: fmt.Sprintf("%s's underlay link %s is down (pi node stop; pi node start %s brings it back): the frames sent to %s are lost on the fabric", to, network.UnderlayLink, nodeOf(to), p.remote)})
			return hops, "lost"
		}
		if err != nil {
			hops = append(hops, TraceHop{Netns: to, Kind: "silent", Inferred: true,
				Text: fmt.Sprintf("the frames reached %s over VXLAN, but where its bridge %s sent them is unknown: %v", to, next.bridge, err)})
			return hops, ""
		}
		hops = append(hops, TraceHop{Netns: to, Kind: "vxlan", Node: nodeOf(to), VNI: vni, Remote: p.local.String(),
			Text: fmt.Sprintf("%s → bridge %s → %s; VNI %d from %s", next.vxlan, next.bridge, f.portText(q), vni, p.local)})
		return hops, "pod"
	}
	return hops, ""
}

func nodeOf(label string) string {
	if n, ok := strings.CutPrefix(label, "node "); ok {
		return n
	}
	return ""
}

// nodeHops puts a multi-node lab's layer-2 legs into the hops buildHops made: the client pod's leg from its
// node (after the client's own hops), and, when the packet crossed the router, the router's leg to the
// endpoint's node (before the endpoint's hop). A client whose frames went straight to another pod never
// reached the router: the router's "bridges at layer 2" inference is dropped for what the kernel showed.
func (f *l2Fabric) nodeHops(hops []TraceHop, client traceNS, route TraceHop, dst, endpoint netip.Addr) []TraceHop {
	var out []TraceHop
	crossed := true // the packet reached the router (as in a single-node lab, where every pod is on br0)
	lost := false   // the frames went to a node cut from the underlay: nothing after it saw them
	var nodeLater []TraceHop
	if n := f.podNodes[client.ip]; client.role == "client" && n > 0 && endpoint.IsValid() && natAt(hops, f.node(n).label) {
		return f.nodeDNATHops(hops, n, endpoint)
	}
	if n := f.podNodes[client.ip]; client.role == "client" && n > 0 {
		next := dst
		if route.Via != "" {
			if v, err := netip.ParseAddr(route.Via); err == nil {
				next = v
			}
		}
		leg, ends := f.l2Leg(f.node(n), client.path, next)
		crossed = ends == "router" || ends == "" // unknown: the router's own inference stands
		lost = ends == "lost"
		// The client node's rules (a Service its node left to the router: a pod that picked itself) come
		// before the leg; their reply and later packets' hops at the end.
		nodeLabel := f.node(n).label
		var kept []TraceHop
		for _, h := range hops {
			if h.Netns == nodeLabel && (h.Direction == "reply" || h.Kind == "more") {
				nodeLater = append(nodeLater, h)
			} else {
				kept = append(kept, h)
			}
		}
		hops = kept
		last := -1
		for i, h := range hops {
			if h.Netns == client.label || h.Netns == nodeLabel {
				last = i
			}
		}
		out = append(append(out, hops[:last+1]...), leg...)
		hops = hops[last+1:]
	}
	if !endpoint.IsValid() {
		endpoint = dst
	}
	var routerLeg []TraceHop
	if n := f.podNodes[endpoint]; crossed && n > 0 && client.ip != endpoint {
		routerLeg, _ = f.l2Leg(f.router(), f.routerPath, endpoint)
	}
	target := "pod " + f.names[endpoint]
	// With a router leg, the path reads in the packets' order: the router's request hops, the leg to the
	// endpoint's node, the endpoint, then the router's reply and later packets (which came back after).
	var later []TraceHop
	for _, h := range hops {
		if !crossed && h.Netns == f.routerLabel && h.Kind == "silent" || lost && h.Netns == target && h.Kind == "endpoint" {
			continue
		}
		if routerLeg != nil && h.Netns == f.routerLabel && (h.Direction == "reply" || h.Kind == "more") {
			later = append(later, h)
			continue
		}
		if h.Netns == target && routerLeg != nil {
			out, routerLeg = append(out, routerLeg...), nil
		}
		out = append(out, h)
	}
	return append(append(append(out, routerLeg...), later...), nodeLater...)
}

// natAt tells whether conntrack rewrote the connection in the namespace labelled ns.
func natAt(hops []TraceHop, ns string) bool {
	for _, h := range hops {
		if h.Netns == ns && h.Kind == "nat" {
			return true
		}
	}
	return false
}

// nodeDNATHops puts the layer-2 leg into the hops of a connection the client's node n DNAT'd (a Service in
// a multi-node lab): after the node's rules and rewrite, its bridge sends the frames straight to the
// endpoint's MAC (the node resolved it itself), on the node or over VXLAN to the endpoint's node; the
// router never saw them, so its "never reached" inference goes. The node's reply hops come after the
// endpoint, in the packets' order.
func (f *l2Fabric) nodeDNATHops(hops []TraceHop, n int, endpoint netip.Addr) []TraceHop {
	nd := f.node(n)
	leg, _ := f.l2Leg(nd, nd.path, endpoint)
	target := "pod " + f.names[endpoint]
	var out, later []TraceHop
	for _, h := range hops {
		switch {
		case h.Netns == f.routerLabel && h.Kind == "silent":
		case h.Netns == nd.label && (h.Direction == "reply" || h.Kind == "more"):
			later = append(later, h)
		case h.Netns == target && leg != nil:
			out, leg = append(append(out, leg...), h), nil
		default:
			out = append(out, h)
		}
	}
	return append(append(out, leg...), later...)
}
