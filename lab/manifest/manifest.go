// Package manifest reads Kubernetes YAML or JSON manifests (-f FILE|DIR|-) into typed objects, strictly:
// an unknown field, an unknown kind or an invalid value is an error that names the file, the document and
// the field, and a set of files is checked whole before the caller creates anything.
package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/lab/validate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
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
	total := 0
	for _, p := range paths {
		files, err := expand(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			name, data, err := readCapped(f, stdin)
			if err != nil {
				return nil, err
			}
			total += len(data)
			d, e := Parse(name, data)
			docs = append(docs, d...)
			errs = append(errs, e...)
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "\n"))
	}
	// The documents are created as one request (checked whole), so together they share the request's cap.
	if total > MaxBytes {
		return nil, fmt.Errorf("the manifests hold %s together; at most %s are created at once %s; create them in parts",
			mib(total), mib(MaxBytes), apiCap)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("no objects passed to create: %s holds no documents", strings.Join(paths, ", "))
	}
	return docs, nil
}

// MaxBytes is the most pi reads from one manifest, one document, and a set of documents created at once.
// The lab's API takes request bodies of at most 4 MiB (lab/server); a document read from YAML grows when it
// is sent as JSON, so the cap leaves room below that.
const MaxBytes = 3 << 20

const apiCap = "(the lab's API takes requests of at most 4 MiB)"

func mib(n int) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// readCapped reads one file ("-": stdin) up to MaxBytes, and refuses a larger one before reading it all:
// a 5 MB manifest is a mistake to name, not a request the server cuts off mid-document.
func readCapped(f string, stdin io.Reader) (string, []byte, error) {
	name, r := f, stdin
	if f == "-" {
		name = "STDIN"
	} else {
		fh, err := os.Open(f)
		if err != nil {
			return name, nil, fmt.Errorf("read %s: %w", name, err)
		}
		defer fh.Close()
		if st, err := fh.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > MaxBytes {
			return name, nil, fmt.Errorf("%s is %s; a manifest may hold at most %s %s; split it into smaller files",
				name, mib(int(st.Size())), mib(MaxBytes), apiCap)
		}
		r = fh
	}
	if r == nil {
		r = bytes.NewReader(nil)
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return name, nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > MaxBytes {
		return name, nil, fmt.Errorf("%s is more than %s; a manifest may hold at most %s %s; split it into smaller files",
			name, mib(MaxBytes), mib(MaxBytes), apiCap)
	}
	return name, data, nil
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
			errs = append(errs, fmt.Sprintf("%s: document %d %s: %v", name, i, notManifest, err))
			break
		}
		if !text(raw) {
			errs = append(errs, fmt.Sprintf("%s: document %d %s", name, i, notManifest))
			continue
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			i--
			continue
		}
		if len(raw) > MaxBytes {
			errs = append(errs, fmt.Sprintf("%s: document %d is %s; a manifest document may be at most %s %s", name, i, mib(len(raw)), mib(MaxBytes), apiCap))
			continue
		}
		d, err := decode(raw)
		var nm errNotManifest
		if errors.As(err, &nm) {
			errs = append(errs, fmt.Sprintf("%s: document %d %v", name, i, err))
			continue
		}
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

const notManifest = "is not a Kubernetes manifest (YAML or JSON with apiVersion and kind)"

// errNotManifest is a document that is no YAML or JSON object at all; its message follows "document N".
type errNotManifest struct{ detail string }

func (e errNotManifest) Error() string {
	if e.detail == "" {
		return notManifest
	}
	return notManifest + ": " + e.detail
}

// text says whether a document can be YAML at all: valid UTF-8 without the control characters YAML
// forbids. Binary input is named as such instead of by the YAML parser's view of it.
func text(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' || c == 0x7f {
			return false
		}
	}
	return true
}

func decode(raw []byte) (Doc, error) {
	// Duplicate keys are an error, as kubectl's strict decoding has them.
	j, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return Doc{}, errNotManifest{cleanStrict(err)}
	}
	if b := bytes.TrimSpace(j); len(b) == 0 || b[0] != '{' {
		return Doc{}, errNotManifest{}
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return Doc{}, errors.New("apiVersion and kind must be strings")
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
	// sigs.k8s.io/json, as the API server decodes: case-sensitive, and unknown fields named by their path.
	strict, err := kjson.UnmarshalStrict(j, o)
	if err != nil {
		return Doc{}, fmt.Errorf("%s: %v", k.Name, cleanStrict(err))
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return Doc{}, fmt.Errorf("%s: %s", k.Name, strings.Join(msgs, ", "))
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
