package server

// The Kubernetes API, first slice (issue 10): /version, /healthz, /readyz, discovery (plain and
// aggregated), and get, list and watch of every served kind, with Table responses. It is served beside
// the private /v1 dialect, on the same unix socket, from the same store.
//
// Accounts are virtual clusters: the account a request acts for is the impersonated user (Impersonate-User,
// kubectl --as), else "default"; it sees one namespace, "default", holding its objects.

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"os"
	"runtime"
	"strings"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	policyv1beta1 "k8s.io/api/policy/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/version"
)

// KubeVersion is what /version answers: the Kubernetes API version the lab speaks.
const KubeVersion = "v1.35.4-pilab"

// PilabGroupVersion is the group/version of pilab's own kinds (api.PiAPIVersion).
var PilabGroupVersion = schema.FromAPIVersionAndKind(api.PiAPIVersion, "").GroupVersion()

// FloatingIP and Account are pilab's kinds as runtime.Objects: the same structs as lab/api's, with the
// deep-copy method a runtime.Scheme needs.
// (Registered under their kinds' names, FloatingIP and Account.)
type (
	FloatingIPObject api.FloatingIP
	AccountObject    api.Account
)

func (o *FloatingIPObject) DeepCopyObject() kruntime.Object {
	return (*FloatingIPObject)(api.DeepCopy((*api.FloatingIP)(o)))
}
func (o *AccountObject) DeepCopyObject() kruntime.Object {
	return (*AccountObject)(api.DeepCopy((*api.Account)(o)))
}

// FloatingIPList and AccountList are their lists.
type FloatingIPList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FloatingIPObject `json:"items"`
}

type AccountList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AccountObject `json:"items"`
}

func (l *FloatingIPList) DeepCopyObject() kruntime.Object {
	out := &FloatingIPList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range l.Items {
		out.Items = append(out.Items, *l.Items[i].DeepCopyObject().(*FloatingIPObject))
	}
	return out
}

func (l *AccountList) DeepCopyObject() kruntime.Object {
	out := &AccountList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	for i := range l.Items {
		out.Items = append(out.Items, *l.Items[i].DeepCopyObject().(*AccountObject))
	}
	return out
}

// Scheme knows every kind the Kubernetes API serves: core/v1, apps/v1, meta.k8s.io/v1 (Table, Status)
// and pilab's own group.
var Scheme = newScheme()

// Codecs encode and decode the Scheme's kinds.
var Codecs = serializer.NewCodecFactory(Scheme)

func newScheme() *kruntime.Scheme {
	s := kruntime.NewScheme()
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(corev1.AddToScheme(s))
	must(appsv1.AddToScheme(s))
	must(discoveryv1.AddToScheme(s))
	must(autoscalingv1.AddToScheme(s)) // Scale, the scale subresource's kind
	// Eviction, the body of the pods' eviction subresource (kubectl drain); policy/v1beta1 is what older
	// clients send. The policy group serves no resource of its own: the lab has no PodDisruptionBudgets.
	must(policyv1.AddToScheme(s))
	must(policyv1beta1.AddToScheme(s))
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	must(metav1.AddMetaToScheme(s))
	s.AddKnownTypeWithName(PilabGroupVersion.WithKind("FloatingIP"), &FloatingIPObject{})
	s.AddKnownTypeWithName(PilabGroupVersion.WithKind("FloatingIPList"), &FloatingIPList{})
	s.AddKnownTypeWithName(PilabGroupVersion.WithKind("Account"), &AccountObject{})
	s.AddKnownTypeWithName(PilabGroupVersion.WithKind("AccountList"), &AccountList{})
	metav1.AddToGroupVersion(s, PilabGroupVersion)
	return s
}

// resource is one resource the Kubernetes API serves.
type resource struct {
	gv         schema.GroupVersion
	name       string // plural, as in paths: "pods"
	singular   string
	kind       string
	short      []string
	namespaced bool
	categories []string
	// store is the kind in the store; namespaces have none (each account has just "default").
	store    api.Kind
	hasStore bool
	// newList makes the typed list of the kind.
	newList func() kruntime.Object
	// subresources are served under the object's path: status, scale, and the pod's streams.
	subresources []string
	// project, if set, makes the resource a read-only view of the store kind: each stored object is
	// served as the objects project makes of it (EndpointSlices of Endpoints).
	project func(metav1.Object) []metav1.Object
}

func storeKind(name string) api.Kind {
	k, ok := api.LookupKind(name)
	if !ok {
		panic("server: no store kind " + name)
	}
	return k
}

