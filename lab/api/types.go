// Package api holds the object model of a Pi lab: the Kubernetes kinds Pi supports (core/v1 Pod, Service,
// Endpoints, Event; apps/v1 Deployment, ReplicaSet) and Pi's own kinds (Account, FloatingIP).
//
// Every namespaced object belongs to an account. Inside an account there is one Kubernetes namespace,
// "default", so DNS names read as in Kubernetes (<svc>.default.svc.cluster.local); the account is kept
// beside the object (store key, API path) and mirrored in the AccountAnnotation for readers of -o yaml.
package api

import (
	"encoding/json"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// Namespace is the one Kubernetes namespace inside every account.
	Namespace = "default"
	// DefaultAccount exists from the lab's first start.
	DefaultAccount = "default"
	// AccountAnnotation names the account an object belongs to; the server sets it.
	AccountAnnotation = "pilab.dev/account"

	// PiAPIVersion is the apiVersion of Pi's own kinds.
	PiAPIVersion = "pilab.dev/v1"
)

// Account is a tenant of the lab, a virtual cluster: its own private network behind its own router, DNS,
// Services and Floating IPs, and one namespace, "default", holding its objects. Accounts are lab-wide
// (not namespaced); the object's name is the account's name.
// +k8s:openapi-gen=true
type Account struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is what the account may use.
	Spec AccountSpec `json:"spec,omitempty"`
	// Status is the account's network as the lab set it up. Read-only.
	Status AccountStatus `json:"status,omitempty"`
}

// AccountSpec is what an account may use.
// +k8s:openapi-gen=true
type AccountSpec struct {
	// FIPQuota is how many Floating IPs the account may hold; 0 means the lab default.
	FIPQuota int `json:"fipQuota,omitempty"`
	// PodQuota is how many pods the account may hold; 0 means the lab's cap (500, what one account
	// network carries). A workshop's accounts get Pi's 20.
	PodQuota int `json:"podQuota,omitempty"`
	// ServiceQuota is how many Services the account may hold; 0 means no limit. A workshop's accounts
	// get Pi's 5.
	ServiceQuota int `json:"serviceQuota,omitempty"`
	// CPUQuota is the CPU all the account's pods together may use, as Kubernetes writes CPU: "2" is two
	// CPUs, "500m" half of one. Empty means the machine's CPUs (no ceiling beyond the machine). A
	// workshop's accounts get 1. A container's own CPU limit above it is lowered to it.
	CPUQuota string `json:"cpuQuota,omitempty"`
	// MemoryQuota is the memory all the account's pods together may use, as Kubernetes writes memory
	// ("4Gi", "512Mi"); past it the kernel kills a process of the account (OOMKilled), never another
	// account's. Empty means 4Gi. A workshop's accounts get 2Gi.
	MemoryQuota string `json:"memoryQuota,omitempty"`
}

// AccountStatus is an account's network as the lab set it up.
// +k8s:openapi-gen=true
type AccountStatus struct {
	// Index is a small number, stable for the account's life, that names its links and transit addresses.
	Index int `json:"index"`
	// Network is the account's pod network, a CIDR (pods get addresses from it).
	Network string `json:"network,omitempty"`
	// RouterIP is the address of the account's router on its pod network: the pods' default gateway.
	RouterIP string `json:"routerIP,omitempty"`
	// DNSIP is the address of the account's DNS server, which answers <svc>.default.svc.cluster.local.
	DNSIP string `json:"dnsIP,omitempty"`
	// WANIP is the router's Internet-side address: what servers on the Internet see as the source.
	WANIP string `json:"wanIP,omitempty"`
	// Ready is true once the account's network is set up and its pods can run.
	Ready bool `json:"ready"`
	// Message says what went wrong while setting the network up, if anything.
	Message string `json:"message,omitempty"`
}

// FloatingIP is an address from the lab's pool, held by an account, that exposes LoadBalancer Services:
// a Service of type LoadBalancer with spec.loadBalancerIP set to the address answers on it.
// Its object name is the address itself. Floating IPs are allocated with `pi create fip`, not created
// from manifests.
// +k8s:openapi-gen=true
type FloatingIP struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// Spec is what the account says of the address.
	Spec FloatingIPSpec `json:"spec,omitempty"`
	// Status is what uses the address. Read-only.
	Status FloatingIPStatus `json:"status,omitempty"`
}

// FloatingIPSpec is what the account says of a Floating IP.
// +k8s:openapi-gen=true
type FloatingIPSpec struct {
	// DisplayName is a name for people, set with `pi name fip`; the object's name stays the address.
	DisplayName string `json:"displayName,omitempty"`
}

// FloatingIPStatus is what uses a Floating IP.
// +k8s:openapi-gen=true
type FloatingIPStatus struct {
	// Services lists the names of the account's Services that use the address.
	// +listType=atomic
	Services []string `json:"services,omitempty"`
}

// Kind describes one kind the API serves.
type Kind struct {
	Name       string // "Pod"
	Plural     string // "pods"
	Singular   string // "pod"
	Short      []string
	APIVersion string
	// Namespaced kinds belong to an account; the others (Account) are lab-wide.
	Namespaced bool
	// Creatable from manifests (-f).
	FromManifest bool
	New          func() metav1.Object
	NewList      func() any
}

