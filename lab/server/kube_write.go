package server

// The Kubernetes API's writes: create, update, patch (JSON, merge, strategic merge, server-side apply) and
// delete, of objects and of their status and scale subresources, with dryRun and fieldValidation. Every
// write goes through the registry (defaulting, validation, admission, the one lock); managedFields are
// kept by apimachinery's FieldManager, as kube-apiserver keeps them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/registry"
	"github.com/pilab/pi/lab/store"
	"github.com/pilab/pi/lab/validate"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/applyconfigurations"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// writeRequest is a write's options, read from its query.
type writeRequest struct {
	*readRequest
	dryRun          bool
	fieldValidation string // Strict, Warn or Ignore
	fieldManager    string
	force           bool
}

// serveWrite serves create (POST), update (PUT), patch (PATCH) and delete (DELETE).
func (k *kubeAPI) serveWrite(w http.ResponseWriter, r *http.Request, rr *readRequest) {
	req := &writeRequest{readRequest: rr}
	if err := k.parseWrite(r, req); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	res := req.res
	verb := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}[r.Method]
	if res.kind == "Node" && verb != "" {
		// Authorization first, as kube-apiserver's: an account learns nothing more of a node it may not write.
		if err := nodeWriteRefused(req, r.Method); err != nil {
			k.writeStatus(w, r, err)
			return
		}
	}
	switch {
	case verb == "":
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(res.groupResource(), strings.ToLower(r.Method)))
		return
	case res.kind == "Namespace":
		k.writeStatus(w, r, apierrors.NewForbidden(res.groupResource(), req.name,
			fmt.Errorf("each account of the lab has one namespace, %q, which cannot be created, changed or deleted; for another network, create an account (`pi account create NAME`)", api.Namespace)))
		return
	case res.project != nil:
		k.writeStatus(w, r, projectedWriteError(res, verb))
		return
	case res.kind == "Account" && !req.admin:
		// Accounts and their quotas are the lab's to give: an account (a learner's token, or the admin
		// acting as one) may read its own object but not make, change or delete any, its own included.
		// The same answer for every name, so it says nothing of which accounts exist.
		k.writeStatus(w, r, apierrors.NewForbidden(res.groupResource(), req.name,
			fmt.Errorf("user %q cannot %s accounts: accounts are the lab admin's (pi account create|delete)", req.account, verb)))
		return
	case res.namespaced && req.namespace == "":
		// kube-apiserver serves writes under a namespace only.
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(res.groupResource(), verb))
		return
	case res.namespaced && req.namespace != api.Namespace:
		k.writeStatus(w, r, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, req.namespace))
		return
	case !res.hasStore:
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(res.groupResource(), verb))
		return
	case req.sub == "eviction":
		k.evict(w, r, req) // kube_nodes.go; serveGroupVersion let only POST through
		return
	case req.sub == "scale" && r.Method == http.MethodPost, req.sub == "scale" && r.Method == http.MethodDelete,
		req.sub == "status" && r.Method == http.MethodPost, req.sub == "status" && r.Method == http.MethodDelete:
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(schema.GroupResource{Group: res.gv.Group, Resource: res.name + "/" + req.sub}, verb))
		return
	}
	switch r.Method {
	case http.MethodPost:
		if req.name != "" {
			k.writeStatus(w, r, apierrors.NewMethodNotSupported(res.groupResource(), "create"))
			return
		}
		k.create(w, r, req)
	case http.MethodPut:
		if req.name == "" {
			k.writeStatus(w, r, apierrors.NewMethodNotSupported(res.groupResource(), "update"))
			return
		}
		k.update(w, r, req)
	case http.MethodPatch:
		if req.name == "" {
			k.writeStatus(w, r, apierrors.NewMethodNotSupported(res.groupResource(), "patch"))
			return
		}
		k.patch(w, r, req)
	case http.MethodDelete:
		if req.name == "" {
			k.deleteCollection(w, r, req)
			return
		}
		k.delete(w, r, req)
	}
}

func (k *kubeAPI) parseWrite(r *http.Request, req *writeRequest) error {
	q := r.URL.Query()
	for _, d := range q["dryRun"] {
		if d != "All" {
			return apierrors.NewBadRequest(fmt.Sprintf("dryRun: Unsupported value: %q: supported values: \"All\"", d))
		}
		req.dryRun = true
	}
	switch req.fieldValidation = q.Get("fieldValidation"); req.fieldValidation {
	case "":
		req.fieldValidation = "Warn" // kube-apiserver's default
	case "Strict", "Warn", "Ignore":
	default:
		return apierrors.NewBadRequest(fmt.Sprintf("fieldValidation: Unsupported value: %q: supported values: \"Ignore\", \"Strict\", \"Warn\"", req.fieldValidation))
	}
	req.fieldManager = q.Get("fieldManager")
	if len(req.fieldManager) > 128 {
		return apierrors.NewBadRequest("fieldManager: Too long: may not be more than 128 bytes")
	}
	if req.fieldManager == "" {
		// As kube-apiserver does: the client's name from its User-Agent.
		req.fieldManager = strings.SplitN(r.UserAgent(), "/", 2)[0]
		if req.fieldManager == "" {
			req.fieldManager = "unknown"
		}
	}
	if f := q.Get("force"); f != "" {
		req.force = isTrue(f)
	}
	return nil
}

