package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pilab/pi/lab/registry"
	"net"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/net/dns"
	"github.com/pilab/pi/net/lb"
	"github.com/pilab/pi/net/netns"
	"github.com/pilab/pi/net/network"
	"github.com/pilab/pi/net/overlay"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// accountServices is what an account's Services run on: the nft table in its router and its DNS server.
type accountServices struct {
	syncer *lb.Syncer
	dns    *dns.Server
	// index is the account's; nodes are its Service tables in the nodes its segment reaches (a multi-node
	// lab), by node index: its pods' connections to a Service are DNAT'd on their own node.
	index int
	nodes map[int]*lb.Syncer
}

// svcState is the Services controller's part of the Manager; one queue key per account.
type svcState struct {
	once     sync.Once
	queue    *queue
	mu       sync.Mutex
	accounts map[string]*accountServices
}

var svcStates sync.Map // *Manager -> *svcState

func (m *Manager) svc() *svcState {
	v, _ := svcStates.LoadOrStore(m, &svcState{queue: newQueue(), accounts: map[string]*accountServices{}})
	return v.(*svcState)
}

func (m *Manager) routeServices(ev api.WatchEvent, meta *metav1.ObjectMeta) {
	switch ev.Kind {
	// Endpoints the controller writes come back here too, which is harmless: the next sync finds nothing
	// to change.
	case "Service", "Pod", "FloatingIP", "Endpoints":
		m.svc().queue.Add(objKey("", ev.Account))
	}
}

func (m *Manager) resyncServices() {
	objs, _ := m.Store.List(kindAccount, "")
	for _, o := range objs {
		m.svc().queue.Add(objKey("", o.GetName()))
	}
}

func (m *Manager) startServices(ctx context.Context) {
	s := m.svc()
	m.startWorkers(ctx, s.queue, 2, func(ctx context.Context, _, account string) (time.Duration, error) {
		return 0, m.syncServices(ctx, account)
	})
	go func() {
		<-ctx.Done()
		s.queue.Close()
	}()
}

// servicesAccountReady starts the account's Service table and DNS server once its router exists.
func (m *Manager) servicesAccountReady(ctx context.Context, acct *api.Account, a *network.Account) {
	s := m.svc()
	s.mu.Lock()
	defer s.mu.Unlock()
	if as := s.accounts[acct.Name]; as != nil {
		return
	}
	syncer, err := lb.New(a.RouterNetns, m.Lab+"-svc", lb.WithPodCIDR("10.244.0.0/16"), lb.WithServiceCIDR("10.96.0.0/12"))
	if err != nil {
		m.Log.Warn("service table", "account", acct.Name, "err", err)
		return
	}
	upstream, upNetns := m.upstreamDNS()
	srv := dns.NewServer(dns.Options{Zone: "cluster.local", Namespace: api.Namespace, Upstream: upstream, UpstreamNetns: upNetns})
	if err := srv.ListenIn(a.RouterNetns, net.JoinHostPort(a.DNSIP.String(), "53")); err != nil {
		m.Log.Warn("dns server", "account", acct.Name, "err", err)
		syncer.Close()
		return
	}
	s.accounts[acct.Name] = &accountServices{syncer: syncer, dns: srv, index: acct.Status.Index, nodes: map[int]*lb.Syncer{}}
	s.queue.Add(objKey("", acct.Name))
}

// upstreamDNS is where names outside cluster.local go: the host's resolver, or in --host-netns mode the
// resolver that namespace is given (/etc/netns/NAME/resolv.conf, as `ip netns exec` has it), or none.
func (m *Manager) upstreamDNS() ([]string, string) {
	if m.HostNetns == "" {
		return dns.UpstreamFromResolvConf("/etc/resolv.conf"), ""
	}
	path := "/etc/netns/" + m.HostNetns + "/resolv.conf"
	if _, err := os.Stat(path); err != nil {
		return nil, netns.Path(m.HostNetns)
	}
	return dns.UpstreamFromResolvConf(path), netns.Path(m.HostNetns)
}

func (m *Manager) servicesAccountGone(acct *api.Account) {
	s := m.svc()
	s.mu.Lock()
	defer s.mu.Unlock()
	if as := s.accounts[acct.Name]; as != nil {
		as.dns.Close()
		as.syncer.Delete()
		as.syncer.Close()
		for i, ns := range as.nodes {
			if err := ns.Delete(); err != nil {
				m.Log.Warn("service table on node", "account", acct.Name, "node", i, "err", err)
			}
		}
		delete(s.accounts, acct.Name)
	}
}

