package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/store"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// readRequest is one get, list or watch, parsed from its path and query.
type readRequest struct {
	res *resource
	// namespace is "" for every namespace (and for cluster-scoped resources).
	namespace string
	name      string
	// sub is the subresource: "status", "scale", "exec", "log", ...; "" for the object itself.
	sub     string
	watch   bool
	account string
	// admin is a request for no one in particular (no impersonation): it sees every account object.
	admin  bool
	labels labels.Selector
	fields fields.Selector
	table  bool
	// includeObject is what a Table row carries: None, Metadata (the default) or Object.
	includeObject string
}

// serveGroupVersion serves everything under /api/v1 and /apis/{group}/{version}.
func (k *kubeAPI) serveGroupVersion(w http.ResponseWriter, r *http.Request, gv schema.GroupVersion, rest []string) {
	known := false
	for _, g := range groupVersions() {
		known = known || g == gv
	}
	if !known {
		k.writeStatus(w, r, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path))
		return
	}
	if len(rest) == 0 {
		k.writeJSON(w, http.StatusOK, resourceList(gv))
		return
	}
	req := &readRequest{watch: isTrue(r.URL.Query().Get("watch"))}
	// The old watch paths, /api/v1/watch/..., are still what some clients use.
	if rest[0] == "watch" {
		req.watch, rest = true, rest[1:]
	}
	notFound := func() { k.writeStatus(w, r, apierrors.NewNotFound(schema.GroupResource{}, r.URL.Path)) }
	switch {
	case len(rest) >= 3 && rest[0] == "namespaces":
		req.namespace, req.res = rest[1], findResource(gv, rest[2])
		if req.res == nil || !req.res.namespaced || len(rest) > 5 {
			notFound()
			return
		}
		if len(rest) >= 4 {
			req.name = rest[3]
		}
		if len(rest) == 5 {
			req.sub = rest[4]
			if !req.res.hasSubresource(req.sub) {
				notFound()
				return
			}
		}
	case len(rest) <= 3:
		req.res = findResource(gv, rest[0])
		if req.res == nil {
			notFound()
			return
		}
		if len(rest) >= 2 {
			if req.res.namespaced {
				notFound()
				return
			}
			req.name = rest[1]
		}
		if len(rest) == 3 { // a cluster-scoped object's subresource: nodes/NAME/status
			req.sub = rest[2]
			if !req.res.hasSubresource(req.sub) {
				notFound()
				return
			}
		}
	default:
		notFound()
		return
	}
	if err := k.parseRead(r, req); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if req.sub == "eviction" && r.Method != http.MethodPost {
		// An eviction is only ever created, as in kube-apiserver.
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(schema.GroupResource{Resource: "pods/eviction"}, strings.ToLower(r.Method)))
		return
	}
	if h, ok := podStreams[req.sub]; ok && req.res.kind == "Pod" {
		h(k, w, r, req) // exec, attach, portforward, log: kube_stream.go
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		k.serveWrite(w, r, req) // kube_write.go
		return
	}
	switch {
	case req.sub == "scale" && !req.watch:
		k.getScale(w, r, req)
	case req.watch:
		k.watch(w, r, req)
	case req.name != "":
		k.get(w, r, req)
	default:
		k.list(w, r, req)
	}
}

func isTrue(s string) bool { return s == "true" || s == "1" }

