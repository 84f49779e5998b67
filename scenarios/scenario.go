package scenarios

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

//go:embed *.yaml manifests
var builtinFS embed.FS

// Scenario is one workshop.
type Scenario struct {
	Title   string    `json:"title"`
	Intro   string    `json:"intro,omitempty"`
	Images  []string  `json:"images,omitempty"`
	Steps   []Step    `json:"steps"`
	Cleanup []Command `json:"cleanup,omitempty"`

	// Name is the file's name without extension and order prefix.
	Name string `json:"-"`
	// Source is where the scenario was read from, for messages.
	Source string `json:"-"`
	// files resolves write/from: against the scenario file's directory.
	files fs.FS
}

// Step is one page of a workshop.
type Step struct {
	Title    string    `json:"title"`
	Text     string    `json:"text,omitempty"`
	Commands []Command `json:"commands,omitempty"`
	Checks   []Check   `json:"checks,omitempty"`
}

// Command is one thing the learner does: a pi command (Run), an HTTP GET from the laptop (HTTP) or a file
// written (Write). In YAML a bare string is a Run.
type Command struct {
	Run     string            `json:"run,omitempty"`
	HTTP    string            `json:"http,omitempty"`
	Write   string            `json:"write,omitempty"`
	From    string            `json:"from,omitempty"`
	Replace map[string]string `json:"replace,omitempty"`
	Capture map[string]string `json:"capture,omitempty"`
	Within  Duration          `json:"within,omitempty"`
}

// Check proves a step worked. With neither Run nor HTTP it looks at the step's output.
type Check struct {
	Name     string   `json:"name,omitempty"`
	Run      string   `json:"run,omitempty"`
	HTTP     string   `json:"http,omitempty"`
	Match    string   `json:"match,omitempty"`
	NoMatch  string   `json:"noMatch,omitempty"`
	Distinct string   `json:"distinct,omitempty"`
	AtLeast  int      `json:"atLeast,omitempty"`
	Fails    bool     `json:"fails,omitempty"`
	Within   Duration `json:"within,omitempty"`
}

// Duration reads "30s", "2m" from YAML.
type Duration time.Duration

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"30s\", not %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return fmt.Errorf("invalid duration %q: want a positive duration such as \"30s\"", s)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (c *Command) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*c = Command{Run: s}
		return nil
	}
	// The alias has no UnmarshalJSON, so this does not recurse; the decoder keeps the file's strictness.
	type plain Command
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p plain
	if err := dec.Decode(&p); err != nil {
		return err
	}
	*c = Command(p)
	return nil
}

// Kind says what the command does, for messages: "run", "http" or "write".
func (c Command) Kind() string {
	switch {
	case c.HTTP != "":
		return "http"
	case c.Write != "":
		return "write"
	}
	return "run"
}

// Parse reads a scenario from data; name and source are for the scenario's name and messages, files resolves
// write/from: paths (nil: the scenario may not use from:).
func Parse(data []byte, source string, files fs.FS) (*Scenario, error) {
	var sc Scenario
	if err := yaml.UnmarshalStrict(data, &sc); err != nil {
		return nil, fmt.Errorf("%s: %s", source+lineOf(data, err), cleanYAMLError(err))
	}
	sc.Source = source
	sc.Name = nameOf(source)
	sc.files = files
	if err := sc.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return &sc, nil
}

var orderPrefix = regexp.MustCompile(`^\d+-`)

func nameOf(source string) string {
	base := filepath.Base(source)
	base = strings.TrimSuffix(strings.TrimSuffix(base, ".yaml"), ".yml")
	return orderPrefix.ReplaceAllString(base, "")
}

var unknownField = regexp.MustCompile(`unknown field "([^"]+)"`)

