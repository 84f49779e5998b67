package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/registry"
	"github.com/pilab/pi/lab/store"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// labImages resolves the lab's image names and nothing else; these tests check the API, not containerd.
type labImages struct{}

func (labImages) Resolve(_ context.Context, name string) (containerd.Image, error) {
	switch name {
	case "nginx", "busybox", "podinfo":
		return nil, nil
	}
	return nil, fmt.Errorf("image %q is not in the lab; build it with `pi image build %s`", name, name)
}

// kubeWriteLab is kubeLab with the registry the writes go through.
func kubeWriteLab(t testing.TB) (*store.Store, *httptest.Server) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(registry.Config{Store: st, Images: labImages{}, SequentialIPs: true})
	for _, a := range []string{"default", "alice"} {
		if err := reg.Create(context.Background(), "", &api.Account{ObjectMeta: metav1.ObjectMeta{Name: a}}, false); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer((&Server{Store: st, Registry: reg, Backend: storeDeleter{st}}).KubeHandler())
	t.Cleanup(srv.Close)
	return st, srv
}

// storeDeleter is the daemon's delete without controllers: the object goes from the store at once (the
// daemon's Backend stops a pod's containers first). Streams are tested in kube_stream_test.go.
type storeDeleter struct{ st *store.Store }

func (d storeDeleter) Delete(_ context.Context, account string, k api.Kind, name string, _ metav1.Object, _ DeleteOptions) error {
	return d.st.Delete(k, account, name)
}
func (storeDeleter) Extra() http.Handler { return http.NotFoundHandler() }

func jsonClientset(t *testing.T, url, as string) *kubernetes.Clientset {
	t.Helper()
	cfg := &rest.Config{Host: url}
	cfg.ContentType = "application/json"
	cfg.Impersonate.UserName = as
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func nginxPod(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "nginx", Image: "nginx"}}}}
}

