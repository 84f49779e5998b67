// Package server is a lab's API: JSON over HTTP on a unix socket. Objects are read and written through the
// store; everything that touches containers, images or money goes through a Backend.
//
// Paths (account in the query, `?account=alice`, default "default"):
//
//	GET    /v1/{plural}                 list (labelSelector=, allAccounts=true)
//	GET    /v1/{plural}/{name}          get
//	POST   /v1/{plural}                 create (body: object; dryRun=All checks without storing)
//	PUT    /v1/{plural}/{name}          replace (apply); status is kept
//	DELETE /v1/{plural}/{name}          delete (graceful kinds get a deletionTimestamp; controllers finish)
//	GET    /v1/watch/{plural}           JSON lines of api.WatchEvent, starting with the current objects
//	POST   /v1/pods/{name}/exec         hijacked, lab/stream frames
//	GET    /v1/pods/{name}/log          container output
//	*      /x/...                    Backend extras (images, fips, bill, info)
package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/pilab/pi/lab/registry"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/lab/stream"
	"github.com/pilab/pi/lab/validate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// ExecRequest is what a client asks to run in a container.
type ExecRequest struct {
	Account, Pod, Container string
	Command                 []string
	TTY, Stdin              bool
}

// LogRequest asks for a container's output.
type LogRequest struct {
	Account, Pod, Container string
	Follow, Previous        bool
	Tail                    int
}

// Backend is what the API needs from the rest of the daemon.
type Backend interface {
	// Delete starts deleting an object; it may refuse (a FIP still in use) or finish at once.
	Delete(ctx context.Context, account string, k api.Kind, name string, o metav1.Object, opts DeleteOptions) error
	Exec(ctx context.Context, r ExecRequest, stdin io.Reader, stdout, stderr io.Writer, resize <-chan [2]uint16) (int, error)
	Logs(ctx context.Context, r LogRequest, w io.Writer) error
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
	kube := s.KubeHandler() // the Kubernetes API (kube.go); the /v1 and /x dialect below stays for pi and the TUI
	for _, p := range []string{"/api", "/api/", "/apis", "/apis/", "/version", "/healthz", "/readyz", "/livez", "/openapi/"} {
		mux.Handle(p, kube)
	}
	mux.HandleFunc("GET /v1/watch/{plural}", s.watch)
	mux.HandleFunc("POST /v1/pods/{name}/exec", s.exec)
	mux.HandleFunc("GET /v1/pods/{name}/log", s.logs)
	mux.HandleFunc("GET /v1/{plural}", s.list)
	mux.HandleFunc("GET /v1/{plural}/{name}", s.get)
	mux.HandleFunc("POST /v1/batch", s.createSet)
	mux.HandleFunc("POST /v1/{plural}", s.create)
	mux.HandleFunc("PUT /v1/{plural}/{name}", s.replace)
	mux.HandleFunc("DELETE /v1/{plural}/{name}", s.delete)
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

func (s *Server) kind(w http.ResponseWriter, r *http.Request) (api.Kind, bool) {
	k, ok := api.LookupKind(r.PathValue("plural"))
	if !ok {
		WriteJSON(w, http.StatusNotFound, Status{Error: fmt.Sprintf("the server doesn't have a resource type %q", r.PathValue("plural")), Reason: "NotFound"})
	}
	return k, ok
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

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok {
		return
	}
	account, ok := s.checkAccount(w, r, k)
	if !ok {
		return
	}
	if r.URL.Query().Get("allAccounts") == "true" {
		account = ""
	}
	sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		WriteError(w, Invalid("bad label selector: %v", err))
		return
	}
	objs, err := s.Store.List(k, account)
	if err != nil {
		WriteError(w, err)
		return
	}
	items := []metav1.Object{}
	for _, o := range objs {
		if sel.Matches(labels.Set(o.GetLabels())) {
			items = append(items, o)
		}
	}
	WriteJSON(w, http.StatusOK, map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok {
		return
	}
	account, ok := s.checkAccount(w, r, k)
	if !ok {
		return
	}
	o, err := s.Store.Get(k, account, r.PathValue("name"))
	if err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, o)
}

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

