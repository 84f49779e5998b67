package server

import (
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// serveWrite serves create, update, patch and delete.
func (k *kubeAPI) serveWrite(w http.ResponseWriter, r *http.Request, req *readRequest) {
	k.writeStatus(w, r, apierrors.NewMethodNotSupported(req.res.groupResource(), strings.ToLower(r.Method)))
}
