package scenarios

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/invopop/jsonschema"
	validator "github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

var updateSchema = flag.Bool("update-schema", false, "write scenario.schema.json from the Go types")

// generateSchema reflects the JSON Schema of scenario files from the Go types, with the fields' comments as
// descriptions, and adds what the types do not say: a command is a string or an object, an object says exactly
// one of run/http/write/sh, and which fields go together.
func generateSchema() ([]byte, error) {
	r := &jsonschema.Reflector{
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			if t == reflect.TypeFor[Duration]() {
				return &jsonschema.Schema{
					Type:        "string",
					Pattern:     `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`,
					Description: "A Go duration such as \"30s\", \"2m\" or \"1m30s\".",
					Examples:    []any{"30s", "2m"},
				}
			}
			return nil
		},
	}
	// The package's own sources, read from the test's working directory (the package's folder).
	if err := r.AddGoComments("github.com/pilab/pi/scenarios", "./"); err != nil {
		return nil, err
	}
	s := r.Reflect(&Scenario{})
	s.Title = "pilab scenario"
	s.Description = "A workshop of pilab (pi scenario run, pi tutorial). Reference: scenarios/FORMAT.md."

	cmd := s.Definitions["Command"]
	one := func(f string) *jsonschema.Schema { return &jsonschema.Schema{Required: []string{f}} }
	cmd.OneOf = []*jsonschema.Schema{one("run"), one("http"), one("write"), one("sh"), one("trace")}
	cmd.DependentRequired = map[string][]string{"sh": {"pod"}, "pod": {"sh"}, "from": {"write"}, "replace": {"write"}}
	cmd.Description = ""
	s.Definitions["Command"] = &jsonschema.Schema{
		Description: "One thing the learner does: a pi command line (a string, or run:), an HTTP GET (http:), a file written (write:) or a shell line in a pod (sh: with pod:).",
		OneOf: []*jsonschema.Schema{
			{Type: "string", Description: "A pi command line: the same as {run: LINE}."},
			cmd,
		},
	}
	s.Definitions["Scenario"].Description = "A pilab workshop: a title, steps, and the cleanup run at the end."
	steps, _ := s.Definitions["Scenario"].Properties.Get("steps")
	steps.MinItems = ptr(uint64(1))
	for _, def := range []string{"Scenario", "Step"} {
		title, _ := s.Definitions[def].Properties.Get("title")
		title.MinLength = ptr(uint64(1))
	}
	s.Definitions["Step"].Description = "One page of a workshop: what the learner reads, does, and what proves it worked."
	chk := s.Definitions["Check"]
	chk.Description = "What proves a step worked. With neither run: nor http: it looks at the step's output."
	chk.DependentRequired = map[string][]string{"distinct": {"atLeast"}, "atLeast": {"distinct"}, "fails": {"run"}}

	// Without HTML escaping: the descriptions say |, > and &, and an editor shows them as written.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	// The Schema type's own MarshalJSON escapes them anyway; \u003e etc. can only stand inside JSON strings,
	// and no description holds a literal backslash-u.
	out := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(b.String())
	return []byte(out), nil
}

func ptr[T any](v T) *T { return &v }

// TestSchemaFile: the embedded schema is the one the Go types make (go generate ./scenarios rewrites it).
func TestSchemaFile(t *testing.T) {
	want, err := generateSchema()
	if err != nil {
		t.Fatal(err)
	}
	if *updateSchema {
		if err := os.WriteFile("scenario.schema.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("scenario.schema.json is out of date with the Go types: run go generate ./scenarios")
	}
}

// compileSchema compiles Schema() with a validator other than the generator, as an editor would.
func compileSchema(t *testing.T) *validator.Schema {
	t.Helper()
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := validator.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := validator.NewCompiler()
	if err := c.AddResource("scenario.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("scenario.schema.json")
	if err != nil {
		t.Fatalf("the scenario schema does not compile: %v", err)
	}
	return sch
}

func validateYAML(t *testing.T, sch *validator.Schema, data []byte) error {
	t.Helper()
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := validator.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return sch.Validate(inst)
}

// TestSchemaValidates: the built-in workshops are valid against the schema, and files with a misspelt field,
// a command of two kinds, or sh: without pod: are not.
func TestSchemaValidates(t *testing.T) {
	sch := compileSchema(t)
	ents, err := builtinFS.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		n++
		data, _ := builtinFS.ReadFile(e.Name())
		if err := validateYAML(t, sch, data); err != nil {
			t.Errorf("%s does not validate against the schema: %v", e.Name(), err)
		}
	}
	if n == 0 {
		t.Fatal("no built-in scenarios")
	}
	ok := "title: x\nsteps:\n  - title: a\n    commands:\n      - pi get pods\n      - sh: 'wget -qO- web | head -1'\n        pod: nginx\n        within: 30s\n" +
		"    checks:\n      - distinct: '(x)'\n        atLeast: 2\n"
	if err := validateYAML(t, sch, []byte(ok)); err != nil {
		t.Errorf("a valid file with sh: is refused: %v", err)
	}
	for name, tc := range map[string]struct{ yaml, want string }{
		"misspelt step field":    {"title: x\nsteps:\n  - title: a\n    comands: [pi get pods]\n", "comands"},
		"misspelt command field": {"title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods\n        captur: {A: '(x)'}\n", "captur"},
		"missing title":          {"steps:\n  - title: a\n", "title"},
		"two kinds":              {"title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods\n        http: http://x/\n", "oneOf"},
		"sh without pod":         {"title: x\nsteps:\n  - title: a\n    commands:\n      - sh: ls\n", "pod"},
		"bad duration":           {"title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods\n        within: soon\n", "within"},
	} {
		err := validateYAML(t, sch, []byte(tc.yaml))
		if err == nil {
			t.Errorf("%s: the schema accepts it", name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not mention %q", name, err, tc.want)
		}
	}
}