// parseRead reads the account, the selectors and the answer's form.
func (k *kubeAPI) parseRead(r *http.Request, req *readRequest) error {
	account := r.Header.Get("Impersonate-User")
	req.admin = account == ""
	if account == "" {
		account = api.DefaultAccount
	}
	if _, err := k.s.Store.Get(kindAccount, "", account); err != nil {
		if store.IsNotFound(err) {
			return apierrors.NewForbidden(req.res.groupResource(), req.name,
				fmt.Errorf("user %q is not an account of this lab; create it with `pi account create %s`", account, account))
		}
		return apierrors.NewInternalError(fmt.Errorf("read account %q: %w", account, err))
	}
	req.account = account
	q := r.URL.Query()
	var err error
	if req.labels, err = labels.Parse(q.Get("labelSelector")); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
	}
	if req.fields, err = fields.ParseSelector(q.Get("fieldSelector")); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("invalid field selector %q: %v", q.Get("fieldSelector"), err))
	}
	supported := fieldSet(req.res, nil, "")
	for _, rq := range req.fields.Requirements() {
		if _, ok := supported[rq.Field]; !ok {
			return apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", rq.Field))
		}
	}
	req.table, err = wantsTable(r)
	if err != nil {
		return err
	}
	switch req.includeObject = q.Get("includeObject"); req.includeObject {
	case "":
		req.includeObject = "Metadata"
	case "None", "Metadata", "Object":
	default:
		return apierrors.NewBadRequest(fmt.Sprintf("includeObject must be None, Metadata or Object, not %q", req.includeObject))
	}
	return nil
}

// wantsTable reads the Accept header: a Table (meta.k8s.io/v1) when the client takes one, else JSON.
// Protobuf and CBOR are not served; a client that takes nothing else gets 406.
func wantsTable(r *http.Request) (bool, error) {
	accept := r.Header.Get("Accept")
	if accept == "" {
		return false, nil
	}
	json := false
	for _, a := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(a))
		if err != nil {
			continue
		}
		switch mt {
		case "application/json":
			if params["as"] == "Table" && params["g"] == "meta.k8s.io" && params["v"] == "v1" {
				return true, nil
			}
			if params["as"] == "" {
				json = true
			}
		case "*/*", "application/*":
			json = true
		}
	}
	if !json {
		return false, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotAcceptable,
			Reason: metav1.StatusReasonNotAcceptable, Message: fmt.Sprintf("only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (asked for %q)", accept)}}
	}
	return false, nil
}

// fieldSet is an object's fields a fieldSelector may name (o nil: the names alone).
func fieldSet(res *resource, o metav1.Object, node string) fields.Set {
	set := fields.Set{"metadata.name": "", "metadata.namespace": ""}
	if o != nil {
		set["metadata.name"], set["metadata.namespace"] = o.GetName(), o.GetNamespace()
	}
	switch v := o.(type) {
	case *corev1.Pod:
		set["status.phase"], set["spec.nodeName"], set["status.podIP"] = string(v.Status.Phase), v.Spec.NodeName, v.Status.PodIP
		set["spec.restartPolicy"], set["spec.schedulerName"], set["spec.serviceAccountName"] = string(v.Spec.RestartPolicy), v.Spec.SchedulerName, v.Spec.ServiceAccountName
	case *corev1.Event:
		io := v.InvolvedObject
		set["involvedObject.kind"], set["involvedObject.namespace"], set["involvedObject.name"] = io.Kind, io.Namespace, io.Name
		set["involvedObject.uid"], set["involvedObject.apiVersion"], set["involvedObject.fieldPath"] = string(io.UID), io.APIVersion, io.FieldPath
		set["involvedObject.resourceVersion"], set["reason"], set["type"] = io.ResourceVersion, v.Reason, v.Type
		set["source"], set["reportingComponent"] = v.Source.Component, v.ReportingController
	case *corev1.Namespace:
		set["status.phase"] = string(v.Status.Phase)
	case *corev1.Node:
		set["spec.unschedulable"] = strconv.FormatBool(v.Spec.Unschedulable)
	case nil:
		switch res.kind {
		case "Pod":
			for _, f := range []string{"status.phase", "spec.nodeName", "status.podIP", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName"} {
				set[f] = ""
			}
		case "Event":
			for _, f := range []string{"involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
				"involvedObject.apiVersion", "involvedObject.fieldPath", "involvedObject.resourceVersion", "reason", "type", "source", "reportingComponent"} {
				set[f] = ""
			}
		case "Namespace":
			set["status.phase"] = ""
		case "Node":
			set["spec.unschedulable"] = ""
		}
	}
	return set
}

func (req *readRequest) matches(o metav1.Object, node string) bool {
	return req.labels.Matches(labels.Set(o.GetLabels())) && req.fields.Matches(fieldSet(req.res, o, node))
}

