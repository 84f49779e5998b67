package server

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/openapi"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The OpenAPI documents are the same for every lab and every request: built once, on the first request
// for one (about 50 ms; each document is then encoded once, on its first request, and cached by the handlers).
var (
	openAPIOnce    sync.Once
	openAPIService *openapi.Service
	openAPIErr     error
)

func openAPIDocs() (*openapi.Service, error) {
	openAPIOnce.Do(func() {
		openAPIService, openAPIErr = openapi.New(Scheme, openAPIResources(), KubeVersion)
	})
	return openAPIService, openAPIErr
}

// openAPIResources describes the resources table to lab/openapi.
func openAPIResources() []openapi.Resource {
	var out []openapi.Resource
	for _, r := range resources {
		obj, err := Scheme.New(r.gv.WithKind(r.kind))
		if err != nil {
			panic(fmt.Sprintf("server: resource %s has no kind %s in the Scheme: %v", r.name, r.kind, err))
		}
		var sample, list any = obj, r.newList()
		// pilab's kinds are wrapped here to be runtime.Objects; their definitions are of lab/api's types.
		switch obj.(type) {
		case *FloatingIPObject:
			sample, list = &api.FloatingIP{}, &openapi.FloatingIPList{}
		case *AccountObject:
			sample, list = &api.Account{}, &openapi.AccountList{}
		}
		o := openapi.Resource{GroupVersion: r.gv, Name: r.name, Kind: r.kind, Namespaced: r.namespaced,
			Verbs: r.verbs(), Object: sample, List: list}
		for _, sub := range r.subresources {
			g, v, kind, verbs := r.subresource(sub)
			s := openapi.Subresource{Name: sub, Kind: schema.GroupVersionKind{Group: g, Version: v, Kind: kind}, Verbs: verbs}
			switch sub {
			case "status":
				s.Object = sample
			case "scale":
				s.Object = &autoscalingv1.Scale{}
			case "eviction":
				s.Object = &policyv1.Eviction{}
			}
			o.Subresources = append(o.Subresources, s)
		}
		out = append(out, o)
	}
	return out
}

// serveOpenAPI answers /openapi/v2 and /openapi/v3/... (kubectl explain, and kubectl's check that the
// server takes fieldValidation before it sends Strict).
func (k *kubeAPI) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	docs, err := openAPIDocs()
	if err != nil {
		k.writeStatus(w, r, apierrors.NewInternalError(err))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(schema.GroupResource{}, r.Method))
		return
	}
	if !docs.Handles(r.URL.Path) {
		k.writeStatus(w, r, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
		return
	}
	docs.ServeHTTP(w, r)
}