func TestKubeCreate(t *testing.T) {
	st, srv := kubeWriteLab(t)
	ctx := context.Background()
	for _, cs := range []*kubernetes.Clientset{clientset(t, srv.URL, ""), jsonClientset(t, srv.URL, "")} {
		pods := cs.CoreV1().Pods("default")
		// generateName, dry run first: answered, not stored.
		p := nginxPod("")
		p.GenerateName = "web-"
		dry, err := pods.Create(ctx, p, metav1.CreateOptions{DryRun: []string{"All"}})
		if err != nil || !strings.HasPrefix(dry.Name, "web-") || len(dry.Name) != len("web-")+5 {
			t.Fatalf("dry-run create: %v %q", err, dry.GetName())
		}
		if _, err := st.Get(kindPod, "default", dry.Name); !store.IsNotFound(err) {
			t.Errorf("a dry run stored the pod: %v", err)
		}
		got, err := pods.Create(ctx, p, metav1.CreateOptions{FieldManager: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if got.UID == "" || got.ResourceVersion == "" || got.Namespace != "default" || got.Status.Phase != corev1.PodPending {
			t.Errorf("created pod: uid %q rv %q ns %q phase %q", got.UID, got.ResourceVersion, got.Namespace, got.Status.Phase)
		}
		if len(got.ManagedFields) != 1 || got.ManagedFields[0].Manager != "test" || got.ManagedFields[0].Operation != metav1.ManagedFieldsOperationUpdate {
			t.Errorf("managedFields: %+v", got.ManagedFields)
		}
		if _, ok := got.Annotations[api.AccountAnnotation]; ok {
			t.Errorf("the account annotation is served: %v", got.Annotations)
		}
		stored, err := st.Get(kindPod, "default", got.Name)
		if err != nil || api.AccountOf(stored) != "default" {
			t.Errorf("stored: %v %v", err, stored)
		}
		if _, err := pods.Create(ctx, nginxPod(got.Name), metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
			t.Errorf("create twice: %v, want AlreadyExists", err)
		}
	}
	cs := jsonClientset(t, srv.URL, "")
	// Validation errors carry their field causes.
	bad := nginxPod("bad")
	bad.Spec.Containers[0].Name = "Not_A_Name"
	_, err := cs.CoreV1().Pods("default").Create(ctx, bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("invalid pod: %v, want Invalid", err)
	}
	st1 := err.(apierrors.APIStatus).Status()
	if st1.Details == nil || len(st1.Details.Causes) == 0 || st1.Details.Causes[0].Field != "spec.containers[0].name" {
		t.Errorf("invalid pod causes: %+v", st1.Details)
	}
	// Admission: an image the lab does not have.
	img := nginxPod("img")
	img.Spec.Containers[0].Image = "nosuch"
	if _, err := cs.CoreV1().Pods("default").Create(ctx, img, metav1.CreateOptions{}); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "pi image build nosuch") {
		t.Errorf("unknown image: %v", err)
	}
	// Other namespaces do not exist; namespaces cannot be made.
	if _, err := cs.CoreV1().Pods("kube-system").Create(ctx, nginxPod("x"), metav1.CreateOptions{}); !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), `namespaces "kube-system" not found`) {
		t.Errorf("create in kube-system: %v", err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dev"}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("create a namespace: %v, want Forbidden", err)
	}
	// Alice's pod is hers: the default account does not see it.
	if _, err := jsonClientset(t, srv.URL, "alice").CoreV1().Pods("default").Create(ctx, nginxPod("mine"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("default").Get(ctx, "mine", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("alice's pod seen by default: %v", err)
	}
}

// post sends a raw request and returns the code and body.
func send(t *testing.T, method, url, contentType, body string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header
}

func TestKubeFieldValidation(t *testing.T) {
	st, srv := kubeWriteLab(t)
	pods := srv.URL + "/api/v1/namespaces/default/pods"
	body := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s"},"spec":{"containers":[{"name":"c","image":"nginx","imagePullPolice":"Never"}],"dnsPolicy":"Default","dnsPolicy":"ClusterFirst"}}`
	code, out, _ := send(t, "POST", pods+"?fieldValidation=Strict", "application/json", fmt.Sprintf(body, "strict"))
	if code != 400 || !strings.Contains(out, `strict decoding error: unknown field \"spec.containers[0].imagePullPolice\"`) || !strings.Contains(out, `duplicate field \"spec.dnsPolicy\"`) {
		t.Errorf("Strict: %d %s", code, out)
	}
	code, out, hdr := send(t, "POST", pods+"?fieldValidation=Warn", "application/json", fmt.Sprintf(body, "warn"))
	if code != 201 || !strings.Contains(strings.Join(hdr.Values("Warning"), "\n"), `unknown field`) {
		t.Errorf("Warn: %d %v %s", code, hdr.Values("Warning"), out)
	}
	code, _, hdr = send(t, "POST", pods+"?fieldValidation=Ignore", "application/json", fmt.Sprintf(body, "ignore"))
	if code != 201 || len(hdr.Values("Warning")) != 0 {
		t.Errorf("Ignore: %d %v", code, hdr.Values("Warning"))
	}
	for _, c := range []struct{ method, url, ct, body, want string }{
		{"POST", pods + "?fieldValidation=Sloppy", "application/json", "{}", `fieldValidation: Unsupported value: \"Sloppy\"`},
		{"POST", pods, "text/plain", "{}", `accepted media types include`},
		{"POST", pods, "application/json", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}`, `the kind in the data (Service) does not match the expected kind (Pod)`},
		{"POST", pods, "application/json", `{"apiVersion":"apps/v1","kind":"Pod"}`, `the API version in the data (apps/v1) does not match the expected API version (v1)`},
		{"POST", pods, "application/json", `{"metadata":{"name":"x","namespace":"other"}}`, `the namespace of the provided object does not match`},
		{"POST", pods, "application/json", `[1,2`, `not a JSON object`},
		{"PUT", pods + "/strict", "application/json", `{"metadata":{"name":"other"}}`, `does not match the name on the URL`},
		{"PATCH", pods + "/warn", "application/json-patch+json", `[{"op":"frob"}]`, `could not be applied`},
		{"PATCH", pods + "/warn", "text/plain", `{}`, `accepted media types include`},
		{"POST", pods + "?dryRun=Some", "application/json", `{}`, `dryRun: Unsupported value`},
		{"DELETE", pods + "/warn?propagationPolicy=Sideways", "application/json", ``, `propagationPolicy: Unsupported value`},
	} {
		code, out, _ := send(t, c.method, c.url, c.ct, c.body)
		if code < 400 || !strings.Contains(out, c.want) || !strings.Contains(out, `"kind":"Status"`) {
			t.Errorf("%s %s %s: %d %s, want a Status saying %s", c.method, c.url, c.body, code, out, c.want)
		}
	}
	// None of the refused requests changed anything.
	objs, _ := st.List(kindPod, "default")
	if len(objs) != 2 {
		t.Errorf("pods after the refusals: %d, want 2 (warn, ignore)", len(objs))
	}
	big := `{"metadata":{"name":"big","annotations":{"a":"` + strings.Repeat("x", maxBody) + `"}}}`
	if code, out, _ := send(t, "POST", pods, "application/json", big); code != 413 {
		t.Errorf("oversized: %d %.200s", code, out)
	}
}

func TestKubeUpdateAndPatch(t *testing.T) {
	_, srv := kubeWriteLab(t)
	ctx := context.Background()
	cs := clientset(t, srv.URL, "")
	pods := cs.CoreV1().Pods("default")
	p, err := pods.Create(ctx, nginxPod("web"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Update: labels change; a stale resourceVersion is a Conflict.
	p.Labels["tier"] = "front"
	up, err := pods.Update(ctx, p, metav1.UpdateOptions{})
	if err != nil || up.Labels["tier"] != "front" || up.ResourceVersion == p.ResourceVersion {
		t.Fatalf("update: %v %v", err, up.GetLabels())
	}
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("update with a stale resourceVersion: %v, want Conflict", err)
	}
	// A pod's spec does not change.
	up.Spec.Containers[0].Image = "busybox"
	if _, err := pods.Update(ctx, up, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Errorf("change a pod's spec: %v, want Invalid", err)
	}
	// The three patch types.
	for _, c := range []struct {
		pt    types.PatchType
		patch string
		label string
	}{
		{types.MergePatchType, `{"metadata":{"labels":{"by":"merge"}}}`, "merge"},
		{types.StrategicMergePatchType, `{"metadata":{"labels":{"by":"strategic"}}}`, "strategic"},
		{types.JSONPatchType, `[{"op":"replace","path":"/metadata/labels/by","value":"json"}]`, "json"},
	} {
		got, err := pods.Patch(ctx, "web", c.pt, []byte(c.patch), metav1.PatchOptions{})
		if err != nil || got.Labels["by"] != c.label || got.Labels["app"] != "web" {
			t.Errorf("%s patch: %v %v", c.pt, err, got.GetLabels())
		}
	}
	// Dry-run patch: answered, not stored.
	got, err := pods.Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"labels":{"by":"dry"}}}`), metav1.PatchOptions{DryRun: []string{"All"}})
	if err != nil || got.Labels["by"] != "dry" {
		t.Errorf("dry-run patch: %v %v", err, got.GetLabels())
	}
	if now, _ := pods.Get(ctx, "web", metav1.GetOptions{}); now.Labels["by"] != "json" {
		t.Errorf("a dry-run patch was stored: %v", now.Labels)
	}
	// A patch pinned to an old resourceVersion is a Conflict, not retried.
	pin := fmt.Sprintf(`{"metadata":{"resourceVersion":%q,"labels":{"by":"pinned"}}}`, p.ResourceVersion)
	if _, err := pods.Patch(ctx, "web", types.MergePatchType, []byte(pin), metav1.PatchOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("pinned patch: %v, want Conflict", err)
	}
	if _, err := pods.Patch(ctx, "nosuch", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("patch a missing pod: %v", err)
	}
	// Strategic merge patch merges lists by key: a Deployment's container env.
	deps := cs.AppsV1().Deployments("default")
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "podinfo"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "podinfo"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "podinfo"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "podinfo", Image: "podinfo", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}}}}}}}
	if _, err := deps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	smp := `{"spec":{"template":{"spec":{"containers":[{"name":"podinfo","env":[{"name":"B","value":"2"}]}]}}}}`
	got2, err := deps.Patch(ctx, "podinfo", types.StrategicMergePatchType, []byte(smp), metav1.PatchOptions{})
	if err != nil || len(got2.Spec.Template.Spec.Containers) != 1 || len(got2.Spec.Template.Spec.Containers[0].Env) != 2 {
		t.Errorf("strategic merge of env: %v %+v", err, got2.Spec.Template.Spec.Containers)
	}
	if got2.Generation != 2 {
		t.Errorf("generation after a spec change: %d, want 2", got2.Generation)
	}
	// Scale.
	sc, err := deps.GetScale(ctx, "podinfo", metav1.GetOptions{})
	if err != nil || sc.Spec.Replicas != 1 || sc.Status.Selector != "app=podinfo" {
		t.Fatalf("get scale: %v %+v", err, sc)
	}
	sc.Spec.Replicas = 5
	if _, err := deps.UpdateScale(ctx, "podinfo", sc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := deps.Patch(ctx, "podinfo", types.MergePatchType, []byte(`{"spec":{"replicas":7}}`), metav1.PatchOptions{}, "scale"); err != nil {
		t.Fatal(err)
	}
	if now, _ := deps.Get(ctx, "podinfo", metav1.GetOptions{}); *now.Spec.Replicas != 7 {
		t.Errorf("replicas after scale: %d, want 7", *now.Spec.Replicas)
	}
	// Status writes change the status only.
	now, _ := deps.Get(ctx, "podinfo", metav1.GetOptions{})
	now.Status.ObservedGeneration = 42
	now.Spec.Paused = true
	st, err := deps.UpdateStatus(ctx, now, metav1.UpdateOptions{})
	if err != nil || st.Status.ObservedGeneration != 42 || st.Spec.Paused {
		t.Errorf("update status: %v observed %d paused %v", err, st.Status.ObservedGeneration, st.Spec.Paused)
	}
}

