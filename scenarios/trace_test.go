package scenarios

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pilab/pi/lab/daemon"
)

// A Service trace as the daemon answers it (the shape of lab/daemon's TraceResult; the real-lab test,
// cmd/pi/testdata/script/scenarios.txtar, plays the built-in workshops' traces against a lab).
var serviceTrace = daemon.TraceResult{
	Account: "alice", From: "nginx", Target: "http://podinfo:9898/",
	Flow: "tcp 10.244.0.3:40001 → 10.96.0.10:9898",
	DNS:  &daemon.TraceDNS{Client: "nginx", Server: "10.244.0.2:53", Name: "podinfo.alice.svc.cluster.local.", Answer: "10.96.0.10"},
	Hops: []daemon.TraceHop{
		{Netns: "pod nginx", Kind: "route", Text: "from 10.244.0.3 out eth0 via 10.244.0.1"},
		{Netns: "router alice", Kind: "rule", Direction: "request", Table: "t1-svc", Chain: "services",
			Text: "t1-svc/services: ip daddr . meta l4proto . th dport vmap @dispatch → jump svc-podinfo-tcp-9898"},
		{Netns: "router alice", Kind: "nat", Text: "conntrack: dnat to 10.244.0.9:9898 (podinfo-7c59-x7qh7)"},
		{Netns: "router alice", Kind: "rule", Direction: "reply", Text: "t1-router/forward: ct state established accept → accept"},
		{Netns: "pod podinfo-7c59-x7qh7", Kind: "silent", Inferred: true, Text: "the kernel reported nothing  here"},
	},
	HTTPStatus: 200, Connected: true, Endpoint: "10.244.0.9:9898", AnsweredBy: "podinfo-7c59-x7qh7",
	Summary: "HTTP 200 in 1.2 ms, answered by podinfo-7c59-x7qh7",
}

func TestTraceText(t *testing.T) {
	got := TraceText(&serviceTrace)
	want := `DNS   nginx → 10.244.0.2:53: podinfo.alice.svc.cluster.local. → 10.96.0.10
flow  tcp 10.244.0.3:40001 → 10.96.0.10:9898
1     pod nginx: from 10.244.0.3 out eth0 via 10.244.0.1
2     router alice: t1-svc/services: ip daddr . meta l4proto . th dport vmap @dispatch → jump svc-podinfo-tcp-9898
3     router alice: conntrack: dnat to 10.244.0.9:9898 (podinfo-7c59-x7qh7)
4     router alice: reply: t1-router/forward: ct state established accept → accept
5     pod podinfo-7c59-x7qh7: the kernel reported nothing here (inferred)
HTTP 200 in 1.2 ms, answered by podinfo-7c59-x7qh7
`
	if got != want {
		t.Errorf("TraceText:\n%s\nwant:\n%s", got, want)
	}
}

// A trace: command asks the daemon for the trace with the variables filled in, prints the path in the
// transcript, hands it to the step's checks and captures, and carries the result on its CommandFinished.
func TestTraceCommand(t *testing.T) {
	opt := fakeLab(t, fakePi)
	data, _ := json.Marshal(serviceTrace)
	os.WriteFile(filepath.Join(opt.WorkDir, "trace.json"), data, 0o644)
	sc := mustParse(t, `title: t
steps:
  - title: Find
    commands:
      - run: pi get pods
        capture:
          IP: 'httpd \S+ \S+ \S+ \S+ (\S+)'
  - title: Trace
    commands:
      - trace: nginx http://{{.IP}}:9898/
        capture:
          EP: 'dnat to (\S+)'
      - trace: internet http://198.18.0.7:8080/
    checks:
      - match: '(?m)^3 +router alice: conntrack: dnat to 10\.244\.0\.9:9898'
      - noMatch: '{{.EP}} nothing'
`, nil)
	var out strings.Builder
	var traces []*daemon.TraceResult
	var started []string
	opt.Sink = func(ev Event) {
		switch ev.Kind {
		case CommandStarted:
			started = append(started, ev.Text)
		case Output:
			out.WriteString(ev.Text)
		case CommandFinished:
			if ev.Trace != nil {
				traces = append(traces, ev.Trace)
			}
		}
	}
	r, _ := NewRunner(sc, opt)
	defer r.Close()
	ctx := context.Background()
	if err := r.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range sc.Steps {
		if err := r.RunStep(ctx, i); err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
	}
	var req daemon.TraceRequest
	b, _ := os.ReadFile(filepath.Join(opt.WorkDir, "trace-request.json"))
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatalf("trace request %q: %v", b, err)
	}
	// The last request: from the Internet side.
	if req != (daemon.TraceRequest{Account: "alice", From: "internet", Target: "http://198.18.0.7:8080/"}) {
		t.Errorf("last trace request %+v", req)
	}
	wantStarted := []string{"pi get pods", "pi trace nginx http://10.244.3.4:9898/", "pi trace --from internet http://198.18.0.7:8080/"}
	if strings.Join(started, "|") != strings.Join(wantStarted, "|") {
		t.Errorf("commands shown %q, want %q", started, wantStarted)
	}
	if !strings.Contains(out.String(), "2     router alice: t1-svc/services:") {
		t.Errorf("the path is not in the output:\n%s", out.String())
	}
	if len(traces) != 2 || traces[0].AnsweredBy != "podinfo-7c59-x7qh7" {
		t.Errorf("CommandFinished carried %d traces, want 2 with the answer", len(traces))
	}
	if v := r.Vars()["EP"]; v != "10.244.0.9:9898" {
		t.Errorf("EP captured from the trace = %q", v)
	}
}

