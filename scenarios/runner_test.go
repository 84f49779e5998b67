package scenarios

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jstemmer/go-junit-report/v2/junit"
)

// fakeLab is a daemon socket answering what a Runner asks the API (info, images) and a pi binary that is a
// shell script: the runner's own logic (capture, substitution, checks, events, cleanup) without root.
func fakeLab(t *testing.T, script string) Options {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "pi.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/x/info":
			fmt.Fprint(w, `{"lab":"t1","fipPool":"198.18.0.0/24"}`)
		case "/x/images":
			fmt.Fprint(w, `[{"Name":"nginx"}]`)
		case "/x/progress":
			// The runner's step reports, a line each, for the test to read.
			body, _ := io.ReadAll(r.Body)
			f, _ := os.OpenFile(filepath.Join(dir, "progress.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			f.Write(append(body, '\n'))
			f.Close()
			fmt.Fprint(w, "{}")
		case "/x/trace":
			// The daemon's answer is the test's (trace.json); the request is kept for it to look at.
			body, _ := io.ReadAll(r.Body)
			os.WriteFile(filepath.Join(dir, "trace-request.json"), body, 0o644)
			http.ServeFile(w, r, filepath.Join(dir, "trace.json"))
		default:
			serveObjects(w, r, filepath.Join(dir, "objs"))
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	if err := os.MkdirAll(filepath.Join(dir, "objs", "accounts"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "objs", "accounts", "alice"), []byte("uid-alice"), 0o644)
	exe := filepath.Join(dir, "pi")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{Socket: sock, Lab: "t1", Account: "alice", Exe: exe, WorkDir: dir, CommandTimeout: 10 * time.Second}
}

// serveObjects answers the API's lists and gets from a directory the fake pi writes: objs/PLURAL/NAME
// holds the object's UID.
func serveObjects(w http.ResponseWriter, r *http.Request, objs string) {
	// The Kubernetes API's paths: /api/v1/[namespaces/default/]PLURAL[/NAME], /apis/GROUP/VERSION/...
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/v1/"):
		p = strings.TrimPrefix(p, "/api/v1/")
	case strings.HasPrefix(p, "/apis/"):
		if f := strings.SplitN(p, "/", 5); len(f) == 5 {
			p = f[4]
		}
	default:
		http.NotFound(w, r)
		return
	}
	parts := strings.Split(strings.TrimPrefix(p, "namespaces/default/"), "/")
	if parts[0] == "floatingips" {
		parts[0] = "fips" // the fake pi's directory of them
	}
	item := func(plural, name string) (string, bool) {
		uid, err := os.ReadFile(filepath.Join(objs, plural, name))
		if err != nil {
			return "", false
		}
		return fmt.Sprintf(`{"metadata":{"name":%q,"uid":%q}}`, name, strings.TrimSpace(string(uid))), true
	}
	switch {
	case r.Method == "GET" && len(parts) == 1:
		ents, _ := os.ReadDir(filepath.Join(objs, parts[0]))
		var items []string
		for _, e := range ents {
			if it, ok := item(parts[0], e.Name()); ok {
				items = append(items, it)
			}
		}
		fmt.Fprintf(w, `{"items":[%s]}`, strings.Join(items, ","))
	case r.Method == "GET" && len(parts) == 2:
		if it, ok := item(parts[0], parts[1]); ok {
			fmt.Fprint(w, it)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		msg, _ := json.Marshal(fmt.Sprintf("%s %q not found", parts[0], parts[1]))
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":%s,"reason":"NotFound","code":404}`, msg)
	default:
		http.NotFound(w, r)
	}
}

const fakePi = `
echo "$*" >> calls.log
case "$1" in
  create) echo 198.18.0.7 ;;
  get) printf 'NAME READY STATUS RESTARTS AGE IP\nhttpd 1/1 Running 0 1s 10.244.3.4 n\n' ;;
  exec) shift 3; echo "exec $* as $PI_ACCOUNT in $PI_LAB via $(basename $PI_SOCKET)" ;;
  flaky) n=$(cat flaky 2>/dev/null || echo 0); echo $((n+1)) > flaky; [ $n -ge 2 ] && echo ok || { echo "not yet $n" >&2; exit 1; } ;;
  delete) echo "$2 \"$3\" deleted" ;;
  *) echo "unknown command $1" >&2; exit 2 ;;
esac
`

func mustParse(t *testing.T, y string, files fstest.MapFS) *Scenario {
	t.Helper()
	sc, err := Parse([]byte(y), "test.yaml", files)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestRunnerCaptureSubstituteCheck(t *testing.T) {
	opt := fakeLab(t, fakePi)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "Welcome to nginx!") }))
	defer web.Close()
	files := fstest.MapFS{"manifests/svc.yml": {Data: []byte("loadBalancerIP: 104.154.140.179\n")}}
	sc := mustParse(t, `
title: test
images: [nginx]
steps:
  - title: Allocate
    commands:
      - run: pi create fip
        capture: {FIP: '(?m)^(\S+)$'}
      - write: svc.yml
        from: manifests/svc.yml
        replace: {104.154.140.179: '{{.FIP}}'}
  - title: Use it
    commands:
      - run: pi get pods -o wide
        capture: {IP: '(?m)^httpd\s+\S+\s+\S+\s+\S+\s+\S+\s+(\S+)'}
      - "pi exec nginx -- curl -s '{{.IP}}' {{.FIP}}"
      - run: pi flaky
        within: 10s
      - http: `+web.URL+`/
    checks:
      - match: exec curl -s 10.244.3.4 198.18.0.7 as alice in t1 via pi.sock
      - match: Welcome to nginx!
      - run: pi get pods
        match: httpd
cleanup:
  - pi delete fip {{.FIP}}
  - pi delete pod {{.NEVER}}
`, files)
	var mu sync.Mutex
	var events []Event
	opt.Sink = func(ev Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }
	r, err := NewRunner(sc, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range sc.Steps {
		if err := r.RunStep(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(opt.WorkDir, "svc.yml"))
	if string(data) != "loadBalancerIP: 198.18.0.7\n" {
		t.Errorf("svc.yml = %q, want the FIP in place of the guide's address", data)
	}
	// Each step's result went to the lab, for the instructor.
	progress, _ := os.ReadFile(filepath.Join(opt.WorkDir, "progress.log"))
	wantProgress := `{"scenario":"test","steps":2,"step":1,"passed":true}` + "\n" + `{"scenario":"test","steps":2,"step":2,"passed":true}` + "\n"
	if string(progress) != wantProgress {
		t.Errorf("progress reported:\n%s\nwant\n%s", progress, wantProgress)
	}
	calls, _ := os.ReadFile(filepath.Join(opt.WorkDir, "calls.log"))
	wantCalls := "create fip\nget pods -o wide\nexec nginx -- curl -s 10.244.3.4 198.18.0.7\nflaky\nflaky\nflaky\nget pods\ndelete fip 198.18.0.7\n"
	if string(calls) != wantCalls {
		t.Errorf("pi was called with\n%s\nwant\n%s", calls, wantCalls)
	}
	var kinds []string
	var notices []string
	for _, ev := range events {
		if ev.Kind == Notice {
			notices = append(notices, ev.Text)
		}
		if ev.Kind == CheckFinished {
			kinds = append(kinds, fmt.Sprintf("check %d %v", ev.Index, ev.Err))
		}
	}
	if got := strings.Join(kinds, ","); got != "check 0 <nil>,check 1 <nil>,check 2 <nil>" {
		t.Errorf("check events %s", got)
	}
	joined := strings.Join(notices, "\n")
	for _, want := range []string{"FIP=198.18.0.7", "IP=10.244.3.4", "`pi flaky`, attempt 2", "skipped `pi delete pod {{.NEVER}}`"} {
		if !strings.Contains(joined, want) {
			t.Errorf("notices %q lack %q", joined, want)
		}
	}
}

func TestHeadlessFailureSaysWhere(t *testing.T) {
	opt := fakeLab(t, fakePi)
	sc := mustParse(t, `
title: test
steps:
  - title: One
    commands: [pi create fip]
  - title: Two
    commands: ['pi exec nginx -- curl -s 10.244.0.9']
    checks:
      - name: httpd answers
        match: It works!
cleanup:
  - pi delete pod nginx
`, nil)
	var out bytes.Buffer
	err := RunHeadless(context.Background(), &out, []*Scenario{sc}, opt)
	var se *StepError
	if !errors.As(err, &se) || se.Step != 2 {
		t.Fatalf("RunHeadless = %v, want a StepError at step 2", err)
	}
	want := `scenario "test", step 2 "Two", check 1 (httpd answers): expected output matching /It works!/, got "exec curl -s 10.244.0.9 as alice in t1 via pi.sock\n"`
	if err.Error() != want {
		t.Errorf("error\n%s\nwant\n%s", err, want)
	}
	transcript := out.String()
	for _, want := range []string{
		"=== scenario test: test\n--- step 1/2: One\n$ pi create fip\n198.18.0.7\n",
		"$ pi exec nginx -- curl -s 10.244.0.9\nexec curl -s 10.244.0.9 as alice in t1 via pi.sock\n✗ httpd answers: expected",
		"--- cleanup\n$ pi delete pod nginx\npod \"nginx\" deleted\n=== FAIL test",
	} {
		if !strings.Contains(transcript, want) {
			t.Errorf("transcript lacks %q:\n%s", want, transcript)
		}
	}

	// A failing command is reported with its output and exit status.
	sc = mustParse(t, "title: t\nsteps:\n  - title: Bad\n    commands: [pi nonsense]\n", nil)
	err = RunHeadless(context.Background(), &out, []*Scenario{sc}, opt)
	if err == nil || !strings.Contains(err.Error(), "step 1 \"Bad\", command 1 `pi nonsense`: exit status 2") {
		t.Errorf("RunHeadless = %v", err)
	}
}

func TestHTTPOnlyInsideTheLab(t *testing.T) {
	opt := fakeLab(t, fakePi)
	sc := mustParse(t, "title: t\nsteps:\n  - title: Out\n    commands:\n      - http: http://10.1.2.3/\n", nil)
	r, _ := NewRunner(sc, opt)
	if err := r.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"http://10.1.2.3/", "http://example.com/", "https://198.18.0.1/"} {
		res := r.httpGet(context.Background(), u)
		if res.Err == nil || !(strings.Contains(res.Err.Error(), "refusing") || strings.Contains(res.Err.Error(), "not an http://")) {
			t.Errorf("httpGet(%s) = %v, want a refusal before any packet", u, res.Err)
		}
	}
}