func (m *Manager) closeServices() {
	s := m.svc()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, as := range s.accounts {
		as.dns.Close()
		as.syncer.Close()
		for _, ns := range as.nodes {
			ns.Close()
		}
		delete(s.accounts, name)
	}
	svcStates.Delete(m)
}

// releaseLoadBalancer takes the cleanup finalizer away, once the Service's Floating IP rules are gone, and
// tells whether it was there.
func releaseLoadBalancer(svc *corev1.Service) bool {
	if !slices.Contains(svc.Finalizers, registry.LBCleanupFinalizer) {
		return false
	}
	svc.Finalizers = slices.DeleteFunc(svc.Finalizers, func(f string) bool { return f == registry.LBCleanupFinalizer })
	return true
}

// syncServices recomputes an account's Endpoints from its pods, programs its Service table, its DNS
// records and its Floating IPs; then it reports each LoadBalancer Service's Floating IP in its status and
// lets go of the Services being deleted, whose rules are gone by then.
func (m *Manager) syncServices(ctx context.Context, account string) error {
	s := m.svc()
	s.mu.Lock()
	as := s.accounts[account]
	s.mu.Unlock()
	svcObjs, err := m.Store.List(kindService, account)
	if err != nil {
		return err
	}
	var live, deleting []*corev1.Service
	fipUsers := map[string][]string{}
	for _, o := range svcObjs {
		svc := o.(*corev1.Service)
		if svc.DeletionTimestamp != nil {
			deleting = append(deleting, svc)
			continue
		}
		live = append(live, svc)
		if !registry.IsLoadBalancer(svc) {
			continue
		}
		fipUsers[svc.Spec.LoadBalancerIP] = append(fipUsers[svc.Spec.LoadBalancerIP], svc.Name)
		if !slices.Contains(svc.Finalizers, registry.LBCleanupFinalizer) {
			if err := m.mutateService(account, svc.Name, registry.HoldLoadBalancer); err != nil {
				return err
			}
		}
	}
	programmed := as != nil
	if programmed {
		if err := m.programServices(account, as, svcObjs, live); err != nil {
			return err
		}
	}
	if err := m.syncFIPs(account, fipUsers); err != nil {
		return err
	}
	for _, svc := range live {
		var want []corev1.LoadBalancerIngress
		if programmed && registry.IsLoadBalancer(svc) {
			want = []corev1.LoadBalancerIngress{{IP: svc.Spec.LoadBalancerIP}}
		}
		stale := func(v *corev1.Service) bool {
			return !reflect.DeepEqual(v.Status.LoadBalancer.Ingress, want) ||
				!registry.IsLoadBalancer(v) && slices.Contains(v.Finalizers, registry.LBCleanupFinalizer)
		}
		// Most syncs change no Service; only those that do are read again and written.
		if !stale(svc) {
			continue
		}
		if err := m.mutateService(account, svc.Name, func(v *corev1.Service) bool {
			if v.UID != svc.UID || v.Generation != svc.Generation || !stale(v) {
				return false // already as wanted, or changed since this sync read it (the change brings its own sync)
			}
			v.Status.LoadBalancer.Ingress = want
			if !registry.IsLoadBalancer(v) {
				releaseLoadBalancer(v)
			}
			return true
		}); err != nil {
			return err
		}
	}
	for _, svc := range deleting {
		if err := m.finishServiceDeletion(account, svc); err != nil {
			return err
		}
	}
	return nil
}

// mutateService changes a Service in the store if fn says it changed it; a Service gone meanwhile is fine.
func (m *Manager) mutateService(account, name string, fn func(*corev1.Service) bool) error {
	_, err := m.Store.Mutate(kindService, account, name, func(o metav1.Object) error {
		if !fn(o.(*corev1.Service)) {
			return store.ErrUnchanged
		}
		return nil
	})
	if store.IsNotFound(err) {
		return nil
	}
	return err
}

// finishServiceDeletion drops the cleanup finalizer of a Service whose rules are gone, and the Service
// with it once nothing else holds it.
func (m *Manager) finishServiceDeletion(account string, svc *corev1.Service) error {
	var gone bool
	err := m.mutateService(account, svc.Name, func(v *corev1.Service) bool {
		if v.UID != svc.UID {
			return false
		}
		released := releaseLoadBalancer(v)
		gone = len(v.Finalizers) == 0
		return released
	})
	if err != nil || !gone {
		return err
	}
	if err := m.Store.Delete(kindService, account, svc.Name); err != nil && !store.IsNotFound(err) {
		return err
	}
	m.objectDeleted(account, kindService, svc)
	return nil
}