var resources = []*resource{
	{gv: corev1.SchemeGroupVersion, name: "pods", singular: "pod", kind: "Pod", short: []string{"po"}, namespaced: true, categories: []string{"all"},
		store: storeKind("Pod"), hasStore: true, newList: func() kruntime.Object { return &corev1.PodList{} },
		subresources: []string{"status", "exec", "attach", "portforward", "log", "eviction"}},
	{gv: corev1.SchemeGroupVersion, name: "services", singular: "service", kind: "Service", short: []string{"svc"}, namespaced: true, categories: []string{"all"},
		store: storeKind("Service"), hasStore: true, newList: func() kruntime.Object { return &corev1.ServiceList{} }, subresources: []string{"status"}},
	{gv: corev1.SchemeGroupVersion, name: "endpoints", singular: "endpoints", kind: "Endpoints", short: []string{"ep"}, namespaced: true,
		store: storeKind("Endpoints"), hasStore: true, newList: func() kruntime.Object { return &corev1.EndpointsList{} }},
	{gv: discoveryv1.SchemeGroupVersion, name: "endpointslices", singular: "endpointslice", kind: "EndpointSlice", namespaced: true,
		store: storeKind("Endpoints"), hasStore: true, newList: func() kruntime.Object { return &discoveryv1.EndpointSliceList{} },
		project: endpointSlicesOf},
	{gv: corev1.SchemeGroupVersion, name: "events", singular: "event", kind: "Event", short: []string{"ev"}, namespaced: true,
		store: storeKind("Event"), hasStore: true, newList: func() kruntime.Object { return &corev1.EventList{} }},
	// Nodes are the lab's: made and removed by `pi up --nodes`, `pi node add|delete`; the admin may cordon
	// them (kube_nodes.go).
	{gv: corev1.SchemeGroupVersion, name: "nodes", singular: "node", kind: "Node", short: []string{"no"},
		store: storeKind("Node"), hasStore: true, newList: func() kruntime.Object { return &corev1.NodeList{} }, subresources: []string{"status"}},
	{gv: corev1.SchemeGroupVersion, name: "namespaces", singular: "namespace", kind: "Namespace", short: []string{"ns"},
		newList: func() kruntime.Object { return &corev1.NamespaceList{} }},
	{gv: appsv1.SchemeGroupVersion, name: "deployments", singular: "deployment", kind: "Deployment", short: []string{"deploy"}, namespaced: true, categories: []string{"all"},
		store: storeKind("Deployment"), hasStore: true, newList: func() kruntime.Object { return &appsv1.DeploymentList{} },
		subresources: []string{"status", "scale"}},
	{gv: appsv1.SchemeGroupVersion, name: "replicasets", singular: "replicaset", kind: "ReplicaSet", short: []string{"rs"}, namespaced: true, categories: []string{"all"},
		store: storeKind("ReplicaSet"), hasStore: true, newList: func() kruntime.Object { return &appsv1.ReplicaSetList{} },
		subresources: []string{"status", "scale"}},
	// "fips" is a short name too: pilab's CLI and scripts say `get fips`, and kubectl matches short names
	// exactly, not their plurals.
	{gv: PilabGroupVersion, name: "floatingips", singular: "floatingip", kind: "FloatingIP", short: []string{"fip", "fips"}, namespaced: true,
		store: storeKind("FloatingIP"), hasStore: true, newList: func() kruntime.Object { return &FloatingIPList{} }, subresources: []string{"status"}},
	{gv: PilabGroupVersion, name: "accounts", singular: "account", kind: "Account", short: []string{"acct"},
		store: storeKind("Account"), hasStore: true, newList: func() kruntime.Object { return &AccountList{} }, subresources: []string{"status"}},
}

// ResourcePath is the Kubernetes API path of the objects of store kind kind ("FloatingIP"): under
// /api/v1 or /apis/GROUP/VERSION, in namespace "default" when namespaced, then the resource's name
// ("/apis/pilab.dev/v1/namespaces/default/floatingips").
func ResourcePath(kind string) (string, bool) {
	for _, r := range resources {
		if r.kind != kind || !r.hasStore || r.project != nil {
			continue
		}
		p := "/apis/" + r.gv.String()
		if r.gv.Group == "" {
			p = "/api/" + r.gv.Version
		}
		if r.namespaced {
			p += "/namespaces/" + metav1.NamespaceDefault
		}
		return p + "/" + r.name, true
	}
	return "", false
}

// verbs are the verbs a resource serves, as discovery lists them.
func (r *resource) verbs() metav1.Verbs {
	switch {
	case r.kind == "Namespace", r.project != nil:
		// Each account has one namespace, made with it; a projection is made from what it shows.
		return metav1.Verbs{"get", "list", "watch"}
	case r.kind == "FloatingIP":
		// Addresses are allocated from the lab's pool (`pi create fip`), not created from manifests.
		return metav1.Verbs{"delete", "deletecollection", "get", "list", "patch", "update", "watch"}
	case r.kind == "Node":
		// Nodes are network namespaces the lab builds and removes (`pi node add|delete`).
		return metav1.Verbs{"get", "list", "patch", "update", "watch"}
	}
	return metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
}

