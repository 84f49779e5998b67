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
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

//go:embed *.yaml manifests
var builtinFS embed.FS

// Scenario is one workshop: a file of the format described in FORMAT.md. The comments of its fields, and of
// Step's, Command's and Check's, are the descriptions of the JSON Schema (Schema), which is generated from
// these types: keep them short and written for the workshop's author.
type Scenario struct {
	// One line: the workshop's title, shown in `pi scenario list` and at the top of the tutorial.
	Title string `json:"title"`
	// Markdown shown before the first step.
	Intro string `json:"intro,omitempty"`
	// Lab images the scenario needs (nginx, httpd, podinfo, ...); missing ones are built before the first step.
	Images []string `json:"images,omitempty"`
	// How many nodes the workshop is about (pi up --nodes N): a multi-node lab with fewer gets nodes added (pi node add) before the first step; a single-node lab plays it anyway, its pods sharing the one node, with a note saying so.
	Nodes int `json:"nodes,omitempty"`
	// The pages of the workshop, in order. At least one.
	Steps []Step `json:"steps"`
	// pi command lines run at the end whatever happened; a line naming a variable that was never captured is skipped.
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
	// One line: the step's title.
	Title string `json:"title"`
	// Markdown: what the learner reads.
	Text string `json:"text,omitempty"`
	// What the learner does, in order; each must succeed. The step's output is the stdout of all of them.
	Commands []Command `json:"commands,omitempty"`
	// What proves the step worked, checked after its commands.
	Checks []Check `json:"checks,omitempty"`
}

// Command is one thing the learner does: a pi command (Run), an HTTP GET from the laptop (HTTP), a file
// written (Write), a shell line run inside a pod (Sh) or a request whose path is traced (Trace). In YAML a
// bare string is a Run.
type Command struct {
	// A pi command line, run without a shell: quotes group words, but |, >, <, ;, &, && and $(...) are refused.
	Run string `json:"run,omitempty"`
	// A URL fetched with GET from the laptop (the lab's Internet side); the body is the output.
	HTTP string `json:"http,omitempty"`
	// A file name: the file is written into the scenario's working directory, copied from from:.
	Write string `json:"write,omitempty"`
	// With write: the file copied, relative to the scenario file.
	From string `json:"from,omitempty"`
	// With write: text of the from: file mapped to what goes in its place (values may use variables).
	Replace map[string]string `json:"replace,omitempty"`
	// A shell line run inside the pod named by pod: (as pi exec POD -- sh -c LINE); pipes and redirections are allowed here.
	Sh string `json:"sh,omitempty"`
	// With sh: the pod the shell line runs in.
	Pod string `json:"pod,omitempty"`
	// FROM TARGET, as pi trace takes them: a request sent from FROM ([account/]pod, router or internet) to TARGET
	// (http://HOST[:PORT]/PATH, tcp://HOST:PORT, HOST:PORT, udp://HOST:PORT or icmp://HOST); the output is its
	// path, one line per hop.
	Trace string `json:"trace,omitempty"`
	// Variables set from the output: NAME: a regexp with exactly one group (...), whose match becomes {{.NAME}}.
	Capture map[string]string `json:"capture,omitempty"`
	// Retry until the command succeeds (and its captures match), for at most this long, e.g. "30s".
	Within Duration `json:"within,omitempty"`
}

