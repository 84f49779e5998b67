package scenarios

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nodesLab is a daemon socket answering the node list from dir/nodes/NAME (the file holds the node's index,
// empty for a single-node lab's one node) and a pi binary whose `pi node add` adds the next worker there, as
// /x/nodes does.
func nodesLab(t *testing.T, nodes map[string]string) Options {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "nodes"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, index := range nodes {
		os.WriteFile(filepath.Join(dir, "nodes", name), []byte(index), 0o644)
	}
	sock := filepath.Join(dir, "pi.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/x/info":
			fmt.Fprint(w, `{"lab":"t1"}`)
		case "/api/v1/nodes":
			ents, _ := os.ReadDir(filepath.Join(dir, "nodes"))
			var items []string
			for _, e := range ents {
				index, _ := os.ReadFile(filepath.Join(dir, "nodes", e.Name()))
				ann := ""
				if len(index) > 0 {
					ann = fmt.Sprintf(`,"annotations":{"pilab.dev/node-index":%q}`, strings.TrimSpace(string(index)))
				}
				items = append(items, fmt.Sprintf(`{"metadata":{"name":%q%s}}`, e.Name(), ann))
			}
			fmt.Fprintf(w, `{"kind":"NodeList","items":[%s]}`, strings.Join(items, ","))
		case "/x/progress":
			fmt.Fprint(w, "{}")
		default:
			serveObjects(w, r, filepath.Join(dir, "objs"))
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	script := `
echo "$*" >> calls.log
case "$1 $2" in
  "node add") n=$(ls nodes | wc -l); echo $((n+1)) > nodes/worker$((n+1)); echo "node/worker$((n+1)) added" ;;
  "get pods") printf 'NAME READY STATUS RESTARTS AGE IP NODE\na 1/1 Running 0 1s 10.244.1.2 worker\nb 1/1 Running 0 1s 10.244.2.2 worker2\n' ;;
  *) echo "unknown command $*" >&2; exit 2 ;;
esac
`
	exe := filepath.Join(dir, "pi")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{Socket: sock, Lab: "t1", Account: "alice", Exe: exe, WorkDir: dir, CommandTimeout: 10 * time.Second}
}

const twoNodeScenario = `
title: Two nodes
nodes: 2
steps:
  - title: Where are the pods
    commands:
      - pi get pods -o wide
    checks:
      - name: pods have addresses
        match: 10\.244\.
      - name: the pods run on two nodes
        distinct: '(?m)^\S+\s+1/1\s+Running\s+\S+\s+\S+\s+10\.244\.\d+\.\d+\s+(\S+)'
        atLeast: 2
        minNodes: 2
`

// A workshop of two nodes: a multi-node lab with fewer gets nodes added (pi node add) before the first
// step; a single-node lab plays it with a note, and the checks of several nodes are skipped there.
func TestScenarioNodes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		nodes   map[string]string
		adds    int    // `pi node add` calls
		notice  string // in the preparation's notices
		skipped bool   // the minNodes check was skipped
	}{
		{name: "single-node lab", nodes: map[string]string{"box": ""},
			notice: "this lab has one node, so the workshop's pods all run on it: the workshop is about 2 nodes; a lab made with `pi up --nodes 2`", skipped: true},
		{name: "multi-node lab of one node", nodes: map[string]string{"worker": "1"}, adds: 1,
			notice: "the lab has 1 node and the workshop is about 2: adding 1"},
		{name: "multi-node lab of two", nodes: map[string]string{"worker": "1", "worker2": "2"}},
		{name: "multi-node lab of three", nodes: map[string]string{"worker": "1", "worker2": "2", "worker3": "3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := nodesLab(t, tc.nodes)
			var events []Event
			opt.Sink = func(ev Event) { events = append(events, ev) }
			r, err := NewRunner(mustParse(t, twoNodeScenario, nil), opt)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := r.Prepare(ctx); err != nil {
				t.Fatalf("prepare: %v", err)
			}
			if err := r.RunStep(ctx, 0); err != nil {
				t.Fatalf("step: %v", err)
			}
			calls, _ := os.ReadFile(filepath.Join(opt.WorkDir, "calls.log"))
			if n := strings.Count(string(calls), "node add"); n != tc.adds {
				t.Errorf("pi node add ran %d times, want %d; calls:\n%s", n, tc.adds, calls)
			}
			var notices, checks []string
			for _, ev := range events {
				switch {
				case ev.Kind == Notice && ev.Step == PrepareStep:
					notices = append(notices, ev.Text)
				case ev.Kind == CheckFinished:
					if ev.Err != nil {
						t.Errorf("check %q: %v", ev.Text, ev.Err)
					}
					checks = append(checks, ev.Text)
				}
			}
			if tc.notice == "" && len(notices) > 0 {
				t.Errorf("notices %q", notices)
			}
			if tc.notice != "" && !strings.Contains(strings.Join(notices, "\n"), tc.notice) {
				t.Errorf("no notice %q in %q", tc.notice, notices)
			}
			if len(checks) != 2 {
				t.Fatalf("checks %q", checks)
			}
			if got := strings.Contains(checks[1], "(skipped: it needs a lab of 2 nodes, this one has 1)"); got != tc.skipped {
				t.Errorf("skipped %v, want %v: %q", got, tc.skipped, checks[1])
			}
		})
	}
}

// nodes: and minNodes: are checked when the file is read.
func TestScenarioNodesLint(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"title: x\nnodes: -1\nsteps: [{title: s, commands: [pi get pods], checks: [{match: a}]}]\n", "nodes: -1 is not a number of nodes a lab can have (1 to 255)"},
		{"title: x\nnodes: 2\nsteps: [{title: s, commands: [pi get pods], checks: [{match: a, minNodes: 1}]}]\n", "minNodes: 1: give 2 or more"},
		{"title: x\nnodes: 2\nsteps: [{title: s, commands: [pi get pods], checks: [{match: a, minNodes: 3}]}]\n", "minNodes: 3 is more than the scenario's nodes: 2"},
		{"title: x\nsteps: [{title: s, commands: [pi get pods], checks: [{match: a, minNodes: 2}]}]\n", "minNodes: 2 is more than the scenario's nodes: 0"},
	} {
		_, err := Parse([]byte(tc.yaml), "t.yaml", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := Parse([]byte(twoNodeScenario), "t.yaml", nil); err != nil {
		t.Errorf("two-node scenario: %v", err)
	}
}
