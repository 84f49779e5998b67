package openapi

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pilab/pi/lab/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestGeneratedCurrent regenerates zz_generated.openapi.go into a temporary directory and fails if the
// committed file differs: a type or doc comment changed without `make openapi`. It builds and runs
// openapi-gen (go tool, pinned in go.mod): a few seconds once the build cache holds it.
func TestGeneratedCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("regenerates with openapi-gen; not in -short")
	}
	dir := t.TempDir()
	start := time.Now()
	out, err := exec.Command("sh", "gen.sh", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	t.Logf("openapi-gen took %v", time.Since(start).Round(time.Millisecond))
	for _, f := range []string{"zz_generated.openapi.go", "api_violations.list"} {
		want, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(have, want) {
			t.Errorf("lab/openapi/%s is stale: run `make openapi` and commit the result", f)
		}
	}
}

// The pilab kinds' definitions carry their Go docs and their names in pilab's group.
func TestNewPilabDefinitions(t *testing.T) {
	gv := schema.GroupVersion{Group: "pilab.dev", Version: "v1"}
	start := time.Now()
	s, err := New(runtime.NewScheme(), []Resource{
		{GroupVersion: gv, Name: "floatingips", Kind: "FloatingIP", Namespaced: true, Verbs: []string{"get", "list", "patch"},
			Object: &api.FloatingIP{}, List: &FloatingIPList{},
			Subresources: []Subresource{{Name: "status", Kind: gv.WithKind("FloatingIP"), Verbs: []string{"get", "patch"}, Object: &api.FloatingIP{}}}},
		{GroupVersion: corev1.SchemeGroupVersion, Name: "pods", Kind: "Pod", Namespaced: true, Verbs: []string{"get", "create"},
			Object: &corev1.Pod{}, List: &corev1.PodList{}},
	}, "v0")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("New took %v", time.Since(start).Round(time.Millisecond))
	for _, p := range []string{"/openapi/v2", "/openapi/v3", "/openapi/v3/api/v1", "/openapi/v3/apis/pilab.dev/v1"} {
		if !s.Handles(p) {
			t.Errorf("Handles(%q) = false", p)
		}
	}
	if s.Handles("/openapi/v3/apis/apps/v1") {
		t.Errorf("Handles a group version it has no resource of")
	}
	n := newNamer(runtime.NewScheme(), []Resource{{GroupVersion: gv, Kind: "FloatingIP", Object: &api.FloatingIP{}, List: &FloatingIPList{}}})
	name, ext := n.name("github.com/pilab/pi/lab/api.FloatingIP")
	if name != "dev.pilab.v1.FloatingIP" || ext == nil {
		t.Errorf("name = %q, %v; want dev.pilab.v1.FloatingIP with its GVK", name, ext)
	}
	if name, _ := n.name(metav1.ObjectMeta{}.OpenAPIModelName()); name != "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" {
		t.Errorf("ObjectMeta named %q", name)
	}
	for id, want := range map[string]string{"listNamespacedPod /api/v1/namespaces/{namespace}/pods": "listCoreV1NamespacedPod",
		"deletecollectionNamespacedFloatingIP /apis/pilab.dev/v1/namespaces/{namespace}/floatingips": "deletePilabDevV1CollectionNamespacedFloatingIP"} {
		var op, p string
		for i := range id {
			if id[i] == ' ' {
				op, p = id[:i], id[i+1:]
			}
		}
		got, tags, err := operationIDAndTags(&route{op: op, path: p})
		if err != nil || got != want || len(tags) != 1 {
			t.Errorf("operationIDAndTags(%s) = %q %v %v, want %q", id, got, tags, err, want)
		}
	}
}