// ---- bodies ----

// readKubeBody reads a request body of at most maxBody bytes, as JSON: YAML bodies are converted.
func readKubeBody(r *http.Request, yamlOK bool) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("read the request body: %v", err))
	}
	if len(data) > maxBody {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the request body is larger than %d MiB; split the manifest into smaller files", maxBody>>20))
	}
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch mt {
	case "application/json", "":
		return data, nil
	case "application/vnd.kubernetes.protobuf":
		// client-go's typed clientsets send the built-in kinds as protobuf; the rest of the write path
		// reads JSON, so the object is turned into that.
		obj, _, err := protobufSerializer.Decode(data, nil, nil)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the body is not a protobuf-encoded Kubernetes object: %v", err))
		}
		setGVK(obj)
		out, err := json.Marshal(obj)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		return out, nil
	case "application/yaml":
		if yamlOK {
			out, err := yaml.YAMLToJSON(data)
			if err != nil {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("the body is not valid YAML: %v", err))
			}
			return out, nil
		}
	}
	return nil, unsupportedMediaType(ct, "application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
}

// protobufSerializer decodes the built-in kinds from Kubernetes' protobuf envelope.
var protobufSerializer = protobuf.NewSerializer(Scheme, Scheme)

func unsupportedMediaType(ct string, supported ...string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
		Reason:  metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: %s (got %q)", strings.Join(supported, ", "), ct)}}
}

// decodeObject decodes a body into a new object of the resource's kind. Unknown and duplicate fields are
// an error (fieldValidation=Strict), a warning (Warn) or nothing (Ignore), named by their paths.
func (k *kubeAPI) decodeObject(w http.ResponseWriter, req *writeRequest, data []byte) (metav1.Object, error) {
	res := req.res
	var tm metav1.TypeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the body is not a JSON object: %v", err))
	}
	if tm.APIVersion != "" && tm.APIVersion != res.gv.String() {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)", tm.APIVersion, res.gv))
	}
	if tm.Kind != "" && tm.Kind != res.kind {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the kind in the data (%s) does not match the expected kind (%s)", tm.Kind, res.kind))
	}
	o := res.store.New()
	strict, err := sigsjson.UnmarshalStrict(data, o, sigsjson.DisallowUnknownFields, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the body is not a valid %s: %v", res.kind, err))
	}
	if len(strict) > 0 {
		var msgs []string
		for _, e := range strict {
			msgs = append(msgs, e.Error())
		}
		switch req.fieldValidation {
		case "Strict":
			return nil, apierrors.NewBadRequest("strict decoding error: " + strings.Join(msgs, ", "))
		case "Warn":
			for _, m := range msgs {
				w.Header().Add("Warning", fmt.Sprintf("299 - %q", m))
			}
		}
	}
	return o, nil
}

// unprepare undoes what prepare adds to a served object, given the stored one it replaces (nil on a
// create): a pod stored before the lab had a scheduler is served on the machine's node, which its stored
// spec does not name.
func (k *kubeAPI) unprepare(o, old metav1.Object) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	if op, ok := old.(*corev1.Pod); ok && k.hostNodeFallback(op) && p.Spec.NodeName == k.node {
		p.Spec.NodeName = ""
	}
}

// checkMeta checks the name and namespace of a body against the request's.
func checkMeta(req *writeRequest, o metav1.Object) error {
	if ns := o.GetNamespace(); ns != "" && req.res.namespaced && ns != req.namespace {
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	if req.name != "" && o.GetName() != req.name {
		return apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", o.GetName(), req.name))
	}
	return nil
}

// ---- create ----

func (k *kubeAPI) create(w http.ResponseWriter, r *http.Request, req *writeRequest) {
	data, err := readKubeBody(r, true)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	o, err := k.decodeObject(w, req, data)
	if err == nil {
		err = checkMeta(req, o)
	}
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if req.res.kind == "FloatingIP" {
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(req.res.groupResource(), "create"))
		return
	}
	if o.GetName() == "" && o.GetGenerateName() != "" {
		o.SetName(o.GetGenerateName() + randSuffix())
	}
	k.unprepare(o, nil)
	if err := k.validate(req.res, o); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if err := k.trackFields(req, nil, o); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if err := k.s.Registry.Create(r.Context(), req.account, o, req.dryRun); err != nil {
		k.writeStatus(w, r, kubeError(req.res, o.GetName(), err))
		return
	}
	code := http.StatusCreated
	if req.dryRun {
		code = http.StatusOK
	}
	encode(w, code, toRuntime(k.prepare(o)))
}

