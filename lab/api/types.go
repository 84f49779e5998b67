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

// Account is a tenant: its own private network, DNS, Services and Floating IPs.
type Account struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              AccountSpec   `json:"spec,omitempty"`
	Status            AccountStatus `json:"status,omitempty"`
}

type AccountSpec struct {
	// FIPQuota is how many Floating IPs the account may hold; 0 means the lab default.
	FIPQuota int `json:"fipQuota,omitempty"`
}

type AccountStatus struct {
	// Index is a small number, stable for the account's life, that names its links and transit addresses.
	Index    int    `json:"index"`
	Network  string `json:"network,omitempty"`
	RouterIP string `json:"routerIP,omitempty"`
	DNSIP    string `json:"dnsIP,omitempty"`
	// WANIP is the router's Internet-side address: what servers on the Internet see as the source.
	WANIP string `json:"wanIP,omitempty"`
	Ready bool   `json:"ready"`
	// Message says what went wrong while setting the network up, if anything.
	Message string `json:"message,omitempty"`
}

// FloatingIP is an address from the lab's pool, held by an account, that exposes LoadBalancer Services.
// Its object name is the address itself.
type FloatingIP struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              FloatingIPSpec   `json:"spec,omitempty"`
	Status            FloatingIPStatus `json:"status,omitempty"`
}

type FloatingIPSpec struct {
	// DisplayName is the name set with `pi name fip`.
	DisplayName string `json:"displayName,omitempty"`
}

type FloatingIPStatus struct {
	// Services lists the Services that use the address.
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
