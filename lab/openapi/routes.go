package openapi

import (
	"net/http"
	"reflect"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/kube-openapi/pkg/common"
)

// The routes of the documents, one per operation, as k8s.io/apiserver's endpoints installer
// (pkg/endpoints/installer.go, registerResourceHandlers) makes them for its go-restful WebServices: the same
// paths, operation names, docs, query parameters (the json fields of the options structs, described by
// their SwaggerDoc), bodies, responses and x-kubernetes-action / x-kubernetes-group-version-kind metadata.
// The lab has no go-restful container, so the routes implement kube-openapi's common.Route directly.

// Resource is one resource the lab serves, as lab/server's resources table says.
type Resource struct {
	GroupVersion schema.GroupVersion
	// Name is the plural, as in paths: "pods".
	Name       string
	Kind       string
	Namespaced bool
	// Verbs are discovery's: get, list, watch, create, update, patch, delete, deletecollection.
	Verbs []string
	// Object and List are zero values of the Go types the resource reads and writes, which must have
	// definitions in GetOpenAPIDefinitions: &corev1.Pod{}, &corev1.PodList{}.
	Object, List any
	Subresources []Subresource
}

// Subresource is one subresource of a Resource.
type Subresource struct {
	// Name is as in paths: status, scale, exec, attach, portforward, log, eviction.
	Name string
	// Kind is the group/version/kind it answers with, as discovery lists it.
	Kind schema.GroupVersionKind
	// Verbs are discovery's: get, update, patch for status and scale; create, get for the connect ones.
	Verbs []string
	// Object is a zero value of the Go type it reads and writes (status: the resource's; scale:
	// &autoscalingv1.Scale{}; eviction: &policyv1.Eviction{}); unused by exec, attach, portforward and log,
	// which stream.
	Object any
}

func has(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}

// rootPath is the path a group version's routes hang under: /api/v1, /apis/apps/v1.
func rootPath(gv schema.GroupVersion) string {
	if gv.Group == "" {
		return "/api/" + gv.Version
	}
	return "/apis/" + gv.Group + "/" + gv.Version
}

// Media types the lab answers (JSON only, lab/server) and reads (its readKubeBody).
var (
	produces       = []string{"application/json"}
	producesStream = []string{"application/json;stream=watch"}
	consumes       = []string{"application/json", "application/yaml", "application/vnd.kubernetes.protobuf"}
	patchTypes     = []string{string(types.JSONPatchType), string(types.MergePatchType), string(types.StrategicMergePatchType), string(types.ApplyYAMLPatchType)}
)

const prettyDoc = "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget)."

type param struct {
	name, desc, dataType string
	kind                 common.ParameterKind
	required, multiple   bool
}

func (p param) Name() string               { return p.name }
func (p param) Description() string        { return p.desc }
func (p param) Required() bool             { return p.required }
func (p param) Kind() common.ParameterKind { return p.kind }
func (p param) DataType() string           { return p.dataType }
func (p param) AllowMultiple() bool        { return p.multiple }
func query(name, desc, dataType string) param {
	return param{name: name, desc: desc, dataType: dataType, kind: common.QueryParameterKind}
}
func path(name, desc string) param {
	return param{name: name, desc: desc, dataType: "string", kind: common.PathParameterKind, required: true}
}

type response struct {
	code  int
	msg   string
	model any
}

func (r response) Code() int       { return r.code }
func (r response) Message() string { return r.msg }
func (r response) Model() any      { return r.model }

type route struct {
	method, path, op, doc string
	params                []common.Parameter
	consumes, produces    []string
	meta                  map[string]any
	reads, writes         any
	responses             []common.StatusCodeResponse
}

