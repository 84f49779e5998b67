package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"slices"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// admit defaults, checks and allocates for an object about to be created (old == nil) or replaced, seeing
// the store through v. It has no side effects beyond the object itself, so a dry run is admit without the
// store write. The caller holds r.mu.
func (r *Registry) admit(ctx context.Context, vw *view, account string, o, old metav1.Object) error {
	switch v := o.(type) {
	case *corev1.Pod:
		api.DefaultPodSpec(&v.Spec)
		if old != nil {
			op := old.(*corev1.Pod)
			if v.Spec.NodeName == "" {
				// The scheduler's placement, which a replacement from the same manifest does not carry.
				v.Spec.NodeName = op.Spec.NodeName
			}
			if !reflect.DeepEqual(podSpecForCompare(op.Spec), podSpecForCompare(v.Spec)) {
				return Invalid("pod %q: pod updates may not change fields of spec; delete and recreate the pod (or use a Deployment)", v.Name)
			}
			v.Spec = op.Spec
			v.Status = op.Status
			return nil
		}
		v.Status = corev1.PodStatus{Phase: corev1.PodPending}
		pods, err := vw.List(kindPod, account)
		if err != nil {
			return err
		}
		if max := r.maxPods(); len(pods) >= max {
			return Invalid("account %q holds %d pods, the most one account network carries (its bridge floods every broadcast to every pod); delete some first", account, len(pods))
		}
		if q := r.accountQuota(vw, account, func(a *api.Account) int { return a.Spec.PodQuota }); q > 0 && len(pods) >= q {
			return Invalid("pods %q is forbidden: exceeded quota: account %q may hold %d pods (spec.podQuota) and holds %d; delete some first", v.Name, account, q, len(pods))
		}
		return r.checkImages(ctx, v.Spec.Containers, "spec")
	case *appsv1.Deployment:
		defaultDeployment(v)
		if old != nil {
			v.Status = old.(*appsv1.Deployment).Status
		} else {
			v.Status = appsv1.DeploymentStatus{}
		}
		return r.checkImages(ctx, v.Spec.Template.Spec.Containers, "spec.template.spec")
	case *appsv1.ReplicaSet:
		if v.Spec.Replicas == nil {
			v.Spec.Replicas = ptr[int32](1)
		}
		api.DefaultPodSpec(&v.Spec.Template.Spec)
		if old != nil {
			v.Status = old.(*appsv1.ReplicaSet).Status
		} else {
			v.Status = appsv1.ReplicaSetStatus{}
		}
		return r.checkImages(ctx, v.Spec.Template.Spec.Containers, "spec.template.spec")
	case *corev1.Service:
		var oldSvc *corev1.Service
		if old != nil {
			oldSvc = old.(*corev1.Service)
		}
		return r.admitService(vw, account, v, oldSvc)
	case *api.Account:
		quotas := []struct {
			field string
			of    func(*api.Account) int
		}{
			{"fipQuota", func(a *api.Account) int { return a.Spec.FIPQuota }},
			{"podQuota", func(a *api.Account) int { return a.Spec.PodQuota }},
			{"serviceQuota", func(a *api.Account) int { return a.Spec.ServiceQuota }},
		}
		for _, q := range quotas {
			if n := q.of(v); n < 0 {
				return Invalid("account %q: spec.%s: Invalid value: %d: must be 0 (the lab's default) or more", v.Name, q.field, n)
			}
		}
		if old != nil {
			oa := old.(*api.Account)
			// A quota is the lab's to give: an account's own manifest cannot raise it once the account exists.
			for _, q := range quotas {
				if q.of(v) != q.of(oa) {
					return Invalid("account %q: spec.%s: Forbidden: an account's quota is set when the account is created; delete and recreate the account to change it", v.Name, q.field)
				}
			}
			// The cgroup ceilings too (issue 11): its pods run under them, and cgroup v1 refuses a CPU ceiling
			// below a running container's.
			for _, q := range []struct{ field, v, old string }{
				{"cpuQuota", v.Spec.CPUQuota, oa.Spec.CPUQuota},
				{"memoryQuota", v.Spec.MemoryQuota, oa.Spec.MemoryQuota},
			} {
				if q.v != q.old {
					return Invalid("account %q: spec.%s: Forbidden: an account's quota is set when the account is created; delete and recreate the account to change it", v.Name, q.field)
				}
			}
			v.Status = oa.Status
			return nil
		}
		return r.assignAccountIndex(vw, v)
	case *api.FloatingIP:
		if old == nil {
			return Invalid("floating IPs are allocated with `pi create fip`, not created from manifests")
		}
		v.Status = old.(*api.FloatingIP).Status
	case *corev1.Node:
		if old == nil {
			return Invalid("node %q: nodes are network namespaces the lab builds: add one with `pi node add`", v.Name)
		}
		return admitNodeUpdate(v, old.(*corev1.Node))
	}
	return nil
}