// Check proves a step worked. With neither Run nor HTTP it looks at the step's output.
type Check struct {
	// What the learner sees; one is made up from the check otherwise.
	Name string `json:"name,omitempty"`
	// A pi command line whose output (stdout and stderr) is checked; it must succeed unless fails: true.
	Run string `json:"run,omitempty"`
	// A URL fetched with GET from the laptop whose body is checked.
	HTTP string `json:"http,omitempty"`
	// A regexp the output must match.
	Match string `json:"match,omitempty"`
	// A regexp the output must not match.
	NoMatch string `json:"noMatch,omitempty"`
	// A regexp with one group (...): the output must hold at least atLeast different values of it.
	Distinct string `json:"distinct,omitempty"`
	// With distinct: how many different values prove the point.
	AtLeast int `json:"atLeast,omitempty"`
	// With run: the command must fail.
	Fails bool `json:"fails,omitempty"`
	// Retry until the check holds, for at most this long, e.g. "30s"; needs run: or http:.
	Within Duration `json:"within,omitempty"`
	// Check only in a lab of at least this many nodes (pods on several nodes); skipped, with a notice, in a smaller one.
	MinNodes int `json:"minNodes,omitempty"`
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

// Kind says what the command does, for messages: "run", "http", "write", "sh" or "trace".
func (c Command) Kind() string {
	switch {
	case c.Trace != "":
		return "trace"
	case c.HTTP != "":
		return "http"
	case c.Write != "":
		return "write"
	case c.Sh != "":
		return "sh"
	}
	return "run"
}

// Parse reads a scenario from data; name and source are for the scenario's name and messages, files resolves
// write/from: paths (nil: the scenario may not use from:). The error lists every problem found, one per line,
// each starting with source (and its line where known): errors.Join of them.
func Parse(data []byte, source string, files fs.FS) (*Scenario, error) {
	// Every unknown field at once, with its line: the strict decoder below stops at the first. The fields are
	// taken out so that the rest of the file is still checked.
	unknown, cleaned := unknownFields(data)
	var errs []error
	for _, u := range unknown {
		errs = append(errs, fmt.Errorf("%s:%d: %s", source, u.line, u.msg))
	}
	decode := data
	if cleaned != nil {
		decode = cleaned
	}
	var sc Scenario
	if err := yaml.UnmarshalStrict(decode, &sc); err != nil {
		at := source
		if cleaned == nil {
			at += lineOf(data, err)
		}
		return nil, errors.Join(append(errs, fmt.Errorf("%s: %s", at, cleanYAMLError(err)))...)
	}
	sc.Source = source
	sc.Name = nameOf(source)
	sc.files = files
	for _, err := range sc.validate() {
		errs = append(errs, fmt.Errorf("%s: %w", source, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
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

// stepWhere names a step in messages by number and title, as the learner sees it.
func stepWhere(i int, title string) string {
	if strings.TrimSpace(title) == "" {
		return fmt.Sprintf("step %d", i+1)
	}
	return fmt.Sprintf("step %d (%q)", i+1, title)
}

// validate returns every problem of the scenario, each naming where it is (step, command or check) and the
// field.
func (sc *Scenario) validate() []error {
	var errs []error
	if strings.TrimSpace(sc.Title) == "" {
		errs = append(errs, errors.New("title is missing"))
	}
	if len(sc.Steps) == 0 {
		errs = append(errs, errors.New("a scenario needs at least one step (steps:)"))
	}
	if sc.Nodes < 0 || sc.Nodes > maxNodes {
		errs = append(errs, fmt.Errorf("nodes: %d is not a number of nodes a lab can have (1 to %d)", sc.Nodes, maxNodes))
	}
	known := map[string]bool{}
	for i := range sc.Steps {
		st := &sc.Steps[i]
		where := stepWhere(i, st.Title)
		if strings.TrimSpace(st.Title) == "" {
			errs = append(errs, fmt.Errorf("%s: title is missing", where))
		}
		for j, c := range st.Commands {
			for _, err := range sc.validateCommand(c, known) {
				errs = append(errs, fmt.Errorf("%s, command %d: %w", where, j+1, err))
			}
			for _, v := range slices.Sorted(maps.Keys(c.Capture)) {
				known[v] = true
			}
		}
		for j, c := range st.Checks {
			for _, err := range validateCheck(c, known, len(st.Commands) > 0) {
				errs = append(errs, fmt.Errorf("%s, check %d: %w", where, j+1, err))
			}
			switch {
			case c.MinNodes < 0 || c.MinNodes == 1:
				errs = append(errs, fmt.Errorf("%s, check %d: minNodes: %d: give 2 or more (every lab has one node), or leave it out", where, j+1, c.MinNodes))
			case c.MinNodes > max(sc.Nodes, 1):
				errs = append(errs, fmt.Errorf("%s, check %d: minNodes: %d is more than the scenario's nodes: %d, so the lab it sets up would skip the check: raise nodes:", where, j+1, c.MinNodes, sc.Nodes))
			}
		}
	}
	for j, c := range sc.Cleanup {
		if c.Kind() != "run" || c.Capture != nil || c.Within != 0 || c.Pod != "" {
			errs = append(errs, fmt.Errorf("cleanup %d: cleanup commands are plain pi command lines (no %s:, capture:, within: or pod:)", j+1, c.Kind()))
			continue
		}
		// Every variable counts as known here: cleanup skips commands whose variables were never captured.
		if err := checkRunLine(c.Run, nil); err != nil {
			errs = append(errs, fmt.Errorf("cleanup %d: %w", j+1, err))
		}
	}
	return errs
}

// maxNodes is the most nodes a lab has (net/overlay.MaxNodes: node N's pods take 10.244.N.0/24).
const maxNodes = 255

// podName is what a pod's name may be (a DNS label, as the API server checks it).
var podName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func (sc *Scenario) validateCommand(c Command, known map[string]bool) []error {
	var errs []error
	n := 0
	for _, s := range []string{c.Run, c.HTTP, c.Write, c.Sh, c.Trace} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		// Nothing else can be judged without knowing what the command is.
		return []error{errors.New("say exactly one of run:, http:, write:, sh: or trace:")}
	}
	if c.Write == "" && (c.From != "" || c.Replace != nil) {
		errs = append(errs, errors.New("from: and replace: go with write:"))
	}
	if c.Sh == "" && c.Pod != "" {
		errs = append(errs, fmt.Errorf("pod: %q goes with sh: (the pod a shell line runs in)", c.Pod))
	}
	switch c.Kind() {
	case "run":
		if err := checkRunLine(c.Run, known); err != nil {
			errs = append(errs, err)
		}
	case "http":
		if err := checkRefs(c.HTTP, known); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
	case "sh":
		if err := checkRefs(c.Sh, known); err != nil {
			errs = append(errs, fmt.Errorf("sh: %w", err))
		}
		switch refs, err := Refs(c.Pod); {
		case c.Pod == "":
			errs = append(errs, fmt.Errorf("sh: %s needs pod: (the pod the shell line runs in, as pi exec POD -- sh -c LINE)", code(c.Sh)))
		case err != nil:
			errs = append(errs, fmt.Errorf("pod: %w", err))
		case len(refs) == 0 && !podName.MatchString(c.Pod):
			errs = append(errs, fmt.Errorf("pod: %q is not a pod name (lower-case letters, digits and -)", c.Pod))
		default:
			if err := checkRefs(c.Pod, known); err != nil {
				errs = append(errs, fmt.Errorf("pod: %w", err))
			}
		}
	case "trace":
		errs = append(errs, checkTrace(c.Trace, known)...)
	case "write":
		if strings.ContainsAny(c.Write, "/\\") || c.Write == "." || c.Write == ".." {
			errs = append(errs, fmt.Errorf("write: %q must be a plain file name (it goes into the scenario's working directory)", c.Write))
		}
		if c.Capture != nil || c.Within != 0 {
			errs = append(errs, fmt.Errorf("write: %q: capture: and within: go with run:, http: and sh:", c.Write))
		}
		switch {
		case c.From == "":
			errs = append(errs, fmt.Errorf("write: %q needs from: (the file it copies, relative to the scenario file)", c.Write))
		case sc.files == nil:
			errs = append(errs, fmt.Errorf("write: %q: this scenario has no directory to read %q from", c.Write, c.From))
		default:
			if _, err := fs.Stat(sc.files, path.Clean(c.From)); err != nil {
				errs = append(errs, fmt.Errorf("write: %q: from: %q does not exist next to the scenario file", c.Write, c.From))
			}
		}
		for _, k := range slices.Sorted(maps.Keys(c.Replace)) {
			if err := checkRefs(c.Replace[k], known); err != nil {
				errs = append(errs, fmt.Errorf("replace: %w", err))
			}
		}
	}
	for _, v := range slices.Sorted(maps.Keys(c.Capture)) {
		if !validVar.MatchString(v) {
			errs = append(errs, fmt.Errorf("capture: variable name %q must be letters, digits and _ (it is used as {{.%s}})", v, v))
			continue
		}
		re, err := regexp.Compile(c.Capture[v])
		if err != nil {
			errs = append(errs, fmt.Errorf("capture %s: %v", v, err))
			continue
		}
		if re.NumSubexp() != 1 {
			errs = append(errs, fmt.Errorf("capture %s: the regexp needs exactly one group (...) for the value, it has %d", v, re.NumSubexp()))
		}
	}
	return errs
}

// traceTarget is what a trace may be sent to, as pi trace takes it: an http://, tcp:// or udp:// URL,
// HOST:PORT, or icmp://HOST.
var traceTarget = regexp.MustCompile(`^(http://[^\s/]+(/\S*)?|(tcp|udp)://[^\s/]+:[^\s/]+|icmp://[^\s/:]+|[^\s/:]+:[^\s/]+)$`)

// TraceArgs splits a trace: line, variables expanded or not, into where the request starts and its target.
func TraceArgs(line string) (from, target string, err error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("%q: say FROM TARGET, e.g. \"nginx http://{{.HTTPD_IP}}/\" or \"internet http://{{.FIP}}/\"", line)
	}
	return f[0], f[1], nil
}

// checkTrace checks a trace: line: two words, a known start (a pod, router or internet) and a target pi trace
// takes; its errors start with "trace:".
func checkTrace(line string, known map[string]bool) []error {
	var errs []error
	if err := checkRefs(line, known); err != nil {
		errs = append(errs, fmt.Errorf("trace: %w", err))
	}
	from, target, err := TraceArgs(line)
	if err != nil {
		return append(errs, fmt.Errorf("trace: %w", err))
	}
	if refs, _ := Refs(from); len(refs) == 0 && from != "internet" && from != "router" {
		acct, pod, ok := strings.Cut(from, "/")
		if !ok {
			pod, acct = acct, ""
		}
		if !podName.MatchString(pod) || (ok && !podName.MatchString(acct)) {
			errs = append(errs, fmt.Errorf("trace: %q is not where a trace starts: a pod ([account/]pod), router or internet", from))
		}
	}
	// A variable stands for a host or a port here: it has no blank or slash, so the target's shape shows.
	if !traceTarget.MatchString(target) {
		errs = append(errs, fmt.Errorf("trace: target %q: give http://HOST[:PORT]/PATH, tcp://HOST:PORT, HOST:PORT, udp://HOST:PORT or icmp://HOST", target))
	}
	return errs
}

func validateCheck(c Check, known map[string]bool, hasOutput bool) []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if c.Run != "" && c.HTTP != "" {
		add(errors.New("say run: or http:, not both"))
	}
	if c.Run != "" {
		add(checkRunLine(c.Run, known))
	}
	if c.HTTP != "" {
		if err := checkRefs(c.HTTP, known); err != nil {
			add(fmt.Errorf("http: %w", err))
		}
	}
	if c.Run == "" && c.HTTP == "" {
		switch {
		case !hasOutput:
			add(errors.New("a check without run: or http: looks at the step's output, but the step has no commands"))
		case c.Within != 0:
			add(errors.New("within: needs run: or http: (the step's output does not change)"))
		case c.Fails:
			add(errors.New("fails: needs run:"))
		case c.Match == "" && c.NoMatch == "" && c.Distinct == "":
			add(errors.New("a check of the step's output needs match:, noMatch: or distinct:"))
		}
	}
	if c.Fails && c.HTTP != "" {
		add(errors.New("fails: goes with run:, not http:"))
	}
	for _, f := range []struct{ field, re string }{{"match", c.Match}, {"noMatch", c.NoMatch}, {"distinct", c.Distinct}} {
		if f.re == "" {
			continue
		}
		if err := checkRefs(f.re, known); err != nil {
			add(fmt.Errorf("%s: %w", f.field, err))
			continue
		}
		re, err := regexp.Compile(f.re)
		if err != nil {
			add(fmt.Errorf("%s: %v", f.field, err))
			continue
		}
		if f.field == "distinct" && re.NumSubexp() != 1 {
			add(fmt.Errorf("distinct: the regexp needs exactly one group (...), it has %d", re.NumSubexp()))
		}
	}
	if c.Distinct != "" {
		if c.AtLeast < 1 {
			add(errors.New("distinct: needs atLeast: N (how many different values prove the point)"))
		}
	} else if c.AtLeast != 0 {
		add(errors.New("atLeast: goes with distinct:"))
	}
	return errs
}

// checkRunLine checks a pi command line (a command's or check's run:, a cleanup line); its errors start with
// "run:".
func checkRunLine(line string, known map[string]bool) error {
	if err := checkRefs(line, known); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if op := shellSyntax(line); op != "" {
		return fmt.Errorf("run: %s uses shell syntax (%s); scenario commands run pi directly, without a shell: "+
			"use a check's match:, or an sh: action to run a shell line inside a pod", code(line), op)
	}
	args, err := SplitWords(line)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if len(args) == 0 || args[0] != "pi" {
		return fmt.Errorf("run: %q: commands are pi command lines (they start with \"pi \")", line)
	}
	return nil
}

// code quotes a command line for a message as the learner would write it, `like this`, unless it holds what
// would make that ambiguous (a backtick or a line break).
func code(s string) string {
	if strings.ContainsAny(s, "`\r\n") {
		return strconv.Quote(s)
	}
	return "`" + s + "`"
}

// shellSyntax returns the first shell operator of line that sh would act on ("|", "&&", "$(", ...), or "".
// It reads quotes as SplitWords does (which splits the line when it runs): '...' is literal, a backslash
// outside quotes escapes the next character, and "..." keeps everything but $ and ` — which sh expands even
// there, so "$(date)" is refused too. Text inside quotes meant for a shell in a pod (sh -c 'a | b') is fine.
func shellSyntax(line string) string {
	rs := []rune(line)
	at := func(i int) rune {
		if i < len(rs) {
			return rs[i]
		}
		return 0
	}
	// dollar says what $ at i starts in sh: a command substitution, a ${...} or a $NAME, or nothing.
	dollar := func(i int) string {
		switch n := at(i + 1); {
		case n == '(':
			return "$("
		case n == '{':
			return "${"
		case n == '_' || n >= 'a' && n <= 'z' || n >= 'A' && n <= 'Z':
			j := i + 1
			for j < len(rs) && (rs[j] == '_' || rs[j] >= 'a' && rs[j] <= 'z' || rs[j] >= 'A' && rs[j] <= 'Z' || rs[j] >= '0' && rs[j] <= '9') {
				j++
			}
			return string(rs[i:j])
		}
		return ""
	}
	for i := 0; i < len(rs); i++ {
		switch c := rs[i]; c {
		case '\'':
			for i++; i < len(rs) && rs[i] != '\''; i++ {
			}
		case '"':
			for i++; i < len(rs) && rs[i] != '"'; i++ {
				switch rs[i] {
				case '\\':
					i++
				case '`':
					return "`...`"
				case '$':
					if op := dollar(i); op != "" {
						return op
					}
				}
			}
		case '\\':
			i++
		case '`':
			return "`...`"
		case '$':
			if op := dollar(i); op != "" {
				return op
			}
		case '|', '&', '>', '<':
			if at(i+1) == c {
				return string(c) + string(c)
			}
			return string(c)
		case ';':
			return ";"
		}
	}
	return ""
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
