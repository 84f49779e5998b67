package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/openapi3"
	"k8s.io/client-go/rest"
	"k8s.io/kube-openapi/pkg/handler3"
	"k8s.io/kube-openapi/pkg/spec3"
	"k8s.io/kube-openapi/pkg/validation/spec"
)

// The OpenAPI documents need no store: they are served from the resources table alone.
func openAPIServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer((&Server{}).KubeHandler())
	t.Cleanup(srv.Close)
	return srv
}

func getOK(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %.300s", url, resp.Status, body)
	}
	return resp, body
}

// hasQueryParam reports whether op takes query parameter name.
func hasQueryParam(op *spec3.Operation, name string) bool {
	for _, p := range op.Parameters {
		if p.Name == name && p.In == "query" {
			return true
		}
	}
	return false
}

func gvkOf(ext spec.Extensions) []map[string]any {
	var out []map[string]any
	switch v := ext["x-kubernetes-group-version-kind"].(type) {
	case map[string]any:
		out = append(out, v)
	case []any:
		for _, x := range v {
			out = append(out, x.(map[string]any))
		}
	}
	return out
}

func hasGVK(ext spec.Extensions, gvk schema.GroupVersionKind) bool {
	for _, g := range gvkOf(ext) {
		if g["group"] == gvk.Group && g["version"] == gvk.Version && g["kind"] == gvk.Kind {
			return true
		}
	}
	return false
}

func TestOpenAPIV2(t *testing.T) {
	srv := openAPIServer(t)
	resp, body := getOK(t, srv.URL+"/openapi/v2")
	if resp.Header.Get("Etag") == "" {
		t.Errorf("/openapi/v2 has no ETag (kubectl caches by it)")
	}
	var sw spec.Swagger
	if err := json.Unmarshal(body, &sw); err != nil {
		t.Fatalf("/openapi/v2 is not a Swagger document: %v", err)
	}
	if sw.Swagger != "2.0" {
		t.Errorf("swagger = %q, want 2.0", sw.Swagger)
	}
	pod, ok := sw.Definitions["io.k8s.api.core.v1.Pod"]
	if !ok || !hasGVK(pod.Extensions, schema.GroupVersionKind{Version: "v1", Kind: "Pod"}) {
		t.Fatalf("v2 definition io.k8s.api.core.v1.Pod missing or without its x-kubernetes-group-version-kind: %v", pod.Extensions)
	}
	fip, ok := sw.Definitions["dev.pilab.v1.FloatingIP"]
	if !ok || !hasGVK(fip.Extensions, PilabGroupVersion.WithKind("FloatingIP")) || !strings.Contains(fip.Description, "pool") {
		t.Fatalf("v2 definition dev.pilab.v1.FloatingIP missing, without GVK or without its Go doc: %+v", fip)
	}
	create := sw.Paths.Paths["/api/v1/namespaces/{namespace}/pods"].Post
	if create == nil || create.ID != "createCoreV1NamespacedPod" {
		t.Fatalf("v2 has no createCoreV1NamespacedPod POST on /api/v1/namespaces/{namespace}/pods: %+v", create)
	}
	found := false
	for _, p := range create.Parameters {
		found = found || (p.Name == "fieldValidation" && p.In == "query")
	}
	if !found {
		t.Errorf("v2 createCoreV1NamespacedPod has no fieldValidation query parameter")
	}
	// Strategic merge patch needs the patch strategy and merge key of lists.
	c := sw.Definitions["io.k8s.api.core.v1.PodSpec"].Properties["containers"]
	if c.Extensions["x-kubernetes-patch-strategy"] != "merge" || c.Extensions["x-kubernetes-patch-merge-key"] != "name" {
		t.Errorf("PodSpec.containers lacks x-kubernetes-patch-strategy/merge-key: %v", c.Extensions)
	}
}