// admitNodeUpdate lets a user label, annotate and cordon a node (kubectl label, cordon, uncordon, drain);
// the rest of a node is the lab's: its status comes from the node's namespace, its pilab.dev annotations
// say which namespace it is and whether it is stopped.
func admitNodeUpdate(v, old *corev1.Node) error {
	want := old.Spec
	want.Unschedulable = v.Spec.Unschedulable
	if !reflect.DeepEqual(want, v.Spec) {
		return Invalid("node %q: only spec.unschedulable may change (kubectl cordon/uncordon); the lab's scheduler reads no taints or other node fields", v.Name)
	}
	v.Status = old.Status
	for _, k := range []string{api.NodeIndexAnnotation, api.NodeStoppedAnnotation} {
		if val, ok := old.Annotations[k]; ok {
			if v.Annotations == nil {
				v.Annotations = map[string]string{}
			}
			v.Annotations[k] = val
		} else {
			delete(v.Annotations, k)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// accountQuota reads one quota of an account (0: none set).
func (r *Registry) accountQuota(v *view, account string, quota func(*api.Account) int) int {
	o, err := v.Get(kindAccount, "", account)
	if err != nil {
		return 0
	}
	a, ok := o.(*api.Account)
	if !ok {
		return 0
	}
	return quota(a)
}

// maxPods is the pods-per-account cap in force.
func (r *Registry) maxPods() int {
	if r.cfg.MaxPodsPerAccount > 0 {
		return r.cfg.MaxPodsPerAccount
	}
	return MaxPodsPerAccount
}

// MaxPodsPerAccount keeps an account's bridge well below the ~1000 ports where ARP broadcast floods overflow
// the kernel's packet backlog and pods stop reaching each other (measured on this machine kind).
const MaxPodsPerAccount = 500

// podSpecForCompare drops what Admit defaults, so re-applying the manifest a pod was made from is no change.
func podSpecForCompare(s corev1.PodSpec) string {
	api.DefaultPodSpec(&s)
	data, _ := json.Marshal(s)
	return string(data)
}

func defaultDeployment(dep *appsv1.Deployment) {
	if dep.Spec.Replicas == nil {
		dep.Spec.Replicas = ptr[int32](1)
	}
	if dep.Spec.Strategy.Type == "" {
		dep.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if dep.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if dep.Spec.Strategy.RollingUpdate == nil {
			dep.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		q := intstr.FromString("25%")
		if dep.Spec.Strategy.RollingUpdate.MaxSurge == nil {
			dep.Spec.Strategy.RollingUpdate.MaxSurge = &q
		}
		if dep.Spec.Strategy.RollingUpdate.MaxUnavailable == nil {
			dep.Spec.Strategy.RollingUpdate.MaxUnavailable = &q
		}
	}
	if dep.Spec.RevisionHistoryLimit == nil {
		dep.Spec.RevisionHistoryLimit = ptr[int32](10)
	}
	if dep.Spec.ProgressDeadlineSeconds == nil {
		dep.Spec.ProgressDeadlineSeconds = ptr[int32](600)
	}
	api.DefaultPodSpec(&dep.Spec.Template.Spec)
}

// checkImages refuses containers whose image is not in the lab: pi is offline first, so pulling is explicit.
func (r *Registry) checkImages(ctx context.Context, cs []corev1.Container, path string) error {
	for i, c := range cs {
		if _, err := r.cfg.Images.Resolve(ctx, c.Image); err != nil {
			return Invalid("%s.containers[%d].image: %v", path, i, err)
		}
	}
	return nil
}

func (r *Registry) assignAccountIndex(v *view, a *api.Account) error {
	objs, err := v.List(kindAccount, "")
	if err != nil {
		return err
	}
	used := map[int]bool{}
	for _, o := range objs {
		used[o.(*api.Account).Status.Index] = true
	}
	// Index 0 stays unused so that a zero value is never mistaken for an account's.
	for i := 1; i < 4096; i++ {
		if !used[i] {
			a.Status = api.AccountStatus{Index: i}
			return nil
		}
	}
	return Invalid("the lab holds 4095 accounts already")
}

// Service IPs come from 10.96.0.0/12, private to each account.
var serviceCIDR = &net.IPNet{IP: net.IPv4(10, 96, 0, 0).To4(), Mask: net.CIDRMask(12, 32)}

func (r *Registry) admitService(v *view, account string, svc *corev1.Service, old *corev1.Service) error {
	if svc.Spec.Type == "" {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if svc.Spec.SessionAffinity == "" {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
			p.TargetPort = intstr.FromInt(int(p.Port))
		}
	}
	if old != nil {
		if svc.Spec.ClusterIP == "" {
			svc.Spec.ClusterIP = old.Spec.ClusterIP
		} else if svc.Spec.ClusterIP != old.Spec.ClusterIP {
			return Invalid("service %q: spec.clusterIP: field is immutable", svc.Name)
		}
		svc.Status = old.Status
		svc.Finalizers = old.Finalizers
	} else {
		svc.Status = corev1.ServiceStatus{}
		svc.Finalizers = nil
	}
	// The finalizer is the lab's to set and take, and it is there from the start: a LoadBalancer Service
	// deleted right after its creation still waits for its Floating IP rules to go.
	HoldLoadBalancer(svc)
	svc.Spec.ClusterIPs = nil
	objs, err := v.List(kindService, account)
	if err != nil {
		return err
	}
	if q := r.accountQuota(v, account, func(a *api.Account) int { return a.Spec.ServiceQuota }); old == nil && q > 0 && len(objs) >= q {
		return Invalid("services %q is forbidden: exceeded quota: account %q may hold %d Services (spec.serviceQuota) and holds %d; delete some first", svc.Name, account, q, len(objs))
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		used := map[string]string{}
		for _, o := range objs {
			if o.GetName() != svc.Name {
				used[o.(*corev1.Service).Spec.ClusterIP] = o.GetName()
			}
		}
		if svc.Spec.ClusterIP != "" {
			ip := net.ParseIP(svc.Spec.ClusterIP)
			if !serviceCIDR.Contains(ip) {
				return Invalid("service %q: spec.clusterIP %s is not in the Service range %s", svc.Name, svc.Spec.ClusterIP, serviceCIDR)
			}
			if other, ok := used[svc.Spec.ClusterIP]; ok {
				return Invalid("service %q: spec.clusterIP %s is already allocated to service %q", svc.Name, svc.Spec.ClusterIP, other)
			}
		} else {
			ip, err := allocateServiceIP(used)
			if err != nil {
				return Invalid("service %q: %v", svc.Name, err)
			}
			svc.Spec.ClusterIP = ip
		}
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		return r.checkLoadBalancerIP(v, account, svc, objs)
	}
	return nil
}

func allocateServiceIP(used map[string]string) (string, error) {
	base := serviceCIDR.IP.To4()
	// .0.1 is kubernetes' own in a real cluster; start at .0.10 so addresses look familiar.
	for n := uint32(10); n < 1<<20-1; n++ {
		ip := net.IPv4(base[0], base[1]+byte(n>>16), byte(n>>8), byte(n)).String()
		if _, ok := used[ip]; !ok {
			return ip, nil
		}
	}
	return "", fmt.Errorf("the Service range %s is full", serviceCIDR)
}

// checkLoadBalancerIP makes sure a LoadBalancer Service's FIP is one the account holds and that no other
// Service of it serves the same port.
func (r *Registry) checkLoadBalancerIP(v *view, account string, svc *corev1.Service, services []metav1.Object) error {
	fip := svc.Spec.LoadBalancerIP
	if _, err := v.Get(kindFIP, account, fip); err != nil {
		if !store.IsNotFound(err) {
			return err
		}
		if owner := fipOwner(v, fip); owner != "" {
			return Invalid("service %q: spec.loadBalancerIP: fip %q belongs to another account; allocate your own with `pi create fip`", svc.Name, fip)
		}
		return Invalid("service %q: spec.loadBalancerIP: fip %q is not allocated to account %q; allocate one with `pi create fip` and use the address it prints", svc.Name, fip, account)
	}
	ports := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		ports[fmt.Sprintf("%d/%s", p.Port, p.Protocol)] = true
	}
	for _, o := range services {
		other := o.(*corev1.Service)
		if other.Name == svc.Name || other.Spec.Type != corev1.ServiceTypeLoadBalancer || other.Spec.LoadBalancerIP != fip {
			continue
		}
		for _, p := range other.Spec.Ports {
			if k := fmt.Sprintf("%d/%s", p.Port, p.Protocol); ports[k] {
				return Invalid("service %q: port %s on fip %q is already used by service %q; pick another port or another fip", svc.Name, k, fip, other.Name)
			}
		}
	}
	return nil
}

// fipOwner returns the account holding a FIP, or "".
func fipOwner(v *view, ip string) string {
	objs, _ := v.List(kindFIP, "")
	for _, o := range objs {
		if o.GetName() == ip {
			return api.AccountOf(o)
		}
	}
	return ""
}

// LBCleanupFinalizer holds a LoadBalancer Service until its Floating IP no longer leads to it, so that
// `pi delete service` returns only once the Internet can no longer reach the Service (Kubernetes' own name).
const LBCleanupFinalizer = "service.kubernetes.io/load-balancer-cleanup"

// HoldLoadBalancer gives a LoadBalancer Service the cleanup finalizer if it lacks it, and tells whether it
// did. Admission calls it, so the finalizer is there before any rule; the service controller calls it too,
// for Services stored before the finalizer existed.
func HoldLoadBalancer(svc *corev1.Service) bool {
	if !IsLoadBalancer(svc) || slices.Contains(svc.Finalizers, LBCleanupFinalizer) {
		return false
	}
	svc.Finalizers = append(slices.Clone(svc.Finalizers), LBCleanupFinalizer)
	return true
}

// IsLoadBalancer tells whether a Service is exposed on a Floating IP.
func IsLoadBalancer(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerIP != ""
}
