// Package printers prints objects the way kubectl does: aligned tables (-o wide), yaml, json and name.
package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/pilab/pi/lab/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// Now is the clock AGE is measured against; tests fix it.
var Now = time.Now

// Age prints how old t is, as kubectl's AGE column does.
func Age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(Now().Sub(t.Time))
}

// Table writes rows aligned as kubectl does (3 spaces between columns). A Table remembers the widest cell
// it has seen in each column, across Flushes, and pads later rows to it: rows printed after the first batch
// (get -w) line up with the header above them, as kubectl's do (its tabwriter fork, liggitt/tabwriter,
// with the RememberWidths flag). text/tabwriter alone forgets the widths at every Flush.
type Table struct {
	tw     *tabwriter.Writer
	widths []int
}

func NewTable(w io.Writer) *Table { return &Table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)} }

// Row writes one row. Every cell but the last is padded to its column's remembered width; a wider cell
// widens the column for the rows after it. Padding to a width the current batch reaches anyway changes
// nothing, so a table printed in one Flush is exactly what text/tabwriter prints.
func (t *Table) Row(cells ...string) {
	padded := make([]string, len(cells))
	for i, c := range cells {
		n := utf8.RuneCountInString(c)
		if i >= len(t.widths) {
			t.widths = append(t.widths, 0)
		}
		if n > t.widths[i] {
			t.widths[i] = n
		}
		if i < len(cells)-1 && n < t.widths[i] {
			c += strings.Repeat(" ", t.widths[i]-n)
		}
		padded[i] = c
	}
	fmt.Fprintln(t.tw, strings.Join(padded, "\t"))
}

func (t *Table) Flush() { t.tw.Flush() }

// Context carries what some columns need besides the object.
type Context struct {
	Wide bool
	Node string
	// Counts per account (PODS SERVICES FIPS of `get accounts`).
	Counts map[string][3]int
	// Usage per account: CPU and MEMORY of `get accounts`, used of the ceiling ("120m/1", "45Mi/2Gi").
	Usage map[string][2]string
	// AllAccounts adds an ACCOUNT column.
	AllAccounts bool
	// Single prints one named object by itself in json and yaml, not inside a List.
	Single bool
}

// Header returns the column names of kind k.
func Header(k api.Kind, c Context) []string {
	var h []string
	switch k.Name {
	case "Pod":
		h = []string{"NAME", "READY", "STATUS", "RESTARTS", "AGE"}
		if c.Wide {
			h = append(h, "IP", "NODE", "NOMINATED NODE", "READINESS GATES")
		}
	case "Deployment":
		h = []string{"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"}
		if c.Wide {
			h = append(h, "CONTAINERS", "IMAGES", "SELECTOR")
		}
	case "ReplicaSet":
		h = []string{"NAME", "DESIRED", "CURRENT", "READY", "AGE"}
		if c.Wide {
			h = append(h, "CONTAINERS", "IMAGES", "SELECTOR")
		}
	case "Service":
		h = []string{"NAME", "TYPE", "CLUSTER-IP", "LOADBALANCER-IP", "PORT(S)", "AGE"}
		if c.Wide {
			h = append(h, "SELECTOR")
		}
	case "Endpoints":
		h = []string{"NAME", "ENDPOINTS", "AGE"}
	case "Event":
		h = []string{"LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"}
	case "Account":
		h = []string{"NAME", "NETWORK", "PODS", "SERVICES", "FIPS", "CPU", "MEMORY", "AGE"}
		if c.Wide {
			h = append(h, "ROUTER", "DNS", "WAN-IP")
		}
	case "FloatingIP":
		h = []string{"FIP", "NAME", "CREATEDAT", "SERVICES"}
	case "Node":
		h = []string{"NAME", "STATUS", "ROLES", "AGE", "VERSION"}
		if c.Wide {
			h = append(h, "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME")
		}
	}
	if c.AllAccounts && k.Namespaced {
		h = append([]string{"ACCOUNT"}, h...)
	}
	return h
}

