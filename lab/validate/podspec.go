package validate

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// notInPi is the start of every refusal of a field Kubernetes has and Pi does not implement: accepting such a
// field and ignoring it would run something other than what the user wrote.
const notInPi = "not supported in Pi"

func forbidden(p *field.Path, why string) *field.Error {
	if why == "" {
		return field.Forbidden(p, notInPi)
	}
	return field.Forbidden(p, notInPi+": "+why)
}

// Why Pi refuses the pod spec fields it does not implement. A field of PodSpec that is neither checked in
// podSpec nor named here is refused by unset() with the bare notInPi, so a field a newer k8s.io/api adds is
// refused until someone implements it.
var podSpecWhy = map[string]string{
	"hostNetwork":                  "every pod gets its own network namespace on its account's network",
	"hostPID":                      "every container gets its own process namespace",
	"hostIPC":                      "every pod gets its own IPC namespace",
	"shareProcessNamespace":        "every container gets its own process namespace",
	"hostUsers":                    "containers run without a user namespace",
	"initContainers":               "pods have no init containers; run the setup in the container's command",
	"ephemeralContainers":          "look into a running container with `pi exec`",
	"securityContext":              "containers run with the lab's security defaults",
	"dnsConfig":                    "pods use their account's DNS server",
	"subdomain":                    "pods get no DNS names of their own; reach them through a Service",
	"setHostnameAsFQDN":            "pods get no DNS names of their own",
	"hostAliases":                  "write the addresses into the container's /etc/hosts from its command",
	"imagePullSecrets":             "images come from the lab's own image store (`pi image ls`)",
	"serviceAccountName":           "Pi has no service accounts",
	"serviceAccount":               "Pi has no service accounts",
	"automountServiceAccountToken": "Pi has no service account tokens",
	"enableServiceLinks":           "Pi sets no Service environment variables; find Services by their DNS names",
	"affinity":                     "the lab places pods by spec.nodeName and spec.nodeSelector only",
	"tolerations":                  "the lab places pods by spec.nodeName and spec.nodeSelector only",
	"topologySpreadConstraints":    "the lab places pods by spec.nodeName and spec.nodeSelector only",
	"schedulerName":                "the lab places pods by spec.nodeName and spec.nodeSelector only",
	"schedulingGates":              "the lab places pods by spec.nodeName and spec.nodeSelector only",
	"priority":                     "pods are not ranked",
	"priorityClassName":            "pods are not ranked",
	"preemptionPolicy":             "pods are not ranked",
	"runtimeClassName":             "every container runs with runc",
	"overhead":                     "",
	"os":                           "every pod runs on Linux",
	"activeDeadlineSeconds":        "",
	"readinessGates":               "a pod is ready when its containers are",
	"resourceClaims":               "",
}

var containerWhy = map[string]string{
	"envFrom":       "Pi has no ConfigMaps or Secrets; list the variables under env",
	"volumeMounts":  "pods have no volumes",
	"volumeDevices": "pods have no volumes",
	"startupProbe":  "use a readinessProbe, and a livenessProbe with an initialDelaySeconds",
	"lifecycle":     "containers get SIGTERM, then SIGKILL after terminationGracePeriodSeconds",
	"stdin":         "use `pi exec -i`",
	"stdinOnce":     "use `pi exec -i`",
	"tty":           "use `pi exec -it`",
	"resizePolicy":  "",
	"restartPolicy": "",
}

const secWhy = "containers run with the lab's security defaults"

