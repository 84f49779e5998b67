package printers

import (
	"encoding/json"
	"fmt"
	"io"

	"k8s.io/client-go/util/jsonpath"
)

// JSONPath prints a kubectl template such as `{.status.podIP}` or
// `{range .items[*]}{.metadata.name}{"\n"}{end}` with kubectl's own JSONPath engine, over the object's JSON
// form (as kubectl does, so field names are the manifest's). Missing keys print nothing, as kubectl's
// default --allow-missing-template-keys.
func JSONPath(w io.Writer, tmpl string, v any) error {
	j := jsonpath.New("out").AllowMissingKeys(true)
	if err := j.Parse(tmpl); err != nil {
		return fmt.Errorf("jsonpath %q: %w", tmpl, err)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	if err := j.Execute(w, doc); err != nil {
		return fmt.Errorf("jsonpath %q: %w", tmpl, err)
	}
	return nil
}