// validate checks an object as kube-apiserver's validation does, with the field causes it gives.
func (k *kubeAPI) validate(res *resource, o metav1.Object) error {
	if errs := validate.Errors(o); len(errs) > 0 {
		return apierrors.NewInvalid(schema.GroupKind{Group: res.gv.Group, Kind: res.kind}, o.GetName(), errs)
	}
	return nil
}

// ---- update ----

func (k *kubeAPI) update(w http.ResponseWriter, r *http.Request, req *writeRequest) {
	data, err := readKubeBody(r, true)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if req.sub == "scale" {
		var sc autoscalingv1.Scale
		if _, err := sigsjson.UnmarshalStrict(data, &sc); err != nil {
			k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("the body is not a valid Scale: %v", err)))
			return
		}
		k.writeScale(w, r, req, func(cur *autoscalingv1.Scale) (*autoscalingv1.Scale, error) { return &sc, nil })
		return
	}
	o, err := k.decodeObject(w, req, data)
	if err == nil {
		err = checkMeta(req, o)
	}
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	old, err := k.getStored(req)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	out, err := k.store(r.Context(), req, old, o)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	encode(w, http.StatusOK, toRuntime(k.prepare(out)))
}

// getStored reads the object a write is about, as stored.
func (k *kubeAPI) getStored(req *writeRequest) (metav1.Object, error) {
	account := req.account
	if !req.res.namespaced {
		account = ""
	}
	o, err := k.s.Store.Get(req.res.store, account, req.name)
	if err != nil {
		return nil, storeError(req.res, req.name, err)
	}
	// pilab's Account kind is cluster-wide; an account may touch only its own object.
	if req.res.kind == "Account" && !req.admin && o.GetName() != req.account {
		return nil, apierrors.NewNotFound(req.res.groupResource(), req.name)
	}
	return o, nil
}

// store validates o, the new state of old, tracks its managed fields and writes it through the
// registry (the status subresource: only its status).
func (k *kubeAPI) store(ctx context.Context, req *writeRequest, old, o metav1.Object) (metav1.Object, error) {
	k.unprepare(o, old)
	if req.sub != "status" {
		if err := k.validate(req.res, o); err != nil {
			return nil, err
		}
	}
	if err := k.trackFields(req, old, o); err != nil {
		return nil, err
	}
	err := k.s.Registry.UpdateWith(ctx, req.account, o, registry.UpdateOptions{DryRun: req.dryRun, Status: req.sub == "status"})
	if err != nil {
		return nil, kubeError(req.res, req.name, err)
	}
	return o, nil
}

// ---- patch ----

const maxPatchRetries = 5