// podSpec validates a pod spec as Kubernetes' ValidatePodSpec does for the fields Pi implements, and refuses
// the others.
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
	if g := spec.TerminationGracePeriodSeconds; g != nil && *g < 0 {
		errs = append(errs, field.Invalid(p.Child("terminationGracePeriodSeconds"), *g, "must be greater than or equal to 0"))
	}
	switch spec.DNSPolicy {
	case "", corev1.DNSClusterFirst:
	case corev1.DNSDefault, corev1.DNSNone, corev1.DNSClusterFirstWithHostNet:
		errs = append(errs, forbidden(p.Child("dnsPolicy"), fmt.Sprintf("%q; pods use their account's DNS server (ClusterFirst)", spec.DNSPolicy)))
	default:
		errs = append(errs, field.NotSupported(p.Child("dnsPolicy"), spec.DNSPolicy, []string{"ClusterFirst"}))
	}
	if spec.Hostname != "" {
		for _, msg := range validation.IsDNS1123Label(spec.Hostname) {
			errs = append(errs, field.Invalid(p.Child("hostname"), spec.Hostname, msg))
		}
	}
	for i, v := range spec.Volumes {
		vp := p.Child("volumes").Index(i)
		if v.HostPath != nil {
			errs = append(errs, forbidden(vp.Child("hostPath"), "a pod may not reach the host's files"))
		} else {
			errs = append(errs, forbidden(vp, "pods have no volumes; a container writes into its own filesystem"))
		}
	}
	// What Pi does anyway may be said: the defaults Kubernetes writes into every pod it returns, so a pod
	// copied from `kubectl get -o yaml` still reads.
	handled := map[string]bool{"containers": true, "restartPolicy": true, "terminationGracePeriodSeconds": true,
		"dnsPolicy": true, "hostname": true, "volumes": true, "nodeName": true, "nodeSelector": true}
	// The scheduler (lab/registry) honours both; a name or label that matches no node leaves the pod Pending
	// with a FailedScheduling event, as in Kubernetes.
	if spec.NodeName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(spec.NodeName) {
			errs = append(errs, field.Invalid(p.Child("nodeName"), spec.NodeName, msg))
		}
	}
	for k, v := range spec.NodeSelector {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p.Child("nodeSelector").Key(k), k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(p.Child("nodeSelector").Key(k), v, msg))
		}
	}
	if spec.SchedulerName == "default-scheduler" {
		handled["schedulerName"] = true
	}
	for name, b := range map[string]*bool{"enableServiceLinks": spec.EnableServiceLinks, "shareProcessNamespace": spec.ShareProcessNamespace,
		"automountServiceAccountToken": spec.AutomountServiceAccountToken, "setHostnameAsFQDN": spec.SetHostnameAsFQDN} {
		if b != nil && !*b {
			handled[name] = true
		}
	}
	if spec.HostUsers != nil && *spec.HostUsers {
		handled["hostUsers"] = true
	}
	errs = append(errs, unset(reflect.ValueOf(spec).Elem(), p, handled, podSpecWhy)...)

	names := map[string]bool{}
	// Containers of a pod share one network namespace, so two of them cannot listen on one port.
	ports := map[string]string{}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		cp := p.Child("containers").Index(i)
		if c.Name != "" && names[c.Name] {
			errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
		}
		names[c.Name] = true
		errs = append(errs, container(c, cp, ports)...)
	}
	return errs
}