var kinds = []Kind{
	{Name: "Pod", Plural: "pods", Singular: "pod", Short: []string{"po"}, APIVersion: "v1", Namespaced: true, FromManifest: true,
		New: func() metav1.Object { return &corev1.Pod{} }},
	{Name: "Service", Plural: "services", Singular: "service", Short: []string{"svc"}, APIVersion: "v1", Namespaced: true, FromManifest: true,
		New: func() metav1.Object { return &corev1.Service{} }},
	{Name: "Endpoints", Plural: "endpoints", Singular: "endpoints", Short: []string{"ep"}, APIVersion: "v1", Namespaced: true,
		New: func() metav1.Object { return &corev1.Endpoints{} }},
	{Name: "Event", Plural: "events", Singular: "event", Short: []string{"ev"}, APIVersion: "v1", Namespaced: true,
		New: func() metav1.Object { return &corev1.Event{} }},
	{Name: "Deployment", Plural: "deployments", Singular: "deployment", Short: []string{"deploy"}, APIVersion: "apps/v1", Namespaced: true, FromManifest: true,
		New: func() metav1.Object { return &appsv1.Deployment{} }},
	{Name: "ReplicaSet", Plural: "replicasets", Singular: "replicaset", Short: []string{"rs"}, APIVersion: "apps/v1", Namespaced: true, FromManifest: true,
		New: func() metav1.Object { return &appsv1.ReplicaSet{} }},
	{Name: "FloatingIP", Plural: "fips", Singular: "fip", Short: []string{"fip", "floatingip", "floatingips"}, APIVersion: PiAPIVersion, Namespaced: true,
		New: func() metav1.Object { return &FloatingIP{} }},
	{Name: "Account", Plural: "accounts", Singular: "account", Short: []string{"acct"}, APIVersion: PiAPIVersion, Namespaced: false,
		New: func() metav1.Object { return &Account{} }},
	// Nodes are lab-wide, made by the lab (`pi up --nodes`, `pi node add`), never from manifests.
	{Name: "Node", Plural: "nodes", Singular: "node", Short: []string{"no"}, APIVersion: "v1", Namespaced: false,
		New: func() metav1.Object { return &corev1.Node{} }},
}

// Kinds lists every kind the API serves.
func Kinds() []Kind { return kinds }

// LookupKind finds a kind by its name, plural, singular or short name, as kubectl accepts them.
func LookupKind(s string) (Kind, bool) {
	l := strings.ToLower(s)
	for _, k := range kinds {
		if l == strings.ToLower(k.Name) || l == k.Plural || l == k.Singular {
			return k, true
		}
		for _, sh := range k.Short {
			if l == sh {
				return k, true
			}
		}
	}
	return Kind{}, false
}

// KindOf returns the kind of a typed object.
func KindOf(o metav1.Object) Kind {
	var name string
	switch o.(type) {
	case *corev1.Pod:
		name = "Pod"
	case *corev1.Service:
		name = "Service"
	case *corev1.Endpoints:
		name = "Endpoints"
	case *corev1.Event:
		name = "Event"
	case *appsv1.Deployment:
		name = "Deployment"
	case *appsv1.ReplicaSet:
		name = "ReplicaSet"
	case *FloatingIP:
		name = "FloatingIP"
	case *Account:
		name = "Account"
	case *corev1.Node:
		name = "Node"
	default:
		panic(fmt.Sprintf("api: unknown object type %T", o))
	}
	k, _ := LookupKind(name)
	return k
}

// SetTypeMeta fills apiVersion and kind, which Go values do not carry by themselves.
func SetTypeMeta(o metav1.Object) {
	k := KindOf(o)
	tm := metav1.TypeMeta{APIVersion: k.APIVersion, Kind: k.Name}
	switch v := o.(type) {
	case *corev1.Pod:
		v.TypeMeta = tm
	case *corev1.Service:
		v.TypeMeta = tm
	case *corev1.Endpoints:
		v.TypeMeta = tm
	case *corev1.Event:
		v.TypeMeta = tm
	case *appsv1.Deployment:
		v.TypeMeta = tm
	case *appsv1.ReplicaSet:
		v.TypeMeta = tm
	case *FloatingIP:
		v.TypeMeta = tm
	case *Account:
		v.TypeMeta = tm
	case *corev1.Node:
		v.TypeMeta = tm
	}
}

// AccountOf returns the account an object belongs to.
func AccountOf(o metav1.Object) string {
	if a := o.GetAnnotations()[AccountAnnotation]; a != "" {
		return a
	}
	return DefaultAccount
}

// SetAccount records the account on the object.
func SetAccount(o metav1.Object, account string) {
	a := o.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[AccountAnnotation] = account
	o.SetAnnotations(a)
}

// Decode reads one object of kind k from JSON.
func Decode(k Kind, data []byte) (metav1.Object, error) {
	o := k.New()
	if err := json.Unmarshal(data, o); err != nil {
		return nil, fmt.Errorf("decode %s: %w", k.Singular, err)
	}
	return o, nil
}

// DeepCopy copies an object through JSON; objects are small and this keeps custom kinds simple.
func DeepCopy[T metav1.Object](o T) T {
	data, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	out := KindOf(o).New().(T)
	if err := json.Unmarshal(data, out); err != nil {
		panic(err)
	}
	return out
}

// Event types of a watch stream, as in Kubernetes.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
)

// WatchEvent is one change of one object.
type WatchEvent struct {
	Type    string          `json:"type"`
	Kind    string          `json:"kind"`
	Account string          `json:"account,omitempty"`
	Object  json.RawMessage `json:"object"`
}