// inNamespace reports whether the request's namespace is the account's one ("" = all of them).
func (req *readRequest) inNamespace() bool {
	return req.namespace == "" || req.namespace == api.Namespace
}

// prepare makes a stored object the one the API serves: no internal annotation, the node it runs on.
func (k *kubeAPI) prepare(o metav1.Object) metav1.Object {
	if a := o.GetAnnotations(); a != nil {
		delete(a, api.AccountAnnotation)
		if len(a) == 0 {
			a = nil
		}
		o.SetAnnotations(a)
	}
	if p, ok := o.(*corev1.Pod); ok && k.hostNodeFallback(p) {
		p.Spec.NodeName = k.node
	}
	api.SetTypeMeta(o)
	return o
}

// toRuntime wraps a store object as the Scheme object it is served as.
func toRuntime(o metav1.Object) kruntime.Object {
	switch v := o.(type) {
	case *api.FloatingIP:
		return (*FloatingIPObject)(v)
	case *api.Account:
		return (*AccountObject)(v)
	case kruntime.Object:
		return v
	}
	panic(fmt.Sprintf("server: %T is not a runtime.Object", o))
}

// namespaceOf is the one namespace of an account, "default", made from the account object.
func namespaceOf(acct metav1.Object) *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: api.Namespace, UID: acct.GetUID(), ResourceVersion: acct.GetResourceVersion(),
			CreationTimestamp: acct.GetCreationTimestamp(), Labels: map[string]string{"kubernetes.io/metadata.name": api.Namespace}},
		Spec:   corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{corev1.FinalizerKubernetes}},
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	}
}

// read returns the objects a list or get sees, and the resourceVersion they are consistent with.
func (k *kubeAPI) read(req *readRequest) ([]metav1.Object, uint64, error) {
	res := req.res
	if res.kind == "Namespace" {
		acct, err := k.s.Store.Get(kindAccount, "", req.account)
		if err != nil {
			return nil, 0, storeError(res, req.name, err)
		}
		rv, err := k.s.Store.ResourceVersion()
		return []metav1.Object{namespaceOf(acct)}, rv, err
	}
	if res.namespaced && !req.inNamespace() {
		rv, err := k.s.Store.ResourceVersion()
		return nil, rv, err
	}
	account := req.account
	if !res.namespaced {
		account = ""
	}
	objs, rv, err := k.s.Store.ListAt(res.store, account)
	if err != nil {
		return nil, 0, storeError(res, req.name, err)
	}
	out := make([]metav1.Object, 0, len(objs))
	for _, o := range objs {
		// An account sees its own account object; the lab's admin (no impersonation) sees every one.
		if res.kind == "Account" && !req.admin && o.GetName() != req.account {
			continue
		}
		if res.project != nil {
			out = append(out, res.project(k.prepare(o))...)
			continue
		}
		out = append(out, k.prepare(o))
	}
	return out, rv, nil
}

func (k *kubeAPI) get(w http.ResponseWriter, r *http.Request, req *readRequest) {
	objs, rv, err := k.read(req)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	for _, o := range objs {
		if o.GetName() == req.name {
			if req.table {
				encode(w, http.StatusOK, k.table(req, []metav1.Object{o}, rv))
				return
			}
			encode(w, http.StatusOK, toRuntime(o))
			return
		}
	}
	k.writeStatus(w, r, apierrors.NewNotFound(req.res.groupResource(), req.name))
}