func (k *kubeAPI) patch(w http.ResponseWriter, r *http.Request, req *writeRequest) {
	ct := r.Header.Get("Content-Type")
	pt, _, _ := mime.ParseMediaType(ct)
	patchType := types.PatchType(pt)
	switch patchType {
	case types.JSONPatchType, types.MergePatchType, types.ApplyYAMLPatchType, types.ApplyCBORPatchType:
	case types.StrategicMergePatchType:
		if req.res.gv == PilabGroupVersion {
			// As for custom resources in Kubernetes: their types carry no patch strategies.
			k.writeStatus(w, r, unsupportedMediaType(ct, string(types.JSONPatchType), string(types.MergePatchType), string(types.ApplyYAMLPatchType)))
			return
		}
	default:
		k.writeStatus(w, r, unsupportedMediaType(ct, string(types.JSONPatchType), string(types.MergePatchType), string(types.StrategicMergePatchType), string(types.ApplyYAMLPatchType)))
		return
	}
	if patchType == types.ApplyCBORPatchType {
		k.writeStatus(w, r, unsupportedMediaType(ct, string(types.ApplyYAMLPatchType)))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		k.writeStatus(w, r, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the patch is larger than %d MiB", maxBody>>20)))
		return
	}
	if patchType == types.ApplyYAMLPatchType {
		k.apply(w, r, req, body)
		return
	}
	if req.sub == "scale" {
		k.writeScale(w, r, req, func(cur *autoscalingv1.Scale) (*autoscalingv1.Scale, error) {
			cur.TypeMeta = metav1.TypeMeta{APIVersion: "autoscaling/v1", Kind: "Scale"}
			curJSON, _ := json.Marshal(cur)
			out, err := applyPatch(patchType, curJSON, body, &autoscalingv1.Scale{})
			if err != nil {
				return nil, err
			}
			var sc autoscalingv1.Scale
			if err := json.Unmarshal(out, &sc); err != nil {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("the patched object is not a valid Scale: %v", err))
			}
			return &sc, nil
		})
		return
	}
	for attempt := 0; ; attempt++ {
		old, err := k.getStored(req)
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		cur := k.prepare(api.DeepCopy(old))
		curJSON, err := json.Marshal(cur)
		if err != nil {
			k.writeStatus(w, r, apierrors.NewInternalError(err))
			return
		}
		patched, err := applyPatch(patchType, curJSON, body, cur)
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		o, err := k.decodeObject(w, req, patched)
		if err == nil {
			err = checkMeta(req, o)
		}
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		// A patch that does not name a resourceVersion applies to the newest one: on a conflict it is
		// applied again, as kube-apiserver does.
		pinned := o.GetResourceVersion() != cur.GetResourceVersion()
		if !pinned {
			o.SetResourceVersion(old.GetResourceVersion())
		}
		out, err := k.store(r.Context(), req, old, o)
		if apierrors.IsConflict(err) && !pinned && attempt < maxPatchRetries {
			continue
		}
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		encode(w, http.StatusOK, toRuntime(k.prepare(out)))
		return
	}
}

// applyPatch applies a JSON, merge or strategic merge patch to a JSON document of the type of schema.
func applyPatch(pt types.PatchType, cur, patch []byte, schema any) ([]byte, error) {
	var out []byte
	var err error
	switch pt {
	case types.JSONPatchType:
		var p jsonpatch.Patch
		if p, err = jsonpatch.DecodePatch(patch); err == nil {
			out, err = p.Apply(cur)
		}
	case types.MergePatchType:
		out, err = jsonpatch.MergePatch(cur, patch)
	case types.StrategicMergePatchType:
		var m map[string]any
		if err = json.Unmarshal(patch, &m); err == nil {
			out, err = strategicpatch.StrategicMergePatch(cur, patch, schema)
		}
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the %s patch could not be applied: %v", pt, err))
	}
	return out, nil
}

// ---- server-side apply ----

func (k *kubeAPI) apply(w http.ResponseWriter, r *http.Request, req *writeRequest, body []byte) {
	if req.sub == "scale" {
		k.writeStatus(w, r, apierrors.NewBadRequest("server-side apply of the scale subresource is not served; use `kubectl scale`"))
		return
	}
	if r.URL.Query().Get("fieldManager") == "" {
		k.writeStatus(w, r, apierrors.NewBadRequest("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"))
		return
	}
	data, err := yaml.YAMLToJSON(body)
	if err != nil {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("the apply patch is not valid YAML: %v", err)))
		return
	}
	applied, err := k.decodeObject(w, req, data)
	if err == nil {
		err = checkMeta(req, applied)
	}
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	fm, err := fieldManagerFor(req.res, req.sub)
	if err != nil {
		k.writeStatus(w, r, apierrors.NewInternalError(err))
		return
	}
	for attempt := 0; ; attempt++ {
		old, err := k.getStored(req)
		creating := apierrors.IsNotFound(err)
		if err != nil && !creating {
			k.writeStatus(w, r, err)
			return
		}
		var live kruntime.Object
		if creating {
			if req.sub != "" {
				k.writeStatus(w, r, err)
				return
			}
			live = toRuntime(req.res.store.New())
		} else {
			live = toRuntime(k.prepare(api.DeepCopy(old)))
		}
		// The applied configuration goes to the field manager as the client wrote it (unstructured, as
		// kube-apiserver passes it): a typed copy would carry zero values (a Service port's targetPort: 0)
		// the client never set, and they would be owned, and conflict, as if it had.
		appliedObj := &unstructured.Unstructured{}
		if err := json.Unmarshal(data, &appliedObj.Object); err != nil {
			k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("the apply patch is not a JSON object: %v", err)))
			return
		}
		if ns := applied.GetNamespace(); ns != "" {
			appliedObj.SetNamespace(ns) // as checkMeta set it from the path
		}
		setGVK(live)
		merged, err := fm.Apply(live, appliedObj, req.fieldManager, req.force)
		if err != nil {
			k.writeStatus(w, r, applyError(err))
			return
		}
		o := merged.(metav1.Object)
		k.unprepare(o, old) // old is nil when creating
		if creating {
			if err := createRefused(req); err != nil {
				k.writeStatus(w, r, err)
				return
			}
			if err := k.validate(req.res, o); err != nil {
				k.writeStatus(w, r, err)
				return
			}
			if err := k.s.Registry.Create(r.Context(), req.account, o, req.dryRun); err != nil {
				if apierrors.IsAlreadyExists(kubeError(req.res, o.GetName(), err)) && attempt < maxPatchRetries {
					continue
				}
				k.writeStatus(w, r, kubeError(req.res, o.GetName(), err))
				return
			}
			encode(w, http.StatusCreated, toRuntime(k.prepare(o)))
			return
		}
		if err := k.validate(req.res, o); req.sub != "status" && err != nil {
			k.writeStatus(w, r, err)
			return
		}
		o.SetResourceVersion(old.GetResourceVersion())
		err = k.s.Registry.UpdateWith(r.Context(), req.account, o, registry.UpdateOptions{DryRun: req.dryRun, Status: req.sub == "status"})
		if err != nil {
			kerr := kubeError(req.res, req.name, err)
			if apierrors.IsConflict(kerr) && attempt < maxPatchRetries {
				continue
			}
			k.writeStatus(w, r, kerr)
			return
		}
		encode(w, http.StatusOK, toRuntime(k.prepare(o)))
		return
	}
}

