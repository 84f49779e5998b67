package scenarios

import (
	"errors"
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
		{"unknown step field", "title: x\nsteps:\n  - title: a\n    comands: [pi get pods]\n", `x.yaml:4: unknown field "comands"`},
		{"unknown command field", "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods\n        captur: {A: '(x)'}\n", `x.yaml:6: unknown field "captur"`},
		{"unknown check field", "title: x\nsteps:\n  - title: a\n    commands: [pi get pods]\n    checks:\n      - mach: x\n", `x.yaml:6: unknown field "mach"`},
		{"no title", "steps:\n  - title: a\n", "title is missing"},
		{"no steps", "title: x\n", "at least one step"},
		{"step without title", "title: x\nsteps:\n  - text: hi\n", "step 1: title is missing"},
		{"not pi", "title: x\nsteps:\n  - title: a\n    commands: [rm -rf /]\n", `they start with "pi "`},
		{"two kinds", "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi get pods\n        http: http://127.0.0.1/\n", "exactly one of run:, http: or write:"},
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
