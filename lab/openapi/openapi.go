// Package openapi builds and serves the OpenAPI documents of the lab's Kubernetes API, as kube-apiserver
// does: /openapi/v2 (one Swagger 2.0 document) and /openapi/v3 (a discovery document naming one OpenAPI 3.0
// document per group version, /openapi/v3/api/v1?hash=..., /openapi/v3/apis/apps/v1?hash=..., ...).
//
// The schemas are generated from the Go types and their doc comments by openapi-gen
// (zz_generated.openapi.go, `make openapi`); the paths come from lab/server's resources table (Resource),
// made into kube-openapi routes the way k8s.io/apiserver's endpoints installer makes them; kube-openapi's
// builders put the two together and its handlers serve the results (ETag, gzip, protobuf, hash URLs).
// kubectl reads them for `kubectl explain` and to decide whether it may send fieldValidation=Strict.
package openapi

//go:generate sh gen.sh .

import (
	"bytes"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"unicode"

	"github.com/pilab/pi/lab/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/builder3"
	"k8s.io/kube-openapi/pkg/common"
	"k8s.io/kube-openapi/pkg/handler"
	"k8s.io/kube-openapi/pkg/handler3"
	"k8s.io/kube-openapi/pkg/spec3"
	"k8s.io/kube-openapi/pkg/util"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// Service serves /openapi/v2 and /openapi/v3/...; its documents are built once, by New.
type Service struct {
	mux *http.ServeMux
	// paths are the paths it answers: /openapi/v2, /openapi/v3 and one per group version.
	paths map[string]bool
}

// New builds the documents of resources. scheme is the API's Scheme (its kinds name the definitions'
// x-kubernetes-group-version-kind, as kube-apiserver's DefinitionNamer does); version is the server's
// (/version's gitVersion), the documents' info.version.
func New(scheme *runtime.Scheme, resources []Resource, version string) (*Service, error) {
	names := newNamer(scheme, resources)
	info := &spec.Info{InfoProps: spec.InfoProps{Title: "Kubernetes (pilab)", Version: version}}

	// The routes, by group version, in the order of resources.
	var gvs []string
	byGV := map[string]*container{}
	for i := range resources {
		root := rootPath(resources[i].GroupVersion)
		c := byGV[root]
		if c == nil {
			c = &container{root: root}
			byGV[root] = c
			gvs = append(gvs, root)
		}
		c.routes = append(c.routes, routesOf(&resources[i])...)
	}
	var all []common.RouteContainer
	for _, root := range gvs {
		all = append(all, byGV[root])
	}

	v2, err := builder.BuildOpenAPISpecFromRoutes(all, &common.Config{
		ProtocolList:                   []string{"https"},
		Info:                           info,
		DefaultResponse:                &spec.Response{ResponseProps: spec.ResponseProps{Description: "Default Response."}},
		GetOperationIDAndTagsFromRoute: operationIDAndTags,
		GetDefinitionName:              names.name,
		GetDefinitions:                 GetOpenAPIDefinitions,
	})
	if err != nil {
		return nil, fmt.Errorf("build the OpenAPI v2 document: %w", err)
	}
	s := &Service{mux: http.NewServeMux(), paths: map[string]bool{"/openapi/v2": true, "/openapi/v3": true}}
	handler.NewOpenAPIService(v2).RegisterOpenAPIVersionedService("/openapi/v2", s.mux)

	v3 := handler3.NewOpenAPIService()
	if err := v3.RegisterOpenAPIV3VersionedService("/openapi/v3", prefixMux{s.mux}); err != nil {
		return nil, fmt.Errorf("serve the OpenAPI v3 documents: %w", err)
	}
	// One set of definitions for every group version's document, as kube-apiserver's
	// DefaultOpenAPIV3Config computes them.
	defs := GetOpenAPIDefinitions(func(name string) spec.Ref {
		n, _ := names.name(name)
		return spec.MustCreateRef("#/components/schemas/" + common.EscapeJsonPointer(n))
	})
	for _, root := range gvs {
		doc, err := builder3.BuildOpenAPISpecFromRoutes([]common.RouteContainer{byGV[root]}, &common.OpenAPIV3Config{
			Info:                           info,
			DefaultResponse:                &spec3.Response{ResponseProps: spec3.ResponseProps{Description: "Default Response."}},
			GetOperationIDAndTagsFromRoute: operationIDAndTags,
			GetDefinitionName:              names.name,
			Definitions:                    defs,
		})
		if err != nil {
			return nil, fmt.Errorf("build the OpenAPI v3 document of %s: %w", root, err)
		}
		gv := strings.TrimPrefix(root, "/") // "api/v1", "apis/apps/v1": the discovery document's keys
		v3.UpdateGroupVersion(gv, doc)
		s.paths["/openapi/v3/"+gv] = true
	}
	return s, nil
}

// Handles reports whether path is one of the documents (or the v3 discovery document).
func (s *Service) Handles(path string) bool { return s.paths[strings.TrimSuffix(path, "/")] }

// ServeHTTP serves the documents; a path Handles refuses gets a plain 404.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.Handles(r.URL.Path) {
		http.NotFound(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// prefixMux is a ServeMux as handler3 wants it: patterns ending in "/" are prefixes already.
type prefixMux struct{ *http.ServeMux }

func (m prefixMux) HandlePrefix(path string, h http.Handler) { m.Handle(path, h) }

// namer names definitions and gives the kinds' ones their x-kubernetes-group-version-kind, as
// k8s.io/apiserver's DefinitionNamer. Kubernetes' types carry their names (io.k8s.api.core.v1.Pod,
// OpenAPIModelName); pilab's are named for their group and version: dev.pilab.v1.FloatingIP.
type namer struct {
	gvks map[string][]metav1.GroupVersionKind
}

// pilabModelPackage is the prefix of pilab's definitions' names: pilab.dev/v1 → dev.pilab.v1.
var pilabModelPackage = func() string {
	gv := schema.FromAPIVersionAndKind(api.PiAPIVersion, "").GroupVersion()
	return util.ToRESTFriendlyName(gv.Group) + "." + gv.Version
}()

// pilabPackages hold pilab's types with definitions.
var pilabPackages = []string{
	reflect.TypeOf(api.FloatingIP{}).PkgPath() + ".",
	reflect.TypeOf(FloatingIPList{}).PkgPath() + ".",
}

func newNamer(scheme *runtime.Scheme, resources []Resource) *namer {
	n := &namer{gvks: map[string][]metav1.GroupVersionKind{}}
	add := func(sample any, gvk schema.GroupVersionKind) {
		name := util.GetCanonicalTypeName(sample)
		g := metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind}
		for _, have := range n.gvks[name] {
			if have == g {
				return
			}
		}
		n.gvks[name] = append(n.gvks[name], g)
	}
	for gvk, t := range scheme.AllKnownTypes() {
		if gvk.Version != runtime.APIVersionInternal {
			add(reflect.New(t).Interface(), gvk)
		}
	}
	// The resources' own types, which the Scheme may know under other Go types (lab/server wraps pilab's
	// kinds to make them runtime.Objects).
	for _, r := range resources {
		add(r.Object, r.GroupVersion.WithKind(r.Kind))
		add(r.List, r.GroupVersion.WithKind(r.Kind+"List"))
		for _, sub := range r.Subresources {
			if sub.Object != nil {
				add(sub.Object, sub.Kind)
			}
		}
	}
	for _, l := range n.gvks {
		sort.Slice(l, func(i, j int) bool {
			a, b := l[i], l[j]
			if a.Group != b.Group {
				return a.Group < b.Group
			}
			if a.Version != b.Version {
				return a.Version < b.Version
			}
			return a.Kind < b.Kind
		})
	}
	return n
}

func (n *namer) name(name string) (string, spec.Extensions) {
	out := name
	for _, p := range pilabPackages {
		if strings.HasPrefix(name, p) {
			out = pilabModelPackage + "." + strings.TrimPrefix(name, p)
		}
	}
	l, ok := n.gvks[name]
	if !ok {
		return out, nil
	}
	j := make([]any, len(l))
	for i, g := range l {
		j[i] = map[string]any{"group": g.Group, "version": g.Version, "kind": g.Kind}
	}
	return out, spec.Extensions{"x-kubernetes-group-version-kind": j}
}

// verbPrefixes are the verbs operation names start with (k8s.io/apiserver's endpoints/openapi).
var verbPrefixes = util.NewTrie([]string{"get", "log", "read", "replace", "patch", "delete", "deletecollection", "watch", "connect", "proxy", "list", "create"})

// operationIDAndTags makes kube-apiserver's operation IDs and tags (k8s.io/apiserver's
// GetOperationIDAndTags): listNamespacedPod under /api/v1 → listCoreV1NamespacedPod, tag core_v1.
func operationIDAndTags(r common.Route) (string, []string, error) {
	op := r.OperationName()
	prefix, ok := verbPrefixes.GetPrefix(op)
	if !ok {
		return op, nil, fmt.Errorf("operation %q of %s does not start with a verb", op, r.Path())
	}
	op = op[len(prefix):]
	parts := strings.Split(strings.Trim(r.Path(), "/"), "/")
	if len(parts) >= 1 && parts[0] == "api" {
		parts = append([]string{"apis", "core"}, parts[1:]...)
	}
	var tags []string
	if len(parts) >= 2 && parts[0] == "apis" {
		trimmed := strings.TrimSuffix(parts[1], ".k8s.io")
		prefix += validOperationID(trimmed, true)
		tag := validOperationID(trimmed, false)
		if len(parts) > 2 {
			prefix += validOperationID(parts[2], true)
			tag += "_" + validOperationID(parts[2], false)
		}
		tags = append(tags, tag)
	}
	return prefix + validOperationID(op, true), tags, nil
}

// validOperationID drops punctuation and camel-cases what it separated: pilab.dev → pilabDev.
func validOperationID(s string, capitalizeFirst bool) string {
	var b bytes.Buffer
	capitalize := capitalizeFirst
	for i, r := range s {
		if unicode.IsLetter(r) || r == '_' || (i != 0 && unicode.IsDigit(r)) {
			if capitalize {
				r = unicode.ToUpper(r)
				capitalize = false
			}
			b.WriteRune(r)
		} else {
			capitalize = true
		}
	}
	return b.String()
}
