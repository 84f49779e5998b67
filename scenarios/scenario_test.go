package scenarios

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

func TestBuiltin(t *testing.T) {
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sc := range all {
		names = append(names, sc.Name)
	}
	if want := []string{"pod-networking", "scale-podinfo", "expose-nginx"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("built-in scenarios %v, want %v in that order", names, want)
	}
	for _, sc := range all {
		if len(sc.Cleanup) == 0 {
			t.Errorf("%s has no cleanup: the next scenario would find its objects", sc.Name)
		}
	}
	sc, err := Load("expose-nginx")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Steps[1].Commands[0].From != "manifests/service.yml" {
		t.Errorf("expose-nginx must write the guide's service.yml from manifests/service.yml (the Makefile's demo uses it too)")
	}
	if _, err := Load("no-such"); err == nil || !strings.Contains(err.Error(), "pod-networking, scale-podinfo, expose-nginx") {
		t.Errorf("Load(no-such) = %v, want an error listing the scenarios", err)
	}
}

func TestParseStrict(t *testing.T) {
	files := fstest.MapFS{"manifests/svc.yml": {Data: []byte("ip: 1.2.3.4\n")}}
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown top field", "title: x\nstpes: []\n", `x.yaml:2: unknown field "stpes"`},
		{"unknown step field", "title: x\nsteps:\n  - title: a\n    comands: [pi get pods]\n", `x.yaml:4: step 1 ("a"): unknown field "comands" (did you mean commands:?)`},
		{"unknown command field", "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods\n        captur: {A: '(x)'}\n", `x.yaml:6: step 1 ("a"), command 1: unknown field "captur" (did you mean capture:?)`},
		{"unknown check field", "title: x\nsteps:\n  - title: a\n    commands: [pi get pods]\n    checks:\n      - mach: x\n", `x.yaml:6: step 1 ("a"), check 1: unknown field "mach" (did you mean match:?)`},
		{"no title", "steps:\n  - title: a\n", "title is missing"},
		{"no steps", "title: x\n", "at least one step"},
		{"step without title", "title: x\nsteps:\n  - text: hi\n", "step 1: title is missing"},
		{"not pi", "title: x\nsteps:\n  - title: a\n    commands: [rm -rf /]\n", `they start with "pi "`},
		{"two kinds", "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods\n        http: http://127.0.0.1/\n", "step 1 (\"a\"), command 1: say exactly one of run:, http:, write:, sh: or trace:"},
		{"var before capture", "title: x\nsteps:\n  - title: a\n    commands: ['pi exec nginx -- curl {{.IP}}']\n", "{{.IP}}, which no earlier command captures"},
		{"bad template", "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi create fip\n        capture: {FIP: '(\\S+)'}\n      - 'pi delete fip {{FIP}}'\n", "variables are written {{.NAME}}"},
		{"capture without group", "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi create fip\n        capture: {FIP: '\\S+'}\n", "exactly one group"},
		{"bad regexp", "title: x\nsteps:\n  - title: a\n    commands: [pi get pods]\n    checks:\n      - match: '('\n", "match: error parsing regexp"},
		{"bad duration", "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods\n        within: soon\n", `invalid duration "soon"`},
		{"output check without commands", "title: x\nsteps:\n  - title: a\n    checks:\n      - match: x\n", "the step has no commands"},
		{"distinct without atLeast", "title: x\nsteps:\n  - title: a\n    commands: [pi get pods]\n    checks:\n      - distinct: '(x)'\n", "needs atLeast"},
		{"unterminated quote", "title: x\nsteps:\n  - title: a\n    commands: [\"pi exec a -- sh -c 'ls\"]\n", "unterminated ' quote"},
		{"write missing source", "title: x\nsteps:\n  - title: a\n    commands:\n      - write: s.yml\n        from: manifests/nope.yml\n", `from: "manifests/nope.yml" does not exist`},
		{"write into a path", "title: x\nsteps:\n  - title: a\n    commands:\n      - write: ../s.yml\n        from: manifests/svc.yml\n", "must be a plain file name"},
		{"cleanup not pi", "title: x\nsteps:\n  - title: a\ncleanup: [ls]\n", "cleanup 1"},
		{"duplicate key", "title: x\ntitle: y\nsteps:\n  - title: a\n", `"title" already set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "x.yaml", files)
			if err == nil {
				t.Fatalf("Parse succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "x.yaml") {
				t.Fatalf("error %q, want it to start with the file and contain %q", err, tc.want)
			}
		})
	}
	ok := "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi create fip\n        capture: {FIP: '(\\S+)'}\n" +
		"      - write: s.yml\n        from: manifests/svc.yml\n        replace: {1.2.3.4: '{{.FIP}}'}\n" +
		"    checks:\n      - http: 'http://{{.FIP}}:8080/'\n        within: 5s\ncleanup: ['pi delete fip {{.FIP}}']\n"
	sc, err := Parse([]byte(ok), "dir/01-my-scenario.yaml", files)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "my-scenario" {
		t.Errorf("name %q, want my-scenario (file name without NN- and .yaml)", sc.Name)
	}
}

func TestSplitWords(t *testing.T) {
	for in, want := range map[string][]string{
		"pi get pods -o wide": {"pi", "get", "pods", "-o", "wide"},
		"  pi   get\tpods ":   {"pi", "get", "pods"},
		`pi exec nginx -- sh -c 'for i in $(seq 3); do curl -s x; done'`: {"pi", "exec", "nginx", "--", "sh", "-c", "for i in $(seq 3); do curl -s x; done"},
		`pi exec a -- echo "a \"b\" $c"`:                                 {"pi", "exec", "a", "--", "echo", `a "b" $c`},
		`pi x a\ b ''`:                                                   {"pi", "x", "a b", ""},
		`pi x 'it''s'`:                                                   {"pi", "x", "its"},
	} {
		got, err := SplitWords(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("SplitWords(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`pi 'x`, `pi "x`, `pi x\`} {
		if _, err := SplitWords(bad); err == nil {
			t.Errorf("SplitWords(%q) succeeded, want an error", bad)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"FIP": "198.18.0.3", "HTTPD_IP": "10.244.1.7"}
	got, err := Expand("curl {{.HTTPD_IP}} http://{{ .FIP }}:8080/ $(seq 3)", vars)
	if err != nil || got != "curl 10.244.1.7 http://198.18.0.3:8080/ $(seq 3)" {
		t.Errorf("Expand = %q, %v", got, err)
	}
	_, err = Expand("pi delete fip {{.NOPE}}", vars)
	var mv *MissingVarError
	if !errors.As(err, &mv) || mv.Name != "NOPE" {
		t.Errorf("Expand of a missing variable: %v, want a MissingVarError naming NOPE", err)
	}
	if _, err := Expand("{{.FIP | printf}}", vars); err == nil {
		t.Error("Expand accepted a template pipeline; only {{.NAME}} is understood")
	}
	refs, _ := Refs("{{.A}} and {{.B}}")
	if !reflect.DeepEqual(refs, []string{"A", "B"}) {
		t.Errorf("Refs = %v", refs)
	}
}

const podsWide = `NAME                      READY   STATUS    RESTARTS   AGE   IP             NODE   NOMINATED NODE   READINESS GATES
httpd                     1/1     Running   0          10s   10.244.18.162  lab1   <none>           <none>
nginx                     1/1     Running   0          10s   10.244.9.3     lab1   <none>           <none>
podinfo-895fd568b-25fbx   1/1     Running   0          9s    10.244.64.74   lab1   <none>           <none>
`

func TestCapture(t *testing.T) {
	all, _ := Builtin()
	c := all[0].Steps[1].Commands[0] // pod-networking's `pi get pods -o wide`
	vars, err := Capture(c, podsWide)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"HTTPD_IP": "10.244.18.162", "PODINFO_IP": "10.244.64.74"}; !reflect.DeepEqual(vars, want) {
		t.Errorf("captured %v, want %v", vars, want)
	}
	// Before httpd has an address there is nothing to capture: an error saying what was looked for.
	_, err = Capture(c, strings.Replace(podsWide, "10.244.18.162", "<none>       ", 1))
	var mm *Mismatch
	if !errors.As(err, &mm) || !strings.Contains(mm.Expected, "to capture HTTPD_IP") || !strings.Contains(mm.Got, "httpd") {
		t.Errorf("capture with no httpd IP: %v", err)
	}
}

