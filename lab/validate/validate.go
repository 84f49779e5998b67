// Package validate checks objects before anything is stored or created, with Kubernetes' field paths and
// wording (`spec.containers[0].image: Required value`), so a kubectl user reads errors they already know.
package validate

import (
	"fmt"
	klabels "k8s.io/apimachinery/pkg/labels"
	"net"
	"reflect"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/net/lb"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Object validates any object the API accepts from users; the error is Errors' list as one aggregate, each
// item `path: Type: detail` as kubectl prints it.
func Object(o metav1.Object) error {
	return Errors(o).ToAggregate()
}

// Errors validates any object the API accepts from users, as Kubernetes' API server does for the fields Pi
// implements; the fields Pi does not implement are refused as Forbidden, "not supported in Pi". A server
// answers them as a 422 Invalid status whose causes are the list's items.
func Errors(o metav1.Object) field.ErrorList {
	var errs field.ErrorList
	switch v := o.(type) {
	case *corev1.Pod:
		errs = Pod(v)
	case *corev1.Service:
		errs = Service(v)
	case *appsv1.Deployment:
		errs = Deployment(v)
	case *appsv1.ReplicaSet:
		errs = ReplicaSet(v)
	case *api.Account:
		errs = Account(v)
	case *api.FloatingIP:
		errs = FloatingIP(v)
	}
	return errs
}

// Account validates an account.
func Account(a *api.Account) field.ErrorList {
	errs := meta(&a.ObjectMeta, field.NewPath("metadata"))
	// Account names become parts of file names and are shown in tables; keep them short DNS labels.
	for _, msg := range validation.IsDNS1123Label(a.Name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), a.Name, msg))
	}
	if len(a.Name) > 20 {
		errs = append(errs, field.TooLong(field.NewPath("metadata", "name"), a.Name, 20))
	}
	for _, q := range []struct {
		field string
		n     int
	}{{"fipQuota", a.Spec.FIPQuota}, {"podQuota", a.Spec.PodQuota}, {"serviceQuota", a.Spec.ServiceQuota}} {
		if q.n < 0 {
			errs = append(errs, field.Invalid(field.NewPath("spec", q.field), q.n, "must be greater than or equal to 0"))
		}
	}
	return append(errs, accountCeilings(a.Spec)...)
}

// accountCeilings checks the CPU and memory ceilings of an account's cgroup: Kubernetes quantities, not
// below what the kernel can enforce and a container needs.
func accountCeilings(s api.AccountSpec) field.ErrorList {
	var errs field.ErrorList
	for _, q := range []struct {
		field, v, example string
		value             func(*resource.Quantity) int64
		min               int64
		minText           string
	}{
		{"cpuQuota", s.CPUQuota, `"2" or "500m"`, (*resource.Quantity).MilliValue, api.MinAccountCPUQuotaMilli, "10m"},
		{"memoryQuota", s.MemoryQuota, `"4Gi" or "512Mi"`, (*resource.Quantity).Value, api.MinAccountMemoryQuota, "16Mi"},
	} {
		if q.v == "" {
			continue // the default
		}
		p := field.NewPath("spec", q.field)
		v, err := resource.ParseQuantity(q.v)
		if err != nil {
			errs = append(errs, field.Invalid(p, q.v, "must be a quantity such as "+q.example))
			continue
		}
		if q.value(&v) < q.min {
			errs = append(errs, field.Invalid(p, q.v, "must be at least "+q.minText+" (or empty for the lab's default)"))
		}
	}
	return errs
}

// FloatingIP validates a Floating IP object: its name is its address.
func FloatingIP(f *api.FloatingIP) field.ErrorList {
	var errs field.ErrorList
	if ip := net.ParseIP(f.Name); ip == nil || ip.To4() == nil || strings.Contains(f.Name, ":") {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), f.Name, "must be the Floating IP's IPv4 address"))
	}
	errs = append(errs, labels(f.Labels, field.NewPath("metadata", "labels"))...)
	return append(errs, FIPDisplayName(f.Spec.DisplayName, field.NewPath("spec", "displayName"))...)
}

// FIPDisplayName validates the name `pi name fip` gives an address: one printable line of at most 63
// characters, shown in tables. p is where the name was given (spec.displayName, or a request's name).
func FIPDisplayName(s string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s) > 63 {
		errs = append(errs, field.TooLong(p, s, 63))
	}
	if !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		errs = append(errs, field.Invalid(p, s, "must be printable characters on one line"))
	}
	return errs
}