// applyError passes the FieldManager's errors through: a conflict is already a 409 Status with the
// conflicting managers as causes.
func applyError(err error) error {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return err
	}
	return apierrors.NewBadRequest(err.Error())
}

// fieldManagers are built once per resource and subresource: building one parses the schema.
var (
	fieldManagersMu sync.Mutex
	fieldManagers   = map[string]*managedfields.FieldManager{}
	builtinTypes    managedfields.TypeConverter
)

// fieldManagerFor is the FieldManager of a resource (or its status subresource): typed by client-go's
// schema of the built-in kinds, and deduced from the objects for pilab's own (as for a CRD without a
// schema: every field atomic).
func fieldManagerFor(res *resource, sub string) (*managedfields.FieldManager, error) {
	if sub != "status" {
		sub = ""
	}
	key := res.gv.String() + "/" + res.name + "/" + sub
	fieldManagersMu.Lock()
	defer fieldManagersMu.Unlock()
	if fm, ok := fieldManagers[key]; ok {
		return fm, nil
	}
	gvk := res.gv.WithKind(res.kind)
	var fm *managedfields.FieldManager
	var err error
	if res.gv == PilabGroupVersion {
		fm, err = managedfields.NewDefaultCRDFieldManager(managedfields.NewDeducedTypeConverter(), Scheme, Scheme, Scheme, gvk, res.gv, sub, nil)
	} else {
		if builtinTypes == nil {
			builtinTypes = applyconfigurations.NewTypeConverter(Scheme)
		}
		fm, err = managedfields.NewDefaultFieldManager(builtinTypes, Scheme, Scheme, Scheme, gvk, res.gv, sub, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("field manager for %s: %w", res.name, err)
	}
	fieldManagers[key] = fm
	return fm, nil
}

func setGVK(o kruntime.Object) {
	if gvks, _, err := Scheme.ObjectKinds(o); err == nil {
		o.GetObjectKind().SetGroupVersionKind(gvks[0])
	}
}

// trackFields records in o's managedFields what req's manager set, as kube-apiserver does on every
// create and update (old nil: a create).
func (k *kubeAPI) trackFields(req *writeRequest, old, o metav1.Object) error {
	fm, err := fieldManagerFor(req.res, req.sub)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	var live kruntime.Object
	if old == nil {
		live = toRuntime(req.res.store.New())
	} else {
		live = toRuntime(k.prepare(api.DeepCopy(old)))
	}
	obj := toRuntime(o)
	setGVK(live)
	setGVK(obj)
	out := fm.UpdateNoErrors(live, obj, req.fieldManager)
	if m, ok := out.(metav1.Object); ok {
		o.SetManagedFields(m.GetManagedFields())
	}
	return nil
}

// ---- scale ----

// scaleOf reads a Deployment's or ReplicaSet's replicas as a Scale.
func scaleOf(o metav1.Object) (*autoscalingv1.Scale, error) {
	sc := &autoscalingv1.Scale{TypeMeta: metav1.TypeMeta{APIVersion: "autoscaling/v1", Kind: "Scale"},
		ObjectMeta: metav1.ObjectMeta{Name: o.GetName(), Namespace: api.Namespace, UID: o.GetUID(),
			ResourceVersion: o.GetResourceVersion(), CreationTimestamp: o.GetCreationTimestamp()}}
	var sel *metav1.LabelSelector
	switch v := o.(type) {
	case *appsv1.Deployment:
		sc.Spec.Replicas, sc.Status.Replicas, sel = replicasOf(v.Spec.Replicas), v.Status.Replicas, v.Spec.Selector
	case *appsv1.ReplicaSet:
		sc.Spec.Replicas, sc.Status.Replicas, sel = replicasOf(v.Spec.Replicas), v.Status.Replicas, v.Spec.Selector
	default:
		return nil, fmt.Errorf("%T has no scale", o)
	}
	if s, err := metav1.LabelSelectorAsSelector(sel); err == nil {
		sc.Status.Selector = s.String()
	}
	return sc, nil
}

func replicasOf(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// getScale answers GET .../scale.
func (k *kubeAPI) getScale(w http.ResponseWriter, r *http.Request, req *readRequest) {
	o, err := k.getStored(&writeRequest{readRequest: req})
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	sc, err := scaleOf(o)
	if err != nil {
		k.writeStatus(w, r, apierrors.NewInternalError(err))
		return
	}
	encode(w, http.StatusOK, sc)
}

// writeScale changes a Deployment's or ReplicaSet's replicas to what change makes of its Scale.
func (k *kubeAPI) writeScale(w http.ResponseWriter, r *http.Request, req *writeRequest, change func(*autoscalingv1.Scale) (*autoscalingv1.Scale, error)) {
	gr := schema.GroupResource{Group: "autoscaling", Resource: "scale"}
	for attempt := 0; ; attempt++ {
		old, err := k.getStored(req)
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		cur, _ := scaleOf(old)
		sc, err := change(cur.DeepCopy())
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		if sc.Name != "" && sc.Name != req.name {
			k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", sc.Name, req.name)))
			return
		}
		if sc.Spec.Replicas < 0 {
			k.writeStatus(w, r, apierrors.NewInvalid(schema.GroupKind{Group: "autoscaling", Kind: "Scale"}, req.name,
				field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), sc.Spec.Replicas, "must be greater than or equal to 0")}))
			return
		}
		pinned := sc.ResourceVersion != "" && sc.ResourceVersion != cur.ResourceVersion
		o := api.DeepCopy(old)
		n := sc.Spec.Replicas
		switch v := o.(type) {
		case *appsv1.Deployment:
			v.Spec.Replicas = &n
		case *appsv1.ReplicaSet:
			v.Spec.Replicas = &n
		}
		o.SetResourceVersion(old.GetResourceVersion())
		if pinned {
			o.SetResourceVersion(sc.ResourceVersion)
		}
		sub := req.sub
		req.sub = ""
		_, err = k.store(r.Context(), req, old, o)
		req.sub = sub
		if apierrors.IsConflict(err) && !pinned && attempt < maxPatchRetries {
			continue
		}
		if err != nil {
			if apierrors.IsConflict(err) {
				err = apierrors.NewConflict(gr, req.name, errors.New(store.ErrConflict.Error()))
			}
			k.writeStatus(w, r, err)
			return
		}
		out, _ := scaleOf(o)
		encode(w, http.StatusOK, out)
		return
	}
}

