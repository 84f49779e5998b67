package scenarios

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
		default:
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	exe := filepath.Join(dir, "pi")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{Socket: sock, Lab: "t1", Account: "alice", Exe: exe, WorkDir: dir, CommandTimeout: 10 * time.Second}
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