func TestKubeServerSideApply(t *testing.T) {
	_, srv := kubeWriteLab(t)
	ctx := context.Background()
	cs := jsonClientset(t, srv.URL, "")
	svcs := cs.CoreV1().Services("default")
	apply := applycorev1.Service("web", "default").WithLabels(map[string]string{"app": "web"}).
		WithSpec(applycorev1.ServiceSpec().WithSelector(map[string]string{"app": "web"}).
			WithPorts(applycorev1.ServicePort().WithPort(80).WithProtocol(corev1.ProtocolTCP)))
	got, err := svcs.Apply(ctx, apply, metav1.ApplyOptions{FieldManager: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.ClusterIP == "" || len(got.ManagedFields) != 1 || got.ManagedFields[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Errorf("apply created: clusterIP %q managedFields %+v", got.Spec.ClusterIP, got.ManagedFields)
	}
	// Another manager changing alice's field conflicts; with force it takes it over.
	other := applycorev1.Service("web", "default").WithLabels(map[string]string{"app": "other"})
	if _, err := svcs.Apply(ctx, other, metav1.ApplyOptions{FieldManager: "bob"}); !apierrors.IsConflict(err) || !strings.Contains(err.Error(), `conflict with "alice"`) {
		t.Errorf("bob's apply: %v, want a conflict with alice", err)
	}
	got, err = svcs.Apply(ctx, other, metav1.ApplyOptions{FieldManager: "bob", Force: true})
	if err != nil || got.Labels["app"] != "other" || got.Spec.ClusterIP == "" {
		t.Errorf("forced apply: %v %v", err, got.GetLabels())
	}
	// A field the applied configuration leaves out is not claimed: after a client-side create (another
	// manager, Update), applying the same Service without targetPort does not conflict on it.
	code, out, _ := send(t, "POST", srv.URL+"/api/v1/namespaces/default/services?fieldManager=kubectl-client-side-apply", "application/json",
		`{"apiVersion":"v1","kind":"Service","metadata":{"name":"csa"},"spec":{"selector":{"app":"web"},"ports":[{"port":80}]}}`)
	if code != 201 {
		t.Fatalf("create csa: %d %s", code, out)
	}
	code, out, _ = send(t, "PATCH", srv.URL+"/api/v1/namespaces/default/services/csa?fieldManager=kubectl", "application/apply-patch+yaml",
		"apiVersion: v1\nkind: Service\nmetadata:\n  name: csa\n  labels: {tier: front}\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n")
	if code != 200 || !strings.Contains(out, `"tier":"front"`) {
		t.Errorf("apply over a client-side create: %d %s", code, out)
	}
	// Raw apply-patch YAML, as kubectl apply --server-side sends it.
	yml := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: podinfo}\n  template:\n    metadata:\n      labels: {app: podinfo}\n    spec:\n      containers:\n      - name: podinfo\n        image: podinfo\n"
	u := srv.URL + "/apis/apps/v1/namespaces/default/deployments/podinfo?fieldManager=kubectl"
	code, out, _ = send(t, "PATCH", u, "application/apply-patch+yaml", yml)
	if code != 201 || !strings.Contains(out, `"replicas":2`) {
		t.Fatalf("apply a new deployment: %d %s", code, out)
	}
	code, out, _ = send(t, "PATCH", u, "application/apply-patch+yaml", strings.Replace(yml, "replicas: 2", "replicas: 3", 1))
	if code != 200 || !strings.Contains(out, `"replicas":3`) {
		t.Errorf("apply again: %d %s", code, out)
	}
	code, out, _ = send(t, "PATCH", strings.TrimSuffix(u, "?fieldManager=kubectl"), "application/apply-patch+yaml", yml)
	if code != 400 || !strings.Contains(out, "fieldManager: Required value") {
		t.Errorf("apply without a field manager: %d %s", code, out)
	}
}

// TestKubeDeleteOptionsBodies: a delete's options arrive in its body, as JSON or (client-go's typed
// clientsets) protobuf, and are honoured either way: a precondition on a wrong UID refuses the delete.
func TestKubeDeleteOptionsBodies(t *testing.T) {
	_, srv := kubeWriteLab(t)
	ctx := context.Background()
	for i, cs := range []*kubernetes.Clientset{clientset(t, srv.URL, ""), jsonClientset(t, srv.URL, "")} {
		services := cs.CoreV1().Services("default")
		svc, err := services.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i)},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wrong := types.UID("not-" + string(svc.UID))
		if err := services.Delete(ctx, svc.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &wrong}}); !apierrors.IsConflict(err) {
			t.Errorf("delete with a wrong UID precondition: %v, want a conflict", err)
		}
		if err := services.Delete(ctx, svc.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &svc.UID}}); err != nil {
			t.Errorf("delete with the right UID: %v", err)
		}
	}
}