func (k *kubeAPI) list(w http.ResponseWriter, r *http.Request, req *readRequest) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"))
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	// What a continue token is good for: the same resource, namespace, selectors and table-ness.
	listKey := fmt.Sprintf("%s in namespace %q (labels %q, fields %q, table %v, account %s)", req.res.name, req.namespace,
		req.labels.String(), req.fields.String(), req.table, req.account)
	var items []metav1.Object
	var rv uint64
	var cont string
	var left int
	if token := q.Get("continue"); token != "" {
		items, rv, cont, left, err = k.pages.next(listKey, token, limit)
	} else {
		var objs []metav1.Object
		if objs, rv, err = k.read(req); err == nil {
			for _, o := range objs {
				if req.matches(o, k.node) {
					items = append(items, o)
				}
			}
			items, cont, left, err = k.pages.page(listKey, items, rv, limit)
		}
	}
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	var remaining *int64
	if cont != "" && req.labels.Empty() && req.fields.Empty() {
		// As kube-apiserver: counted only for an unfiltered list.
		n := int64(left)
		remaining = &n
	}
	if req.table {
		t := k.table(req, items, rv)
		t.Continue, t.RemainingItemCount = cont, remaining
		encode(w, http.StatusOK, t)
		return
	}
	list := req.res.newList()
	robjs := make([]kruntime.Object, len(items))
	for i, o := range items {
		robjs[i] = toRuntime(o)
	}
	if err := setList(list, robjs, rv); err != nil {
		k.writeStatus(w, r, apierrors.NewInternalError(fmt.Errorf("make the %s list: %w", req.res.name, err)))
		return
	}
	if lm, err := meta.ListAccessor(list); err == nil {
		lm.SetContinue(cont)
		lm.SetRemainingItemCount(remaining)
	}
	encode(w, http.StatusOK, list)
}

// setList fills a typed list with objects, at resourceVersion rv.
func setList(list kruntime.Object, objs []kruntime.Object, rv uint64) error {
	if err := meta.SetList(list, objs); err != nil {
		return err
	}
	lm, err := meta.ListAccessor(list)
	if err != nil {
		return err
	}
	lm.SetResourceVersion(strconv.FormatUint(rv, 10))
	return nil
}