// lineOf finds the line of the unknown field an error names: the JSON decoder behind strict YAML knows
// nothing of lines.
func lineOf(data []byte, err error) string {
	m := unknownField.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	re := regexp.MustCompile(`^\s*(- )?` + regexp.QuoteMeta(m[1]) + `\s*:`)
	for i, l := range strings.Split(string(data), "\n") {
		if re.MatchString(l) {
			return fmt.Sprintf(":%d", i+1)
		}
	}
	return ""
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "error unmarshaling JSON: ")
	s = strings.TrimPrefix(s, "while decoding JSON: ")
	s = strings.TrimPrefix(s, "json: ")
	return s
}

func (sc *Scenario) validate() error {
	if strings.TrimSpace(sc.Title) == "" {
		return errors.New("title is missing")
	}
	if len(sc.Steps) == 0 {
		return errors.New("a scenario needs at least one step (steps:)")
	}
	known := map[string]bool{}
	for i := range sc.Steps {
		st := &sc.Steps[i]
		where := fmt.Sprintf("step %d", i+1)
		if strings.TrimSpace(st.Title) == "" {
			return fmt.Errorf("%s: title is missing", where)
		}
		for j, c := range st.Commands {
			if err := sc.validateCommand(c, known); err != nil {
				return fmt.Errorf("%s (%q), command %d: %w", where, st.Title, j+1, err)
			}
			for _, v := range slices.Sorted(maps.Keys(c.Capture)) {
				known[v] = true
			}
		}
		for j, c := range st.Checks {
			if err := validateCheck(c, known, len(st.Commands) > 0); err != nil {
				return fmt.Errorf("%s (%q), check %d: %w", where, st.Title, j+1, err)
			}
		}
	}
	for j, c := range sc.Cleanup {
		if c.Kind() != "run" || c.Capture != nil || c.Within != 0 {
			return fmt.Errorf("cleanup %d: cleanup commands are plain pi command lines", j+1)
		}
		// Every variable counts as known here: cleanup skips commands whose variables were never captured.
		if err := checkRunLine(c.Run, nil); err != nil {
			return fmt.Errorf("cleanup %d: %w", j+1, err)
		}
	}
	return nil
}

func (sc *Scenario) validateCommand(c Command, known map[string]bool) error {
	n := 0
	for _, s := range []string{c.Run, c.HTTP, c.Write} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New("say exactly one of run:, http: or write:")
	}
	if c.Write == "" && (c.From != "" || c.Replace != nil) {
		return errors.New("from: and replace: go with write:")
	}
	switch c.Kind() {
	case "run":
		if err := checkRunLine(c.Run, known); err != nil {
			return err
		}
	case "http":
		if err := checkRefs(c.HTTP, known); err != nil {
			return err
		}
	case "write":
		if strings.ContainsAny(c.Write, "/\\") || c.Write == "." || c.Write == ".." {
			return fmt.Errorf("write: %q must be a plain file name (it goes into the scenario's working directory)", c.Write)
		}
		if c.Capture != nil || c.Within != 0 {
			return fmt.Errorf("write: %q: capture: and within: go with run: and http:", c.Write)
		}
		if c.From == "" {
			return fmt.Errorf("write: %q needs from: (the file it copies, relative to the scenario file)", c.Write)
		}
		if sc.files == nil {
			return fmt.Errorf("write: %q: this scenario has no directory to read %q from", c.Write, c.From)
		}
		if _, err := fs.Stat(sc.files, path.Clean(c.From)); err != nil {
			return fmt.Errorf("write: %q: from: %q does not exist next to the scenario file", c.Write, c.From)
		}
		for _, k := range slices.Sorted(maps.Keys(c.Replace)) {
			if err := checkRefs(c.Replace[k], known); err != nil {
				return err
			}
		}
	}
	for _, v := range slices.Sorted(maps.Keys(c.Capture)) {
		if !validVar.MatchString(v) {
			return fmt.Errorf("capture: variable name %q must be letters, digits and _ (it is used as {{.%s}})", v, v)
		}
		re, err := regexp.Compile(c.Capture[v])
		if err != nil {
			return fmt.Errorf("capture %s: %v", v, err)
		}
		if re.NumSubexp() != 1 {
			return fmt.Errorf("capture %s: the regexp needs exactly one group (...) for the value, it has %d", v, re.NumSubexp())
		}
	}
	return nil
}

