package scenarios

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	validVar = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	varRef   = regexp.MustCompile(`\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)
)

// Refs lists the variables s uses as {{.NAME}}; any other use of {{ is an error, so a typo such as {{FIP}}
// never reaches a command line as text.
func Refs(s string) ([]string, error) {
	var out []string
	rest := varRef.ReplaceAllStringFunc(s, func(m string) string {
		out = append(out, varRef.FindStringSubmatch(m)[1])
		return ""
	})
	if strings.Contains(rest, "{{") || strings.Contains(rest, "}}") {
		return nil, fmt.Errorf("%q: variables are written {{.NAME}}", s)
	}
	return out, nil
}

// MissingVarError says a text uses a variable that has no value yet.
type MissingVarError struct{ Name, In string }

func (e *MissingVarError) Error() string {
	return fmt.Sprintf("%q uses {{.%s}}, which has not been captured yet", e.In, e.Name)
}

// Expand replaces {{.NAME}} with the variables' values.
func Expand(s string, vars map[string]string) (string, error) {
	if _, err := Refs(s); err != nil {
		return "", err
	}
	var missing error
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		name := varRef.FindStringSubmatch(m)[1]
		v, ok := vars[name]
		if !ok && missing == nil {
			missing = &MissingVarError{Name: name, In: s}
		}
		return v
	})
	if missing != nil {
		return "", missing
	}
	return out, nil
}

// SplitWords splits a command line as sh would split a simple command: blanks separate words, '...' is
// literal, "..." keeps blanks and understands \" \\ \$ \`, and a backslash outside quotes escapes the next
// character. Nothing else of sh (no $VAR, globs, pipes or redirections) is understood: commands run without
// a shell, and text meant for a shell inside a pod (sh -c '...') goes there untouched.
func SplitWords(line string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		inW   bool
	)
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inW {
				words = append(words, cur.String())
				cur.Reset()
				inW = false
			}
		case c == '\'':
			inW = true
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				j++
			}
			if j == len(rs) {
				return nil, fmt.Errorf("%q: unterminated ' quote", line)
			}
			cur.WriteString(string(rs[i+1 : j]))
			i = j
		case c == '"':
			inW = true
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) && strings.ContainsRune("\"\\$`", rs[j+1]) {
					j++
				}
				cur.WriteRune(rs[j])
			}
			if j == len(rs) {
				return nil, fmt.Errorf("%q: unterminated \" quote", line)
			}
			i = j
		case c == '\\':
			if i+1 == len(rs) {
				return nil, fmt.Errorf("%q: a backslash at the end escapes nothing", line)
			}
			inW = true
			i++
			cur.WriteRune(rs[i])
		default:
			inW = true
			cur.WriteRune(c)
		}
	}
	if inW {
		words = append(words, cur.String())
	}
	return words, nil
}
