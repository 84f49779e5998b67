package server

import (
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// serveOpenAPI answers /openapi/v2 and /openapi/v3/...: not served yet, so kubectl falls back to its
// client-side defaults (kubectl explain needs it).
func (k *kubeAPI) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	k.writeStatus(w, r, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
}