// fakePiObjects makes and deletes objects where serveObjects finds them.
const fakePiObjects = `
objs=$(dirname $PI_SOCKET)/objs
echo "$*" >> calls.log
case "$1 $2" in
  "create fip")
    mkdir -p $objs/fips; n=$(ls $objs/fips | wc -l); ip=198.18.0.$((n+10))
    echo "uid-fip-$n" > $objs/fips/$ip; echo $ip ;;
  "run "*)
    mkdir -p $objs/pods
    [ -e $objs/pods/$2 ] && { echo "pod \"$2\" already exists" >&2; exit 1; }
    echo "uid-$2-$$" > $objs/pods/$2; echo "pod \"$2\" created" ;;
  "delete fip"|"delete pod")
    d=pods; [ $2 = fip ] && d=fips; shift 2
    for n in "$@"; do case $n in -*) ;; *) rm -f $objs/$d/$n && echo "deleted $n" ;; esac; done ;;
  "get pods") ls $objs/pods ;;
  *) echo "unknown command $1" >&2; exit 2 ;;
esac
`

func TestStepRerunKeepsItsFIP(t *testing.T) {
	opt := fakeLab(t, fakePiObjects)
	sc := mustParse(t, `
title: t
steps:
  - title: Allocate a Floating IP
    commands:
      - run: pi create fip
        capture: {FIP: '(?m)^(\d+\.\d+\.\d+\.\d+)$'}
      - pi run web
cleanup:
  - pi delete pod web --ignore-not-found
`, nil)
	var notices []string
	opt.Sink = func(ev Event) {
		if ev.Kind == Notice {
			notices = append(notices, ev.Text)
		}
	}
	r, _ := NewRunner(sc, opt)
	ctx := context.Background()
	if err := r.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	// enter, enter: the second run finds the FIP and the pod this run made, and makes neither again.
	for i := 0; i < 2; i++ {
		if err := r.RunStep(ctx, 0); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
		if got := r.Vars()["FIP"]; got != "198.18.0.10" {
			t.Fatalf("run %d: FIP=%q, want 198.18.0.10", i+1, got)
		}
	}
	if err := r.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(filepath.Join(opt.WorkDir, "calls.log"))
	want := "create fip\nrun web\ndelete pod web --ignore-not-found\ndelete fip 198.18.0.10 --ignore-not-found\n"
	if string(calls) != want {
		t.Errorf("pi was called with\n%s\nwant\n%s", calls, want)
	}
	if !strings.Contains(strings.Join(notices, "\n"), `not run again: this run made fip "198.18.0.10" already`) {
		t.Errorf("notices %q do not say the FIP was kept", notices)
	}
	if ents, _ := os.ReadDir(filepath.Join(opt.WorkDir, "objs", "fips")); len(ents) != 0 {
		t.Errorf("%d FIPs left after the cleanup", len(ents))
	}
}

