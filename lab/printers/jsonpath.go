package printers

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// JSONPath prints a kubectl-style template such as `{.status.podIP}` or `{.items[*].metadata.name}`:
// text outside braces as is, each {path} as the values it selects, space-separated. It supports the
// subset people use on the command line: fields, [N] and [*].
func JSONPath(w io.Writer, tmpl string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	for len(tmpl) > 0 {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			io.WriteString(w, tmpl)
			break
		}
		io.WriteString(w, tmpl[:i])
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			return fmt.Errorf("jsonpath %q: unclosed {", tmpl)
		}
		vals, err := selectPath(doc, strings.TrimSpace(tmpl[i+1:i+j]))
		if err != nil {
			return err
		}
		var out []string
		for _, v := range vals {
			switch t := v.(type) {
			case string:
				out = append(out, t)
			case nil:
			default:
				b, _ := json.Marshal(t)
				out = append(out, string(b))
			}
		}
		io.WriteString(w, strings.Join(out, " "))
		tmpl = tmpl[i+j+1:]
	}
	return nil
}

func selectPath(doc any, path string) ([]any, error) {
	path = strings.TrimPrefix(path, "$")
	cur := []any{doc}
	for path != "" {
		var next []any
		switch {
		case strings.HasPrefix(path, "."):
			path = path[1:]
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			field := path[:end]
			path = path[end:]
			if field == "" {
				continue
			}
			for _, c := range cur {
				if m, ok := c.(map[string]any); ok {
					if v, ok := m[field]; ok {
						next = append(next, v)
					}
				}
			}
		case strings.HasPrefix(path, "["):
			end := strings.IndexByte(path, ']')
			if end < 0 {
				return nil, fmt.Errorf("jsonpath: unclosed [ in %q", path)
			}
			idx := path[1:end]
			path = path[end+1:]
			for _, c := range cur {
				arr, ok := c.([]any)
				if !ok {
					continue
				}
				if idx == "*" {
					next = append(next, arr...)
					continue
				}
				n, err := strconv.Atoi(idx)
				if err != nil {
					return nil, fmt.Errorf("jsonpath: bad index [%s]", idx)
				}
				if n < 0 {
					n += len(arr)
				}
				if n >= 0 && n < len(arr) {
					next = append(next, arr[n])
				}
			}
		default:
			return nil, fmt.Errorf("jsonpath: unexpected %q", path)
		}
		cur = next
	}
	return cur, nil
}
