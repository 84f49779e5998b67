package registry

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/pilab/pi/lab/api"
	"sigs.k8s.io/yaml"
)

// FuzzAdmission feeds admission any object a client could send — decoded as the API server decodes a
// body for the kind it names — and checks it never panics and never stores what it refused. It runs its
// seeds (the workshop manifests) as a test; CI also runs it with -fuzz for a bounded time.
func FuzzAdmission(f *testing.F) {
	seeds, _ := filepath.Glob("../../scenarios/manifests/*.yml")
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if js, err := yaml.YAMLToJSON(data); err == nil {
			f.Add(js)
		}
	}
	f.Add([]byte(`{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"type":"LoadBalancer","loadBalancerIP":"198.18.0.1","ports":[{"port":80}]}}`))
	f.Add([]byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":-3,"template":{"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}`))
	f.Add([]byte(`{"apiVersion":"pilab.dev/v1","kind":"Account","metadata":{"name":"a"},"spec":{"fipQuota":-1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tm struct{ Kind string }
		if json.Unmarshal(data, &tm) != nil {
			return
		}
		k, ok := api.LookupKind(tm.Kind)
		if !ok {
			return
		}
		o := k.New()
		if json.Unmarshal(data, o) != nil || o.GetName() == "" {
			return
		}
		r, st := newRegistry(t, 0)
		before, _ := st.List(k, "alice")
		err := r.Create(context.Background(), "alice", o, false)
		after, _ := st.List(k, "alice")
		if err != nil && len(after) != len(before) {
			t.Fatalf("refused (%v) but stored", err)
		}
		// A dry run of the same object again never stores either.
		o2 := k.New()
		json.Unmarshal(data, o2)
		o2.SetName(o2.GetName() + "x")
		r.Create(context.Background(), "alice", o2, true)
		if again, _ := st.List(k, "alice"); len(again) != len(after) {
			t.Fatalf("a dry run stored an object")
		}
	})
}