func TestLearnersPodLeftAlone(t *testing.T) {
	opt := fakeLab(t, fakePiObjects)
	pods := filepath.Join(opt.WorkDir, "objs", "pods")
	os.MkdirAll(pods, 0o755)
	os.WriteFile(filepath.Join(pods, "nginx"), []byte("uid-learners-nginx"), 0o644)
	sc := mustParse(t, `
title: t
steps:
  - title: Make web
    commands: [pi run web]
  - title: Make nginx
    commands: [pi run nginx]
  - title: Delete nginx
    commands: [pi delete pod nginx]
cleanup:
  - pi delete pod nginx web --ignore-not-found
`, nil)
	var out bytes.Buffer
	rep, err := RunSuite(context.Background(), &out, []*Scenario{sc}, opt, SuiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := `scenario "test", step 2 "Make nginx", command 1 ` + "`pi run nginx`" + `: pod "nginx" already exists in account "alice" and was not made by this scenario; delete it, or run with --account NEW to play in a throwaway account`
	if err := rep.Err(); err == nil || err.Error() != want {
		t.Errorf("error\n%v\nwant\n%s", err, want)
	}
	if data, _ := os.ReadFile(filepath.Join(pods, "nginx")); string(data) != "uid-learners-nginx" {
		t.Errorf("the learner's nginx is %q after the run", data)
	}
	if _, err := os.Stat(filepath.Join(pods, "web")); err == nil {
		t.Errorf("the run's pod web is left")
	}
	calls, _ := os.ReadFile(filepath.Join(opt.WorkDir, "calls.log"))
	if want := "run web\ndelete pod web --ignore-not-found\n"; string(calls) != want {
		t.Errorf("pi was called with\n%s\nwant\n%s", calls, want)
	}
	if !strings.HasSuffix(out.String(), "\n1 passed, 1 failed, 1 skipped\n") {
		t.Errorf("transcript does not end with the summary:\n%s", out.String())
	}

	// A step that deletes an object the run did not make stops before it.
	sc = mustParse(t, "title: t\nsteps:\n  - title: Delete nginx\n    commands: [pi delete pod nginx]\n", nil)
	rep, _ = RunSuite(context.Background(), io.Discard, []*Scenario{sc}, opt, SuiteOptions{})
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), `this step would delete pod "nginx" in account "alice", which this scenario did not make`) {
		t.Errorf("error %v", err)
	}
	if _, err := os.Stat(filepath.Join(pods, "nginx")); err != nil {
		t.Errorf("the learner's nginx was deleted")
	}
}