// ---- delete ----

func (k *kubeAPI) parseDeleteOptions(r *http.Request) (*metav1.DeleteOptions, error) {
	opts := &metav1.DeleteOptions{}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(data) > maxBody {
		return nil, apierrors.NewBadRequest("the DeleteOptions body could not be read")
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case len(strings.TrimSpace(string(data))) == 0:
	case ct == "application/vnd.kubernetes.protobuf":
		// client-go's typed clientsets send DeleteOptions as protobuf too.
		if _, _, err := protobufSerializer.Decode(data, nil, opts); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the body is not protobuf-encoded DeleteOptions: %v", err))
		}
	default:
		if _, err := sigsjson.UnmarshalStrict(data, opts); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the body is not DeleteOptions: %v", err))
		}
	}
	q := r.URL.Query()
	if g := q.Get("gracePeriodSeconds"); g != "" {
		n, err := strconv.ParseInt(g, 10, 64)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("gracePeriodSeconds must be a whole number, not %q", g))
		}
		opts.GracePeriodSeconds = &n
	}
	if p := q.Get("propagationPolicy"); p != "" {
		pp := metav1.DeletionPropagation(p)
		opts.PropagationPolicy = &pp
	}
	if o := q.Get("orphanDependents"); o != "" {
		b := isTrue(o)
		opts.OrphanDependents = &b
	}
	if q.Get("dryRun") == "All" {
		opts.DryRun = []string{"All"}
	}
	if err := checkDeleteOptions(opts); err != nil {
		return nil, err
	}
	return opts, nil
}

