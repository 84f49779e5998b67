package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"

	"k8s.io/client-go/util/jsonpath"
)

// JSONPath prints a kubectl template such as `{.status.podIP}` or
// `{range .items[*]}{.metadata.name}{"\n"}{end}` with kubectl's own JSONPath engine, over the object's JSON
// form (as kubectl does, so field names are the manifest's). Missing keys print nothing, as kubectl's
// default --allow-missing-template-keys.
func JSONPath(w io.Writer, tmpl string, v any) error {
	j, doc, err := parseJSONPath(tmpl, v)
	if err != nil {
		return err
	}
	if err := j.Execute(w, doc); err != nil {
		return fmt.Errorf("jsonpath %q: %w", tmpl, err)
	}
	return nil
}

// JSONPathValues returns what one JSONPath expression such as `{.status.loadBalancer.ingress[0].ip}`
// finds in v, each value printed as -o jsonpath would; nothing found is no values, not an error.
func JSONPathValues(expr string, v any) ([]string, error) {
	j, doc, err := parseJSONPath(expr, v)
	if err != nil {
		return nil, err
	}
	results, err := j.FindResults(doc)
	if err != nil && strings.Contains(err.Error(), "array index out of bounds") {
		// A list not yet as long as the index asks (no Floating IP in ingress yet) holds nothing there.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jsonpath %q: %w", expr, err)
	}
	var out []string
	for _, rs := range results {
		for _, r := range rs {
			var b strings.Builder
			if err := j.PrintResults(&b, []reflect.Value{r}); err != nil {
				return nil, fmt.Errorf("jsonpath %q: %w", expr, err)
			}
			out = append(out, b.String())
		}
	}
	return out, nil
}

func parseJSONPath(tmpl string, v any) (*jsonpath.JSONPath, any, error) {
	j := jsonpath.New("out").AllowMissingKeys(true)
	if err := j.Parse(tmpl); err != nil {
		return nil, nil, fmt.Errorf("jsonpath %q: %w", tmpl, err)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, nil, err
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	return j, doc, nil
}
