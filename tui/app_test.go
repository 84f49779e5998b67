package tui

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"github.com/pilab/pi/lab/api"
	"github.com/pilab/pi/scenarios"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var update = flag.Bool("update", false, "rewrite the golden screens in testdata")

func TestMain(m *testing.M) {
	// Goldens hold plain text: no colors, whatever the terminal running the tests.
	lipgloss.SetColorProfile(termenv.Ascii)
	lipgloss.SetHasDarkBackground(true)
	os.Exit(m.Run())
}

// fakeRunner plays a step by reporting what a real one would: the commands, their output, passed checks.
type fakeRunner struct {
	sc   *scenarios.Scenario
	sink func(scenarios.Event)
	mu   sync.Mutex
	ran  []int
	vars map[string]string
}

// fakeValues are what the fake's captures find.
var fakeValues = map[string]string{"FIP": "198.18.0.7", "HTTPD_IP": "10.244.18.162", "PODINFO_IP": "10.244.9.4"}

func (f *fakeRunner) Vars() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.vars {
		out[k] = v
	}
	return out
}

func (f *fakeRunner) Prepare(ctx context.Context) error {
	f.sink(scenarios.Event{Kind: scenarios.StepStarted, Step: scenarios.PrepareStep})
	f.sink(scenarios.Event{Kind: scenarios.StepFinished, Step: scenarios.PrepareStep})
	return nil
}

func (f *fakeRunner) RunStep(ctx context.Context, i int) error {
	f.mu.Lock()
	f.ran = append(f.ran, i)
	f.mu.Unlock()
	st := f.sc.Steps[i]
	f.sink(scenarios.Event{Kind: scenarios.StepStarted, Step: i, Text: st.Title})
	for j, c := range st.Commands {
		f.sink(scenarios.Event{Kind: scenarios.CommandStarted, Step: i, Index: j, Text: f.Display(c)})
		if c.Kind() == "trace" {
			tr := fakeTrace(f.expand(c.Trace))
			f.sink(scenarios.Event{Kind: scenarios.Output, Step: i, Index: j, Text: scenarios.TraceText(tr)})
			f.sink(scenarios.Event{Kind: scenarios.CommandFinished, Step: i, Index: j, Trace: tr})
			continue
		}
		f.sink(scenarios.Event{Kind: scenarios.Output, Step: i, Index: j, Text: "output of " + c.Run + "\n"})
		f.sink(scenarios.Event{Kind: scenarios.CommandFinished, Step: i, Index: j})
		f.mu.Lock()
		for name := range c.Capture {
			if f.vars == nil {
				f.vars = map[string]string{}
			}
			f.vars[name] = fakeValues[name]
		}
		f.mu.Unlock()
	}
	for j, c := range st.Checks {
		f.sink(scenarios.Event{Kind: scenarios.CheckFinished, Step: i, Index: j, Text: fillVars(c.Describe(), f.Vars())})
	}
	f.sink(scenarios.Event{Kind: scenarios.StepFinished, Step: i})
	return nil
}

func (f *fakeRunner) Cleanup(ctx context.Context) error {
	f.sink(scenarios.Event{Kind: scenarios.StepStarted, Step: scenarios.CleanupStep})
	f.sink(scenarios.Event{Kind: scenarios.StepFinished, Step: scenarios.CleanupStep})
	return nil
}

func (f *fakeRunner) Display(c scenarios.Command) string {
	switch c.Kind() {
	case "http":
		return "open " + f.expand(c.HTTP)
	case "write":
		return "cat <<EOF > " + c.Write + "\nEOF"
	case "trace":
		return "pi trace " + f.expand(c.Trace)
	}
	return f.expand(c.Run)
}

// expand fills in the variables as scenarios.Runner.Display does: all of them, or the text as written.
func (f *fakeRunner) expand(s string) string {
	if e, err := scenarios.Expand(s, f.Vars()); err == nil {
		return e
	}
	return s
}

func (f *fakeRunner) Close() error { return nil }

type harness struct {
	t        *testing.T
	app      *App
	runners  []*fakeRunner
	execs    []*exec.Cmd
	shellErr error
	net      *fakeNetwork
}