func (r *route) Method() string                                   { return r.method }
func (r *route) Path() string                                     { return r.path }
func (r *route) OperationName() string                            { return r.op }
func (r *route) Parameters() []common.Parameter                   { return r.params }
func (r *route) Description() string                              { return r.doc }
func (r *route) Consumes() []string                               { return r.consumes }
func (r *route) Produces() []string                               { return r.produces }
func (r *route) Metadata() map[string]any                         { return r.meta }
func (r *route) RequestPayloadSample() any                        { return r.reads }
func (r *route) ResponsePayloadSample() any                       { return r.writes }
func (r *route) StatusCodeResponses() []common.StatusCodeResponse { return r.responses }

func (r *route) returns(code int, msg string, model any) *route {
	r.responses = append(r.responses, response{code, msg, model})
	return r
}

// body adds the request body parameter, read as sample.
func (r *route) body(sample any, required bool) *route {
	r.reads = sample
	r.params = append(r.params, param{name: "body", dataType: typeName(sample), kind: common.BodyParameterKind, required: required})
	return r
}

// options adds the query parameters of an options struct (metav1.ListOptions, ...): its json fields of
// simple types, described by its SwaggerDoc, as the installer's AddObjectParams does.
func (r *route) options(obj any, excluded ...string) *route {
	t := reflect.TypeOf(obj).Elem()
	var docs map[string]string
	if d, ok := obj.(interface{ SwaggerDoc() map[string]string }); ok {
		docs = d.SwaggerDoc()
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		ft := f.Type
		switch ft.Kind() {
		case reflect.Interface, reflect.Struct:
			continue
		case reflect.Pointer:
			if k := ft.Elem().Kind(); (k == reflect.Interface || k == reflect.Struct) && ft.Elem() != reflect.TypeOf(metav1.Time{}) {
				continue
			}
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || has(excluded, name) {
			continue
		}
		r.params = append(r.params, query(name, docs[name], jsonType(ft)))
	}
	return r
}

// jsonType is the OpenAPI type of a query parameter's Go type (the installer's typeToJSON).
func jsonType(t reflect.Type) string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint8, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	}
	return "string" // strings, named strings (DeletionPropagation, ResourceVersionMatch), metav1.Time
}

func typeName(sample any) string {
	if s, ok := sample.(string); ok {
		return s
	}
	return reflect.TypeOf(sample).Elem().Name()
}

// article is "a " or "an " before a kind, as the installer's GetArticleForNoun.
func article(noun string) string {
	if noun != "" && strings.ContainsRune("AEIOU", rune(noun[0])) {
		return " an "
	}
	return " a "
}

