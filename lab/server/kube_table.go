package server

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/printers"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
)

// column is one Table column: kube-apiserver's name, type and priority (1 = only with -o wide).
type column struct {
	name, typ string
	wide      bool
	desc      string
}

// columns are kube-apiserver's columns (pkg/printers/internalversion) for the core and apps kinds, and
// pilab's own for its kinds, in the order printers.Row gives their cells with Wide set.
var columns = map[string][]column{
	"Pod": {{"Name", "string", false, "Name must be unique within a namespace."}, {"Ready", "string", false, "The aggregate readiness state of this pod for accepting traffic."},
		{"Status", "string", false, "The aggregate status of the containers in this pod."}, {"Restarts", "string", false, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."},
		{"Age", "string", false, "CreationTimestamp is a timestamp representing the server time when this object was created."},
		{"IP", "string", true, "IP address allocated to the pod. Routable at least within the cluster."}, {"Node", "string", true, "Name of the Node this pod runs on."},
		{"Nominated Node", "string", true, "Name of the node the pod is nominated to; pilab does not preempt."}, {"Readiness Gates", "string", true, "Readiness gates of the pod."}},
	"Service": {{"Name", "string", false, ""}, {"Type", "string", false, "The type of the service: ClusterIP or LoadBalancer."}, {"Cluster-IP", "string", false, "The IP address of the service inside its account."},
		{"External-IP", "string", false, "The Floating IP a LoadBalancer service answers on."}, {"Port(s)", "string", false, "The ports the service exposes."}, {"Age", "string", false, ""},
		{"Selector", "string", true, "The labels of the pods the service routes to."}},
	"Endpoints":  {{"Name", "string", false, ""}, {"Endpoints", "string", false, "The addresses of the ready pods behind a service."}, {"Age", "string", false, ""}},
	"Deployment": {{"Name", "string", false, ""}, {"Ready", "string", false, "Number of the pod with ready state"}, {"Up-to-date", "integer", false, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."}, {"Available", "integer", false, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."}, {"Age", "string", false, ""}, {"Containers", "string", true, "Names of each container in the template."}, {"Images", "string", true, "Images referenced by each container in the template."}, {"Selector", "string", true, "Label selector for pods."}},
	"ReplicaSet": {{"Name", "string", false, ""}, {"Desired", "integer", false, "Number of desired pods."}, {"Current", "integer", false, "Number of actual replicas."}, {"Ready", "integer", false, "The number of ready replicas."}, {"Age", "string", false, ""}, {"Containers", "string", true, "Names of each container in the template."}, {"Images", "string", true, "Images referenced by each container in the template."}, {"Selector", "string", true, "Label selector for pods."}},
	"Event": {{"Last Seen", "string", false, ""}, {"Type", "string", false, ""}, {"Reason", "string", false, ""}, {"Object", "string", false, ""},
		{"Subobject", "string", true, ""}, {"Source", "string", true, ""}, {"Message", "string", false, ""}, {"First Seen", "string", true, ""}, {"Count", "string", true, ""}, {"Name", "string", true, ""}},
	"EndpointSlice": {{"Name", "string", false, ""}, {"AddressType", "string", false, "The type of address carried by this EndpointSlice."},
		{"Ports", "string", false, "The ports the endpoints of this slice expose."}, {"Endpoints", "string", false, "The addresses of the endpoints of this slice (at most three shown)."}, {"Age", "string", false, ""}},
	"Node": {{"Name", "string", false, ""}, {"Status", "string", false, "The status of the node"}, {"Roles", "string", false, "The roles of the node"},
		{"Age", "string", false, ""}, {"Version", "string", false, corev1.NodeSystemInfo{}.SwaggerDoc()["kubeletVersion"]},
		{"Internal-IP", "string", true, corev1.NodeStatus{}.SwaggerDoc()["addresses"]}, {"External-IP", "string", true, corev1.NodeStatus{}.SwaggerDoc()["addresses"]},
		{"OS-Image", "string", true, corev1.NodeSystemInfo{}.SwaggerDoc()["osImage"]}, {"Kernel-Version", "string", true, corev1.NodeSystemInfo{}.SwaggerDoc()["kernelVersion"]},
		{"Container-Runtime", "string", true, corev1.NodeSystemInfo{}.SwaggerDoc()["containerRuntimeVersion"]}},
	"Namespace":  {{"Name", "string", false, ""}, {"Status", "string", false, "The status of the namespace"}, {"Age", "string", false, ""}},
	"FloatingIP": {{"FIP", "string", false, "The address."}, {"Name", "string", false, "The display name set with `pi name fip`."}, {"CreatedAt", "string", false, "When the account got the address."}, {"Services", "string", false, "The LoadBalancer services that use the address."}},
	"Account": {{"Name", "string", false, ""}, {"Network", "string", false, "The account's pod network."}, {"Pods", "integer", false, ""}, {"Services", "integer", false, ""}, {"FIPs", "integer", false, ""},
		{"CPU", "string", false, "CPU the account's pods use, of its ceiling (spec.cpuQuota)."}, {"Memory", "string", false, "Memory the account's pods use (working set), of its ceiling (spec.memoryQuota)."},
		{"Age", "string", false, ""},
		{"Router", "string", true, "The address of the account's router."}, {"DNS", "string", true, "The address of the account's DNS server."}, {"WAN-IP", "string", true, "What servers on the Internet see as the account's address."}},
}

// table makes a metav1.Table of objs, kube-apiserver's answer to Accept: as=Table.
func (k *kubeAPI) table(req *readRequest, objs []metav1.Object, rv uint64) *metav1.Table {
	cols := columns[req.res.kind]
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "Table"}, Rows: []metav1.TableRow{}}
	if rv != 0 {
		t.ResourceVersion = strconv.FormatUint(rv, 10)
	}
	for _, c := range cols {
		cd := metav1.TableColumnDefinition{Name: c.name, Type: c.typ, Description: c.desc}
		if c.wide {
			cd.Priority = 1
		}
		if c.name == "Name" && c.typ == "string" {
			cd.Format = "name"
		}
		t.ColumnDefinitions = append(t.ColumnDefinitions, cd)
	}
	var counts map[string][3]int
	var usage map[string][2]string
	if req.res.kind == "Account" {
		counts = k.accountCounts()
		if u, ok := k.s.Backend.(AccountUsager); ok {
			usage = u.AccountUsageCells(objs)
		}
	}
	for _, o := range objs {
		cells := k.cells(o, counts, usage)
		row := metav1.TableRow{Cells: make([]any, len(cells))}
		for i, c := range cells {
			row.Cells[i] = c
			if i < len(cols) && cols[i].typ == "integer" {
				if n, err := strconv.ParseInt(c, 10, 64); err == nil {
					row.Cells[i] = n
				}
			}
		}
		row.Object = rowObject(req.includeObject, o)
		t.Rows = append(t.Rows, row)
	}
	return t
}