func TestSummaryLine(t *testing.T) {
	rep := &Report{Scenarios: []*ScenarioResult{
		{Steps: []StepResult{{Status: Passed}, {Status: Passed}, {Status: Failed}}},
		{Steps: []StepResult{{Status: Passed}}},
	}}
	if got := rep.Summary(); got != "3 passed, 1 failed" {
		t.Errorf("Summary() = %q", got)
	}
	rep.Scenarios[0].Steps = append(rep.Scenarios[0].Steps, StepResult{Status: Skipped}, StepResult{Status: Skipped})
	if got := rep.Summary(); got != "3 passed, 1 failed, 2 skipped" {
		t.Errorf("Summary() = %q", got)
	}
}

const failing = `
title: Fails
steps:
  - title: One
    commands: [pi create fip]
  - title: Two
    commands: ['pi exec nginx -- curl -s 10.244.0.9']
    checks:
      - name: httpd answers
        match: It works!
  - title: Three
    commands: [pi create fip]
`

const passing = `
title: Passes
steps:
  - title: One
    commands: [pi create fip]
    checks: [{match: '198\.18'}]
`

func parseNamed(t *testing.T, name, y string) *Scenario {
	t.Helper()
	sc, err := Parse([]byte(y), name+".yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestKeepGoingAndJUnit(t *testing.T) {
	opt := fakeLab(t, fakePi)
	list := []*Scenario{parseNamed(t, "fails", failing), parseNamed(t, "passes", passing)}

	// Without --keep-going the scenario after the failure is skipped.
	var out bytes.Buffer
	rep, err := RunSuite(context.Background(), &out, list, opt, SuiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Summary(); got != "1 passed, 1 failed, 2 skipped" {
		t.Errorf("without keep-going: %s\n%s", got, out.String())
	}
	if !strings.Contains(out.String(), "=== SKIP passes: an earlier scenario failed") {
		t.Errorf("transcript does not say passes was skipped:\n%s", out.String())
	}

	out.Reset()
	rep, err = RunSuite(context.Background(), &out, list, opt, SuiteOptions{KeepGoing: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Summary(); got != "2 passed, 1 failed, 1 skipped" {
		t.Errorf("with keep-going: %s\n%s", got, out.String())
	}
	if rep.Err() == nil {
		t.Errorf("a run with a failed step has no error")
	}
	var xmlOut bytes.Buffer
	if err := rep.WriteJUnit(&xmlOut); err != nil {
		t.Fatal(err)
	}
	// Parsed back with the writer's own types.
	var back junit.Testsuites
	if err := xml.Unmarshal(xmlOut.Bytes(), &back); err != nil {
		t.Fatalf("the JUnit XML does not parse: %v\n%s", err, xmlOut.String())
	}
	if back.Tests != 4 || back.Failures != 1 || back.Skipped != 1 || len(back.Suites) != 2 {
		t.Fatalf("testsuites: %d tests, %d failures, %d skipped, %d suites\n%s", back.Tests, back.Failures, back.Skipped, len(back.Suites), xmlOut.String())
	}
	f := back.Suites[0]
	if f.Name != "fails" || f.Tests != 3 || f.Failures != 1 || f.Skipped != 1 || f.Timestamp == "" {
		t.Errorf("suite 0: %+v", f)
	}
	names := []string{f.Testcases[0].Name, f.Testcases[1].Name, f.Testcases[2].Name}
	if strings.Join(names, "|") != "step 1: One|step 2: Two|step 3: Three" {
		t.Errorf("testcases %q", names)
	}
	fail := f.Testcases[1].Failure
	if fail == nil || fail.Type != "check" || fail.Message != `check 1 (httpd answers): expected output matching /It works!/, got "exec curl -s 10.244.0.9 as alice in t1 via pi.sock\n"` {
		t.Errorf("failure %+v", fail)
	}
	if fail != nil && fail.Data != "expected: output matching /It works!/\ngot: \"exec curl -s 10.244.0.9 as alice in t1 via pi.sock\\n\"\n" {
		t.Errorf("failure text %q", fail.Data)
	}
	if out := f.Testcases[1].SystemOut; out == nil || !strings.Contains(out.Data, "$ pi exec nginx -- curl -s 10.244.0.9\n") {
		t.Errorf("the failed step's output is not in the report: %+v", out)
	}
	if f.Testcases[2].Skipped == nil || f.Testcases[0].Failure != nil || f.Testcases[0].Time == "" {
		t.Errorf("testcases 1 and 3: %+v %+v", f.Testcases[0], f.Testcases[2])
	}
	if p := back.Suites[1]; p.Name != "passes" || p.Tests != 1 || p.Failures != 0 || p.Testcases[0].Failure != nil {
		t.Errorf("suite 1: %+v", p)
	}
}

func TestJSONEvents(t *testing.T) {
	opt := fakeLab(t, fakePi)
	var out bytes.Buffer
	if _, err := RunSuite(context.Background(), &out, []*Scenario{parseNamed(t, "fails", failing)}, opt, SuiteOptions{JSON: true}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var kinds []string
	var failed JSONEvent
	for _, l := range lines {
		var ev JSONEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		kinds = append(kinds, ev.Kind)
		if ev.Kind == "check_finished" {
			failed = ev
		}
	}
	if kinds[0] != "scenario_started" || kinds[len(kinds)-1] != "summary" || kinds[len(kinds)-2] != "scenario_finished" {
		t.Errorf("kinds %q", kinds)
	}
	if failed.Step != 2 || failed.Expected != "output matching /It works!/" || !strings.Contains(failed.Got, "exec curl") {
		t.Errorf("check event %+v", failed)
	}
	if !strings.HasSuffix(lines[len(lines)-1], `"passed":1,"failed":1,"skipped":1,`+lines[len(lines)-1][strings.Index(lines[len(lines)-1], `"seconds"`):]) {
		t.Errorf("summary %s", lines[len(lines)-1])
	}
}

func TestShCommand(t *testing.T) {
	opt := fakeLab(t, fakePi)
	sc := mustParse(t, "title: t\nsteps:\n  - title: Sh\n    commands:\n      - sh: 'for i in 1 2; do echo $i; done | wc -l'\n        pod: nginx\n", nil)
	var started []string
	opt.Sink = func(ev Event) {
		if ev.Kind == CommandStarted {
			started = append(started, ev.Text)
		}
	}
	r, _ := NewRunner(sc, opt)
	r.Prepare(context.Background())
	if err := r.RunStep(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(filepath.Join(opt.WorkDir, "calls.log"))
	if string(calls) != "exec nginx -- sh -c for i in 1 2; do echo $i; done | wc -l\n" {
		t.Errorf("pi was called with %q", calls)
	}
	if len(started) != 1 || started[0] != `pi exec nginx -- sh -c 'for i in 1 2; do echo $i; done | wc -l'` {
		t.Errorf("shown as %q", started)
	}
}
