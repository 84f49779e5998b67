package scenarios

import (
	"fmt"
	"github.com/pilab/pi/lab/daemon"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Result is what one command or HTTP GET produced.
type Result struct {
	Stdout string
	Stderr string
	// Err is set when the command failed: a non-zero exit, or no answer.
	Err error
	// Trace is what a trace: command observed (Stdout is its path as text); nil for other commands.
	Trace *daemon.TraceResult
}

// Output is what a learner saw: stdout, then stderr.
func (r Result) Output() string {
	if r.Stderr == "" {
		return r.Stdout
	}
	if r.Stdout == "" || strings.HasSuffix(r.Stdout, "\n") {
		return r.Stdout + r.Stderr
	}
	return r.Stdout + "\n" + r.Stderr
}

// Mismatch says what a check or capture expected and what came instead.
type Mismatch struct {
	Expected string
	Got      string
}

func (m *Mismatch) Error() string {
	return fmt.Sprintf("expected %s, got %s", m.Expected, m.Got)
}

// Capture returns the variables c captures from stdout.
func Capture(c Command, stdout string) (map[string]string, error) {
	out := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Capture)) {
		re, err := regexp.Compile(c.Capture[name])
		if err != nil {
			return nil, fmt.Errorf("capture %s: %v", name, err)
		}
		m := re.FindStringSubmatch(stdout)
		if m == nil || m[1] == "" {
			return nil, &Mismatch{Expected: fmt.Sprintf("output matching /%s/ to capture %s", c.Capture[name], name), Got: quoteOutput(stdout)}
		}
		out[name] = m[1]
	}
	return out, nil
}

// Describe is the check as the learner reads it.
func (c Check) Describe() string {
	if c.Name != "" {
		return c.Name
	}
	var what string
	switch {
	case c.Run != "" && c.Fails:
		what = "`" + c.Run + "` fails"
	case c.Run != "":
		what = "`" + c.Run + "` succeeds"
	case c.HTTP != "":
		what = c.HTTP + " answers from the laptop"
	default:
		what = "the output"
	}
	var conds []string
	if c.Match != "" {
		conds = append(conds, "matches /"+c.Match+"/")
	}
	if c.NoMatch != "" {
		conds = append(conds, "does not match /"+c.NoMatch+"/")
	}
	if c.Distinct != "" {
		conds = append(conds, fmt.Sprintf("shows at least %d different /%s/", c.AtLeast, c.Distinct))
	}
	if len(conds) > 0 {
		if what == "the output" {
			what += " " + strings.Join(conds, " and ")
		} else {
			what += " and " + strings.Join(conds, " and ")
		}
	}
	if c.Within != 0 {
		what += fmt.Sprintf(" (within %s)", durationString(c.Within))
	}
	return what
}

// Eval decides a check on what its command (or the step's commands) produced; vars fill {{.NAME}} in its
// patterns.
func (c Check) Eval(r Result, vars map[string]string) error {
	switch {
	case c.Fails && r.Err == nil:
		return &Mismatch{Expected: "the command to fail", Got: "success: " + quoteOutput(r.Output())}
	case !c.Fails && r.Err != nil:
		return &Mismatch{Expected: "success", Got: fmt.Sprintf("%v: %s", r.Err, quoteOutput(r.Output()))}
	}
	out := r.Output()
	if c.Match != "" {
		re, err := compile(c.Match, vars)
		if err != nil {
			return err
		}
		if !re.MatchString(out) {
			return &Mismatch{Expected: "output matching /" + re.String() + "/", Got: quoteOutput(out)}
		}
	}
	if c.NoMatch != "" {
		re, err := compile(c.NoMatch, vars)
		if err != nil {
			return err
		}
		if m := re.FindString(out); m != "" || re.MatchString(out) {
			return &Mismatch{Expected: "no output matching /" + re.String() + "/", Got: fmt.Sprintf("%q in %s", m, quoteOutput(out))}
		}
	}
	if c.Distinct != "" {
		re, err := compile(c.Distinct, vars)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, m := range re.FindAllStringSubmatch(out, -1) {
			seen[m[1]] = true
		}
		if len(seen) < c.AtLeast {
			vals := make([]string, 0, len(seen))
			for v := range seen {
				vals = append(vals, v)
			}
			sort.Strings(vals)
			return &Mismatch{
				Expected: fmt.Sprintf("at least %d different values of /%s/", c.AtLeast, re.String()),
				Got:      fmt.Sprintf("%d %v in %s", len(seen), vals, quoteOutput(out)),
			}
		}
	}
	return nil
}

func compile(pattern string, vars map[string]string) (*regexp.Regexp, error) {
	p, err := Expand(pattern, quoteVars(vars))
	if err != nil {
		return nil, err
	}
	return regexp.Compile(p)
}

// quoteVars makes captured values literal inside a pattern: an IP's dots match dots only.
func quoteVars(vars map[string]string) map[string]string {
	out := make(map[string]string, len(vars))
	for k, v := range vars {
		out[k] = regexp.QuoteMeta(v)
	}
	return out
}

// quoteOutput shows output in a message: quoted, and cut in the middle when long.
func quoteOutput(s string) string {
	if strings.TrimSpace(s) == "" {
		return "no output"
	}
	const max = 1500
	if len(s) > max {
		s = s[:max/2] + "\n...\n" + s[len(s)-max/2:]
	}
	return fmt.Sprintf("%q", s)
}
