// Package server is a lab's API on the daemon's unix socket and its HTTPS listener: the Kubernetes API
// (kube*.go) for every object, read and written through the registry and the store, and pilab's own paths
// for what Kubernetes has no resource for; everything that touches containers, images or money goes through
// a Backend.
//
// pilab's own paths (account in the query, `?account=alice`, default "default"; on the listener an
// account's token may use some of them, for itself only: auth.go):
//
//	POST   /x/batch                     a manifest's objects as one set: all created, or none (dryRun=All)
//	*      /x/...                       Backend extras (images, fips, bill, info, trace, network, rules)
//	*      /x/accounts/{name}/tokens    an account's tokens (tokens.go)
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/registry"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/lab/validate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Backend is what the API needs from the rest of the daemon.
type Backend interface {
	// Delete starts deleting an object; it may refuse (a FIP still in use) or finish at once.
	Delete(ctx context.Context, account string, k api.Kind, name string, o metav1.Object, opts DeleteOptions) error
	// Extra serves /x/...: images, fips, bill, info.
	Extra() http.Handler
}

// DeleteOptions are a delete request's options.
type DeleteOptions struct {
	// Cascade deletes an account together with everything in it.
	Cascade bool
	// GracePeriodSeconds is how long a pod's containers get to stop; nil: the pod's own.
	GracePeriodSeconds *int64
}

// Server serves the API.
type Server struct {
	Store *store.Store
	// Registry admits and stores every create and replace.
	Registry *registry.Registry
	Backend  Backend
	// Tokens are the accounts' bearer tokens (tokens.go); nil serves none.
	Tokens *Tokens
	hs     *http.Server
}

// Listen serves on a unix socket at path, replacing a stale socket file, readable only by root (0600).
func (s *Server) Listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s answers already: a pi daemon for this lab is running (stop it with `pi down`)", path)
	}
	os.Remove(path)
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	os.Chmod(path, 0o600)
	return l, nil
}

// Serve answers requests on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	s.hs = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	err := s.hs.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *Server) Shutdown(ctx context.Context) error {
	if s.hs == nil {
		return nil
	}
	return s.hs.Shutdown(ctx)
}

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/x/", http.StripPrefix("/x", s.Backend.Extra()))
	mux.HandleFunc("/x/accounts/{name}/tokens", s.serveTokens)
	// A manifest's documents as one set (pi create -f): the Kubernetes API creates one object a request.
	mux.HandleFunc("POST /x/batch", s.createSet)
	kube := s.KubeHandler() // the Kubernetes API (kube.go): every object read and write
	for _, p := range []string{"/api", "/api/", "/apis", "/apis/", "/version", "/healthz", "/readyz", "/livez", "/openapi/"} {
		mux.Handle(p, kube)
	}
	return mux
}

// Status is an error answer.
type Status struct {
	Error string `json:"error"`
	// Reason is NotFound, AlreadyExists, Conflict, Invalid or InternalError, as in Kubernetes.
	Reason string `json:"reason"`
	// Items says which objects of a set (POST /v1/batch) were refused and why; none of the set was created.
	Items []ItemStatus `json:"items,omitempty"`
}

// ItemStatus is one refused object of a set.
type ItemStatus struct {
	Index  int    `json:"index"`
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// statusOf chooses an error's HTTP code and Kubernetes reason.
func statusOf(err error) (int, string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "NotFound"
	case errors.Is(err, store.ErrAlreadyExists):
		return http.StatusConflict, "AlreadyExists"
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict, "Conflict"
	case registry.IsInvalid(err):
		return http.StatusUnprocessableEntity, "Invalid"
	}
	return http.StatusInternalServerError, "InternalError"
}

// WriteError answers with err, choosing the status code from its kind.
func WriteError(w http.ResponseWriter, err error) {
	var set *registry.SetError
	if errors.As(err, &set) {
		st := Status{Error: "the set was refused; nothing was created", Reason: "Invalid"}
		for _, it := range set.Items {
			_, reason := statusOf(it.Err)
			st.Items = append(st.Items, ItemStatus{Index: it.Index, Error: it.Err.Error(), Reason: reason})
		}
		WriteJSON(w, http.StatusUnprocessableEntity, st)
		return
	}
	code, reason := statusOf(err)
	WriteJSON(w, code, Status{Error: err.Error(), Reason: reason})
}

// InvalidError is a request the user must change; the daemon is fine.
type InvalidError = registry.InvalidError

// Invalid makes an InvalidError.
func Invalid(format string, args ...any) error { return registry.Invalid(format, args...) }

func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// Account reads the account a request is about.
func Account(r *http.Request) string {
	if a := r.URL.Query().Get("account"); a != "" {
		return a
	}
	return api.DefaultAccount
}

