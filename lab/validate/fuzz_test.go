package validate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/pilab/pi/lab/api"
	"sigs.k8s.io/yaml"
)

// FuzzValidate decodes bytes into each kind the API accepts from users and validates it: no object,
// however odd, makes validation panic, and a refusal always names a field.
func FuzzValidate(f *testing.F) {
	files, _ := filepath.Glob("../../scenarios/manifests/*")
	if len(files) == 0 {
		f.Fatal("no manifests in ../../scenarios/manifests to seed the corpus")
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if j, err := yaml.YAMLToJSON(b); err == nil {
			f.Add(j)
		}
	}
	for _, c := range podCases {
		if j, err := yaml.YAMLToJSON([]byte(podYAML(c.spec, c.ctr))); err == nil {
			f.Add(j)
		}
	}
	f.Add([]byte(`{"metadata":{"name":"a"},"spec":{"strategy":{"rollingUpdate":{"maxSurge":"0%","maxUnavailable":0}},"template":{"spec":{"containers":[{"name":"a","image":"b","readinessProbe":{"httpGet":{"port":"http"}}}]}}}}`))
	f.Add([]byte(`{"metadata":{"name":"192.0.2.1"},"spec":{"displayName":"x","fipQuota":-1,"clusterIPs":["a","b"],"sessionAffinityConfig":{"clientIP":{"timeoutSeconds":1}}}}`))
	var kinds []api.Kind
	for _, k := range api.Kinds() {
		switch k.Name {
		case "Pod", "Service", "Deployment", "ReplicaSet", "Account", "FloatingIP":
			kinds = append(kinds, k)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, k := range kinds {
			o := k.New()
			if json.Unmarshal(data, o) != nil {
				continue
			}
			for _, e := range Errors(o) {
				if e.Field == "" {
					t.Fatalf("%s: an error names no field: %v", k.Name, e)
				}
			}
		}
	})
}