func title(s string) string {
	if s == "" {
		return ""
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// routesOf makes the routes of one resource and its subresources.
func routesOf(res *Resource) []common.Route {
	root := rootPath(res.GroupVersion)
	namespaced, nsParams := "", []common.Parameter(nil)
	collection := res.Name
	if res.Namespaced {
		namespaced = "Namespaced"
		nsParams = []common.Parameter{path("namespace", "object name and auth scope, such as for teams and projects")}
		collection = "namespaces/{namespace}/" + res.Name
	}
	nameParams := append(append([]common.Parameter{}, nsParams...), path("name", "name of the "+res.Kind))
	item := collection + "/{name}"
	status := &metav1.Status{}
	event := &metav1.WatchEvent{}
	var out []*route
	gvkOf := func(g schema.GroupVersionKind) metav1.GroupVersionKind {
		return metav1.GroupVersionKind{Group: g.Group, Version: g.Version, Kind: g.Kind}
	}
	add := func(action string, gvk schema.GroupVersionKind, r *route) *route {
		r.meta = map[string]any{"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvkOf(gvk)}
		out = append(out, r)
		return r
	}
	pretty := query("pretty", prettyDoc, "string")
	newRoute := func(method, p, op, doc string, params []common.Parameter) *route {
		ps := append([]common.Parameter{pretty}, params...)
		return &route{method: method, path: root + "/" + p, op: op, doc: doc, params: ps, consumes: consumes, produces: produces}
	}
	kind := res.Kind
	gvk := res.GroupVersion.WithKind(kind)
	v := res.Verbs

	// The collection.
	if has(v, "list") {
		doc := "list objects of kind " + kind
		if has(v, "watch") {
			doc = "list or watch objects of kind " + kind
		}
		r := newRoute("GET", collection, "list"+namespaced+kind, doc, nsParams)
		r.produces = append(append([]string{}, produces...), producesStream...)
		add("list", gvk, r.returns(http.StatusOK, "OK", res.List).options(&metav1.ListOptions{}))
		r.writes = res.List
		if res.Namespaced { // and across namespaces: /api/v1/pods
			r := newRoute("GET", res.Name, "list"+kind+"ForAllNamespaces", doc, nil)
			r.produces = append(append([]string{}, produces...), producesStream...)
			r.writes = res.List
			add("list", gvk, r.returns(http.StatusOK, "OK", res.List).options(&metav1.ListOptions{}))
		}
	}
	if has(v, "create") {
		r := newRoute("POST", collection, "create"+namespaced+kind, "create"+article(kind)+kind, nsParams)
		r.writes = res.Object
		r.returns(http.StatusOK, "OK", res.Object).returns(http.StatusCreated, "Created", res.Object).returns(http.StatusAccepted, "Accepted", res.Object)
		add("post", gvk, r.body(res.Object, true).options(&metav1.CreateOptions{}))
	}
	if has(v, "deletecollection") {
		r := newRoute("DELETE", collection, "deletecollection"+namespaced+kind, "delete collection of "+kind, nsParams)
		r.writes = status
		r.returns(http.StatusOK, "OK", status).body(&metav1.DeleteOptions{}, false).options(&metav1.DeleteOptions{}).
			options(&metav1.ListOptions{}, "watch", "allowWatchBookmarks")
		add("deletecollection", gvk, r)
	}
	// The deprecated watch paths, /api/v1/watch/..., which the lab still serves.
	if has(v, "watch") {
		watchList := func(p, op string, params []common.Parameter) {
			r := newRoute("GET", "watch/"+p, op, "watch individual changes to a list of "+kind+
				". deprecated: use the 'watch' parameter with a list operation instead.", params)
			r.produces, r.writes = append(append([]string{}, produces...), producesStream...), event
			add("watchlist", gvk, r.returns(http.StatusOK, "OK", event).options(&metav1.ListOptions{}))
		}
		watchList(collection, "watch"+namespaced+kind+"List", nsParams)
		if res.Namespaced {
			watchList(res.Name, "watch"+kind+"ListForAllNamespaces", nil)
		}
		r := newRoute("GET", "watch/"+item, "watch"+namespaced+kind, "watch changes to an object of kind "+kind+
			". deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter.", nameParams)
		r.produces, r.writes = append(append([]string{}, produces...), producesStream...), event
		add("watch", gvk, r.returns(http.StatusOK, "OK", event).options(&metav1.ListOptions{}))
	}

	// The object.
	if has(v, "get") {
		r := newRoute("GET", item, "read"+namespaced+kind, "read the specified "+kind, nameParams)
		r.writes = res.Object
		add("get", gvk, r.returns(http.StatusOK, "OK", res.Object))
	}
	if has(v, "update") {
		r := newRoute("PUT", item, "replace"+namespaced+kind, "replace the specified "+kind, nameParams)
		r.writes = res.Object
		r.returns(http.StatusOK, "OK", res.Object).returns(http.StatusCreated, "Created", res.Object)
		add("put", gvk, r.body(res.Object, true).options(&metav1.UpdateOptions{}))
	}
	if has(v, "patch") {
		r := newRoute("PATCH", item, "patch"+namespaced+kind, "partially update the specified "+kind, nameParams)
		r.consumes, r.writes = patchTypes, res.Object
		r.returns(http.StatusOK, "OK", res.Object).returns(http.StatusCreated, "Created", res.Object)
		add("patch", gvk, r.body(&metav1.Patch{}, true).options(&metav1.PatchOptions{}))
	}
	if has(v, "delete") {
		r := newRoute("DELETE", item, "delete"+namespaced+kind, "delete"+article(kind)+kind, nameParams)
		r.writes = status
		r.returns(http.StatusOK, "OK", status).returns(http.StatusAccepted, "Accepted", status)
		add("delete", gvk, r.body(&metav1.DeleteOptions{}, false).options(&metav1.DeleteOptions{}))
	}

	// The subresources.
	for _, sub := range res.Subresources {
		p, s, sv := item+"/"+sub.Name, title(sub.Name), sub.Verbs
		switch sub.Name {
		case "exec", "attach", "portforward":
			opts := map[string]any{"exec": &corev1.PodExecOptions{}, "attach": &corev1.PodAttachOptions{},
				"portforward": &corev1.PodPortForwardOptions{}}[sub.Name]
			for _, method := range []string{"GET", "POST"} {
				r := &route{method: method, path: root + "/" + p, params: append([]common.Parameter{}, nameParams...),
					op:  "connect" + title(strings.ToLower(method)) + namespaced + kind + s,
					doc: "connect " + method + " requests to " + sub.Name + " of " + kind, consumes: []string{"*/*"}, produces: []string{"*/*"},
					writes: "string"}
				add("connect", sub.Kind, r.options(opts))
			}
		case "log":
			r := newRoute("GET", p, "read"+namespaced+kind+s, "read "+sub.Name+" of the specified "+kind, nameParams)
			r.produces, r.writes = []string{"text/plain"}, "string"
			add("get", sub.Kind, r.returns(http.StatusOK, "OK", "string").options(&corev1.PodLogOptions{}))
		default: // status, scale: get, replace and patch of the object's part; eviction: create
			obj := sub.Object
			if has(sv, "create") {
				r := newRoute("POST", p, "create"+namespaced+kind+s, "create "+sub.Name+" of"+article(kind)+kind, nameParams)
				r.writes = obj
				r.returns(http.StatusOK, "OK", obj).returns(http.StatusCreated, "Created", obj).returns(http.StatusAccepted, "Accepted", obj)
				add("post", sub.Kind, r.body(obj, true).options(&metav1.CreateOptions{}))
			}
			if has(sv, "get") {
				r := newRoute("GET", p, "read"+namespaced+kind+s, "read "+sub.Name+" of the specified "+kind, nameParams)
				r.writes = obj
				add("get", sub.Kind, r.returns(http.StatusOK, "OK", obj))
			}
			if has(sv, "update") {
				r := newRoute("PUT", p, "replace"+namespaced+kind+s, "replace "+sub.Name+" of the specified "+kind, nameParams)
				r.writes = obj
				r.returns(http.StatusOK, "OK", obj).returns(http.StatusCreated, "Created", obj)
				add("put", sub.Kind, r.body(obj, true).options(&metav1.UpdateOptions{}))
			}
			if has(sv, "patch") {
				r := newRoute("PATCH", p, "patch"+namespaced+kind+s, "partially update "+sub.Name+" of the specified "+kind, nameParams)
				r.consumes, r.writes = patchTypes, obj
				r.returns(http.StatusOK, "OK", obj).returns(http.StatusCreated, "Created", obj)
				add("patch", sub.Kind, r.body(&metav1.Patch{}, true).options(&metav1.PatchOptions{}))
			}
		}
	}
	routes := make([]common.Route, len(out))
	for i, r := range out {
		routes[i] = r
	}
	return routes
}

// container holds the routes of one group version under its root path.
type container struct {
	root   string
	routes []common.Route
}

func (c *container) RootPath() string                   { return c.root }
func (c *container) PathParameters() []common.Parameter { return nil }
func (c *container) Routes() []common.Route             { return c.routes }
