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
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
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
	// Admit defaults, checks and allocates for an object about to be created (old == nil) or replaced.
	Admit(ctx context.Context, account string, o, old metav1.Object) error
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
}

// Server serves the API.
type Server struct {
	Store   *store.Store
	Backend Backend
	hs      *http.Server
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
	mux.HandleFunc("GET /v1/watch/{plural}", s.watch)
	mux.HandleFunc("POST /v1/pods/{name}/exec", s.exec)
	mux.HandleFunc("GET /v1/pods/{name}/log", s.logs)
	mux.HandleFunc("GET /v1/{plural}", s.list)
	mux.HandleFunc("GET /v1/{plural}/{name}", s.get)
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
}

// WriteError answers with err, choosing the status code from its kind.
func WriteError(w http.ResponseWriter, err error) {
	code, reason := http.StatusInternalServerError, "InternalError"
	var inv *InvalidError
	switch {
	case errors.Is(err, store.ErrNotFound):
		code, reason = http.StatusNotFound, "NotFound"
	case errors.Is(err, store.ErrAlreadyExists):
		code, reason = http.StatusConflict, "AlreadyExists"
	case errors.Is(err, store.ErrConflict):
		code, reason = http.StatusConflict, "Conflict"
	case errors.As(err, &inv):
		code, reason = http.StatusUnprocessableEntity, "Invalid"
	}
	WriteJSON(w, code, Status{Error: err.Error(), Reason: reason})
}

// InvalidError is a request the user must change; the daemon is fine.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

// Invalid makes an InvalidError.
func Invalid(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

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

// checkAccount makes sure a namespaced request names an existing account.
func (s *Server) checkAccount(w http.ResponseWriter, r *http.Request, k api.Kind) (string, bool) {
	account := Account(r)
	if !k.Namespaced || r.URL.Query().Get("allAccounts") == "true" {
		return account, true
	}
	acct, err := s.Store.Get(kindAccount, "", account)
	if err != nil {
		WriteError(w, fmt.Errorf("account %q not found; create it with `pi account create %s`", account, account))
		return "", false
	}
	if acct.GetDeletionTimestamp() != nil && r.Method != http.MethodGet {
		WriteError(w, Invalid("account %q is being deleted", account))
		return "", false
	}
	return account, true
}

var kindAccount, _ = api.LookupKind("Account")

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

func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, k api.Kind) (metav1.Object, bool) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		WriteError(w, err)
		return nil, false
	}
	o := k.New()
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(o); err != nil {
		WriteError(w, Invalid("%s: %v", k.Singular, err))
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
	if o.GetName() == "" && o.GetGenerateName() != "" {
		o.SetName(o.GetGenerateName() + randSuffix())
	}
	if err := validate.Object(o); err != nil {
		WriteError(w, Invalid("%s %q is invalid: %v", k.Name, o.GetName(), err))
		return
	}
	if k.Namespaced {
		api.SetAccount(o, account)
	}
	// A client may resend an object it read; identity is the server's to give.
	o.SetUID("")
	o.SetResourceVersion("")
	o.SetDeletionTimestamp(nil)
	if _, err := s.Store.Get(k, account, o.GetName()); err == nil {
		WriteError(w, &store.Error{Err: store.ErrAlreadyExists, Kind: k, Name: o.GetName()})
		return
	}
	if err := s.Backend.Admit(r.Context(), account, o, nil); err != nil {
		WriteError(w, err)
		return
	}
	// A dry run answers whether the create would succeed, so a client can check a set of documents whole.
	if r.URL.Query().Get("dryRun") == "All" {
		WriteJSON(w, http.StatusOK, o)
		return
	}
	o.SetGeneration(1)
	if err := s.Store.Create(o); err != nil {
		WriteError(w, err)
		return
	}
	WriteJSON(w, http.StatusCreated, o)
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
	if k.Namespaced {
		api.SetAccount(o, account)
	}
	for {
		old, err := s.Store.Get(k, account, o.GetName())
		if err != nil {
			WriteError(w, err)
			return
		}
		if old.GetDeletionTimestamp() != nil {
			WriteError(w, Invalid("%s %q is being deleted", k.Singular, o.GetName()))
			return
		}
		if err := s.Backend.Admit(r.Context(), account, o, old); err != nil {
			WriteError(w, err)
			return
		}
		// metadata.generation counts changes of the desired state, as in Kubernetes.
		o.SetGeneration(old.GetGeneration())
		if specOf(o) != specOf(old) {
			o.SetGeneration(old.GetGeneration() + 1)
		}
		rv := o.GetResourceVersion()
		if rv == "" {
			o.SetResourceVersion(old.GetResourceVersion())
		}
		err = s.Store.Update(o)
		if errors.Is(err, store.ErrConflict) && rv == "" {
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

// specOf is the desired state of an object, to tell a real change from a re-apply.
func specOf(o metav1.Object) string {
	data, _ := json.Marshal(o)
	var m map[string]json.RawMessage
	json.Unmarshal(data, &m)
	return string(m["spec"])
}
