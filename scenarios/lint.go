package scenarios

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	yaml3 "gopkg.in/yaml.v3"
)

// Lint checks the scenario file at path without a lab: everything Load checks (unknown fields, variables
// used before they are captured, shell syntax in pi command lines, sh: without pod:, regexps, write/from:
// files next to it, ...), every problem at once. The error has one line per problem, each naming the file,
// the line where known, the step by number and title, and the field.
func Lint(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("lint scenario: %w", err)
	}
	_, err = Parse(data, path, os.DirFS(filepath.Dir(path)))
	return err
}

// fieldProblem is an unknown field and the line of its key.
type fieldProblem struct {
	line int
	msg  string
}

var (
	scenarioFields = jsonFields(reflect.TypeFor[Scenario]())
	stepFields     = jsonFields(reflect.TypeFor[Step]())
	commandFields  = jsonFields(reflect.TypeFor[Command]())
	checkFields    = jsonFields(reflect.TypeFor[Check]())
)

// jsonFields lists the names a struct's fields have in a file, from their json tags, in declaration order.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.IsExported() && name != "-" && name != "" {
			out = append(out, name)
		}
	}
	return out
}

// unknownFields finds every field of the file that the format does not have, with its line, and returns the
// file without them (nil when there are none, or when the file is not YAML the walk understands: the strict
// decoder then says what is wrong). It reads the file with yaml.v3 for the lines, which the decoder that
// fills Scenario does not keep.
func unknownFields(data []byte) ([]fieldProblem, []byte) {
	var doc yaml3.Node
	if err := yaml3.Unmarshal(data, &doc); err != nil || doc.Kind != yaml3.DocumentNode || len(doc.Content) != 1 {
		return nil, nil
	}
	var probs []fieldProblem
	check := func(n *yaml3.Node, where string, known []string) {
		if n.Kind != yaml3.MappingNode {
			return
		}
		var kept []*yaml3.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml3.ScalarNode || k.Value == "<<" || slices.Contains(known, k.Value) {
				kept = append(kept, n.Content[i], n.Content[i+1])
				continue
			}
			msg := fmt.Sprintf("unknown field %q", k.Value)
			if where != "" {
				msg = where + ": " + msg
			}
			if s := closest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %s:?)", s)
			} else {
				msg += " (known: " + strings.Join(known, ", ") + ")"
			}
			probs = append(probs, fieldProblem{line: k.Line, msg: msg})
		}
		n.Content = kept
	}
	items := func(n *yaml3.Node, key string) []*yaml3.Node {
		if v := value(n, key); v != nil && v.Kind == yaml3.SequenceNode {
			return v.Content
		}
		return nil
	}
	root := doc.Content[0]
	check(root, "", scenarioFields)
	for i, st := range items(root, "steps") {
		title := ""
		if t := value(st, "title"); t != nil && t.Kind == yaml3.ScalarNode {
			title = t.Value
		}
		where := stepWhere(i, title)
		check(st, where, stepFields)
		for j, c := range items(st, "commands") {
			check(c, fmt.Sprintf("%s, command %d", where, j+1), commandFields)
		}
		for j, c := range items(st, "checks") {
			check(c, fmt.Sprintf("%s, check %d", where, j+1), checkFields)
		}
	}
	for j, c := range items(root, "cleanup") {
		check(c, fmt.Sprintf("cleanup %d", j+1), commandFields)
	}
	if len(probs) == 0 {
		return nil, nil
	}
	cleaned, err := yaml3.Marshal(&doc)
	if err != nil {
		// The strict decoder then stops at the first unknown field again: it is among probs already.
		return probs, nil
	}
	return probs, cleaned
}

// value is the node of key in mapping n, or nil.
func value(n *yaml3.Node, key string) *yaml3.Node {
	if n.Kind != yaml3.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Kind == yaml3.ScalarNode && n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// closest is the known field a misspelt one most likely meant: the same but for case, or at most two edits
// away; "" when none is close.
func closest(field string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if strings.EqualFold(k, field) {
			return k
		}
		if d := editDistance(strings.ToLower(field), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
