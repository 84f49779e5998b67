// Package validate checks objects before anything is stored or created, with Kubernetes' field paths and
// wording (`spec.containers[0].image: Required value`), so a kubectl user reads errors they already know.
package validate

import (
	"fmt"
	"net"
	"strings"

	"github.com/pilab/pi/lab/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Object validates any object the API accepts from users.
func Object(o metav1.Object) error {
	var errs field.ErrorList
	switch v := o.(type) {
	case *corev1.Pod:
		errs = Pod(v)
	case *corev1.Service:
		errs = Service(v)
	case *appsv1.Deployment:
		errs = meta(&v.ObjectMeta, field.NewPath("metadata"))
		errs = append(errs, replicas(v.Spec.Replicas, field.NewPath("spec", "replicas"))...)
		errs = append(errs, selected(v.Spec.Selector, &v.Spec.Template, field.NewPath("spec"))...)
	case *appsv1.ReplicaSet:
		errs = meta(&v.ObjectMeta, field.NewPath("metadata"))
		errs = append(errs, replicas(v.Spec.Replicas, field.NewPath("spec", "replicas"))...)
		errs = append(errs, selected(v.Spec.Selector, &v.Spec.Template, field.NewPath("spec"))...)
	case *api.Account:
		errs = meta(&v.ObjectMeta, field.NewPath("metadata"))
		// Account names become parts of netns and file names; keep them short DNS labels.
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), v.Name, msg))
		}
		if len(v.Name) > 20 {
			errs = append(errs, field.TooLong(field.NewPath("metadata", "name"), v.Name, 20))
		}
	default:
		return nil
	}
	return errs.ToAggregate()
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
		} else if !s.Matches(labelSet(t.Labels)) {
			errs = append(errs, field.Invalid(p.Child("template", "metadata", "labels"), t.Labels, "`selector` does not match template `labels`"))
		}
	}
	errs = append(errs, labels(t.Labels, p.Child("template", "metadata", "labels"))...)
	errs = append(errs, podSpec(&t.Spec, p.Child("template", "spec"))...)
	return errs
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool   { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string { return l[k] }

// Pod validates a pod as Pi runs it.
func Pod(pod *corev1.Pod) field.ErrorList {
	errs := meta(&pod.ObjectMeta, field.NewPath("metadata"))
	return append(errs, podSpec(&pod.Spec, field.NewPath("spec"))...)
}

func podSpec(spec *corev1.PodSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(spec.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), ""))
	}
	switch spec.RestartPolicy {
	case "", corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		errs = append(errs, field.NotSupported(p.Child("restartPolicy"), spec.RestartPolicy, []string{"Always", "OnFailure", "Never"}))
	}
	names := map[string]bool{}
	// Containers of a pod share one network namespace, so two of them cannot listen on one port.
	ports := map[string]string{}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		cp := p.Child("containers").Index(i)
		if c.Name == "" {
			errs = append(errs, field.Required(cp.Child("name"), ""))
		} else {
			for _, msg := range validation.IsDNS1123Label(c.Name) {
				errs = append(errs, field.Invalid(cp.Child("name"), c.Name, msg))
			}
			if names[c.Name] {
				errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
			}
			names[c.Name] = true
		}
		if strings.TrimSpace(c.Image) == "" {
			errs = append(errs, field.Required(cp.Child("image"), ""))
		}
		portNames := map[string]bool{}
		for j, port := range c.Ports {
			pp := cp.Child("ports").Index(j)
			for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
				errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
			}
			proto := port.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
				errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, []string{"TCP", "UDP"}))
			}
			if port.Name != "" {
				for _, msg := range validation.IsValidPortName(port.Name) {
					errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
				}
				if portNames[port.Name] {
					errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
				}
				portNames[port.Name] = true
			}
			k := fmt.Sprintf("%d/%s", port.ContainerPort, proto)
			if other, ok := ports[k]; ok && other != c.Name {
				errs = append(errs, field.Forbidden(pp.Child("containerPort"),
					fmt.Sprintf("port %s is already used by container %q; containers of one pod share its IP, so their ports must not conflict", k, other)))
			} else if ok {
				errs = append(errs, field.Duplicate(pp.Child("containerPort"), k))
			}
			ports[k] = c.Name
		}
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && q.Value() < 4<<20 {
			errs = append(errs, field.Invalid(cp.Child("resources", "limits", "memory"), q.String(), "must be at least 4Mi"))
		}
		errs = append(errs, probe(c.ReadinessProbe, cp.Child("readinessProbe"))...)
		errs = append(errs, probe(c.LivenessProbe, cp.Child("livenessProbe"))...)
	}
	return errs
}

func probe(pr *corev1.Probe, p *field.Path) field.ErrorList {
	if pr == nil {
		return nil
	}
	n := 0
	if pr.HTTPGet != nil {
		n++
	}
	if pr.TCPSocket != nil {
		n++
	}
	if pr.Exec != nil {
		n++
	}
	if pr.GRPC != nil {
		return field.ErrorList{field.NotSupported(p.Child("grpc"), "grpc", []string{"httpGet", "tcpSocket", "exec"})}
	}
	if n != 1 {
		return field.ErrorList{field.Invalid(p, "", "must specify exactly one of httpGet, tcpSocket, exec")}
	}
	return nil
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
			if names[port.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			names[port.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(port.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), port.Port, msg))
		}
		proto := port.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		if proto != corev1.ProtocolTCP && proto != corev1.ProtocolUDP {
			errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, []string{"TCP", "UDP"}))
		}
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
	return errs
}