// v3Docs reads /openapi/v3 and every document it names.
func v3Docs(t *testing.T, srv *httptest.Server) map[string]*spec3.OpenAPI {
	t.Helper()
	_, body := getOK(t, srv.URL+"/openapi/v3")
	var disc handler3.OpenAPIV3Discovery
	if err := json.Unmarshal(body, &disc); err != nil {
		t.Fatalf("/openapi/v3 is not a discovery document: %v: %.300s", err, body)
	}
	docs := map[string]*spec3.OpenAPI{}
	for gv, p := range disc.Paths {
		if !strings.HasPrefix(p.ServerRelativeURL, "/openapi/v3/"+gv+"?hash=") {
			t.Errorf("discovery names %s at %q, want /openapi/v3/%s?hash=...", gv, p.ServerRelativeURL, gv)
		}
		resp, body := getOK(t, srv.URL+p.ServerRelativeURL)
		if resp.Header.Get("Cache-Control") != "public, immutable" {
			t.Errorf("%s: Cache-Control %q, want public, immutable (a hash URL never changes)", p.ServerRelativeURL, resp.Header.Get("Cache-Control"))
		}
		doc := &spec3.OpenAPI{}
		if err := json.Unmarshal(body, doc); err != nil {
			t.Fatalf("%s is not an OpenAPI v3 document: %v", p.ServerRelativeURL, err)
		}
		docs[gv] = doc
	}
	return docs
}