func validateCheck(c Check, known map[string]bool, hasOutput bool) error {
	if c.Run != "" && c.HTTP != "" {
		return errors.New("say run: or http:, not both")
	}
	if c.Run != "" {
		if err := checkRunLine(c.Run, known); err != nil {
			return err
		}
	}
	if c.HTTP != "" {
		if err := checkRefs(c.HTTP, known); err != nil {
			return err
		}
	}
	if c.Run == "" && c.HTTP == "" {
		if !hasOutput {
			return errors.New("a check without run: or http: looks at the step's output, but the step has no commands")
		}
		if c.Within != 0 {
			return errors.New("within: needs run: or http: (the step's output does not change)")
		}
		if c.Fails {
			return errors.New("fails: needs run:")
		}
		if c.Match == "" && c.NoMatch == "" && c.Distinct == "" {
			return errors.New("a check of the step's output needs match:, noMatch: or distinct:")
		}
	}
	if c.Fails && c.HTTP != "" {
		return errors.New("fails: goes with run:, not http:")
	}
	for field, re := range map[string]string{"match": c.Match, "noMatch": c.NoMatch, "distinct": c.Distinct} {
		if re == "" {
			continue
		}
		if err := checkRefs(re, known); err != nil {
			return err
		}
		if _, err := regexp.Compile(re); err != nil {
			return fmt.Errorf("%s: %v", field, err)
		}
	}
	if c.Distinct != "" {
		if re := regexp.MustCompile(c.Distinct); re.NumSubexp() != 1 {
			return fmt.Errorf("distinct: the regexp needs exactly one group (...), it has %d", re.NumSubexp())
		}
		if c.AtLeast < 1 {
			return errors.New("distinct: needs atLeast: N (how many different values prove the point)")
		}
	} else if c.AtLeast != 0 {
		return errors.New("atLeast: goes with distinct:")
	}
	return nil
}

func checkRunLine(line string, known map[string]bool) error {
	if err := checkRefs(line, known); err != nil {
		return err
	}
	args, err := SplitWords(line)
	if err != nil {
		return err
	}
	if len(args) == 0 || args[0] != "pi" {
		return fmt.Errorf("%q: commands are pi command lines (they start with \"pi \")", line)
	}
	return nil
}

// checkRefs refuses templates it cannot expand; with known, also variables no earlier command captures.
func checkRefs(s string, known map[string]bool) error {
	names, err := Refs(s)
	if err != nil {
		return err
	}
	if known == nil {
		return nil
	}
	for _, n := range names {
		if !known[n] {
			return fmt.Errorf("%q uses {{.%s}}, which no earlier command captures", s, n)
		}
	}
	return nil
}

// Builtin returns the workshops that come with pi, in order.
func Builtin() ([]*Scenario, error) {
	ents, err := fs.Glob(builtinFS, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(ents)
	var out []*Scenario
	for _, e := range ents {
		data, err := builtinFS.ReadFile(e)
		if err != nil {
			return nil, err
		}
		sc, err := Parse(data, "scenarios/"+e, builtinFS)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

// Load finds a scenario by built-in name or reads it from a file (an argument with a "/" or a .yaml/.yml
// ending is a path).
func Load(nameOrPath string) (*Scenario, error) {
	if strings.ContainsRune(nameOrPath, '/') || strings.HasSuffix(nameOrPath, ".yaml") || strings.HasSuffix(nameOrPath, ".yml") {
		data, err := os.ReadFile(nameOrPath)
		if err != nil {
			return nil, fmt.Errorf("read scenario: %w", err)
		}
		return Parse(data, nameOrPath, os.DirFS(filepath.Dir(nameOrPath)))
	}
	all, err := Builtin()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, sc := range all {
		if sc.Name == nameOrPath {
			return sc, nil
		}
		names = append(names, sc.Name)
	}
	return nil, fmt.Errorf("no scenario %q; the built-in ones are %s (see `pi scenario list`), or give a file path", nameOrPath, strings.Join(names, ", "))
}