// checkAccount makes sure a namespaced request names an existing account. Only reads may ask for every
// account at once (allAccounts=true); a write always goes into one account that exists.
func (s *Server) checkAccount(w http.ResponseWriter, r *http.Request, k api.Kind) (string, bool) {
	account := Account(r)
	if !k.Namespaced || (r.Method == http.MethodGet && r.URL.Query().Get("allAccounts") == "true") {
		return account, true
	}
	acct, err := s.Store.Get(kindAccount, "", account)
	if store.IsNotFound(err) {
		WriteJSON(w, http.StatusNotFound, Status{Error: fmt.Sprintf("account %q not found; create it with `pi account create %s`", account, account), Reason: "NotFound"})
		return "", false
	}
	if err != nil {
		WriteError(w, err)
		return "", false
	}
	if acct.GetDeletionTimestamp() != nil && r.Method != http.MethodGet {
		WriteError(w, Invalid("account %q is being deleted", account))
		return "", false
	}
	return account, true
}

var (
	kindAccount, _ = api.LookupKind("Account")
	kindPod, _     = api.LookupKind("Pod")
)

// maxBody is the largest request body the API reads: a manifest set of a few MiB.
const maxBody = 4 << 20

// readBody reads a request's body, refusing one larger than maxBody with a message that says so.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		WriteError(w, Invalid("read the request body: %v", err))
		return nil, false
	}
	if len(data) > maxBody {
		WriteJSON(w, http.StatusRequestEntityTooLarge, Status{Error: fmt.Sprintf("the request body is larger than %d MiB; split the manifest into smaller files", maxBody>>20), Reason: "RequestEntityTooLarge"})
		return nil, false
	}
	return data, true
}

// DecodeJSON decodes a small JSON request body into v strictly: unknown fields, trailing data and a
// body larger than maxBody are errors, so a malformed request changes nothing.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("the body is not the JSON object expected: %v", err)
	}
	if dec.More() {
		return errors.New("the body has data after its JSON object")
	}
	return nil
}

// decodeStrict decodes one object of kind k, refusing unknown fields and another kind.
func decodeStrict(k api.Kind, data []byte) (metav1.Object, error) {
	var tm metav1.TypeMeta
	if json.Unmarshal(data, &tm) == nil && tm.Kind != "" && tm.Kind != k.Name {
		return nil, Invalid("%s: the body is a %s, not a %s", k.Singular, tm.Kind, k.Name)
	}
	o := k.New()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(o); err != nil {
		return nil, Invalid("%s: the body is not a valid %s object: %v", k.Singular, k.Name, err)
	}
	return o, nil
}

// checkNew names an object from generateName and validates it.
func checkNew(k api.Kind, o metav1.Object) error {
	if o.GetName() == "" && o.GetGenerateName() != "" {
		o.SetName(o.GetGenerateName() + randSuffix())
	}
	if err := validate.Object(o); err != nil {
		return Invalid("%s %q is invalid: %v", k.Name, o.GetName(), err)
	}
	return nil
}

// createSet creates a set of objects of any kinds (the documents of one manifest) as a whole: every one is
// admitted seeing the ones before it, and all are stored, or none. Body: {"items": [object, ...]}, each
// with its apiVersion and kind. dryRun=All checks the set without storing it.
func (s *Server) createSet(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Items []json.RawMessage `json:"items"`
	}
	data, ok := readBody(w, r)
	if !ok {
		return
	}
	if err := json.Unmarshal(data, &body); err != nil {
		WriteError(w, Invalid("set: the body is not a JSON object with items: %v", err))
		return
	}
	var objs []metav1.Object
	var set registry.SetError
	for i, raw := range body.Items {
		var tm metav1.TypeMeta
		if err := json.Unmarshal(raw, &tm); err != nil || tm.Kind == "" {
			set.Items = append(set.Items, registry.ItemError{Index: i, Err: Invalid("not an object with apiVersion and kind")})
			continue
		}
		k, ok := api.LookupKind(tm.Kind)
		if !ok || !k.FromManifest {
			set.Items = append(set.Items, registry.ItemError{Index: i, Err: Invalid("no kind %q is created from manifests by the lab", tm.Kind)})
			continue
		}
		o, err := decodeStrict(k, raw)
		if err == nil {
			err = checkNew(k, o)
		}
		if err != nil {
			set.Items = append(set.Items, registry.ItemError{Index: i, Err: err})
			continue
		}
		objs = append(objs, o)
	}
	if len(set.Items) > 0 {
		WriteError(w, &set)
		return
	}
	account, ok := s.checkAccount(w, r, kindPod)
	if !ok {
		return
	}
	dryRun := r.URL.Query().Get("dryRun") == "All"
	if err := s.Registry.CreateSet(r.Context(), account, objs, dryRun); err != nil {
		WriteError(w, err)
		return
	}
	code := http.StatusCreated
	if dryRun {
		code = http.StatusOK
	}
	WriteJSON(w, code, map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
}
