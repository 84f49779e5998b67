package server

// Nodes and evictions (issue 13). The lab's nodes are network namespaces it builds (`pi up --nodes N`, `pi
// node add|delete`), stored as corev1.Node objects: every user may read them, as `kubectl get nodes -o
// wide` in a lesson does; only the lab's admin may change them (cordon and uncordon: spec.unschedulable),
// through the registry like every other write; nobody makes or removes one through the API.
//
// Evictions (POST pods/NAME/eviction, policy/v1 or v1beta1) are what `kubectl drain` sends: the lab has no
// PodDisruptionBudgets, so an eviction is the pod's DELETE, with the Eviction's deleteOptions.

import (
	"encoding/json"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	policyv1beta1 "k8s.io/api/policy/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
)

// hostNodeFallback reports whether pod p is served on the machine's node although its spec names none: a
// pod the lab started before it had a scheduler (it has an address, so it runs). A pod the scheduler has
// not placed yet has neither, and is served without a node, as kubectl shows it (<none>).
func (k *kubeAPI) hostNodeFallback(p *corev1.Pod) bool {
	return p.Spec.NodeName == "" && p.Status.PodIP != ""
}

// nodeWriteRefused says why a write of a node (req, HTTP method m) is refused, nil if it may go on. An
// account is refused as Kubernetes' RBAC refuses a user without a role on nodes; the admin may update and
// patch, but not create or delete: a node is a network namespace, made and removed by pi.
func nodeWriteRefused(req *writeRequest, m string) error {
	verb := map[string]string{http.MethodPost: "create", http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete"}[m]
	if verb == "delete" && req.name == "" {
		verb = "deletecollection"
	}
	resource := req.res.name
	if req.sub != "" {
		resource += "/" + req.sub
	}
	if !req.admin {
		return apierrors.NewForbidden(req.res.groupResource(), req.name,
			fmt.Errorf("User %q cannot %s resource %q in API group %q at the cluster scope", req.account, verb, resource, req.res.gv.Group))
	}
	switch verb {
	case "create":
		return nodeCreateRefused(req.name)
	case "delete", "deletecollection":
		what, how := "nodes cannot", "`pi node delete NAME`"
		if req.name != "" {
			what, how = fmt.Sprintf("node %q cannot", req.name), fmt.Sprintf("`pi node delete %s`", req.name)
		}
		return methodNotAllowed(req.name, fmt.Sprintf("%s be deleted through the Kubernetes API: a node is a network namespace the lab built, with the pods on it; remove it with %s", what, how))
	}
	return nil
}

func nodeCreateRefused(name string) error {
	return methodNotAllowed(name, "nodes cannot be created through the Kubernetes API: a node is a network namespace the lab builds; add one with `pi node add`")
}

// createRefused refuses the creation of an object the API does not make (a server-side apply of a node
// that does not exist).
func createRefused(req *writeRequest) error {
	if req.res.kind == "Node" {
		return nodeCreateRefused(req.name)
	}
	return nil
}

func methodNotAllowed(name, msg string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed,
		Reason: metav1.StatusReasonMethodNotAllowed, Message: msg, Details: &metav1.StatusDetails{Name: name, Kind: "nodes"}}}
}

// evict serves POST pods/NAME/eviction: the pod is deleted as DELETE deletes it, with the Eviction's
// deleteOptions (grace period, preconditions, dryRun), and the answer is kube-apiserver's, 201 and a
// Status Success. The lab has no PodDisruptionBudgets, so no eviction is ever refused for one (429).
func (k *kubeAPI) evict(w http.ResponseWriter, r *http.Request, req *writeRequest) {
	data, err := readKubeBody(r, true)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("the body is not a JSON object: %v", err)))
		return
	}
	switch tm.APIVersion {
	case "", policyv1.SchemeGroupVersion.String(), policyv1beta1.SchemeGroupVersion.String():
	default:
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)", tm.APIVersion, policyv1.SchemeGroupVersion)))
		return
	}
	if tm.Kind != "" && tm.Kind != "Eviction" {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("the kind in the data (%s) does not match the expected kind (Eviction)", tm.Kind)))
		return
	}
	// policy/v1beta1's Eviction has the same fields as v1's.
	var ev policyv1.Eviction
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(data, &ev); err != nil {
		k.writeStatus(w, r, apierrors.NewBadRequest(fmt.Sprintf("the body is not a valid Eviction: %v", err)))
		return
	}
	if ev.Name != "" && ev.Name != req.name {
		k.writeStatus(w, r, apierrors.NewBadRequest("name in URL does not match name in Eviction object"))
		return
	}
	if ev.Namespace != "" && ev.Namespace != req.namespace {
		k.writeStatus(w, r, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request"))
		return
	}
	opts := ev.DeleteOptions
	if opts == nil {
		opts = &metav1.DeleteOptions{}
	}
	// A dry run asked for in the query or the body (kubectl drain --dry-run=server sets the body's).
	if req.dryRun && len(opts.DryRun) == 0 {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	if err := checkDeleteOptions(opts); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	pod, err := k.getStored(req)
	if err != nil {
		k.writeStatus(w, r, err)
		return
	}
	if _, _, err := k.deleteOne(r.Context(), req, pod, opts); err != nil {
		k.writeStatus(w, r, err)
		return
	}
	encode(w, http.StatusCreated, &metav1.Status{Status: metav1.StatusSuccess})
}