func meta(m *metav1.ObjectMeta, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if m.Name == "" && m.GenerateName == "" {
		errs = append(errs, field.Required(p.Child("name"), "name or generateName is required"))
	}
	if m.Name != "" {
		for _, msg := range validation.IsDNS1123Subdomain(m.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), m.Name, msg))
		}
		// Pod names end up in netns names and hostnames.
		if len(m.Name) > 63 {
			errs = append(errs, field.TooLong(p.Child("name"), m.Name, 63))
		}
	}
	if m.Namespace != "" && m.Namespace != api.Namespace {
		errs = append(errs, field.NotSupported(p.Child("namespace"), m.Namespace, []string{api.Namespace}))
	}
	errs = append(errs, labels(m.Labels, p.Child("labels"))...)
	for k := range m.Annotations {
		for _, msg := range validation.IsQualifiedName(strings.ToLower(k)) {
			errs = append(errs, field.Invalid(p.Child("annotations"), k, msg))
		}
	}
	return errs
}

func labels(ls map[string]string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for k, v := range ls {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p, k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(p.Key(k), v, msg))
		}
	}
	return errs
}

func replicas(r *int32, p *field.Path) field.ErrorList {
	if r != nil && *r < 0 {
		return field.ErrorList{field.Invalid(p, *r, "must be greater than or equal to 0")}
	}
	return nil
}

func selected(sel *metav1.LabelSelector, t *corev1.PodTemplateSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		errs = append(errs, field.Required(p.Child("selector"), ""))
	} else {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("selector"), sel, err.Error()))
		} else if !s.Matches(klabels.Set(t.Labels)) {
			errs = append(errs, field.Invalid(p.Child("template", "metadata", "labels"), t.Labels, "`selector` does not match template `labels`"))
		}
	}
	errs = append(errs, labels(t.Labels, p.Child("template", "metadata", "labels"))...)
	errs = append(errs, template(t, p.Child("template"))...)
	errs = append(errs, podSpec(&t.Spec, p.Child("template", "spec"))...)
	return errs
}

// Pod validates a pod as Pi runs it.
func Pod(pod *corev1.Pod) field.ErrorList {
	errs := meta(&pod.ObjectMeta, field.NewPath("metadata"))
	return append(errs, podSpec(&pod.Spec, field.NewPath("spec"))...)
}

// Service validates a Service as Pi serves it.
func Service(svc *corev1.Service) field.ErrorList {
	p := field.NewPath("spec")
	errs := meta(&svc.ObjectMeta, field.NewPath("metadata"))
	for _, msg := range validation.IsDNS1035Label(svc.Name) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), svc.Name, msg))
	}
	switch svc.Spec.Type {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeLoadBalancer:
	default:
		errs = append(errs, field.NotSupported(p.Child("type"), svc.Spec.Type, []string{"ClusterIP", "LoadBalancer"}))
	}
	if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		if ip := net.ParseIP(svc.Spec.ClusterIP); ip == nil || ip.To4() == nil {
			errs = append(errs, field.Invalid(p.Child("clusterIP"), svc.Spec.ClusterIP, "must be a valid IPv4 address or None"))
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			errs = append(errs, field.Invalid(p.Child("clusterIP"), "None", "may not be None for a LoadBalancer Service"))
		}
		if svc.Spec.LoadBalancerIP == "" {
			errs = append(errs, field.Required(p.Child("loadBalancerIP"), "a LoadBalancer Service needs a Floating IP; allocate one with `pi create fip`"))
		} else if ip := net.ParseIP(svc.Spec.LoadBalancerIP); ip == nil || ip.To4() == nil {
			errs = append(errs, field.Invalid(p.Child("loadBalancerIP"), svc.Spec.LoadBalancerIP, "must be a valid IPv4 address"))
		}
	} else if svc.Spec.LoadBalancerIP != "" {
		errs = append(errs, field.Forbidden(p.Child("loadBalancerIP"), "may only be set when type is LoadBalancer"))
	}
	switch svc.Spec.SessionAffinity {
	case "", corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP:
	default:
		errs = append(errs, field.NotSupported(p.Child("sessionAffinity"), svc.Spec.SessionAffinity, []string{"None", "ClientIP"}))
	}
	if len(svc.Spec.Ports) == 0 && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		errs = append(errs, field.Required(p.Child("ports"), ""))
	}
	seen := map[string]bool{}
	names := map[string]bool{}
	for i, port := range svc.Spec.Ports {
		pp := p.Child("ports").Index(i)
		if len(svc.Spec.Ports) > 1 && port.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), "when there is more than one port, each must be named"))
		}
		if port.Name != "" {
			for _, msg := range validation.IsDNS1123Label(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if names[port.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			names[port.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(port.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), port.Port, msg))
		}
		proto, perrs := protocol(port.Protocol, pp.Child("protocol"))
		errs = append(errs, perrs...)
		k := fmt.Sprintf("%d/%s", port.Port, proto)
		if seen[k] {
			errs = append(errs, field.Duplicate(pp, k))
		}
		seen[k] = true
		if port.TargetPort.Type == intstr.Int && port.TargetPort.IntVal != 0 {
			for _, msg := range validation.IsValidPortNum(int(port.TargetPort.IntVal)) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), port.TargetPort.IntVal, msg))
			}
		} else if port.TargetPort.Type == intstr.String {
			for _, msg := range validation.IsValidPortName(port.TargetPort.StrVal) {
				errs = append(errs, field.Invalid(pp.Child("targetPort"), port.TargetPort.StrVal, msg))
			}
		}
	}
	errs = append(errs, labels(svc.Spec.Selector, p.Child("selector"))...)
	return append(errs, serviceUnsupported(&svc.Spec, p)...)
}