// cells are an object's cells: pi's printers' where they exist, so `pi get` and kubectl agree.
func (k *kubeAPI) cells(o metav1.Object, counts map[string][3]int, usage map[string][2]string) []string {
	switch v := o.(type) {
	case *corev1.Namespace:
		return []string{v.Name, string(v.Status.Phase), printers.Age(v.CreationTimestamp)}
	case *discoveryv1.EndpointSlice:
		return endpointSliceCells(v)
	case *corev1.Event:
		base := printers.Row(v, printers.Context{Wide: true})
		src := v.Source.Component
		if v.Source.Host != "" {
			src += ", " + v.Source.Host
		}
		count := v.Count
		if count == 0 {
			count = 1
		}
		// Last Seen, Type, Reason, Object, Subobject, Source, Message, First Seen, Count, Name.
		return []string{base[0], base[1], base[2], base[3], v.InvolvedObject.FieldPath, src, base[4], printers.Age(v.FirstTimestamp), fmt.Sprint(count), v.Name}
	case *corev1.Pod:
		return printers.Row(v, printers.Context{Wide: true, Node: v.Spec.NodeName})
	}
	return printers.Row(o, printers.Context{Wide: true, Counts: counts, Usage: usage})
}

// AccountUsager is a Backend that reads what accounts use of their ceilings (the daemon: their cgroups),
// for the CPU and Memory columns of the accounts' Table.
type AccountUsager interface {
	AccountUsageCells(accounts []metav1.Object) map[string][2]string
}

// accountCounts counts each account's pods, services and FIPs (the PODS SERVICES FIPS columns).
func (k *kubeAPI) accountCounts() map[string][3]int {
	out := map[string][3]int{}
	for i, kn := range []string{"Pod", "Service", "FloatingIP"} {
		objs, err := k.s.Store.List(storeKind(kn), "")
		if err != nil {
			continue
		}
		for _, o := range objs {
			c := out[api.AccountOf(o)]
			c[i]++
			out[api.AccountOf(o)] = c
		}
	}
	return out
}

// rowObject is what a Table row carries of its object.
func rowObject(include string, o metav1.Object) kruntime.RawExtension {
	var v any
	switch include {
	case "None":
		return kruntime.RawExtension{}
	case "Object":
		v = o
	default:
		m := metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"}}
		if acc, ok := o.(interface{ GetObjectMeta() metav1.Object }); ok {
			if om, ok := acc.GetObjectMeta().(*metav1.ObjectMeta); ok {
				m.ObjectMeta = *om
			}
		}
		if m.Name == "" {
			m.Name, m.Namespace, m.UID, m.ResourceVersion = o.GetName(), o.GetNamespace(), o.GetUID(), o.GetResourceVersion()
			m.Labels, m.Annotations, m.CreationTimestamp = o.GetLabels(), o.GetAnnotations(), o.GetCreationTimestamp()
		}
		m.ManagedFields = nil
		v = &m
	}
	data, err := json.Marshal(v)
	if err != nil {
		return kruntime.RawExtension{}
	}
	return kruntime.RawExtension{Raw: data}
}
