// Package manifest reads Kubernetes YAML or JSON manifests (-f FILE|DIR|-) into typed objects, strictly:
// an unknown field, an unknown kind or an invalid value is an error that names the file, the document and
// the field, and a set of files is checked whole before the caller creates anything.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/validate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Doc is one object read from a manifest.
type Doc struct {
	Source string // file name, or "STDIN"
	Index  int    // 1-based document number in its file
	Kind   api.Kind
	Object metav1.Object
}

// Where names the document for error messages: `nginx.yml: document 2 (Pod "web")`.
func (d Doc) Where() string {
	return fmt.Sprintf("%s: document %d (%s %q)", d.Source, d.Index, d.Kind.Name, d.Object.GetName())
}

// Read reads every manifest named by paths ("-" is stdin; a directory means its .yaml, .yml and .json files,
// not recursing). All errors are collected so the user sees every problem at once.
func Read(paths []string, stdin io.Reader) ([]Doc, error) {
	var docs []Doc
	var errs []string
	for _, p := range paths {
		files, err := expand(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			var data []byte
			var name string
			if f == "-" {
				name = "STDIN"
				data, err = io.ReadAll(stdin)
			} else {
				name = f
				data, err = os.ReadFile(f)
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", name, err)
			}
			d, e := Parse(name, data)
			docs = append(docs, d...)
			errs = append(errs, e...)
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("no objects passed to create: %s holds no documents", strings.Join(paths, ", "))
	}
	return docs, nil
}

func expand(p string) ([]string, error) {
	if p == "-" {
		return []string{"-"}, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("the path %q does not exist", p)
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", p, err)
	}
	var out []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				out = append(out, filepath.Join(p, e.Name()))
			}
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("directory %s holds no .yaml, .yml or .json files", p)
	}
	return out, nil
}

// Parse decodes and validates every document of one file; it returns the good documents and one error
// line per bad one.
func Parse(name string, data []byte) ([]Doc, []string) {
	var docs []Doc
	var errs []string
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		raw, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: document %d: %v", name, i, err))
			break
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			i--
			continue
		}
		d, err := decode(raw)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: document %d: %v", name, i, err))
			continue
		}
		d.Source, d.Index = name, i
		if err := validate.Object(d.Object); err != nil {
			errs = append(errs, fmt.Sprintf("%s is invalid: %v", d.Where(), err))
			continue
		}
		docs = append(docs, d)
	}
	return docs, errs
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func decode(raw []byte) (Doc, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return Doc{}, fmt.Errorf("not valid YAML or JSON: %v", err)
	}
	if tm.Kind == "" {
		return Doc{}, errors.New("kind is not set; every document needs apiVersion and kind")
	}
	k, ok := api.LookupKind(tm.Kind)
	if !ok || k.Name != tm.Kind || !k.FromManifest {
		return Doc{}, fmt.Errorf("no kind %q is supported by pi; use one of %s", tm.Kind, strings.Join(manifestKinds(), ", "))
	}
	if tm.APIVersion != k.APIVersion {
		return Doc{}, fmt.Errorf("kind %s is served as apiVersion %q, not %q", k.Name, k.APIVersion, tm.APIVersion)
	}
	o := k.New()
	if err := yaml.UnmarshalStrict(raw, o); err != nil {
		return Doc{}, fmt.Errorf("%s: %v", k.Name, cleanStrict(err))
	}
	return Doc{Kind: k, Object: o}, nil
}

func manifestKinds() []string {
	var out []string
	for _, k := range api.Kinds() {
		if k.FromManifest {
			out = append(out, k.APIVersion+" "+k.Name)
		}
	}
	return out
}

// cleanStrict turns sigs.k8s.io/yaml's wording into kubectl's: `unknown field "spec.foo"`.
func cleanStrict(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "error unmarshaling JSON: while decoding JSON: ")
	s = strings.TrimPrefix(s, "error converting YAML to JSON: ")
	if i := strings.Index(s, "json: unknown field "); i >= 0 {
		return "unknown field " + s[i+len("json: unknown field "):]
	}
	return s
}