// subresource is what discovery says of a subresource: the group, version and kind it answers with and
// its verbs, as kube-apiserver lists them.
func (r *resource) subresource(sub string) (group, version, kind string, verbs metav1.Verbs) {
	switch sub {
	case "status":
		return r.gv.Group, r.gv.Version, r.kind, metav1.Verbs{"get", "patch", "update"}
	case "scale":
		return "autoscaling", "v1", "Scale", metav1.Verbs{"get", "patch", "update"}
	case "exec":
		return "", "v1", "PodExecOptions", metav1.Verbs{"create", "get"}
	case "attach":
		return "", "v1", "PodAttachOptions", metav1.Verbs{"create", "get"}
	case "portforward":
		return "", "v1", "PodPortForwardOptions", metav1.Verbs{"create", "get"}
	case "log":
		return "", "v1", "Pod", metav1.Verbs{"get"}
	case "eviction":
		return policyv1.GroupName, "v1", "Eviction", metav1.Verbs{"create"}
	}
	return r.gv.Group, r.gv.Version, r.kind, nil
}

// hasSubresource reports whether the resource serves subresource sub.
func (r *resource) hasSubresource(sub string) bool {
	for _, s := range r.subresources {
		if s == sub {
			return true
		}
	}
	return false
}

func (r *resource) groupResource() schema.GroupResource {
	return schema.GroupResource{Group: r.gv.Group, Resource: r.name}
}

func findResource(gv schema.GroupVersion, name string) *resource {
	for _, r := range resources {
		if r.gv == gv && r.name == name {
			return r
		}
	}
	return nil
}

// groupVersions lists the served API groups, core ("") first.
func groupVersions() []schema.GroupVersion {
	var out []schema.GroupVersion
	seen := map[schema.GroupVersion]bool{}
	for _, r := range resources {
		if !seen[r.gv] {
			seen[r.gv] = true
			out = append(out, r.gv)
		}
	}
	return out
}

// kubeAPI serves the Kubernetes API from a Server's store.
type kubeAPI struct {
	s *Server
	// node is the machine's hostname: the node a pod started before the lab had a scheduler is served on
	// (hostNodeFallback).
	node string
	// pages keeps the rest of paginated lists (kube_page.go).
	pages *pages
}

// KubeHandler is the Kubernetes API's handler; Handler mounts it on /api, /apis, /version, /healthz and
// /readyz.
func (s *Server) KubeHandler() http.Handler {
	node, _ := os.Hostname()
	return &kubeAPI{s: s, node: node, pages: &pages{}}
}

func (k *kubeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch p {
	case "/healthz", "/readyz", "/livez":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fmt.Fprint(w, "ok")
		return
	case "/version":
		k.writeJSON(w, http.StatusOK, k.version())
		return
	}
	if strings.HasPrefix(p, "/openapi/") {
		k.serveOpenAPI(w, r) // kube_openapi.go
		return
	}
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	discovery := p == "/api" || p == "/apis" || (parts[0] == "api" && len(parts) == 2) || (parts[0] == "apis" && len(parts) <= 3)
	if discovery && r.Method != http.MethodGet && r.Method != http.MethodHead {
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(schema.GroupResource{}, strings.ToLower(r.Method)))
		return
	}
	switch {
	case p == "/api":
		if wantsAggregated(r) {
			k.writeAggregated(w, true)
			return
		}
		k.writeJSON(w, http.StatusOK, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0"}}})
	case p == "/apis":
		if wantsAggregated(r) {
			k.writeAggregated(w, false)
			return
		}
		k.writeJSON(w, http.StatusOK, groupList())
	case parts[0] == "api" && len(parts) >= 2:
		k.serveGroupVersion(w, r, schema.GroupVersion{Version: parts[1]}, parts[2:])
	case parts[0] == "apis" && len(parts) == 2:
		for _, g := range groupList().Groups {
			if g.Name == parts[1] {
				g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
				k.writeJSON(w, http.StatusOK, &g)
				return
			}
		}
		k.writeStatus(w, r, apierrors.NewNotFound(schema.GroupResource{}, p))
	case parts[0] == "apis" && len(parts) >= 3:
		k.serveGroupVersion(w, r, schema.GroupVersion{Group: parts[1], Version: parts[2]}, parts[3:])
	default:
		k.writeStatus(w, r, apierrors.NewNotFound(schema.GroupResource{}, p))
	}
}

func (k *kubeAPI) version() *version.Info {
	return &version.Info{Major: "1", Minor: "35", GitVersion: KubeVersion, GitTreeState: "clean",
		GoVersion: runtime.Version(), Compiler: runtime.Compiler, Platform: runtime.GOOS + "/" + runtime.GOARCH}
}