// checkDeleteOptions checks DeleteOptions as kube-apiserver validates them, and turns orphanDependents
// into the propagationPolicy it means.
func checkDeleteOptions(opts *metav1.DeleteOptions) error {
	if opts.GracePeriodSeconds != nil && *opts.GracePeriodSeconds < 0 {
		return apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "DeleteOptions"}, "",
			field.ErrorList{field.Invalid(field.NewPath("gracePeriodSeconds"), *opts.GracePeriodSeconds, "must be greater than or equal to 0")})
	}
	if opts.PropagationPolicy != nil {
		switch *opts.PropagationPolicy {
		case metav1.DeletePropagationForeground, metav1.DeletePropagationBackground, metav1.DeletePropagationOrphan:
		default:
			return apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "DeleteOptions"}, "",
				field.ErrorList{field.NotSupported(field.NewPath("propagationPolicy"), *opts.PropagationPolicy, []string{"Foreground", "Background", "Orphan"})})
		}
		if opts.OrphanDependents != nil {
			return apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "DeleteOptions"}, "",
				field.ErrorList{field.Invalid(field.NewPath("propagationPolicy"), *opts.PropagationPolicy, "orphanDependents and propagationPolicy cannot both be set")})
		}
	}
	if opts.OrphanDependents != nil {
		pp := metav1.DeletePropagationBackground
		if *opts.OrphanDependents {
			pp = metav1.DeletePropagationOrphan
		}
		opts.PropagationPolicy = &pp
	}
	for _, d := range opts.DryRun {
		if d != "All" {
			return apierrors.NewBadRequest(fmt.Sprintf("dryRun: Unsupported value: %q: supported values: \"All\"", d))
		}
	}
	return nil
}

func (k *kubeAPI) delete(w http.ResponseWriter, r *http.Request, req *writeRequest) {
	if req.sub != "" {
		k.writeStatus(w, r, apierrors.NewMethodNotSupported(schema.GroupResource{Group: req.res.gv.Group, Resource: req.res.name + "/" + req.sub}, "delete"))
		return
	}
	opts, err := k.parseDeleteOptions(r)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	o, err := k.getStored(req)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	out, gone, err := k.deleteOne(r.Context(), req, o, opts)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if gone {
		encode(w, http.StatusOK, &metav1.Status{Status: metav1.StatusSuccess, Details: &metav1.StatusDetails{
			Name: o.GetName(), Group: req.res.gv.Group, Kind: req.res.name, UID: o.GetUID()}})
		return
	}
	encode(w, http.StatusOK, toRuntime(k.prepare(out)))
}

// deleteOne deletes o as opts say. It answers the object as it is after the request (being deleted:
// deletionTimestamp set, controllers finish), or gone when it is already out of the store.
func (k *kubeAPI) deleteOne(ctx context.Context, req *writeRequest, o metav1.Object, opts *metav1.DeleteOptions) (metav1.Object, bool, error) {
	res := req.res
	if p := opts.Preconditions; p != nil {
		if p.UID != nil && *p.UID != o.GetUID() {
			return nil, false, apierrors.NewConflict(res.groupResource(), o.GetName(),
				fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *p.UID, o.GetUID()))
		}
		if p.ResourceVersion != nil && *p.ResourceVersion != o.GetResourceVersion() {
			return nil, false, apierrors.NewConflict(res.groupResource(), o.GetName(),
				fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *p.ResourceVersion, o.GetResourceVersion()))
		}
	}
	if opts.GracePeriodSeconds != nil && o.GetDeletionTimestamp() != nil && res.kind == "Pod" {
		// A shorter grace period for a pod already terminating takes effect, as in Kubernetes.
		if cur := o.GetDeletionGracePeriodSeconds(); cur == nil || *opts.GracePeriodSeconds < *cur {
			if _, err := k.s.Store.Mutate(res.store, req.account, o.GetName(), func(o metav1.Object) error {
				o.SetDeletionGracePeriodSeconds(opts.GracePeriodSeconds)
				return nil
			}); err != nil {
				return nil, false, kubeError(res, o.GetName(), err)
			}
		}
	}
	if len(opts.DryRun) > 0 {
		return o, false, nil
	}
	account := req.account
	if !res.namespaced {
		account = ""
	}
	policy := metav1.DeletePropagationBackground
	if opts.PropagationPolicy != nil {
		policy = *opts.PropagationPolicy
	}
	if policy == metav1.DeletePropagationOrphan {
		if err := k.orphanDependents(req.account, res, o); err != nil {
			return nil, false, err
		}
	}
	// Deleting an account deletes what it holds, as deleting a namespace does, unless told to orphan it
	// (which an account cannot: its objects live in it), or asked the pi way (no policy: refuse if it
	// holds anything).
	dopts := DeleteOptions{GracePeriodSeconds: opts.GracePeriodSeconds,
		Cascade: res.kind == "Account" && opts.PropagationPolicy != nil && policy != metav1.DeletePropagationOrphan}
	if err := k.s.Backend.Delete(ctx, account, res.store, o.GetName(), o, dopts); err != nil {
		return nil, false, kubeError(res, o.GetName(), err)
	}
	after, err := k.s.Store.Get(res.store, account, o.GetName())
	if store.IsNotFound(err) {
		return o, true, nil
	}
	if err != nil {
		return nil, false, kubeError(res, o.GetName(), err)
	}
	return after, false, nil
}

