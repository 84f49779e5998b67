package scenarios

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
)

// The schema is generated from the Go types Scenario, Step, Command and Check and their field comments by
// TestSchemaFile (github.com/invopop/jsonschema), which fails when this file is out of date; the binary
// embeds the result instead of linking the reflector and reading Go sources at run time.
//
//go:generate go test . -run ^TestSchemaFile$ -update-schema
//go:embed scenario.schema.json
var schemaJSON []byte

// Schema returns the JSON Schema (draft 2020-12) of scenario files, for editors to validate and complete
// workshop files: `pi scenario schema > scenario.schema.json`, then point the editor's YAML support at it
// (e.g. a first line `# yaml-language-server: $schema=scenario.schema.json`). The schema knows the fields and
// their types; Load (and Lint) also check what a schema cannot say: variables captured before they are
// used, regexps, shell syntax in pi command lines, files next to the scenario.
func Schema() ([]byte, error) {
	if !json.Valid(schemaJSON) {
		return nil, errors.New("the embedded scenario schema is not valid JSON: regenerate it with go generate ./scenarios")
	}
	return bytes.Clone(schemaJSON), nil
}
