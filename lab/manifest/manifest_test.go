package manifest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const pod = `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx
`

// bigPod is a pod whose annotation makes the document about n bytes.
func bigPod(n int) string {
	return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: big\n  annotations:\n    a: " + strings.Repeat("x", n) +
		"\nspec:\n  containers:\n  - name: a\n    image: busybox\n"
}

func TestParseErrors(t *testing.T) {
	elf := []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00\x01\x00\x00\x00")
	cases := []struct {
		name string
		data []byte
		want string // the whole first error line
	}{
		{"binary", elf, "bin.yml: document 1 is not a Kubernetes manifest (YAML or JSON with apiVersion and kind)"},
		{"invalid utf-8", []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: \xff\xfe\n"), "bin.yml: document 1 is not a Kubernetes manifest (YAML or JSON with apiVersion and kind)"},
		{"binary second document", append([]byte(pod+"---\n"), elf...), "bin.yml: document 2 is not a Kubernetes manifest (YAML or JSON with apiVersion and kind)"},
		{"a list", []byte("- a\n- b\n"), "bin.yml: document 1 is not a Kubernetes manifest (YAML or JSON with apiVersion and kind)"},
		{"a word", []byte("hello\n"), "bin.yml: document 1 is not a Kubernetes manifest (YAML or JSON with apiVersion and kind)"},
		{"broken YAML keeps the line", []byte("apiVersion: v1\nkind: Pod\nmetadata:\n name: a\n  x: b\n"), "bin.yml: document 1 is not a Kubernetes manifest (YAML or JSON with apiVersion and kind): yaml: line 5: mapping values are not allowed in this context"},
		{"kind not a string", []byte("apiVersion: v1\nkind: [Pod]\n"), "bin.yml: document 1: apiVersion and kind must be strings"},
		{"no kind", []byte("apiVersion: v1\nmetadata: {name: a}\n"), "bin.yml: document 1: kind is not set; every document needs apiVersion and kind"},
		{"unknown field", []byte(strings.Replace(pod, "image:", "imag:", 1)), `bin.yml: document 1: Pod: unknown field "spec.containers[0].imag"`},
		{"invalid", []byte(strings.Replace(pod, "spec:", "spec:\n  hostNetwork: true", 1)), `bin.yml: document 1 (Pod "web") is invalid: spec.hostNetwork: Forbidden: not supported in Pi: every pod gets its own network namespace on its account's network`},
		{"a document over the cap", []byte(pod + "---\n" + bigPod(MaxBytes)), "bin.yml: document 2 is 3.0 MiB; a manifest document may be at most 3 MiB (the lab's API takes requests of at most 4 MiB)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errs := Parse("bin.yml", c.data)
			if len(errs) == 0 {
				t.Fatalf("no error, want %q", c.want)
			}
			if errs[0] != c.want {
				t.Errorf("error:\n%s\nwant:\n%s", errs[0], c.want)
			}
		})
	}
}

func TestReadCaps(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yml")
	if err := os.WriteFile(big, []byte(bigPod(5<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Read([]string{big}, nil)
	want := big + " is 5.0 MiB; a manifest may hold at most 3 MiB (the lab's API takes requests of at most 4 MiB); split it into smaller files"
	if err == nil || err.Error() != want {
		t.Errorf("5 MiB file: %v\nwant: %s", err, want)
	}
	_, err = Read([]string{"-"}, strings.NewReader(bigPod(5<<20)))
	want = "STDIN is more than 3 MiB; a manifest may hold at most 3 MiB (the lab's API takes requests of at most 4 MiB); split it into smaller files"
	if err == nil || err.Error() != want {
		t.Errorf("5 MiB stdin: %v\nwant: %s", err, want)
	}
	// Files under the cap each, over it together: they are created as one request.
	for _, n := range []string{"a.yml", "b.yml"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(bigPod(2<<20)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err = Read([]string{filepath.Join(dir, "a.yml"), filepath.Join(dir, "b.yml")}, nil)
	if err == nil || !strings.Contains(err.Error(), "the manifests hold 4.0 MiB together; at most 3 MiB are created at once") {
		t.Errorf("two 2 MiB files: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pod.yml"), []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	docs, err := Read([]string{filepath.Join(dir, "pod.yml")}, nil)
	if err != nil || len(docs) != 1 {
		t.Errorf("a plain pod: %v, %d docs", err, len(docs))
	}
}

// The lab's own manifests read without an error.
func TestShipped(t *testing.T) {
	files, _ := filepath.Glob("../../scenarios/manifests/*")
	if len(files) == 0 {
		t.Fatal("no manifests in ../../scenarios/manifests")
	}
	docs, err := Read(files, bytes.NewReader(nil))
	if err != nil || len(docs) != len(files) {
		t.Errorf("%v: %d documents, %v", files, len(docs), err)
	}
}
