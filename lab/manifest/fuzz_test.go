package manifest

import (
	"os"
	"path/filepath"
	"testing"
)

// seedManifests adds the lab's own manifests and a few edge cases to a fuzz corpus.
func seedManifests(f *testing.F) {
	files, _ := filepath.Glob("../../scenarios/manifests/*")
	if len(files) == 0 {
		f.Fatal("no manifests in ../../scenarios/manifests to seed the corpus")
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(pod + "---\n" + pod))
	f.Add([]byte(`{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"nginx","env":[{"name":"X","valueFrom":{"fieldRef":{"fieldPath":"metadata.labels['a']"}}}]}]}}}}`))
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: x}]}\n"))
}

// FuzzParse: no input makes the manifest reader panic, and every document is either returned or named in
// an error.
func FuzzParse(f *testing.F) {
	seedManifests(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, errs := Parse("fuzz.yml", data)
		for _, d := range docs {
			if d.Object == nil || d.Index < 1 || d.Source != "fuzz.yml" {
				t.Fatalf("document without an object or a place: %+v", d)
			}
			_ = d.Where()
		}
		for _, e := range errs {
			if len(e) < len("fuzz.yml") || e[:len("fuzz.yml")] != "fuzz.yml" {
				t.Fatalf("error does not name the file: %q", e)
			}
		}
	})
}