var serviceWhy = map[string]string{
	"externalIPs":                   "expose a Service outside its account with type LoadBalancer and a Floating IP",
	"externalName":                  "Pi has no ExternalName Services",
	"loadBalancerSourceRanges":      "a Floating IP answers every client",
	"loadBalancerClass":             "Pi's own load balancer serves every LoadBalancer Service",
	"allocateLoadBalancerNodePorts": "Pi has no node ports",
	"healthCheckNodePort":           "Pi has no node ports",
	"externalTrafficPolicy":         "a LoadBalancer Service's traffic goes to any of its pods (Cluster)",
	"internalTrafficPolicy":         "a Service's traffic goes to any of its pods (Cluster)",
	"publishNotReadyAddresses":      "a Service's endpoints are its ready pods",
	"ipFamilies":                    "Services are IPv4 only",
	"ipFamilyPolicy":                "Services are IPv4 only (SingleStack)",
}

// serviceUnsupported refuses what Pi's load balancer does not do, and takes what it does anyway: the
// values Kubernetes and pi write back into a Service it returns, so a Service read and sent back passes.
func serviceUnsupported(s *corev1.ServiceSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	handled := map[string]bool{"ports": true, "selector": true, "clusterIP": true, "type": true, "sessionAffinity": true,
		"loadBalancerIP": true, "clusterIPs": true, "sessionAffinityConfig": true}
	for i, port := range s.Ports {
		if port.NodePort != 0 {
			errs = append(errs, forbidden(p.Child("ports").Index(i).Child("nodePort"), "Pi has no node ports; use type LoadBalancer with a Floating IP"))
		}
	}
	if len(s.ClusterIPs) > 1 || (len(s.ClusterIPs) == 1 && s.ClusterIPs[0] != s.ClusterIP) {
		errs = append(errs, field.Invalid(p.Child("clusterIPs"), s.ClusterIPs, "must be empty or hold exactly spec.clusterIP: a Service has one IPv4 address"))
	}
	if c := s.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		tp := p.Child("sessionAffinityConfig", "clientIP", "timeoutSeconds")
		if t := *c.ClientIP.TimeoutSeconds; t != int32(lb.AffinityTimeout/time.Second) {
			errs = append(errs, forbidden(tp, fmt.Sprintf("%d; ClientIP affinity lasts %d seconds", t, int(lb.AffinityTimeout/time.Second))))
		}
	}
	if len(s.IPFamilies) == 1 && s.IPFamilies[0] == corev1.IPv4Protocol {
		handled["ipFamilies"] = true
	}
	if s.IPFamilyPolicy != nil && *s.IPFamilyPolicy == corev1.IPFamilyPolicySingleStack {
		handled["ipFamilyPolicy"] = true
	}
	if s.InternalTrafficPolicy != nil && *s.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyCluster {
		handled["internalTrafficPolicy"] = true
	}
	if s.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyTypeCluster {
		handled["externalTrafficPolicy"] = true
	}
	if s.AllocateLoadBalancerNodePorts != nil && !*s.AllocateLoadBalancerNodePorts {
		handled["allocateLoadBalancerNodePorts"] = true
	}
	return append(errs, unset(reflect.ValueOf(s).Elem(), p, handled, serviceWhy)...)
}

// protocol is a port's protocol with Kubernetes' default (TCP); Pi serves TCP and UDP.
func protocol(proto corev1.Protocol, p *field.Path) (corev1.Protocol, field.ErrorList) {
	if proto == "" {
		return corev1.ProtocolTCP, nil
	}
	if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
		return proto, field.ErrorList{field.NotSupported(p, proto, []string{"TCP", "UDP"})}
	}
	return proto, nil
}