// programServices writes the Endpoints of the account's live Services and programs their rules and DNS
// records; Services being deleted get neither.
func (m *Manager) programServices(account string, as *accountServices, svcObjs []metav1.Object, live []*corev1.Service) error {
	podObjs, err := m.Store.List(kindPod, account)
	if err != nil {
		return err
	}
	var lbs []lb.Service
	var records []dns.Record
	for _, svc := range live {
		m.meterService(svc, true)
		var ready []*corev1.Pod
		if svc.Spec.Selector != nil {
			ep, readyPods := endpointsFor(svc, podObjs)
			ready = readyPods
			if err := m.writeEndpoints(account, ep); err != nil {
				return err
			}
		}
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			var ips []net.IP
			for _, p := range ready {
				ips = append(ips, net.ParseIP(p.Status.PodIP))
			}
			records = append(records, dns.Record{Name: svc.Name, IPs: ips})
			continue
		}
		records = append(records, dns.Record{Name: svc.Name, IPs: []net.IP{net.ParseIP(svc.Spec.ClusterIP)}})
		ls := lb.Service{Name: svc.Name, ClusterIP: net.ParseIP(svc.Spec.ClusterIP), SessionAffinity: svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP}
		if registry.IsLoadBalancer(svc) {
			ls.ExternalIPs = []net.IP{net.ParseIP(svc.Spec.LoadBalancerIP)}
		}
		for _, sp := range svc.Spec.Ports {
			port := lb.Port{Name: sp.Name, Protocol: string(sp.Protocol), Port: uint16(sp.Port)}
			for _, p := range ready {
				if tp, ok := targetPort(p, sp); ok {
					port.Endpoints = append(port.Endpoints, lb.Endpoint{IP: net.ParseIP(p.Status.PodIP), Port: uint16(tp)})
				}
			}
			ls.Ports = append(ls.Ports, port)
		}
		lbs = append(lbs, ls)
	}
	// Endpoints of Services that are gone.
	if eps, err := m.Store.List(kindEndpoints, account); err == nil {
		names := map[string]bool{}
		for _, o := range svcObjs {
			names[o.GetName()] = true
		}
		for _, e := range eps {
			if !names[e.GetName()] {
				m.Store.Delete(kindEndpoints, account, e.GetName())
			}
		}
	}
	as.dns.SetRecords(records)
	// Stretched over nodes, the account's Service connections are DNAT'd on the clients' nodes; the router
	// only sees those a node left to it (a client that picked itself).
	nodes := m.segmentNodes(as.index)
	as.syncer.SetSelfPicks(len(nodes) > 0)
	if _, err := as.syncer.Sync(lbs); err != nil {
		return fmt.Errorf("account %q: program services: %w", account, err)
	}
	return m.programNodeServices(account, as, lbs, nodes)
}

// programNodeServices puts the account's Service rules on nodes, the ones its segment reaches (net/lb
// WithNodeBridge: its pods' connections are DNAT'd on their own node, as kube-proxy does), and takes them
// off the nodes it left. The router keeps the whole table: Floating IPs arrive there, and a pod that picked
// itself is sent on to it.
func (m *Manager) programNodeServices(account string, as *accountServices, lbs []lb.Service, nodes []int) error {
	if m.Overlay == nil {
		return nil
	}
	want := map[int]bool{}
	for _, i := range nodes {
		want[i] = true
	}
	m.svc().mu.Lock()
	defer m.svc().mu.Unlock()
	if m.svc().accounts[account] != as {
		return nil // the account went meanwhile (servicesAccountGone took its tables away)
	}
	var errs []error
	for i, ns := range as.nodes {
		if want[i] {
			continue
		}
		// Left by the segment (or the node is gone: the table goes with the namespace our handle keeps).
		if err := ns.Delete(); err != nil && exists(netns.Path(m.Overlay.NodeNetnsName(i))) {
			errs = append(errs, fmt.Errorf("account %q: remove its Service table from node %d: %w", account, i, err))
		}
		delete(as.nodes, i)
	}
	for i := range want {
		ns := as.nodes[i]
		if ns == nil {
			var err error
			ns, err = lb.New(netns.Path(m.Overlay.NodeNetnsName(i)), NodeServiceTable(m.Lab, as.index),
				lb.WithNodeBridge(overlay.BridgeName(as.index), uint16(as.index)))
			if err != nil {
				errs = append(errs, fmt.Errorf("account %q: Service table on node %d: %w", account, i, err))
				continue
			}
			as.nodes[i] = ns
		}
		if _, err := ns.Sync(lbs); err != nil {
			errs = append(errs, fmt.Errorf("account %q: program services on node %d: %w", account, i, err))
		}
	}
	return errors.Join(errs...)
}