func container(c *corev1.Container, cp *field.Path, podPorts map[string]string) field.ErrorList {
	var errs field.ErrorList
	if c.Name == "" {
		errs = append(errs, field.Required(cp.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			errs = append(errs, field.Invalid(cp.Child("name"), c.Name, msg))
		}
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
		proto, perrs := protocol(port.Protocol, pp.Child("protocol"))
		errs = append(errs, perrs...)
		if port.Name != "" {
			for _, msg := range validation.IsValidPortName(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			if portNames[port.Name] {
				errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
			}
			portNames[port.Name] = true
		}
		if port.HostPort != 0 {
			errs = append(errs, forbidden(pp.Child("hostPort"), "reach a pod from outside its account through a LoadBalancer Service and a Floating IP"))
		}
		if port.HostIP != "" {
			errs = append(errs, forbidden(pp.Child("hostIP"), "reach a pod from outside its account through a LoadBalancer Service and a Floating IP"))
		}
		k := fmt.Sprintf("%d/%s", port.ContainerPort, proto)
		if other, ok := podPorts[k]; ok && other != c.Name {
			errs = append(errs, field.Forbidden(pp.Child("containerPort"),
				fmt.Sprintf("port %s is already used by container %q; containers of one pod share its IP, so their ports must not conflict", k, other)))
		} else if ok {
			errs = append(errs, field.Duplicate(pp.Child("containerPort"), k))
		}
		podPorts[k] = c.Name
	}
	errs = append(errs, env(c.Env, cp.Child("env"))...)
	errs = append(errs, resources(&c.Resources, cp.Child("resources"))...)
	errs = append(errs, probe(c.ReadinessProbe, c, cp.Child("readinessProbe"), false)...)
	errs = append(errs, probe(c.LivenessProbe, c, cp.Child("livenessProbe"), true)...)
	switch c.ImagePullPolicy {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, field.NotSupported(cp.Child("imagePullPolicy"), c.ImagePullPolicy, []string{"Always", "IfNotPresent", "Never"}))
	}
	handled := map[string]bool{"name": true, "image": true, "command": true, "args": true, "workingDir": true, "ports": true,
		"env": true, "resources": true, "readinessProbe": true, "livenessProbe": true, "imagePullPolicy": true, "securityContext": true}
	// The defaults Kubernetes writes; Pi keeps no termination message, so only they may be said.
	if c.TerminationMessagePath == corev1.TerminationMessagePathDefault {
		handled["terminationMessagePath"] = true
	}
	if c.TerminationMessagePolicy == corev1.TerminationMessageReadFile {
		handled["terminationMessagePolicy"] = true
	}
	errs = append(errs, unset(reflect.ValueOf(c).Elem(), cp, handled, containerWhy)...)
	if sc := c.SecurityContext; sc != nil {
		sp := cp.Child("securityContext")
		handledSC := map[string]bool{}
		if sc.Privileged != nil && *sc.Privileged {
			errs = append(errs, forbidden(sp.Child("privileged"), "containers run with containerd's default capabilities and see no host devices"))
		}
		handledSC["privileged"] = true
		errs = append(errs, unset(reflect.ValueOf(sc).Elem(), sp, handledSC, map[string]string{})...)
	}
	return errs
}

// validEnvFieldPaths are the downward-API fields the runtime resolves (runtime/pods podField), besides
// metadata.labels['KEY'] and metadata.annotations['KEY'].
var validEnvFieldPaths = []string{"metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
	"spec.serviceAccountName", "status.hostIP", "status.podIP", "status.podIPs"}

// k8sOnlyEnvFieldPaths are what Kubernetes resolves and Pi does not.
var k8sOnlyEnvFieldPaths = []string{"status.hostIPs"}

// env mirrors Kubernetes' ValidateEnv and validateEnvVarValueFrom.
func env(vars []corev1.EnvVar, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, ev := range vars {
		ip := p.Index(i)
		if ev.Name == "" {
			errs = append(errs, field.Required(ip.Child("name"), ""))
		} else {
			for _, msg := range validation.IsEnvVarName(ev.Name) {
				errs = append(errs, field.Invalid(ip.Child("name"), ev.Name, msg))
			}
		}
		vf := ev.ValueFrom
		if vf == nil {
			continue
		}
		fp := ip.Child("valueFrom")
		n := 0
		if vf.FieldRef != nil {
			n++
			errs = append(errs, fieldRef(vf.FieldRef, fp.Child("fieldRef"))...)
		}
		if vf.ResourceFieldRef != nil {
			n++
			errs = append(errs, forbidden(fp.Child("resourceFieldRef"), "set the value directly"))
		}
		if vf.ConfigMapKeyRef != nil {
			n++
			errs = append(errs, forbidden(fp.Child("configMapKeyRef"), "Pi has no ConfigMaps; set the value directly"))
		}
		if vf.SecretKeyRef != nil {
			n++
			errs = append(errs, forbidden(fp.Child("secretKeyRef"), "Pi has no Secrets; set the value directly"))
		}
		switch {
		case n == 0:
			errs = append(errs, field.Invalid(fp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"))
		case ev.Value != "":
			errs = append(errs, field.Invalid(fp, "", "may not be specified when `value` is not empty"))
		case n > 1:
			errs = append(errs, field.Invalid(fp, "", "may not have more than one field specified at a time"))
		}
	}
	return errs
}

// fieldRef mirrors Kubernetes' validateObjectFieldSelector with Pi's set of paths.
func fieldRef(fs *corev1.ObjectFieldSelector, p *field.Path) field.ErrorList {
	// Kubernetes defaults an empty apiVersion to v1 before it validates.
	if fs.APIVersion != "" && fs.APIVersion != "v1" {
		return field.ErrorList{field.NotSupported(p.Child("apiVersion"), fs.APIVersion, []string{"v1"})}
	}
	if fs.FieldPath == "" {
		return field.ErrorList{field.Required(p.Child("fieldPath"), "")}
	}
	if path, key, ok := splitSubscript(fs.FieldPath); ok {
		var msgs []string
		switch path {
		case "metadata.annotations":
			msgs = validation.IsQualifiedName(strings.ToLower(key))
		case "metadata.labels":
			msgs = validation.IsQualifiedName(key)
		default:
			return field.ErrorList{field.Invalid(p, path, "does not support subscript")}
		}
		var errs field.ErrorList
		for _, msg := range msgs {
			errs = append(errs, field.Invalid(p, key, msg))
		}
		return errs
	}
	if slices.Contains(k8sOnlyEnvFieldPaths, fs.FieldPath) {
		return field.ErrorList{forbidden(p.Child("fieldPath"), fmt.Sprintf("%q; Pi resolves %s, metadata.labels['KEY'] and metadata.annotations['KEY']",
			fs.FieldPath, strings.Join(validEnvFieldPaths, ", ")))}
	}
	if !slices.Contains(validEnvFieldPaths, fs.FieldPath) {
		return field.ErrorList{field.NotSupported(p.Child("fieldPath"), fs.FieldPath,
			append(slices.Clone(validEnvFieldPaths), "metadata.labels['KEY']", "metadata.annotations['KEY']"))}
	}
	return nil
}

// splitSubscript is apimachinery's fieldpath.SplitMaybeSubscriptedPath: "metadata.labels['app']" is
// ("metadata.labels", "app", true). The runtime reads the same form.
func splitSubscript(fieldPath string) (string, string, bool) {
	if !strings.HasSuffix(fieldPath, "']") {
		return fieldPath, "", false
	}
	s := strings.TrimSuffix(fieldPath, "']")
	parts := strings.SplitN(s, "['", 2)
	if len(parts) < 2 || len(parts[0]) == 0 {
		return fieldPath, "", false
	}
	return parts[0], parts[1], true
}

// resources mirrors Kubernetes' ValidateResourceRequirements for the two resources Pi enforces.
func resources(r *corev1.ResourceRequirements, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	check := func(list corev1.ResourceList, lp *field.Path) {
		for _, name := range slices.Sorted(maps.Keys(list)) {
			q := list[name]
			kp := lp.Key(string(name))
			if name != corev1.ResourceCPU && name != corev1.ResourceMemory {
				errs = append(errs, forbidden(kp, "Pi limits only cpu and memory"))
				continue
			}
			if q.Sign() < 0 {
				errs = append(errs, field.Invalid(kp, q.String(), "must be greater than or equal to 0"))
			}
		}
	}
	check(r.Limits, p.Child("limits"))
	check(r.Requests, p.Child("requests"))
	for name, req := range r.Requests {
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 && lim.Sign() >= 0 {
			errs = append(errs, field.Invalid(p.Child("requests").Key(string(name)), req.String(),
				fmt.Sprintf("must be less than or equal to %s limit of %s", name, lim.String())))
		}
	}
	// The runtime cannot start a container in less.
	if q, ok := r.Limits[corev1.ResourceMemory]; ok && q.Sign() >= 0 && q.Value() < 4<<20 {
		errs = append(errs, field.Invalid(p.Child("limits", "memory"), q.String(), "must be at least 4Mi"))
	}
	if len(r.Claims) > 0 {
		errs = append(errs, forbidden(p.Child("claims"), ""))
	}
	return errs
}

// probe mirrors Kubernetes' validateProbe and its handlers, for what the prober implements
// (lab/controller/probe.go): one of httpGet, tcpSocket, exec.
func probe(pr *corev1.Probe, c *corev1.Container, p *field.Path, liveness bool) field.ErrorList {
	if pr == nil {
		return nil
	}
	var errs field.ErrorList
	for _, f := range []struct {
		name string
		v    int32
	}{{"initialDelaySeconds", pr.InitialDelaySeconds}, {"timeoutSeconds", pr.TimeoutSeconds}, {"periodSeconds", pr.PeriodSeconds},
		{"successThreshold", pr.SuccessThreshold}, {"failureThreshold", pr.FailureThreshold}} {
		if f.v < 0 {
			errs = append(errs, field.Invalid(p.Child(f.name), f.v, "must be greater than or equal to 0"))
		}
	}
	// 0 is defaulted to 1 after validation.
	if liveness && pr.SuccessThreshold > 1 {
		errs = append(errs, field.Invalid(p.Child("successThreshold"), pr.SuccessThreshold, "must be 1"))
	}
	if pr.TerminationGracePeriodSeconds != nil {
		errs = append(errs, forbidden(p.Child("terminationGracePeriodSeconds"), "the pod's terminationGracePeriodSeconds applies"))
	}
	if pr.GRPC != nil {
		return append(errs, field.NotSupported(p.Child("grpc"), "grpc", []string{"httpGet", "tcpSocket", "exec"}))
	}
	n := 0
	if h := pr.HTTPGet; h != nil {
		n++
		hp := p.Child("httpGet")
		errs = append(errs, probePort(h.Port, c, hp.Child("port"))...)
		switch h.Scheme {
		case "", corev1.URISchemeHTTP, corev1.URISchemeHTTPS:
		default:
			errs = append(errs, field.NotSupported(hp.Child("scheme"), h.Scheme, []string{"HTTP", "HTTPS"}))
		}
		for i, hd := range h.HTTPHeaders {
			for _, msg := range validation.IsHTTPHeaderName(hd.Name) {
				errs = append(errs, field.Invalid(hp.Child("httpHeaders").Index(i).Child("name"), hd.Name, msg))
			}
		}
	}
	if t := pr.TCPSocket; t != nil {
		n++
		errs = append(errs, probePort(t.Port, c, p.Child("tcpSocket", "port"))...)
	}
	if e := pr.Exec; e != nil {
		n++
		if len(e.Command) == 0 {
			errs = append(errs, field.Required(p.Child("exec", "command"), ""))
		}
	}
	if n != 1 {
		errs = append(errs, field.Invalid(p, "", "must specify exactly one of httpGet, tcpSocket, exec"))
	}
	return errs
}

// probePort checks a probe's port as the prober resolves it: a number, a number as a string, or the name
// of one of the container's ports.
func probePort(port intstr.IntOrString, c *corev1.Container, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := int(port.IntVal)
	if port.Type == intstr.String {
		v, err := strconv.Atoi(port.StrVal)
		if err != nil {
			for _, msg := range validation.IsValidPortName(port.StrVal) {
				errs = append(errs, field.Invalid(p, port.StrVal, msg))
			}
			if len(errs) == 0 && !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == port.StrVal }) {
				errs = append(errs, field.Invalid(p, port.StrVal, fmt.Sprintf("is not the name of a port of container %q; name it under ports or use a number", c.Name)))
			}
			return errs
		}
		n = v
	}
	for _, msg := range validation.IsValidPortNum(n) {
		errs = append(errs, field.Invalid(p, n, msg))
	}
	return errs
}

// unset refuses every field of the struct v that is set and not handled, naming it by its JSON name; why
// says, per field, what Pi does instead. A pointer to an empty struct, and an empty list or map, count as
// unset: `securityContext: {}` is what kubectl prints for a pod that sets none.
func unset(v reflect.Value, p *field.Path, handled map[string]bool, why map[string]string) field.ErrorList {
	var errs field.ErrorList
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" || handled[name] || !isSet(v.Field(i)) {
			continue
		}
		errs = append(errs, forbidden(p.Child(name), why[name]))
	}
	return errs
}

func isSet(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return false
		}
		if v.Elem().Kind() == reflect.Struct {
			return !v.Elem().IsZero()
		}
		return true
	case reflect.Slice, reflect.Map:
		return v.Len() > 0
	}
	return !v.IsZero()
}