func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, k api.Kind) (metav1.Object, bool) {
	data, ok := readBody(w, r)
	if !ok {
		return nil, false
	}
	o, err := decodeStrict(k, data)
	if err != nil {
		WriteError(w, err)
		return nil, false
	}
	return o, true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok {
		return
	}
	account, ok := s.checkAccount(w, r, k)
	if !ok {
		return
	}
	o, ok := s.decodeBody(w, r, k)
	if !ok {
		return
	}
	if err := checkNew(k, o); err != nil {
		WriteError(w, err)
		return
	}
	// A dry run answers whether the create would succeed.
	dryRun := r.URL.Query().Get("dryRun") == "All"
	if err := s.Registry.Create(r.Context(), account, o, dryRun); err != nil {
		WriteError(w, err)
		return
	}
	if dryRun {
		WriteJSON(w, http.StatusOK, o)
		return
	}
	WriteJSON(w, http.StatusCreated, o)
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
		if !ok {
			set.Items = append(set.Items, registry.ItemError{Index: i, Err: Invalid("no kind %q is served by the lab", tm.Kind)})
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

func (s *Server) replace(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok {
		return
	}
	account, ok := s.checkAccount(w, r, k)
	if !ok {
		return
	}
	o, ok := s.decodeBody(w, r, k)
	if !ok {
		return
	}
	if o.GetName() != r.PathValue("name") {
		WriteError(w, Invalid("the name of the object (%q) does not match the name in the path (%q)", o.GetName(), r.PathValue("name")))
		return
	}
	if err := validate.Object(o); err != nil {
		WriteError(w, Invalid("%s %q is invalid: %v", k.Name, o.GetName(), err))
		return
	}
	// Without a resourceVersion a replace is "apply my spec": a controller's status write in between is
	// no reason to fail it, so it is tried again on the new version.
	unconditional := o.GetResourceVersion() == ""
	for {
		err := s.Registry.Update(r.Context(), account, o)
		if errors.Is(err, store.ErrConflict) && unconditional {
			o.SetResourceVersion("")
			continue
		}
		if err != nil {
			WriteError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, o)
		return
	}
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok {
		return
	}
	account, ok := s.checkAccount(w, r, k)
	if !ok {
		return
	}
	o, err := s.Store.Get(k, account, r.PathValue("name"))
	if err != nil {
		WriteError(w, err)
		return
	}
	opts := DeleteOptions{Cascade: r.URL.Query().Get("cascade") == "true"}
	if err := s.Backend.Delete(r.Context(), account, k, o.GetName(), o, opts); err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, o)
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	k, ok := s.kind(w, r)
	if !ok {
		return
	}
	account, ok := s.checkAccount(w, r, k)
	if !ok {
		return
	}
	if r.URL.Query().Get("allAccounts") == "true" || !k.Namespaced {
		account = ""
	}
	sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		WriteError(w, Invalid("bad label selector: %v", err))
		return
	}
	// Subscribe before listing so no change between the two is lost.
	events := s.Store.Watch(r.Context(), k.Name, account)
	objs, err := s.Store.List(k, account)
	if err != nil {
		WriteError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	for _, o := range objs {
		if !sel.Matches(labels.Set(o.GetLabels())) {
			continue
		}
		data, _ := json.Marshal(o)
		enc.Encode(api.WatchEvent{Type: api.Added, Kind: k.Name, Account: api.AccountOf(o), Object: data})
	}
	if flusher != nil {
		flusher.Flush()
	}
	for ev := range events {
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		json.Unmarshal(ev.Object, &meta)
		if !sel.Matches(labels.Set(meta.Metadata.Labels)) {
			continue
		}
		if err := enc.Encode(ev); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func (s *Server) podExists(w http.ResponseWriter, r *http.Request) (string, bool) {
	k, _ := api.LookupKind("pods")
	account, ok := s.checkAccount(w, r, k)
	if !ok {
		return "", false
	}
	if _, err := s.Store.Get(k, account, r.PathValue("name")); err != nil {
		WriteError(w, err)
		return "", false
	}
	return account, true
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	account, ok := s.podExists(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	tail := -1
	if t := q.Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil {
			WriteError(w, Invalid("tail must be a number, not %q", t))
			return
		}
		tail = n
	}
	req := LogRequest{Account: account, Pod: r.PathValue("name"), Container: q.Get("container"),
		Follow: q.Get("follow") == "true", Previous: q.Get("previous") == "true", Tail: tail}
	// Headers go out only with the first byte of output, so a failure before it is still an error status.
	fw := &flushWriter{w: w}
	if err := s.Backend.Logs(r.Context(), req, fw); err != nil && !fw.started {
		WriteError(w, err)
	}
}

type flushWriter struct {
	w       http.ResponseWriter
	started bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	if !f.started {
		f.started = true
		f.w.Header().Set("Content-Type", "text/plain")
		f.w.WriteHeader(http.StatusOK)
	}
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	account, ok := s.podExists(w, r)
	if !ok {
		return
	}
	var req ExecRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		WriteError(w, Invalid("exec request: %v", err))
		return
	}
	req.Account, req.Pod = account, r.PathValue("name")
	if len(req.Command) == 0 {
		WriteError(w, Invalid("you must specify at least one command for the container"))
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		WriteError(w, errors.New("exec: connection cannot be hijacked"))
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: pi-stream\r\nConnection: Upgrade\r\n\r\n")
	buf.Flush()
	sc := stream.New(bufio.NewReader(buf), conn)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdinR *io.PipeReader
	var stdinW *io.PipeWriter
	if req.Stdin {
		stdinR, stdinW = io.Pipe()
	}
	resize := make(chan [2]uint16, 4)
	go func() {
		// The client going away ends the session.
		defer cancel()
		for {
			t, p, err := sc.Read()
			if err != nil {
				if stdinW != nil {
					stdinW.Close()
				}
				return
			}
			switch t {
			case stream.Stdin:
				if stdinW != nil {
					stdinW.Write(p)
				}
			case stream.StdinEOF:
				if stdinW != nil {
					stdinW.Close()
				}
			case stream.Resize:
				if wd, ht, err := stream.DecodeSize(p); err == nil {
					select {
					case resize <- [2]uint16{wd, ht}:
					default:
					}
				}
			}
		}
	}()
	var stdin io.Reader
	if stdinR != nil {
		stdin = stdinR
	}
	code, err := s.Backend.Exec(ctx, req, stdin, sc.Writer(stream.Stdout), sc.Writer(stream.Stderr), resize)
	if err != nil {
		sc.Write(stream.Error, []byte(err.Error()))
		return
	}
	sc.Write(stream.Exit, stream.EncodeExit(code))
}