func newHarness(t *testing.T) *harness { return newHarnessSize(t, 100, 30) }

// newHarnessSize is the tutorial on a screen of w x h cells.
func newHarnessSize(t *testing.T, width, height int) *harness {
	t.Helper()
	all, err := scenarios.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, net: &fakeNetwork{view: fakeLabNetwork()}}
	o := Options{Scenarios: all, network: h.net}
	o.newRunner = func(sc *scenarios.Scenario, sink func(scenarios.Event)) (Runner, error) {
		r := &fakeRunner{sc: sc, sink: sink}
		h.runners = append(h.runners, r)
		return r, nil
	}
	// A shell is recorded and ends at once, as if the learner typed exit.
	o.execProcess = func(c *exec.Cmd, done tea.ExecCallback) tea.Cmd {
		h.execs = append(h.execs, c)
		return func() tea.Msg { return done(h.shellErr) }
	}
	h.app = newApp(context.Background(), o, "ascii")
	h.send(tea.WindowSizeMsg{Width: width, Height: height})
	return h
}

// send runs a message through Update and returns the command it gave back (not run).
func (h *harness) send(msg tea.Msg) tea.Cmd {
	m, cmd := h.app.Update(msg)
	h.app = m.(*App)
	return cmd
}

func (h *harness) key(k string) tea.Cmd {
	var msg tea.KeyMsg
	switch k {
	case "enter":
		msg = tea.KeyMsg{Type: tea.KeyEnter}
	case "esc":
		msg = tea.KeyMsg{Type: tea.KeyEsc}
	case "tab":
		msg = tea.KeyMsg{Type: tea.KeyTab}
	default:
		msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
	}
	return h.send(msg)
}

// drain feeds the events waiting in the open scenario's pipe to Update, as waitEvent would.
func (h *harness) drain() {
	for h.app.walk != nil {
		select {
		case ev := <-h.app.walk.pipe.ch:
			h.send(eventMsg{ev})
		default:
			return
		}
	}
}

func (h *harness) open(i int) {
	h.t.Helper()
	for j := 0; j < i; j++ {
		h.key("j")
	}
	cmd := h.key("enter")
	if cmd == nil {
		h.t.Fatal("enter on the list gave no command")
	}
	msg := cmd()
	if _, ok := msg.(chooseMsg); !ok {
		h.t.Fatalf("enter on the list gave %T, want chooseMsg", msg)
	}
	if h.send(msg) == nil || h.app.walk == nil {
		h.t.Fatal("chooseMsg did not open the walkthrough and start its preparation")
	}
	// What the preparation command would do on its goroutine.
	h.runners[len(h.runners)-1].Prepare(context.Background())
	h.drain()
}

func TestListOpensScenario(t *testing.T) {
	h := newHarness(t)
	if h.app.list.cursor != 0 {
		t.Fatal("cursor does not start on the first scenario")
	}
	h.key("j")
	h.key("j")
	h.key("j") // past the end: stays on the last one
	if h.app.list.cursor != 2 {
		t.Fatalf("cursor %d after three downs, want 2 (the last)", h.app.list.cursor)
	}
	h.key("k")
	h.key("k")
	h.open(1)
	w := h.app.walk
	if w.sc.Name != "scale-podinfo" || w.cur != -1 || !w.prepared || w.busy {
		t.Fatalf("opened %s at %d (prepared %v, busy %v), want scale-podinfo's intro, prepared", w.sc.Name, w.cur, w.prepared, w.busy)
	}
}