func TestCheckEval(t *testing.T) {
	vars := map[string]string{"FIP": "198.18.0.3"}
	ok := Result{Stdout: "fip \"198.18.0.3\" deleted\n"}
	for _, tc := range []struct {
		name  string
		check Check
		res   Result
		want  string // "" passes
	}{
		{"match", Check{Match: `fip "{{.FIP}}" deleted`}, ok, ""},
		// The captured value is literal: its dots do not match any character.
		{"var is literal", Check{Match: `fip "{{.FIP}}" deleted`}, Result{Stdout: `fip "198x18x0x3" deleted`}, "expected output matching"},
		{"no match", Check{Match: "Welcome to nginx!"}, Result{Stdout: "It works!"}, `expected output matching /Welcome to nginx!/, got "It works!"`},
		{"noMatch", Check{NoMatch: "refused"}, Result{Stdout: "connection refused"}, `expected no output matching /refused/`},
		{"command failed", Check{Run: "pi get pods", Match: "x"}, Result{Stderr: "boom", Err: errors.New("exit status 1")}, `expected success, got exit status 1: "boom"`},
		{"fails as wanted", Check{Run: "pi get pod nope", Fails: true}, Result{Err: errors.New("exit status 1")}, ""},
		{"fails but succeeded", Check{Run: "pi get pods", Fails: true}, Result{Stdout: "x"}, "expected the command to fail"},
		{"match on stderr", Check{Run: "pi get pods", Match: "No resources"}, Result{Stderr: "No resources found"}, ""},
		{"distinct", Check{Distinct: `"hostname": "([^"]+)"`, AtLeast: 2}, Result{Stdout: `"hostname": "a"` + "\n" + `"hostname": "b"` + "\n" + `"hostname": "a"`}, ""},
		{"not distinct", Check{Distinct: `"hostname": "([^"]+)"`, AtLeast: 2}, Result{Stdout: `"hostname": "a"` + "\n" + `"hostname": "a"`}, "expected at least 2 different values"},
		{"empty output", Check{Match: "x"}, Result{}, "got no output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check.Eval(tc.res, vars)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("check failed: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("check passed, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	for c, want := range map[*Check]string{
		{Name: "nginx is Ready", Run: "pi wait"}: "nginx is Ready",
		{Match: "It works!"}:                     "the output matches /It works!/",
		{Run: "pi get endpoints podinfo", Match: `\+ 2 more`, Within: Duration(30e9)}: "`pi get endpoints podinfo` succeeds and matches /\\+ 2 more/ (within 30s)",
		{Run: "pi get pod x", Fails: true}:                                            "`pi get pod x` fails",
	} {
		if got := c.Describe(); got != want {
			t.Errorf("Describe() = %q, want %q", got, want)
		}
	}
}

// TestShellSyntax: a pi command line with shell syntax outside quotes is refused when the scenario is loaded,
// saying what and why; the same text inside a quoted argument (a shell in a pod) is fine.
func TestShellSyntax(t *testing.T) {
	for line, op := range map[string]string{
		"pi get pods | grep web":                  "|",
		"pi get pods > pods.txt":                  ">",
		"pi create -f - < pod.yml":                "<",
		"pi get pods; pi get svc":                 ";",
		"pi get pods && pi get svc":               "&&",
		"pi get pod x || true":                    "||",
		"pi get pods &":                           "&",
		"pi delete pod $(pi get pods -o name)":    "$(",
		"pi delete pod `pi get pods -o name`":     "`...`",
		`pi exec a -- echo "$(date)"`:             "$(",
		`pi exec a -- echo "$HOME"`:               "$HOME",
		"pi exec a -- echo ${X}":                  "${",
		"pi get pods 2>&1":                        ">",
		`pi exec a -- sh -c 'a' | b`:              "|",
		`pi exec a -- sh -c "wget -qO- x" | head`: "|",
	} {
		if got := shellSyntax(line); got != op {
			t.Errorf("shellSyntax(%q) = %q, want %q", line, got, op)
		}
	}
	for _, line := range []string{
		"pi exec nginx -- sh -c 'wget -qO- x | head'",
		"pi exec nginx -- sh -c 'for i in $(seq 10); do curl -s podinfo:9898 | grep hostname; done'",
		`pi exec a -- sh -c "echo a > /tmp/x; cat /tmp/x"`,
		`pi exec a -- echo "\$(not run)" \| \& \; \> x\$y`,
		"pi get pods -o jsonpath='{.items[*].status.podIP}'",
		"pi exec a -- curl -s {{.IP}}:9898/env",
		"pi exec a -- echo price: $5 and $ alone",
		"pi exec a -- sh -c 'it''s'",
	} {
		if op := shellSyntax(line); op != "" {
			t.Errorf("shellSyntax(%q) = %q, want none (it is quoted or escaped)", line, op)
		}
	}

	yml := "title: x\nsteps:\n  - title: Start\n    commands: [pi run web --image=nginx]\n  - title: Look\n    commands:\n      - pi get pods | grep web\n" +
		"    checks:\n      - run: pi get svc > /dev/null\ncleanup: ['pi delete pod web; true']\n"
	_, err := Parse([]byte(yml), "x.yaml", nil)
	want := "x.yaml: step 2 (\"Look\"), command 1: run: `pi get pods | grep web` uses shell syntax (|); scenario commands run pi directly, " +
		"without a shell: use a check's match:, or an sh: action to run a shell line inside a pod\n" +
		"x.yaml: step 2 (\"Look\"), check 1: run: `pi get svc > /dev/null` uses shell syntax (>); scenario commands run pi directly, " +
		"without a shell: use a check's match:, or an sh: action to run a shell line inside a pod\n" +
		"x.yaml: cleanup 1: run: `pi delete pod web; true` uses shell syntax (;); scenario commands run pi directly, " +
		"without a shell: use a check's match:, or an sh: action to run a shell line inside a pod"
	if err == nil || err.Error() != want {
		t.Errorf("Parse error:\n%v\nwant:\n%s", err, want)
	}
}

// TestShAction: sh: runs a shell line in the pod named by pod:; both are checked at load time.
func TestShAction(t *testing.T) {
	ok := "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods -o wide\n        capture: {IP: '(10\\.\\S+)', POD: '^(\\S+)'}\n" +
		"      - sh: 'for i in $(seq 3); do wget -qO- {{.IP}}:9898 | grep hostname; done'\n        pod: '{{.POD}}'\n        within: 30s\n" +
		"      - sh: echo hi > /tmp/x && cat /tmp/x\n        pod: nginx\n        capture: {HI: '(hi)'}\n"
	sc, err := Parse([]byte(ok), "x.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := sc.Steps[0].Commands[1]
	if c.Kind() != "sh" || c.Pod != "{{.POD}}" || !strings.Contains(c.Sh, "| grep hostname") {
		t.Errorf("sh command read as %+v (kind %s)", c, c.Kind())
	}
	for _, tc := range []struct{ name, cmd, want string }{
		{"no pod", "      - sh: ls\n", "command 1: sh: `ls` needs pod: (the pod the shell line runs in, as pi exec POD -- sh -c LINE)"},
		{"pod without sh", "      - run: pi get pods\n        pod: nginx\n", `command 1: pod: "nginx" goes with sh:`},
		{"sh and run", "      - sh: ls\n        pod: nginx\n        run: pi get pods\n", "command 1: say exactly one of run:, http:, write:, sh: or trace:"},
		{"bad pod name", "      - sh: ls\n        pod: Nginx_1\n", `command 1: pod: "Nginx_1" is not a pod name`},
		{"variable in sh", "      - sh: 'wget -qO- {{.IP}}'\n        pod: nginx\n", "command 1: sh: \"wget -qO- {{.IP}}\" uses {{.IP}}, which no earlier command captures"},
		{"variable in pod", "      - sh: ls\n        pod: '{{.POD}}'\n", "command 1: pod: \"{{.POD}}\" uses {{.POD}}, which no earlier command captures"},
		{"sh in cleanup", "      - pi get pods\ncleanup:\n  - sh: ls\n    pod: nginx\n", "cleanup 1: cleanup commands are plain pi command lines"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("title: x\nsteps:\n  - title: a\n    commands:\n"+tc.cmd), "x.yaml", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestLint: a file with several problems gets all of them at once, each naming the file, the line where
// known, the step by number and title, and the field; the built-in files pass.
func TestLint(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "01-broken.yaml")
	yml := `title: Broken
steps:
  - title: Start
    commands:
      - pi run web --image=nginx
      - run: pi get pods -o wide
        captur:
          IP: '(10\.\S+)'
  - title: Look
    commands:
      - pi get pods | grep web
      - pi exec web -- curl -s {{.IP}}
      - sh: wget -qO- localhost
    checks:
      - mach: Welcome
      - run: pi get svc
        within: 2m
        atLeast: 2
cleanup:
  - pi delete pod web
`
	if err := os.WriteFile(file, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Lint(file)
	if err == nil {
		t.Fatal("Lint passed a broken file")
	}
	want := []string{
		file + `:7: step 1 ("Start"), command 2: unknown field "captur" (did you mean capture:?)`,
		file + `:15: step 2 ("Look"), check 1: unknown field "mach" (did you mean match:?)`,
		file + ": step 2 (\"Look\"), command 1: run: `pi get pods | grep web` uses shell syntax (|); scenario commands run pi directly, without a shell: use a check's match:, or an sh: action to run a shell line inside a pod",
		file + `: step 2 ("Look"), command 2: run: "pi exec web -- curl -s {{.IP}}" uses {{.IP}}, which no earlier command captures`,
		file + ": step 2 (\"Look\"), command 3: sh: `wget -qO- localhost` needs pod: (the pod the shell line runs in, as pi exec POD -- sh -c LINE)",
		file + `: step 2 ("Look"), check 1: a check of the step's output needs match:, noMatch: or distinct:`,
		file + `: step 2 ("Look"), check 2: atLeast: goes with distinct:`,
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("Lint:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}

	if err := Lint(filepath.Join(dir, "nope.yaml")); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("Lint of a missing file: %v", err)
	}
	files, _ := filepath.Glob("*.yaml")
	if len(files) == 0 {
		t.Fatal("no built-in scenario files next to the test")
	}
	for _, f := range files {
		if err := Lint(f); err != nil {
			t.Errorf("Lint(%s): %v", f, err)
		}
	}
}