// Row returns the cells of one object.
func Row(o metav1.Object, c Context) []string {
	var r []string
	switch v := o.(type) {
	case *corev1.Pod:
		r = podRow(v, c)
	case *appsv1.Deployment:
		want := int32(1)
		if v.Spec.Replicas != nil {
			want = *v.Spec.Replicas
		}
		r = []string{v.Name, fmt.Sprintf("%d/%d", v.Status.ReadyReplicas, want), fmt.Sprint(v.Status.UpdatedReplicas), fmt.Sprint(v.Status.AvailableReplicas), Age(v.CreationTimestamp)}
		if c.Wide {
			r = append(r, containers(v.Spec.Template.Spec)...)
			r = append(r, metav1.FormatLabelSelector(v.Spec.Selector))
		}
	case *appsv1.ReplicaSet:
		want := int32(1)
		if v.Spec.Replicas != nil {
			want = *v.Spec.Replicas
		}
		r = []string{v.Name, fmt.Sprint(want), fmt.Sprint(v.Status.Replicas), fmt.Sprint(v.Status.ReadyReplicas), Age(v.CreationTimestamp)}
		if c.Wide {
			r = append(r, containers(v.Spec.Template.Spec)...)
			r = append(r, metav1.FormatLabelSelector(v.Spec.Selector))
		}
	case *corev1.Service:
		lb := "<none>"
		if v.Spec.Type == corev1.ServiceTypeLoadBalancer {
			// As kubectl: the address the load balancer answers on, once it does.
			lb = "<pending>"
			var ips []string
			for _, in := range v.Status.LoadBalancer.Ingress {
				ips = append(ips, in.IP)
			}
			if len(ips) > 0 {
				lb = strings.Join(ips, ",")
			}
		}
		r = []string{v.Name, string(v.Spec.Type), orNone(v.Spec.ClusterIP), lb, ServicePorts(v), Age(v.CreationTimestamp)}
		if c.Wide {
			r = append(r, selector(v.Spec.Selector))
		}
	case *corev1.Endpoints:
		r = []string{v.Name, EndpointsString(v, 3), Age(v.CreationTimestamp)}
	case *corev1.Event:
		r = []string{Age(v.LastTimestamp), v.Type, v.Reason, strings.ToLower(v.InvolvedObject.Kind) + "/" + v.InvolvedObject.Name, v.Message}
	case *api.Account:
		n := c.Counts[v.Name]
		network := v.Status.Network
		if network == "" {
			network = "<pending>"
		}
		u, ok := c.Usage[v.Name]
		if !ok {
			u = [2]string{"-", "-"}
		}
		r = []string{v.Name, network, fmt.Sprint(n[0]), fmt.Sprint(n[1]), fmt.Sprint(n[2]), u[0], u[1], Age(v.CreationTimestamp)}
		if c.Wide {
			r = append(r, orNone(v.Status.RouterIP), orNone(v.Status.DNSIP), orNone(v.Status.WANIP))
		}
	case *api.FloatingIP:
		name := v.Spec.DisplayName
		if name == "" {
			name = "<none>"
		}
		svcs := "<none>"
		if len(v.Status.Services) > 0 {
			svcs = strings.Join(v.Status.Services, ",")
		}
		r = []string{v.Name, name, v.CreationTimestamp.UTC().Format(time.RFC3339), svcs}
	case *corev1.Node:
		info := v.Status.NodeInfo
		r = []string{v.Name, NodeStatus(v), NodeRoles(v), Age(v.CreationTimestamp), info.KubeletVersion}
		if c.Wide {
			r = append(r, nodeAddress(v, corev1.NodeInternalIP), nodeAddress(v, corev1.NodeExternalIP),
				orUnknown(info.OSImage), orUnknown(info.KernelVersion), orUnknown(info.ContainerRuntimeVersion))
		}
	}
	if c.AllAccounts && api.KindOf(o).Namespaced {
		r = append([]string{api.AccountOf(o)}, r...)
	}
	return r
}

// UsageCells are the CPU and MEMORY cells of `get accounts`: what the account's pods use of its ceilings,
// "487m/500m" and "99Mi/2Gi".
func UsageCells(cpuMilli, cpuQuotaMilli int64, memoryBytes uint64, memoryQuotaBytes int64) [2]string {
	return [2]string{
		resource.NewMilliQuantity(cpuMilli, resource.DecimalSI).String() + "/" + resource.NewMilliQuantity(cpuQuotaMilli, resource.DecimalSI).String(),
		fmt.Sprintf("%dMi/%s", memoryBytes>>20, resource.NewQuantity(memoryQuotaBytes, resource.BinarySI).String()),
	}
}

// NodeStatus is the STATUS of a node, as kubectl prints it: Ready or NotReady from its Ready condition,
// Unknown without one, and ",SchedulingDisabled" while it is cordoned.
func NodeStatus(n *corev1.Node) string {
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			status = "NotReady"
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			}
			break
		}
	}
	if n.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	return status
}

// NodeRoles is the ROLES of a node: the roles its node-role.kubernetes.io/ROLE labels and its
// kubernetes.io/role label name, sorted, or <none>.
func NodeRoles(n *corev1.Node) string {
	seen := map[string]bool{}
	var roles []string
	for k, v := range n.Labels {
		role := ""
		switch {
		case strings.HasPrefix(k, "node-role.kubernetes.io/"):
			role = strings.TrimPrefix(k, "node-role.kubernetes.io/")
		case k == "kubernetes.io/role":
			role = v
		}
		if role != "" && !seen[role] {
			seen[role] = true
			roles = append(roles, role)
		}
	}
	if len(roles) == 0 {
		return "<none>"
	}
	sort.Strings(roles)
	return strings.Join(roles, ",")
}

// nodeAddress is a node's first address of type t, or <none>.
func nodeAddress(n *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range n.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}