func TestRunStepsInOrder(t *testing.T) {
	h := newHarness(t)
	h.open(0)
	w := h.app.walk
	h.key("enter") // intro -> step 1
	if w.cur != 0 {
		t.Fatalf("enter on the intro: step %d, want 0", w.cur)
	}
	h.key("n")
	if cmd := h.key("enter"); cmd != nil {
		t.Fatal("step 2 ran before step 1 passed")
	}
	if !strings.Contains(w.notice, "step 1 has not passed yet") {
		t.Fatalf("notice %q", w.notice)
	}
	h.key("p")
	cmd := h.key("enter")
	if cmd == nil || !w.busy {
		t.Fatal("enter on step 1 did not start it")
	}
	if h.key("enter") != nil {
		t.Fatal("a second enter while the step runs started it again")
	}
	cmd() // the runner's goroutine
	h.drain()
	if w.busy || w.steps[0] != passed {
		t.Fatalf("step 1: busy %v, status %v; want passed", w.busy, w.steps[0])
	}
	for j, s := range w.checks[0] {
		if s != passed {
			t.Errorf("check %d of step 1 is %v, want passed", j+1, s)
		}
	}
	out := w.shownOutput()
	if !strings.Contains(out, "$ pi run nginx --image=nginx --port=80") || !strings.Contains(out, "output of pi run httpd") {
		t.Errorf("output pane:\n%s", out)
	}
	if got := h.runners[0].ran; len(got) != 1 || got[0] != 0 {
		t.Errorf("runner ran steps %v, want [0]", got)
	}
	if !strings.Contains(h.app.header(), "step 1/6 ✓") {
		t.Errorf("header %q lacks the progress", h.app.header())
	}
}

func TestFailedStep(t *testing.T) {
	h := newHarness(t)
	h.open(0)
	w := h.app.walk
	h.key("enter")
	h.send(eventMsg{scenarios.Event{Kind: scenarios.StepStarted, Step: 0}})
	h.send(eventMsg{scenarios.Event{Kind: scenarios.CheckFinished, Step: 0, Index: 3, Text: "nginx and httpd are Ready", Err: errString("expected success, got exit status 1")}})
	h.send(eventMsg{scenarios.Event{Kind: scenarios.StepFinished, Step: 0, Err: errString("check 4 failed")}})
	if w.steps[0] != failed || w.checks[0][3] != failed {
		t.Fatalf("step %v, check %v; want failed", w.steps[0], w.checks[0][3])
	}
	if !strings.Contains(w.stepText(), "✗ failed: check 4 failed") {
		t.Errorf("step pane does not say the step failed:\n%s", w.stepText())
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestKeys(t *testing.T) {
	h := newHarness(t)
	h.key("?")
	if !h.app.showHelp {
		t.Fatal("? did not show the help")
	}
	h.key("?")
	if h.app.showHelp {
		t.Fatal("? again did not hide the help")
	}
	cmd := h.key("q")
	if cmd == nil {
		t.Fatal("q gave no command")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Fatal("q does not quit")
	}
	// esc leaves a scenario through its cleanup and comes back to the list.
	h.open(2)
	cmd = h.key("esc")
	if cmd == nil || !h.app.walk.cleaning {
		t.Fatal("esc did not start the cleanup")
	}
	cmd()
	h.drain()
	if h.app.walk != nil {
		t.Fatal("after the cleanup the app is still in the scenario")
	}
}

func podEvent(t *testing.T, typ, name, phase, ip string) watchMsg {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodPhase(phase), PodIP: ip}}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return watchMsg{kind: "pods", ev: api.WatchEvent{Type: typ, Kind: "Pod", Object: data}}
}

func TestLivePane(t *testing.T) {
	h := newHarness(t)
	h.send(podEvent(t, api.Added, "nginx", "Pending", ""))
	h.send(podEvent(t, api.Modified, "nginx", "Running", "10.244.9.3"))
	h.send(podEvent(t, api.Added, "httpd", "Running", "10.244.18.162"))
	v := h.app.live.View()
	if !regexp.MustCompile(`10\.244\.9\.3 +nginx +Running`).MatchString(v) || !regexp.MustCompile(`10\.244\.18\.162 +httpd +Running`).MatchString(v) {
		t.Fatalf("live pane:\n%s", v)
	}
	if strings.Index(v, "httpd") > strings.Index(v, "nginx") {
		t.Error("pods are not sorted by name")
	}
	h.send(podEvent(t, api.Deleted, "nginx", "Running", "10.244.9.3"))
	if strings.Contains(h.app.live.View(), "nginx") {
		t.Error("a deleted pod stays in the live pane")
	}
	h.send(watchEndedMsg{kind: "services", err: errString("the pi daemon is not running")})
	if !strings.Contains(h.app.live.View(), "the pi daemon is not running") {
		t.Error("a watch error is not shown")
	}
}
