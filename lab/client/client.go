// Package client talks to a lab through its Kubernetes API; the CLI, the terminal UI and the scenario runner
// use it. It reaches the lab by the daemon's unix socket (root's admin door, acting for an account by
// impersonation, as `kubectl --as` does) or by a kubeconfig (the HTTPS listener: a learner's token acts for
// its own account, the admin's certificate for any).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/server"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	spdy "k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport"
	utilexec "k8s.io/client-go/util/exec"
)

// Client is a connection to one lab, acting for one account.
type Client struct {
	// Socket is the daemon's unix socket, or "" for a client of a kubeconfig.
	Socket string
	// Server is the API's URL for a client of a kubeconfig.
	Server string
	// Account is the account the client acts for.
	Account string
	// impersonate: requests carry Impersonate-User (the socket; an admin kubeconfig with --account).
	impersonate bool
	hc          *http.Client
	base        string
	cfg         *rest.Config // a kubeconfig client's, for streams
}

// New returns a client of the daemon at socket, acting for account ("" is "default").
func New(socket, account string) *Client {
	if account == "" {
		account = api.DefaultAccount
	}
	c := &Client{Socket: socket, Account: account, impersonate: true, base: "http://pi"}
	c.hc = &http.Client{Transport: &http.Transport{DialContext: c.dialSocket}}
	return c
}

// AdminUser is the user of the admin's kubeconfig (`pi kubeconfig`).
const AdminUser = "pi-admin"

// FromKubeconfig returns a client of the lab a kubeconfig names (path "": KUBECONFIG or ~/.kube/config;
// kubeContext "": its current context). A learner's kubeconfig acts for its own account, whose name is the
// context's user; account, if set, must be that name. The admin's kubeconfig acts for account (default
// "default") by impersonation.
func FromKubeconfig(path, kubeContext, account string) (*Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("read the kubeconfig: %w", err)
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("the kubeconfig: %w (pi kubeconfig --account NAME makes one)", err)
	}
	name := kubeContext
	if name == "" {
		name = raw.CurrentContext
	}
	user := ""
	if ctx := raw.Contexts[name]; ctx != nil {
		user = ctx.AuthInfo
	}
	c := &Client{Server: cfg.Host, Account: account, cfg: cfg}
	switch {
	case user == AdminUser || account != "" && account != user:
		// The admin's certificate acts for any account; anyone else asking for another account is refused
		// by the lab (403), as kubectl --as is.
		c.impersonate = true
		if c.Account == "" {
			c.Account = api.DefaultAccount
		}
	default:
		c.Account = user
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("the kubeconfig's credentials: %w", err)
	}
	c.hc, c.base = hc, strings.TrimSuffix(cfg.Host, "/")
	return c, nil
}

// ForAccount is a client of the same lab acting for another account (the admin's: by impersonation).
func (c *Client) ForAccount(account string) *Client {
	n := *c
	n.Account, n.impersonate = account, true
	if !c.impersonate && account == c.Account {
		n.impersonate = false
	}
	return &n
}

// Where names the lab the client reaches, for messages.
func (c *Client) Where() string {
	if c.Socket != "" {
		return c.Socket
	}
	return c.Server
}

func (c *Client) dialSocket(ctx context.Context, _, _ string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, &DaemonDownError{Socket: c.Socket}
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("cannot reach the pi daemon at %s: permission denied (pi runs as root)", c.Socket)
		}
		return nil, err
	}
	return conn, nil
}

// DaemonDownError says the daemon does not answer.
type DaemonDownError struct{ Socket string }

func (e *DaemonDownError) Error() string {
	return fmt.Sprintf("the pi daemon is not running (no answer on %s); start it with `pi up`", e.Socket)
}

// APIError is an error answer of the lab.
type APIError struct {
	Code   int
	Reason string
	Msg    string
	// Items are the refused objects of a set (CreateSet), by index.
	Items []server.ItemStatus
}