// NodeServiceTable names account index's Service table in a node, which holds every account's: by the
// account's index, never its name.
func NodeServiceTable(lab string, index int) string { return lab + "-svc-" + strconv.Itoa(index) }

// endpointsFor selects a Service's pods: ready ones are its endpoints, running but unready ones are listed
// as not ready, as Kubernetes does.
func endpointsFor(svc *corev1.Service, pods []metav1.Object) (*corev1.Endpoints, []*corev1.Pod) {
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Labels: svc.Labels}}
	var ready []*corev1.Pod
	subsets := map[string]*corev1.EndpointSubset{}
	var order []string
	for _, o := range pods {
		p := o.(*corev1.Pod)
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		var ports []corev1.EndpointPort
		for _, sp := range svc.Spec.Ports {
			if tp, ok := targetPort(p, sp); ok {
				ports = append(ports, corev1.EndpointPort{Name: sp.Name, Port: tp, Protocol: sp.Protocol})
			}
		}
		key, _ := json.Marshal(ports)
		ss := subsets[string(key)]
		if ss == nil {
			ss = &corev1.EndpointSubset{Ports: ports}
			subsets[string(key)] = ss
			order = append(order, string(key))
		}
		addr := corev1.EndpointAddress{IP: p.Status.PodIP, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: p.Name, UID: p.UID, Namespace: api.Namespace}}
		if p.Spec.NodeName != "" {
			addr.NodeName = ptr(p.Spec.NodeName)
		}
		if podReady(p) {
			ss.Addresses = append(ss.Addresses, addr)
			ready = append(ready, p)
		} else {
			ss.NotReadyAddresses = append(ss.NotReadyAddresses, addr)
		}
	}
	sort.Strings(order)
	for _, k := range order {
		ss := subsets[k]
		sort.Slice(ss.Addresses, func(i, j int) bool { return ss.Addresses[i].IP < ss.Addresses[j].IP })
		sort.Slice(ss.NotReadyAddresses, func(i, j int) bool { return ss.NotReadyAddresses[i].IP < ss.NotReadyAddresses[j].IP })
		ep.Subsets = append(ep.Subsets, *ss)
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Status.PodIP < ready[j].Status.PodIP })
	return ep, ready
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// targetPort resolves a Service port's targetPort on one pod: a number, or a container port's name.
func targetPort(p *corev1.Pod, sp corev1.ServicePort) (int32, bool) {
	if sp.TargetPort.Type == intstr.Int {
		if sp.TargetPort.IntVal == 0 {
			return sp.Port, true
		}
		return sp.TargetPort.IntVal, true
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == sp.TargetPort.StrVal && (cp.Protocol == sp.Protocol || (cp.Protocol == "" && sp.Protocol == corev1.ProtocolTCP)) {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func (m *Manager) writeEndpoints(account string, ep *corev1.Endpoints) error {
	api.SetAccount(ep, account)
	old, err := m.Store.Get(kindEndpoints, account, ep.Name)
	if store.IsNotFound(err) {
		err = m.Store.Create(ep)
		if store.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	if err != nil {
		return err
	}
	o := old.(*corev1.Endpoints)
	a, _ := json.Marshal(o.Subsets)
	b, _ := json.Marshal(ep.Subsets)
	if string(a) == string(b) {
		return nil
	}
	o.Subsets = ep.Subsets
	return m.Store.Update(o)
}

// syncFIPs records which Services use each of the account's Floating IPs and lets the edge route them.
func (m *Manager) syncFIPs(account string, users map[string][]string) error {
	fips, err := m.Store.List(kindFIP, account)
	if err != nil {
		return err
	}
	for _, o := range fips {
		f := o.(*api.FloatingIP)
		want := users[f.Name]
		sort.Strings(want)
		if fmt.Sprint(want) == fmt.Sprint(f.Status.Services) {
			continue
		}
		m.Store.Mutate(kindFIP, account, f.Name, func(o metav1.Object) error {
			o.(*api.FloatingIP).Status.Services = want
			return nil
		})
	}
	return m.edgeFIPs()
}

// meterService opens a Service's usage record while it exists.
func (m *Manager) meterService(svc *corev1.Service, exists bool) {
	m.meter(usageRecord{Account: api.AccountOf(svc), Kind: "service", Name: svc.Name, UID: string(svc.UID)}, exists)
}