// A request that got no answer fails the command; its path is shown all the same.
func TestTraceCommandFails(t *testing.T) {
	opt := fakeLab(t, fakePi)
	failed := daemon.TraceResult{Flow: "tcp 10.244.0.3:40001 → 10.244.0.9:81", Error: "connection refused",
		Hops:    []daemon.TraceHop{{Netns: "pod nginx", Kind: "route", Text: "on-link out eth0"}},
		Summary: "connection refused; stopped at pod podinfo"}
	data, _ := json.Marshal(failed)
	os.WriteFile(filepath.Join(opt.WorkDir, "trace.json"), data, 0o644)
	sc := mustParse(t, "title: t\nsteps:\n  - title: Trace\n    commands:\n      - trace: nginx 10.244.0.9:81\n", nil)
	var out strings.Builder
	var finished Event
	opt.Sink = func(ev Event) {
		switch ev.Kind {
		case Output:
			out.WriteString(ev.Text)
		case CommandFinished:
			finished = ev
		}
	}
	r, _ := NewRunner(sc, opt)
	defer r.Close()
	r.Prepare(context.Background())
	err := r.RunStep(context.Background(), 0)
	if err == nil || !strings.Contains(err.Error(), "connection refused; stopped at pod podinfo") {
		t.Errorf("step error %v, want the trace's outcome", err)
	}
	if finished.Trace == nil || finished.Err == nil {
		t.Errorf("CommandFinished %+v: want the trace and the error", finished)
	}
	if !strings.Contains(out.String(), "1     pod nginx: on-link out eth0") {
		t.Errorf("the path of the failed request is not shown:\n%s", out.String())
	}
}

func TestTraceValidation(t *testing.T) {
	for _, tc := range []struct{ trace, want string }{
		{"nginx http://10.244.0.7/", ""},
		{"alice/nginx tcp://10.244.0.7:80", ""},
		{"internet http://{{.FIP}}:8080/", "uses {{.FIP}}, which no earlier command captures"},
		{"router 10.96.0.10:9898", ""},
		{"'{{.POD}} podinfo:9898'", "uses {{.POD}}, which no earlier command captures"},
		{"nginx", "say FROM TARGET"},
		{"nginx http://a/ extra", "say FROM TARGET"},
		{"Nginx_1 http://10.244.0.7/", `"Nginx_1" is not where a trace starts`},
		{"nginx https://10.244.0.7/", `target "https://10.244.0.7/"`},
		{"nginx 10.244.0.7", `target "10.244.0.7"`},
	} {
		y := "title: t\nsteps:\n  - title: T\n    commands:\n      - trace: " + tc.trace + "\n"
		_, err := Parse([]byte(y), "t.yaml", nil)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("trace: %s: %v", tc.trace, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("trace: %s: error %v, want one saying %q", tc.trace, err, tc.want)
		}
	}
	// trace: is one kind of command: not with run:, not in cleanup, no pod:.
	y := "title: t\nsteps:\n  - title: T\n    commands:\n      - trace: nginx http://a/\n        run: pi get pods\n      - trace: nginx http://a/\n        pod: nginx\ncleanup:\n  - trace: nginx http://a/\n"
	_, err := Parse([]byte(y), "t.yaml", nil)
	for _, want := range []string{"command 1: say exactly one of run:, http:, write:, sh: or trace:", `command 2: pod: "nginx" goes with sh:`, "cleanup 1: cleanup commands are plain pi command lines (no trace:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}

// TestTraceTargets: the targets a trace: command takes are pi trace's.
func TestTraceTargets(t *testing.T) {
	for target, ok := range map[string]bool{
		"http://podinfo:9898/": true, "http://{{.FIP}}:8080/": true, "tcp://10.244.0.7:9898": true, "10.244.0.7:80": true,
		"udp://10.244.0.2:53": true, "icmp://10.244.0.7": true, "icmp://{{.IP}}": true,
		"icmp://10.244.0.7:80": false, "udp://10.244.0.2": false, "sctp://10.244.0.7:80": false, "nginx": false,
	} {
		y := "title: x\nsteps:\n  - title: a\n    commands:\n      - run: pi create fip\n        capture: {FIP: '(\\S+)', IP: '(\\S+)'}\n      - trace: nginx " + target + "\n"
		_, err := Parse([]byte(y), "x.yaml", nil)
		if (err == nil) != ok {
			t.Errorf("trace: nginx %s: %v, want accepted %v", target, err, ok)
		}
	}
}