func (e *APIError) Error() string { return e.Msg }

// IsNotFound reports whether err is the lab saying an object does not exist.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Reason == "NotFound"
}

// IsAlreadyExists reports whether err is the lab saying an object exists already.
func IsAlreadyExists(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Reason == "AlreadyExists"
}

// header sets who a request acts for: the account, for a namespaced resource or pilab's own paths.
func (c *Client) header(req *http.Request, namespaced bool) {
	req.Header.Set("Accept", "application/json")
	if c.impersonate && namespaced {
		req.Header.Set("Impersonate-User", c.Account)
	}
}

// Do sends one request to pilab's own paths (/x/...) and decodes a JSON answer into out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, body any, out any) error {
	return decodeInto(c.Raw(ctx, method, path, q, body))(out)
}

// decodeInto reads a successful answer's JSON body into out (nil: the body is dropped) and closes it.
func decodeInto(resp *http.Response, err error) func(out any) error {
	return func(out any) error {
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if out == nil {
			io.Copy(io.Discard, resp.Body)
			return nil
		}
		return json.NewDecoder(resp.Body).Decode(out)
	}
}

// Raw sends one request to pilab's own paths (/x/...), for the client's account, and returns the answer
// if it is a success; the caller closes its body.
func (c *Client) Raw(ctx context.Context, method, path string, q url.Values, body any) (*http.Response, error) {
	if q == nil {
		q = url.Values{}
	}
	if q.Get("account") == "" {
		q.Set("account", c.Account)
	}
	return c.send(ctx, method, path, q, body, "application/json", true)
}

// send sends one request; an answer of 300 or more is an *APIError.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body any, contentType string, namespaced bool) (*http.Response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case io.Reader:
		r = b
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	if r != nil {
		req.Header.Set("Content-Type", contentType)
	}
	c.header(req, namespaced)
	resp, err := c.hc.Do(req)
	if err != nil {
		var dd *DaemonDownError
		if errors.As(err, &dd) {
			return nil, dd
		}
		if c.Socket == "" && ctx.Err() == nil {
			return nil, fmt.Errorf("cannot reach the lab at %s: %w", c.Server, errors.Unwrap(err))
		}
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, decodeError(resp.StatusCode, data)
	}
	return resp, nil
}

// decodeError reads an error answer: a metav1.Status (the Kubernetes API) or pilab's own (a set refused).
func decodeError(code int, data []byte) *APIError {
	var st metav1.Status
	if json.Unmarshal(data, &st) == nil && st.Kind == "Status" {
		return &APIError{Code: code, Reason: string(st.Reason), Msg: st.Message}
	}
	var ps server.Status
	if json.Unmarshal(data, &ps) == nil && ps.Error != "" {
		return &APIError{Code: code, Reason: ps.Reason, Msg: ps.Error, Items: ps.Items}
	}
	msg := strings.TrimSpace(string(data))
	if msg == "" {
		msg = http.StatusText(code)
	}
	return &APIError{Code: code, Reason: string(metav1.StatusReasonUnknown), Msg: msg}
}

// path is the Kubernetes API path of kind k (an object of it if name is set, and its subresource sub).
func path(k api.Kind, name, sub string) string {
	p, ok := server.ResourcePath(k.Name)
	if !ok {
		panic("client: the Kubernetes API serves no resource of kind " + k.Name)
	}
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	if sub != "" {
		p += "/" + sub
	}
	return p
}

// kube sends one request to the Kubernetes API about kind k and decodes the answer into out (if not nil).
func (c *Client) kube(ctx context.Context, method string, k api.Kind, name, sub string, q url.Values, body any, out any) error {
	return decodeInto(c.send(ctx, method, path(k, name, sub), q, body, "application/json", k.Namespaced))(out)
}