// watch streams metav1.WatchEvents as JSON lines: the changes after the request's resourceVersion (after
// the current state, sent first as ADDED, when it has none or "0"), until the client goes away, the
// store drops a watcher that fell behind, or timeoutSeconds pass. sendInitialEvents=true (client-go's
// streaming list, on by default in v0.35) gets the current state as ADDED, then the BOOKMARK marking its
// end; no other bookmarks are sent (allowWatchBookmarks asks, it does not require). An object that stops matching the selectors is not
// sent as DELETED, as kube-apiserver does; it is just no longer sent.
func (k *kubeAPI) watch(w http.ResponseWriter, r *http.Request, req *readRequest) {
	q := r.URL.Query()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if t := q.Get("timeoutSeconds"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("timeoutSeconds must be a whole number of seconds, not %q", t)))
			return
		}
		if n > 0 {
			ctx, cancel = context.WithTimeout(ctx, time.Duration(n)*time.Second)
			defer cancel()
		}
	}
	res := req.res
	var initial []metav1.Object
	var from uint64
	sendInitial := q.Get("sendInitialEvents")
	if sendInitial != "" && sendInitial != "true" && sendInitial != "false" {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("sendInitialEvents must be true or false, not %q", sendInitial)))
		return
	}
	rv := q.Get("resourceVersion")
	if sendInitial == "true" || (sendInitial == "" && (rv == "" || rv == "0")) {
		rv = "initial"
	} else if sendInitial == "false" && (rv == "" || rv == "0") {
		cur, err := k.s.Store.ResourceVersion()
		if err != nil {
			k.writeStatus(w, r, apierrors.NewInternalError(fmt.Errorf("watch %s: %w", req.res.name, err)))
			return
		}
		rv = strconv.FormatUint(cur, 10)
	}
	switch rv {
	case "initial":
		objs, listRV, err := k.read(req)
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		initial, from = objs, listRV
	default:
		n, err := strconv.ParseUint(rv, 10, 64)
		if err != nil {
			k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion %q is not a resourceVersion of this lab (a number)", rv)))
			return
		}
		from = n
	}
	// Namespaces are made from accounts, so their changes are the account's.
	kind, account := res.store.Name, req.account
	if res.kind == "Namespace" {
		kind = kindAccount.Name
	}
	if !res.store.Namespaced || res.kind == "Namespace" {
		account = ""
	}
	events, err := k.s.Store.WatchFrom(ctx, kind, account, from)
	if errors.Is(err, store.ErrExpired) {
		k.writeStatus(w, r, apierrors.NewResourceExpired(err.Error()))
		return
	}
	if err != nil {
		k.writeStatus(w, r, apierrors.NewInternalError(fmt.Errorf("watch %s: %w", res.name, err)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	send := func(typ string, o metav1.Object) bool {
		var obj kruntime.Object = toRuntime(o)
		if req.table {
			obj = k.table(req, []metav1.Object{o}, 0)
		}
		gvks, _, err := Scheme.ObjectKinds(obj)
		if err == nil {
			obj.GetObjectKind().SetGroupVersionKind(gvks[0])
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return false
		}
		line, _ := json.Marshal(metav1.WatchEvent{Type: typ, Object: kruntime.RawExtension{Raw: data}})
		if _, err := w.Write(append(line, '\n')); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	for _, o := range initial {
		if req.matches(o, k.node) && (req.name == "" || o.GetName() == req.name) {
			if !send(string(api.Added), o) {
				return
			}
		}
	}
	if sendInitial == "true" {
		// The end of the initial events: an empty object of the kind at the list's resourceVersion.
		var b metav1.Object = &corev1.Namespace{}
		switch {
		case res.project != nil:
			b = &discoveryv1.EndpointSlice{}
		case res.hasStore:
			b = res.store.New()
		}
		b.SetResourceVersion(strconv.FormatUint(from, 10))
		b.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
		saved := req.table
		req.table = false
		ok := send(string(watchBookmark), b)
		req.table = saved
		if !ok {
			return
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	var sendProjected func(string, metav1.Object, string) bool
	if res.project != nil {
		sendProjected = projectionWatch(req, k.node, initial, send)
	}
	for ev := range events {
		if res.namespaced && !req.inNamespace() {
			continue
		}
		var o metav1.Object
		if res.kind == "Namespace" {
			acct, err := api.Decode(kindAccount, ev.Object)
			if err != nil || acct.GetName() != req.account {
				continue
			}
			o = namespaceOf(acct)
		} else {
			if o, err = api.Decode(res.store, ev.Object); err != nil {
				continue
			}
			if res.kind == "Account" && !req.admin && o.GetName() != req.account {
				continue
			}
			o = k.prepare(o)
		}
		// A deletion is at its own resourceVersion, so a client resuming after it does not see it again.
		rv := strconv.FormatUint(ev.ResourceVersion, 10)
		o.SetResourceVersion(rv)
		if res.project != nil {
			if !sendProjected(ev.Type, o, rv) {
				return
			}
			continue
		}
		if !req.matches(o, k.node) || (req.name != "" && o.GetName() != req.name) {
			continue
		}
		if !send(ev.Type, o) {
			return
		}
	}
}

// projectionWatch turns a watch of a store kind into one of its projection: every event of a stored
// object is an event of each object projected from it, and a projected object that is no longer made
// (an Endpoints subset gone) is DELETED. It remembers what it sent, by UID, starting from initial.
func projectionWatch(req *readRequest, node string, initial []metav1.Object, send func(string, metav1.Object) bool) func(string, metav1.Object, string) bool {
	sent := map[types.UID]metav1.Object{}
	for _, o := range initial {
		sent[o.GetUID()] = o
	}
	return func(typ string, src metav1.Object, rv string) bool {
		now := map[types.UID]bool{}
		for _, o := range req.res.project(src) {
			now[o.GetUID()] = true
			if !req.matches(o, node) || (req.name != "" && o.GetName() != req.name) {
				continue
			}
			if typ == string(api.Deleted) {
				delete(sent, o.GetUID())
			} else {
				sent[o.GetUID()] = o
			}
			if !send(typ, o) {
				return false
			}
		}
		if typ == string(api.Deleted) {
			return true
		}
		prefix := string(src.GetUID()) + "-"
		for uid, o := range sent {
			if strings.HasPrefix(string(uid), prefix) && !now[uid] {
				delete(sent, uid)
				o.SetResourceVersion(rv)
				if !send(string(api.Deleted), o) {
					return false
				}
			}
		}
		return true
	}
}

const watchBookmark = "BOOKMARK"