func TestOpenAPIV3(t *testing.T) {
	srv := openAPIServer(t)
	docs := v3Docs(t, srv)
	for _, gv := range []string{"api/v1", "apis/apps/v1", "apis/pilab.dev/v1"} {
		if docs[gv] == nil {
			t.Fatalf("/openapi/v3 does not list %s: %v", gv, docs)
		}
	}
	core := docs["api/v1"]
	pod := core.Components.Schemas["io.k8s.api.core.v1.Pod"]
	if pod == nil || !hasGVK(pod.Extensions, schema.GroupVersionKind{Version: "v1", Kind: "Pod"}) {
		t.Fatalf("api/v1 has no io.k8s.api.core.v1.Pod with its x-kubernetes-group-version-kind")
	}
	// kubectl explain pod.spec.containers prints this.
	for _, gv := range []string{"api/v1", "apis/apps/v1"} {
		podSpec := docs[gv].Components.Schemas["io.k8s.api.core.v1.PodSpec"]
		if podSpec == nil || !strings.HasPrefix(podSpec.Properties["containers"].Description, "List of containers belonging to the pod.") {
			t.Errorf("%s: io.k8s.api.core.v1.PodSpec.containers lacks its description: %+v", gv, podSpec)
		}
	}
	fip := docs["apis/pilab.dev/v1"].Components.Schemas["dev.pilab.v1.FloatingIPSpec"]
	if fip == nil || !strings.Contains(fip.Properties["displayName"].Description, "pi name fip") {
		t.Errorf("apis/pilab.dev/v1: dev.pilab.v1.FloatingIPSpec.displayName lacks its Go doc: %+v", fip)
	}
	if docs["apis/pilab.dev/v1"].Components.Schemas["io.k8s.api.core.v1.Pod"] != nil {
		t.Errorf("apis/pilab.dev/v1 holds io.k8s.api.core.v1.Pod: a group version's document should hold only what its paths use")
	}

	// kubectl sends fieldValidation=Strict only if the PATCH of the kind takes it (cli-runtime's
	// QueryParamVerifierV3): for every kind that is patched.
	create := core.Paths.Paths["/api/v1/namespaces/{namespace}/pods"].Post
	if create == nil || !hasQueryParam(create, "fieldValidation") || !hasQueryParam(create, "dryRun") || !hasQueryParam(create, "fieldManager") {
		t.Fatalf("POST /api/v1/namespaces/{namespace}/pods lacks dryRun, fieldManager or fieldValidation: %+v", create)
	}
	if create.Extensions["x-kubernetes-action"] != "post" || !hasGVK(create.Extensions, schema.GroupVersionKind{Version: "v1", Kind: "Pod"}) {
		t.Errorf("POST pods: x-kubernetes-action %v, GVK %v", create.Extensions["x-kubernetes-action"], create.Extensions["x-kubernetes-group-version-kind"])
	}
	if create.RequestBody == nil || create.RequestBody.Content["application/json"].Schema.Ref.String() != "#/components/schemas/io.k8s.api.core.v1.Pod" {
		t.Errorf("POST pods: body is not a Pod: %+v", create.RequestBody)
	}
	patch := core.Paths.Paths["/api/v1/namespaces/{namespace}/pods/{name}"].Patch
	if patch == nil || !hasQueryParam(patch, "force") || !hasQueryParam(patch, "fieldValidation") || patch.RequestBody.Content["application/strategic-merge-patch+json"] == nil {
		t.Errorf("PATCH pods/{name}: no force/fieldValidation or no strategic merge patch body: %+v", patch)
	}
	list := core.Paths.Paths["/api/v1/namespaces/{namespace}/pods"].Get
	if list == nil || !hasQueryParam(list, "labelSelector") || !hasQueryParam(list, "watch") || list.OperationId != "listCoreV1NamespacedPod" {
		t.Errorf("GET pods: %+v", list)
	}

	// Every resource of the table, with every verb it serves and every subresource.
	for _, r := range resources {
		doc := docs[strings.TrimPrefix(openAPIRoot(r.gv), "/")]
		collection := openAPIRoot(r.gv) + "/" + r.name
		if r.namespaced {
			collection = openAPIRoot(r.gv) + "/namespaces/{namespace}/" + r.name
		}
		item := collection + "/{name}"
		op := func(path, method string) *spec3.Operation {
			p := doc.Paths.Paths[path]
			if p == nil {
				return nil
			}
			return map[string]*spec3.Operation{"GET": p.Get, "POST": p.Post, "PUT": p.Put, "PATCH": p.Patch, "DELETE": p.Delete}[method]
		}
		want := map[string][3]string{ // verb: path, method, x-kubernetes-action
			"list": {collection, "GET", "list"}, "create": {collection, "POST", "post"},
			"deletecollection": {collection, "DELETE", "deletecollection"}, "get": {item, "GET", "get"},
			"update": {item, "PUT", "put"}, "patch": {item, "PATCH", "patch"}, "delete": {item, "DELETE", "delete"},
			"watch": {openAPIRoot(r.gv) + "/watch/" + strings.TrimPrefix(item, openAPIRoot(r.gv)+"/"), "GET", "watch"},
		}
		for _, verb := range r.verbs() {
			w := want[verb]
			o := op(w[0], w[1])
			if o == nil {
				t.Errorf("%s: verb %s: no %s %s", r.name, verb, w[1], w[0])
				continue
			}
			if o.Extensions["x-kubernetes-action"] != w[2] || !hasGVK(o.Extensions, r.gv.WithKind(r.kind)) {
				t.Errorf("%s %s: x-kubernetes-action %v, GVK %v", w[1], w[0], o.Extensions["x-kubernetes-action"], o.Extensions["x-kubernetes-group-version-kind"])
			}
			if (verb == "update" || verb == "patch" || verb == "create") && !hasQueryParam(o, "fieldValidation") {
				t.Errorf("%s %s: no fieldValidation parameter", w[1], w[0])
			}
		}
		for _, sub := range r.subresources {
			p := doc.Paths.Paths[item+"/"+sub]
			if p == nil {
				t.Errorf("%s: no path %s/%s", r.name, item, sub)
				continue
			}
			g, v, kind, _ := r.subresource(sub)
			o, method := p.Get, "GET"
			if sub == "eviction" { // only ever created (kubectl drain)
				o, method = p.Post, "POST"
				// The path's one operation: kube-openapi's builder moves its parameters to the path.
				dryRun := false
				for _, x := range p.Parameters {
					dryRun = dryRun || (x.Name == "dryRun" && x.In == "query")
				}
				if o != nil && (o.Extensions["x-kubernetes-action"] != "post" || !(dryRun || hasQueryParam(o, "dryRun"))) {
					t.Errorf("%s/%s: POST action %v, or no dryRun parameter", r.name, sub, o.Extensions["x-kubernetes-action"])
				}
			}
			if o == nil || !hasGVK(o.Extensions, schema.GroupVersionKind{Group: g, Version: v, Kind: kind}) {
				t.Errorf("%s/%s: %s missing or GVK not %s/%s %s", r.name, sub, method, g, v, kind)
			}
			if (sub == "status" || sub == "scale") && (p.Patch == nil || !hasQueryParam(p.Patch, "fieldValidation")) {
				t.Errorf("%s/%s: no PATCH with fieldValidation", r.name, sub)
			}
			if (sub == "exec" || sub == "attach" || sub == "portforward") && (p.Post == nil || p.Post.Extensions["x-kubernetes-action"] != "connect") {
				t.Errorf("%s/%s: no connect POST", r.name, sub)
			}
		}
	}
	scale := docs["apis/apps/v1"].Paths.Paths["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
	if scale == nil || scale.Put == nil || scale.Put.RequestBody.Content["application/json"].Schema.Ref.String() != "#/components/schemas/io.k8s.api.autoscaling.v1.Scale" {
		t.Errorf("deployments/scale PUT does not read an autoscaling/v1 Scale")
	}
	log := core.Paths.Paths["/api/v1/namespaces/{namespace}/pods/{name}/log"]
	// kube-openapi's builder moves the parameters every operation of a path takes to the path.
	pathParam := func(p *spec3.Path, name string) bool {
		for _, x := range p.Parameters {
			if x.Name == name && x.In == "query" {
				return true
			}
		}
		return false
	}
	if log == nil || !pathParam(log, "follow") || !pathParam(log, "sinceSeconds") {
		t.Errorf("pods/log GET lacks follow and sinceSeconds")
	}
}

func openAPIRoot(gv schema.GroupVersion) string {
	if gv.Group == "" {
		return "/api/" + gv.Version
	}
	return "/apis/" + gv.Group + "/" + gv.Version
}

// client-go reads the documents as kubectl does: discovery's OpenAPIV3 client and openapi3.Root.
func TestOpenAPIClientGo(t *testing.T) {
	srv := openAPIServer(t)
	dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	paths, err := dc.OpenAPIV3().Paths()
	if err != nil {
		t.Fatalf("client-go OpenAPIV3().Paths(): %v", err)
	}
	for _, gv := range []string{"api/v1", "apis/apps/v1", "apis/pilab.dev/v1"} {
		if _, ok := paths[gv]; !ok {
			t.Errorf("client-go OpenAPIV3().Paths() lacks %s: %v", gv, paths)
		}
	}
	root := openapi3.NewRoot(dc.OpenAPIV3())
	for _, gv := range []schema.GroupVersion{{Version: "v1"}, {Group: "apps", Version: "v1"}, PilabGroupVersion} {
		doc, err := root.GVSpec(gv)
		if err != nil {
			t.Fatalf("openapi3 GVSpec(%s): %v", gv, err)
		}
		if len(doc.Paths.Paths) == 0 {
			t.Errorf("openapi3 GVSpec(%s) has no paths", gv)
		}
	}
	gvs, err := root.GroupVersions()
	if err != nil || len(gvs) < 3 {
		t.Errorf("openapi3 GroupVersions: %v, %v", gvs, err)
	}
}

// The documents are cached: an unchanged one answers 304 to its ETag; a stale hash is redirected to the
// current one; an unknown group version is a 404 Status.
func TestOpenAPICaching(t *testing.T) {
	srv := openAPIServer(t)
	resp, _ := getOK(t, srv.URL+"/openapi/v2")
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/openapi/v2", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("Etag"))
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusNotModified {
		t.Errorf("/openapi/v2 with its ETag: %s, want 304", r2.Status)
	}
	_, body := getOK(t, srv.URL+"/openapi/v2", "Accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
	if len(body) == 0 || body[0] == '{' {
		t.Errorf("/openapi/v2 as protobuf answered JSON or nothing")
	}

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r3, err := noRedirect.Get(srv.URL + "/openapi/v3/apis/apps/v1?hash=stale")
	if err != nil {
		t.Fatal(err)
	}
	r3.Body.Close()
	if r3.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(r3.Header.Get("Location"), "/openapi/v3/apis/apps/v1?hash=") {
		t.Errorf("stale hash: %s to %q, want a 301 to the current hash", r3.Status, r3.Header.Get("Location"))
	}
	r4, err := http.Get(srv.URL + "/openapi/v3/apis/nope.example/v1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r4.Body)
	r4.Body.Close()
	if r4.StatusCode != http.StatusNotFound || !strings.Contains(string(b), `"kind":"Status"`) {
		t.Errorf("unknown group version: %s %s, want a 404 Status", r4.Status, b)
	}
}