// incoming marks an object read from the API with the account it belongs to, as the store keeps it: the
// API serves every account's objects in namespace "default".
func (c *Client) incoming(k api.Kind, o metav1.Object) metav1.Object {
	if k.Namespaced {
		api.SetAccount(o, c.Account)
	}
	return o
}

// outgoing is o as the API takes it: in namespace "default", without the account mark.
func outgoing(o metav1.Object) metav1.Object {
	o = api.DeepCopy(o)
	if a := o.GetAnnotations(); a != nil {
		delete(a, api.AccountAnnotation)
		if len(a) == 0 {
			a = nil
		}
		o.SetAnnotations(a)
	}
	if api.KindOf(o).Namespaced {
		o.SetNamespace(metav1.NamespaceDefault)
	}
	api.SetTypeMeta(o)
	return o
}

// ListOptions narrow a list.
type ListOptions struct {
	LabelSelector string
	// AllAccounts lists every account's objects (the admin's view), each marked with its account.
	AllAccounts bool
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	return q
}

// accounts are the names of the lab's accounts (the admin's; an account sees only itself).
func (c *Client) accounts(ctx context.Context) ([]string, error) {
	accts, err := c.List(ctx, kindAccount, ListOptions{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, a := range accts {
		names = append(names, a.GetName())
	}
	sort.Strings(names)
	return names, nil
}

var kindAccount, _ = api.LookupKind("Account")

// List returns the objects of kind k.
func (c *Client) List(ctx context.Context, k api.Kind, o ListOptions) ([]metav1.Object, error) {
	if o.AllAccounts && k.Namespaced {
		names, err := c.accounts(ctx)
		if err != nil {
			return nil, err
		}
		var out []metav1.Object
		for _, a := range names {
			objs, err := c.ForAccount(a).List(ctx, k, ListOptions{LabelSelector: o.LabelSelector})
			if err != nil && !IsNotFound(err) { // an account deleted meanwhile has nothing to list
				return nil, err
			}
			out = append(out, objs...)
		}
		return out, nil
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := c.kube(ctx, http.MethodGet, k, "", "", o.query(), nil, &list); err != nil {
		return nil, err
	}
	out := make([]metav1.Object, 0, len(list.Items))
	for _, raw := range list.Items {
		obj, err := api.Decode(k, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, c.incoming(k, obj))
	}
	return out, nil
}

// Get returns one object.
func (c *Client) Get(ctx context.Context, k api.Kind, name string) (metav1.Object, error) {
	o := k.New()
	if err := c.kube(ctx, http.MethodGet, k, name, "", nil, nil, o); err != nil {
		return nil, err
	}
	return c.incoming(k, o), nil
}

// Create creates o and returns it as stored.
func (c *Client) Create(ctx context.Context, o metav1.Object) (metav1.Object, error) {
	k := api.KindOf(o)
	out := k.New()
	if err := c.kube(ctx, http.MethodPost, k, "", "", nil, outgoing(o), out); err != nil {
		return nil, err
	}
	return c.incoming(k, out), nil
}

// CreateSet creates objects of any kinds as one set: all of them, or none (pilab's own path: the Kubernetes
// API creates one object a request). With dryRun it only asks whether the set would be accepted. A refusal
// is an *APIError whose Items say which objects failed and why.
func (c *Client) CreateSet(ctx context.Context, objs []metav1.Object, dryRun bool) error {
	q := url.Values{}
	if dryRun {
		q.Set("dryRun", "All")
	}
	items := make([]metav1.Object, len(objs))
	for i, o := range objs {
		items[i] = outgoing(o)
	}
	return c.Do(ctx, http.MethodPost, "/x/batch", q, map[string]any{"items": items}, nil)
}

// Replace replaces o (apply): without a resourceVersion the lab takes it as the object's new spec whatever
// changed meanwhile; status fields are the lab's.
func (c *Client) Replace(ctx context.Context, o metav1.Object) (metav1.Object, error) {
	k := api.KindOf(o)
	out := k.New()
	if err := c.kube(ctx, http.MethodPut, k, o.GetName(), "", nil, outgoing(o), out); err != nil {
		return nil, err
	}
	return c.incoming(k, out), nil
}

// Delete starts deleting an object. cascade deletes what an account holds with it (for an account).
func (c *Client) Delete(ctx context.Context, k api.Kind, name string, cascade bool) error {
	q := url.Values{}
	if cascade {
		q.Set("propagationPolicy", string(metav1.DeletePropagationBackground))
	}
	return c.kube(ctx, http.MethodDelete, k, name, "", q, nil, nil)
}

// Watch streams changes of kind k, starting with ADDED events for the objects there are, until ctx ends.
func (c *Client) Watch(ctx context.Context, k api.Kind, o ListOptions) (<-chan api.WatchEvent, error) {
	if o.AllAccounts && k.Namespaced {
		names, err := c.accounts(ctx)
		if err != nil {
			return nil, err
		}
		ch := make(chan api.WatchEvent)
		done := make(chan struct{})
		for _, a := range names {
			in, err := c.ForAccount(a).Watch(ctx, k, ListOptions{LabelSelector: o.LabelSelector})
			if err != nil {
				return nil, err
			}
			go func() {
				for ev := range in {
					select {
					case ch <- ev:
					case <-ctx.Done():
					}
				}
				done <- struct{}{}
			}()
		}
		go func() {
			for range names {
				<-done
			}
			close(ch)
		}()
		return ch, nil
	}
	q := o.query()
	q.Set("watch", "true")
	resp, err := c.send(ctx, http.MethodGet, path(k, "", ""), q, nil, "", k.Namespaced)
	if err != nil {
		return nil, err
	}
	ch := make(chan api.WatchEvent)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var ev metav1.WatchEvent
			if err := dec.Decode(&ev); err != nil {
				return
			}
			switch ev.Type {
			case api.Added, api.Modified, api.Deleted:
			default: // BOOKMARK carries no object of the kind; ERROR ends the watch
				if ev.Type == "ERROR" {
					return
				}
				continue
			}
			obj, err := api.Decode(k, ev.Object.Raw)
			if err != nil {
				return
			}
			data, _ := json.Marshal(c.incoming(k, obj))
			select {
			case ch <- api.WatchEvent{Type: ev.Type, Kind: k.Name, Account: c.Account, Object: data}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// LogOptions select a container's output.
type LogOptions struct {
	Container string
	Follow    bool
	Previous  bool
	Tail      int // -1: all
	// Notes, if set, receives what kubectl says on stderr: which container was chosen for the user.
	Notes io.Writer
}

// DefaultContainerAnnotation names the container kubectl picks in a pod of several.
const DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// defaultContainer chooses the container of pod p when none is named, as kubectl does: the one the
// annotation names, else the first, saying so to notes when the pod has several.
func defaultContainer(p *corev1.Pod, container string, notes io.Writer) string {
	if container != "" || len(p.Spec.Containers) < 2 {
		return container
	}
	name := p.Annotations[DefaultContainerAnnotation]
	if name == "" {
		name = p.Spec.Containers[0].Name
	}
	if notes != nil {
		var names []string
		for _, c := range p.Spec.Containers {
			names = append(names, c.Name)
		}
		fmt.Fprintf(notes, "Defaulted container %q out of: %s\n", name, strings.Join(names, ", "))
	}
	return name
}

var kindPod, _ = api.LookupKind("Pod")

// Logs copies a container's output to w.
func (c *Client) Logs(ctx context.Context, pod string, o LogOptions, w io.Writer) error {
	if o.Container == "" {
		p, err := c.Get(ctx, kindPod, pod)
		if err != nil {
			return err
		}
		o.Container = defaultContainer(p.(*corev1.Pod), "", o.Notes)
	}
	q := url.Values{}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	if o.Follow {
		q.Set("follow", "true")
	}
	if o.Previous {
		q.Set("previous", "true")
	}
	if o.Tail >= 0 {
		q.Set("tailLines", fmt.Sprint(o.Tail))
	}
	resp, err := c.send(ctx, http.MethodGet, path(kindPod, pod, "log"), q, nil, "", true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ExecOptions describe an exec session.
type ExecOptions struct {
	Container string
	Command   []string
	TTY       bool
	Stdin     io.Reader // nil: no stdin
	Stdout    io.Writer
	Stderr    io.Writer
	// Resize delivers terminal sizes (width, height) for a TTY session; the first one should come at once.
	Resize <-chan [2]uint16
}

// sizeQueue hands remotecommand the terminal's sizes.
type sizeQueue struct {
	ctx context.Context
	ch  <-chan [2]uint16
}

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	select {
	case sz, ok := <-q.ch:
		if !ok {
			return nil
		}
		return &remotecommand.TerminalSize{Width: sz[0], Height: sz[1]}
	case <-q.ctx.Done():
		return nil
	}
}

// Exec runs a command in a container, through the Kubernetes API's exec stream (SPDY, as the kubelet's
// streaming server speaks it), and returns its exit code.
func (c *Client) Exec(ctx context.Context, pod string, o ExecOptions) (int, error) {
	if len(o.Command) == 0 {
		return 0, errors.New("you must specify at least one command for the container")
	}
	// An unknown pod is a plain NotFound before any stream is set up.
	p, err := c.Get(ctx, kindPod, pod)
	if err != nil {
		return 0, err
	}
	o.Container = defaultContainer(p.(*corev1.Pod), o.Container, o.Stderr)
	q := url.Values{"command": o.Command}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	q.Set("stdout", "true")
	if o.Stdin != nil {
		q.Set("stdin", "true")
	}
	if o.TTY {
		q.Set("tty", "true")
	} else if o.Stderr != nil {
		q.Set("stderr", "true")
	}
	u, err := url.Parse(c.base + path(kindPod, pod, "exec") + "?" + q.Encode())
	if err != nil {
		return 0, err
	}
	ex, err := c.executor(u)
	if err != nil {
		return 0, err
	}
	so := remotecommand.StreamOptions{Stdin: o.Stdin, Stdout: o.Stdout, Tty: o.TTY}
	if !o.TTY {
		so.Stderr = o.Stderr
	}
	if o.Resize != nil {
		so.TerminalSizeQueue = sizeQueue{ctx, o.Resize}
	}
	err = ex.StreamWithContext(ctx, so)
	var ce utilexec.CodeExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ce):
		return ce.Code, nil
	case ctx.Err() != nil:
		return 130, ctx.Err()
	}
	return 0, fmt.Errorf("exec in pod %q: %w", pod, err)
}

// executor is an exec stream's client: over the socket with the account's impersonation, or as the
// kubeconfig says.
func (c *Client) executor(u *url.URL) (remotecommand.Executor, error) {
	tc := &transport.Config{}
	if c.impersonate {
		tc.Impersonate = transport.ImpersonationConfig{UserName: c.Account}
	}
	if c.Socket == "" {
		cfg := rest.CopyConfig(c.cfg)
		if c.impersonate {
			cfg.Impersonate = rest.ImpersonationConfig{UserName: c.Account}
		}
		return remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	}
	// The upgrade dials the socket: spdy's round tripper dials through an upgrade transport's DialContext.
	up, err := spdy.NewRoundTripperWithConfig(spdy.RoundTripperConfig{
		UpgradeTransport: &http.Transport{DialContext: c.dialSocket}, PingPeriod: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	rt, err := transport.HTTPWrappersForConfig(tc, up)
	if err != nil {
		return nil, err
	}
	return remotecommand.NewSPDYExecutorForTransports(rt, up, http.MethodPost, u)
}