func orUnknown(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func containers(s corev1.PodSpec) []string {
	var n, i []string
	for _, c := range s.Containers {
		n = append(n, c.Name)
		i = append(i, c.Image)
	}
	return []string{strings.Join(n, ","), strings.Join(i, ",")}
}

func selector(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// ServicePorts prints PORT(S): 80/TCP, 8080:30000/TCP style without node ports.
func ServicePorts(s *corev1.Service) string {
	if len(s.Spec.Ports) == 0 {
		return "<none>"
	}
	var out []string
	for _, p := range s.Spec.Ports {
		out = append(out, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
	}
	return strings.Join(out, ",")
}

// EndpointsString prints up to max ip:port pairs and "+ N more...".
func EndpointsString(e *corev1.Endpoints, max int) string {
	var all []string
	for _, ss := range e.Subsets {
		for _, p := range ss.Ports {
			for _, a := range ss.Addresses {
				all = append(all, fmt.Sprintf("%s:%d", a.IP, p.Port))
			}
		}
	}
	if len(all) == 0 {
		return "<none>"
	}
	if max > 0 && len(all) > max {
		return strings.Join(all[:max], ",") + fmt.Sprintf(" + %d more...", len(all)-max)
	}
	return strings.Join(all, ",")
}

// PodStatus is the STATUS column: kubectl's reason logic.
func PodStatus(p *corev1.Pod) string {
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil && cs.State.Waiting.Reason != "" {
			reason = cs.State.Waiting.Reason
		} else if cs.State.Terminated != nil && cs.State.Terminated.Reason != "" && p.Status.Phase != corev1.PodRunning {
			reason = cs.State.Terminated.Reason
		} else if cs.State.Terminated != nil && p.Status.Phase != corev1.PodRunning {
			if cs.State.Terminated.Signal != 0 {
				reason = fmt.Sprintf("Signal:%d", cs.State.Terminated.Signal)
			} else {
				reason = fmt.Sprintf("ExitCode:%d", cs.State.Terminated.ExitCode)
			}
		}
	}
	if reason == "" {
		reason = "Pending"
	}
	if p.DeletionTimestamp != nil {
		reason = "Terminating"
	}
	return reason
}

func podRow(p *corev1.Pod, c Context) []string {
	ready, restarts := 0, int32(0)
	var lastRestart time.Time
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Ready && cs.State.Running != nil {
			ready++
		}
		restarts += cs.RestartCount
		if t := cs.LastTerminationState.Terminated; t != nil && t.FinishedAt.After(lastRestart) {
			lastRestart = t.FinishedAt.Time
		}
	}
	rs := fmt.Sprint(restarts)
	if restarts > 0 && !lastRestart.IsZero() {
		rs = fmt.Sprintf("%d (%s ago)", restarts, duration.HumanDuration(Now().Sub(lastRestart)))
	}
	r := []string{p.Name, fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), PodStatus(p), rs, Age(p.CreationTimestamp)}
	if c.Wide {
		// The pod's own node, as the API serves it; c.Node for a pod read before the API set it.
		node := p.Spec.NodeName
		if node == "" {
			node = c.Node
		}
		if node == "" {
			node = "<none>"
		}
		r = append(r, orNone(p.Status.PodIP), node, "<none>", "<none>")
	}
	return r
}

// WriteTable writes the header and a row per object to t and flushes it. get -w keeps t to print the
// changes that follow in the same columns.
func WriteTable(t *Table, k api.Kind, objs []metav1.Object, c Context) {
	t.Row(Header(k, c)...)
	for _, o := range objs {
		t.Row(Row(o, c)...)
	}
	t.Flush()
}

// Print writes objects in a kubectl output format: "" (table), wide, yaml, json, name.
func Print(w io.Writer, k api.Kind, objs []metav1.Object, format string, c Context) error {
	switch format {
	case "", "wide":
		c.Wide = format == "wide"
		if len(objs) == 0 {
			return nil
		}
		WriteTable(NewTable(w), k, objs, c)
	case "name":
		for _, o := range objs {
			fmt.Fprintf(w, "%s/%s\n", k.Singular, o.GetName())
		}
	case "json", "yaml":
		var v any
		for _, o := range objs {
			api.SetTypeMeta(o)
		}
		if c.Single && len(objs) == 1 {
			v = objs[0]
		} else {
			v = map[string]any{"apiVersion": "v1", "kind": "List", "items": objs, "metadata": map[string]string{"resourceVersion": ""}}
		}
		if format == "json" {
			data, err := json.MarshalIndent(v, "", "    ")
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "%s\n", data)
		} else {
			data, err := yaml.Marshal(v)
			if err != nil {
				return err
			}
			w.Write(data)
		}
	default:
		if tmpl, ok := strings.CutPrefix(format, "jsonpath="); ok {
			var v any = map[string]any{"kind": "List", "items": objs}
			if c.Single && len(objs) == 1 {
				v = objs[0]
			}
			// Like kubectl, nothing after the template: a newline is the template's to print ({"\n"}).
			return JSONPath(w, tmpl, v)
		}
		return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,jsonpath,name,wide,yaml", format)
	}
	return nil
}