// orphanDependents takes owner's controller reference off the objects it controls (a Deployment's
// ReplicaSets, a ReplicaSet's pods), so deleting the owner leaves them.
func (k *kubeAPI) orphanDependents(account string, res *resource, owner metav1.Object) error {
	var dep api.Kind
	switch res.kind {
	case "Deployment":
		dep = storeKind("ReplicaSet")
	case "ReplicaSet":
		dep = storeKind("Pod")
	default:
		return nil
	}
	objs, err := k.s.Store.List(dep, account)
	if err != nil {
		return kubeError(res, owner.GetName(), err)
	}
	for _, d := range objs {
		if !ownedBy(d, owner.GetUID()) {
			continue
		}
		_, err := k.s.Store.Mutate(dep, account, d.GetName(), func(o metav1.Object) error {
			if !ownedBy(o, owner.GetUID()) {
				return store.ErrUnchanged
			}
			var refs []metav1.OwnerReference
			for _, r := range o.GetOwnerReferences() {
				if r.UID != owner.GetUID() {
					refs = append(refs, r)
				}
			}
			o.SetOwnerReferences(refs)
			return nil
		})
		if err != nil && !store.IsNotFound(err) {
			return apierrors.NewInternalError(fmt.Errorf("orphan %s %q of %s %q: %w", dep.Singular, d.GetName(), res.singular, owner.GetName(), err))
		}
	}
	return nil
}

func ownedBy(o metav1.Object, uid types.UID) bool {
	for _, r := range o.GetOwnerReferences() {
		if r.UID == uid {
			return true
		}
	}
	return false
}

// deleteCollection deletes every object the selectors pick, answering the list of them.
func (k *kubeAPI) deleteCollection(w http.ResponseWriter, r *http.Request, req *writeRequest) {
	opts, err := k.parseDeleteOptions(r)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	objs, rv, err := k.read(req.readRequest)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	var items []kruntime.Object
	for _, o := range objs {
		if !req.matches(o, k.node) {
			continue
		}
		// read prepared the object for serving; delete the stored one.
		stored, err := k.getStored(&writeRequest{readRequest: &readRequest{res: req.res, account: req.account, admin: req.admin, name: o.GetName()}})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		out, gone, err := k.deleteOne(r.Context(), req, stored, opts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			k.writeStatus(w, r, err)
			return
		}
		if gone {
			out = stored
		}
		items = append(items, toRuntime(k.prepare(out)))
	}
	list := req.res.newList()
	if err := setList(list, items, rv); err != nil {
		k.writeStatus(w, r, apierrors.NewInternalError(err))
		return
	}
	encode(w, http.StatusOK, list)
}

// ---- errors ----

// kubeError turns an error of the registry or the store about the object name of resource res into the
// Status kube-apiserver would answer.
func kubeError(res *resource, name string, err error) error {
	var se apierrors.APIStatus
	switch {
	case errors.As(err, &se):
		return err
	case errors.Is(err, store.ErrNotFound):
		var serr *store.Error
		if errors.As(err, &serr) && serr.Kind.Name == "Account" && res.kind != "Account" {
			return apierrors.NewNotFound(schema.GroupResource{Group: PilabGroupVersion.Group, Resource: "accounts"}, serr.Name)
		}
		return apierrors.NewNotFound(res.groupResource(), name)
	case errors.Is(err, store.ErrAlreadyExists):
		return apierrors.NewAlreadyExists(res.groupResource(), name)
	case errors.Is(err, store.ErrConflict):
		return apierrors.NewConflict(res.groupResource(), name, errors.New(store.ErrConflict.Error()))
	case registry.IsInvalid(err):
		var inv *registry.InvalidError
		errors.As(err, &inv)
		return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnprocessableEntity,
			Reason: metav1.StatusReasonInvalid, Message: inv.Msg,
			Details: &metav1.StatusDetails{Name: name, Group: res.gv.Group, Kind: res.kind}}}
	}
	return apierrors.NewInternalError(fmt.Errorf("%s %q: %w", res.singular, name, err))
}
