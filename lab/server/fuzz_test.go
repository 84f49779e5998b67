package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fuzzPaths are the Kubernetes API paths the fuzzer picks from: every served kind, collections and
// objects, subresources, another namespace, an unknown resource.
var fuzzPaths = []string{
	"/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/pods/p", "/api/v1/namespaces/default/pods/p/status",
	"/api/v1/namespaces/default/services", "/api/v1/namespaces/default/services/s", "/api/v1/namespaces/default/services/s/status",
	"/api/v1/namespaces/default/endpoints/s", "/api/v1/namespaces/default/events", "/api/v1/namespaces", "/api/v1/namespaces/dev",
	"/apis/apps/v1/namespaces/default/deployments", "/apis/apps/v1/namespaces/default/deployments/d",
	"/apis/apps/v1/namespaces/default/deployments/d/scale", "/apis/apps/v1/namespaces/default/replicasets/r/status",
	"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", "/apis/pilab.dev/v1/namespaces/default/floatingips/f",
	"/apis/pilab.dev/v1/accounts", "/apis/pilab.dev/v1/accounts/alice", "/api/v1/namespaces/kube-system/pods",
	"/api/v1/namespaces/default/widgets", "/apis/apps/v1/deployments",
}

var fuzzMethods = []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodGet}

var fuzzContentTypes = []string{"application/json", "application/yaml", "application/vnd.kubernetes.protobuf",
	"application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json",
	"application/apply-patch+yaml", "text/plain", ""}

var fuzzQueries = []string{"", "?dryRun=All", "?fieldValidation=Strict", "?fieldManager=f&force=true",
	"?gracePeriodSeconds=0&propagationPolicy=Foreground", "?labelSelector=a%3D%3D", "?fieldSelector=status.phase%3DRunning"}

// FuzzKubeRequest sends the Kubernetes API handler any request a client could make — a method, path,
// query and content type from the served ones, and any body — through decoding, validation, admission and
// the store. It must never panic; every refusal is a metav1.Status with the response's code; and a
// refused request changes nothing (the store's resourceVersion stays). The seeds run as a test; CI runs
// it with -fuzz for a bounded time.
func FuzzKubeRequest(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint8(0), uint8(0), []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}`))
	f.Add(uint8(3), uint8(0), uint8(0), uint8(1), []byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":80}]}}`))
	f.Add(uint8(1), uint8(2), uint8(5), uint8(0), []byte(`[{"op":"replace","path":"/metadata/labels","value":{"a":"b"}}]`))
	f.Add(uint8(11), uint8(2), uint8(6), uint8(3), []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 2\n"))
	f.Add(uint8(12), uint8(1), uint8(0), uint8(0), []byte(`{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"d"},"spec":{"replicas":-1}}`))
	f.Add(uint8(1), uint8(3), uint8(0), uint8(4), []byte(`{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid":"x"}}`))
	f.Add(uint8(0), uint8(0), uint8(2), uint8(0), []byte("k8s\x00\n\x0a\x02v1\x12\x03Pod"))
	f.Add(uint8(9), uint8(0), uint8(0), uint8(0), []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"dev"}}`))
	st, srv := kubeWriteLab(f)
	h := srv.Config.Handler
	f.Fuzz(func(t *testing.T, pi, mi, ci, qi uint8, body []byte) {
		path := fuzzPaths[int(pi)%len(fuzzPaths)]
		method := fuzzMethods[int(mi)%len(fuzzMethods)]
		ct := fuzzContentTypes[int(ci)%len(fuzzContentTypes)]
		q := fuzzQueries[int(qi)%len(fuzzQueries)]
		if method == http.MethodGet && strings.Contains(q, "watch") {
			return // a watch does not end by itself
		}
		req := httptest.NewRequest(method, path+q, bytes.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		before, err := st.ResourceVersion()
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code < 400 {
			return
		}
		var s metav1.Status
		if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil || s.Kind != "Status" || int(s.Code) != w.Code || s.Message == "" {
			t.Fatalf("%s %s%s (%s): %d answered with %q, want a metav1.Status with code %d and a message", method, path, q, ct, w.Code, w.Body.String(), w.Code)
		}
		if after, _ := st.ResourceVersion(); after != before {
			t.Fatalf("%s %s%s (%s) was refused (%d %s) but the store changed: resourceVersion %d -> %d",
				method, path, q, ct, w.Code, s.Message, before, after)
		}
	})
}