func groupList() *metav1.APIGroupList {
	l := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	for _, gv := range groupVersions() {
		if gv.Group == "" {
			continue
		}
		v := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
		l.Groups = append(l.Groups, metav1.APIGroup{Name: gv.Group, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v})
	}
	return l
}

func resourceList(gv schema.GroupVersion) *metav1.APIResourceList {
	l := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String(),
		APIResources: []metav1.APIResource{}}
	for _, r := range resources {
		if r.gv != gv {
			continue
		}
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: r.name, SingularName: r.singular, Namespaced: r.namespaced,
			Kind: r.kind, Verbs: r.verbs(), ShortNames: r.short, Categories: r.categories})
		for _, sub := range r.subresources {
			g, v, kind, verbs := r.subresource(sub)
			l.APIResources = append(l.APIResources, metav1.APIResource{Name: r.name + "/" + sub, Namespaced: r.namespaced,
				Group: g, Version: v, Kind: kind, Verbs: verbs})
		}
	}
	return l
}

// wantsAggregated reports whether the client asks for aggregated discovery (apidiscovery.k8s.io/v2), as
// kubectl and client-go do first; they fall back to the plain documents otherwise.
func wantsAggregated(r *http.Request) bool {
	for _, a := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(a))
		if err == nil && mt == "application/json" && params["g"] == "apidiscovery.k8s.io" && params["v"] == "v2" && params["as"] == "APIGroupDiscoveryList" {
			return true
		}
	}
	return false
}

// writeAggregated answers /api (core) or /apis (the groups) with an APIGroupDiscoveryList.
func (k *kubeAPI) writeAggregated(w http.ResponseWriter, core bool) {
	l := &apidiscoveryv2.APIGroupDiscoveryList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupDiscoveryList", APIVersion: "apidiscovery.k8s.io/v2"}}
	for _, gv := range groupVersions() {
		if (gv.Group == "") != core {
			continue
		}
		v := apidiscoveryv2.APIVersionDiscovery{Version: gv.Version, Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent}
		for _, r := range resources {
			if r.gv != gv {
				continue
			}
			scope := apidiscoveryv2.ScopeCluster
			if r.namespaced {
				scope = apidiscoveryv2.ScopeNamespace
			}
			var subs []apidiscoveryv2.APISubresourceDiscovery
			for _, sub := range r.subresources {
				g, ver, kind, verbs := r.subresource(sub)
				subs = append(subs, apidiscoveryv2.APISubresourceDiscovery{Subresource: sub, Verbs: verbs,
					ResponseKind: &metav1.GroupVersionKind{Group: g, Version: ver, Kind: kind}})
			}
			v.Resources = append(v.Resources, apidiscoveryv2.APIResourceDiscovery{Resource: r.name, SingularResource: r.singular,
				ResponseKind: &metav1.GroupVersionKind{Group: gv.Group, Version: gv.Version, Kind: r.kind},
				Scope:        scope, Verbs: r.verbs(), ShortNames: r.short, Categories: r.categories, Subresources: subs})
		}
		l.Items = append(l.Items, apidiscoveryv2.APIGroupDiscovery{ObjectMeta: metav1.ObjectMeta{Name: gv.Group},
			Versions: []apidiscoveryv2.APIVersionDiscovery{v}})
	}
	w.Header().Set("Content-Type", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(l)
}

func (k *kubeAPI) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// encode writes a Scheme object as JSON with its apiVersion and kind.
func encode(w http.ResponseWriter, code int, o kruntime.Object) {
	gvks, _, err := Scheme.ObjectKinds(o)
	if err == nil {
		o.GetObjectKind().SetGroupVersionKind(gvks[0])
	}
	data, err := json.Marshal(o)
	if err != nil {
		code, data = http.StatusInternalServerError, []byte(fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":%q,"reason":"InternalError","code":500}`, err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(data)
	w.Write([]byte("\n"))
}

// writeStatus answers with an error as a metav1.Status, with the code and reason Kubernetes gives it.
func (k *kubeAPI) writeStatus(w http.ResponseWriter, r *http.Request, err error) {
	st := toStatus(err)
	encode(w, int(st.Code), st)
}

func toStatus(err error) *metav1.Status {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		st := se.Status()
		return &st
	}
	return &apierrors.NewInternalError(err).ErrStatus
}

// storeError turns a store error about resource res into a Kubernetes one.
func storeError(res *resource, name string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return apierrors.NewNotFound(res.groupResource(), name)
	case errors.Is(err, store.ErrExpired):
		return apierrors.NewResourceExpired(err.Error())
	}
	return apierrors.NewInternalError(fmt.Errorf("%s %q: %w", res.name, name, err))
}
